/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Rewriting addresses and ports with checksum updates. Fields of the packet
 * itself are written directly; their L4 checksum is updated inline by what
 * the skb's ip_summed says it holds (a full checksum, or the CHECKSUM_PARTIAL
 * seed of offloaded checksums on veth and real NICs), or, in the
 * compatibility object (EINAT_CSUM_HELPERS), through the kernel helper that
 * knows. The packet embedded in an ICMP error is rewritten with helpers.
 */
#ifndef EINAT_CSUM_H
#define EINAT_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"
#include "skb.h"
#include "ipid.h"

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Applies a bpf_csum_diff() result to a stored (complemented) checksum. */
static __always_inline __u16 csum_apply(__u16 check, __u64 diff)
{
	return ~csum_fold((__u64)(__u16)~check + diff);
}

/* Folds a sum of several bpf_csum_diff() results into 32 bits. */
static __always_inline __u32 fold32(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

/*
 * Checksum differences computed inline: one's complement sums of ~old and new
 * words, the same value bpf_csum_diff() returns modulo 0xffff, without a
 * helper call (each call and return is costly on CPUs with return-thunk
 * mitigations).
 */
static __always_inline __u32 csum_diff32(__be32 from, __be32 to)
{
	return fold32((__u64)(__u32)~from + (__u32)to);
}

static __always_inline __u32 addr_diff(__u8 family, const union ip_addr *from,
				       const union ip_addr *to)
{
	if (family == 4)
		return csum_diff32(from->v4, to->v4);
	__u64 s = 0;
	for (int i = 0; i < 4; i++)
		s += (__u64)(__u32)~from->all[i] + (__u32)to->all[i];
	return fold32(s);
}

#ifdef EINAT_CSUM_HELPERS
/* BPF_F_IPV6 (Linux 6.16, and stable backports): with it a pseudo-header
 * update leaves a CHECKSUM_COMPLETE skb->csum alone, as it must for IPv6,
 * whose header has no checksum of its own to absorb the address change.
 * Older kernels refuse the flag with EINVAL; the caller then retries without
 * it (and keeps their skb->csum bug). Spelled out: older UAPI headers lack it. */
#define EINAT_F_IPV6 (1ULL << 7)

/*
 * What the checksum steps after the first helper call need, packed into one
 * register: helper calls leave only four callee-saved registers, and every
 * spill grows einat_rewrite's frame, which shares the 512-byte stack with
 * its callers (egress_snat -> einat_egress_icmp_error -> einat_rewrite).
 */
#define RW_BEFORE(st) ((__u16)(st))
#define RW_OLD_PORT(st) ((__be16)((st) >> 16))
#define RW_TO_PORT(st) ((__be16)((st) >> 32))
#define RW_UDP(st) (((st) >> 48) & 1)
#define RW_PORT_CHANGES(st) (((st) >> 49) & 1)

/*
 * The port's share of the L4 checksum, without a second helper call.
 * bpf_l4_csum_replace has just applied the address difference `diff` (not
 * zero modulo 0xffff) to the checksum that read `before`; what it wrote tells
 * which kind of skb this is: a full checksum becomes ~(~before + diff), a
 * CHECKSUM_PARTIAL seed (a non-complemented pseudo-header sum the device or
 * skb_checksum_help completes over the data, ports included) becomes
 * before + diff. The two differ unless diff is zero modulo 0xffff. A full
 * checksum then takes the port difference here; a seed needs none. Returns
 * false when the outcome is ambiguous: the caller uses the helper.
 */
static __always_inline bool port_csum_inline(struct __sk_buff *skb, __u32 csum_off, __u64 st,
					     __u32 diff)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u16 d = csum_fold(diff);
	__u16 before = RW_BEFORE(st);

	if (d == 0 || d == 0xffff || csum_off > L4_OFF_MAX + 32)
		return false;
	__u16 *cp = data + csum_off;
	if ((void *)(cp + 1) > data_end)
		return false;
	__u16 after = *cp;
	__u16 full = csum_apply(before, diff);
	__u16 seed = csum_fold((__u64)before + diff);
	if (after == seed && after != full)
		return true;
	if (after != full || (RW_UDP(st) && after == 0xffff))
		return false;
	__u16 c = csum_apply(after, csum_diff32(RW_OLD_PORT(st), RW_TO_PORT(st)));
	*cp = RW_UDP(st) && !c ? 0xffff : c;
	return true;
}

/*
 * The L4 checksum after the address and port were written, when ip_summed is
 * unknown: the address's share goes through bpf_l4_csum_replace, which knows
 * whether the skb carries a full checksum or a CHECKSUM_PARTIAL seed (then
 * only the pseudo-header part changes), and what it did tells
 * port_csum_inline how to add the port's.
 */
