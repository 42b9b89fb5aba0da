/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A question for the kernel's own BTF index: the id of a type by name and
 * kind (bpf_btf_find_by_name_kind, for BPF_PROG_TYPE_SYSCALL programs). The
 * loader asks it for bpf_cast_to_kern_ctx (bpf/lib/skb.h) instead of walking
 * the 150,000 types of /sys/kernel/btf/vmlinux to count its id.
 */
#ifndef EINAT_BTF_QUERY_H
#define EINAT_BTF_QUERY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "../einat.h"

SEC("syscall")
int btf_find(struct btf_query *q)
{
	char name[sizeof(q->name)]; /* the helper reads memory, not the context */
	__u32 sz = q->name_sz;
	if (sz < 2 || sz > sizeof(name)) {
		q->id = -22; /* EINVAL */
		return 0;
	}
	__builtin_memcpy(name, q->name, sizeof(name));
	q->id = bpf_btf_find_by_name_kind(name, sz, q->kind, 0);
	return 0;
}

#endif
