/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Bindings (internal endpoint <-> external endpoint) and external port choice.
 * A binding is a mapping record (lib/records.h): the record of its external
 * port, claimed by compare-and-swap, so two CPUs can never hand out one
 * external port twice (no port overloading), and found from the internal
 * endpoint through the outbound index.
 */
#ifndef EINAT_BINDING_H
#define EINAT_BINDING_H

#include "maps.h"
#include "config.h"
#include "epoch.h"
#include "parse.h"
#include "ref.h"
#include "hosts.h"
#define OUTBOUND_MASK() (CFG.outbound_mask)
#include "records.h"
#include "flowcache.h"

static __always_inline int proto_idx(__u8 l4proto)
{
	switch (l4proto) {
	case IPPROTO_TCP:
		return PROTO_IDX_TCP;
	case IPPROTO_UDP:
		return PROTO_IDX_UDP;
	default:
		return PROTO_IDX_ICMP;
	}
}

/* The external addresses' slots (struct slot_table, written by the daemon). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct slot_table);
	__uint(max_entries, 1);
} map_slots SEC(".maps");

/* [0]: live bindings, held to CFG.binding_max (counted by the programs; a new
 * count starts from the bindings found at start, lib/state/serve.ts); [1]: the
 * sessions inline in records, as sync_port_hint last counted them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} map_binding_count SEC(".maps");

/* Counts one binding more, unless that would pass `max`. */
static __always_inline bool binding_count_take_below(__u64 max)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&map_binding_count, &zero);
	return n && count_take(n, max);
}

/* Counts one binding more, unless that would pass CFG.binding_max. */
static __always_inline bool binding_count_take(void)
{
	return binding_count_take_below(CFG.binding_max);
}

/* Counts one binding less, never below zero (count_sub, lib/hosts.h, says why). */
static __always_inline void binding_count_drop(void)
{
	__u32 zero = 0;
	count_drop(bpf_map_lookup_elem(&map_binding_count, &zero));
}

/* The slot of external address a, or -1. A global function: verified once. */
__noinline int einat_ext_slot(__u32 family, const union ip_addr *a)
{
	__u32 zero = 0;
	struct slot_table *t = bpf_map_lookup_elem(&map_slots, &zero);
	if (!t || !a)
		return -1;
	/* The family and the address in one test: one branch per slot for the verifier
	 * to walk. */
	for (int i = 0; i < EINAT_MAX_SLOTS; i++) {
		const struct ext_slot *e = &t->s[i];
		if ((((e->addr.all[0] ^ a->all[0]) | (e->addr.all[1] ^ a->all[1]) |
		      (e->addr.all[2] ^ a->all[2]) | (e->addr.all[3] ^ a->all[3])) |
		     (e->family ^ family)) == 0)
			return i;
	}
	return -1;
}

/* The external address of slot s into *a; false when the slot is free. */
static __always_inline bool slot_addr(__u32 s, union ip_addr *a)
{
	__u32 zero = 0;
	struct slot_table *t = bpf_map_lookup_elem(&map_slots, &zero);
	/* opaque to clang, which would fold the bound into the caller's arithmetic (a
	 * division), where the verifier loses it */
	asm volatile("" : "+r"(s));
	if (!t || s >= EINAT_MAX_SLOTS || !t->s[s].family)
		return false;
	*a = t->s[s].addr;
	return true;
}

static __always_inline __u32 rec_slot(__u32 idx)
{
	return (idx >> 16) / PROTO_IDX_MAX;
}

/*
 * The record index of the binding of external endpoint (ext_addr, ext_port),
 * or -1: the reply direction. A global function: verified once.
 */
__noinline int einat_binding_at(__u32 family, __u32 l4proto, const union ip_addr *ext_addr,
				__u32 ext_port)
{
	if (!ext_addr)
		return -1;
	int s = einat_ext_slot(family, ext_addr);
	if (s < 0)
		return -1;
	__u32 idx = rec_index(s, proto_idx(l4proto), bpf_ntohs((__be16)ext_port));
	struct mapping_record *r = rec_get(idx);
	if (!r || (r->state & REC_STATE_MASK) != REC_LIVE || r->family != family ||
	    r->l4proto != l4proto)
		return -1;
	return idx;
}

/* The record of the binding of an external endpoint, or NULL. */
static __always_inline struct mapping_record *
binding_reply(__u8 family, __u8 l4proto, const union ip_addr *ext_addr, __be16 ext_port)
{
	int ri = einat_binding_at(family, l4proto, ext_addr, ext_port);
	return ri < 0 ? NULL : rec_get(ri);
}

/*
 * The binding a packet hairpinned to an external endpoint goes to, or NULL: none, or the
 * router's own (einat_egress_own; its internal address is that external one), whose packets
 * the router's stack takes.
 */
