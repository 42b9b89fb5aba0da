/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A measurement for docs/state-tables.md, not part of einat: what making one
 * mapping costs in the tables alone. Each run of a program makes one mapping
 * with a fresh key (from a counter):
 * - hash_dyn: the three inserts einat makes now (two binding entries, one
 *   session) into hash maps that allocate on demand (einat's default);
 * - hash_pre: the same into preallocated hash maps (preallocate_maps);
 * - array_cas: the design's record claimed by compare-and-swap in an array,
 *   and its outbound entry claimed in an open-addressing table;
 * - arena_cas: the same with the records in a BPF arena (kernel 6.9+), whose
 *   pages are allocated by the setup_arena program (on 6.18 a TC program may
 *   not allocate them itself: the kfunc is sleepable there).
 * Keys, values and map sizes are those of einat's defaults.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bkey {
	__u8 flags, l4proto, family, pad;
	__u16 port, pad2;
	__u32 addr[4];
};
struct bval {
	__u32 addr[4];
	__u16 port, flags;
	__u32 ref;
};
struct ckey {
	__u8 flags, l4proto, family, pad;
	__u16 ext_port, remote_port;
	__u32 ext_addr[4];
	__u32 remote_addr[4];
};
struct cval {
	__u32 int_addr[4];
	__u16 int_port;
	__u8 state, flags;
	__u32 created_s;
	__u64 last_seen_ns;
};
/* The design's IPv4 record: the binding and its first session, 48 bytes. */
struct rec {
	__u32 state; /* 0: free, 1: live */
	__u32 ref;
	__u32 int_addr;
	__u16 int_port, flags;
	__u32 remote_addr;
	__u16 remote_port, ct_state;
	__u64 last_seen_ns;
	__u32 created_s;
	__u32 pad[3];
};

#define BPF_MAP_TYPE_ARENA_ 33 /* not in Debian 12's UAPI headers */
#define __arena __attribute__((address_space(1)))
#define NUMA_NO_NODE (-1)

#define CAP 393216 /* einat's default binding and session map sizes */
#define RECORDS 196608 /* 3 protocols x 65,536 ports of one address */
#define OUT_BITS 20 /* outbound table: 2^20 entries, ~2.7x the bindings */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bkey);
	__type(value, struct bval);
	__uint(max_entries, CAP);
} dyn_binding SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ckey);
	__type(value, struct cval);
	__uint(max_entries, CAP);
} dyn_ct SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bkey);
	__type(value, struct bval);
	__uint(max_entries, CAP);
} pre_binding SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ckey);
	__type(value, struct cval);
	__uint(max_entries, CAP);
} pre_ct SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1 << OUT_BITS);
} outbound SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rec);
	__uint(max_entries, RECORDS);
} records SEC(".maps");

/* map_extra (where user space would map it) is set by the loader: libbpf 1.1 cannot read a
 * 64-bit value from the map definition. */
struct {
	__uint(type, BPF_MAP_TYPE_ARENA_);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, RECORDS * sizeof(struct rec) / 4096); /* pages */
} arena SEC(".maps");

void __arena *bpf_arena_alloc_pages(void *map, void __arena *addr, __u32 page_cnt, int node_id,
				    __u64 flags) __ksym __weak;

struct rec __arena *arena_recs; /* set by setup_arena */
__u32 seq;

static __always_inline int three_inserts(void *bindings, void *sessions)
{
	__u32 n = __sync_fetch_and_add(&seq, 1);
	struct bkey k = {};
	struct bval v = {};
	struct ckey ck = {};
	struct cval cv = {};
	k.family = 4;
	k.l4proto = 17;
	k.port = n;
	k.addr[0] = n * 2654435761u;
	v.addr[0] = 0x01020304;
	v.port = n;
	v.ref = 1;
	if (bpf_map_update_elem(bindings, &k, &v, BPF_NOEXIST))
		return 1;
	k.flags = 1;
	k.addr[0] = n ^ 0x5a5a5a5a;
	k.port = n >> 3;
	if (bpf_map_update_elem(bindings, &k, &v, BPF_NOEXIST))
		return 2;
	ck.family = 4;
	ck.l4proto = 17;
	ck.ext_port = n;
	ck.ext_addr[0] = n * 40503u;
	ck.remote_addr[0] = 0x0a000001;
	ck.remote_port = 53;
	cv.last_seen_ns = n;
	if (bpf_map_update_elem(sessions, &ck, &cv, BPF_NOEXIST))
		return 3;
	return 0;
}

SEC("tc")
int hash_dyn(struct __sk_buff *skb)
{
	return three_inserts(&dyn_binding, &dyn_ct);
}

SEC("tc")
int hash_pre(struct __sk_buff *skb)
{
	return three_inserts(&pre_binding, &pre_ct);
}

/* The outbound entry of record ri: an empty entry claimed by compare-and-swap,
 * probing up to 8 entries. */
static __always_inline int outbound_claim(__u32 n, __u32 ri)
{
	__u32 h = (n * 2654435761u) >> (32 - OUT_BITS);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u32 j = (h + i) & ((1 << OUT_BITS) - 1);
		__u32 *e = bpf_map_lookup_elem(&outbound, &j);
		if (!e)
			return 3;
		if (*e == 0 && __sync_val_compare_and_swap(e, 0, ri + 1) == 0)
			return 0;
	}
	return 4;
}

#define REC_FILL(r, n)                             \
	do {                                       \
		(r)->int_addr = (n) * 2654435761u; \
		(r)->int_port = (n);               \
		(r)->remote_addr = 0x0a000001;     \
		(r)->remote_port = 53;             \
		(r)->last_seen_ns = (n);           \
		(r)->created_s = (n);              \
		(r)->ref = 1;                      \
	} while (0)

SEC("tc")
int array_cas(struct __sk_buff *skb)
{
	__u32 n = __sync_fetch_and_add(&seq, 1);
	__u32 ri = n % RECORDS; /* the claimed port's record */
	struct rec *r = bpf_map_lookup_elem(&records, &ri);
	if (!r)
		return 1;
	if (__sync_val_compare_and_swap(&r->state, 0, 1) != 0)
		return 2;
	REC_FILL(r, n);
	return outbound_claim(n, ri);
}

SEC("syscall")
int setup_arena(void *ctx)
{
	arena_recs = bpf_arena_alloc_pages(&arena, NULL, RECORDS * sizeof(struct rec) / 4096,
					   NUMA_NO_NODE, 0);
	return arena_recs ? 0 : 1;
}

SEC("tc")
int arena_cas(struct __sk_buff *skb)
{
	asm volatile("" ::"r"(&arena)); /* names the program's arena to the verifier */
	__u32 n = __sync_fetch_and_add(&seq, 1);
	__u32 ri = n % RECORDS;
	struct rec __arena *r = &arena_recs[ri];
	if (__sync_val_compare_and_swap(&r->state, 0, 1) != 0)
		return 2;
	REC_FILL(r, n);
	return outbound_claim(n, ri);
}

SEC("tc")
int noop(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
