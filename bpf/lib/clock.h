/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The datapath's clock: CLOCK_MONOTONIC at tick resolution, read once per
 * jiffy and CPU. bpf_ktime_get_coarse_ns() costs ~16 ns a call (measured),
 * yet only moves when the tick updates the timekeeper, which is also when
 * jiffies move; bpf_jiffies64() is inlined by the verifier. So the value is
 * kept per CPU with the jiffy it was read in, and a packet in the same jiffy
 * reuses it.
 */
#ifndef EINAT_CLOCK_H
#define EINAT_CLOCK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct clock_cache {
	__u64 jiffies;
	__u64 ns;
	/* egress flow-cache misses on this CPU, counted here since every packet reads
	 * this line anyway (flowcache.h, flow_miss_burst) */
	__u64 miss_jiffies; /* the jiffy of the last one */
	__u32 misses; /* in that jiffy, with half the count of the jiffy before */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct clock_cache);
	__uint(max_entries, 1);
} map_clock SEC(".maps");

/* This CPU's clock line. */
static __always_inline struct clock_cache *clock_cache_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&map_clock, &zero);
}

/* Coarse CLOCK_MONOTONIC ns (bpf_ktime_get_coarse_ns), cached per jiffy and CPU. */
static __always_inline __u64 clock_now(void)
{
	struct clock_cache *c = clock_cache_get();
	if (!c)
		return bpf_ktime_get_coarse_ns();
	__u64 j = bpf_jiffies64();
	if (c->jiffies != j) {
		c->ns = bpf_ktime_get_coarse_ns();
		c->jiffies = j;
	}
	return c->ns;
}

#endif
