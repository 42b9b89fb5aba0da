/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Structures shared between the BPF programs and the TypeScript daemon.
 * lib/nat/codec.ts mirrors every struct here; tests/codec_btf_test.ts checks
 * the mirror against this object's BTF so the two cannot drift.
 */
#ifndef EINAT_H
#define EINAT_H

#include <linux/types.h>
#include <linux/bpf.h>

#define EINAT_MAX_RANGES 4

/* Read-only configuration (.rodata), timeouts in nanoseconds. */
struct einat_config {
	__u64 timeout_fragment;
	__u64 timeout_icmp;
	__u64 timeout_udp_min; /* UDP seen in one direction only */
	__u64 timeout_udp;
	__u64 timeout_tcp_trans; /* TCP opening (partially open) */
	__u64 timeout_tcp_est;
	__u8 log_level;
	__u8 has_eth; /* 0 on L3 devices (PPP, TUN, WireGuard) */
	__u8 nat44;
	__u8 nat66;
	__u8 fib_external; /* choose the external address by a FIB lookup */
	__u8 inbound_icmpx; /* pings from outside may bind an identifier to the NAT host */
	/* Bit offset of sk_buff.ip_summed in the running kernel, from its BTF (set by the
	 * loader, lib/nat/kbtf.ts; bpf/lib/skb.h). */
	__u16 skb_summed_bit;
	/* How long a flow-cache slot may stand in for its session (lib/flowcache.h): a
	 * quarter of the shortest timeout above, at most a second (set by the loader). */
	__u64 flow_fresh_ns;
	/* The flow cache has 1 << flow_cache_bits slots per CPU (lib/flowcache.h; the loader
	 * sizes the map to match). */
	__u8 flow_cache_bits;
	/* Count packets and bytes per session (map_sess_counters, lib/state.h). */
	__u8 session_counters;
	/* The CPU may reorder loads (arm64; not x86): the readers that re-check what they read
	 * fence their loads (lib/prefixes.h, load_fence; set by the loader from its machine). */
	__u8 weak_order;
	__u8 _pad[1];
	/* The outbound index has outbound_mask + 1 lines, a power of two (lib/records.h; the
	 * loader sizes the map to match). */
	__u32 outbound_mask;
	/* Bindings at most (binding_max_records): past it, new ones are refused. */
	__u32 binding_max;
	/* Bindings one internal address may hold at most (binding_max_per_host); 0: no limit. */
	__u32 host_max;
	/* Address-only NAT of the IP protocols without ports (lib/addrnat.h): how long a
	 * mapping lives without traffic; 0: off, their packets pass as they are. */
	__u64 timeout_other;
	/* TCP closing: FIN each way, or reset (RFC 7857 2.1: opening and closing timeouts
	 * apart); timeout_tcp_trans is the opening one. */
	__u64 timeout_tcp_closing;
	/* Key of the hash that picks the IPv4 identification counter of a translated
	 * non-atomic datagram (lib/ipid.h): drawn at random by the loader at each load. */
	__u32 ip_id_key;
	/* Sessions one internal address's bindings may hold at most (session_max_per_host):
	 * the sum of their references (lib/hosts.h); 0: no limit. */
	__u32 host_sess_max;
};

/* The context of the btf_find program (bpf/lib/btf_query.h). */
struct btf_query {
	char name[48]; /* NUL-terminated */
	__u32 name_sz; /* strlen(name) + 1 */
	__u32 kind; /* BTF_KIND_* */
	__s64 id; /* out: the BTF id (a module's BTF fd in the upper half), or -errno */
};

/* IPv4 addresses use the first 4 bytes, the rest stays zero. */
union ip_addr {
	__be32 v4;
	__be32 all[4];
	__u8 bytes[16];
};

/* Inclusive range, host byte order. */
struct port_range {
	__u16 start;
	__u16 end;
};

enum einat_proto_idx {
	PROTO_IDX_TCP = 0,
	PROTO_IDX_UDP = 1,
	PROTO_IDX_ICMP = 2,
	PROTO_IDX_MAX = 3,
	/* echo identifiers that pings from outside may bind to the NAT host */
	PROTO_IDX_ICMP_IN = 3,
	RANGE_SETS = 4,
};

