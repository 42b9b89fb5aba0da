/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A per-CPU cache of established flows, both directions (in the manner of
 * Open vSwitch's exact-match cache): the slot of a packet's 5-tuple
 * remembers what the session gave it, the external endpoint on egress, the
 * internal one on ingress, so a packet that hits needs no hash lookup at all.
 *
 * A slot is filled only after the session was found and checked, and it is
 * trusted only
 * - while the mapping epoch (epoch.h) is the one read before those lookups:
 *   any deleted session or binding moves it, so a port that another host may
 *   claim next is never served from a slot;
 * - for flow_fresh() after the session was last refreshed through it:
 *   then the packet takes the lookups again and refreshes the session, which
 *   so stays current to within that time (at most a quarter of the shortest
 *   timeout, and a second);
 * - for packets that cannot change the session's state: TCP with SYN, FIN
 *   or RST always takes the lookups (a SYN without looking in its set,
 *   flow_slot_blind()).
 */
#ifndef EINAT_FLOWCACHE_H
#define EINAT_FLOWCACHE_H

#include "parse.h"
#include "config.h"
#include "epoch.h"
#include "clock.h"

/*
 * One slot is one cache line: 64 bytes, so a slot that is cold costs one
 * miss. The epoch and the refresh time are kept in 32 bits: a slot is
 * trusted only within flow_fresh() (CFG.flow_fresh_ns, at most a second) of
 * being filled, so neither can come round in that time (2^32 deletions;
 * 2^32 units of 1,024 ns are 73 minutes). For a slot filled 73 minutes
 * earlier to look fresh, its epoch must match too: no session or binding
 * was deleted meanwhile (short of 2^32 deletions), so what it holds is
 * still what the session says.
 */
struct flow_entry {
	union ip_addr src;
	union ip_addr dst;
	union ip_addr to_addr; /* egress: the external address; ingress: the internal one */
	__be16 sport;
	__be16 dport;
	__be16 to_port;
	__u8 l4proto;
	__u8 kind; /* the family (4 or 6) | FLOW_EGRESS [| FLOW_PASS]; 0: empty */
	__u32 epoch; /* the mapping epoch's low 32 bits when filled */
	__u32 refreshed; /* when the session was last refreshed through it: ns >> FLOW_TIME_SHIFT */
};

#define FLOW_EGRESS 0x80
#define FLOW_PASS 0x40 /* the flow passes as it is (flow_pass_cached) */
#define FLOW_TIME_SHIFT 10

_Static_assert(sizeof(struct flow_entry) == 64, "a flow-cache slot is one cache line");

/*
 * 1 << CFG.flow_cache_bits slots per CPU, each CPU's in a block of its own
 * (the loader sizes the map: possible CPUs x slots). A plain array, not a
 * per-CPU one: its values are one allocation (BPF_F_MMAPABLE makes it start
 * on a page, so every slot is one line), where a per-CPU array allocates
 * each slot apart when the map is created (~8 ms more at load for 16,384).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct flow_entry);
	__uint(max_entries, 1 << 14);
} map_flow_cache SEC(".maps");

/* The slot holds this packet's flow, of kind `kind` (whether it may be trusted or not). */
static __always_inline bool flow_hit_as(const struct flow_entry *e, const struct packet *p,
					const __u8 family, __u8 kind)
{
	if (e->kind != kind || e->l4proto != p->l4proto || e->sport != p->sport ||
	    e->dport != p->dport)
		return false;
	if (family == 4) /* an IPv4 address is the first word */
		return e->src.v4 == p->src.v4 && e->dst.v4 == p->dst.v4;
	return addr_eq(&e->src, &p->src) && addr_eq(&e->dst, &p->dst);
}

/* The slot holds this packet's translated flow (whether it may be trusted or not). */
static __always_inline bool flow_hit(const struct flow_entry *e, const struct packet *p,
				     const __u8 family, bool egress)
{
	return flow_hit_as(e, p, family, family | (egress ? FLOW_EGRESS : 0));
}

/* A flow's hash: both addresses, both ports, the protocol and the direction. */
static __always_inline __u32 flow_hash(const struct packet *p, const __u8 family, bool egress)
{
	__u32 h = p->src.all[0] ^ p->dst.all[0];
	if (family == 6) {
		h ^= p->src.all[1] ^ p->src.all[2] ^ p->src.all[3];
		h ^= p->dst.all[1] ^ p->dst.all[2] ^ p->dst.all[3];
	}
	h ^= ((__u32)p->sport << 16) ^ p->dport ^ p->l4proto ^ (egress ? 0x5a5a0000 : 0);
	return h * 0x9e3779b1U;
}

/* The index of the first way of a flow's set, in this CPU's block. */
static __always_inline __u32 flow_set(__u32 h)
{
	__u32 bits = CFG.flow_cache_bits & 31;
	__u32 idx = (h >> ((32 - bits) & 31)) & ~1U;
	return idx | (bpf_get_smp_processor_id() << bits); /* this CPU's block */
}

/*
 * The slot of a packet's flow. The cache is 2-way set associative: a flow
 * may sit in either slot of its set, two adjacent lines (bench 4a, 8,000
 * live flow directions in 16,384 slots: ~10 % of the packets found their
 * slot taken by another flow when each flow had one slot, none with two).
 * Returns the way that holds the flow (*hit set), or the one to fill: an
 * empty way, else the one refreshed longer ago by the datapath's clock (a
 * tick's resolution; a tie takes the first way). A served flow is refilled
 * every flow_fresh(), so that is the least recently used to within a second.
 * `family` is the caller's constant where it has one (the per-family paths):
 * an IPv4 packet's address words past the first are zero (parse.h), so its
 * hash and compare read one word per address.
 */
static __always_inline struct flow_entry *flow_slot(const struct packet *p, const __u8 family,
						    bool egress, bool *hit)
{
	__u32 idx = flow_set(flow_hash(p, family, egress));
	*hit = false;
	struct flow_entry *a = bpf_map_lookup_elem(&map_flow_cache, &idx);
	if (!a)
		return NULL;
	if (flow_hit(a, p, family, egress)) {
		*hit = true;
		return a;
	}
	idx |= 1;
	struct flow_entry *b = bpf_map_lookup_elem(&map_flow_cache, &idx);
	if (!b)
		return a;
	if (flow_hit(b, p, family, egress)) {
		*hit = true;
		return b;
	}
	if (!a->kind)
		return a;
	if (!b->kind)
		return b;
	return (__s32)(a->refreshed - b->refreshed) <= 0 ? a : b;
}

/*
 * The slot to fill for a flow that no slot may serve now (a TCP SYN, below),
 * chosen without comparing its set: for a new connection that line is cold
 * (~150-250 ns a read on the hosts of the benchmarks), and no branch waits
 * for it. The fill's first store still waits for the line's page walk where
 * the translation is cold, so the egress SYN reads the line early, beside its
 * other reads (einat.bpf.c, egress_established; stop 46: -60 ns a SYN one at
 * a time; the same for an inbound SYN-ACK showed no gain). Always the first
 * way, which the flow's next packet reads first (the second way, or one
 * picked by a hash bit, made that packet read the cold first line half of
 * the time: ~+70 ns). The flow may sit in
 * the second way too, filled earlier: a copy trusted only while the epoch
 * stays, so it holds what this fill holds (the top of this file). The flow
 * the first way held is evicted, whether it was refreshed longer ago or not.
 */
static __always_inline struct flow_entry *flow_slot_blind(const struct packet *p, const __u8 family,
							  bool egress)
{
	__u32 idx = flow_set(flow_hash(p, family, egress));
	return bpf_map_lookup_elem(&map_flow_cache, &idx);
}

/*
 * A burst of new flows. A new flow's egress packet reads two cold lines, one
 * after the other: its set here, to find it is not cached, then its source's
 * outbound line (records.h), to find whether the source has a binding. In a
 * flood of new UDP flows (bench 2b, on the AMD EPYC of stops 36-44) each read
 * waits ~500 ns, 27 % and 24 % of the program's samples, and with the code
 * cold between packets the CPU does not run ahead from one to the other. So
 * while this CPU's egress packets miss often (FLOW_MISS_BURST misses this
 * jiffy, half the last jiffy's carried over), a UDP or ICMP packet starts
 * reading its source's outbound line before its set, and the records a new
 * mapping of its would claim (binding.h, einat_new_flow_prefetch()), and the
 * waits overlap: ~150-200 ns less a new flow in that flood. The count lives
 * in the clock's per-CPU line, which every packet reads anyway: a packet its
 * slot serves pays a compare, never a store. Without a burst no packet reads
 * the line early, so an established flow's packets, which its slot serves
 * without the outbound index, do not carry that line too.
 */
#define FLOW_MISS_BURST 8

/* This CPU's egress packets miss often: see above. After clock_now(). */
static __always_inline bool flow_miss_burst(void)
{
	struct clock_cache *c = clock_cache_get();
	return c && c->misses >= FLOW_MISS_BURST && c->jiffies - c->miss_jiffies <= 1;
}

/* Counts an egress flow-cache miss (flow_miss_burst()). After clock_now(). */
static __always_inline void flow_miss_count(void)
{
	struct clock_cache *c = clock_cache_get();
	if (!c)
		return;
	__u64 d = c->jiffies - c->miss_jiffies;
	c->misses = d == 0 ? c->misses + 1 : d == 1 ? (c->misses >> 1) + 1 : 1;
	c->miss_jiffies = c->jiffies;
}

/* A TCP SYN: it changes the session's state, so no slot serves it (flow_trusted). */
static __always_inline bool flow_syn(const struct packet *p)
{
	return p->l4proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_SYN);
}

