/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Packet parsing: optional L2, IPv4 or IPv6 (extension headers walked in a
 * bounded loop), the L4 fields NAT rewrites, and for ICMP errors the
 * embedded packet.
 */
#ifndef EINAT_PARSE_H
#define EINAT_PARSE_H

#include "compiler.h"

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "skb.h"

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

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_TIMESTAMP 13
#define ICMP_TIMESTAMPREPLY 14
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define IPV6_EXT_MAX 6 /* extension headers walked at most */
#define L4_OFF_MAX 512

enum parse_result {
	PARSE_OK = 0,
	PARSE_PASS, /* not NAT's business: leave untouched */
	PARSE_BAD, /* malformed */
	PARSE_LATER, /* parse_inner: a quoted IPv6 later fragment (no L4 header) */
};

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST, /* offset 0, more fragments follow: has the L4 header */
	FRAG_LATER, /* offset > 0: no L4 header */
};

/* The packet inside an ICMP error. */
struct inner {
	__u16 l3_off;
	__u16 l4_off;
	__u8 l3_len; /* bytes of IP header copied for rewriting: 20 or 40 */
	__u8 l4proto;
	__u8 icmp_type;
	__u8 frag_proto; /* PARSE_LATER: the quoted Fragment header's next header */
	__be16 sport; /* or echo identifier */
	__be16 dport;
	__be32 frag_id; /* PARSE_LATER: its identification */
	union ip_addr src;
	union ip_addr dst;
};

/* What the NAT needs from one packet; offsets from skb->data. */
struct packet {
	__u8 family;
	__u8 l4proto; /* IPPROTO_ICMP also for ICMPv6 */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 frag; /* enum frag_kind */
	__u8 icmp_err; /* an ICMP error whose embedded packet was parsed */
	__u16 l3_off;
	__u16 l4_off;
	__u16 csum_off; /* L4 checksum field */
	__u16 sport_off; /* source port, or ICMP identifier */
	__u16 dport_off;
	__be16 sport;
	__be16 dport;
	__be32 frag_id;
	__u8 real_proto; /* IPPROTO_ICMPV6 for ICMPv6 */
	__u8 no_binding; /* egress: the fast path found no binding for the source */
	__u8 summed; /* the skb's ip_summed (skb.h) when parsed */
	__u8 frag_proto; /* IPv6 fragment: its Fragment header's next header (frag.h) */
	__u8 nonatomic; /* IPv4 without DF, or a fragment: its ID must stay unique (ipid.h) */
	__u8 own; /* egress: the router's own, from its external address and a port of the
		   * NAT's ranges, mapped as an internal host's (einat_egress_own) */
	__u8 pass_cache; /* egress: passed for what the configuration says of its flow alone
			  * (flowcache.h, flow_fill_pass) */
	__u64 now; /* packet_now(): the clock read once per packet, 0 until then */
	union ip_addr src;
	union ip_addr dst;
};

/* The same address (all four words: an IPv4 one has the other three zero). */
static __always_inline bool addr_eq(const union ip_addr *a, const union ip_addr *b)
{
	return ((a->all[0] ^ b->all[0]) | (a->all[1] ^ b->all[1]) | (a->all[2] ^ b->all[2]) |
		(a->all[3] ^ b->all[3])) == 0;
}

static __always_inline bool is_icmp_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB || type == ICMP_SOURCE_QUENCH;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/*
 * ICMP queries (RFC 5508 REQ-1): echo, and IPv4's timestamp (clockdiff uses
 * it; conntrack translates it too). Their identifier lies where echo's does;
 * the two share the identifier space and sessions. Information and address
 * mask requests are obsolete (RFC 6918), and Linux answers neither.
 */
static __always_inline bool icmp_is_request(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_ECHO || type == ICMP_TIMESTAMP;
	return type == ICMPV6_ECHO_REQUEST;
}

static __always_inline bool icmp_is_reply(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_ECHOREPLY || type == ICMP_TIMESTAMPREPLY;
	return type == ICMPV6_ECHO_REPLY;
}

static __always_inline bool icmp_is_query(__u8 family, __u8 type)
{
	return icmp_is_request(family, type) || icmp_is_reply(family, type);
}

struct v6_walk {
	__u8 proto; /* in: next header after the fixed header; out: L4 protocol */
	__u8 frag;
	__u8 frag_proto; /* the Fragment header's next header */
	__u8 _pad;
	__be32 frag_id;
};

/* The extension headers the walk steps over (a later fragment cannot). */
static __always_inline bool ipv6_ext_walked(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS;
}

/*
 * Walks IPv6 extension headers from `off` (just after the fixed header).
 * Returns the L4 offset, or a negative value; sets proto and fragment info.
 * A Fragment header with a non-zero offset ends the walk: what follows it is
 * payload, not headers, and the protocol is the one it names (an extension
 * header when the fragmentable part starts with one; parse_packet).
 * A global function: verified once, and its result is one unknown offset
 * for the caller instead of one verifier path per header combination.
 */
