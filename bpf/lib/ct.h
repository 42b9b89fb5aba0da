/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sessions (one per external endpoint and remote endpoint) with TCP state and
 * timeouts. Expiry uses one BPF timer per session that is armed once and,
 * when it fires, re-arms itself for the remaining time if traffic refreshed
 * last_seen_ns meanwhile: packets only store a timestamp, they never touch
 * the timer. The last session of a binding releases the binding.
 */
#ifndef EINAT_CT_H
#define EINAT_CT_H

#include "binding.h"

#define CLOCK_MONOTONIC 1

static __always_inline __u64 ct_timeout(__u8 l4proto, __u8 state)
{
	switch (l4proto) {
	case IPPROTO_TCP:
		return state == CT_STATE_EST ? TIMEOUT_TCP_EST : TIMEOUT_TCP_TRANS;
	case IPPROTO_UDP:
		return state == CT_STATE_EST ? TIMEOUT_UDP : TIMEOUT_UDP_MIN;
	default:
		return TIMEOUT_ICMP;
	}
}

/* Derives the state from what has been seen (RFC 6146 3.5.2, RFC 7857 2.1). */
static __always_inline __u8 ct_state_of(__u8 l4proto, __u8 flags)
{
	bool both = (flags & (CT_SEEN_OUT | CT_SEEN_IN)) == (CT_SEEN_OUT | CT_SEEN_IN);
	if (l4proto != IPPROTO_TCP)
		return both ? CT_STATE_EST : CT_STATE_TRANS;
	if (!both || (flags & CT_RST) || (flags & (CT_FIN_OUT | CT_FIN_IN)) == (CT_FIN_OUT | CT_FIN_IN))
		return CT_STATE_TRANS;
	return CT_STATE_EST;
}

static __always_inline __u8 ct_flags_update(__u8 flags, bool egress, __u8 tcp_flags)
{
	flags |= egress ? CT_SEEN_OUT : CT_SEEN_IN;
	if (tcp_flags & TCP_FLAG_RST) {
		flags |= CT_RST;
	} else {
		flags &= ~CT_RST; /* traffic resumed after a reset (RFC 7857 2.1) */
		if (tcp_flags & TCP_FLAG_SYN) {
			/* a new SYN starts a new connection on this 5-tuple */
			flags &= ~(CT_FIN_OUT | CT_FIN_IN);
			flags |= egress ? CT_SYN_OUT : CT_SYN_IN;
		}
		if (tcp_flags & TCP_FLAG_FIN)
			flags |= egress ? CT_FIN_OUT : CT_FIN_IN;
	}
	return flags;
}

static int ct_timer_cb(void *map, struct ct_key *key, struct ct_value *val)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 deadline = val->last_seen_ns + ct_timeout(key->l4proto, val->state);
	if (deadline > now) {
		bpf_timer_start(&val->timer, deadline - now, 0);
		return 0;
	}
	binding_put(key->family, key->l4proto, &key->ext_addr, key->ext_port);
	bpf_map_delete_elem(map, key);
	stat_inc(STAT_EXPIRED_SESSION);
	return 0;
}

static __always_inline void ct_key_init(struct ct_key *k, __u8 family, __u8 l4proto,
					const union ip_addr *ext_addr, __be16 ext_port,
					const union ip_addr *remote_addr, __be16 remote_port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = family;
	k->l4proto = l4proto;
	k->ext_port = ext_port;
	k->remote_port = remote_port;
	k->ext_addr = *ext_addr;
	k->remote_addr = *remote_addr;
}

/* Refreshes the session; returns false when it does not exist. */
static __always_inline bool ct_refresh(struct ct_value *v, __u8 l4proto, bool egress,
				       __u8 tcp_flags)
{
	__u8 flags = ct_flags_update(v->flags, egress, tcp_flags);
	if (flags != v->flags) {
		v->flags = flags;
		v->state = ct_state_of(l4proto, flags);
	}
	__u64 now = bpf_ktime_get_coarse_ns();
	if (now != v->last_seen_ns)
		v->last_seen_ns = now;
	return true;
}

/*
 * Finds or creates the session; creation takes a binding reference. A global
 * function: verified once for every caller.
 * Returns 0, or a STAT_DROP_* reason.
 */
__noinline int einat_ct_touch(const struct ct_key *k, const struct binding_value *intern,
			      int egress, __u8 tcp_flags)
{
	if (!k || !intern)
		return STAT_DROP_UNTRANSLATABLE;
	struct ct_value *v = bpf_map_lookup_elem(&map_ct, k);
	if (v) {
		ct_refresh(v, k->l4proto, egress, tcp_flags);
		return 0;
	}

	struct ct_value nv;
	__builtin_memset(&nv, 0, sizeof(nv));
	nv.int_addr = intern->addr;
	nv.int_port = intern->port;
	nv.flags = ct_flags_update(0, egress, tcp_flags);
	nv.state = ct_state_of(k->l4proto, nv.flags);
	nv.created_ns = nv.last_seen_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&map_ct, k, &nv, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&map_ct, k);
		if (v) { /* created meanwhile on another CPU */
			ct_refresh(v, k->l4proto, egress, tcp_flags);
			return 0;
		}
		return STAT_DROP_CT_FULL;
	}
	v = bpf_map_lookup_elem(&map_ct, k);
	if (!v)
		return STAT_DROP_CT_FULL;
	struct binding_key rkey;
	binding_key_init(&rkey, 0, k->family, k->l4proto, &k->ext_addr, k->ext_port);
	struct binding_value *rb = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!rb) { /* the binding expired meanwhile */
		bpf_map_delete_elem(&map_ct, k);
		return STAT_DROP_UNTRANSLATABLE;
	}
	__sync_fetch_and_add(&rb->ref, 1);
	/*
	 * Arming can fail: the kernel allocates the timer without sleeping or
	 * (6.18) without taking locks, which fails now and then under load
	 * (measured: one new TCP connection in ten at a few thousand per
	 * second). Dropping the packet would stall the connection for a SYN
	 * retransmission, so the session is kept and marked; the daemon's
	 * sweep (arm_pending, every 2 s) arms it.
	 */
	long err = bpf_timer_init(&v->timer, &map_ct, CLOCK_MONOTONIC);
	if (!err)
		err = bpf_timer_set_callback(&v->timer, ct_timer_cb);
	if (!err)
		err = bpf_timer_start(&v->timer, ct_timeout(k->l4proto, nv.state), 0);
	if (err) {
		v->no_timer = 1;
		stat_inc(STAT_TIMER_DEFERRED);
	}
	stat_inc(STAT_NEW_SESSION);
	return 0;
}

#endif
