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
#include "lib/csum.h"
#include "lib/binding.h"
#include "lib/ct.h"
#include "lib/frag.h"
#include "lib/icmp_reply.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline int drop(enum einat_stat reason)
{
	stat_inc(reason);
	return TC_ACT_SHOT;
}

static __always_inline int pass(void)
{
	stat_inc(STAT_PASS);
	return TC_ACT_OK;
}

static __always_inline struct external_config *lpm_lookup(void *map, __u8 family,
							  const union ip_addr *addr)
{
	struct lpm_key k = { .prefixlen = 8 + (family == 4 ? 32 : 128), .family = family };
	k.addr = *addr;
	return bpf_map_lookup_elem(map, &k);
}

/*
 * An ICMP error leaving: it reports an inbound packet we translated, so the
 * embedded destination is an internal endpoint. Errors the router itself
 * sends (own) keep their outer source but must not leak the embedded one.
 */
__noinline int einat_egress_icmp_error(struct __sk_buff *skb, struct packet *p, int own)
{
	if (!p)
		return TC_ACT_SHOT;
	struct binding_key okey;
	binding_key_init(&okey, BINDING_ORIG, p->family, p->in.l4proto, &p->in.dst, p->in.dport);
	struct binding_value *b = bpf_map_lookup_elem(&map_binding, &okey);
	if (!b)
		return own ? pass() : drop(STAT_DROP_ICMP_ERROR);
	struct binding_value bv = *b;
	if (rewrite_inner(skb, p, false, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (!own && rewrite(skb, p, true, &bv.addr, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	return TC_ACT_OK;
}

/* An ICMP error arriving about a packet we sent from a mapping. */
__noinline int einat_ingress_icmp_error(struct __sk_buff *skb, struct packet *p)
{
	if (!p)
		return TC_ACT_SHOT;
	struct binding_key rkey;
	binding_key_init(&rkey, 0, p->family, p->in.l4proto, &p->in.src, p->in.sport);
	struct binding_value *b = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!b)
		return pass(); /* about the router's own traffic */
	struct binding_value bv = *b;
	if (rewrite_inner(skb, p, true, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (rewrite(skb, p, false, &bv.addr, 0))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_ICMP_ERROR_NAT);
	return TC_ACT_OK;
}

/*
 * A packet to no mapping. Ports outside the NAT ranges belong to the router
 * (SSH keeps working). An unsolicited SYN to a NAT port is dropped silently
 * (RFC 5382 REQ-4) instead of being answered with a RST by the router.
 */
static __always_inline int ingress_unmapped(const struct packet *p)
{
	if (p->l4proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		struct external_config *dc = lpm_lookup(&map_externals, p->family, &p->dst);
		if (dc && (dc->flags & EXT_EXTERNAL) &&
		    port_in_ranges(dc, PROTO_IDX_TCP, bpf_ntohs(p->dport)))
			return drop(STAT_DROP_UNSOLICITED);
	}
	return pass();
}

static __always_inline int egress_family(struct __sk_buff *skb, const __u8 family)
{
	struct packet p;
	int r = parse_packet(skb, &p, family);
	if (r == PARSE_PASS)
		return pass();
	if (r == PARSE_BAD && p.family == 0)
		return drop(STAT_DROP_UNTRANSLATABLE);

	/* Traffic of the router itself, and sources configured as no-SNAT. */
	struct external_config *src_cfg = lpm_lookup(&map_externals, p.family, &p.src);
	bool own = src_cfg && (src_cfg->flags & (EXT_EXTERNAL | EXT_NO_SNAT));
	if (r == PARSE_BAD)
		return own ? pass() : drop(STAT_DROP_UNTRANSLATABLE);
	if (p.icmp_err)
		return einat_egress_icmp_error(skb, &p, own);
	if (own)
		return pass();

	__u32 *dflags = (__u32 *)lpm_lookup(&map_dest_config, p.family, &p.dst);
	if (dflags && (*dflags & EXT_NO_SNAT))
		return pass();

	__u32 idx = p.family == 4 ? 0 : 1;
	struct default_ext *ext = bpf_map_lookup_elem(&map_default_ext, &idx);
	if (!ext || !ext->valid)
		return drop(STAT_DROP_UNTRANSLATABLE);

	if (p.frag == FRAG_LATER) {
		const union ip_addr *a = frag_lookup(&p, true);
		if (rewrite(skb, &p, true, a ? a : &ext->addr, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_FRAGMENT_NAT);
		return TC_ACT_OK;
	}

	int pidx = proto_idx(p.l4proto);
	if (ext->cfg.range_len[pidx & 3] == 0)
		return pass(); /* NAT disabled for this protocol */

	__be16 remote_port = p.dport;
	if (p.l4proto == IPPROTO_ICMP) {
		if (p.icmp_type != (p.family == 4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST))
			return drop(STAT_DROP_UNTRANSLATABLE);
		remote_port = 0;
	}

	struct binding_key okey;
	binding_key_init(&okey, BINDING_ORIG, p.family, p.l4proto, &p.src, p.sport);
	struct binding_value bv;
	struct binding_value *b = bpf_map_lookup_elem(&map_binding, &okey);
	if (b) {
		bv = *b;
	} else {
		if (p.tcp_flags & TCP_FLAG_RST)
			return drop(STAT_DROP_UNTRANSLATABLE);
		r = einat_binding_create(&p, ext, &bv);
		if (r == STAT_DROP_NO_PORT) {
			stat_inc(r);
			return einat_send_prohibited(skb, &p);
		}
		if (r)
			return drop(r);
	}

	struct ct_key ck;
	ct_key_init(&ck, p.family, p.l4proto, &bv.addr, bv.port, &p.dst, remote_port);
	struct binding_value intern = { .addr = p.src, .port = p.sport };
	r = einat_ct_touch(&ck, &intern, true, p.tcp_flags);
	if (r) {
		if (!b) /* release the binding nobody uses */
			binding_put_unused(p.family, p.l4proto, &bv.addr, bv.port);
		return drop(r);
	}

	if (rewrite(skb, &p, true, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (p.frag == FRAG_FIRST)
		frag_record(&p, true, &bv.addr);
	stat_inc(STAT_EGRESS_NAT);
	return TC_ACT_OK;
}

static __always_inline int ingress_family(struct __sk_buff *skb, const __u8 family)
{
	struct packet p;
	int r = parse_packet(skb, &p, family);
	if (r != PARSE_OK)
		return pass();
	if (p.icmp_err)
		return einat_ingress_icmp_error(skb, &p);

	if (p.frag == FRAG_LATER) {
		const union ip_addr *a = frag_lookup(&p, false);
		if (!a)
			return pass(); /* first fragment not seen (yet): cannot be mapped */
		union ip_addr to = *a;
		if (rewrite(skb, &p, false, &to, 0))
			return drop(STAT_DROP_UNTRANSLATABLE);
		stat_inc(STAT_FRAGMENT_NAT);
		return TC_ACT_OK;
	}

	__be16 remote_port = p.sport;
	if (p.l4proto == IPPROTO_ICMP) {
		if (p.icmp_type != (p.family == 4 ? ICMP_ECHOREPLY : ICMPV6_ECHO_REPLY))
			return pass();
		remote_port = 0;
	}

	struct binding_key rkey;
	binding_key_init(&rkey, 0, p.family, p.l4proto, &p.dst, p.dport);
	struct binding_value *b = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!b)
		return ingress_unmapped(&p);
	struct binding_value bv = *b;

	struct ct_key ck;
	ct_key_init(&ck, p.family, p.l4proto, &p.dst, p.dport, &p.src, remote_port);
	r = einat_ct_touch(&ck, &bv, false, p.tcp_flags);
	if (r)
		return drop(r);

	if (rewrite(skb, &p, false, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (p.frag == FRAG_FIRST)
		frag_record(&p, false, &bv.addr);
	stat_inc(STAT_INGRESS_NAT);
	return TC_ACT_OK;
}

/*
 * One specialisation per family: the disabled family's code is dead under
 * the read-only config, so the verifier never walks it (NAT66 costs nothing
 * at load time when off).
 */
SEC("tc")
int egress_snat(struct __sk_buff *skb)
{
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
