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
 * its (external source, destination, protocol): IPID_BUCKETS counters, each
 * on a cache line of its own (two CPUs' flows do not share one by chance),
 * picked by a hash keyed with CFG.ip_id_key (drawn by the loader at each
 * load, so which flows share a counter cannot be chosen from outside), plus
 * an offset per flow from the same hash. Flows that share a counter skip
 * each other's values, never repeat them before the counter comes round. A
 * GSO skb takes one value per segment: segmentation numbers its segments on
 * from the ID it carries, as a host's stack does. The fragments of one
 * datagram get one ID, in whatever order they leave: the first of them draws
 * it and records it (map_ipid_frag: written by egress alone, so traffic from
 * outside cannot evict the records, which live as long as a receiver's
 * reassembly may wait, IPID_FRAG_LIFE), the others take it. Atomic datagrams
 * (TCP's, and UDP's with path MTU discovery, as Linux sends them) keep
 * theirs: none is reassembled (RFC 6864 4.1). Inbound datagrams need
 * nothing: their IDs are unique per (remote, external address), so per
 * internal host too.
 */
#ifndef EINAT_IPID_H
#define EINAT_IPID_H

#include "config.h"
#include "parse.h"

#define IPID_BUCKETS 2048
#define IPID_FRAG_RECORDS 16384
/* How long a datagram's new ID is kept for its later fragments: Linux's
 * reassembly timeout (ipfrag_time), at least timeout_fragment. A host that
 * reuses its own ID within it gets the same new one, as it asked. */
#define IPID_FRAG_LIFE (30 * NS_PER_SEC)

struct ipid_counter {
	__u32 n;
	__u32 _pad[15]; /* a cache line each */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ipid_counter);
	__uint(max_entries, IPID_BUCKETS);
} map_ip_id SEC(".maps");

static __always_inline __u32 ipid_hash(__be32 src, __be32 dst, __u8 proto)
{
	__u32 h = (src ^ CFG.ip_id_key) * 0x9e3779b1u;
	h = (h ^ (h >> 15) ^ dst) * 0x85ebca6bu;
	h = (h ^ (h >> 13) ^ proto) * 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/* A new ID for a non-atomic datagram from src to dst, `segs` values reserved
 * (a GSO skb's segments take the ones after it); network order. */
static __always_inline __be16 ipid_next(__be32 src, __be32 dst, __u8 proto, __u32 segs)
{
	__u32 h = ipid_hash(src, dst, proto);
	__u32 idx = h & (IPID_BUCKETS - 1);
	struct ipid_counter *c = bpf_map_lookup_elem(&map_ip_id, &idx);
	__u32 n = c ? __sync_fetch_and_add(&c->n, segs > 1 ? segs : 1) : 0;
	return bpf_htons((__u16)(n + (h >> 16)));
}

/* A datagram leaving: its internal source, destination, protocol and own ID. */
struct ipid_frag_key {
	__be32 src;
	__be32 dst;
	__be16 id;
	__u8 proto;
	__u8 _pad;
};

struct ipid_frag {
	__u64 expires_ns;
	__be16 id; /* its new ID */
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ipid_frag_key);
	__type(value, struct ipid_frag);
	__uint(max_entries, IPID_FRAG_RECORDS);
} map_ipid_frag SEC(".maps");

/*
 * The new ID of a fragment's datagram, leaving from src: the one recorded
 * for it, else a new one, recorded. Two CPUs racing keep the first record;
 * an expired one is deleted first, so the race for its successor is the same.
 */
__noinline __u32 einat_frag_ipid(const struct packet *p, __be32 src)
{
	if (!p)
		return 0;
	struct ipid_frag_key k = {
		.src = p->src.v4, .dst = p->dst.v4, .id = (__be16)p->frag_id, .proto = p->l4proto};
	__u64 now = bpf_ktime_get_ns();
	struct ipid_frag *e = bpf_map_lookup_elem(&map_ipid_frag, &k);
	if (e && e->expires_ns >= now)
		return e->id;
	if (e)
		bpf_map_delete_elem(&map_ipid_frag, &k);
	__u64 life = TIMEOUT_FRAGMENT > IPID_FRAG_LIFE ? TIMEOUT_FRAGMENT : IPID_FRAG_LIFE;
	struct ipid_frag v = {.expires_ns = now + life,
			      .id = ipid_next(src, p->dst.v4, p->l4proto, 1)};
	if (bpf_map_update_elem(&map_ipid_frag, &k, &v, BPF_NOEXIST)) {
		e = bpf_map_lookup_elem(&map_ipid_frag, &k);
		if (e)
			return e->id;
	}
	return v.id;
}

/* The new ID of a non-atomic datagram leaving from src (network order). */
static __always_inline __be16 ipid_of(struct __sk_buff *skb, const struct packet *p, __be32 src)
{
	if (unlikely(p->frag != FRAG_NONE))
		return (__be16)einat_frag_ipid(p, src);
	return ipid_next(src, p->dst.v4, p->l4proto, skb->gso_segs);
}

#endif
