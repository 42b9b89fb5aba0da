/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mapping records and the outbound index (bpf/lib/records.h) driven one
 * operation at a time from tests/records_test.ts: each BPF_PROG_TEST_RUN of
 * rec_cmd carries a struct rec_cmd after a 14-byte Ethernet header and gets
 * it back with the results filled in.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/records.h"

char LICENSE[] SEC("license") = "GPL";

enum rec_op {
	OP_CLAIM = 1, /* rec_claim(idx, key) */
	OP_FIND = 2, /* einat_outbound_find(key) */
	OP_INSERT = 3, /* einat_outbound_insert(key, idx) */
	OP_DELETE = 4, /* einat_outbound_delete(key, idx) */
	OP_READ = 5, /* the record idx into rec */
	OP_CREATE = 6, /* key's record with a reference: found, or claimed on a port of
			  port_lo..port_hi in slot and published */
	OP_PUT = 7, /* drops a reference of record idx; released with the last */
};

struct rec_cmd {
	__u32 op;
	__u32 idx;
	__s32 ret; /* out */
	__u32 slot;
	__u16 port_lo; /* host order */
	__u16 port_hi;
	__u32 made; /* out, OP_CREATE: 1 when the record claimed here became the key's */
	__u32 claimed; /* out, OP_CREATE: 1 when a record was claimed here (made, or lost to another
			  CPU's at the insert) */
	struct rec_key key;
	struct mapping_record rec; /* out, OP_READ */
};

#define CMD_OFF 14
#define CREATE_TRIES 64

static __always_inline int proto_index(__u8 l4proto)
{
	return l4proto == IPPROTO_TCP	? PROTO_IDX_TCP
	       : l4proto == IPPROTO_UDP ? PROTO_IDX_UDP
					: PROTO_IDX_ICMP;
}

/* A global function: its argument puts struct rec_cmd in the BTF the test checks. */
__noinline int create(struct rec_cmd *c)
{
	if (!c)
		return -EINVAL;
	int f = einat_outbound_find(&c->key);
	if (f >= 0) {
		struct mapping_record *r = rec_get(f);
		if (r && ref_get(&r->ref))
			return f;
	}
	__u32 idx = 0;
	bool have = false;
	for (int i = 0; i < CREATE_TRIES; i++) {
		__u32 port = (__u32)c->port_lo + i;
		if (port > c->port_hi)
			break;
		idx = rec_index(c->slot, proto_index(c->key.l4proto), port);
		struct mapping_record *r = rec_get(idx);
		if (r && rec_claim(r, &c->key, NULL, NULL, 0)) {
			have = true;
			break;
		}
	}
	if (!have)
		return -ENOSPC;
	c->claimed = 1;
	int p = einat_record_publish(&c->key, idx);
	c->made = p == (int)idx;
	struct mapping_record *own = rec_get(idx);
	if (!c->made && own && ref_put(&own->ref) == REF_DROPPED_LAST)
		record_release(own, idx);
	return p;
}

SEC("tc")
int rec_cmd(struct __sk_buff *skb)
{
	struct rec_cmd c;
	if (bpf_skb_load_bytes(skb, CMD_OFF, &c, sizeof(c)))
		return TC_ACT_SHOT;
	struct mapping_record *r = NULL;
	c.ret = -EINVAL;
	c.made = 0;
	c.claimed = 0;
	switch (c.op) {
	case OP_CLAIM:
		r = rec_get(c.idx);
		c.ret = r && rec_claim(r, &c.key, NULL, NULL, 0);
		break;
	case OP_FIND:
		c.ret = einat_outbound_find(&c.key);
		break;
	case OP_INSERT:
		c.ret = einat_outbound_insert(&c.key, c.idx);
		break;
	case OP_DELETE:
		c.ret = einat_outbound_delete(&c.key, c.idx);
		break;
	case OP_READ:
		r = rec_get(c.idx);
		if (r) {
			c.rec = *r;
			c.ret = 0;
		}
		break;
	case OP_CREATE:
		c.ret = create(&c);
		break;
	case OP_PUT:
		r = rec_get(c.idx);
		if (r) {
			c.ret = ref_put(&r->ref) == REF_DROPPED_LAST;
			if (c.ret)
				record_release(r, c.idx);
		}
		break;
	}
	if (bpf_skb_store_bytes(skb, CMD_OFF, &c, sizeof(c), 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
