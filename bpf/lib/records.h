/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Mapping records and the outbound index (docs/state-tables.md): bindings
 * kept in arrays instead of hash maps, so that making one allocates nothing.
 *
 * - A record per external port: map_records is indexed by (external-address
 *   slot, protocol, port), so the inbound lookup is an index. Claiming the
 *   port is claiming the record, a compare-and-swap on its state word: a port
 *   is never handed out twice.
 * - The outbound index finds a record by its internal endpoint. It is a table
 *   of cache lines (struct outbound_line); an endpoint's hash picks a line,
 *   and its entry is one of the line's 15. An entry holds a tag of the hash
 *   and the record's index; a lookup reads the records whose tag matches and
 *   compares their endpoint. Lookups take no lock. An insert holds the line's
 *   lock word (a compare-and-swap, given up after a bounded number of tries),
 *   so that one endpoint never gets two records: whoever inserts second finds
 *   the first one's record and takes it instead.
 * - A deleted entry becomes a tombstone, which the next insert into the line
 *   reuses. A lookup stops at the first empty entry: an insert takes the first
 *   free entry, so nothing was ever inserted past an empty one.
 * - A line whose 15 entries are taken refuses the insert. The loader sizes the
 *   index at two entries per binding, rounded up to a power of two of lines
 *   (lib/nat/codec.ts, outboundLines), so a line is rarely full.
 *
 * OUTBOUND_MASK() (the number of lines less one, a power of two less one) is
 * the includer's, or this file's read-only knob outbound_mask.
 */
#ifndef EINAT_RECORDS_H
#define EINAT_RECORDS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "../einat.h"
#include "parse.h"
#include "ref.h"

#ifndef OUTBOUND_MASK
const volatile __u32 outbound_mask = (1 << 15) - 1;
#define OUTBOUND_MASK() outbound_mask
#endif

/* 3 protocols x 65,536 ports per external-address slot; the loader sizes it.
 * BPF_F_MMAPABLE: user space reads the records through a mapping (a batch read
 * costs ~200 ns a record in the kernel). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct mapping_record);
	__uint(max_entries, 2 * PROTO_IDX_MAX * 65536);
} map_records SEC(".maps");

/* BPF_F_MMAPABLE: the values start on a page, so each line is one cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct outbound_line);
	__uint(max_entries, 1 << 15);
} map_outbound SEC(".maps");

/* An internal endpoint: what the outbound index is keyed by. */
struct rec_key {
	union ip_addr addr;
	__be16 port; /* ICMP echo identifier for ICMP */
	__u8 family;
	__u8 l4proto;
};

#define OB_EMPTY 0
#define OB_TOMB 1
#define OB_IDX_BITS 22 /* record indexes: 21 slots of 3 x 65,536 ports */
#define OB_IDX_MASK ((1u << OB_IDX_BITS) - 1)
#define OB_LOCK_SPINS 4096 /* reads of a held lock before an insert gives up (~10 us) */

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef EBUSY
#define EBUSY 16
#endif
#ifndef EAGAIN
#define EAGAIN 11
#endif
#ifndef EINVAL
#define EINVAL 22
#endif
#ifndef ENOSPC
#define ENOSPC 28
#endif

/* The record of (slot, protocol index, port in host order). */
static __always_inline __u32 rec_index(__u32 slot, int pidx, __u16 port)
{
	return ((slot * PROTO_IDX_MAX + (pidx & 3)) << 16) | port;
}

static __always_inline struct mapping_record *rec_get(__u32 idx)
{
	return bpf_map_lookup_elem(&map_records, &idx);
}

static __always_inline __u32 fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

/* The hash of an endpoint (family, protocol, address, port). */
static __always_inline __u32 ob_hash_of(__u8 family, __u8 l4proto, const union ip_addr *a,
					__be16 port)
{
	__u32 h = ((__u32)family << 24) ^ ((__u32)l4proto << 16) ^ port;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = (h ^ a->all[i]) * 0x9e3779b1U + 0x7f4a7c15U;
	return fmix32(h);
}

/* The hash of an endpoint: its low bits pick the line, its top 10 bits are the tag. */
static __always_inline __u32 ob_hash(const struct rec_key *k)
{
	return ob_hash_of(k->family, k->l4proto, &k->addr, k->port);
}

static __always_inline __u32 ob_tag(__u32 h)
{
	__u32 t = h >> OB_IDX_BITS;
	return t ? t : 1; /* an entry is never OB_EMPTY or OB_TOMB */
}

static __always_inline struct outbound_line *ob_line(__u32 h)
{
	__u32 i = h & OUTBOUND_MASK();
	return bpf_map_lookup_elem(&map_outbound, &i);
}

