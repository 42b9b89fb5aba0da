/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * State that outlives one daemon: traffic counters, the session sweep over
 * pinned maps, and refilling the free-port hint.
 *
 * map_ct is pinned, so its entries survive the programs that created them.
 * Sessions carry no timer: each expires by its last_seen_ns and the timeout
 * of its state, which this object's configuration gives, so expiry follows
 * the configuration of whichever daemon runs. A new daemon sweeps once at
 * start (sessions that expired while none ran go with their bindings) and
 * then paced by lib/nat/sweep.ts, in short runs (lib/nat/expire.ts).
 */
#ifndef EINAT_STATE_H
#define EINAT_STATE_H

#include <linux/pkt_cls.h>
#include "config.h"
#include "ct.h"
#include "frag.h"

/* A packet's length from the IP header on: what the byte counters count. */
static __always_inline __u64 ip_len(const struct __sk_buff *skb)
{
	return skb->len - (HAS_ETH ? sizeof(struct ethhdr) : 0);
}

/* Counts one translated packet; bytes from the IP header on. */
static __always_inline void traffic_add(struct __sk_buff *skb, bool egress, __u8 family)
{
	__u32 idx = TRAFFIC_IDX(egress, family);
	struct traffic_counter *c = bpf_map_lookup_elem(&map_traffic, &idx);
	if (!c)
		return;
	c->packets += 1;
	c->bytes += ip_len(skb);
}

/* Scratch for sess_count() and its callers: off the stack, which the paths that
 * count are close to filling. */
struct sess_scratch {
	struct ct_key k;
	struct sess_counter z;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sess_scratch);
	__uint(max_entries, 1);
} map_sess_scratch SEC(".maps");

/* This CPU's scratch for sess_count(); NULL only if the map is missing. */
static __always_inline struct sess_scratch *sess_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&map_sess_scratch, &zero);
}

/*
 * Counts one translated packet of the session of key k (CFG.session_counters;
 * nothing when off: dead code under the read-only config). v: the session,
 * when the caller has it (the lookups), whose created_s this CPU's value must
 * carry, or starts over; NULL (a packet served from the flow cache): counted
 * where the value is. An existing value is started over in place (this CPU's
 * slot): an update of the LRU table takes a free node first, and would evict
 * another session's counts to replace this one's.
 */
static __always_inline void sess_count(struct __sk_buff *skb, const struct ct_key *k,
				       const struct ct_value *v, bool egress)
{
	if (!CFG.session_counters)
		return;
	struct sess_counter *c = bpf_map_lookup_elem(&map_sess_counters, k);
	if (v && c && c->created_s != v->created_s) {
		__builtin_memset(c, 0, sizeof(*c));
		c->created_s = v->created_s;
	} else if (v && !c) {
		struct sess_scratch *s = sess_scratch();
		if (!s)
			return;
		__builtin_memset(&s->z, 0, sizeof(s->z));
		s->z.created_s = v->created_s;
		bpf_map_update_elem(&map_sess_counters, k, &s->z, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&map_sess_counters, k);
	}
	if (!c)
		return;
	__u64 len = ip_len(skb);
	if (egress) {
		c->packets_out += 1;
		c->bytes_out += len;
	} else {
		c->packets_in += 1;
		c->bytes_in += len;
	}
}

/*
 * Counts a later fragment, translated by its datagram's record (kind FRAG_OUT
 * or FRAG_IN: p's direction), in the session its first fragment was counted
 * in (einat_frag_record with the session's key), as conntrack counts the
 * datagram it reassembles. Nothing for a datagram of no session's (passed,
 * hairpinned, another protocol's, one that came in unanswered). A global
 * function: the key is built in per-CPU scratch, off the callers' stacks.
 */
__noinline int einat_frag_count(struct __sk_buff *skb, const struct packet *p, int kind)
{
	struct frag_key k;
	if (!skb || !p)
		return 0;
	frag_key_init(&k, p, kind);
	struct frag_value *v = bpf_map_lookup_elem(&map_frag, &k);
	struct sess_scratch *s = sess_scratch();
	if (!v || !v->session || !s)
		return 0;
	if (kind == FRAG_OUT) /* from the new source to the remote */
		ct_key_init(&s->k, p->family, v->l4proto, &v->addr, v->ext_port, &p->dst,
			    v->remote_port);
	else /* from the remote to the external address */
		ct_key_init(&s->k, p->family, v->l4proto, &p->dst, v->ext_port, &p->src,
			    v->remote_port);
	sess_count(skb, &s->k, NULL, kind == FRAG_OUT);
	return 0;
}

struct sweep_ctx {
	__u64 now;
	__u32 expired;
	__u32 rec_from;
	struct sweep_batch *b;
};

/*
 * bpf_loop callback over record indexes from c->rec_from: a loop the verifier
 * inlines, with a direct call per record, where bpf_for_each_map_elem makes
 * an indirect call (a retpoline here) per element. Stops past the last record.
 */
static long expire_record_at(__u64 i, void *ctx)
{
	struct sweep_ctx *c = ctx;
	__u32 idx = c->rec_from + (__u32)i;
	struct mapping_record *r = rec_get(idx);
	if (!r)
		return 1;
	if (r->sess != SESS_INLINE || (r->state & REC_STATE_MASK) != REC_LIVE ||
	    !ct_expired(&r->ct, r->l4proto, c->now))
		return 0;
	if (einat_sess_inline_end(idx))
		c->expired += 1;
	return 0;
}

