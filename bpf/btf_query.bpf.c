/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btf_find on its own (bpf/lib/btf_query.h): no maps, so it loads in a moment,
 * beside the state object that creates the NAT's maps, and the kfunc's id is
 * known before the datapath objects are opened.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/btf_query.h"

char LICENSE[] SEC("license") = "GPL";