static __always_inline struct mapping_record *
hairpin_binding(__u8 family, __u8 l4proto, const union ip_addr *ext_addr, __be16 ext_port)
{
	struct mapping_record *r = binding_reply(family, l4proto, ext_addr, ext_port);
	return r && !addr_eq(&r->ct.int_addr, ext_addr) ? r : NULL;
}

/* The internal endpoint of record r as a binding value (the reply direction). */
static __always_inline void binding_intern(struct endpoint *out, const struct mapping_record *r)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->addr = r->ct.int_addr;
	out->port = r->ct.int_port;
}

/*
 * When a whole range was searched in vain, new flows of that protocol are
 * refused without searching again for FULL_BACKOFF_NS, unless a binding is
 * released meanwhile: a full range costs one search, not one per packet.
 */
#define FULL_BACKOFF_NS (100ULL * 1000 * 1000)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64); /* when the range was last found full, 0: not full */
	__uint(max_entries, PROTO_IDX_MAX * 2);
} map_alloc_full SEC(".maps");

static __always_inline __u32 full_key(__u8 family, int pidx)
{
	return (pidx & 3) + (family == 6 ? PROTO_IDX_MAX : 0);
}

static __always_inline bool alloc_recently_full(__u32 k)
{
	__u64 *t = bpf_map_lookup_elem(&map_alloc_full, &k);
	return t && *t && bpf_ktime_get_ns() - *t < FULL_BACKOFF_NS;
}

static __always_inline void alloc_mark_full(__u32 k)
{
	__u64 *t = bpf_map_lookup_elem(&map_alloc_full, &k);
	if (t)
		*t = bpf_ktime_get_ns();
}

static __always_inline void alloc_clear_full(__u32 k)
{
	__u64 *t = bpf_map_lookup_elem(&map_alloc_full, &k);
	if (t && *t)
		*t = 0;
}

/*
 * Free-port hint: one bit per port of each external-address slot and
 * protocol, set while the port is bound. A new mapping scans 64 ports per
 * word for a clear bit instead of probing the records port by port, so a
 * nearly full range costs a few words, not hundreds of claims. The records
 * stay the truth: a claim still takes its record by compare-and-swap. A bit
 * found clear on a taken port (a restart starts with an empty hint;
 * identifiers bound by pings from outside, einat_inbound_query, are not
 * marked) is set when the claim fails; a bit left set on a free port (bindings
 * deleted from user space) only hides the port from the scan, and the linear
 * probe that runs before a range is declared full still finds it.
 *
 * Entry slot * PROTO_IDX_MAX + pidx: a record index >> 16, the records' own
 * layout (lib/records.h), sized with them at load; an array, so the lookup is
 * an address computation, not a hashed search. A slot's hint is cleared with
 * its records when its address leaves (lib/nat/records.ts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_bits);
	__uint(max_entries, PROTO_IDX_MAX); /* set at load: slots * PROTO_IDX_MAX */
} map_port_bits SEC(".maps");

/* The hint holding the port of record idx. */
static __always_inline struct port_bits *port_bits_of(__u32 idx)
{
	__u32 k = idx >> 16;
	return bpf_map_lookup_elem(&map_port_bits, &k);
}

static __always_inline void port_bit_set(struct port_bits *b, __u16 port)
{
	__u64 bit = 1ULL << (port & 63);
	__u64 *w = &b->w[(port >> 6) & (PORT_WORDS - 1)];
	if (!(*w & bit))
		__sync_fetch_and_or(w, bit);
}

/* The hint marks port (host order) taken. */
static __always_inline bool port_bit_taken(const struct port_bits *b, __u16 port)
{
	return b && (b->w[(port >> 6) & (PORT_WORDS - 1)] >> (port & 63)) & 1;
}

/* The port of record idx comes free. */
static __always_inline void port_bit_clear(__u32 idx)
{
	struct port_bits *b = port_bits_of(idx);
	if (!b)
		return;
	__u16 port = idx & 0xffff;
	__u64 bit = 1ULL << (port & 63);
	__u64 *w = &b->w[(port >> 6) & (PORT_WORDS - 1)];
	if (*w & bit)
		__sync_fetch_and_and(w, ~bit);
}

/*
 * Index of the lowest set bit of x (x != 0), without branches (a branching
 * search would make the verifier walk every outcome as its own path): the
 * number of bits below the lowest set one, counted SWAR-style.
 */
static __always_inline __u32 lowest_bit(__u64 x)
{
	__u64 v = x & -x;
	/* opaque to clang: it would turn this into cttz, which the BPF backend
	 * lowers to a table lookup in .rodata, where the config lives */
	asm volatile("" : "+r"(v));
	v -= 1;
	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (v * 0x0101010101010101ULL) >> 56;
}

/*
 * Where a CPU's next new mapping of one family and protocol will most likely
 * claim a record, kept from the last one (alloc_prefetch()): its
 * external address's records, the span of the ranges, and the port its
 * random choice starts from, drawn in advance. Only this CPU reads it, and
 * only as a hint: a stale one costs a cache line read for nothing.
 */