static __always_inline int rewrite_l4_csum(struct __sk_buff *skb, const struct packet *p,
					   __u32 diff, __u16 before, __be16 old_port,
					   __be16 to_port, bool udp, bool port_changes)
{
	__u64 st = before | (__u64)(__u16)old_port << 16 | (__u64)(__u16)to_port << 32 |
		   (__u64)udp << 48 | (__u64)port_changes << 49;
	/* ICMPv4 has no pseudo-header */
	if (diff && p->real_proto != IPPROTO_ICMP) {
		__u64 f = (RW_UDP(st) ? BPF_F_MARK_MANGLED_0 : 0) | BPF_F_PSEUDO_HDR;
		long r = bpf_l4_csum_replace(skb, p->csum_off, 0, diff,
					     f | (p->family == 6 ? EINAT_F_IPV6 : 0));
		if (r == -EINVAL && p->family == 6)
			r = bpf_l4_csum_replace(skb, p->csum_off, 0, diff, f);
		if (r)
			return -1;
		if (RW_PORT_CHANGES(st) && port_csum_inline(skb, p->csum_off, st, diff))
			return 0;
	}
	if (RW_PORT_CHANGES(st) &&
	    bpf_l4_csum_replace(skb, p->csum_off, RW_OLD_PORT(st), RW_TO_PORT(st),
				(RW_UDP(st) ? BPF_F_MARK_MANGLED_0 : 0) | sizeof(__be16)))
		return -1;
	return 0;
}

#define SUMMED_MAY_BE_COMPLETE(p) true

#else /* ip_summed known (skb.h) */

/*
 * The L4 checksum after the address and port were written, inline: a
 * CHECKSUM_PARTIAL seed (the non-complemented pseudo-header sum the device or
 * skb_checksum_help completes over the data, ports included) takes only the
 * address's share; a full checksum takes both. A CHECKSUM_COMPLETE skb->csum
 * covers the packet from the network header: the changes a checksum absorbs
 * cancel out in it, except IPv4's L4 checksum moving by -diff, whose
 * address change its header checksum absorbed (IPv6's address moves by +diff
 * itself). Same results as bpf_l4_csum_replace with BPF_F_PSEUDO_HDR and
 * BPF_F_IPV6 (bpf/lib/skb.h says why not the helper). cp points at the
 * checksum field.
 */
static __always_inline int rewrite_l4_csum_inline(struct __sk_buff *skb, const struct packet *p,
						  __u16 *cp, void *data_end, __u32 diff,
						  __u16 before, __u32 pdiff, bool udp)
{
	__u32 adiff = p->real_proto != IPPROTO_ICMP ? diff : 0; /* ICMPv4: no pseudo-header */
	__u16 c;

	if (p->summed == EINAT_CHECKSUM_PARTIAL) {
		if (!adiff)
			return 0;
		c = csum_fold((__u64)before + adiff);
	} else {
		if (!(adiff | pdiff))
			return 0;
		c = csum_apply(before, (__u64)adiff + pdiff);
	}
	if ((void *)(cp + 1) > data_end) /* checked before; the compiler may lose it */
		return -1;
	*cp = udp && !c ? 0xffff : c;
	if (p->family == 4 && adiff && p->summed == EINAT_CHECKSUM_COMPLETE)
		bpf_csum_update(skb, fold32((__u64)(__u32)~adiff));
	return 0;
}

#define SUMMED_MAY_BE_COMPLETE(p) ((p)->summed == EINAT_CHECKSUM_COMPLETE)

#endif

/*
 * Replaces the source (is_src) or destination address and the port/ID.
 * Header fields are written directly and the IPv4 header checksum (never
 * offloaded) updated by hand; then the L4 checksum (rewrite_l4_csum*).
 * Changes a checksum absorbs are neutral to a CHECKSUM_COMPLETE skb->csum;
 * the others (no L4 checksum to absorb them) are added to it.
 * Callers use einat_rewrite (a global function: one verified copy for every
 * caller, and a small stack), the flow cache's hit path this inline copy.
 */
