/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * RFC 5508 REQ-3: an ICMP error is translated only when its ICMP checksum
 * (with the pseudo-header for ICMPv6) and, for an embedded IPv4 packet without
 * options, the embedded header checksum are valid; otherwise it is dropped
 * silently.
 * Incremental translation would carry a bad sum over and make it look like
 * the NAT's fault. Errors are at most 576 (IPv4) or 1280 (IPv6) bytes: the
 * message is copied into per-CPU scratch and summed 512 bytes at a time
 * (bpf_csum_diff's limit).
 */
#ifndef EINAT_ICMP_CHECK_H
#define EINAT_ICMP_CHECK_H

#include "csum.h"
#include "parse.h"

#define ICMP_CHECK_MAX 1536 /* longer errors are not validated */

struct icmp_copy {
	__u8 b[ICMP_CHECK_MAX + 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_copy);
	__uint(max_entries, 1);
} map_icmp_copy SEC(".maps");

/* Returns 1 when the ICMP error p is intact (or too long to check), 0 when it must be dropped. */
__noinline int einat_icmp_error_valid(struct __sk_buff *skb, const struct packet *p)
{
	__u32 zero = 0;
	struct icmp_copy *c = bpf_map_lookup_elem(&map_icmp_copy, &zero);
	if (!p || !c)
		return 0;
	__u32 l3 = p->l3_off, l4 = p->l4_off;
	__be16 field;
	if (l3 > 64 || l4 > L4_OFF_MAX ||
	    bpf_skb_load_bytes(skb, l3 + (p->family == 4 ? 2 : 4), &field, 2))
		return 0;
	__u32 end = l3 + bpf_ntohs(field) + (p->family == 4 ? 0 : 40);
	if (end < l4 + 8 || end > skb->len)
		return 0; /* the IP length lies */
	__u32 len = end - l4;
	if (len < 8)
		return 0;
	if (len > ICMP_CHECK_MAX)
		return 1;
	if (bpf_skb_load_bytes(skb, l4, c->b, len))
		return 0;
	/* zero padding up to a multiple of 4 (bpf_csum_diff works on words) */
	for (__u32 i = 0; i < 4; i++) {
		__u32 at = len + i;
		if (at < sizeof(c->b))
			c->b[at] = 0;
	}
	__u64 sum = 0;
	for (__u32 off = 0; off < ICMP_CHECK_MAX; off += 512) {
		if (off >= len)
			break;
		__u32 n = (len - off + 3) & ~3U;
		if (n > 512)
			n = 512;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)(c->b + off), n, (__wsum)fold32(sum));
	}
	if (p->family == 6) {
		__be32 ph[2] = {bpf_htonl(len), bpf_htonl(IPPROTO_ICMPV6)};
		sum += bpf_csum_diff(NULL, 0, (__be32 *)&p->src, 32, 0);
		sum += bpf_csum_diff(NULL, 0, ph, sizeof(ph), 0);
	}
	if (csum_fold(sum) != 0xffff)
		return 0;
	if (p->family == 4) { /* REQ-3a: the embedded IPv4 header */
		__u32 ihl = (c->b[8] & 0xf) * 4;
		if (ihl < 20 || ihl > 60 || 8 + ihl > len)
			return 0;
		/* Only without options: a router that wrote into one (Record Route, Timestamp)
		 * quotes the header before fixing its checksum (Linux does), and masquerade
		 * translates those errors (traceroute with options); the ICMP checksum holds. */
		if (ihl == 20 &&
		    csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)(c->b + 8), 20, 0)) != 0xffff)
			return 0;
	}
	return 1;
}

#endif
