/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Counts per internal address, so that one host cannot fill the tables the
 * others share:
 *
 * - bindings (binding_max_per_host, CFG.host_max), taken and dropped with each
 *   binding (lib/binding.h);
 * - sessions (session_max_per_host, CFG.host_sess_max): the sum of the
 *   reference counts of the address's bindings (lib/ref.h: a reference per live
 *   session, inline in its record or in map_ct). Every change of a reference
 *   count moves it: a record claimed (one), a reference taken or dropped, a
 *   binding retired (all it held). Sessions past their timeout count until the
 *   sweep deletes them.
 *
 * Each count is kept only while its limit is on (0: off). Pinned with the
 * state and shared by a --replace's two einats: a start that finds them pinned
 * for the same limits takes them as they are; otherwise its walk of the
 * records counts them anew (sync_port_hint, lib/state.h; lib/state/pin.ts).
 * The programs leave an entry at 0 (a delete here could lose another CPU's
 * take); the sweep deletes those (lib/nat/expire.ts, forgetIdleHosts). The map
 * has room for as many addresses as there can be bindings (the loader sizes it).
 */
#ifndef EINAT_HOSTS_H
#define EINAT_HOSTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "config.h"

struct host_key {
	__u8 family;
	__u8 _pad[3];
	union ip_addr addr;
};

struct host_counts {
	__u64 bindings; /* while CFG.host_max */
	__u64 sessions; /* while CFG.host_sess_max */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct host_key);
	__type(value, struct host_counts);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} map_hosts SEC(".maps");

/* Either count is kept. */
#define HOSTS_ON() (CFG.host_max || CFG.host_sess_max)

/*
 * d less of the count *n, never below zero. The counts can be lower than what
 * they count: a new count starts from a walk of the records, and when an einat
 * of another count layout is being replaced under traffic, its programs make
 * and free bindings during that walk without counting them here. Wrapped round,
 * a count would refuse everything as if full, until the next start. A few
 * tries: another CPU moving the count at the same moment is rare.
 */
static __always_inline void count_sub(__u64 *n, __u64 d)
{
	if (!n)
		return;
	for (int i = 0; i < 8; i++) {
		__u64 v = *(volatile __u64 *)n;
		if (v == 0 || __sync_val_compare_and_swap(n, v, v > d ? v - d : 0) == v)
			return;
	}
}

/* One less of the count *n, never below zero (count_sub). */
static __always_inline void count_drop(__u64 *n)
{
	count_sub(n, 1);
}

/* Adds one to *n unless it holds max already. */
static __always_inline bool count_take(__u64 *n, __u64 max)
{
	if (__sync_fetch_and_add(n, 1) < max)
		return true;
	__sync_fetch_and_add(n, -1);
	return false;
}

static __always_inline struct host_counts *host_counts_of(__u8 family, const union ip_addr *a,
							  bool make)
{
	struct host_key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.family = family;
	k.addr = *a;
	struct host_counts *n = bpf_map_lookup_elem(&map_hosts, &k);
	if (n || !make)
		return n;
	struct host_counts zero = {};
	bpf_map_update_elem(&map_hosts, &k, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&map_hosts, &k);
}

/*
 * Counts a new binding of internal address a and its first session, unless the
 * address holds CFG.host_max bindings or CFG.host_sess_max sessions already.
 * Returns 0, or the STAT_DROP_* reason.
 */
static __always_inline int host_take_binding(__u8 family, const union ip_addr *a)
{
	if (!HOSTS_ON())
		return 0;
	struct host_counts *n = host_counts_of(family, a, true);
	if (!n) /* no room for the address: as many as there can be bindings are held */
		return STAT_DROP_HOST_FULL;
	if (CFG.host_max && !count_take(&n->bindings, CFG.host_max))
		return STAT_DROP_HOST_FULL;
	if (CFG.host_sess_max && !count_take(&n->sessions, CFG.host_sess_max)) {
		if (CFG.host_max)
			count_drop(&n->bindings);
		return STAT_DROP_HOST_CT_FULL;
	}
	return 0;
}

/* Counts a new binding of internal address a without holding it to CFG.host_max (the router's
 * own: its packets', einat_egress_own, and a ping's from outside): as the walk at a start and
 * every release count it. */
static __always_inline void host_add_binding(__u8 family, const union ip_addr *a)
{
	if (!CFG.host_max)
		return;
	struct host_counts *n = host_counts_of(family, a, true);
	if (n)
		__sync_fetch_and_add(&n->bindings, 1);
}

/* Undoes host_take_binding() (no binding was made after all). */
static __always_inline void host_untake_binding(__u8 family, const union ip_addr *a)
{
	if (!HOSTS_ON())
		return;
	struct host_counts *n = host_counts_of(family, a, false);
	if (!n)
		return;
	if (CFG.host_max)
		count_drop(&n->bindings);
	if (CFG.host_sess_max)
		count_drop(&n->sessions);
}

/* Counts one binding less for internal address a (it went). */
static __always_inline void host_drop_binding(__u8 family, const union ip_addr *a)
{
	if (!CFG.host_max)
		return;
	struct host_counts *n = host_counts_of(family, a, false);
	if (n)
		count_drop(&n->bindings);
}

/* The sessions of internal address a grew by d references (taken or claimed). */
static __always_inline void host_sess_add(__u8 family, const union ip_addr *a, __u64 d)
{
	if (!CFG.host_sess_max)
		return;
	struct host_counts *n = host_counts_of(family, a, true);
	if (n)
		__sync_fetch_and_add(&n->sessions, d);
}

/*
 * One reference more for internal address a, just taken: true when the address
 * held CFG.host_sess_max already (the caller drops the reference again, which
 * counts it down).
 */
static __always_inline bool host_sess_over(__u8 family, const union ip_addr *a)
{
	if (!CFG.host_sess_max)
		return false;
	struct host_counts *n = host_counts_of(family, a, true);
	return n && __sync_fetch_and_add(&n->sessions, 1) >= CFG.host_sess_max;
}

/* Internal address a holds CFG.host_sess_max sessions already (a read, no take). */
static __always_inline bool host_sess_full(__u8 family, const union ip_addr *a)
{
	if (!CFG.host_sess_max)
		return false;
	struct host_counts *n = host_counts_of(family, a, false);
	return n && *(volatile __u64 *)&n->sessions >= CFG.host_sess_max;
}

/* The sessions of internal address a shrank by d references (dropped). */
static __always_inline void host_sess_sub(__u8 family, const union ip_addr *a, __u64 d)
{
	if (!CFG.host_sess_max)
		return;
	struct host_counts *n = host_counts_of(family, a, false);
	if (n)
		count_sub(&n->sessions, d);
}

#endif
