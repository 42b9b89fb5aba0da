/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fragments (RFC 4787 REQ-14): the first fragment carries the L4 header and
 * is translated like any packet; its translation is recorded under
 * (addresses, protocol, IP ID) so the later fragments, which have no ports,
 * get the same address. An IPv6 datagram's key names the protocol its
 * Fragment headers do (the same in every fragment): a later fragment cannot
 * see the extension headers that may follow it in the first (parse.h).
 *
 * A later fragment that arrives before its first:
 * - on egress it gets the default external address (the only one a new
 *   mapping can have), so out-of-order outbound datagrams work and nothing
 *   leaks; to one of our external addresses it goes to the router;
 * - on ingress, to one of our external addresses, a copy of it is held
 *   (map_frag_hold) and the packet dropped. When the first fragment arrives
 *   and is translated (or found to be the router's own), each held fragment
 *   is written over the skb and cloned back into ingress
 *   (bpf_clone_redirect), where it now meets the recorded translation; then
 *   the first fragment is restored and goes on. Bounds: FRAG_HOLD_SLOTS
 *   fragments per datagram, FRAG_HOLD_BYTES of IP packet each,
 *   FRAG_HOLD_MAX held in all (an LRU: a flood of unmatched fragments only
 *   evicts held fragments, never touches unfragmented traffic, REQ-14a),
 *   each kept for timeout_fragment. Anything beyond the bounds passes
 *   untranslated, as before.
 */
#ifndef EINAT_FRAG_H
#define EINAT_FRAG_H

#include "maps.h"
#include "parse.h"

/*
 * The records of a datagram (frag_key.egress): FRAG_IN, ingress, its new
 * destination (its own when it stays with the router); FRAG_OUT, egress,
 * its new source (its own when it passed); FRAG_TURN, egress to one of our
 * external addresses, its new destination when hairpinned (with FRAG_OUT),
 * its own when delivered to the router.
 */
#define FRAG_IN 0
#define FRAG_OUT 1
#define FRAG_TURN 2
/*
 * The way back, IPv6 only (Linux reports later fragments there, not in
 * IPv4): an ICMPv6 error quoting a later fragment has no L4 header to map,
 * only the datagram's translated addresses and ID. FRAG_IN_BACK, keyed by
 * (remote, internal): the external destination the datagram came to;
 * FRAG_OUT_BACK, keyed by (external, remote): the internal source it left
 * from.
 */
#define FRAG_IN_BACK 3
#define FRAG_OUT_BACK 4

/* A FRAG_OUT record's address when the first fragment was refused (the unspecified address:
 * never a source einat gives): the later ones are dropped too, not sent from the external one. */
static const union ip_addr FRAG_REFUSED = {};

static __always_inline void frag_key_init(struct frag_key *k, const struct packet *p, int egress)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = p->family;
	/* IPv6: the protocol every fragment's Fragment header names (RFC 8200
	 * 4.5), which is the L4 one only when no extension header follows it. */
	k->l4proto = p->family == 6 ? p->frag_proto : p->l4proto;
	k->egress = egress;
	k->id = p->frag_id;
	k->src = p->src;
	k->dst = p->dst;
}

/*
 * A first fragment whose later fragments cannot tell its protocol: IPv6 with
 * an extension header after their Fragment header (parse.h gives them no
 * protocol). What it does (passes, as another protocol) is recorded for them.
 */
static __always_inline bool frag_later_blind(const struct packet *p)
{
	return p->family == 6 && ipv6_ext_walked(p->frag_proto);
}

/*
 * Records the new address for the rest of the datagram p starts, and with ck
 * the session its first fragment was translated in (its key: the external and
 * remote endpoints), whose counts its later fragments go to (state.h,
 * einat_frag_count). Global functions keep the fragment key off the hot
 * path's stack.
 */
