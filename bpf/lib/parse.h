/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Packet parsing: L2 (optional), IPv4, and the L4 fields NAT rewrites. */
#ifndef EINAT_PARSE_H
#define EINAT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../einat.h"
#include "config.h"

/* linux/icmp.h drags in libc headers; this is all NAT needs of it. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
	} un;
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

enum parse_result {
	PARSE_OK = 0,
	PARSE_PASS, /* not NAT's business: leave untouched */
	PARSE_BAD, /* malformed */
	PARSE_FRAG, /* a fragment we cannot translate (yet) */
};

/* What the NAT needs from one packet; offsets from skb->data. */
struct packet {
	__u8 family;
	__u8 l4proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u16 l3_off;
	__u16 l4_off;
	__u16 csum_off; /* L4 checksum field */
	__u16 sport_off; /* source port, or ICMP identifier */
	__u16 dport_off; /* destination port, or ICMP identifier */
	__be16 sport;
	__be16 dport;
	__u8 first_frag;
	union ip_addr src;
	union ip_addr dst;
};

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = HAS_ETH ? sizeof(struct ethhdr) : 0;

	__builtin_memset(p, 0, sizeof(*p));

	if (skb->protocol != bpf_htons(ETH_P_IP) || !ENABLE_NAT44)
		return PARSE_PASS;

	struct iphdr *ip = data + l3;
	if ((void *)(ip + 1) > data_end)
		return PARSE_BAD;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_BAD;

	__u32 l4 = l3 + (ip->ihl & 0xf) * 4;
	p->family = 4;
	p->l4proto = ip->protocol;
	p->l3_off = l3;
	p->l4_off = l4;
	p->src.all[0] = ip->saddr;
	p->dst.all[0] = ip->daddr;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
	    ip->protocol != IPPROTO_ICMP)
		return PARSE_PASS;

	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff)
		return PARSE_FRAG; /* not the first fragment: no L4 header */
	if (frag & 0x2000)
		p->first_frag = 1;

	void *l4h = data + l4;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4h;
		if ((void *)(th + 1) > data_end)
			return PARSE_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->sport_off = l4 + offsetof(struct tcphdr, source);
		p->dport_off = l4 + offsetof(struct tcphdr, dest);
		p->csum_off = l4 + offsetof(struct tcphdr, check);
		p->tcp_flags = ((__u8 *)th)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4h;
		if ((void *)(uh + 1) > data_end)
			return PARSE_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->sport_off = l4 + offsetof(struct udphdr, source);
		p->dport_off = l4 + offsetof(struct udphdr, dest);
		p->csum_off = l4 + offsetof(struct udphdr, check);
		break;
	}
	default: { /* ICMP */
		struct icmphdr *ih = l4h;
		if ((void *)(ih + 1) > data_end)
			return PARSE_BAD;
		p->icmp_type = ih->type;
		p->csum_off = l4 + offsetof(struct icmphdr, checksum);
		p->sport_off = p->dport_off = l4 + offsetof(struct icmphdr, un.echo.id);
		p->sport = p->dport = ih->un.echo.id;
		break;
	}
	}
	return PARSE_OK;
}

#endif
