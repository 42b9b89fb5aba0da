/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A per-CPU cache of outbound flows (in the manner of Open vSwitch's exact
 * match cache): the slot of a flow's 5-tuple remembers the external
 * endpoint its binding gave, so the egress fast path needs one hash lookup
 * (the session) instead of two (binding, then session). The session decides:
 * a hit is used only when the session found with it names this packet's
 * source as its internal endpoint, and a slot that leads nowhere is emptied.
 */
#ifndef EINAT_FLOWCACHE_H
#define EINAT_FLOWCACHE_H

#include "parse.h"

#define FLOW_CACHE_BITS 10

struct flow_entry {
	union ip_addr src;
	union ip_addr dst;
	union ip_addr ext_addr;
	__be16 sport;
	__be16 dport;
	__be16 ext_port;
	__u8 l4proto;
	__u8 family; /* 0: empty */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_entry);
	__uint(max_entries, 1 << FLOW_CACHE_BITS);
} map_flow_cache SEC(".maps");

/* The slot of p's 5-tuple on this CPU. */
static __always_inline struct flow_entry *flow_slot(const struct packet *p)
{
	__u32 h = p->src.all[0] ^ p->src.all[1] ^ p->src.all[2] ^ p->src.all[3];
	h ^= p->dst.all[0] ^ p->dst.all[1] ^ p->dst.all[2] ^ p->dst.all[3];
	h ^= ((__u32)p->sport << 16) ^ p->dport ^ p->l4proto;
	__u32 idx = (h * 0x9e3779b1U) >> (32 - FLOW_CACHE_BITS);
	return bpf_map_lookup_elem(&map_flow_cache, &idx);
}

static __always_inline bool addr_eq(const union ip_addr *a, const union ip_addr *b)
{
	return ((a->all[0] ^ b->all[0]) | (a->all[1] ^ b->all[1]) | (a->all[2] ^ b->all[2]) |
		(a->all[3] ^ b->all[3])) == 0;
}

/* The slot holds p's flow. */
static __always_inline bool flow_hit(const struct flow_entry *e, const struct packet *p)
{
	return e->family == p->family && e->l4proto == p->l4proto && e->sport == p->sport &&
	       e->dport == p->dport && addr_eq(&e->src, &p->src) && addr_eq(&e->dst, &p->dst);
}

static __always_inline void flow_fill(struct flow_entry *e, const struct packet *p,
				      const union ip_addr *ext_addr, __be16 ext_port)
{
	e->src = p->src;
	e->dst = p->dst;
	e->ext_addr = *ext_addr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->ext_port = ext_port;
	e->l4proto = p->l4proto;
	e->family = p->family;
}

#endif
