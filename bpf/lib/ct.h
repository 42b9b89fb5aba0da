/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sessions (one per external endpoint and remote endpoint) with TCP state and
 * timeouts. A session expires by its timestamp: packets only store
 * last_seen_ns, and a session past its timeout counts as gone wherever it is
 * looked at. The daemon's sweep (expire_sessions in state.h, every second or so)
 * deletes expired sessions; the last session of a binding releases the
 * binding. No per-session timer: timers cost 1.2-1.7 us of each new mapping
 * and a 192-byte allocation each. A binding's first session lives in its
 * mapping record (lib/records.h, made with it); the others are map_ct entries,
 * and ct_find() looks in both.
 */
#ifndef EINAT_CT_H
#define EINAT_CT_H

#include "binding.h"
#include "log.h"
#include "clock.h"

#define NSEC_PER_SEC 1000000000ULL

/*
 * The clock (clock_now()) as of this packet: read on first use and kept in the
 * packet, so the paths a packet takes read it once between them.
 */
static __always_inline __u64 packet_now(struct packet *p)
{
	if (!p->now)
		p->now = clock_now();
	return p->now;
}

static __always_inline __u64 ct_timeout(__u8 l4proto, __u8 state)
{
	switch (l4proto) {
	case IPPROTO_TCP:
		return state == CT_STATE_EST	   ? TIMEOUT_TCP_EST
		       : state == CT_STATE_CLOSING ? TIMEOUT_TCP_CLOSING
						   : TIMEOUT_TCP_TRANS;
	case IPPROTO_UDP:
		return state == CT_STATE_EST ? TIMEOUT_UDP : TIMEOUT_UDP_MIN;
	default:
		return TIMEOUT_ICMP;
	}
}

/* A FIN went each way: the connection is closed. */
static __always_inline bool ct_closed(__u8 flags)
{
	return (flags & (CT_FIN_OUT | CT_FIN_IN)) == (CT_FIN_OUT | CT_FIN_IN);
}

/*
 * Derives the state from what has been seen (RFC 6146 3.5.2, RFC 7857 2.1).
 * A TCP connection opened by a SYN is established once a SYN came the other
 * way too (the SYN-ACK, or the other SYN of a simultaneous open), not on any
 * answer: a SYN answered by a bare ACK (or by anyone who can put the remote's
 * address on a packet) stays transitory. A connection first seen mid-stream
 * (no SYN either way: state lost, or a host resuming after the NAT restarted
 * without its maps) is established once seen both ways.
 */
static __always_inline __u8 ct_state_of(__u8 l4proto, __u8 flags)
{
	bool both = (flags & (CT_SEEN_OUT | CT_SEEN_IN)) == (CT_SEEN_OUT | CT_SEEN_IN);
	__u8 syn = flags & (CT_SYN_OUT | CT_SYN_IN);
	if (l4proto != IPPROTO_TCP)
		return both ? CT_STATE_EST : CT_STATE_TRANS;
	if ((flags & CT_RST) || ct_closed(flags))
		return CT_STATE_CLOSING;
	if (!both || (syn && syn != (CT_SYN_OUT | CT_SYN_IN)))
		return CT_STATE_TRANS;
	return CT_STATE_EST;
}

/*
 * What a packet does to a session's flags, known before they are read: the
 * bits it keeps and sets, and whether it starts the 5-tuple anew should it be
 * closed. Worked out once, outside einat_ct_refresh's compare-and-swap loop,
 * whose branches the verifier walks on every turn.
 */
struct ct_flags_change {
	__u8 keep;
	__u8 set;
	__u8 reopen; /* enum ct_reopen */
};

/* When a SYN starts the 5-tuple anew. */
enum ct_reopen {
	CT_REOPEN_NONE = 0,
	/* the internal host's SYN: after a close (a FIN each way) or a reset */
	CT_REOPEN_CLOSED = 1,
	/* a remote's SYN: after a close only. A reset a remote sends cannot be told
	 * from one anyone who can put its address on a packet sends (no sequence
	 * numbers are kept), and a reset then a SYN from outside would otherwise
	 * turn an established connection into an opening one for good. */
	CT_REOPEN_FINISHED = 2,
};

