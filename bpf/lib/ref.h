/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A binding's reference count: its live sessions. The CPU that drops the last
 * one marks the count dying before it deletes the binding, and no reference
 * can be taken on a dying count: one taken between the drop and the deletion
 * would leave a session on a binding that is gone (tests/race_test.ts). A
 * count of zero is not dying: a binding written with no sessions (from user
 * space) takes references as usual.
 */
#ifndef EINAT_REF_H
#define EINAT_REF_H

#include <linux/types.h>

#define BINDING_DYING 0x80000000u

/* Takes a reference, unless the count is dying (or kept changing under eight tries). */
static __always_inline bool ref_get(__u32 *ref)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u32 r = *(volatile __u32 *)ref;
		if (r & BINDING_DYING)
			return false;
		if (__sync_val_compare_and_swap(ref, r, r + 1) == r)
			return true;
	}
	return false;
}

/* What ref_put() did. */
enum ref_dropped {
	REF_NOT_HELD = 0, /* nothing: the count is dying (its binding was retired) */
	REF_DROPPED = 1,
	/* the last: the count is dying now, and the caller deletes the binding */
	REF_DROPPED_LAST = 2,
};

/* Drops a reference (enum ref_dropped). */
static __always_inline int ref_put(__u32 *ref)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u32 r = *(volatile __u32 *)ref;
		if (r & BINDING_DYING)
			return REF_NOT_HELD;
		if (__sync_val_compare_and_swap(ref, r, r <= 1 ? BINDING_DYING : r - 1) == r)
			return r <= 1 ? REF_DROPPED_LAST : REF_DROPPED;
	}
	/* Contended all along: dropped without the last-reference check (a binding
	 * left at zero takes references again, and goes with its next session). */
	__sync_fetch_and_add(ref, -1);
	return REF_DROPPED;
}

#endif
