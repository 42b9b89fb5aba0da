/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fragments (RFC 4787 REQ-14): the first fragment carries the L4 header and
 * is translated like any packet; its translation is recorded under
 * (addresses, protocol, IP ID) so the later fragments, which have no ports,
 * get the same address. A later fragment that arrives before the first:
 * on egress it gets the default external address (the only one a new mapping
 * can have), so out-of-order outbound datagrams work and nothing leaks; on
 * ingress it cannot be mapped without its ports and passes untranslated to
 * the router's own stack.
 */
#ifndef EINAT_FRAG_H
#define EINAT_FRAG_H

#include "maps.h"
#include "parse.h"

static __always_inline void frag_key_init(struct frag_key *k, const struct packet *p, bool egress)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = p->family;
	k->l4proto = p->l4proto;
	k->egress = egress;
	k->id = p->frag_id;
	k->src = p->src;
	k->dst = p->dst;
}

/* Records the new address for the rest of the datagram p starts. */
/*
 * Records the new address for the rest of the datagram p starts. Global
 * functions keep the fragment key off the hot path's stack.
 */
__noinline int einat_frag_record(const struct packet *p, int egress, const union ip_addr *addr)
{
	struct frag_key k;
	struct frag_value v;
	if (!p || !addr)
		return -1;
	frag_key_init(&k, p, egress);
	v.addr = *addr;
	v.expires_ns = bpf_ktime_get_ns() + TIMEOUT_FRAGMENT;
	return bpf_map_update_elem(&map_frag, &k, &v, BPF_ANY);
}

/* Copies the address recorded for a later fragment to *out; 0 when none. */
__noinline int einat_frag_lookup(const struct packet *p, int egress, union ip_addr *out)
{
	struct frag_key k;
	if (!p || !out)
		return 0;
	frag_key_init(&k, p, egress);
	struct frag_value *v = bpf_map_lookup_elem(&map_frag, &k);
	if (!v)
		return 0;
	if (v->expires_ns < bpf_ktime_get_ns()) {
		bpf_map_delete_elem(&map_frag, &k);
		return 0;
	}
	*out = v->addr;
	return 1;
}

#endif