static __always_inline struct ct_flags_change ct_change_of(bool egress, __u8 tcp_flags)
{
	struct ct_flags_change c = {.keep = 0xff, .set = egress ? CT_SEEN_OUT : CT_SEEN_IN};
	/* A remote's bare SYN is not the remote seen: a spoofed one, sent again, would
	 * otherwise establish the session its first made the host answer (its SYN-ACK).
	 * Seen is what follows (the SYN-ACK of a simultaneous open, the handshake's ACK). */
	if (!egress && (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN)
		c.set = 0;
	/* A SYN that opens the 5-tuple again once it was closed or reset: what
	 * was seen of the old connection goes, so the new one is transitory until
	 * answered (RFC 6146 3.5.2), not established by the old one's answers. */
	if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN)
		c.reopen = egress ? CT_REOPEN_CLOSED : CT_REOPEN_FINISHED;
	if (tcp_flags & TCP_FLAG_RST) {
		c.set |= CT_RST;
	} else {
		c.keep &= ~CT_RST; /* traffic resumed after a reset (RFC 7857 2.1) */
		if (tcp_flags & TCP_FLAG_SYN) {
			/* a new SYN starts a new connection on this 5-tuple */
			c.keep &= ~(CT_FIN_OUT | CT_FIN_IN);
			c.set |= egress ? CT_SYN_OUT : CT_SYN_IN;
		}
		if (tcp_flags & TCP_FLAG_FIN)
			c.set |= egress ? CT_FIN_OUT : CT_FIN_IN;
	}
	return c;
}

static __always_inline __u8 ct_flags_apply(__u8 flags, struct ct_flags_change c)
{
	bool closed = ct_closed(flags);
	if ((c.reopen == CT_REOPEN_CLOSED && (closed || (flags & CT_RST))) ||
	    (c.reopen == CT_REOPEN_FINISHED && closed))
		flags &= CT_HAIRPIN;
	return (flags & c.keep) | c.set;
}

static __always_inline __u8 ct_flags_update(__u8 flags, bool egress, __u8 tcp_flags)
{
	return ct_flags_apply(flags, ct_change_of(egress, tcp_flags));
}

/*
 * A new session's flags. A session is made by what its internal host sends
 * (einat_ct_touch's callers; a remote's first packet makes none, ingress_l4):
 * a SYN-ACK leaving answers the remote's SYN, which came before the session.
 * The remote counts as seen only once its next packet (the handshake's ACK)
 * comes: until then the connection is opening, so SYNs from addresses that
 * never answer (spoofed) hold a session timeout_tcp_opening, not 2h4m.
 */
static __always_inline __u8 ct_new_flags(bool egress, __u8 tcp_flags)
{
	__u8 f = ct_flags_update(0, egress, tcp_flags);
	if (egress && (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) ==
			      (TCP_FLAG_SYN | TCP_FLAG_ACK))
		f |= CT_SYN_IN;
	return f;
}

/* A new session's value as of now, its internal endpoint aside. */
static __always_inline void ct_first(struct ct_value *v, __u8 l4proto, bool egress, __u8 tcp_flags,
				     __u64 now)
{
	__builtin_memset(v, 0, sizeof(*v));
	v->flags = ct_new_flags(egress, tcp_flags);
	v->state = ct_state_of(l4proto, v->flags);
	v->last_seen_ns = now;
	v->created_s = now / NSEC_PER_SEC;
}

/* The session maps to the internal endpoint intern. */
static __always_inline bool ct_names(const struct ct_value *v, const struct endpoint *intern)
{
	return v->int_port == intern->port && addr_eq(&v->int_addr, &intern->addr);
}

/* Past its timeout at now (a timestamp ahead of now is not). */
static __always_inline bool ct_expired(const struct ct_value *v, __u8 l4proto, __u64 now)
{
	return (__s64)(now - v->last_seen_ns) > (__s64)ct_timeout(l4proto, v->state);
}

