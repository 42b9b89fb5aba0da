/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one kernel sk_buff field __sk_buff does not expose: ip_summed, what the
 * skb's L4 checksum is (none verified, verified, a full sum of the packet in
 * skb->csum, or a CHECKSUM_PARTIAL seed the device completes). With it the
 * rewrite updates checksums inline instead of asking a kernel helper, which
 * on CPUs with return-thunk mitigations costs ~35 ns a packet.
 *
 * bpf_cast_to_kern_ctx() (Linux 6.2) is rewritten by the verifier into a
 * register move; the field's place comes from the kernel's BTF through a
 * CO-RE relocation. The compatibility object (EINAT_CSUM_HELPERS, for kernels
 * without BTF or the kfunc) never reads it and lets the helpers decide.
 */
#ifndef EINAT_SKB_H
#define EINAT_SKB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* include/linux/skbuff.h */
#define EINAT_CHECKSUM_NONE 0
#define EINAT_CHECKSUM_UNNECESSARY 1
#define EINAT_CHECKSUM_COMPLETE 2
#define EINAT_CHECKSUM_PARTIAL 3

#ifdef EINAT_CSUM_HELPERS

static __always_inline __u8 skb_ip_summed(struct __sk_buff *skb)
{
	return EINAT_CHECKSUM_NONE; /* unknown; never read in this build */
}

#else

#include <bpf/bpf_core_read.h>

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

struct sk_buff___einat {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

static __always_inline __u8 skb_ip_summed(struct __sk_buff *skb)
{
	struct sk_buff___einat *k = bpf_cast_to_kern_ctx(skb);
	return BPF_CORE_READ_BITFIELD(k, ip_summed);
}

#endif

#endif
