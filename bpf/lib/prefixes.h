/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Prefix lookups: which of our prefixes (map_externals, map_dest_config, both
 * LPM tries) covers an address. The paths that need only the EXT_* flags, the
 * source and destination checks of every new flow, scan the family's prefix
 * set (map_prefix_sets: both tries' prefixes, longest first) instead: its
 * few entries are one or two cache lines of one array value, where a trie
 * lookup walks nodes allocated apart, a cold miss each (stop 39: the two
 * lookups of a new mapping made one run at a time cost 160-240 ns; scanned,
 * ~90 ns less than from the tries). The daemon writes the sets from the
 * tries' contents (lib/nat/prefixes.ts).
 */
#ifndef EINAT_PREFIXES_H
#define EINAT_PREFIXES_H

#include "compiler.h"
#include "maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct prefix_set);
	__uint(max_entries, PREFIX_SETS);
} map_prefix_sets SEC(".maps");

/* One LPM key per CPU: the stack of the egress path is too small for several. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lpm_key);
	__uint(max_entries, 1);
} map_lpm_scratch SEC(".maps");

static __always_inline struct external_config *lpm_lookup(void *map, __u8 family,
							  const union ip_addr *addr)
{
	__u32 zero = 0;
	struct lpm_key *k = bpf_map_lookup_elem(&map_lpm_scratch, &zero);
	if (!k)
		return NULL;
	k->prefixlen = 8 + (family == 4 ? 32 : 128);
	k->family = family;
	k->addr = *addr;
	return bpf_map_lookup_elem(map, k);
}

/*
 * The flags of the most specific prefix covering a in map_externals, or in
 * map_dest_config (dest). A global function: the callers share one copy.
 */
__noinline int einat_prefix_trie(__u32 v6, __u32 dest, const union ip_addr *a)
{
	if (!a)
		return 0;
	__u8 family = v6 ? 6 : 4;
	if (!dest) {
		struct external_config *c = lpm_lookup(&map_externals, family, a);
		return c ? c->flags : 0;
	}
	__u32 *f = (__u32 *)lpm_lookup(&map_dest_config, family, a);
	return f ? *f : 0;
}

/* Two 64-bit words a side: entries are 8-byte aligned, an address at least 4 (x86 and arm64 load it). */
static __always_inline bool prefix_covers6(const struct prefix_entry *e, const union ip_addr *a)
{
	const __u64 *x = (const __u64 *)a, *m = (const __u64 *)&e->mask,
		    *p = (const __u64 *)&e->addr;
	return (((x[0] & m[0]) ^ p[0]) | ((x[1] & m[1]) ^ p[1])) == 0;
}

/*
 * The flags word of the first prefix of h (longest first) covering a; 0 when
 * none does. A global function of its own, so that the verifier walks the
 * loops' exits to their end here, not through the caller's re-check.
 */
__noinline int einat_prefix_scan(const struct prefix_half *h, __u32 v6, const union ip_addr *a)
{
	if (!h || !a)
		return 0;
	__u32 n = h->count;
	if (v6) {
		for (__u32 i = 0; i < PREFIX_SET_MAX && i < n; i++)
			if (prefix_covers6(&h->e[i], a))
				return h->e[i].flags;
	} else {
		for (__u32 i = 0; i < PREFIX_SET_MAX && i < n; i++)
			if ((a->v4 & h->e[i].mask.v4) == h->e[i].addr.v4)
				return h->e[i].flags;
	}
	return 0;
}

/*
 * Keeps the loads before it before those after it where the CPU would not
 * (CFG.weak_order: arm64). BPF has no load barrier; an atomic exchange is
 * fully ordered (BPF's atomics with a fetch are), here of a per-CPU word no
 * one else reads before writing it. On x86, which keeps loads in order, the
 * branch is dead and the verifier removes it.
 */
static __always_inline void load_fence(void)
{
	if (CFG.weak_order) {
		__u32 zero = 0;
		/* its first word (prefixlen, written before each use): a map value is 8-byte
		 * aligned, though the packed key type does not say so */
		__u32 *w = bpf_map_lookup_elem(&map_lpm_scratch, &zero);
		if (w)
			__sync_lock_test_and_set(w, 0);
	}
}

/*
 * EXT_* flags of the most specific prefix covering a in map_externals, or
 * in map_dest_config (dest); 0 when none does. A reader that finds its
 * half's count or generation changed after its scan asks the trie: the
 * scan's loads stay between the two reads of them (load_fence). A global
 * function: verified once.
 */
__noinline int einat_prefix_flags(__u32 v6, __u32 dest, const union ip_addr *a)
{
	if (!a)
		return 0;
	__u32 idx = v6 ? 1 : 0;
	struct prefix_set *s = bpf_map_lookup_elem(&map_prefix_sets, &idx);
	if (!s)
		return 0;
	struct prefix_half *h = &s->half[0];
	__u32 n = READ_ONCE(h->count);
	if (n == PREFIX_SET_MOVED) {
		h = &s->half[1];
		n = READ_ONCE(h->count);
	}
	if (n > PREFIX_SET_MAX)
		return einat_prefix_trie(v6, dest, a);
	__u32 gen = READ_ONCE(h->gen);
	barrier();
	load_fence();
	__u32 w = einat_prefix_scan(h, v6, a);
	barrier();
	load_fence();
	if (READ_ONCE(h->count) != n || READ_ONCE(h->gen) != gen)
		return einat_prefix_trie(v6, dest, a); /* rewritten meanwhile */
	return (dest ? w >> PREFIX_DEST_SHIFT : w) & 0xff;
}

#endif