__noinline int einat_frag_record(const struct packet *p, int egress, const union ip_addr *addr,
				 const struct ct_key *ck)
{
	struct frag_key k;
	struct frag_value v;
	if (!p || !addr)
		return -1;
	frag_key_init(&k, p, egress);
	__builtin_memset(&v, 0, sizeof(v));
	v.addr = *addr;
	v.expires_ns = bpf_ktime_get_ns() + TIMEOUT_FRAGMENT;
	if (ck) {
		v.ext_port = ck->ext_port;
		v.remote_port = ck->remote_port;
		v.l4proto = ck->l4proto;
		v.session = 1;
	}
	return bpf_map_update_elem(&map_frag, &k, &v, BPF_ANY);
}

/* Copies the address recorded under k to *out; 0 when none (or expired). */
static __always_inline int frag_get(const struct frag_key *k, union ip_addr *out)
{
	struct frag_value *v = bpf_map_lookup_elem(&map_frag, k);
	if (!v)
		return 0;
	if (v->expires_ns < bpf_ktime_get_ns()) {
		bpf_map_delete_elem(&map_frag, k);
		return 0;
	}
	*out = v->addr;
	return 1;
}

/* Copies the address recorded for a later fragment to *out; 0 when none. */
__noinline int einat_frag_lookup(const struct packet *p, int egress, union ip_addr *out)
{
	struct frag_key k;
	if (!p || !out)
		return 0;
	frag_key_init(&k, p, egress);
	return frag_get(&k, out);
}

/*
 * Records the way back (FRAG_IN_BACK, FRAG_OUT_BACK) for the IPv6 datagram p
 * starts, translated to (src, dst): addr is the address it had.
 */
__noinline int einat_frag_record_back(const struct packet *p, int kind, const union ip_addr *src,
				      const union ip_addr *dst, const union ip_addr *addr)
{
	struct frag_key k;
	struct frag_value v;
	if (!p || !src || !dst || !addr)
		return -1;
	frag_key_init(&k, p, kind);
	k.src = *src;
	k.dst = *dst;
	__builtin_memset(&v, 0, sizeof(v));
	v.addr = *addr;
	v.expires_ns = bpf_ktime_get_ns() + TIMEOUT_FRAGMENT;
	return bpf_map_update_elem(&map_frag, &k, &v, BPF_ANY);
}

/* The way back for an ICMPv6 error's quoted later fragment (parse_inner, PARSE_LATER). */
__noinline int einat_frag_back(const struct inner *in, int kind, union ip_addr *out)
{
	struct frag_key k;
	if (!in || !out)
		return 0;
	__builtin_memset(&k, 0, sizeof(k));
	k.family = 6;
	k.l4proto = in->frag_proto;
	k.egress = kind;
	k.id = in->frag_id;
	k.src = in->src;
	k.dst = in->dst;
	return frag_get(&k, out);
}

#define LOOPBACK_IFINDEX 1 /* the same in every network namespace */
#define FRAG_HOLD_SLOTS 4
#define FRAG_HOLD_BYTES 1600 /* IP bytes: a 1500-byte MTU with room */
#define FRAG_HOLD_MAX 128

struct frag_hold_key {
	struct frag_key fk;
	__u32 slot;
};

struct frag_hold {
	__u64 expires_ns;
	__u32 len;
	__u32 _pad;
	__u8 ip[FRAG_HOLD_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_hold_key);
	__type(value, struct frag_hold);
	__uint(max_entries, FRAG_HOLD_MAX);
} map_frag_hold SEC(".maps");

