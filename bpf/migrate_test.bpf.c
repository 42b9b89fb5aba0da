/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Types for the tests of state migration (lib/state/migrate.ts), never loaded
 * as programs:
 * - the session and binding maps as an older einat could have laid them out
 *   (same field names, other places, a field this einat dropped), which
 *   tests/state_test.ts creates and pins in place of this einat's to check
 *   that a start carries them over;
 * - pairs of structs for lib/state/migrate_test.ts: a layout and its next
 *   version, and changes a migration must refuse.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

union ip_addr {
	__be32 v4;
	__be32 all[4];
};

/* struct ct_value of einat.h, the fields in another order, with one more. */
struct ct_value {
	__u64 last_seen_ns;
	union ip_addr int_addr;
	__u32 created_s;
	__be16 int_port;
	__u8 flags;
	__u8 state;
	__u32 retired; /* not in this einat's layout: dropped */
};

struct ct_key {
	union ip_addr remote_addr;
	union ip_addr ext_addr;
	__be16 remote_port;
	__be16 ext_port;
	__u8 family;
	__u8 l4proto;
	__u8 flags;
	__u8 _pad;
};

struct mapping_record {
	struct ct_value ct;
	__u32 state;
	__u32 ref;
	union ip_addr remote_addr;
	__be16 remote_port;
	__u8 l4proto;
	__u8 family;
	__u32 sess;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct mapping_record);
	__uint(max_entries, 1);
} map_records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 1);
} map_ct SEC(".maps");

/* A struct and its next version: members moved, one added, one dropped. */
struct inner_v1 {
	__u32 a;
	__u16 b;
	__u16 _pad;
};

struct inner_v2 {
	__u16 b;
	__u16 _pad;
	__u32 a;
	__u64 c; /* added */
};

struct rec_v1 {
	__u8 x;
	__u8 y;
	__be16 port;
	struct inner_v1 in;
	__u32 arr[3];
	union ip_addr u;
	__u32 gone; /* dropped */
};

struct rec_v2 {
	struct inner_v2 in;
	union ip_addr u;
	__u32 arr[3];
	__be16 port;
	__u8 y;
	__u8 x;
	__u64 added;
};

/* Next versions of rec_v1 a migration refuses. */
struct rec_wider {
	__u32 x; /* 1 byte before */
};

struct rec_kind {
	struct inner_v1 x; /* a number before */
};

struct rec_longer {
	__u32 arr[4]; /* 3 elements before */
};

union ip_addr_small {
	__be32 v4;
};

struct rec_union {
	union ip_addr_small u; /* 16 bytes before */
};

struct rec_bits {
	__u32 x : 8; /* a bitfield */
};

struct rec_v1 g_rec_v1;
struct rec_v2 g_rec_v2;
struct rec_wider g_rec_wider;
struct rec_kind g_rec_kind;
struct rec_longer g_rec_longer;
struct rec_union g_rec_union;
struct rec_bits g_rec_bits;