/* bpf_loop callback over the batch's map_ct keys: expires those past their timeout. */
static long expire_key_at(__u64 i, void *ctx)
{
	struct sweep_ctx *c = ctx;
	if (i >= SWEEP_KEYS)
		return 1;
	struct ct_key k = c->b->keys[i]; /* ct_expire's key must not point into a map */
	struct ct_value *v = bpf_map_lookup_elem(&map_ct, &k);
	if (v && ct_expired(v, k.l4proto, c->now) && ct_expire(&k))
		c->expired += 1;
	return 0;
}

/*
 * Run by the daemon (lib/nat/expire.ts) with BPF_PROG_TEST_RUN, once per
 * piece of the sweep that map_sweep describes: the records rec_from to
 * rec_from + rec_count - 1 (their inline sessions), then the map_ct keys
 * that the daemon read in batches. Deletes the sessions past their timeout,
 * and each binding with its last session. Returns how many expired.
 */
SEC("tc")
int expire_sessions(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct sweep_batch *b = bpf_map_lookup_elem(&map_sweep, &zero);
	if (!b)
		return 0;
	struct sweep_ctx c = {
		.now = bpf_ktime_get_coarse_ns(), .expired = 0, .rec_from = b->rec_from, .b = b};
	bpf_loop(b->rec_count, expire_record_at, &c, 0);
	bpf_loop(b->keys_n, expire_key_at, &c, 0);
	return c.expired;
}

struct release_ctx {
	__u32 rec_from;
	__u32 bindings;
	__u32 sessions; /* inline ones */
};

/*
 * bpf_loop callback over record indexes from c->rec_from: frees a live record
 * as the datapath frees a binding with its last session (its outbound entry,
 * its hint bit, the count), whatever sessions it still has. A record already
 * going is another's to free, and one being claimed (REC_BUSY) its claimer's:
 * its session's expiry frees it later.
 */
static long release_record_at(__u64 i, void *ctx)
{
	struct release_ctx *c = ctx;
	__u32 idx = c->rec_from + (__u32)i;
	struct mapping_record *r = rec_get(idx);
	if (!r)
		return 1;
	__u32 inline_sess = r->sess == SESS_INLINE;
	if (einat_binding_retire(idx)) {
		c->sessions += inline_sess;
		c->bindings += 1;
	}
	return 0;
}

/*
 * Run by the daemon (lib/nat/records.ts, releaseSlotRecords) with
 * BPF_PROG_TEST_RUN over the records of an external address that left, a
 * piece at a time: the packet's first two words name the piece (first record,
 * count), and the program writes back how many bindings and inline sessions
 * it freed (words 2 and 3). Map sessions on the address are the daemon's to
 * delete.
 */
SEC("tc")
int release_records(struct __sk_buff *skb)
{
	__u32 req[2];
	if (bpf_skb_load_bytes(skb, 0, req, sizeof(req)))
		return 1;
	struct release_ctx c = {.rec_from = req[0]};
	bpf_loop(req[1], release_record_at, &c, 0);
	__u32 out[2] = {c.bindings, c.sessions};
	if (bpf_skb_store_bytes(skb, 8, out, sizeof(out), 0))
		return 1;
	return 0;
}

struct hint_ctx {
	__u32 bindings;
	__u32 sessions; /* inline ones */
	__u32 hosts_kept; /* map_hosts was carried over: its counts stand as they are */
};

static long hint_one(void *map, __u32 *key, struct mapping_record *r, void *ctx)
{
	if ((r->state & REC_STATE_MASK) != REC_LIVE)
		return 0;
	struct hint_ctx *c = ctx;
	c->bindings += 1;
	if (HOSTS_ON() && !c->hosts_kept) { /* new counts per internal address start here */
		struct host_counts *n = host_counts_of(r->family, &r->ct.int_addr, true);
		if (n && CFG.host_max)
			__sync_fetch_and_add(&n->bindings, 1);
		if (n && CFG.host_sess_max)
			__sync_fetch_and_add(&n->sessions, r->ref & ~BINDING_DYING);
	}
	if (r->sess == SESS_INLINE)
		c->sessions += 1;
	struct port_bits *b = port_bits_of(*key);
	if (b)
		port_bit_set(b, *key & 0xffff);
	return 0;
}

/*
 * Run once with BPF_PROG_TEST_RUN when the daemon has loaded its object,
 * before attaching it: marks every bound external port in this object's
 * free-port hint, which starts empty, so bindings carried over in pinned maps
 * are not probed for one by one, and counts the sessions inline in their
 * records (map_binding_count[1], for the start's log). Returns the number of
 * bindings. It leaves the live-binding count ([0]) alone: the programs that
 * share it keep it exact, where a walk under traffic would miss the bindings
 * made behind it. A count that is new starts from this number (the daemon
 * writes it: lib/state/serve.ts). So do the counts per internal address: the
 * walk makes them unless the packet's first byte says map_hosts was carried
 * over (shared with those programs, and kept exact by them the same way).
 */
SEC("tc")
int sync_port_hint(struct __sk_buff *skb)
{
	struct hint_ctx c = {};
	__u8 kept = 0;
	if (!bpf_skb_load_bytes(skb, 0, &kept, 1))
		c.hosts_kept = kept;
	bpf_for_each_map_elem(&map_records, hint_one, &c, 0);
	__u32 k = 1;
	__u64 *count = bpf_map_lookup_elem(&map_binding_count, &k);
	if (count)
		*count = c.sessions;
	return c.bindings;
}

#endif