static __always_inline int rewrite_impl(struct __sk_buff *skb, const struct packet *p, int is_src,
					const union ip_addr *to_addr, __u32 to_port32)
{
	if (!p || !to_addr)
		return -1;
	__be16 to_port = (__be16)to_port32;
	__be16 old_port = is_src ? p->sport : p->dport;
	__u32 port_off = is_src ? p->sport_off : p->dport_off;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = p->l3_off;
	__u32 csum_off = p->csum_off;
	__u32 diff = 0;
	__u16 before = 0;

	if (l3 > 64 || port_off > L4_OFF_MAX + 8 || csum_off > L4_OFF_MAX + 32)
		return -1;
	/* No L4 header to update: a later fragment, or a protocol whose checksum does not
	 * cover the addresses (lib/addrnat.h: csum_off 0). */
	bool has_l4 = p->frag != FRAG_LATER && csum_off;
	bool port_changes = has_l4 && old_port != to_port;
	/* The port first: fewer values live across the address (a small frame). */
	__u16 *cp = data + csum_off;
	if (has_l4) {
		if ((void *)(cp + 1) > data_end)
			return -1;
		before = *cp;
	}
	if (port_changes) {
		__be16 *pp = data + port_off;
		if ((void *)(pp + 1) > data_end)
			return -1;
		*pp = to_port;
	}
	__u32 pdiff = port_changes ? csum_diff32(old_port, to_port) : 0;
	const union ip_addr *old_addr = is_src ? &p->src : &p->dst;
	if (p->family == 4) {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) > data_end)
			return -1;
		if (old_addr->v4 != to_addr->v4) {
			diff = csum_diff32(old_addr->v4, to_addr->v4);
			__u64 hdiff = diff;
			if (is_src) {
				ip->saddr = to_addr->v4;
				if (p->nonatomic) { /* its ID, unique from the new source (ipid.h) */
					__be16 id = ipid_of(skb, p, to_addr->v4);
					hdiff += csum_diff32(ip->id, id);
					ip->id = id;
				}
			} else {
				ip->daddr = to_addr->v4;
			}
			ip->check = csum_apply(ip->check, hdiff);
		}
	} else {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		diff = addr_diff(6, old_addr, to_addr);
		if (is_src)
			__builtin_memcpy(&ip6->saddr, to_addr, 16);
		else
			__builtin_memcpy(&ip6->daddr, to_addr, 16);
	}
	bool udp = p->l4proto == IPPROTO_UDP;
	/* UDP-Lite (lib/addrnat.h) sends a computed zero as all ones too, as UDP does (RFC 3828
	 * 3.1), but its zero field is no "no checksum": it is updated like any other. */
	bool lite = p->real_proto == IPPROTO_UDPLITE;
	if (!has_l4 || (udp && !before)) {
		/* No L4 checksum absorbs the changes (a later fragment, UDP without
		 * checksum), so a CHECKSUM_COMPLETE skb->csum takes them; IPv4's
		 * address change was absorbed by its header checksum. Other skbs:
		 * bpf_csum_update does nothing. */
		__u64 d = (p->family == 6 ? (__u64)diff : 0) + pdiff;
		if (d && SUMMED_MAY_BE_COMPLETE(p))
			bpf_csum_update(skb, fold32(d));
		return 0;
	}
#ifdef EINAT_CSUM_HELPERS
	/* Packet pointers are invalid after the first helper call. */
	int r = rewrite_l4_csum(skb, p, diff, before, old_port, to_port, udp, port_changes);
	if (!r && unlikely(lite)) {
		/* zero to all ones: the same in one's complement, neutral to skb->csum ("before" is
		 * reused: the stack of the deepest call chain is at its limit) */
		if (bpf_skb_load_bytes(skb, p->csum_off, &before, 2))
			return -1;
		if (!before) {
			before = 0xffff;
			if (bpf_skb_store_bytes(skb, p->csum_off, &before, 2, 0))
				return -1;
		}
	}
	return r;
#else
	return rewrite_l4_csum_inline(skb, p, cp, data_end, diff, before, pdiff, udp || lite);
#endif
}

/* rewrite_impl as a global function. */
__noinline int einat_rewrite(struct __sk_buff *skb, const struct packet *p, int is_src,
			     const union ip_addr *to_addr, __u32 to_port32)
{
	return rewrite_impl(skb, p, is_src, to_addr, to_port32);
}

#define rewrite(skb, p, is_src, to_addr, to_port) einat_rewrite(skb, p, is_src, to_addr, to_port)

static __always_inline __u32 diff16(__be16 from, __be16 to)
{
	return csum_diff32(from, to);
}

/*
 * Rewrites the embedded packet of an ICMP error: its source (is_src) or
 * destination endpoint becomes to_addr:to_port, fixing the embedded IPv4
 * header checksum and the embedded UDP/ICMP checksum, and folding every
 * changed 16-bit word into the outer ICMP checksum. Only the changed fields
 * are loaded and stored, to keep the stack small.
 */