struct alloc_next {
	__u32 base; /* rec_index(slot, pidx, 0) + 1 of the last new mapping; 0: none yet */
	__u16 lo; /* the lowest and highest port of its ranges */
	__u16 hi;
	__u16 port; /* where the next random choice starts; 0: not drawn */
	__u16 pad;
};

/*
 * What a CPU keeps from one new mapping to the next (in its alloc_ctx, which
 * a search clears from rk on).
 */
struct alloc_keep {
	__u64 rng; /* alloc_rnd()'s state; 0: not seeded yet */
	struct alloc_next next[2][4]; /* [IPv6][protocol index] */
};

/*
 * The state of one port search. It lives in per-CPU scratch space, not on
 * the stack (the egress program's stack is nearly full), and the search
 * steps below are global functions that find it there: each is verified
 * once, on its own, and the bpf_loop callbacks that call them stay a few
 * instructions long, so the verifier's work does not grow with the ranges,
 * the loop counts or the paths through a step.
 */
struct alloc_ctx {
	struct alloc_keep keep; /* not cleared */
	struct rec_key rk; /* the internal endpoint */
	__u32 slot; /* of the external address */
	__u32 pidx; /* PROTO_IDX_* */
	struct ct_value sess; /* the first session, made with the record when have_first */
	union ip_addr remote; /* its remote endpoint */
	__be16 remote_port;
	__u8 have_first;
	struct port_range ranges[EINAT_MAX_RANGES]; /* of this protocol */
	__u32 nranges;
	__u32 total; /* ports in all ranges */
	__u16 plo; /* the lowest and highest port of the ranges (alloc_next) */
	__u16 phi;
	__u32 start; /* probe: index to begin at */
	__u32 wfirst; /* scan: first and last word of the ranges in the hint */
	__u32 wlast;
	__u32 wcur; /* scan: the word looked at */
	__u32 wleft; /* scan: words not looked at yet, wcur included */
	__u32 rbit; /* scan: in the first word, prefer bits from here up */
	__u64 tried; /* scan: bits of wcur whose claim failed */
	__u16 found; /* host order, valid when have is set */
	__u16 want; /* the internal port */
	__u8 have; /* a port was claimed */
	__u8 full; /* the binding table is full: stop searching */
	__u8 strict; /* 2: same parity and class, 1: same class, 0: any */
	__u8 has_low; /* the ranges have ports below 1024 */
	__u8 first; /* scan: wcur is the first word looked at */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct alloc_ctx);
	__uint(max_entries, 1);
} map_alloc_scratch SEC(".maps");

static __always_inline struct alloc_ctx *alloc_ctx_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&map_alloc_scratch, &zero);
}

/*
 * 32 random bits for a port choice: a per-CPU xorshift64* stream in the
 * alloc_ctx line the search loads anyway, mixed with bpf_get_prandom_u32()
 * when unseeded and then every 256th draw or so. The helper alone costs
 * ~0.15 us when its per-CPU state is cold (measured, one new mapping at a
 * time). Neither source is cryptographic; the kernel's is a linear generator too.
 */
static __always_inline __u32 alloc_rnd(struct alloc_ctx *c)
{
	__u64 x = c->keep.rng;
	if (!(x & 0xff))
		x ^= ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32() | 1;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->keep.rng = x;
	return (x * 0x2545F4914F6CDD1DULL) >> 32;
}

/*
 * RFC 4787 REQ-3a: a port below 1024 maps below 1024 (and one above stays
 * above) when the ranges have such ports; REQ-4: parity is kept if possible.
 */
static __always_inline bool port_acceptable(const struct alloc_ctx *c, __u16 port)
{
	if (c->strict >= 1 && c->has_low && ((port < 1024) != (c->want < 1024)))
		return false;
	if (c->strict >= 2 && ((port ^ c->want) & 1))
		return false;
	return true;
}

/* Port (host order) at index i of the ranges, or -1 past their end. */
static __always_inline int range_port(const struct alloc_ctx *c, __u32 i)
{
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		if (r >= c->nranges)
			break;
		const struct port_range *pr = &c->ranges[r];
		__u32 n = (__u32)pr->end - pr->start + 1;
		if (i < n)
			return pr->start + i;
		i -= n;
	}
	return -1;
}

/*
 * Claims port (host order) for c->rk by claiming its record (no lookup first:
 * a taken port fails the compare-and-swap), and keeps the hint b (may be
 * NULL) up to date with what the records said: a port found taken has its
 * bit set (the hint was behind: bindings it never saw), a claimed one too.
 */
static __always_inline bool try_claim(struct alloc_ctx *c, struct port_bits *b, __u16 port)
{
	struct mapping_record *r = rec_get(rec_index(c->slot, c->pidx, port));
	if (!r) {
		c->full = 1; /* the slot has no records: no point in trying other ports */
		return false;
	}
	bool ok = c->have_first ? rec_claim(r, &c->rk, &c->sess, &c->remote, c->remote_port)
				: rec_claim(r, &c->rk, NULL, NULL, 0);
	if (b)
		port_bit_set(b, port);
	if (!ok)
		return false;
	c->found = port;
	c->have = 1;
	return true;
}