__noinline int einat_ipv6_walk(struct __sk_buff *skb, __u32 off, struct v6_walk *w)
{
	if (!w)
		return -1;
	__u8 nh = w->proto;
	__u8 *proto = &w->proto;
	__u8 *frag = &w->frag;
	__be32 *frag_id = &w->frag_id;
#pragma unroll
	for (int i = 0; i <= IPV6_EXT_MAX; i++) { /* IPV6_EXT_MAX headers, then L4 */
		switch (nh) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			__u8 h[2];
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			nh = h[0];
			off += ((__u32)h[1] + 1) * 8;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct frag_hdr {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 identification;
			} fh;
			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				return -1;
			nh = fh.nexthdr;
			off += sizeof(fh);
			__u16 fo = bpf_ntohs(fh.frag_off);
			*frag_id = fh.identification;
			w->frag_proto = nh;
			if (fo & 0xfff8) {
				*frag = FRAG_LATER;
				*proto = nh;
				return off > L4_OFF_MAX ? -1 : (int)off;
			}
			if (fo & 1)
				*frag = FRAG_FIRST;
			break;
		}
		default:
			*proto = nh;
			return off > L4_OFF_MAX ? -1 : (int)off;
		}
		if (off > L4_OFF_MAX)
			return -1;
	}
	return -1; /* chain too long */
}

/* Parses the IP packet embedded in an ICMP error at `off`. */
static __always_inline int parse_inner(struct __sk_buff *skb, __u8 family, __u32 off,
				       struct inner *in)
{
	in->l3_off = off;
	if (family == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return PARSE_BAD;
		if (ip.version != 4 || ip.ihl < 5)
			return PARSE_BAD;
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return PARSE_PASS; /* embedded non-first fragment: nothing to map */
		in->l4proto = ip.protocol;
		in->l3_len = sizeof(ip);
		in->l4_off = off + ip.ihl * 4;
		in->src.v4 = ip.saddr;
		in->dst.v4 = ip.daddr;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return PARSE_BAD;
		if (ip6.version != 6)
			return PARSE_BAD;
		in->l4proto = ip6.nexthdr;
		in->l3_len = sizeof(ip6);
		in->l4_off = off + sizeof(ip6);
		__builtin_memcpy(&in->src, &ip6.saddr, 16);
		__builtin_memcpy(&in->dst, &ip6.daddr, 16);
		/* A quoted first fragment or one with options: its L4 header after them (a
		 * router reports those too: hop limit, packet too big). A later fragment
		 * quotes no L4 header: its datagram's record maps it (frag.h, the way back). */
		if (in->l4proto != IPPROTO_TCP && in->l4proto != IPPROTO_UDP &&
		    in->l4proto != IPPROTO_ICMPV6) {
			struct v6_walk w = {};
			w.proto = ip6.nexthdr;
			int l4 = einat_ipv6_walk(skb, off + sizeof(ip6), &w);
			if (l4 < 0)
				return PARSE_BAD;
			if (w.frag == FRAG_LATER) {
				in->frag_proto = w.frag_proto;
				in->frag_id = w.frag_id;
				return PARSE_LATER;
			}
			in->l4proto = w.proto;
			in->l4_off = l4;
		}
	}
	__u8 l4[8];
	if (bpf_skb_load_bytes(skb, in->l4_off, l4, sizeof(l4)))
		return PARSE_BAD;
	switch (in->l4proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		__builtin_memcpy(&in->sport, &l4[0], 2);
		__builtin_memcpy(&in->dport, &l4[2], 2);
		return PARSE_OK;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if ((in->l4proto == IPPROTO_ICMP) != (family == 4))
			return PARSE_PASS;
		if (!icmp_is_query(family, l4[0]))
			return PARSE_PASS; /* an error about an error: not translated */
		in->icmp_type = l4[0];
		in->l4proto = IPPROTO_ICMP;
		__builtin_memcpy(&in->sport, &l4[4], 2);
		in->dport = in->sport;
		return PARSE_OK;
	default:
		return PARSE_PASS;
	}
}

/*
 * How much to pull in when the headers are not in the skb's linear area, where
 * direct packet access reaches: Ethernet, IP with options or the common
 * extension headers, the L4 header (an ICMP error's quoted headers too).
 */
#define PULL_LEN 128

/*
 * Pulls the headers into the linear area when a driver left them in page
 * fragments (skbs built from fragments: napi_gro_frags with GRO off, or for
 * what GRO does not parse), which is when not even the fixed IP header and the
 * smallest L4 header are there. Packets whose payload alone sits in fragments
 * (TCP segments and GSO packets from the stack) have their headers in the
 * linear area and are left alone: pulling their payload in would copy, and
 * often reallocate, for nothing. The common case costs a compare.
 * Call before parse_packet: the pull invalidates packet pointers.
 */