/*
 * Rewrites an address of a quoted IPv6 later fragment (no L4 header to
 * follow; IPv6 has no header checksum): the ICMPv6 checksum alone covers it.
 */
static __always_inline int rewrite_quote_addr6(struct __sk_buff *skb, const struct packet *p,
					       const struct inner *in, bool is_src,
					       const union ip_addr *to_addr)
{
	const union ip_addr *old_addr = is_src ? &in->src : &in->dst;
	__u32 da = addr_diff(6, old_addr, to_addr);
	__u32 addr_off = in->l3_off + (is_src ? offsetof(struct ipv6hdr, saddr)
					      : offsetof(struct ipv6hdr, daddr));
	if (bpf_skb_store_bytes(skb, addr_off, to_addr, 16, 0))
		return -1;
	return bpf_l4_csum_replace(skb, p->csum_off, 0, fold32(da), 0) ? -1 : 0;
}

static __always_inline int rewrite_inner(struct __sk_buff *skb, const struct packet *p,
					 const struct inner *in, bool is_src,
					 const union ip_addr *to_addr, __be16 to_port)
{
	const union ip_addr *old_addr = is_src ? &in->src : &in->dst;
	__be16 old_port = is_src ? in->sport : in->dport;
	__u32 da = addr_diff(p->family, old_addr, to_addr);
	__u32 dp = diff16(old_port, to_port);
	__u64 outer = (__u64)da + dp;
	__u32 addr_off, port_off, csum_off = 0;
	__u64 l4csum_delta = 0;

	if (p->family == 4) {
		addr_off = in->l3_off +
			   (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
		__u32 check_off = in->l3_off + offsetof(struct iphdr, check);
		__sum16 check;
		if (bpf_skb_load_bytes(skb, check_off, &check, 2))
			return -1;
		__sum16 ncheck = csum_apply(check, da);
		outer += diff16(check, ncheck);
		if (bpf_skb_store_bytes(skb, check_off, &ncheck, 2, 0))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &to_addr->v4, 4, 0))
			return -1;
	} else {
		addr_off = in->l3_off + (is_src ? offsetof(struct ipv6hdr, saddr)
						: offsetof(struct ipv6hdr, daddr));
		if (bpf_skb_store_bytes(skb, addr_off, to_addr, 16, 0))
			return -1;
	}

	switch (in->l4proto) {
	case IPPROTO_UDP:
		port_off = in->l4_off + (is_src ? 0 : 2);
		csum_off = in->l4_off + offsetof(struct udphdr, check);
		l4csum_delta = (__u64)da + dp;
		break;
	case IPPROTO_TCP:
		/* The TCP checksum lies beyond the 8 bytes an error must carry; when the
		 * error quotes it (Linux quotes up to 576 / 1280 bytes), it is translated
		 * like UDP's, as Linux's own NAT does. */
		port_off = in->l4_off + (is_src ? 0 : 2);
		if (skb->len >= in->l4_off + sizeof(struct tcphdr)) {
			csum_off = in->l4_off + offsetof(struct tcphdr, check);
			l4csum_delta = (__u64)da + dp;
		}
		break;
	default: /* ICMP query: identifier; ICMPv6 also covers the addresses */
		/* Another protocol, its addresses only (lib/addrnat.h): protocol 1 in IPv6
		 * among them, which parse_inner leaves unnamed as a query (icmp_type 0). */
		if (in->l4proto != IPPROTO_ICMP || !icmp_is_query(p->family, in->icmp_type)) {
			port_off = 0;
			break;
		}
		port_off = in->l4_off + offsetof(struct icmphdr, un.echo.id);
		csum_off = in->l4_off + offsetof(struct icmphdr, checksum);
		l4csum_delta = p->family == 6 ? (__u64)da + dp : dp;
		break;
	}
	if (port_off && bpf_skb_store_bytes(skb, port_off, &to_port, 2, 0))
		return -1;
	if (csum_off) {
		__sum16 c;
		if (bpf_skb_load_bytes(skb, csum_off, &c, 2))
			return -1;
		if (c || in->l4proto != IPPROTO_UDP) { /* UDP zero: no checksum */
			__sum16 nc = csum_apply(c, l4csum_delta);
			if (!nc && in->l4proto == IPPROTO_UDP)
				nc = 0xffff;
			outer += diff16(c, nc);
			if (bpf_skb_store_bytes(skb, csum_off, &nc, 2, 0))
				return -1;
		}
	}
	if (bpf_l4_csum_replace(skb, p->csum_off, 0, fold32(outer), 0))
		return -1;
	return 0;
}

#endif