/*
 * Step i of the linear probe: the records asked port by port, from a random
 * index on. Returns 1 to stop (claimed, or the slot has no records).
 */
__noinline int einat_probe_step(struct port_bits *b, __u32 i)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c)
		return 1;
	__u32 idx = c->start + i;
	if (idx >= c->total)
		idx -= c->total;
	int port = range_port(c, idx);
	if (port >= 0 && port_acceptable(c, port) && try_claim(c, b, port))
		return 1;
	return c->full ? 1 : 0;
}

/*
 * All ones when a < b, else 0. The shift is inline assembly so that clang
 * cannot turn the mask arithmetic below back into conditional jumps.
 */
static __always_inline __u64 lt_mask(__s64 a, __s64 b)
{
	__s64 d = a - b;
	asm volatile("%[d] s>>= 63" : [d] "+r"(d));
	return (__u64)d;
}
#define LT_MASK(a, b) lt_mask((__s64)(a), (__s64)(b))

/* Bits of word wi (ports wi*64 .. wi*64+63) that lie in the ranges. */
static __always_inline __u64 range_mask(const struct alloc_ctx *c, __u32 wi)
{
	__s64 base = (__s64)wi * 64, top = base + 63;
	__s64 len = c->nranges;
	__u64 m = 0;
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		__s64 start = c->ranges[r].start, end = c->ranges[r].end;
		__s64 lo = start + ((base - start) & ~LT_MASK(base, start)); /* max */
		__s64 hi = top + ((end - top) & LT_MASK(end, top)); /* min */
		__u64 valid = LT_MASK(r, len) & ~LT_MASK(hi, lo);
		m |= valid & (~0ULL >> ((63 - (hi - base)) & 63)) & (~0ULL << ((lo - base) & 63));
	}
	return m;
}

/* Bits of word wi that port_acceptable() would accept. */
static __always_inline __u64 accept_mask(const struct alloc_ctx *c, __u32 wi)
{
	if (c->strict >= 1 && c->has_low && ((wi < 1024 / 64) != (c->want < 1024)))
		return 0;
	if (c->strict >= 2)
		return (c->want & 1) ? 0xaaaaaaaaaaaaaaaaULL : 0x5555555555555555ULL;
	return ~0ULL;
}

/*
 * Step of the hint scan: claims the lowest acceptable clear bit of word
 * wcur (from bit rbit up in the first word, if any is there), or moves to
 * the next word of the ranges, wrapping. A failed claim (the hint was
 * behind) costs one step and the word is looked at again without that bit.
 * Returns 1 to stop: claimed, table full, or every word looked at.
 */
__noinline int einat_scan_step(struct port_bits *b)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c || !b || !c->wleft)
		return 1;
	__u32 wi = c->wcur & (PORT_WORDS - 1);
	__u64 cand = ~(b->w[wi] | c->tried) & range_mask(c, wi) & accept_mask(c, wi);
	if (c->first) { /* a random start within the first word too */
		__u64 up = cand & (~0ULL << (c->rbit & 63));
		if (up)
			cand = up;
	}
	if (!cand) {
		c->wcur = wi >= c->wlast ? c->wfirst : wi + 1;
		c->wleft -= 1;
		c->tried = 0;
		c->first = 0;
		return c->wleft ? 0 : 1;
	}
	__u32 bit = lowest_bit(cand) & 63;
	if (try_claim(c, b, (__u16)(wi * 64 + bit)))
		return 1;
	c->tried |= 1ULL << bit;
	return c->full ? 1 : 0;
}

/*
 * bpf_loop callbacks: ctx holds the hint pointer, read here and handed to
 * the step (a pointer passed in a struct on the stack would not survive a
 * global function call). The result is made opaque before "& 1" so that
 * clang keeps the mask the verifier needs to see a return value of 0 or 1.
 */
static long alloc_probe(__u64 i, void *ctx)
{
	long r = einat_probe_step(*(struct port_bits **)ctx, (__u32)i);
	asm volatile("" : "+r"(r));
	return r & 1;
}

static long alloc_scan(__u64 i, void *ctx)
{
	long r = einat_scan_step(*(struct port_bits **)ctx);
	asm volatile("" : "+r"(r));
	return r & 1;
}

/* Extra scan steps for claims that fail on bits the hint had clear. */
#define SCAN_RETRIES 64

static __always_inline bool port_in_ranges(const struct external_config *cfg, int pidx, __u16 port)
{
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		if (r >= cfg->range_len[pidx & 3])
			break;
		const struct port_range *pr = &cfg->ranges[pidx & 3][r];
		if (port >= pr->start && port <= pr->end)
			return true;
	}
	return false;
}