static __always_inline void pull_headers(struct __sk_buff *skb, const __u8 family)
{
	__u32 need = (HAS_ETH ? sizeof(struct ethhdr) : 0) +
		     (family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)) + 8;
	__u32 linear = skb->data_end - skb->data;
	__u32 len = skb->len;
	if (unlikely(linear < need && linear < len))
		bpf_skb_pull_data(skb, len < PULL_LEN ? len : PULL_LEN);
}

static __always_inline int parse_l4(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l4 = p->l4_off;
	if (l4 > L4_OFF_MAX)
		return PARSE_BAD;

	switch (p->l4proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = data + l4;
		if ((void *)(th + 1) > data_end)
			return PARSE_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->sport_off = l4 + offsetof(struct tcphdr, source);
		p->dport_off = l4 + offsetof(struct tcphdr, dest);
		p->csum_off = l4 + offsetof(struct tcphdr, check);
		p->tcp_flags = ((__u8 *)th)[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = data + l4;
		if ((void *)(uh + 1) > data_end)
			return PARSE_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->sport_off = l4 + offsetof(struct udphdr, source);
		p->dport_off = l4 + offsetof(struct udphdr, dest);
		p->csum_off = l4 + offsetof(struct udphdr, check);
		return PARSE_OK;
	}
	default: { /* ICMP / ICMPv6 */
		struct icmphdr *ih = data + l4;
		if ((void *)(ih + 1) > data_end)
			return PARSE_BAD;
		p->icmp_type = ih->type;
		p->csum_off = l4 + offsetof(struct icmphdr, checksum);
		if (icmp_is_query(p->family, ih->type)) {
			p->sport_off = p->dport_off = l4 + offsetof(struct icmphdr, un.echo.id);
			p->sport = p->dport = ih->un.echo.id;
			return PARSE_OK;
		}
		if (is_icmp_error(p->family, ih->type)) {
			if (p->frag != FRAG_NONE)
				return PARSE_BAD; /* a fragmented error cannot be mapped */
			/* the embedded packet is parsed by the error handlers */
			p->icmp_err = 1;
			return PARSE_OK;
		}
		/* Other ICMP (router/neighbour discovery, ...): the
		 * router's own passes, nothing from inside can be mapped. */
		return PARSE_BAD;
	}
	}
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p, const __u8 family)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = HAS_ETH ? sizeof(struct ethhdr) : 0;

	__builtin_memset(p, 0, sizeof(*p));
	p->l3_off = l3;
	p->summed = skb_ip_summed(skb);

	if (family == 4) {
		struct iphdr *ip = data + l3;
		if (unlikely((void *)(ip + 1) > data_end))
			return PARSE_BAD;
		if (unlikely(ip->version != 4 || ip->ihl < 5))
			return PARSE_BAD;
		p->family = 4;
		p->l4proto = p->real_proto = ip->protocol;
		p->l4_off = l3 + (ip->ihl & 0xf) * 4;
		p->src.v4 = ip->saddr;
		p->dst.v4 = ip->daddr;
		p->frag_id = ip->id;
		__u16 fo = bpf_ntohs(ip->frag_off);
		if (unlikely(fo & 0x3fff))
			p->frag = fo & 0x1fff ? FRAG_LATER : FRAG_FIRST;
		p->nonatomic = (fo & 0x7fff) != 0x4000; /* not DF alone (RFC 6864 4.1) */
		if (unlikely(ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
			     ip->protocol != IPPROTO_ICMP))
			return PARSE_PASS;
	} else {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) > data_end)
			return PARSE_BAD;
		if (ip6->version != 6)
			return PARSE_BAD;
		p->family = 6;
		__builtin_memcpy(&p->src, &ip6->saddr, 16);
		__builtin_memcpy(&p->dst, &ip6->daddr, 16);
		/* One 8-byte store: a designated initialiser is zeroed field by field. */
		struct v6_walk w = {};
		w.proto = ip6->nexthdr;
		int off = l3 + sizeof(*ip6);
		/* No extension headers (the common case): no call to the walk. */
		if (w.proto != IPPROTO_TCP && w.proto != IPPROTO_UDP && w.proto != IPPROTO_ICMPV6) {
			off = einat_ipv6_walk(skb, off, &w);
			p->frag_proto = w.frag_proto;
		}
		if (off < 0 || off > L4_OFF_MAX)
			return PARSE_BAD;
		__u8 proto = w.proto;
		p->frag = w.frag;
		p->frag_id = w.frag_id;
		p->l4_off = off;
		p->real_proto = proto;
		if (proto == IPPROTO_ICMPV6) {
			proto = IPPROTO_ICMP; /* one key space for both ICMP flavours */
		} else if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
			if (w.frag != FRAG_LATER || !ipv6_ext_walked(proto))
				return PARSE_PASS;
			proto = 0; /* its headers go on in the first fragment: the record tells */
		}
		p->l4proto = proto;
	}

	if (unlikely(p->frag == FRAG_LATER))
		return PARSE_OK; /* no L4 header: handled through fragment tracking */
	return parse_l4(skb, p);
}

#endif
