// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * einat: endpoint-independent NAPT44/NAPT66 on TC egress (SNAT) and ingress
 * (DNAT) of the external interface.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "einat.h"
#include "lib/config.h"
#include "lib/parse.h"
#include "lib/maps.h"
#include "lib/prefixes.h"
#include "lib/csum.h"
#include "lib/binding.h"
#include "lib/ct.h"
#include "lib/flowcache.h"
#include "lib/frag.h"
#include "lib/addrnat.h"
#include "lib/icmp_reply.h"
#include "lib/icmp_check.h"
#include "lib/state.h"
#include "lib/log.h"

char LICENSE[] SEC("license") = "GPL";

/*
 * The parsed packet lives in per-CPU scratch space, not on the stack: BPF
 * has 512 bytes of stack for a whole call chain. TC programs do not nest on
 * one CPU (egress runs with bottom halves off, ingress in softirq), and the
 * scratch is used by this packet only until the program returns.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct packet);
	__uint(max_entries, 1);
} map_packet_scratch SEC(".maps");

/* Logs a drop of the packet being handled (its scratch). */
static __always_inline void log_drop(int reason)
{
	__u32 zero = 0;
	const struct packet *p = bpf_map_lookup_elem(&map_packet_scratch, &zero);
	if (p)
		einat_log_drop(p, reason);
}

/*
 * Counts and logs a dropped packet: a global function, so the many drop sites
 * share one copy (each inlined map lookup is a rewrite at load).
 */
__noinline int einat_drop(__u32 reason)
{
	stat_inc(reason);
	if (log_on(LOG_WARN))
		log_drop(reason);
	return TC_ACT_SHOT;
}

static __always_inline int drop(enum einat_stat reason)
{
	einat_drop(reason);
	return TC_ACT_SHOT;
}

/*
 * A packet refused for want of a port or of room: counted, logged, and its
 * sender told (ICMP "administratively prohibited", RFC 5508 REQ-8).
 */
static __always_inline int refused(struct __sk_buff *skb, struct packet *p, int reason)
{
	stat_inc(reason);
	if (log_on(LOG_WARN))
		einat_log_drop(p, reason);
	return einat_send_prohibited(skb, p);
}

/* A packet passed as it is: counted inline, as every packet of the router's own
 * traffic (or of traffic not ours) takes this. */
static __always_inline int pass(void)
{
	stat_inc(STAT_PASS);
	return TC_ACT_OK;
}

/* The same on a rare path (ICMP errors, fragments): counted by einat_stat. */
static __always_inline int pass_rare(void)
{
	einat_stat(STAT_PASS);
	return TC_ACT_OK;
}

/*
 * Sends a translated packet straight to an internal host: the FIB names the
 * interface and next hop towards `to` (hairpinning). The query lives in
 * per-CPU scratch space: the stack is full. A global function: one verified
 * copy for the hairpinned packets and the hairpinned ICMP errors.
 */
