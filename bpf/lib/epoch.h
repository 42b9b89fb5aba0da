/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mapping epoch: a counter that moves whenever a session or a binding
 * is deleted (here, by the sweep, or by the daemon through bump_epoch). The
 * flow cache (flowcache.h) stamps each slot with the epoch read before the
 * lookups that filled it, and trusts a slot only while the epoch has not
 * moved, so a deleted mapping, whose port another host may claim next, is
 * never served from a cache.
 */
#ifndef EINAT_EPOCH_H
#define EINAT_EPOCH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} map_epoch SEC(".maps");

#define EPOCH_NONE (~0ULL) /* no epoch could be read: cache nothing */

static __always_inline __u64 epoch_now(void)
{
	__u32 zero = 0;
	__u64 *e = bpf_map_lookup_elem(&map_epoch, &zero);
	return e ? *(volatile __u64 *)e : EPOCH_NONE;
}

/* After deleting a session or binding. */
static __always_inline void epoch_bump(void)
{
	__u32 zero = 0;
	__u64 *e = bpf_map_lookup_elem(&map_epoch, &zero);
	if (e)
		__sync_fetch_and_add(e, 1);
}

/*
 * Run by the daemon with BPF_PROG_TEST_RUN after it deleted sessions or
 * bindings itself (the mappings of an address that left).
 */
SEC("tc")
int bump_epoch(struct __sk_buff *skb)
{
	epoch_bump();
	return 0;
}

#endif