/*
 * Copies the protocol's port ranges of cfg into the search state, with what
 * the search derives from them (the number of ports, the hint words they
 * span, whether any lies below 1024). Returns -1 when there is no port, else
 * whether c->want lies in the ranges. A global function: the loop's branches
 * are verified once here, not carried into the caller's paths (~9,000
 * processed instructions of egress verification).
 */
__noinline int einat_alloc_ranges(const struct external_config *cfg, __u32 pidx)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c || !cfg)
		return -1;
	__u32 total = 0;
	int in = 0;
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		if (r >= cfg->range_len[pidx & 3])
			break;
		const struct port_range *pr = &cfg->ranges[pidx & 3][r];
		c->ranges[r] = *pr;
		c->nranges = r + 1;
		total += (__u32)pr->end - pr->start + 1;
		if (pr->start < 1024)
			c->has_low = 1;
		if (r == 0 || pr->start / 64 < c->wfirst)
			c->wfirst = pr->start / 64;
		if (pr->end / 64 > c->wlast)
			c->wlast = pr->end / 64;
		if (r == 0 || pr->start < c->plo)
			c->plo = pr->start;
		if (pr->end > c->phi)
			c->phi = pr->end;
		if (c->want >= pr->start && c->want <= pr->end)
			in = 1;
	}
	c->total = total;
	return total ? in : -1;
}

/*
 * The ports of hint word wi that are free, in the ranges and acceptable at
 * the search's strictness. Inline in einat_random_try(), its one caller (a
 * global function, verified once).
 */
static __always_inline __u64 word_free(struct port_bits *b, __u32 wi)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c || !b)
		return 0;
	wi &= PORT_WORDS - 1;
	return ~b->w[wi] & range_mask(c, wi) & accept_mask(c, wi);
}

/*
 * Before any search, one port tried at random: while the ranges are far from
 * full the claim succeeds, without the loop, its callbacks and their calls.
 * It is the port drawn at random from the ranges for this CPU's next choice
 * (struct alloc_next; given the wanted parity), or, when the hint marks it
 * taken or unacceptable (at c->strict: parity, class), the next free
 * acceptable port of its hint word (64 ports), wrapping: no port says which
 * comes next (RFC 6056, RFC 7857 port randomization). The port is drawn one
 * mapping ahead so that the flow-cache miss before the mapping can start
 * reading its record (alloc_prefetch()); the draw for the next one is
 * made here. Taking the ports of one word in a row, as stops 19-33 did, saved
 * a page walk per mapping (a word's records share a 4 KiB page) but told
 * anyone who saw one external port, a DNS server a resolver behind the NAT
 * queried say, the 32 candidates of the resolver's next query's port. A port
 * the hint wrongly says free (a hint behind the records) costs one failed
 * claim, which sets its bit. A global function, like the search steps: the
 * search state is in per-CPU scratch, and its frame is not added to the
 * caller's (the deepest call chain's stack is near the verifier's limit).
 */
__noinline int einat_random_try(struct port_bits *bits)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c || !c->total || !bits)
		return 0;
	struct alloc_next *n = &c->keep.next[c->rk.family == 6][c->pidx & 3];
	/* drawn for another address, or not at all: drawn now */
	int drawn = n->port;
	if (n->base != rec_index(c->slot, c->pidx, 0) + 1 || !drawn)
		drawn = range_port(c, (alloc_rnd(c) >> 8) % c->total);
	/* from bits of their own, not the search's, whose port is seen */
	int next = range_port(c, (alloc_rnd(c) >> 8) % c->total);
	n->port = next < 0 ? 0 : next;
	if (drawn < 0)
		return 0;
	if (c->strict >= 2) /* the wanted parity: the drawn port or its neighbour */
		drawn ^= (drawn ^ c->want) & 1;
	__u32 wi = (__u32)drawn >> 6;
	__u64 cand = word_free(bits, wi);
	if (!cand)
		return 0;
	__u32 k = drawn & 63;
	__u64 rot = (cand >> k) | (cand << ((64 - k) & 63));
	return try_claim(c, bits, (__u16)(wi * 64 + ((lowest_bit(rot) + k) & 63)));
}

/* One search at strictness c->strict: the hint when there is one, else the table. */
static __always_inline void alloc_search(struct alloc_ctx *c, struct port_bits **bits, __u32 rnd)
{
	if (*bits) {
		__u32 words = c->wlast - c->wfirst + 1;
		c->wcur = c->wfirst + rnd % words;
		c->wleft = words;
		c->rbit = rnd >> 26;
		c->tried = 0;
		c->first = 1;
		bpf_loop(words + SCAN_RETRIES, alloc_scan, bits, 0);
	} else {
		c->start = rnd % c->total;
		bpf_loop(c->total, alloc_probe, bits, 0);
	}
}

/*
 * Releases the binding of record idx, whose last reference the caller dropped:
 * its outbound entry goes first, so the port is not free while it still maps
 * to it, then the record. A global function: verified once.
 */
