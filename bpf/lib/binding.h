/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Bindings (internal endpoint <-> external endpoint) and external port choice.
 * A binding is claimed by inserting its reply entry with BPF_NOEXIST, so two
 * CPUs can never hand out one external port twice (no port overloading).
 */
#ifndef EINAT_BINDING_H
#define EINAT_BINDING_H

#include "maps.h"
#include "parse.h"

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

static __always_inline void binding_key_init(struct binding_key *k, __u8 flags, __u8 family,
					     __u8 l4proto, const union ip_addr *addr, __be16 port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->flags = flags;
	k->family = family;
	k->l4proto = l4proto;
	k->port = port;
	k->addr = *addr;
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

struct alloc_ctx {
	const struct external_config *cfg;
	int pidx;
	__u32 total; /* ports in all ranges */
	__u32 start; /* index to begin probing at */
	struct binding_key key; /* reply key being claimed; port filled in */
	struct binding_value val; /* internal endpoint */
	__u16 found; /* host order, valid when have is set */
	__u8 have; /* a port was claimed */
	__u8 full; /* the binding table is full: stop searching */
	__u16 want; /* the internal port */
	__u8 strict; /* 2: same parity and class, 1: same class, 0: any */
	__u8 has_low; /* the ranges have ports below 1024 */
};

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

/* Maps index i of the concatenated ranges to a port (host order). */
/* Port (host order) at index i of the ranges, or -1 past their end. */
static __always_inline int range_port(const struct external_config *cfg, int pidx, __u32 i)
{
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		if (r >= cfg->range_len[pidx & 3])
			break;
		const struct port_range *pr = &cfg->ranges[pidx & 3][r];
		__u32 n = (__u32)pr->end - pr->start + 1;
		if (i < n)
			return pr->start + i;
		i -= n;
	}
	return -1;
}

#define E2BIG 7
static __always_inline bool try_claim(struct alloc_ctx *c, __u16 port)
{
	c->key.port = bpf_htons(port);
	if (bpf_map_lookup_elem(&map_binding, &c->key))
		return false;
	long rc = bpf_map_update_elem(&map_binding, &c->key, &c->val, BPF_NOEXIST);
	if (rc == -E2BIG)
		c->full = 1; /* no point in trying other ports */
	return rc == 0;
}

static long alloc_probe(__u64 i, void *ctx)
{
	struct alloc_ctx *c = ctx;
	__u32 idx = c->start + (__u32)i;
	if (idx >= c->total)
		idx -= c->total;
	int port = range_port(c->cfg, c->pidx, idx);
	if (port >= 0 && port_acceptable(c, port) && try_claim(c, port)) {
		c->found = port;
		c->have = 1;
		return 1;
	}
	return c->full ? 1 : 0;
}

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
 * Creates both entries of a new binding for the internal endpoint of p.
 * A global function: verified once for both families.
 * Returns the reply (external) entry's external port in *ext_port, or a
 * STAT_DROP_* reason.
 */
__noinline int einat_binding_create(const struct packet *p, const struct default_ext *ext,
				    struct binding_value *out)
{
	if (!p || !ext || !out)
		return STAT_DROP_UNTRANSLATABLE;
	struct alloc_ctx c;
	int pidx = proto_idx(p->l4proto);
	const struct external_config *cfg = &ext->cfg;
	__u32 total = 0;

	__builtin_memset(&c, 0, sizeof(c));
#pragma unroll
	for (int r = 0; r < EINAT_MAX_RANGES; r++) {
		if (r >= cfg->range_len[pidx & 3])
			break;
		total += (__u32)cfg->ranges[pidx & 3][r].end - cfg->ranges[pidx & 3][r].start + 1;
		if (cfg->ranges[pidx & 3][r].start < 1024)
			c.has_low = 1;
	}
	if (total == 0)
		return STAT_DROP_NO_PORT;

	c.cfg = cfg;
	c.pidx = pidx;
	c.total = total;
	binding_key_init(&c.key, 0, p->family, p->l4proto, &ext->addr, 0);
	c.val.addr = p->src;
	c.val.port = p->sport;
	c.val.ref = 0;

	__u16 want = bpf_ntohs(p->sport);
	c.want = want;
	if (port_in_ranges(cfg, pidx, want) && try_claim(&c, want)) {
		c.found = want; /* port preservation */
		c.have = 1;
	} else if (!c.full && alloc_recently_full(full_key(p->family, pidx))) {
		return STAT_DROP_NO_PORT; /* the range was full a moment ago */
	} else if (!c.full) {
		c.start = bpf_get_prandom_u32() % total;
		/* ICMP identifiers have no parity or privilege to keep */
		c.strict = p->l4proto == IPPROTO_ICMP ? 0 : 2;
		bpf_loop(total, alloc_probe, &c, 0);
		if (!c.have && !c.full && c.strict) {
			c.strict = 1;
			bpf_loop(total, alloc_probe, &c, 0);
		}
		if (!c.have && !c.full && c.strict) {
			c.strict = 0;
			bpf_loop(total, alloc_probe, &c, 0);
		}
		if (!c.have && !c.full)
			alloc_mark_full(full_key(p->family, pidx));
	}
	if (c.full)
		return STAT_DROP_BINDING_FULL;
	if (!c.have)
		return STAT_DROP_NO_PORT;

	struct binding_key okey;
	struct binding_value oval;
	binding_key_init(&okey, BINDING_ORIG, p->family, p->l4proto, &p->src, p->sport);
	__builtin_memset(&oval, 0, sizeof(oval));
	oval.addr = ext->addr;
	oval.port = bpf_htons(c.found);
	if (bpf_map_update_elem(&map_binding, &okey, &oval, BPF_NOEXIST)) {
		/* Lost a race with another CPU, or the table is full. */
		bpf_map_delete_elem(&map_binding, &c.key);
		struct binding_value *v = bpf_map_lookup_elem(&map_binding, &okey);
		if (!v)
			return STAT_DROP_BINDING_FULL;
		*out = *v;
		return 0;
	}
	stat_inc(STAT_NEW_BINDING);
	*out = oval;
	return 0;
}

/* Drops one session reference; deletes both entries with the last one. */
static __always_inline void binding_put(__u8 family, __u8 l4proto, const union ip_addr *ext_addr,
					__be16 ext_port)
{
	struct binding_key rkey;
	binding_key_init(&rkey, 0, family, l4proto, ext_addr, ext_port);
	struct binding_value *rv = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!rv)
		return;
	if (__sync_fetch_and_add(&rv->ref, -1) != 1)
		return;
	alloc_clear_full(full_key(family, proto_idx(l4proto))); /* a port comes free */
	struct binding_key okey;
	binding_key_init(&okey, BINDING_ORIG, family, l4proto, &rv->addr, rv->port);
	bpf_map_delete_elem(&map_binding, &okey);
	bpf_map_delete_elem(&map_binding, &rkey);
}

/* Deletes a binding that no session took a reference on. */
static __always_inline void binding_put_unused(__u8 family, __u8 l4proto,
					       const union ip_addr *ext_addr, __be16 ext_port)
{
	struct binding_key rkey;
	binding_key_init(&rkey, 0, family, l4proto, ext_addr, ext_port);
	struct binding_value *rv = bpf_map_lookup_elem(&map_binding, &rkey);
	if (!rv || rv->ref != 0)
		return;
	struct binding_key okey;
	binding_key_init(&okey, BINDING_ORIG, family, l4proto, &rv->addr, rv->port);
	bpf_map_delete_elem(&map_binding, &okey);
	bpf_map_delete_elem(&map_binding, &rkey);
}

#endif
