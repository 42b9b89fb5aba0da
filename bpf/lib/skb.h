/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one kernel sk_buff field __sk_buff does not expose: ip_summed, what the
 * skb's L4 checksum is (none verified, verified, a full sum of the packet in
 * skb->csum, or a CHECKSUM_PARTIAL seed the device completes). With it the
 * rewrite updates checksums inline instead of asking a kernel helper, which
 * on CPUs with return-thunk mitigations costs ~35 ns a packet.
 *
 * bpf_cast_to_kern_ctx() (Linux 6.2) gives the kernel's sk_buff; the verifier
 * turns the call into a register move. Neither the kfunc nor the field is
 * resolved by libbpf, which would parse the whole kernel BTF for them (~12 ms
 * and ~13 MiB at every load): the kernel gives the kfunc's id (btf_query.h),
 * the daemon reads the field's offset from /sys/kernel/btf/vmlinux as far as
 * sk_buff (lib/nat/kbtf.ts), turns the placeholder helper call below into the
 * kfunc call (lib/nat/kfunc.ts) and sets CFG.skb_summed_bit. The compatibility
 * object (EINAT_CSUM_HELPERS, for kernels without the kfunc) never reads it
 * and lets the helpers decide.
 */
#ifndef EINAT_SKB_H
#define EINAT_SKB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/pkt_cls.h>
#include "config.h"

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

/* Stands for bpf_cast_to_kern_ctx(): a call of this helper number, which the
 * loader rewrites into the kfunc call with the kernel's BTF id of the kfunc. */
#define EINAT_KERN_CTX_PLACEHOLDER 0x7ffffff0
static void *(*const einat_kern_ctx)(void *ctx) = (void *)EINAT_KERN_CTX_PLACEHOLDER;

static __always_inline __u8 skb_ip_summed(struct __sk_buff *skb)
{
	void *k = einat_kern_ctx(skb);
	__u32 bit = CFG.skb_summed_bit; /* a constant to the verifier (frozen .rodata) */
	__u8 b = *(volatile __u8 *)(k + (bit >> 3));
	return (b >> (bit & 7)) & 3;
}

#endif

/*
 * Sends a packet leaving an external interface back in, to the internal host
 * the FIB named (ifindex), through the neighbour table. bpf_redirect_neigh
 * takes the Ethernet header off first and drops a packet without one, as
 * those of an L3 device (TUN, PPP, WireGuard) are: they get a blank one.
 */
static __always_inline long redirect_neigh_inward(struct __sk_buff *skb, __u32 ifindex)
{
	if (!HAS_ETH && bpf_skb_change_head(skb, 14, 0))
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

#endif