__noinline int einat_binding_release(__u32 idx)
{
	struct mapping_record *r = rec_get(idx);
	if (!r)
		return 0;
	__u8 family = r->family, l4proto = r->l4proto;
	union ip_addr host = r->ct.int_addr;
	alloc_clear_full(full_key(family, proto_idx(l4proto))); /* a port comes free */
	/* Before: no flow-cache slot filled earlier serves the port once it is free;
	 * after: nor one filled while the binding was going. */
	epoch_bump();
	record_release(r, idx);
	binding_count_drop();
	host_drop_binding(family, &host);
	epoch_bump();
	port_bit_clear(idx);
	return 0;
}

/*
 * Drops one session reference of the binding of record idx; releases it with
 * the last. Its host's session count follows, unless the reference was not
 * counted for it (uncounted: taken for another host's session, found on a
 * record its host had left). A global function: ref_put()'s unrolled tries
 * are verified once, not on every path of its callers (~1,300 processed
 * instructions of egress verification).
 */
__noinline int einat_binding_unref(__u32 idx, __u32 uncounted)
{
	struct mapping_record *r = rec_get(idx);
	if (!r)
		return 0;
	/* Its host before the drop, while the reference held keeps the record its own. */
	struct host_key h = {};
	if (CFG.host_sess_max) {
		h.family = r->family;
		h.addr = r->ct.int_addr;
	}
	int d = ref_put(&r->ref);
	if (d != REF_NOT_HELD && !uncounted)
		host_sess_sub(h.family, &h.addr, 1);
	if (d == REF_DROPPED_LAST)
		einat_binding_release(idx);
	return 0;
}

/* einat_binding_unref() of a reference counted for the record's host, as all are but one. */
static __always_inline void einat_binding_put(__u32 idx)
{
	einat_binding_unref(idx, 0);
}

/*
 * Frees the binding of record idx whatever references its sessions hold (they
 * find it gone): one whose external address left. False when it is not live or
 * another CPU frees it already. A global function: verified once.
 */
__noinline int einat_binding_retire(__u32 idx)
{
	struct mapping_record *r = rec_get(idx);
	if (!r || (r->state & REC_STATE_MASK) != REC_LIVE)
		return 0;
	/* No session takes a reference any more; one that holds one finds it gone. */
	__u32 held = __sync_lock_test_and_set(&r->ref, BINDING_DYING);
	if (held & BINDING_DYING)
		return 0;
	if (held)
		host_sess_sub(r->family, &r->ct.int_addr, held);
	einat_binding_release(idx);
	return 1;
}

/*
 * The external endpoint of the binding of internal endpoint (int_addr,
 * int_port) into *out: the original direction. Returns its record index, or
 * -1. A binding whose slot is free (its external address left while the
 * daemon purged it: claimed between the release of the slot's records and the
 * slot's removal) is retired here, so the caller makes one on an address that
 * is there. As a global function (einat_binding_of) or inline in another one.
 */
static __always_inline int binding_of(__u32 family, __u32 l4proto, const union ip_addr *int_addr,
				      __u32 int_port, struct endpoint *out)
{
	if (!int_addr || !out)
		return -1;
	struct rec_key k;
	rec_key_init(&k, family, l4proto, int_addr, int_port);
	int ri = einat_outbound_find(&k);
	if (ri < 0)
		return -1;
	__builtin_memset(out, 0, sizeof(*out));
	if (!slot_addr(rec_slot(ri), &out->addr)) {
		einat_binding_retire(ri);
		return -1;
	}
	out->port = bpf_htons(ri & 0xffff);
	return ri;
}

/* binding_of(), verified once. */
__noinline int einat_binding_of(__u32 family, __u32 l4proto, const union ip_addr *int_addr,
				__u32 int_port, struct endpoint *out)
{
	return binding_of(family, l4proto, int_addr, int_port, out);
}

/* einat_binding_create(): another CPU made this endpoint's binding meanwhile. */
#define BINDING_ADOPTED (-1)

/*
 * Creates a new binding for the internal endpoint of p, with its first session
 * in its record: the session of key ck (its remote endpoint; the external one
 * is the new binding's) and value first (its internal endpoint aside), which
 * holds the binding's one reference. When another CPU made this endpoint's
 * binding meanwhile, that one is the caller's, with a reference taken on it
 * for the session the caller makes (ct.h, CT_NEW_REF_HELD).
 * A global function: verified once for both families.
 * Returns 0 (made, the session with it) or BINDING_ADOPTED with the binding in
 * *out, or a STAT_DROP_* reason.
 */