/* Port ranges and flags of one external address. */
struct external_config {
	struct port_range ranges[RANGE_SETS][EINAT_MAX_RANGES];
	__u8 range_len[RANGE_SETS];
	__u8 flags; /* EXT_* */
};

#define EXT_EXTERNAL 0x1 /* an address of the external interface */
#define EXT_NO_SNAT 0x2 /* sources/destinations here are not translated */
#define EXT_NO_HAIRPIN 0x4

/* map_externals (LPM trie): family byte then address, prefixlen = 8 + bits. */
struct lpm_key {
	__u32 prefixlen;
	__u8 family; /* 4 or 6 */
	union ip_addr addr;
} __attribute__((packed));

/*
 * map_prefix_sets (lib/prefixes.h): for each family, the prefixes of
 * map_externals and map_dest_config (both together, longest first), each
 * with the EXT_* flags each trie gives the addresses it is the most specific
 * of these prefixes for: the lookups that need only the flags scan one small
 * array value instead of walking a trie's nodes, and a new flow's source and
 * destination checks read the same lines. Readers take half[0], or half[1]
 * while half[0]'s count says PREFIX_SET_MOVED: the daemon writes a new set
 * into half[1], moves the readers there, rewrites half[0] (its generation
 * moved) and moves them back, changing one count word at a time
 * (lib/nat/prefixes.ts). A reader that finds its half's count or generation
 * changed after its scan (held up across the rewrite) asks the trie instead.
 */
#define PREFIX_SET_MAX 8
#define PREFIX_SET_MOVED 0xfffffffe /* half[0] is being rewritten: read half[1] */
#define PREFIX_SET_TRIE 0xffffffff /* more prefixes than PREFIX_SET_MAX: ask the tries */
#define PREFIX_SETS 2 /* [0] IPv4, [1] IPv6 */
#define PREFIX_DEST_SHIFT 8 /* prefix_entry.flags: map_externals' | map_dest_config's << 8 */

struct prefix_entry {
	union ip_addr addr; /* the prefix, its host bits zero */
	union ip_addr mask;
	__u32 flags; /* EXT_* of map_externals | of map_dest_config << PREFIX_DEST_SHIFT */
	__u32 _pad; /* the next entry's words 8-byte aligned */
};

struct prefix_half {
	/* The prefixes, or PREFIX_SET_MOVED / PREFIX_SET_TRIE. Any count word torn
	 * between two of these values reads above PREFIX_SET_MAX: the trie. */
	__u32 count;
	__u32 gen; /* moved at each rewrite of the half */
	struct prefix_entry e[PREFIX_SET_MAX];
};

struct prefix_set {
	struct prefix_half half[2];
};

/* map_default_ext: index 0 for IPv4, 1 for IPv6. */
struct default_ext {
	union ip_addr addr;
	__u8 valid;
	/* The family's only external address that can be SNATed to: the FIB can
	 * pick no other source, so bpf_fib_lookup_external's lookup is skipped. */
	__u8 only;
	__u8 _pad[2];
	struct external_config cfg;
};

/*
 * External addresses that bindings are made on each have a slot (given by the
 * daemon, lib/nat/slots.ts), which places their mapping records
 * (lib/records.h): record (slot, protocol index, port).
 */
#define EINAT_MAX_SLOTS 16

struct ext_slot {
	union ip_addr addr;
	__u8 family; /* 0: the slot is free */
	__u8 _pad[3];
};

/* map_slots' one value. */
struct slot_table {
	struct ext_slot s[EINAT_MAX_SLOTS];
};

/* Free-port hint (lib/binding.h): one bit per port, set while bound. */
#define PORT_WORDS 1024 /* 65536 ports / 64 */

struct port_bits {
	__u64 w[PORT_WORDS]; /* bit p % 64 of word p / 64: port p */
};

/* One side of a binding, as the programs pass it around: the external endpoint
 * (original direction) or the internal one (reply direction). */
struct endpoint {
	union ip_addr addr;
	__be16 port;
	__u16 _pad;
};