/* Per-CPU room to build a held entry, and to keep the first fragment while the held ones go. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct frag_hold);
	__uint(max_entries, 1);
} map_frag_hold_scratch SEC(".maps");

/* Holds a copy of an ingress later fragment whose first is unknown; 1 when held. */
__noinline int einat_frag_hold(struct __sk_buff *skb, const struct packet *p)
{
	__u32 zero = 0;
	struct frag_hold *s = bpf_map_lookup_elem(&map_frag_hold_scratch, &zero);
	if (!p || !s)
		return 0;
	__u32 l3 = p->l3_off;
	__be16 field;
	/* The IP packet as its header says (link padding left out); a truncated one is not held. */
	if (l3 > 64 || bpf_skb_load_bytes(skb, l3 + (p->family == 4 ? 2 : 4), &field, 2))
		return 0;
	__u32 len = bpf_ntohs(field) + (p->family == 4 ? 0 : 40);
	if (len < 20 || len > FRAG_HOLD_BYTES || len > skb->len - l3)
		return 0;
	if (bpf_skb_load_bytes(skb, l3, s->ip, len))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	s->expires_ns = now + TIMEOUT_FRAGMENT;
	s->len = len;
	struct frag_hold_key k;
	__builtin_memset(&k, 0, sizeof(k));
	frag_key_init(&k.fk, p, FRAG_IN);
	for (__u32 i = 0; i < FRAG_HOLD_SLOTS; i++) {
		k.slot = i;
		struct frag_hold *h = bpf_map_lookup_elem(&map_frag_hold, &k);
		if (h && h->expires_ns >= now)
			continue;
		if (bpf_map_update_elem(&map_frag_hold, &k, s, BPF_ANY))
			return 0;
		return 1;
	}
	return 0; /* this datagram's slots are full */
}

/*
 * After the first fragment at ingress was translated (its translation
 * recorded): replays the held later fragments of its datagram into ingress
 * and restores the first. Returns 0, or -1 when the skb could not be
 * restored (the caller drops it).
 */
__noinline int einat_frag_release(struct __sk_buff *skb, const struct packet *p)
{
	__u32 zero = 0;
	struct frag_hold *s = bpf_map_lookup_elem(&map_frag_hold_scratch, &zero);
	if (!p || !s)
		return 0;
	__u32 l3 = p->l3_off;
	if (l3 > 64)
		return 0;
	struct frag_hold_key k;
	__builtin_memset(&k, 0, sizeof(k));
	frag_key_init(&k.fk, p, FRAG_IN);
	__u64 now = bpf_ktime_get_ns();
	__u32 len = 0; /* of the first fragment, once kept aside */
	for (__u32 i = 0; i < FRAG_HOLD_SLOTS; i++) {
		k.slot = i;
		struct frag_hold *h = bpf_map_lookup_elem(&map_frag_hold, &k);
		if (!h)
			continue;
		__u32 hl = h->len;
		if (h->expires_ns >= now && hl >= 20 && hl <= FRAG_HOLD_BYTES) {
			if (!len) { /* keep the first aside; if it cannot be, the held ones expire */
				len = skb->len - l3;
				if (len < 20 || len > FRAG_HOLD_BYTES ||
				    bpf_skb_load_bytes(skb, l3, s->ip, len))
					return 0;
				s->len = len;
				/* Resizing the tail turns a CHECKSUM_COMPLETE skb into
				 * CHECKSUM_NONE (__skb_trim_rcsum). Do it once here, before
				 * anything is rewritten, so the replays and the restored first
				 * fragment carry no sum at all, rather than one frozen half-way
				 * by the first resize that follows a same-length replay (found
				 * by the fuzzer through the test run's sum check). */
				if (!bpf_skb_change_tail(skb, l3 + len - 1, 0))
					bpf_skb_change_tail(skb, l3 + len, 0);
			}
			/* Never replayed onto a loopback device: einat is not attached to one,
			 * and under BPF_PROG_TEST_RUN the skb sits on the caller's lo, where a
			 * clone would inject test packets into the caller's namespace. */
			if (!bpf_skb_change_tail(skb, l3 + hl, 0) &&
			    !bpf_skb_store_bytes(skb, l3, h->ip, hl, BPF_F_RECOMPUTE_CSUM) &&
			    (skb->ifindex == LOOPBACK_IFINDEX ||
			     !bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS)))
				stat_inc(STAT_FRAGMENT_RELEASED);
		}
		bpf_map_delete_elem(&map_frag_hold, &k);
	}
	if (!len)
		return 0;
	len = s->len;
	if (len < 20 || len > FRAG_HOLD_BYTES)
		return -1;
	if (bpf_skb_change_tail(skb, l3 + len, 0) ||
	    bpf_skb_store_bytes(skb, l3, s->ip, len, BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
}

#endif