__noinline int einat_binding_create(const struct packet *p, const struct default_ext *ext,
				    struct endpoint *out, const struct ct_key *ck,
				    const struct ct_value *first)
{
	if (!p || !ext || !out || !ck || !first)
		return STAT_DROP_UNTRANSLATABLE;
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c)
		return STAT_DROP_UNTRANSLATABLE;
	int pidx = proto_idx(p->l4proto);
	const struct external_config *cfg = &ext->cfg;
	__builtin_memset(&c->rk, 0, sizeof(*c) - offsetof(struct alloc_ctx, rk));
	__u16 want = bpf_ntohs(p->sport);
	c->want = want;
	int in_ranges = einat_alloc_ranges(cfg, pidx);
	if (in_ranges < 0)
		return STAT_DROP_NO_PORT;
	int slot = einat_ext_slot(p->family, &ext->addr);
	if (slot < 0)
		return STAT_DROP_NO_PORT; /* an address without records (lib/nat/slots.ts) */
	c->slot = slot;
	c->pidx = pidx;
	rec_key_init(&c->rk, p->family, p->l4proto, &p->src, p->sport);
	c->sess = *first;
	c->remote = ck->remote_addr;
	c->remote_port = ck->remote_port;
	c->have_first = 1;
	if (!binding_count_take())
		return STAT_DROP_BINDING_FULL;
	/* the binding and its first session (the record's one reference) */
	int host = 0;
	if (p->own) { /* the router's own: counted for its address, held to no limit */
		host_add_binding(p->family, &p->src);
		host_sess_add(p->family, &p->src, 1);
	} else {
		host = host_take_binding(p->family, &p->src);
	}
	if (host) {
		binding_count_drop();
		return host;
	}

	/* where this CPU's next mapping of the kind will likely claim */
	struct alloc_next *nx = &c->keep.next[p->family == 6][pidx & 3];
	nx->base = rec_index(c->slot, pidx, 0) + 1;
	nx->lo = c->plo;
	nx->hi = c->phi;

	struct port_bits *bits = NULL;
	if (in_ranges || !alloc_recently_full(full_key(p->family, pidx)))
		bits = port_bits_of(rec_index(c->slot, pidx, 0));
	/* Port preservation, unless the hint marks the port taken (another host has it):
	 * then no claim that would fail. A bit left set on a port freed from user space
	 * costs only the preservation; the search still finds the port. The router's own
	 * (einat_egress_own) tries the claim all the same: a service of its own answering
	 * from a port of the ranges must keep it. */
	if (in_ranges && (p->own || !port_bit_taken(bits, want)) && try_claim(c, bits, want)) {
		/* port preservation */
	} else if (!c->full && alloc_recently_full(full_key(p->family, pidx))) {
		/* the range was full a moment ago: refused below, without a search */
	} else if (!c->full) {
		__u32 rnd = alloc_rnd(c);
		/* ICMP identifiers have no parity or privilege to keep */
		c->strict = p->l4proto == IPPROTO_ICMP ? 0 : 2;
		einat_random_try(bits);
		if (!c->have && !c->full)
			alloc_search(c, &bits, rnd);
		if (!c->have && !c->full && c->strict) {
			c->strict = 1;
			alloc_search(c, &bits, rnd);
		}
		if (!c->have && !c->full && c->strict) {
			c->strict = 0;
			alloc_search(c, &bits, rnd);
		}
		/* The hint found nothing: ask the records themselves before giving up. */
		if (!c->have && !c->full && bits) {
			c->strict = 0;
			c->start = rnd % c->total;
			bpf_loop(c->total, alloc_probe, &bits, 0);
		}
		if (!c->have && !c->full)
			alloc_mark_full(full_key(p->family, pidx));
	}
	if (!c->have) {
		binding_count_drop();
		host_untake_binding(p->family, &p->src);
		return STAT_DROP_NO_PORT;
	}

	__u32 idx = rec_index(c->slot, c->pidx, c->found);
	/* Counted before the reference the publish may take on another CPU's record of this
	 * endpoint, as every reference is: a retire meanwhile subtracts it with the rest. */
	host_sess_add(p->family, &p->src, 1);
	int ri = einat_record_publish(&c->rk, idx);
	if (ri >= 0 && ri != (int)idx && !einat_rec_is(ri, &c->rk)) {
		/* The reference went to a record that left this endpoint between the index's
		 * compare and the reference (released, and claimed again for another): given
		 * back uncounted, as the record's host never counted it (ct.h does the same). */
		einat_binding_unref(ri, 1);
		ri = -EAGAIN;
	}
	if (ri < 0 || ri == (int)idx)
		host_sess_sub(p->family, &p->src, 1); /* none taken */
	__builtin_memset(out, 0, sizeof(*out));
	if (ri == (int)idx) {
		/* inline: a new mapping's counts (two einat_stat calls measured 30-40 ns of
		 * a chained new mapping's ~770, paired; this function is verified once) */
		stat_count(STAT_NEW_BINDING);
		stat_count(STAT_NEW_SESSION);
		if (p->own) {
			stat_count(STAT_OWN_BINDING);
			if (c->found != want)
				stat_count(STAT_OWN_MOVED);
		}
		out->addr = ext->addr;
		out->port = bpf_htons(c->found);
		return 0;
	}
	/* Lost a race with another CPU (ri is its binding, with a reference taken for the
	 * caller), or the outbound index had no room: this record goes. */
	einat_binding_put(idx);
	if (ri == -ENOSPC)
		return STAT_DROP_BINDING_FULL;
	if (ri < 0)
		return STAT_DROP_UNTRANSLATABLE;
	if (!slot_addr(rec_slot(ri), &out->addr)) {
		/* Its address left (einat_binding_of): the reference taken for us back, and
		 * the binding retired, so the next packet makes one on an address that is there. */
		einat_binding_put(ri);
		einat_binding_retire(ri);
		return STAT_DROP_UNTRANSLATABLE;
	}
	out->port = bpf_htons(ri & 0xffff);
	return BINDING_ADOPTED;
}

