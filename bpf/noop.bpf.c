// SPDX-License-Identifier: GPL-2.0-or-later
/* A TC program that does nothing: the baseline of the benchmarks. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tc")
int noop(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
