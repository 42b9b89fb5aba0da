/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Rewriting addresses and ports with checksum updates. The kernel helpers are
 * used because they handle CHECKSUM_PARTIAL skbs (offloaded checksums on veth
 * and real NICs), which a hand-rolled incremental update would corrupt.
 */
#ifndef EINAT_CSUM_H
#define EINAT_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

/* Replaces the source (is_src) or destination address and the port/ID. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct packet *p, bool is_src,
				   const union ip_addr *to_addr, __be16 to_port)
{
	__u32 addr_off = p->l3_off + (is_src ? offsetof(struct iphdr, saddr)
					     : offsetof(struct iphdr, daddr));
	__be32 old_addr = is_src ? p->src.v4 : p->dst.v4;
	__be16 old_port = is_src ? p->sport : p->dport;
	__u32 port_off = is_src ? p->sport_off : p->dport_off;
	__u64 l4flags = 0;

	if (p->l4proto == IPPROTO_UDP)
		l4flags = BPF_F_MARK_MANGLED_0;

	if (old_addr != to_addr->v4) {
		if (p->l4proto != IPPROTO_ICMP &&
		    bpf_l4_csum_replace(skb, p->csum_off, old_addr, to_addr->v4,
					l4flags | BPF_F_PSEUDO_HDR | sizeof(__be32)))
			return -1;
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), old_addr,
					to_addr->v4, sizeof(__be32)))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &to_addr->v4, sizeof(__be32), 0))
			return -1;
	}
	if (old_port != to_port) {
		if (bpf_l4_csum_replace(skb, p->csum_off, old_port, to_port,
					l4flags | sizeof(__be16)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &to_port, sizeof(__be16), 0))
			return -1;
	}
	return 0;
}

#endif