/*
 * Starts reading the records a new mapping of p would claim first: the port
 * drawn in advance for this CPU's next random choice (struct alloc_next),
 * and, when within the span of the ranges, the packet's own port (port
 * preservation) with its word of the free-port hint. Called where a packet's
 * flow missed the flow cache, just before the outbound index is read: when
 * the packet makes a new mapping, the record's cold line (and page walk,
 * mostly: a random record of megabytes) is fetched while the index line is,
 * not after it. Measured on an AMD EPYC, one new mapping at a time: 70-150
 * ns less (medians of paired batches: a TCP SYN, a port chosen, a port kept).
 * On a flow that has a binding the reads are wasted, overlapped with the
 * lookups it makes anyway. Nothing is written. Inline in
 * einat_source_binding(), not in the main program, whose stack the deepest
 * call chain's would add to (at the verifier's limit).
 */
static __always_inline void alloc_prefetch(const struct packet *p)
{
	struct alloc_ctx *c = alloc_ctx_get();
	if (!c)
		return;
	const struct alloc_next *n = &c->keep.next[p->family == 6][proto_idx(p->l4proto) & 3];
	__u32 base = n->base;
	if (!base)
		return;
	__u16 port = bpf_ntohs(p->sport);
	/* as einat_random_try() adjusts its parity */
	__u16 drawn = n->port ^ ((n->port ^ port) & (p->l4proto != IPPROTO_ICMP));
	struct mapping_record *r = rec_get((base - 1) | drawn);
	if (r)
		(void)*(volatile __u32 *)&r->state;
	if (port >= n->lo && port <= n->hi) {
		r = rec_get((base - 1) | port);
		if (r)
			(void)*(volatile __u32 *)&r->state;
		struct port_bits *b = port_bits_of(base - 1);
		if (b)
			(void)*(volatile __u64 *)&b->w[(port >> 6) & (PORT_WORDS - 1)];
	}
}

/*
 * In a burst of new flows (flowcache.h, flow_miss_burst()), before the
 * packet's flow-cache set is read, and for every TCP SYN: the reads a new
 * flow's lookups and new mapping will wait for, its source's outbound line
 * (ob_touch()) and alloc_prefetch()'s, so that all of them are waited for
 * together (with the set's, or the SYN's slot's). A global function: verified
 * once, called in bursts and for SYNs only.
 */
__noinline int einat_new_flow_prefetch(const struct packet *p)
{
	if (!p)
		return 0;
	ob_touch(p->family, p->l4proto, &p->src, p->sport);
	alloc_prefetch(p);
	return 0;
}

/* einat_source_binding(): the flow's pass verdict is cached (flow_pass_cached). */
#define SOURCE_PASS (-2)
/* einat_source_binding()'s flags */
#define SOURCE_PREFETCH 1 /* make alloc_prefetch()'s reads */
#define SOURCE_MISSED 2 /* no slot of the flow's set held it: count the miss */

/*
 * An egress packet no flow-cache slot served: SOURCE_PASS when its flow passes
 * as it is from a slot of its own (flowcache.h, flow_pass_cached: the
 * router's own from a port out of the ranges, a no-SNAT source or
 * destination); else the miss counted (SOURCE_MISSED), alloc_prefetch()'s
 * reads (SOURCE_PREFETCH), then the binding of its source
 * (einat_binding_of()). One call for all of it (a call and its return cost
 * ~15 ns on hosts with return-thunk mitigations), verified once. After
 * packet_now(p).
 */
__noinline int einat_source_binding(const struct packet *p, struct endpoint *out, int flags)
{
	if (!p || !out)
		return -1;
	if (flow_pass_cached(p, p->family, true, p->now))
		return SOURCE_PASS;
	if (flags & SOURCE_MISSED) {
		stat_inc(STAT_FLOW_CACHE_MISS);
		flow_miss_count();
	}
	if (flags & SOURCE_PREFETCH)
		alloc_prefetch(p);
	return binding_of(p->family, p->l4proto, &p->src, p->sport, out);
}

/* Drops one session reference of the binding of an external endpoint; releases it with
 * the last. */
static __always_inline void binding_put(__u8 family, __u8 l4proto, const union ip_addr *ext_addr,
					__be16 ext_port)
{
	int ri = einat_binding_at(family, l4proto, ext_addr, ext_port);
	if (ri >= 0)
		einat_binding_put(ri);
}

#endif