/*
 * How long a slot may stand in for the session: a quarter of the shortest
 * timeout, at most a second. Computed by the loader (lib/nat/codec.ts,
 * flowFreshNs), not per packet.
 */
static __always_inline __u32 flow_fresh(void)
{
	return CFG.flow_fresh_ns >> FLOW_TIME_SHIFT;
}

/* A packet that may change its session's state: no slot serves it (TCP with SYN, FIN or RST). */
static __always_inline bool flow_unservable(const struct packet *p)
{
	return p->l4proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST));
}

/* A hit that may be used as it is: see the top of this file. */
static __always_inline bool flow_trusted(const struct flow_entry *e, const struct packet *p,
					 __u64 now)
{
	if (flow_unservable(p))
		return false;
	return e->epoch == (__u32)epoch_now() &&
	       (__u32)(now >> FLOW_TIME_SHIFT) - e->refreshed < flow_fresh();
}

/* Fills slot e with p's flow, of kind family | direction | `extra`. */
static __always_inline void flow_fill_as(struct flow_entry *e, const struct packet *p, bool egress,
					 const union ip_addr *to_addr, __be16 to_port, __u64 epoch,
					 __u64 now, __u8 extra)
{
	if (epoch == EPOCH_NONE) {
		e->kind = 0;
		return;
	}
	e->src = p->src;
	e->dst = p->dst;
	e->to_addr = *to_addr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->to_port = to_port;
	e->l4proto = p->l4proto;
	e->kind = p->family | (egress ? FLOW_EGRESS : 0) | extra;
	e->epoch = (__u32)epoch;
	e->refreshed = (__u32)(now >> FLOW_TIME_SHIFT);
}