/* Record ri holds the session of key k inline. A global function: verified once. */
__noinline int einat_sess_inline_at(__u32 ri, const struct ct_key *k)
{
	struct mapping_record *r = rec_get(ri);
	return r && k && r->sess == SESS_INLINE && r->remote_port == k->remote_port &&
	       addr_eq(&r->remote_addr, &k->remote_addr);
}

/*
 * The record index of the binding whose inline session (its first, lib/records.h)
 * is the session of key k, or -1. A global function: verified once.
 */
__noinline int einat_sess_inline(const struct ct_key *k)
{
	if (!k)
		return -1;
	int ri = einat_binding_at(k->family, k->l4proto, &k->ext_addr, k->ext_port);
	return ri >= 0 && einat_sess_inline_at(ri, k) ? ri : -1;
}

/*
 * Ends the inline session of record ri and drops its binding reference. Only
 * the caller whose compare-and-swap succeeds drops it: the sweep and the
 * datapath may meet on one session. A global function: verified once.
 */
__noinline int einat_sess_inline_end(__u32 ri)
{
	struct mapping_record *r = rec_get(ri);
	if (!r || __sync_val_compare_and_swap(&r->sess, SESS_INLINE, SESS_NONE) != SESS_INLINE)
		return 0;
	epoch_bump();
	einat_binding_put(ri);
	stat_inc(STAT_EXPIRED_SESSION);
	return 1;
}

/* The inline session of record ri, which holds it; NULL when the record is gone. */
static __always_inline struct ct_value *rec_sess(__u32 ri)
{
	struct mapping_record *r = rec_get(ri);
	if (!r)
		return NULL;
	/* opaque to clang, which would take r->ct's address before the NULL test (the
	 * verifier refuses arithmetic on a pointer maybe NULL) */
	asm volatile("" : "+r"(r));
	return &r->ct;
}

/*
 * The session of key k: the inline one of its binding's record, or its map_ct
 * entry; NULL when there is none.
 */
static __always_inline struct ct_value *ct_find(const struct ct_key *k)
{
	int ri = einat_sess_inline(k);
	if (ri >= 0)
		return rec_sess(ri);
	return bpf_map_lookup_elem(&map_ct, k);
}

/* ct_find() where the binding's record ri is known (k's external endpoint's). */
static __always_inline struct ct_value *ct_find_at(__u32 ri, const struct ct_key *k)
{
	if (einat_sess_inline_at(ri, k))
		return rec_sess(ri);
	return bpf_map_lookup_elem(&map_ct, k);
}

/*
 * Deletes a session and drops its binding reference. Only the caller whose
 * delete succeeds releases the reference: the sweep and the datapath may
 * meet on one session. k must not point into the map.
 */
