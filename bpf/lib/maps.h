/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Map definitions. Sizes here are defaults; the daemon sets the record limits. */
#ifndef EINAT_MAPS_H
#define EINAT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "../einat.h"

/* Externals, no-SNAT sources and destinations, keyed by family + prefix. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, struct external_config);
	__uint(max_entries, 4096);
} map_externals SEC(".maps");

/*
 * What a destination is, value EXT_* flags: EXT_NO_SNAT for no_snat_dests,
 * EXT_EXTERNAL (and EXT_NO_HAIRPIN) for our external addresses, so that the
 * full egress path looks the destination up once (lib/nat/plan.ts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
} map_dest_config SEC(".maps");

/* The source address new mappings get: [0] IPv4, [1] IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct default_ext);
	__uint(max_entries, 2);
} map_default_ext SEC(".maps");

/*
 * Sessions are allocated on demand (BPF_F_NO_PREALLOC, as Cilium does by
 * default): preallocating the default sizes reserved tens of MiB and cost
 * ~100 ms at every start; on demand, memory follows the live sessions and the
 * limit still holds (-E2BIG past max_entries). Bindings are mapping records
 * (lib/records.h). -DEINAT_PREALLOC: preallocated, as earlier builds made them
 * (tests reuse of such pins).
 */
#ifdef EINAT_PREALLOC
#define EINAT_STATE_MAP_FLAGS 0
#else
#define EINAT_STATE_MAP_FLAGS BPF_F_NO_PREALLOC
#endif

/* Sessions: one per (external endpoint, remote endpoint). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, EINAT_STATE_MAP_FLAGS);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 65536 * 2);
} map_ct SEC(".maps");

/* The session sweep's work list: one struct sweep_batch, rewritten per run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sweep_batch);
	__uint(max_entries, 1);
} map_sweep SEC(".maps");

/* Fragment tracking; LRU so a flood of fragments only evicts fragments. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, 65536);
} map_frag SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} map_stats SEC(".maps");

/* Translated packets and bytes per direction and family (lib/state.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct traffic_counter);
	__uint(max_entries, TRAFFIC_MAX);
} map_traffic SEC(".maps");

/*
 * Per-session counters (CFG.session_counters, lib/state.h): LRU, so the
 * sessions counted last stay when more sessions than entries are counted. The
 * loader sizes it (session_counters; one entry when off).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct ct_key);
	__type(value, struct sess_counter);
	__uint(max_entries, 1);
} map_sess_counters SEC(".maps");

/* map_stats' keys in read-only memory, so that a lookup's key takes no stack
 * slot (the programs' call chains are near the 512-byte limit). */
static const __u32 stat_keys[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
				  15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28};
_Static_assert(sizeof(stat_keys) / sizeof(stat_keys[0]) == STAT_MAX, "a key per counter");

static __always_inline void stat_count(__u32 idx)
{
	if (idx >= STAT_MAX)
		return;
	__u64 *v = bpf_map_lookup_elem(&map_stats, &stat_keys[idx]);
	if (v)
		*v += 1;
}

/*
 * Counts an event that is not every translated packet's: a global function,
 * so its many sites share one map lookup (each inlined lookup is one more
 * rewrite of the whole program at load).
 */
__noinline int einat_stat(__u32 idx)
{
	stat_count(idx);
	return 0;
}

/*
 * Counts one event: inline those that every packet of some traffic counts
 * (translated, passed, missing the flow cache), the others in einat_stat.
 */
static __always_inline void stat_inc(enum einat_stat idx)
{
	if (__builtin_constant_p(idx) && (idx <= STAT_PASS || idx == STAT_FLOW_CACHE_MISS))
		stat_count(idx);
	else
		einat_stat(idx);
}

#endif
