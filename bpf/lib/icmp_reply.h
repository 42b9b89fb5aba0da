/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * RFC 5508 REQ-8: when no external port is free, the new flow's packet is
 * turned into an ICMP "communication administratively prohibited" (3/13, or
 * ICMPv6 1/1) to the internal sender and sent out of the interface the
 * routing table names for it, with the router's address there as source.
 * Rate-limited per CPU to one per RL_GAP_NS, after a burst of RL_BURST (a
 * range runs out under a burst of new flows: each of its senders is told).
 */
#ifndef EINAT_ICMP_REPLY_H
#define EINAT_ICMP_REPLY_H

#include <linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"
#include "csum.h"

#define RL_GAP_NS (10ULL * 1000 * 1000) /* at most 100 per second per CPU */
#define RL_BURST 50 /* as Linux's icmp_msgs_burst */
#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} map_icmp_rl SEC(".maps");

/* Per-CPU scratch space: the stack is too small for all of this. */
struct icmp_scratch {
	struct bpf_fib_lookup fib;
	__u8 quote[48];
	struct ipv6hdr ip6;
	struct iphdr ip;
	__be32 pseudo[2];
	struct default_ext ext; /* the external chosen by the FIB (fib_external) */
	struct inner in; /* the packet inside an ICMP error leaving */
	struct endpoint bv, peer; /* its mappings (einat_egress_icmp_error) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
	__uint(max_entries, 1);
} map_icmp_scratch SEC(".maps");

/*
 * A token bucket held in one time (the generic cell rate algorithm): the
 * moment the next error would be on time at the steady rate. One may go while
 * that moment is less than a burst ahead of now.
 */
static __always_inline bool icmp_rate_ok(void)
{
	__u32 k = 0;
	__u64 *due = bpf_map_lookup_elem(&map_icmp_rl, &k);
	__u64 now = bpf_ktime_get_ns();
	if (!due)
		return false;
	__u64 t = *due > now ? *due : now;
	if (t - now > (RL_BURST - 1) * RL_GAP_NS)
		return false;
	*due = t + RL_GAP_NS;
	return true;
}

/* Returns the TC verdict: a redirect when the error was built and routed. */
__noinline int einat_send_prohibited(struct __sk_buff *skb, struct packet *p)
{
	if (!p)
		return TC_ACT_SHOT;
	__u32 zero = 0;
	struct icmp_scratch *s = bpf_map_lookup_elem(&map_icmp_scratch, &zero);
	__u32 qlen = p->family == 4 ? 28 : 48;
	__u32 l3 = p->l3_off;

	if (!s || !icmp_rate_ok())
		return TC_ACT_SHOT;
	__builtin_memset(s, 0, sizeof(*s));
	if (bpf_skb_load_bytes(skb, l3, s->quote, qlen))
		return TC_ACT_SHOT;

	s->fib.ifindex = skb->ifindex;
	if (p->family == 4) {
		s->fib.family = AF_INET;
		s->fib.ipv4_dst = p->src.v4;
	} else {
		s->fib.family = AF_INET6;
		__builtin_memcpy(s->fib.ipv6_dst, &p->src, 16);
	}
	int rc = bpf_fib_lookup(skb, &s->fib, sizeof(s->fib),
				BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC);

	__u32 hdr = p->family == 4 ? 20 : 40;
	if (bpf_skb_change_tail(skb, l3 + hdr + 8 + qlen, 0))
		return TC_ACT_SHOT;

	struct icmphdr ic = {};
	__u64 sum;
	if (p->family == 4) {
		s->ip.version = 4;
		s->ip.ihl = 5;
		s->ip.tos = 0xc0;
		s->ip.tot_len = bpf_htons(20 + 8 + 28);
		s->ip.ttl = 64;
		s->ip.protocol = IPPROTO_ICMP;
		s->ip.saddr = rc == BPF_FIB_LKUP_RET_SUCCESS ? s->fib.ipv4_src : p->dst.v4;
		s->ip.daddr = p->src.v4;
		s->ip.check = ~csum_fold(bpf_csum_diff(0, 0, (__be32 *)&s->ip, sizeof(s->ip), 0));
		if (bpf_skb_store_bytes(skb, l3, &s->ip, sizeof(s->ip), BPF_F_RECOMPUTE_CSUM))
			return TC_ACT_SHOT;
		ic.type = ICMP_DEST_UNREACH;
		ic.code = 13;
		sum = bpf_csum_diff(0, 0, (__be32 *)&ic, sizeof(ic), 0);
		sum += bpf_csum_diff(0, 0, (__be32 *)s->quote, 28, 0);
	} else {
		s->ip6.version = 6;
		s->ip6.payload_len = bpf_htons(8 + 48);
		s->ip6.nexthdr = IPPROTO_ICMPV6;
		s->ip6.hop_limit = 64;
		if (rc == BPF_FIB_LKUP_RET_SUCCESS)
			__builtin_memcpy(&s->ip6.saddr, s->fib.ipv6_src, 16);
		else
			__builtin_memcpy(&s->ip6.saddr, &p->dst, 16);
		__builtin_memcpy(&s->ip6.daddr, &p->src, 16);
		if (bpf_skb_store_bytes(skb, l3, &s->ip6, sizeof(s->ip6), BPF_F_RECOMPUTE_CSUM))
			return TC_ACT_SHOT;
		ic.type = ICMPV6_DEST_UNREACH;
		ic.code = 1;
		s->pseudo[0] = bpf_htonl(8 + 48);
		s->pseudo[1] = bpf_htonl(IPPROTO_ICMPV6);
		sum = bpf_csum_diff(0, 0, (__be32 *)&s->ip6.saddr, 32, 0);
		sum += bpf_csum_diff(0, 0, s->pseudo, sizeof(s->pseudo), 0);
		sum += bpf_csum_diff(0, 0, (__be32 *)&ic, sizeof(ic), 0);
		sum += bpf_csum_diff(0, 0, (__be32 *)s->quote, 48, 0);
	}
	ic.checksum = ~csum_fold(sum);
	if (bpf_skb_store_bytes(skb, l3 + hdr, &ic, sizeof(ic), BPF_F_RECOMPUTE_CSUM))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, l3 + hdr + 8, s->quote, qlen, BPF_F_RECOMPUTE_CSUM))
		return TC_ACT_SHOT;
	stat_inc(STAT_ICMP_PROHIBITED_SENT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_SHOT;
	return redirect_neigh_inward(skb, s->fib.ifindex);
}

#endif