/* Starts reading the outbound line of an endpoint, for a lookup that may
 * follow (flowcache.h, flow_miss_burst()): nothing is compared or written. */
static __always_inline void ob_touch(__u8 family, __u8 l4proto, const union ip_addr *a, __be16 port)
{
	struct outbound_line *l = ob_line(ob_hash_of(family, l4proto, a, port));
	if (l)
		(void)*(volatile __u32 *)&l->e[0];
}

/* The line of endpoint k, and the endpoint's hash into *h; NULL without k. */
static __always_inline struct outbound_line *ob_line_of(const struct rec_key *k, __u32 *h)
{
	if (!k)
		return NULL;
	*h = ob_hash(k);
	return ob_line(*h);
}

/* The record is live, not going, and holds endpoint k. */
static __always_inline bool rec_names(const struct mapping_record *r, const struct rec_key *k)
{
	return (r->state & REC_STATE_MASK) == REC_LIVE && !(r->ref & BINDING_DYING) &&
	       r->ct.int_port == k->port && r->l4proto == k->l4proto && r->family == k->family &&
	       addr_eq(&r->ct.int_addr, &k->addr);
}

static __always_inline void rec_key_init(struct rec_key *k, __u8 family, __u8 l4proto,
					 const union ip_addr *addr, __be16 port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr = *addr;
	k->port = port;
	k->family = family;
	k->l4proto = l4proto;
}

/* The endpoint of record r as an index key. */
static __always_inline void rec_key_of(struct rec_key *k, const struct mapping_record *r)
{
	rec_key_init(k, r->family, r->l4proto, &r->ct.int_addr, r->ct.int_port);
}

/*
 * Claims record r for endpoint k with one reference (the caller's session's):
 * FREE -> BUSY by compare-and-swap, the fields written, then LIVE with the
 * next generation. With first (its internal endpoint aside) and remote, that
 * session is made in the record (SESS_INLINE), before anyone can see it. False
 * when the record is taken.
 */
static __always_inline bool rec_claim(struct mapping_record *r, const struct rec_key *k,
				      const struct ct_value *first, const union ip_addr *remote,
				      __be16 remote_port)
{
	__u32 s = *(volatile __u32 *)&r->state;
	if ((s & REC_STATE_MASK) != REC_FREE)
		return false;
	if (__sync_val_compare_and_swap(&r->state, s, s | REC_BUSY) != s)
		return false;
	if (first && remote) {
		r->ct = *first;
		r->remote_addr = *remote;
		r->remote_port = remote_port;
		r->sess = SESS_INLINE;
	} else {
		__builtin_memset(&r->ct, 0, sizeof(r->ct));
		r->sess = SESS_NONE;
	}
	r->ct.int_addr = k->addr;
	r->ct.int_port = k->port;
	r->family = k->family;
	r->l4proto = k->l4proto;
	r->ref = 1;
	__sync_lock_test_and_set(&r->state, (s + REC_GEN_ONE) | REC_LIVE);
	return true;
}

/* Frees record r: by whoever dropped its last reference (ref_put), after its
 * outbound entry went. */
static __always_inline void rec_free(struct mapping_record *r)
{
	__u32 s = *(volatile __u32 *)&r->state;
	r->sess = SESS_NONE;
	__sync_lock_test_and_set(&r->state, s & ~REC_STATE_MASK);
}

/* Record idx is live, not going, and holds endpoint k. A global function: the
 * lookup's loop calls it, so the verifier walks its conditions once, not once
 * per entry of a line. */
__noinline int einat_rec_is(__u32 idx, const struct rec_key *k)
{
	struct mapping_record *r = rec_get(idx);
	return r && k && rec_names(r, k);
}

/*
 * The index of the live record of endpoint k, or -1. No lock: a record being
 * inserted meanwhile is missed, and its endpoint's creator then finds it when
 * it inserts (outbound_insert). Global as einat_outbound_find, and inline in
 * outbound_insert.
 */
static __always_inline int outbound_find(const struct rec_key *k)
{
	__u32 h;
	struct outbound_line *l = ob_line_of(k, &h);
	if (!l)
		return -1;
	__u32 tag = ob_tag(h);
	for (int i = 0; i < OB_ENTRIES; i++) {
		__u32 e = *(volatile __u32 *)&l->e[i];
		if (e == OB_EMPTY)
			break;
		if (e >> OB_IDX_BITS == tag && einat_rec_is(e & OB_IDX_MASK, k))
			return e & OB_IDX_MASK;
	}
	return -1;
}