struct ct_key {
	__u8 flags;
	__u8 l4proto;
	__u8 family;
	__u8 _pad;
	__be16 ext_port;
	__be16 remote_port;
	union ip_addr ext_addr;
	union ip_addr remote_addr;
};

/* ct_value.flags */
#define CT_SEEN_OUT 0x01
#define CT_SEEN_IN 0x02
#define CT_SYN_OUT 0x04
#define CT_SYN_IN 0x08
#define CT_FIN_OUT 0x10
#define CT_FIN_IN 0x20
#define CT_RST 0x40
#define CT_HAIRPIN 0x80 /* the remote is one of our external addresses */

/* ct_value.state: what the timeout is chosen from */
enum ct_state {
	CT_STATE_TRANS = 0, /* TCP opening; UDP one-way */
	CT_STATE_EST = 1, /* TCP established; UDP seen both ways */
	CT_STATE_CLOSING = 2, /* TCP closed both ways or reset */
};

/*
 * 32 bytes, so that a session's hash element (48-byte header, 40-byte key)
 * fits the kernel allocator's 128-byte class. No timer: sessions expire by
 * their timestamp (lib/ct.h) and the daemon's sweep removes them.
 */
struct ct_value {
#ifdef EINAT_TEST_NESTED_LAYOUT
	/* Tests only (tests/state_test.ts): the same fields in another order, as a later einat
	 * could lay them out; a mapping_record's own members do not change. Never loaded. */
	union ip_addr int_addr;
	__u32 created_s;
	__be16 int_port;
	__u8 state;
	__u8 flags;
#else
	union ip_addr int_addr;
	__be16 int_port;
	__u8 state;
	__u8 flags;
	__u32 created_s; /* CLOCK_MONOTONIC seconds */
#endif
	__u64 last_seen_ns; /* CLOCK_MONOTONIC */
};

#define REC_FREE 0
#define REC_BUSY 1 /* being claimed: its fields are being written */
#define REC_LIVE 2
#define REC_STATE_MASK 3
#define REC_GEN_ONE 4 /* the generation moves at every claim */

/*
 * One cache line of the outbound index (bpf/lib/records.h): the records of
 * the internal endpoints whose hash falls here. An entry is OB_EMPTY,
 * OB_TOMB, or a 10-bit tag of the hash above a record index.
 */
#define OB_ENTRIES 15

struct outbound_line {
	__u32 lock; /* held (1) by the CPU inserting into this line */
	__u32 e[OB_ENTRIES];
};

/*
 * A mapping record (bpf/lib/records.h): the binding of one external port,
 * found by index (external-address slot, protocol, port) instead of a hash.
 * Claiming the port is claiming the record (compare-and-swap on state). The
 * binding's first session lives in it too (sess): the session of the packet
 * that made the mapping, made with the record; further sessions are map_ct
 * entries. 64 bytes: one cache line.
 */
struct mapping_record {
	__u32 state; /* REC_FREE, REC_BUSY or REC_LIVE in bits 0-1; a generation above */
	__u32 ref; /* live sessions, the inline one included; BINDING_DYING (lib/ref.h) */
	union ip_addr remote_addr; /* the inline session's remote endpoint */
	__be16 remote_port;
	__u8 family;
	__u8 l4proto;
	__u32 sess; /* SESS_INLINE while the first session is there */
	/* int_addr, int_port: the binding's internal endpoint; the rest: the inline session's */
	struct ct_value ct;
};

/*
 * map_addr_nat (lib/addrnat.h): address-only translation of another IP
 * protocol (GRE, ESP, SCTP, ...), one internal host per (protocol, external
 * address, remote address).
 */
struct addr_key {
	__u8 family;
	__u8 l4proto;
	__u16 _pad;
	union ip_addr ext_addr;
	union ip_addr remote_addr;
};

struct addr_value {
	union ip_addr int_addr;
	__u32 created_s; /* CLOCK_MONOTONIC seconds */
	__u32 _pad;
	__u64 last_seen_ns; /* CLOCK_MONOTONIC */
};

#define SESS_NONE 0
#define SESS_INLINE 1

/* map_frag: translation of the first fragment, for the ones that follow. */
struct frag_key {
	__u8 family;
	__u8 l4proto;
	__u8 egress;
	__u8 _pad;
	__be32 id;
	union ip_addr src;
	union ip_addr dst;
};