__noinline int einat_redirect_inward(struct __sk_buff *skb, __u32 family, const union ip_addr *to)
{
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	if (!sc || !to)
		return drop(STAT_DROP_UNTRANSLATABLE);
	__builtin_memset(&sc->fib, 0, sizeof(sc->fib));
	sc->fib.ifindex = skb->ifindex;
	if (family == 4) {
		sc->fib.family = AF_INET;
		sc->fib.ipv4_dst = to->v4;
	} else {
		sc->fib.family = AF_INET6;
		__builtin_memcpy(sc->fib.ipv6_dst, to, 16);
	}
	if (bpf_fib_lookup(skb, &sc->fib, sizeof(sc->fib), BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_HAIRPIN);
	return redirect_neigh_inward(skb, sc->fib.ifindex);
}

/* Hands a packet to the router's own stack, untranslated, as if it had arrived from outside. */
static __always_inline int deliver_locally(struct __sk_buff *skb)
{
	stat_inc(STAT_PASS);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* The same from inside, turned at one of our external addresses: the rest of a datagram follows. */
static __always_inline int deliver_turned(struct __sk_buff *skb, const struct packet *p)
{
	if (p->frag == FRAG_FIRST)
		einat_frag_record(p, FRAG_TURN, &p->dst, NULL);
	return deliver_locally(skb);
}

/* EXT_* flags of the most specific `map_externals` entry covering `a` (0: none). */
static __always_inline __u8 ext_flags(__u8 family, const union ip_addr *a)
{
	return einat_prefix_flags(family == 6, 0, a);
}

/*
 * EXT_* flags of a packet's destination (`map_dest_config`: no-SNAT networks and
 * our externals, EXT_NO_HAIRPIN where set): one lookup tells both.
 */
static __always_inline __u32 dest_flags(const struct packet *p)
{
	return einat_prefix_flags(p->family == 6, 1, &p->dst);
}

/* To one of our external addresses, with hairpinning on for it (dest_flags). */
static __always_inline bool hairpin_dest(__u32 dest)
{
	return (dest & EXT_EXTERNAL) && !(dest & EXT_NO_HAIRPIN);
}

static __always_inline bool is_external_dest(const struct packet *p)
{
	return ext_flags(p->family, &p->dst) & EXT_EXTERNAL;
}

static __always_inline bool is_external_src(const struct packet *p)
{
	return ext_flags(p->family, &p->src) & EXT_EXTERNAL;
}

/*
 * An ICMP error leaving: it reports an inbound packet we translated, so the
 * embedded destination is an internal endpoint. Errors the router itself
 * sends (own) keep their outer source but must not leak the embedded one.
 *
 * An error from an internal host to one of our external addresses (routed
 * here by the hairpin rules) reports a hairpinned packet: its embedded
 * source is another internal host's mapping. It is translated on both
 * sides (RFC 5508 REQ-7): embedded destination and outer source to the
 * reporter's mapping, embedded source and outer destination to the other
 * host's internal endpoint (REQ-7a), and sent to that host. Errors about
 * anything else sent to our external addresses belong to the router.
 */
/*
 * An ICMPv6 error leaving that quotes a later fragment of a datagram we
 * translated inbound: its quoted destination, internal, goes back to the
 * external address the datagram came to (frag.h, the way back), and the
 * outer source too when an internal host sent it. Without a record: only the
 * router's own leaves, as it is.
 */
__noinline int einat_egress_error_later(struct __sk_buff *skb, struct packet *p, struct inner *in,
					int own)
{
	union ip_addr ext;
	if (!p || !in)
		return TC_ACT_SHOT;
	if (!einat_frag_back(in, FRAG_IN_BACK, &ext))
		return own ? pass_rare() : drop(STAT_DROP_ICMP_ERROR);
	if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
		return drop(STAT_DROP_ICMP_ERROR);
	if (rewrite_quote_addr6(skb, p, in, false, &ext))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (!own && rewrite(skb, p, true, &ext, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	traffic_add(skb, true, p->family);
	return TC_ACT_OK;
}

__noinline int einat_fib_external(struct __sk_buff *skb, struct packet *p);

/* The family's default external address (map_default_ext), NULL while it has none. */
static __always_inline struct default_ext *default_ext_of(__u8 family)
{
	__u32 idx = family == 4 ? 0 : 1;
	struct default_ext *ext = bpf_map_lookup_elem(&map_default_ext, &idx);
	return ext && ext->valid ? ext : NULL;
}

/*
 * The external address (and its ranges) a new mapping of p is made on: the one the routes pick
 * for its destination (bpf_fib_lookup_external; a copy in per-CPU scratch), or the family's
 * default `ext`.
 */
static __always_inline struct default_ext *mapping_ext(struct __sk_buff *skb, struct packet *p,
						       struct default_ext *ext)
{
	if (CFG.fib_external && !ext->only && einat_fib_external(skb, p)) {
		__u32 zero = 0;
		struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
		if (sc)
			return &sc->ext;
	}
	return ext;
}

/* The external address a packet of the router's own is mapped on: its source, with its ranges
 * (einat_egress_own's copy in per-CPU scratch). */
static __always_inline struct default_ext *own_ext(const struct packet *p)
{
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	return sc && sc->ext.valid && addr_eq(&sc->ext.addr, &p->src) ? &sc->ext : NULL;
}

/*
 * An ICMP error leaving about another IP protocol's packet that came in through an
 * address-only mapping (lib/addrnat.h): its quoted destination, the internal host, goes back to
 * the external address the packet came to (the one the routes pick for the remote, as for the
 * mapping), and the outer source too when an internal host sent it. Without such a mapping only
 * the router's own leaves, as it is.
 */
__noinline int einat_egress_error_other(struct __sk_buff *skb, struct packet *p, struct inner *in,
					int own)
{
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	if (!p || !in || !sc)
		return TC_ACT_SHOT;
	struct default_ext *ext = default_ext_of(p->family);
	if (!ext)
		return own ? pass_rare() : drop(STAT_DROP_ICMP_ERROR);
	/* The external address and the internal host in scratch (sc->bv, sc->peer): this call
	 * chain's stack is at its limit with the rewrite's below. */
	union ip_addr *to = &sc->bv.addr, *intern = &sc->peer.addr;
	*to = mapping_ext(skb, p, ext)->addr;
	if (!einat_addr_nat_find(ADDR_FIND(p->family, in->l4proto, 0), to, &in->src, packet_now(p),
				 intern) ||
	    !addr_eq(intern, &in->dst) || addr_eq(intern, to) /* the router's own mapping */)
		return own ? pass_rare() : drop(STAT_DROP_ICMP_ERROR);
	if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
		return drop(STAT_DROP_ICMP_ERROR);
	if (rewrite_inner(skb, p, in, false, to, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (!own && rewrite(skb, p, true, to, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	traffic_add(skb, true, p->family);
	return TC_ACT_OK;
}

__noinline int einat_egress_icmp_error(struct __sk_buff *skb, struct packet *p, int own)
{
	if (!p)
		return TC_ACT_SHOT;
	/* To a no-SNAT destination: the traffic it reports passed as it is, so does it. */
	__u32 dest = dest_flags(p);
	if (dest & EXT_NO_SNAT)
		return pass_rare();
	bool hairpin = !own && hairpin_dest(dest);
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	if (!sc)
		return TC_ACT_SHOT;
	struct inner *in = &sc->in; /* the stack is full: scratch space */
	__builtin_memset(in, 0, sizeof(*in));
	int r = parse_inner(skb, p->family, p->l4_off + sizeof(struct icmphdr), in);
	if (r == PARSE_LATER && !hairpin)
		return einat_egress_error_later(skb, p, in, own);
	if (r == PARSE_PASS && in->l3_len && addr_nat_proto(p->family, in->l4proto) && !hairpin)
		return einat_egress_error_other(skb, p, in, own);
	if (r != PARSE_OK) { /* an error we cannot map: only the router's own may leave */
		if (hairpin)
			return deliver_locally(skb);
		return own ? pass_rare() : drop(STAT_DROP_ICMP_ERROR);
	}
	struct endpoint *peer = &sc->peer, *bv = &sc->bv; /* scratch: see in */
	if (hairpin) {
		/* An echo has one identifier, so echoes are never hairpinned. */
		struct mapping_record *pb =
			in->l4proto == IPPROTO_ICMP
				? NULL
				: hairpin_binding(p->family, in->l4proto, &in->src, in->sport);
		if (!pb)
			return deliver_locally(skb);
		binding_intern(peer, pb);
	}
	if (einat_binding_of(p->family, in->l4proto, &in->dst, in->dport, bv) < 0) {
		if (hairpin)
			return deliver_locally(skb);
		return own ? pass_rare() : drop(STAT_DROP_ICMP_ERROR);
	}
	if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
		return drop(STAT_DROP_ICMP_ERROR);
	if (rewrite_inner(skb, p, in, false, &bv->addr, bv->port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (!own && rewrite(skb, p, true, &bv->addr, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	if (hairpin) {
		if (rewrite_inner(skb, p, in, true, &peer->addr, peer->port) ||
		    rewrite(skb, p, false, &peer->addr, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		return einat_redirect_inward(skb, p->family, &peer->addr);
	}
	traffic_add(skb, true, p->family);
	return TC_ACT_OK;
}

/* An ICMP error arriving about a packet we sent from a mapping. */
__noinline int einat_ingress_icmp_error(struct __sk_buff *skb, struct packet *p)
{
	if (!p)
		return TC_ACT_SHOT;
	struct inner in = {};
	int r = parse_inner(skb, p->family, p->l4_off + sizeof(struct icmphdr), &in);
	/* An error about a packet we sent goes to its source, our external address:
	 * one to another address is not about our packet (RFC 5508 REQ-4). */
	if ((r == PARSE_LATER || r == PARSE_OK) && !addr_eq(&p->dst, &in.src))
		return pass_rare();
	if (r == PARSE_LATER) { /* about an outbound later fragment: its datagram's record */
		union ip_addr intern;
		if (!einat_frag_back(&in, FRAG_OUT_BACK, &intern))
			return pass_rare();
		if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
			return drop(STAT_DROP_ICMP_ERROR);
		if (rewrite_quote_addr6(skb, p, &in, true, &intern) ||
		    rewrite(skb, p, false, &intern, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_ICMP_ERROR_NAT);
		traffic_add(skb, false, p->family);
		return TC_ACT_OK;
	}
	if (r == PARSE_PASS && in.l3_len && addr_nat_proto(p->family, in.l4proto)) {
		/* About another protocol's packet (lib/addrnat.h): to its mapping's host. */
		union ip_addr intern;
		if (!addr_eq(&p->dst, &in.src) ||
		    !einat_addr_nat_find(ADDR_FIND(p->family, in.l4proto, 0), &in.src, &in.dst,
					 packet_now(p), &intern) ||
		    addr_eq(&intern, &in.src)) /* the router's own (its tunnel, say) */
			return pass_rare();
		if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
			return drop(STAT_DROP_ICMP_ERROR);
		if (rewrite_inner(skb, p, &in, true, &intern, 0) ||
		    rewrite(skb, p, false, &intern, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_ICMP_ERROR_NAT);
		traffic_add(skb, false, p->family);
		return TC_ACT_OK;
	}
	if (r != PARSE_OK)
		return pass_rare();
	/* About a query reply: the router's own (a query request to a mapping is answered by the
	 * router, ingress_icmp_query, so no internal host's reply leaves through one), whatever
	 * host holds that identifier. */
	if (in.l4proto == IPPROTO_ICMP && icmp_is_reply(p->family, in.icmp_type))
		return pass_rare();
	struct mapping_record *b = binding_reply(p->family, in.l4proto, &in.src, in.sport);
	if (!b)
		return pass_rare(); /* about the router's own traffic */
	if (in.l4proto == IPPROTO_ICMP) {
		/* About an echo request: the internal host's only if it sent it (its
		 * session); else the router's own ping, whose identifier a host holds. */
		struct ct_key ck;
		ct_key_init(&ck, p->family, in.l4proto, &in.src, in.sport, &in.dst, 0);
		if (!ct_find(&ck))
			return pass_rare();
	}
	struct endpoint bv;
	binding_intern(&bv, b);
	if (!einat_icmp_error_valid(skb, p)) /* RFC 5508 REQ-3 */
		return drop(STAT_DROP_ICMP_ERROR);
	if (rewrite_inner(skb, p, &in, true, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (rewrite(skb, p, false, &bv.addr, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	traffic_add(skb, false, p->family);
	return TC_ACT_OK;
}

/*
 * A packet to no mapping. Ports outside the NAT ranges belong to the router
 * (SSH keeps working). An unsolicited SYN to a NAT port is dropped silently
 * (RFC 5382 REQ-4) instead of being answered with a RST by the router.
 */
static __always_inline int ingress_unmapped(const struct packet *p)
{
	if (p->l4proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		struct external_config *dc = lpm_lookup(&map_externals, p->family, &p->dst);
		/* One from our own external address (spoofed, or looped back) is not
		 * ours to refuse: it passes, as it does to a mapped port (ingress_l4). */
		if (dc && (dc->flags & EXT_EXTERNAL) &&
		    port_in_ranges(dc, PROTO_IDX_TCP, bpf_ntohs(p->dport)) && !is_external_src(p))
			return drop(STAT_DROP_UNSOLICITED);
	}
	return pass();
}

/*
 * A ping from outside to one of our external addresses (allow_inbound_icmpx,
 * as einat-ebpf): the NAT host answers it itself, and its identifier, when
 * in icmp_in_ranges, is bound to the NAT host for the session's lifetime
 * (a binding whose internal endpoint is the external one, and a session),
 * so no internal host is handed that identifier meanwhile. Identifiers
 * already bound are left as they are; the packet always passes untouched.
 * A global function: verified once for both families.
 */
__noinline int einat_inbound_query(struct packet *p)
{
	if (!p)
		return 0;
	struct ct_key ck;
	ct_key_init(&ck, p->family, p->l4proto, &p->dst, p->dport, &p->src, 0);
	struct mapping_record *b = binding_reply(p->family, p->l4proto, &p->dst, p->dport);
	if (b) {
		/* Ours from an earlier ping: its session, if this remote has one, is kept
		 * alive. Another remote's makes none (the router answers either way): pings
		 * from many sources would otherwise fill the session table. */
		struct ct_value *v = NULL;
		if (b->ct.int_port == p->dport && addr_eq(&b->ct.int_addr, &p->dst))
			v = ct_find(&ck);
		if (v)
			einat_ct_refresh(v, p->l4proto, false, 0, packet_now(p));
		return 0;
	}
	struct external_config *dc = lpm_lookup(&map_externals, p->family, &p->dst);
	if (!dc || !(dc->flags & EXT_EXTERNAL) ||
	    !port_in_ranges(dc, PROTO_IDX_ICMP_IN, bpf_ntohs(p->dport)))
		return 0;
	int slot = einat_ext_slot(p->family, &p->dst);
	/* Pings from outside may fill three quarters of the bindings at most: the rest stays
	 * the internal hosts' whatever anyone outside sends (the router answers either way). */
	if (slot < 0 || !binding_count_take_below((__u64)CFG.binding_max * 3 / 4))
		return 0;
	struct rec_key rk;
	rec_key_init(&rk, p->family, p->l4proto, &p->dst, p->dport);
	__u32 idx = rec_index(slot, PROTO_IDX_ICMP, bpf_ntohs(p->dport));
	b = rec_get(idx);
	/* the ping's session is made with the binding, in its record */
	struct ct_value first;
	ct_first(&first, p->l4proto, false, 0, packet_now(p));
	/* The record's reference counts for its host (the router, whose limits these
	 * bindings are not held to), as every reference does, and before it is taken
	 * (lib/hosts.h); so does the one the publish may take. */
	host_sess_add(p->family, &p->dst, 2);
	if (!b || !rec_claim(b, &rk, &first, &p->src, 0)) {
		binding_count_drop();
		host_sess_sub(p->family, &p->dst, 2);
		return 0;
	}
	host_add_binding(p->family, &p->dst); /* as its release will count it down */
	int pub = einat_record_publish(&rk, idx);
	if (pub < 0 || pub == (int)idx)
		host_sess_sub(p->family, &p->dst, 1); /* none taken */
	if (pub != (int)idx) { /* the NAT host's endpoint bound already: its own ping out
			       * (einat_egress_own) took another identifier */
		einat_binding_put(idx);
		if (pub >= 0 && einat_rec_is(pub, &rk)) {
			einat_binding_put(pub);
		} else if (pub >= 0) {
			/* The reference went to a record that left this endpoint between the
			 * index's compare and the reference: given back uncounted, as its host
			 * never counted it, and ours taken back (as einat_binding_create). */
			einat_binding_unref(pub, 1);
			host_sess_sub(p->family, &p->dst, 1);
		}
		return 0;
	}
	stat_inc(STAT_NEW_BINDING);
	stat_inc(STAT_NEW_SESSION);
	return 0;
}

static __always_inline int ingress_icmp_query(struct packet *p)
{
	if (CFG.inbound_icmpx && !is_external_src(p))
		einat_inbound_query(p);
	return pass();
}

/*
 * Hairpinning (RFC 4787 REQ-9): a packet from inside to one of our external
 * addresses, routed here by the hairpin rules. It is translated both ways
 * (source to the sender's mapping, destination to the mapped internal host,
 * whose session this is inbound traffic of) and sent straight to the
 * internal host through the FIB, so the receiver sees the sender's external
 * endpoint. The caller has updated both sessions.
 */
__noinline int einat_hairpin(struct __sk_buff *skb, struct packet *p, struct endpoint *snat,
			     struct endpoint *target)
{
	if (!p || !snat || !target)
		return TC_ACT_SHOT;
	if (rewrite(skb, p, true, &snat->addr, snat->port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (rewrite(skb, p, false, &target->addr, target->port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	return einat_redirect_inward(skb, p->family, &target->addr);
}

/*
 * bpf_fib_lookup_external: the source address the routing table and rules
 * pick for this destination (route `src`, rules), when it is one of our
 * external addresses with a slot. Returns 1 with a copy of it and its ranges in the
 * per-CPU scratch `ext`, 0 to use the default external.
 */
__noinline int einat_fib_external(struct __sk_buff *skb, struct packet *p)
{
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	if (!sc || !p)
		return 0;
	__builtin_memset(&sc->fib, 0, sizeof(sc->fib));
	sc->fib.ifindex = skb->ifindex;
	if (p->family == 4) {
		sc->fib.family = AF_INET;
		sc->fib.ipv4_dst = p->dst.v4;
	} else {
		sc->fib.family = AF_INET6;
		__builtin_memcpy(sc->fib.ipv6_dst, &p->dst, 16);
	}
	if (bpf_fib_lookup(skb, &sc->fib, sizeof(sc->fib),
			   BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH |
				   BPF_FIB_LOOKUP_SRC) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__builtin_memset(&sc->ext, 0, sizeof(sc->ext));
	if (p->family == 4)
		sc->ext.addr.v4 = sc->fib.ipv4_src;
	else
		__builtin_memcpy(&sc->ext.addr, sc->fib.ipv6_src, 16);
	struct external_config *cfg = lpm_lookup(&map_externals, p->family, &sc->ext.addr);
	if (!cfg || !(cfg->flags & EXT_EXTERNAL) || (cfg->flags & EXT_NO_SNAT))
		return 0;
	/* One without a slot (more addresses than external_slots) has no records to bind
	 * on: the default external, which has, instead of a refusal. */
	if (einat_ext_slot(p->family, &sc->ext.addr) < 0)
		return 0;
	sc->ext.cfg = *cfg;
	sc->ext.valid = 1;
	return 1;
}

/* Sources that never belong to forwarded traffic. */
static __always_inline bool local_only_source(const struct packet *p)
{
	if (p->family == 4)
		return p->src.v4 == 0;
	if ((p->src.bytes[0] == 0xfe) && ((p->src.bytes[1] & 0xc0) == 0x80))
		return true; /* fe80::/10 */
	return (p->src.all[0] | p->src.all[1] | p->src.all[2] | p->src.all[3]) == 0;
}

/* The session names the packet's source as its internal endpoint: the flow is its. */
static __always_inline bool ct_names_source(const struct ct_value *v, const struct packet *p)
{
	return v->int_port == p->sport && addr_eq(&v->int_addr, &p->src);
}

/*
 * Translates a packet from its flow-cache slot when the slot holds its flow
 * (hit) and may be trusted (lib/flowcache.h): the external endpoint on
 * egress, the internal one on ingress. Returns the verdict, or -1 when the
 * packet must take the lookups.
 */
/*
 * The key of a packet's session: egress, from the external endpoint its
 * flow-cache slot fe holds; ingress, from its destination. remote_port: the
 * remote's port, 0 for ICMP.
 */
static __always_inline void flow_ct_key(struct ct_key *k, const struct packet *p,
					const struct flow_entry *fe, bool egress,
					__be16 remote_port)
{
	if (egress)
		ct_key_init(k, p->family, p->l4proto, &fe->to_addr, fe->to_port, &p->dst,
			    remote_port);
	else
		ct_key_init(k, p->family, p->l4proto, &p->dst, p->dport, &p->src, remote_port);
}

static __always_inline int flow_serve(struct __sk_buff *skb, struct packet *p,
				      struct flow_entry *fe, bool hit, bool egress, __u64 now,
				      __be16 remote_port)
{
	if (unlikely(!hit || !flow_trusted(fe, p, now)))
		return -1;
	/* Inline here, not the global einat_rewrite: a call and return cost
	 * ~10 ns with return-thunk mitigations (the verifier walks two more copies). */
	if (unlikely(rewrite_impl(skb, p, egress, &fe->to_addr, fe->to_port)))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(egress ? STAT_EGRESS_NAT : STAT_INGRESS_NAT);
	traffic_add(skb, egress, p->family);
	struct sess_scratch *ss = CFG.session_counters ? sess_scratch() : NULL;
	if (ss) {
		flow_ct_key(&ss->k, p, fe, egress, remote_port);
		sess_count(skb, &ss->k, NULL, egress);
	}
	return TC_ACT_OK;
}

/*
 * The fast path of an established flow: binding and session exist, so the
 * no-SNAT, hairpin and range checks were made when they were created. A
 * changed configuration (ranges, no-SNAT) applies to new mappings; existing
 * ones keep what they were given, as conntrack entries outlive a changed
 * nftables rule, and only those of an address that left are dropped
 * (lib/nat/apply.ts, purgeStale). Returns the verdict, or -1 for the full
 * path.
 */
static __always_inline int egress_established(struct __sk_buff *skb, struct packet *p,
					      const __u8 family)
{
	__be16 remote_port = p->dport;
	if (p->l4proto == IPPROTO_ICMP) {
		if (!icmp_is_request(p->family, p->icmp_type))
			return -1;
		remote_port = 0;
	}
	bool hit = false;
	/* prefetching, should the flow miss and no binding be found, the new mapping's
	 * record; not for TCP past its SYN, which starts no flow but in rare cases (a
	 * SYN's reads are made below, with its slot's) */
	int source = p->l4proto != IPPROTO_TCP ? SOURCE_PREFETCH : 0;
	struct flow_entry *fe;
	__u64 now = packet_now(p);
	if (unlikely(flow_syn(p))) {
		fe = flow_slot_blind(p, family, true);
		/* The lines its lookups and new mapping wait for, read together: its source's
		 * outbound line, the records it would claim, and the slot it fills blind,
		 * whose store otherwise waits for its page walk at the end (~60 ns a SYN
		 * one at a time; docs/performance-history.md, stop 46). */
		if (fe)
			(void)*(volatile __u8 *)&fe->kind;
		einat_new_flow_prefetch(p);
	} else {
		/* in a burst of new flows, what a new flow waits for read beside its set
		 * (flowcache.h) */
		if (source && flow_miss_burst()) {
			einat_new_flow_prefetch(p);
			source = 0;
		}
		fe = flow_slot(p, family, true, &hit);
		int served = flow_serve(skb, p, fe, hit, true, now, remote_port);
		if (likely(served >= 0))
			return served;
		if (!hit) /* counted by einat_source_binding, unless its pass verdict is cached */
			source |= SOURCE_MISSED;
	}
	__u64 epoch = epoch_now(); /* before the lookups the slot will stand for */
	struct ct_key ck;
	int ri = -1; /* the binding's record, when looked up here */
	if (hit) {
		flow_ct_key(&ck, p, fe, true, remote_port);
	} else {
		struct endpoint b;
		ri = einat_source_binding(p, &b, source);
		if (ri == SOURCE_PASS)
			return pass();
		if (ri < 0) {
			p->no_binding = 1; /* the full path need not look again */
			return -1;
		}
		ct_key_init(&ck, p->family, p->l4proto, &b.addr, b.port, &p->dst, remote_port);
	}
	/* with the record in hand, its inline session is looked at without finding it again */
	struct ct_value *v = ri >= 0 ? ct_find_at(ri, &ck) : ct_find(&ck);
	/* The session names the internal endpoint: a cached flow must be its, and so must
	 * the session of a binding found by the source, whose record could have gone to
	 * another endpoint since the lookup (the session found would then be its). */
	if (!v || (v->flags & CT_HAIRPIN) || !ct_names_source(v, p)) {
		if (hit)
			fe->kind = 0;
		return -1;
	}
	einat_ct_refresh(v, p->l4proto, true, p->tcp_flags, now);
	if (fe)
		flow_fill(fe, p, true, &ck.ext_addr, ck.ext_port, epoch, now);
	if (rewrite(skb, p, true, &ck.ext_addr, ck.ext_port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_EGRESS_NAT);
	traffic_add(skb, true, p->family);
	sess_count(skb, &ck, v, true);
	return TC_ACT_OK;
}

/*
 * A later fragment leaving. It has no ports: it does what its first fragment
 * did, as recorded (frag.h): translated (FRAG_OUT, the new source), passed
 * (FRAG_OUT, its own source), hairpinned (FRAG_TURN, the new destination,
 * with FRAG_OUT) or delivered to the router (FRAG_TURN, its own
 * destination). Before its first: to one of our external addresses (turn)
 * the router's, never sent out; as it is when the protocol's NAT is off
 * (nat_off); otherwise the default external address (def), the only one a
 * new mapping can have.
 */
__noinline int einat_egress_later_fragment(struct __sk_buff *skb, struct packet *p,
					   const union ip_addr *def, int turn, int nat_off)
{
	union ip_addr src, to;
	if (!p || !def)
		return TC_ACT_SHOT;
	int out = einat_frag_lookup(p, FRAG_OUT, &src);
	if (turn) {
		if (einat_frag_lookup(p, FRAG_TURN, &to)) {
			if (addr_eq(&to, &p->dst))
				return deliver_locally(skb);
			if (!out) /* its source's record is gone (LRU): it cannot follow */
				return drop(STAT_DROP_UNTRANSLATABLE);
			if (rewrite(skb, p, true, &src, 0) || rewrite(skb, p, false, &to, 0))
				return drop(STAT_DROP_UNTRANSLATABLE);
			stat_inc(STAT_FRAGMENT_NAT);
			return einat_redirect_inward(skb, p->family, &to);
		}
		if (!out) /* nothing made of its datagram: the router's own */
			return deliver_locally(skb);
	}
	if (!out) {
		if (nat_off)
			return pass_rare();
		src = *def;
	} else if (addr_eq(&src, &p->src)) {
		return pass_rare(); /* its first passed: so does it */
	} else if ((src.all[0] | src.all[1] | src.all[2] | src.all[3]) == 0) {
		return drop(STAT_DROP_UNTRANSLATABLE); /* its first was refused (FRAG_REFUSED) */
	}
	if (rewrite(skb, p, true, &src, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_FRAGMENT_NAT);
	traffic_add(skb, true, p->family);
	if (CFG.session_counters && out)
		einat_frag_count(skb, p, FRAG_OUT);
	return TC_ACT_OK;
}

/* Passes a packet as it is; the rest of its datagram too when its later fragments cannot tell
 * their protocol (frag.h). */
static __always_inline int pass_datagram(const struct packet *p)
{
	if (p->frag == FRAG_FIRST && frag_later_blind(p))
		einat_frag_record(p, FRAG_OUT, &p->src, NULL);
	return pass();
}

/*
 * Another IP protocol leaving (lib/addrnat.h): an internal host's source
 * becomes the external address, and (protocol, external, remote) its mapping;
 * a later fragment does what its first did. The router's own sources, no-SNAT
 * ones and no-SNAT destinations pass as they are; to one of our external
 * addresses it is the router's (never turned: no port names a host).
 */
__noinline int einat_egress_other(struct __sk_buff *skb, struct packet *p)
{
	if (!p)
		return TC_ACT_SHOT;
	if (local_only_source(p))
		return pass_datagram(p);
	__u8 src = ext_flags(p->family, &p->src);
	if (src & EXT_EXTERNAL) {
		/* The router's own (a tunnel of its own, say): it holds (protocol, external,
		 * remote) as an internal host would, so that no host can take it and what the
		 * remote sends back (ingress finds the external address itself: the router's).
		 * When a host holds it already, the router's packet leaves all the same. */
		if (p->frag != FRAG_LATER)
			einat_addr_nat_claim(p, &p->src, packet_now(p));
		return pass_datagram(p);
	}
	if (src & EXT_NO_SNAT)
		return pass_datagram(p);
	__u32 dest = dest_flags(p);
	if (dest & EXT_NO_SNAT)
		return pass_datagram(p);
	if (dest & EXT_EXTERNAL)
		return deliver_turned(skb, p);

	struct default_ext *ext = default_ext_of(p->family);
	if (!ext) /* no external address: told, as a new flow is (REQ-8) */
		return p->frag == FRAG_LATER ? drop(STAT_DROP_UNTRANSLATABLE)
					     : refused(skb, p, STAT_DROP_UNTRANSLATABLE);
	addr_nat_csum_off(p);
	if (p->frag == FRAG_LATER)
		return einat_egress_later_fragment(skb, p, &ext->addr, 0, 0);

	const union ip_addr *to = &mapping_ext(skb, p, ext)->addr;
	int r = einat_addr_nat_claim(p, to, packet_now(p));
	if (r) {
		if (p->frag == FRAG_FIRST) { /* the rest of its datagram is refused with it */
			union ip_addr refused_mark = FRAG_REFUSED;
			einat_frag_record(p, FRAG_OUT, &refused_mark, NULL);
		}
		return refused(skb, p, r);
	}
	if (rewrite(skb, p, true, to, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (p->frag == FRAG_FIRST) {
		einat_frag_record(p, FRAG_OUT, to, NULL);
		if (p->family == 6) /* errors about its later fragments quote (external, remote) */
			einat_frag_record_back(p, FRAG_OUT_BACK, to, &p->dst, &p->src);
	}
	stat_inc(STAT_EGRESS_NAT);
	traffic_add(skb, true, p->family);
	return TC_ACT_OK;
}

/* Keys and values of the full egress path (the stack is short). */
struct egress_scratch {
	struct ct_key ck;
	struct ct_value first; /* a new binding's first session */
	struct endpoint target; /* hairpin: the destination's binding */
	struct endpoint bv;
	struct endpoint intern;
	__u64 epoch; /* read before the binding was looked up or made */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct egress_scratch);
	__uint(max_entries, 1);
} map_egress_scratch SEC(".maps");

/*
 * The full egress path of a packet the established fast path did not serve:
 * no-SNAT destinations, later fragments, hairpinning, new bindings and
 * sessions. A global function: verified once, not once per family and per
 * state the fast path leaves (NAT44+NAT66 egress verification -8 %).
 */
__noinline int einat_egress_full(struct __sk_buff *skb, struct packet *pp)
{
	int r;
	__u32 zero = 0;
	struct egress_scratch *es = bpf_map_lookup_elem(&map_egress_scratch, &zero);
	if (!pp || !es)
		return TC_ACT_SHOT;

	es->epoch = epoch_now(); /* before the lookups a flow-cache slot would stand for */
	/* One lookup for what the destination is: no-SNAT, or one of our externals. */
	__u32 dest = dest_flags(pp);
	if (dest & EXT_NO_SNAT) {
		pp->pass_cache = 1; /* whatever the source: the configuration says so */
		return pass();
	}
	/* (the router's own, einat_egress_own, is never turned) */
	if (pp->own && (dest & EXT_EXTERNAL))
		return pass();

	struct default_ext *ext = default_ext_of(pp->family);
	/* No external address of the family (a WAN waiting for DHCP or PPPoE): the
	 * sender is told at once (RFC 5508 REQ-8), not left to time out. */
	if (!ext)
		return pp->own ? pass() : refused(skb, pp, STAT_DROP_UNTRANSLATABLE);

	/* NAT disabled for this protocol (its range empty): no new binding, and the
	 * packet passes as it is. An existing binding keeps serving its internal
	 * endpoint, new remotes too (endpoint-independent mapping, RFC 4787 REQ-1). */
	int pidx = proto_idx(pp->l4proto);
	bool nat_off = ext->cfg.range_len[pidx & 3] == 0;

	bool turn = hairpin_dest(dest);
	if (pp->frag == FRAG_LATER)
		return einat_egress_later_fragment(skb, pp, &ext->addr, turn,
						   nat_off && pp->l4proto);

	struct endpoint *bvp = &es->bv;
	bool b = false;
	if (nat_off) {
		b = !pp->no_binding &&
		    einat_binding_of(pp->family, pp->l4proto, &pp->src, pp->sport, bvp) >= 0;
		if (!b) {
			if (turn) /* to the router itself, as it is (not out to the WAN) */
				return deliver_turned(skb, pp);
			if (pp->frag == FRAG_FIRST) /* its datagram stays as it is */
				einat_frag_record(pp, FRAG_OUT, &pp->src, NULL);
			return pass();
		}
	}

	/*
	 * Hairpin: to one of our own external addresses. An echo carries one
	 * identifier, no port naming an internal host, so pings (and echo
	 * replies) to the external address are the router's, like those from
	 * outside: delivered locally, untranslated.
	 */
	struct endpoint *target = NULL;
	if (turn) {
		if (pp->l4proto == IPPROTO_ICMP)
			return deliver_turned(skb, pp);
		struct mapping_record *t =
			hairpin_binding(pp->family, pp->l4proto, &pp->dst, pp->dport);
		if (!t) /* the router's own service, or port */
			return deliver_turned(skb, pp);
		target = &es->target;
		binding_intern(target, t);
	}

	__be16 remote_port = pp->dport;
	if (pp->l4proto == IPPROTO_ICMP) {
		if (!icmp_is_request(pp->family, pp->icmp_type))
			return drop(STAT_DROP_UNTRANSLATABLE);
		remote_port = 0;
	}

	struct ct_key *ck = &es->ck;
	bool made = false;
	if (!b)
		b = !pp->no_binding &&
		    einat_binding_of(pp->family, pp->l4proto, &pp->src, pp->sport, bvp) >= 0;
	if (!b) {
		if (pp->tcp_flags & TCP_FLAG_RST)
			return pp->own ? pass() : drop(STAT_DROP_UNTRANSLATABLE);
		/* the router's own on its source address (einat_egress_own's copy) */
		struct default_ext *from = pp->own ? own_ext(pp) : mapping_ext(skb, pp, ext);
		/* this packet's session, made with the binding: its remote endpoint (the
		 * external one is the binding's) and its value */
		ct_key_init(ck, pp->family, pp->l4proto, &pp->dst, 0, &pp->dst, remote_port);
		ct_first(&es->first, pp->l4proto, true, pp->tcp_flags, packet_now(pp));
		r = einat_binding_create(pp, from, bvp, ck, &es->first);
		if (r > 0 && pp->own) /* no mapping for it: as it is, as before einat */
			return pass();
		if (r == STAT_DROP_NO_PORT || r == STAT_DROP_BINDING_FULL ||
		    r == STAT_DROP_HOST_FULL || r == STAT_DROP_HOST_CT_FULL)
			return refused(skb, pp, r); /* tell the sender (RFC 5508 REQ-8) */
		if (r > 0)
			return drop(r);
		made = r == 0;
	}

	ct_key_init(ck, pp->family, pp->l4proto, &bvp->addr, bvp->port, &pp->dst, remote_port);
	struct endpoint *intern = &es->intern;
	__builtin_memset(intern, 0, sizeof(*intern));
	intern->addr = pp->src;
	intern->port = pp->sport;
	/* A binding made here holds this session already. Another CPU's comes with a
	 * reference for it, which the session keeps; when none was made, the binding goes
	 * with it if no other CPU took one meanwhile. */
	r = 0;
	if (!made && b && (pp->tcp_flags & TCP_FLAG_RST) && !ct_find(ck)) {
		/* A reset refusing a remote's packet (a SYN to a closed port, say): translated,
		 * but it makes no session (RFC 7857 7.1: an outbound RST answering inbound
		 * traffic does not refresh the mapping). Otherwise the remote's packets,
		 * which make none (ingress_l4), would make one each through the reset. */
	} else if (!made) {
		r = einat_ct_touch(ck, intern, pp, true, b ? CT_FIND : CT_NEW_REF_HELD);
		if (r && !b)
			binding_put(pp->family, pp->l4proto, &bvp->addr, bvp->port);
		if (r == CT_REF_UNUSED)
			r = 0;
	}
	if (r && pp->own)
		return pass();
	if (r)
		return r == STAT_DROP_CT_FULL || r == STAT_DROP_HOST_CT_FULL ? refused(skb, pp, r)
									     : drop(r);
	if (made && log_on(LOG_INFO))
		einat_log_session(ck, intern, 1, 1);

	if (target) { /* the target's session sees this as inbound traffic */
		struct ct_value *own_ct = ct_find(ck);
		if (own_ct)
			own_ct->flags |= CT_HAIRPIN; /* keeps it off the fast path */
		sess_count(skb, ck, own_ct, true); /* out of the sender's session */
		ct_key_init(ck, pp->family, pp->l4proto, &pp->dst, pp->dport, &bvp->addr,
			    bvp->port);
		/* Refreshed when the target has one; made by its answer otherwise, as from
		 * outside (ingress_l4). */
		struct ct_value *peer_ct = ct_find(ck);
		if (peer_ct) { /* its replies come back here and must turn around too */
			einat_ct_refresh(peer_ct, pp->l4proto, false, pp->tcp_flags,
					 packet_now(pp));
			peer_ct->flags |= CT_HAIRPIN;
		}
		sess_count(skb, ck, peer_ct, false); /* into the target's */
		if (pp->frag == FRAG_FIRST) { /* the rest of the datagram turns too */
			einat_frag_record(pp, FRAG_OUT, &bvp->addr, NULL);
			einat_frag_record(pp, FRAG_TURN, &target->addr, NULL);
		}
		return einat_hairpin(skb, pp, bvp, target);
	}
	if (pp->frag == FRAG_NONE) {
		/* A new mapping's session is this flow's, and so is one just made on an
		 * existing binding when it names this source (as the established path
		 * checks): its next packets can be served from the slot at once. */
		bool ours = !b;
		if (!ours) {
			struct ct_value *v = ct_find(ck);
			ours = v && !(v->flags & CT_HAIRPIN) && ct_names_source(v, pp);
		}
		bool hit;
		struct flow_entry *fe = NULL;
		if (ours && flow_syn(pp))
			fe = flow_slot_blind(pp, pp->family, true);
		else if (ours)
			fe = flow_slot(pp, pp->family, true, &hit);
		if (fe)
			flow_fill(fe, pp, true, &bvp->addr, bvp->port, es->epoch, packet_now(pp));
	}
	if (rewrite(skb, pp, true, &bvp->addr, bvp->port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (pp->frag == FRAG_FIRST) {
		einat_frag_record(pp, FRAG_OUT, &bvp->addr, ck);
		if (pp->family == 6) /* errors about its later fragments quote (external, remote) */
			einat_frag_record_back(pp, FRAG_OUT_BACK, &bvp->addr, &pp->dst, &pp->src);
	}
	stat_inc(STAT_EGRESS_NAT);
	traffic_add(skb, true, pp->family);
	if (CFG.session_counters)
		sess_count(skb, ck, ct_find(ck), true);
	return TC_ACT_OK;
}

/*
 * The router's own packet from one of its external addresses (not a no-SNAT one), with a port
 * (ICMP: an identifier) in the NAT's ranges of that address: mapped as an internal host's is,
 * on its own address, so that no host's new mapping takes the port of a connection of the
 * router's and catches its replies (einat-ebpf maps such packets too). Port preservation keeps
 * the port unless a host holds it already; then the router's packets take another, and the
 * replies come back to the port it chose. Anything else from the router (other ports, echo
 * replies, a reset no mapping knows, fragments), or when no mapping can be made, passes as it
 * is. Returns the verdict.
 */
__noinline int einat_egress_own(struct __sk_buff *skb, struct packet *p)
{
	if (!p)
		return TC_ACT_SHOT;
	if (p->l4proto == IPPROTO_ICMP && !icmp_is_request(p->family, p->icmp_type))
		return pass();
	/* the usual case: the default external, whose ranges are at hand */
	struct default_ext *d = default_ext_of(p->family);
	const struct external_config *cfg =
		d && addr_eq(&d->addr, &p->src) ? &d->cfg
						: lpm_lookup(&map_externals, p->family, &p->src);
	if (!cfg || !(cfg->flags & EXT_EXTERNAL) || (cfg->flags & EXT_NO_SNAT))
		return pass();
	if (!port_in_ranges(cfg, proto_idx(p->l4proto), bpf_ntohs(p->sport))) {
		p->pass_cache = 1; /* its port is no mapping's: the configuration says so */
		return pass();
	}
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	if (!sc)
		return pass();
	__builtin_memset(&sc->ext, 0, sizeof(sc->ext));
	sc->ext.addr = p->src;
	sc->ext.cfg = *cfg;
	sc->ext.valid = 1;
	p->own = 1;
	return einat_egress_full(skb, p);
}

/* flow_fill_pass() for an egress packet, at most once a flow_fresh() per flow: a global
 * function, verified once. */
__noinline int einat_flow_fill_pass(struct packet *p, __u64 epoch)
{
	if (!p)
		return 0;
	flow_fill_pass(p, p->family, true, epoch, packet_now(p));
	return 0;
}

static __always_inline int egress_family(struct __sk_buff *skb, const __u8 family)
{
	__u32 pkt_idx = 0;
	struct packet *pp = bpf_map_lookup_elem(&map_packet_scratch, &pkt_idx);
	if (!pp)
		return TC_ACT_SHOT;
	pull_headers(skb, family);
	int r = parse_packet(skb, pp, family);
	if (log_on(LOG_TRACE))
		einat_log_packet(pp, 1);
	if (unlikely(r == PARSE_PASS)) {
		if (addr_nat_proto(pp->family, pp->real_proto))
			return einat_egress_other(skb, pp);
		/* Another protocol's first fragment: its later fragments pass too. */
		return pass_datagram(pp);
	}
	if (unlikely(r == PARSE_BAD && pp->family == 0))
		return drop(STAT_DROP_UNTRANSLATABLE);

	if (unlikely(local_only_source(pp))) {
		/* DHCP from 0.0.0.0, link-local IPv6: the router's own. An ICMP error of its
		 * may quote what it could not deliver inbound, a mapped endpoint: translated back
		 * as its errors from an external address are, its source kept. */
		if (pp->icmp_err && r != PARSE_BAD)
			return einat_egress_icmp_error(skb, pp, 1);
		return pass();
	}
	if (likely(r == PARSE_OK && !pp->icmp_err && pp->frag == FRAG_NONE)) {
		r = egress_established(skb, pp, family);
		if (likely(r >= 0))
			return r;
	}

	/* before the lookups a pass verdict cached for the flow stands for (flow_fill_pass) */
	__u64 epoch = epoch_now();
	/* Traffic of the router itself, and sources configured as no-SNAT. */
	__u8 src_flags = ext_flags(pp->family, &pp->src);
	bool own = src_flags & (EXT_EXTERNAL | EXT_NO_SNAT);
	if (r == PARSE_BAD)
		return own ? pass() : drop(STAT_DROP_UNTRANSLATABLE);
	if (pp->icmp_err)
		return einat_egress_icmp_error(skb, pp, own);
	if (own) {
		if ((src_flags & (EXT_EXTERNAL | EXT_NO_SNAT)) == EXT_EXTERNAL &&
		    pp->frag == FRAG_NONE)
			r = einat_egress_own(skb, pp);
		else {
			/* A no-SNAT source to one of our external addresses (the hairpin
			 * rules send it here): the router's, as it is, not out to the WAN. */
			__u32 dest = src_flags & EXT_EXTERNAL ? 0 : dest_flags(pp);
			if (hairpin_dest(dest) && !(dest & EXT_NO_SNAT))
				return deliver_turned(skb, pp);
			pp->pass_cache = 1;
			r = pass();
		}
	} else {
		r = einat_egress_full(skb, pp);
	}
	/* Its flow's next packets pass from the cache: see flow_pass_cached(). */
	if (pp->pass_cache && pp->frag == FRAG_NONE)
		einat_flow_fill_pass(pp, epoch);
	return r;
}

/*
 * The first fragment of an inbound datagram has passed: when it was not
 * translated but goes to our external address (the router's own), its
 * datagram is recorded as staying where it is, so its later fragments are
 * not held; then the held ones are released (frag.h). Returns the verdict.
 */
__noinline int einat_ingress_first_fragment(struct __sk_buff *skb, struct packet *p)
{
	union ip_addr to;
	if (!p)
		return TC_ACT_SHOT;
	if (!einat_frag_lookup(p, FRAG_IN, &to)) {
		if (!is_external_dest(p))
			return TC_ACT_OK;
		einat_frag_record(p, FRAG_IN, &p->dst, NULL);
	}
	if (einat_frag_release(skb, p))
		return drop(STAT_DROP_FRAGMENT);
	return TC_ACT_OK;
}

/*
 * Another IP protocol arriving (lib/addrnat.h): to the internal host whose
 * mapping (protocol, external, remote) lives; otherwise the router's. A later
 * fragment does what its first did, and one before its first is held for it.
 */
__noinline int einat_ingress_other(struct __sk_buff *skb, struct packet *p)
{
	union ip_addr to;
	if (!p)
		return TC_ACT_SHOT;
	addr_nat_csum_off(p);
	if (p->frag == FRAG_LATER) {
		if (!einat_frag_lookup(p, FRAG_IN, &to)) {
			if (is_external_dest(p) && einat_frag_hold(skb, p)) {
				stat_inc(STAT_FRAGMENT_HELD);
				return TC_ACT_SHOT;
			}
			return pass_rare();
		}
		if (addr_eq(&to, &p->dst))
			return pass_rare();
		if (rewrite(skb, p, false, &to, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_FRAGMENT_NAT);
		traffic_add(skb, false, p->family);
		return TC_ACT_OK;
	}
	/* No mapping, or the router's own (held by the external address itself). */
	if (!einat_addr_nat_find(ADDR_FIND(p->family, p->real_proto, 1), &p->dst, &p->src,
				 packet_now(p), &to) ||
	    addr_eq(&to, &p->dst)) {
		if (p->frag == FRAG_FIRST) /* the router's: its held later fragments go on too */
			return einat_ingress_first_fragment(skb, p);
		return pass_rare();
	}
	if (rewrite(skb, p, false, &to, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_INGRESS_NAT);
	traffic_add(skb, false, p->family);
	if (p->frag == FRAG_FIRST) {
		einat_frag_record(p, FRAG_IN, &to, NULL);
		if (p->family == 6) /* errors about its later fragments quote (remote, internal) */
			einat_frag_record_back(p, FRAG_IN_BACK, &p->src, &to, &p->dst);
		return einat_ingress_first_fragment(skb, p); /* releases the held ones */
	}
	return TC_ACT_OK;
}

/* An unfragmented packet or a first fragment, to a binding or not. */
static __always_inline int ingress_l4(struct __sk_buff *skb, struct packet *pp, const __u8 family)
{
	int r;
	__be16 remote_port = pp->sport;
	if (pp->l4proto == IPPROTO_ICMP) {
		if (icmp_is_request(pp->family, pp->icmp_type))
			return ingress_icmp_query(pp);
		if (!icmp_is_reply(pp->family, pp->icmp_type))
			return pass();
		remote_port = 0;
	}

	/*
	 * Established: the session holds the internal endpoint (its binding's),
	 * so one lookup does. Otherwise the binding decides (EIF) and a session
	 * is made.
	 */
	bool hit = false;
	struct flow_entry *fe = NULL;
	__u64 now = packet_now(pp);
	if (unlikely(pp->frag != FRAG_NONE)) {
		/* a first fragment takes the lookups: they record its datagram */
	} else if (unlikely(flow_syn(pp))) {
		fe = flow_slot_blind(pp, family, false);
	} else {
		fe = flow_slot(pp, family, false, &hit);
		r = flow_serve(skb, pp, fe, hit, false, now, remote_port);
		if (likely(r >= 0))
			return r;
		if (fe && !hit)
			stat_inc(STAT_FLOW_CACHE_MISS);
	}
	__u64 epoch = epoch_now(); /* before the lookup the slot will stand for */
	/* Without a binding of the destination there is no session either (each
	 * holds a reference on it): traffic to the router's own ports, and
	 * unsolicited traffic, skips the session lookup. */
	int ri = einat_binding_at(pp->family, pp->l4proto, &pp->dst, pp->dport);
	if (ri < 0)
		return ingress_unmapped(pp);
	struct ct_key ck;
	flow_ct_key(&ck, pp, NULL, false, remote_port);
	struct endpoint bv;
	struct ct_value *v = ct_find_at(ri, &ck);
	if (v) {
		if (ct_expired(v, pp->l4proto, now)) {
			/* Expired, not swept yet: gone, and its binding decides (EIF),
			 * as for a new session; the binding goes with its last one. */
			ct_expire(&ck);
			v = NULL;
			ri = einat_binding_at(pp->family, pp->l4proto, &pp->dst, pp->dport);
		}
	}
	if (v) {
		einat_ct_refresh(v, pp->l4proto, false, pp->tcp_flags, now);
		bv.addr = v->int_addr;
		bv.port = v->int_port;
		/* Not for a bare SYN: it does not mark the remote seen (ct.h), and a slot
		 * would serve its next packet, which must. */
		if (fe && (pp->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
			flow_fill(fe, pp, false, &bv.addr, bv.port, epoch, now);
	} else {
		struct mapping_record *b = ri < 0 ? NULL : rec_get(ri);
		if (!b)
			return ingress_unmapped(pp);
		/* An echo reply answers a request: without that request's session it is
		 * no internal host's but the router's own (its pings draw identifiers
		 * from the same space, and the binding's holder may not be the one). */
		if (pp->l4proto == IPPROTO_ICMP)
			return pass();
		/* From one of our own external addresses: spoofed, or looped back. A session
		 * with it as remote would catch LAN traffic to that address on the egress
		 * fast path, past the hairpin turn. (Checked after the binding: traffic to
		 * the router's own ports skips this LPM lookup.) */
		if (is_external_src(pp))
			return pass();
		/* Endpoint-independent filtering lets it in, but it makes no session:
		 * the host's answer does (egress), as conntrack keeps nothing for what
		 * nobody answered. Otherwise anyone knowing one mapped port could fill
		 * the session table from many source endpoints, refusing every host's
		 * new flows, and keep a binding alive by sending to it. */
		binding_intern(&bv, b);
		stat_inc(STAT_INBOUND_UNANSWERED);
	}

	if (rewrite(skb, pp, false, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (pp->frag == FRAG_FIRST) {
		einat_frag_record(pp, FRAG_IN, &bv.addr, v ? &ck : NULL); /* counted as it is */
		if (family == 6) /* errors about its later fragments quote (remote, internal) */
			einat_frag_record_back(pp, FRAG_IN_BACK, &pp->src, &bv.addr, &pp->dst);
	}
	stat_inc(STAT_INGRESS_NAT);
	traffic_add(skb, false, family);
	if (CFG.session_counters && v)
		sess_count(skb, &ck, v, false);
	return TC_ACT_OK;
}

static __always_inline int ingress_family(struct __sk_buff *skb, const __u8 family)
{
	__u32 pkt_idx = 0;
	struct packet *pp = bpf_map_lookup_elem(&map_packet_scratch, &pkt_idx);
	if (!pp)
		return TC_ACT_SHOT;
	pull_headers(skb, family);
	int r = parse_packet(skb, pp, family);
	if (log_on(LOG_TRACE))
		einat_log_packet(pp, 0);
	if (unlikely(r != PARSE_OK)) {
		if (r == PARSE_PASS && addr_nat_proto(pp->family, pp->real_proto))
			return einat_ingress_other(skb, pp);
		/* A first fragment that passes as it is (one of another protocol whose
		 * later fragments cannot tell it, or of an ICMP message nothing maps):
		 * recorded for its later fragments, which pass too, and those held for
		 * it are released. */
		if (pp->frag == FRAG_FIRST && (r == PARSE_BAD || frag_later_blind(pp)))
			return einat_ingress_first_fragment(skb, pp);
		return pass();
	}
	if (unlikely(pp->icmp_err))
		return einat_ingress_icmp_error(skb, pp);

	if (unlikely(pp->frag == FRAG_LATER)) {
		union ip_addr to;
		if (!einat_frag_lookup(pp, FRAG_IN, &to)) {
			/* first fragment not seen yet: keep a copy for when it comes */
			if (is_external_dest(pp) && einat_frag_hold(skb, pp)) {
				stat_inc(STAT_FRAGMENT_HELD);
				return TC_ACT_SHOT;
			}
			return pass();
		}
		if (rewrite(skb, pp, false, &to, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_FRAGMENT_NAT);
		traffic_add(skb, false, family);
		if (CFG.session_counters)
			einat_frag_count(skb, pp, FRAG_IN);
		return TC_ACT_OK;
	}

	r = ingress_l4(skb, pp, family);
	if (unlikely(pp->frag == FRAG_FIRST && r == TC_ACT_OK))
		return einat_ingress_first_fragment(skb, pp);
	return r;
}

/*
 * One specialisation per family: the disabled family's code is dead under
 * the read-only config, so the verifier never walks it (NAT66 costs nothing
 * at load time when off).
 */
SEC("tc")
int egress_snat(struct __sk_buff *skb)
{
#ifdef EINAT_TEST_REJECT
	/* A deliberately invalid variant for tests: unchecked packet access. */
	if (*(__u8 *)(long)skb->data == 0xff)
		return TC_ACT_SHOT;
#endif
	if (skb->protocol == bpf_htons(ETH_P_IP) && ENABLE_NAT44)
		return egress_family(skb, 4);
	if (skb->protocol == bpf_htons(ETH_P_IPV6) && ENABLE_NAT66)
		return egress_family(skb, 6);
	return pass();
}

SEC("tc")
int ingress_dnat(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP) && ENABLE_NAT44)
		return ingress_family(skb, 4);
	if (skb->protocol == bpf_htons(ETH_P_IPV6) && ENABLE_NAT66)
		return ingress_family(skb, 6);
	return pass();
}
