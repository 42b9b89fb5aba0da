// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * einat: endpoint-independent NAPT on TC egress (SNAT) and ingress (DNAT) of
 * the external interface.
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

char LICENSE[] SEC("license") = "GPL";

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

static __always_inline int drop(__u32 reason)
{
	stat_inc(reason);
	return TC_ACT_SHOT;
}

static __always_inline int pass(void)
{
	stat_inc(STAT_PASS);
	return TC_ACT_OK;
}

SEC("tc")
int egress_snat(struct __sk_buff *skb)
{
	struct packet p;
	int r = parse_packet(skb, &p);
	if (r == PARSE_PASS)
		return pass();

	/* Traffic of the router itself, and sources configured as no-SNAT. */
	struct lpm_key lk = { .prefixlen = 8 + 32, .family = 4 };
	lk.addr = p.src;
	struct external_config *src_cfg = bpf_map_lookup_elem(&map_externals, &lk);
	if (src_cfg && (src_cfg->flags & (EXT_EXTERNAL | EXT_NO_SNAT)))
		return pass();
	if (r == PARSE_BAD)
		return drop(STAT_DROP_UNTRANSLATABLE);
	if (r == PARSE_FRAG)
		return drop(STAT_DROP_FRAGMENT);

	lk.addr = p.dst;
	__u32 *dflags = bpf_map_lookup_elem(&map_dest_config, &lk);
	if (dflags && (*dflags & EXT_NO_SNAT))
		return pass();

	__u32 idx = 0;
	struct default_ext *ext = bpf_map_lookup_elem(&map_default_ext, &idx);
	if (!ext || !ext->valid)
		return drop(STAT_DROP_UNTRANSLATABLE);
	int pidx = proto_idx(p.l4proto);
	if (ext->cfg.range_len[pidx & 3] == 0)
		return pass(); /* NAT disabled for this protocol */

	__be16 remote_port = p.dport;
	if (p.l4proto == IPPROTO_ICMP) {
		if (p.icmp_type != ICMP_ECHO)
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
		r = binding_create(&p, ext, &bv);
		if (r)
			return drop(r);
	}

	struct ct_key ck;
	ct_key_init(&ck, p.family, p.l4proto, &bv.addr, bv.port, &p.dst, remote_port);
	struct binding_value intern = { .addr = p.src, .port = p.sport };
	r = ct_touch(&ck, &intern, true, p.tcp_flags);
	if (r) {
		if (!b) /* release the binding nobody uses */
			binding_put_unused(p.family, p.l4proto, &bv.addr, bv.port);
		return drop(r);
	}

	if (rewrite(skb, &p, true, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_EGRESS_NAT);
	return TC_ACT_OK;
}

SEC("tc")
int ingress_dnat(struct __sk_buff *skb)
{
	struct packet p;
	int r = parse_packet(skb, &p);
	if (r != PARSE_OK)
		return pass();

	__be16 remote_port = p.sport;
	if (p.l4proto == IPPROTO_ICMP) {
		if (p.icmp_type != ICMP_ECHOREPLY)
			return pass();
		remote_port = 0;
	}

	struct binding_key rkey;
	binding_key_init(&rkey, 0, p.family, p.l4proto, &p.dst, p.dport);
	struct binding_value *b = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!b)
		return pass(); /* no mapping: not ours (router's own services) */
	struct binding_value bv = *b;

	struct ct_key ck;
	ct_key_init(&ck, p.family, p.l4proto, &p.dst, p.dport, &p.src, remote_port);
	r = ct_touch(&ck, &bv, false, p.tcp_flags);
	if (r)
		return drop(r);

	if (rewrite(skb, &p, false, &bv.addr, bv.port))
		return drop(STAT_DROP_UNTRANSLATABLE);
	stat_inc(STAT_INGRESS_NAT);
	return TC_ACT_OK;
}