struct frag_value {
	union ip_addr addr; /* the new source (egress) or destination (ingress) */
	__u64 expires_ns;
	/* FRAG_OUT / FRAG_IN of a datagram whose first fragment a session translated: that
	 * session's ports and protocol, so its later fragments count in it (session counters);
	 * session 0 for any other (passed, hairpinned, another protocol's, the way back). */
	__be16 ext_port;
	__be16 remote_port;
	__u8 l4proto;
	__u8 session;
	__u8 _pad[2];
};

enum einat_stat {
	STAT_EGRESS_NAT = 0,
	STAT_INGRESS_NAT,
	STAT_PASS,
	STAT_NEW_BINDING,
	STAT_NEW_SESSION,
	STAT_DROP_NO_PORT,
	STAT_DROP_BINDING_FULL,
	STAT_DROP_CT_FULL,
	STAT_DROP_FRAGMENT,
	STAT_DROP_UNTRANSLATABLE,
	STAT_EXPIRED_SESSION,
	STAT_ICMP_ERROR_NAT,
	STAT_FRAGMENT_NAT,
	STAT_DROP_ICMP_ERROR,
	STAT_DROP_UNSOLICITED,
	STAT_ICMP_PROHIBITED_SENT,
	STAT_HAIRPIN,
	STAT_SESSION_RESTARTED, /* expired, found by traffic before the sweep */
	STAT_FRAGMENT_HELD,
	STAT_FRAGMENT_RELEASED,
	STAT_FLOW_CACHE_MISS, /* the flow's slot held nothing or another flow (lib/flowcache.h) */
	STAT_NEW_ADDR_MAPPING, /* address-only, of another IP protocol (lib/addrnat.h) */
	STAT_DROP_ADDR_IN_USE, /* its (protocol, external, remote) is another host's */
	STAT_DROP_ADDR_FULL, /* the address-only mappings' table is full */
	/* a remote's packet to a binding without a session of its own: passed to the
	 * binding's host (EIF) without making one; the host's answer makes it */
	STAT_INBOUND_UNANSWERED,
	STAT_DROP_HOST_FULL, /* the internal address holds binding_max_per_host bindings */
	STAT_DROP_HOST_CT_FULL, /* its bindings hold session_max_per_host sessions */
	/* mappings of the router's own traffic (einat_egress_own), and of them those on
	 * another port than its own (a host held it) */
	STAT_OWN_BINDING,
	STAT_OWN_MOVED,
	STAT_MAX,
};

/*
 * map_traffic: packets and bytes (IP header onwards) translated, by
 * direction and family; index TRAFFIC_IDX(egress, family).
 */
struct traffic_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * map_sweep's one value: what one run of expire_sessions looks at, written by
 * the daemon before each run (lib/nat/expire.ts). The sweep goes in short
 * runs of this size instead of one walk of every table, which held its CPU
 * ~15 ms at the default sizes (110-180 ms at a million sessions).
 */
#define SWEEP_KEYS 1024
struct sweep_batch {
	__u32 rec_from; /* records rec_from .. rec_from + rec_count - 1 */
	__u32 rec_count;
	__u32 keys_n; /* keys[0 .. keys_n - 1]: map_ct keys to look at */
	__u32 _pad;
	struct ct_key keys[SWEEP_KEYS];
};

/*
 * map_sess_counters: packets and bytes (IP header onwards) of one session,
 * keyed by its struct ct_key, one value per CPU. A CPU's value counts for the
 * session created at created_s (its ct_value's): the lookups (at least every
 * flow_fresh_ns) start a value of another created_s over, so a session made
 * again on the same key does not inherit the counts of the one before, and
 * user space sums only the CPUs' values of the session's created_s.
 */
struct sess_counter {
	__u32 created_s;
	__u32 _pad;
	__u64 packets_out;
	__u64 bytes_out;
	__u64 packets_in;
	__u64 bytes_in;
};

#define TRAFFIC_MAX 4
#define TRAFFIC_IDX(egress, family) (((egress) ? 0 : 2) + ((family) == 6 ? 1 : 0))

#endif