/* outbound_find(), verified once. */
__noinline int einat_outbound_find(const struct rec_key *k)
{
	return outbound_find(k);
}

struct ob_wait {
	struct outbound_line *line;
	__u32 got;
};

/* bpf_loop callback: one look at the lock, and a compare-and-swap when it is free. */
static long ob_lock_spin(__u64 i, void *ctx)
{
	struct ob_wait *w = ctx;
	struct outbound_line *l = w->line;
	if (!l)
		return 1;
	if (*(volatile __u32 *)&l->lock == 0 && __sync_val_compare_and_swap(&l->lock, 0, 1) == 0) {
		w->got = 1;
		return 1;
	}
	return 0;
}

/* Takes line l's lock: at once when it is free, else after waiting a bounded time. */
static __always_inline bool ob_lock(struct outbound_line *l)
{
	if (__sync_val_compare_and_swap(&l->lock, 0, 1) == 0)
		return true;
	struct ob_wait w = {.line = l, .got = 0};
	bpf_loop(OB_LOCK_SPINS, ob_lock_spin, &w, 0);
	return w.got;
}

/*
 * Inserts record idx (claimed for endpoint k) into the outbound index, holding
 * the line's lock. Returns idx; the index of another live record of k, which
 * another CPU inserted first (the caller frees its own and takes that one);
 * -EBUSY when the lock stayed held; -ENOSPC when the line is full. Inline in
 * einat_record_publish, a new mapping's one call for its publication (each
 * call and return ~15 ns with return-thunk mitigations).
 */
static __always_inline int outbound_insert(const struct rec_key *k, __u32 idx)
{
	__u32 h;
	struct outbound_line *l = ob_line_of(k, &h);
	if (!l)
		return -EINVAL;
	if (!ob_lock(l))
		return -EBUSY;
	/* Under the lock no other insert runs on this line: what the lookup misses now is
	 * not there. Two passes, not one tracking both: the verifier's states would
	 * multiply with each place a free entry may have been seen at. */
	int ret = outbound_find(k);
	if (ret < 0) {
		ret = -ENOSPC;
		__u32 e = (ob_tag(h) << OB_IDX_BITS) | (idx & OB_IDX_MASK);
		for (int i = 0; i < OB_ENTRIES; i++) {
			__u32 old = l->e[i];
			if (old == OB_EMPTY || old == OB_TOMB) {
				*(volatile __u32 *)&l->e[i] = e;
				ret = idx & OB_IDX_MASK;
				break;
			}
		}
	}
	__sync_lock_test_and_set(&l->lock, 0);
	return ret;
}

/* outbound_insert() as a global function (the records tests call it). */
__noinline int einat_outbound_insert(const struct rec_key *k, __u32 idx)
{
	return outbound_insert(k, idx);
}

/* Turns record idx's entry for endpoint k into a tombstone. 0, or -ENOENT. */
__noinline int einat_outbound_delete(const struct rec_key *k, __u32 idx)
{
	__u32 h;
	struct outbound_line *l = ob_line_of(k, &h);
	if (!l)
		return -EINVAL;
	__u32 want = (ob_tag(h) << OB_IDX_BITS) | (idx & OB_IDX_MASK);
	for (int i = 0; i < OB_ENTRIES; i++) {
		__u32 e = *(volatile __u32 *)&l->e[i];
		if (e == OB_EMPTY)
			break;
		if (e == want && __sync_val_compare_and_swap(&l->e[i], want, OB_TOMB) == want)
			return 0;
	}
	return -ENOENT;
}

/*
 * Publishes record idx, just claimed for endpoint k (with the reference of the
 * caller's session), in the outbound index. Returns idx; or the index of k's
 * record that another CPU published first, with a reference taken on it for
 * the caller; or -errno. Unless it returns idx, the caller drops the reference
 * on its own record (ref_put), and releases that record with it (a session
 * may have taken one meanwhile, found by its port: then the record goes when
 * that session ends).
 */
__noinline int einat_record_publish(const struct rec_key *k, __u32 idx)
{
	if (!k)
		return -EINVAL;
	int ins = outbound_insert(k, idx);
	if (ins == (int)idx || ins < 0)
		return ins;
	struct mapping_record *r = rec_get(ins);
	if (!r || !ref_get(&r->ref))
		return -EAGAIN; /* and going already */
	return ins;
}

/* Removes record idx, whose last reference the caller dropped (ref_put), from the
 * outbound index and frees it. */
static __always_inline void record_release(struct mapping_record *r, __u32 idx)
{
	struct rec_key k;
	rec_key_of(&k, r);
	einat_outbound_delete(&k, idx);
	rec_free(r);
}

#endif
