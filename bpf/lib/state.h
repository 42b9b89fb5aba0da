/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * State that outlives one daemon: traffic counters, re-arming session
 * timers over pinned maps, and refilling the free-port hint.
 *
 * map_ct is pinned, so its entries (and their armed BPF timers) survive the
 * programs that created them: an armed timer holds a reference to the program
 * whose callback it runs, and the map's pin keeps the timers alive. A new
 * daemon runs rearm_timers once (BPF_PROG_TEST_RUN) after attaching: every
 * session's timer is switched to this object's callback (and its timeouts)
 * and restarted for the time left, so expiry follows the new configuration
 * and the previous programs are released. Entries whose timer was never
 * armed (copied by user space) get one; entries overdue fire at once.
 */
#ifndef EINAT_STATE_H
#define EINAT_STATE_H

#include <linux/pkt_cls.h>
#include "config.h"
#include "ct.h"

#define EBUSY 16

/* Counts one translated packet; bytes from the IP header on. */
static __always_inline void traffic_add(struct __sk_buff *skb, bool egress, __u8 family)
{
	__u32 idx = TRAFFIC_IDX(egress, family);
	struct traffic_counter *c = bpf_map_lookup_elem(&map_traffic, &idx);
	if (!c)
		return;
	c->packets += 1;
	c->bytes += skb->len - (HAS_ETH ? sizeof(struct ethhdr) : 0);
}

static long rearm_one(void *map, struct ct_key *key, struct ct_value *val, void *ctx)
{
	long r = bpf_timer_init(&val->timer, &map_ct, CLOCK_MONOTONIC);
	if (r && r != -EBUSY)
		return 0;
	if (bpf_timer_set_callback(&val->timer, ct_timer_cb))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 deadline = val->last_seen_ns + ct_timeout(key->l4proto, val->state);
	if (bpf_timer_start(&val->timer, deadline > now ? deadline - now : 1, 0))
		return 0;
	val->no_timer = 0;
	*(__u32 *)ctx += 1;
	return 0;
}

static long arm_one_pending(void *map, struct ct_key *key, struct ct_value *val, void *ctx)
{
	if (!val->no_timer)
		return 0;
	return rearm_one(map, key, val, ctx);
}

/*
 * Run periodically with BPF_PROG_TEST_RUN: arms the sessions whose timer
 * could not be armed when they were created; returns how many.
 */
SEC("tc")
int arm_pending(struct __sk_buff *skb)
{
	__u32 n = 0;
	bpf_for_each_map_elem(&map_ct, arm_one_pending, &n, 0);
	return n;
}

static long hint_one(void *map, struct binding_key *key, struct binding_value *val, void *ctx)
{
	if (key->flags & BINDING_ORIG)
		return 0;
	struct port_bits *b = port_bits_get(key->family, proto_idx(key->l4proto), &key->addr, true);
	if (!b)
		return 0;
	port_bit_set(b, bpf_ntohs(key->port));
	*(__u32 *)ctx += 1;
	return 0;
}

/*
 * Run once with BPF_PROG_TEST_RUN when the daemon starts: marks every bound
 * external port in this object's free-port hint (lib/binding.h), which
 * starts empty, so bindings carried over in pinned maps are not probed for
 * one by one. Returns the number of bindings marked.
 */
SEC("tc")
int sync_port_hint(struct __sk_buff *skb)
{
	__u32 n = 0;
	bpf_for_each_map_elem(&map_binding, hint_one, &n, 0);
	return n;
}

/* Run once with BPF_PROG_TEST_RUN; returns the number of sessions re-armed. */
SEC("tc")
int rearm_timers(struct __sk_buff *skb)
{
	__u32 n = 0;
	bpf_for_each_map_elem(&map_ct, rearm_one, &n, 0);
	return n;
}

#endif
