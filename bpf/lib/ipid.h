/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The IPv4 identification of translated non-atomic datagrams (RFC 6864
 * 5.3.1). A datagram is atomic when DF is set and it is no fragment; any
 * other is fragmented or may be on its way, and its ID must then be unique
 * per (source, destination, protocol) while it may live, or a reassembly
 * mixes two datagrams' fragments. Each host keeps that for its own source;
 * after translation the hosts share the external one, and their counters
 * meet at a remote they all talk to (masquerade leaves the IDs as they are).
 *
 * So a non-atomic datagram leaving translated gets an ID from a counter of
 * its (external source, destination, protocol): IPID_BUCKETS counters, picked
 * by a hash keyed with CFG.ip_id_key (drawn by the loader at each load, so
 * which flows share a counter cannot be chosen from outside), plus an offset
 * per flow from the same hash. Flows that share a counter skip each other's
 * values, never repeat them before the counter comes round. The fragments of
 * one datagram get one ID, in whatever order they leave: the first of them
 * draws it and records it (map_frag, FRAG_ID, keyed by the datagram's own
 * fields), the others take it. Atomic datagrams (TCP's, and UDP's with path
 * MTU discovery, as Linux sends them) keep theirs: none is reassembled (RFC
 * 6864 4.1). Inbound datagrams need nothing: their IDs are unique per
 * (remote, external address), so per internal host too.
 */
#ifndef EINAT_IPID_H
#define EINAT_IPID_H

#include "config.h"
#include "frag.h"

#define IPID_BUCKETS 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, IPID_BUCKETS);
} map_ip_id SEC(".maps");

static __always_inline __u32 ipid_hash(__be32 src, __be32 dst, __u8 proto)
{
	__u32 h = (src ^ CFG.ip_id_key) * 0x9e3779b1u;
	h = (h ^ (h >> 15) ^ dst) * 0x85ebca6bu;
	h = (h ^ (h >> 13) ^ proto) * 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/* A new ID for a non-atomic datagram from src to dst (network order). */
static __always_inline __be16 ipid_next(__be32 src, __be32 dst, __u8 proto)
{
	__u32 h = ipid_hash(src, dst, proto);
	__u32 idx = h & (IPID_BUCKETS - 1);
	__u32 *c = bpf_map_lookup_elem(&map_ip_id, &idx);
	__u32 n = c ? __sync_fetch_and_add(c, 1) : 0;
	return bpf_htons((__u16)(n + (h >> 16)));
}

/* Per-CPU room for a FRAG_ID record: einat_frag_ipid is called at the bottom of
 * the deepest call chains, whose stacks are near the limit. */
struct ipid_scratch {
	struct frag_key k;
	struct frag_value v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ipid_scratch);
	__uint(max_entries, 1);
} map_ipid_scratch SEC(".maps");

/*
 * The new ID of a fragment's datagram, leaving from src: the one recorded
 * for it, else a new one, recorded (two CPUs racing keep the first record).
 */
__noinline __u32 einat_frag_ipid(const struct packet *p, __be32 src)
{
	__u32 zero = 0;
	struct ipid_scratch *s = bpf_map_lookup_elem(&map_ipid_scratch, &zero);
	if (!p || !s)
		return 0;
	frag_key_init(&s->k, p, FRAG_ID);
	__u64 now = bpf_ktime_get_ns();
	struct frag_value *e = bpf_map_lookup_elem(&map_frag, &s->k);
	if (e && e->expires_ns >= now)
		return e->addr.v4;
	__builtin_memset(&s->v, 0, sizeof(s->v));
	s->v.addr.v4 = ipid_next(src, p->dst.v4, p->l4proto);
	s->v.expires_ns = now + TIMEOUT_FRAGMENT;
	if (bpf_map_update_elem(&map_frag, &s->k, &s->v, e ? BPF_ANY : BPF_NOEXIST)) {
		e = bpf_map_lookup_elem(&map_frag, &s->k);
		if (e)
			return e->addr.v4;
	}
	return s->v.addr.v4;
}

/* The new ID of a non-atomic datagram leaving from src (network order). */
static __always_inline __be16 ipid_of(const struct packet *p, __be32 src)
{
	if (unlikely(p->frag != FRAG_NONE))
		return (__be16)einat_frag_ipid(p, src);
	return ipid_next(src, p->dst.v4, p->l4proto);
}

#endif
