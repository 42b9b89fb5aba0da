/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Address-only NAT of the IP protocols without ports (GRE, ESP, AH, SCTP,
 * DCCP, UDP-Lite, ...), as Linux masquerade does for them: an internal host's
 * packet leaves with the external address as its source, and what comes back
 * from the same remote with the same protocol goes to that host. One internal
 * host per (protocol, external address, remote address): another host's
 * packets of that protocol to that remote are refused while the mapping lives
 * (timeout_other without traffic; then the next host takes it over). A plain
 * hash, not an LRU: a host sending to thousands of remotes cannot push others'
 * live mappings out (and take their remotes over); a full table refuses new
 * mappings (drop_addr_full). A mapping past its timeout counts as gone here;
 * the daemon's sweep deletes it (lib/nat/expire.ts). CFG.timeout_other 0: off,
 * and these protocols pass as they are.
 */
#ifndef EINAT_ADDRNAT_H
#define EINAT_ADDRNAT_H

#include "maps.h"
#include "parse.h"
#include "ct.h"

#define ADDR_NAT_MAX 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct addr_key);
	__type(value, struct addr_value);
	__uint(max_entries, ADDR_NAT_MAX);
} map_addr_nat SEC(".maps");

/* The key and a new value, per CPU: the stacks of the callers are full. */
struct addr_scratch {
	struct addr_key k;
	struct addr_value v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct addr_scratch);
	__uint(max_entries, 1);
} map_addr_scratch SEC(".maps");

/* A protocol this NAT translates by address only: none of those with ports or
 * identifiers (TCP, UDP, the family's ICMP), nor an IPv6 extension header. */
static __always_inline bool addr_nat_proto(__u8 family, __u8 proto)
{
	if (!CFG.timeout_other || proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		return false;
	if (family == 4)
		return proto != IPPROTO_ICMP;
	return proto != IPPROTO_ICMPV6 && !ipv6_ext_walked(proto) && proto != IPPROTO_FRAGMENT;
}

static __always_inline bool addr_nat_expired(const struct addr_value *v, __u64 now)
{
	return (__s64)(now - v->last_seen_ns) > (__s64)CFG.timeout_other;
}

/* A packet of the mapping seen at now (a store only when the clock moved). */
static __always_inline void addr_nat_touch(struct addr_value *v, __u64 now)
{
	if (now != v->last_seen_ns)
		v->last_seen_ns = now;
}

static __always_inline struct addr_scratch *
addr_key_of(__u8 family, __u8 proto, const union ip_addr *ext, const union ip_addr *remote)
{
	__u32 zero = 0;
	struct addr_scratch *s = bpf_map_lookup_elem(&map_addr_scratch, &zero);
	if (!s)
		return NULL;
	__builtin_memset(&s->k, 0, sizeof(s->k));
	s->k.family = family;
	s->k.l4proto = proto;
	s->k.ext_addr = *ext;
	s->k.remote_addr = *remote;
	return s;
}

/* einat_addr_nat_find's first argument (five arguments at most). */
#define ADDR_FIND(family, proto, refresh) ((family) | (__u32)(proto) << 8 | (__u32)(refresh) << 16)

/*
 * The internal host of (protocol, ext, remote) into intern, `what` being
 * ADDR_FIND(family, protocol, refresh): 1, its mapping refreshed at now when
 * `refresh` (a packet, not an error about one); 0 when there is none or it
 * expired. A global function: one verified copy for inbound packets and the
 * errors about outbound ones.
 */
__noinline int einat_addr_nat_find(__u32 what, const union ip_addr *ext,
				   const union ip_addr *remote, __u64 now, union ip_addr *intern)
{
	if (!ext || !remote || !intern)
		return 0;
	struct addr_scratch *s = addr_key_of(what & 0xff, (what >> 8) & 0xff, ext, remote);
	if (!s)
		return 0;
	struct addr_value *v = bpf_map_lookup_elem(&map_addr_nat, &s->k);
	if (!v || addr_nat_expired(v, now))
		return 0;
	if (what >> 16)
		addr_nat_touch(v, now);
	*intern = v->int_addr;
	return 1;
}

/*
 * Claims (protocol, ext, remote) for the packet's internal source: its own
 * mapping is refreshed, a missing or expired one made. Returns 0,
 * STAT_DROP_ADDR_IN_USE while another host's lives, or STAT_DROP_ADDR_FULL.
 */
__noinline int einat_addr_nat_claim(const struct packet *p, const union ip_addr *ext, __u64 now)
{
	if (!p || !ext)
		return STAT_DROP_UNTRANSLATABLE;
	struct addr_scratch *s = addr_key_of(p->family, p->real_proto, ext, &p->dst);
	if (!s)
		return STAT_DROP_UNTRANSLATABLE;
	struct addr_value *v = bpf_map_lookup_elem(&map_addr_nat, &s->k);
	if (v && addr_eq(&v->int_addr, &p->src)) {
		addr_nat_touch(v, now);
		return 0;
	}
	if (v) {
		/* Taking an expired one over: claimed by moving its last_seen_ns from the value
		 * seen, so of two CPUs (or the holder's own packet refreshing it) one wins. */
		__u64 seen = v->last_seen_ns;
		if (!addr_nat_expired(v, now) ||
		    __sync_val_compare_and_swap(&v->last_seen_ns, seen, now) != seen)
			return addr_eq(&v->int_addr, &p->src) ? 0 : STAT_DROP_ADDR_IN_USE;
	}
	__builtin_memset(&s->v, 0, sizeof(s->v));
	s->v.int_addr = p->src;
	s->v.created_s = now / NSEC_PER_SEC;
	s->v.last_seen_ns = now;
	/* A new one only where there is none (another CPU's made meanwhile is kept, and is this
	 * packet's only if it names its source), or in place of the one claimed above. */
	long err = bpf_map_update_elem(&map_addr_nat, &s->k, &s->v, v ? BPF_EXIST : BPF_NOEXIST);
	if (err == -E2BIG)
		return STAT_DROP_ADDR_FULL;
	if (err) {
		v = bpf_map_lookup_elem(&map_addr_nat, &s->k);
		return v && addr_eq(&v->int_addr, &p->src) ? 0 : STAT_DROP_ADDR_IN_USE;
	}
	stat_inc(STAT_NEW_ADDR_MAPPING);
	return 0;
}

/*
 * DCCP and UDP-Lite checksum a pseudo-header, at offset 6 of their header
 * as UDP does: rewrite() updates it there. The others have no checksum that
 * covers the addresses (csum_off 0: rewrite() leaves the L4 header alone).
 */
static __always_inline void addr_nat_csum_off(struct packet *p)
{
	p->csum_off = 0;
	if (p->frag != FRAG_LATER &&
	    (p->real_proto == IPPROTO_DCCP || p->real_proto == IPPROTO_UDPLITE))
		p->csum_off = p->l4_off + 6;
}

#endif