static __always_inline bool ct_expire(const struct ct_key *k)
{
	int ri = einat_sess_inline(k);
	if (ri >= 0)
		return einat_sess_inline_end(ri);
	if (bpf_map_delete_elem(&map_ct, k))
		return false;
	epoch_bump();
	binding_put(k->family, k->l4proto, &k->ext_addr, k->ext_port);
	stat_inc(STAT_EXPIRED_SESSION);
	return true;
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

/* ct_value's int_port, state and flags: one aligned word (einat_ct_refresh). */
union ct_flags_word {
	__u32 w;
	struct {
		__be16 int_port;
		__u8 state;
		__u8 flags;
	} f;
};
_Static_assert(offsetof(struct ct_value, state) == offsetof(struct ct_value, int_port) + 2 &&
		       offsetof(struct ct_value, flags) ==
			       offsetof(struct ct_value, int_port) + 3 &&
		       offsetof(struct ct_value, int_port) % 4 == 0,
	       "int_port, state and flags share one word");

/*
 * One try of einat_ct_refresh's change of a session's flags and state,
 * `change` packing a struct ct_flags_change (keep, set, reopen: bits 0-17) and
 * whether the session starts over (bit 18): 1 when done (written, or nothing to change), 0
 * when another CPU changed the word meanwhile. A global function: its
 * branches are verified once, not once per try.
 */
__noinline int einat_ct_flags_try(struct ct_value *v, __u32 l4proto, __u32 change)
{
	if (!v)
		return 1;
	struct ct_flags_change c = {
		.keep = change & 0xff, .set = (change >> 8) & 0xff, .reopen = (change >> 16) & 3};
	__u32 *word = (__u32 *)&v->int_port;
	union ct_flags_word o, n;
	o.w = *(volatile __u32 *)word;
	n = o;
	/* restarted: what was seen of the expired session goes (the key's property stays) */
	n.f.flags = ct_flags_apply(change & (1 << 18) ? o.f.flags & CT_HAIRPIN : o.f.flags, c);
	if (n.f.flags == o.f.flags)
		return 1;
	n.f.state = ct_state_of(l4proto, n.f.flags);
	return __sync_val_compare_and_swap(word, o.w, n.w) == o.w;
}

/*
 * Refreshes the session at now (clock_now()). One that expired
 * and was not swept yet starts over as a new session on the same binding,
 * which it still holds a reference on. A global function: the TCP flags'
 * branches are verified once, not on every path of its four callers
 * (~4,300 processed instructions of egress verification, ~3,600 of ingress).
 */
__noinline int einat_ct_refresh(struct ct_value *v, __u32 l4proto, __u32 egress, __u32 tcp_flags,
				__u64 now)
{
	if (!v)
		return 0;
	bool restart = ct_expired(v, l4proto, now);
	if (restart) {
		v->created_s = now / NSEC_PER_SEC;
		stat_inc(STAT_SESSION_RESTARTED);
	}
	/*
	 * The flags and the state they give change together, by compare-and-swap
	 * of the word they share with int_port: the two directions of a session
	 * run on different CPUs, and a FIN each way at once must not lose one
	 * (a closed connection held as established). A few tries: a change of
	 * the same session on another CPU at that moment is rare. Most packets
	 * change nothing, seen before any try.
	 */
	struct ct_flags_change c = ct_change_of(egress, tcp_flags);
	__u8 f = v->flags;
	if (restart || ct_flags_apply(f, c) != f) {
		__u32 change =
			c.keep | (__u32)c.set << 8 | (__u32)c.reopen << 16 | (__u32)restart << 18;
		for (int i = 0; i < 4; i++)
			if (einat_ct_flags_try(v, l4proto, change))
				break;
	}
	if (now != v->last_seen_ns)
		v->last_seen_ns = now;
	return 0;
}

/* How einat_ct_touch() is to go about the session. */
enum ct_touch_mode {
	CT_FIND = 0, /* it may exist: look it up first */
	/* insert first; the caller holds a binding reference for the new session
	 * (einat_binding_create takes it with the binding) */
	CT_NEW_REF_HELD = 2,
};

/* einat_ct_touch() with CT_NEW_REF_HELD: the session existed (another CPU made
 * it, with a reference of its own); the caller releases the one it holds. */
#define CT_REF_UNUSED (-1)

/*
 * Finds or creates the session; creation takes a binding reference, unless
 * the caller holds one for it (CT_NEW_REF_HELD), which the session then keeps.
 * A session made meanwhile by another CPU fails the insert and is then
 * looked up. The packet p gives
 * the TCP flags and the time. A global function: verified once for every
 * caller.
 * Returns 0; CT_REF_UNUSED (CT_NEW_REF_HELD: the session existed; the caller
 * releases its reference with binding_put); or a STAT_DROP_* reason (with
 * CT_NEW_REF_HELD the reference is still the caller's to release), among them
 * STAT_DROP_HOST_CT_FULL: the host's bindings hold CFG.host_sess_max sessions.
 */
__noinline int einat_ct_touch(const struct ct_key *k, const struct endpoint *intern,
			      struct packet *p, int egress, int mode)
{
	if (!k || !intern || !p)
		return STAT_DROP_UNTRANSLATABLE;
	__u64 now = packet_now(p);
	__u8 tcp_flags = p->tcp_flags;
	/* CT_NEW_REF_HELD looks too: the binding another CPU made holds the session of the
	 * packet that made it (an inline one), maybe this very session. */
	struct ct_value *v = ct_find(k);
	if (v && (mode == CT_FIND || ct_names(v, intern))) {
		einat_ct_refresh(v, k->l4proto, egress, tcp_flags, now);
		return mode == CT_NEW_REF_HELD ? CT_REF_UNUSED : 0;
	}

	/* A host at session_max_per_host: refused before the insert, which a host spraying
	 * new remotes would otherwise make and undo for every packet (the count is checked
	 * again, exactly, when the reference is taken). */
	if (mode == CT_FIND && !p->own && host_sess_full(k->family, &intern->addr))
		return STAT_DROP_HOST_CT_FULL;

	struct ct_value nv;
	__builtin_memset(&nv, 0, sizeof(nv));
	nv.int_addr = intern->addr;
	nv.int_port = intern->port;
	nv.flags = ct_new_flags(egress, tcp_flags);
	nv.state = ct_state_of(k->l4proto, nv.flags);
	nv.last_seen_ns = now;
	nv.created_s = now / NSEC_PER_SEC;
	if (bpf_map_update_elem(&map_ct, k, &nv, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&map_ct, k);
		if (!v) /* the table is full (a reference held stays the caller's) */
			return STAT_DROP_CT_FULL;
		if (mode == CT_NEW_REF_HELD && !ct_names(v, intern)) {
			/* Left by an earlier binding of this external endpoint that was
			 * deleted without its sessions (from user space): no binding held
			 * the port when this one claimed it. It starts over as this
			 * binding's session and keeps the reference held for it. */
			*v = nv;
			stat_inc(STAT_NEW_SESSION);
			if (log_on(LOG_DEBUG))
				einat_log_session(k, intern, egress, 0);
			return 0;
		}
		/* It existed after all, or another CPU made it meanwhile. */
		einat_ct_refresh(v, k->l4proto, egress, tcp_flags, now);
		/* Another CPU made it on finding this new binding, and takes a
		 * reference of its own: the one held here is not needed. Dropped
		 * with binding_put, since that CPU's may fail to come (ref_get
		 * refuses a dying count), and then the binding must go. */
		return mode == CT_NEW_REF_HELD ? CT_REF_UNUSED : 0;
	}
	if (mode == CT_NEW_REF_HELD) {
		stat_inc(STAT_NEW_SESSION);
		if (log_on(LOG_DEBUG))
			einat_log_session(k, intern, egress, 0);
		return 0;
	}
	/*
	 * Then the reference. Taking it first would leak the binding when the
	 * insert fails while its last other session expires: that expiry would
	 * not see the last reference, and this path has no stack left to delete
	 * the binding itself.
	 */
	int ri = einat_binding_at(k->family, k->l4proto, &k->ext_addr, k->ext_port);
	struct mapping_record *rb = ri >= 0 ? rec_get(ri) : NULL;
	/* The reference counts for the host (held to session_max_per_host) before it is
	 * taken, as every reference does (lib/hosts.h): a retire of the binding meanwhile
	 * subtracts it with the rest. */
	bool over = rb && host_sess_over(k->family, &intern->addr);
	if (!rb || !ref_get(&rb->ref)) { /* the binding expired meanwhile */
		if (rb)
			host_sess_sub(k->family, &intern->addr, 1);
		bpf_map_delete_elem(&map_ct, k);
		return STAT_DROP_UNTRANSLATABLE;
	}
	if (rb->ct.int_port != intern->port || !addr_eq(&rb->ct.int_addr, &intern->addr)) {
		/* the port went to another endpoint since: the reference, counted for this
		 * host and not the record's, goes back without touching the record's count */
		einat_binding_unref(ri, 1);
		host_sess_sub(k->family, &intern->addr, 1);
		bpf_map_delete_elem(&map_ct, k);
		return STAT_DROP_UNTRANSLATABLE;
	}
	if (over && !p->own) { /* the host is at its limit (the router is held to none, as
				* its inbound pings' bindings): the reference goes, counted down */
		einat_binding_put(ri);
		bpf_map_delete_elem(&map_ct, k);
		return STAT_DROP_HOST_CT_FULL;
	}
	stat_inc(STAT_NEW_SESSION);
	if (log_on(LOG_DEBUG))
		einat_log_session(k, intern, egress, 0);
	return 0;
}

#endif
