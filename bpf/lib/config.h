/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Read-only knobs, set by the daemon before load (libbpf-bootstrap style). */
#ifndef EINAT_CONFIG_H
#define EINAT_CONFIG_H

#include <linux/types.h>
#include <stdbool.h>
#include "../einat.h"

#define NS_PER_SEC 1000000000ULL

/* One struct, so the TypeScript codec can be checked against BTF. */
const volatile struct einat_config CFG = {
	.timeout_fragment = 2 * NS_PER_SEC,
	.timeout_icmp = 30 * NS_PER_SEC,
	.timeout_udp_min = 120 * NS_PER_SEC,
	.timeout_udp = 300 * NS_PER_SEC,
	.timeout_tcp_trans = 240 * NS_PER_SEC,
	.timeout_tcp_est = 7440 * NS_PER_SEC,
	.log_level = 0,
	.has_eth = 1,
	.nat44 = 1,
	.nat66 = 0,
	.fib_external = 0,
	.inbound_icmpx = 1,
	.flow_fresh_ns = NS_PER_SEC,
	.flow_cache_bits = 14,
	.timeout_other = 600 * NS_PER_SEC,
	.timeout_tcp_closing = 240 * NS_PER_SEC,
};

#define LOG_LEVEL (CFG.log_level)
#define HAS_ETH (CFG.has_eth)
#define ENABLE_NAT44 (CFG.nat44)
#define ENABLE_NAT66 (CFG.nat66)
#define TIMEOUT_FRAGMENT (CFG.timeout_fragment)
#define TIMEOUT_ICMP (CFG.timeout_icmp)
#define TIMEOUT_UDP_MIN (CFG.timeout_udp_min)
#define TIMEOUT_UDP (CFG.timeout_udp)
#define TIMEOUT_TCP_TRANS (CFG.timeout_tcp_trans)
#define TIMEOUT_TCP_EST (CFG.timeout_tcp_est)
#define TIMEOUT_TCP_CLOSING (CFG.timeout_tcp_closing)

#define log_debug(fmt, ...)                             \
	do {                                            \
		if (LOG_LEVEL >= 4)                     \
			bpf_printk(fmt, ##__VA_ARGS__); \
	} while (0)

#endif
