/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Trace logging (`bpf_log_level`, `--bpf-log`), read from the kernel's trace
 * buffer (`cat /sys/kernel/tracing/trace_pipe`), each line starting "einat:".
 * The levels, as einat-ebpf names them:
 *   1 error  (nothing: the programs have no failure of their own to report)
 *   2 warn   packets dropped for want of a port or of room in a table
 *   3 info   new mappings (bindings)
 *   4 debug  new sessions, every other drop with its reason
 *   5 trace  every packet the programs see
 * The level is read-only config: at 0 every call below is dead code the
 * verifier removes, and each test is at its call site, so a disabled level
 * costs no call. The loggers are global functions, verified once each.
 */
#ifndef EINAT_LOG_H
#define EINAT_LOG_H

#include <bpf/bpf_endian.h>
#include "../einat.h"
#include "config.h"
#include "parse.h"

#define LOG_ERROR 1
#define LOG_WARN 2
#define LOG_INFO 3
#define LOG_DEBUG 4
#define LOG_TRACE 5

#define log_on(level) (LOG_LEVEL >= (level))

static __always_inline const char *proto_name(__u8 l4proto)
{
	return l4proto == IPPROTO_TCP ? "tcp" : l4proto == IPPROTO_UDP ? "udp" : "icmp";
}

/* A packet seen (trace): direction, protocol, source and destination. */
__noinline int einat_log_packet(const struct packet *p, int egress)
{
	if (!p || !log_on(LOG_TRACE))
		return 0;
	const char *dir = egress ? "egress" : "ingress";
	if (p->family == 4)
		bpf_printk("einat: %s %s %pI4:%u -> %pI4:%u", dir, proto_name(p->l4proto),
			   &p->src.v4, bpf_ntohs(p->sport), &p->dst.v4, bpf_ntohs(p->dport));
	else
		bpf_printk("einat: %s %s [%pI6]:%u -> [%pI6]:%u", dir, proto_name(p->l4proto),
			   &p->src, bpf_ntohs(p->sport), &p->dst, bpf_ntohs(p->dport));
	return 0;
}

/*
 * A new session (debug), or a new binding with its first session (info): the
 * internal endpoint, the external one, and the remote.
 */
__noinline int einat_log_session(const struct ct_key *k, const struct endpoint *intern, int egress,
				 int binding)
{
	if (!k || !intern || !log_on(binding ? LOG_INFO : LOG_DEBUG))
		return 0;
	const char *what = binding ? "new mapping" : egress ? "new session" : "new inbound session";
	if (k->family == 4)
		bpf_printk("einat: %s %s %pI4:%u as %pI4:%u, remote %pI4:%u", what,
			   proto_name(k->l4proto), &intern->addr.v4, bpf_ntohs(intern->port),
			   &k->ext_addr.v4, bpf_ntohs(k->ext_port), &k->remote_addr.v4,
			   bpf_ntohs(k->remote_port));
	else
		bpf_printk("einat: %s %s [%pI6]:%u as [%pI6]:%u, remote [%pI6]:%u", what,
			   proto_name(k->l4proto), &intern->addr, bpf_ntohs(intern->port),
			   &k->ext_addr, bpf_ntohs(k->ext_port), &k->remote_addr,
			   bpf_ntohs(k->remote_port));
	return 0;
}

/* A dropped packet, and why: the name of its counter (warn or debug). */
__noinline int einat_log_drop(const struct packet *p, __u32 reason)
{
	bool scarce = reason == STAT_DROP_NO_PORT || reason == STAT_DROP_BINDING_FULL ||
		      reason == STAT_DROP_CT_FULL || reason == STAT_DROP_HOST_FULL ||
		      reason == STAT_DROP_HOST_CT_FULL;
	if (!p || !log_on(scarce ? LOG_WARN : LOG_DEBUG))
		return 0;
	const char *why =
		reason == STAT_DROP_NO_PORT	   ? "no free external port (drop_no_port)"
		: reason == STAT_DROP_BINDING_FULL ? "binding table full (drop_binding_full)"
		: reason == STAT_DROP_CT_FULL	   ? "session table full (drop_ct_full)"
		: reason == STAT_DROP_HOST_FULL
			? "host's bindings at binding_max_per_host (drop_host_full)"
		: reason == STAT_DROP_HOST_CT_FULL
			? "host's sessions at session_max_per_host (drop_host_ct_full)"
		: reason == STAT_DROP_FRAGMENT	  ? "fragment (drop_fragment)"
		: reason == STAT_DROP_ICMP_ERROR  ? "ICMP error (drop_icmp_error)"
		: reason == STAT_DROP_UNSOLICITED ? "unsolicited TCP SYN (drop_unsolicited)"
						  : "untranslatable (drop_untranslatable)";
	if (p->family == 4)
		bpf_printk("einat: drop %s %pI4:%u -> %pI4:%u: %s", proto_name(p->l4proto),
			   &p->src.v4, bpf_ntohs(p->sport), &p->dst.v4, bpf_ntohs(p->dport), why);
	else
		bpf_printk("einat: drop %s [%pI6]:%u -> [%pI6]:%u: %s", proto_name(p->l4proto),
			   &p->src, bpf_ntohs(p->sport), &p->dst, bpf_ntohs(p->dport), why);
	return 0;
}

#endif