static __always_inline void flow_fill(struct flow_entry *e, const struct packet *p, bool egress,
				      const union ip_addr *to_addr, __be16 to_port, __u64 epoch,
				      __u64 now)
{
	flow_fill_as(e, p, egress, to_addr, to_port, epoch, now, 0);
}

/*
 * A flow einat passes as it is for what the configuration says of it alone (the
 * router's own from a port out of the NAT's ranges, a no-SNAT source or
 * destination): its verdict is cached in a slot of its set too (kind with
 * FLOW_PASS), so that its packets skip the lookups that gave it (the
 * source's binding, the prefix scans). Trusted as a translation's slot is
 * (flow_trusted): the mapping epoch, which the daemon moves with the
 * configuration too (lib/daemon.ts), and flow_fresh(). Looked for after a
 * miss only (binding.h, einat_source_binding): packets the cache serves
 * never read it.
 */
static __always_inline bool flow_pass_cached(const struct packet *p, const __u8 family, bool egress,
					     __u64 now)
{
	/* what no slot serves, before the set is read: a SYN's is cold */
	if (flow_unservable(p))
		return false;
	__u32 idx = flow_set(flow_hash(p, family, egress));
	__u8 kind = family | FLOW_PASS | (egress ? FLOW_EGRESS : 0);
	struct flow_entry *a = bpf_map_lookup_elem(&map_flow_cache, &idx);
	if (a && flow_hit_as(a, p, family, kind))
		return flow_trusted(a, p, now);
	idx |= 1;
	struct flow_entry *b = bpf_map_lookup_elem(&map_flow_cache, &idx);
	return b && flow_hit_as(b, p, family, kind) && flow_trusted(b, p, now);
}

/* Caches p's pass verdict (flow_pass_cached); `epoch` read before the lookups that gave it. */
static __always_inline void flow_fill_pass(const struct packet *p, const __u8 family, bool egress,
					   __u64 epoch, __u64 now)
{
	bool hit;
	struct flow_entry *e = flow_slot(p, family, egress, &hit);
	if (!e)
		return;
	/* a pass slot rewrites nothing: its to_addr and to_port are the packet's own */
	flow_fill_as(e, p, egress, &p->src, p->sport, epoch, now, FLOW_PASS);
}

#endif
