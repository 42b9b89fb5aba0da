/**
 * Byte codecs for the structs in `bpf/einat.h`. Each struct has a layout
 * table (`*_LAYOUT`) that `tests/codec_btf_test.ts` checks against the BTF of
 * the compiled object, so the C and TypeScript sides cannot drift.
 * @module
 */

import { FLOW_CACHE_SLOTS, isFlowCacheSize, type PortRange } from "../config/types.ts";

/** One member of a C struct: byte offset and size. */
export interface FieldLayout {
  offset: number;
  size: number;
}

/** The layout of a C struct as the codec assumes it. */
export interface StructLayout {
  name: string;
  size: number;
  fields: Record<string, FieldLayout>;
}

/** IP protocol numbers used in keys. */
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

/** The protocols bindings and sessions are kept for, by name (ICMPv6's are under ICMP's). */
export type ProtoName = "tcp" | "udp" | "icmp";

/** The name of a binding's or session's protocol number. */
export function protoName(l4proto: number): ProtoName {
  return l4proto === IPPROTO.TCP ? "tcp" : l4proto === IPPROTO.UDP ? "udp" : "icmp";
}

/** Protocol index of `external_config.ranges`. */
export const PROTO_IDX = { tcp: 0, udp: 1, icmp: 2 } as const;
/** Ranges per protocol in `external_config`. */
export const MAX_RANGES = 4;

/** `external_config.flags` / LPM values. */
export const EXT_FLAGS = { EXTERNAL: 1, NO_SNAT: 2, NO_HAIRPIN: 4 } as const;
/** `ct_value.flags` bits. */
export const CT_FLAGS = {
  SEEN_OUT: 0x01,
  SEEN_IN: 0x02,
  SYN_OUT: 0x04,
  SYN_IN: 0x08,
  FIN_OUT: 0x10,
  FIN_IN: 0x20,
  RST: 0x40,
  HAIRPIN: 0x80,
} as const;
/** `ct_value.state`. */
export const CT_STATE = { TRANS: 0, EST: 1, CLOSING: 2 } as const;

/** Indices of `map_stats` (enum einat_stat). */
export const STATS = [
  "egress_nat",
  "ingress_nat",
  "pass",
  "new_binding",
  "new_session",
  "drop_no_port",
  "drop_binding_full",
  "drop_ct_full",
  "drop_fragment",
  "drop_untranslatable",
  "expired_session",
  "icmp_error_nat",
  "fragment_nat",
  "drop_icmp_error",
  "drop_unsolicited",
  "icmp_prohibited_sent",
  "hairpin",
  "session_restarted",
  "fragment_held",
  "fragment_released",
  "flow_cache_miss",
  "new_addr_mapping",
  "drop_addr_in_use",
  "drop_addr_full",
  "inbound_unanswered",
  "drop_host_full",
  "drop_host_ct_full",
  "own_binding",
  "own_moved",
] as const;
/** Name of a counter in `map_stats`. */
export type StatName = typeof STATS[number];

/** Indices of `map_traffic` (TRAFFIC_IDX(egress, family) in bpf/einat.h). */
export const TRAFFIC = [
  { direction: "egress", family: 4 },
  { direction: "egress", family: 6 },
  { direction: "ingress", family: 4 },
  { direction: "ingress", family: 6 },
] as const;

// --- layouts -----------------------------------------------------------

/** struct einat_config (.rodata CFG). */
export const EINAT_CONFIG_LAYOUT: StructLayout = {
  name: "einat_config",
  size: 104,
  fields: {
    timeout_fragment: { offset: 0, size: 8 },
    timeout_icmp: { offset: 8, size: 8 },
    timeout_udp_min: { offset: 16, size: 8 },
    timeout_udp: { offset: 24, size: 8 },
    timeout_tcp_trans: { offset: 32, size: 8 },
    timeout_tcp_est: { offset: 40, size: 8 },
    log_level: { offset: 48, size: 1 },
    has_eth: { offset: 49, size: 1 },
    nat44: { offset: 50, size: 1 },
    nat66: { offset: 51, size: 1 },
    fib_external: { offset: 52, size: 1 },
    inbound_icmpx: { offset: 53, size: 1 },
    skb_summed_bit: { offset: 54, size: 2 },
    flow_fresh_ns: { offset: 56, size: 8 },
    flow_cache_bits: { offset: 64, size: 1 },
    session_counters: { offset: 65, size: 1 },
    weak_order: { offset: 66, size: 1 },
    outbound_mask: { offset: 68, size: 4 },
    binding_max: { offset: 72, size: 4 },
    host_max: { offset: 76, size: 4 },
    timeout_other: { offset: 80, size: 8 },
    timeout_tcp_closing: { offset: 88, size: 8 },
    ip_id_key: { offset: 96, size: 4 },
    host_sess_max: { offset: 100, size: 4 },
  },
};

/** struct btf_query: the context of the btf_find program (bpf/lib/btf_query.h). */
export const BTF_QUERY_LAYOUT: StructLayout = {
  name: "btf_query",
  size: 64,
  fields: {
    name: { offset: 0, size: 48 },
    name_sz: { offset: 48, size: 4 },
    kind: { offset: 52, size: 4 },
    id: { offset: 56, size: 8 },
  },
};

/** struct external_config. */
export const EXTERNAL_CONFIG_LAYOUT: StructLayout = {
  name: "external_config",
  size: 70,
  fields: {
    ranges: { offset: 0, size: 64 },
    range_len: { offset: 64, size: 4 },
    flags: { offset: 68, size: 1 },
  },
};

/** struct lpm_key (packed). */
export const LPM_KEY_LAYOUT: StructLayout = {
  name: "lpm_key",
  size: 21,
  fields: {
    prefixlen: { offset: 0, size: 4 },
    family: { offset: 4, size: 1 },
    addr: { offset: 5, size: 16 },
  },
};

/** struct prefix_entry (map_prefix_sets, bpf/lib/prefixes.h). */
export const PREFIX_ENTRY_LAYOUT: StructLayout = {
  name: "prefix_entry",
  size: 40,
  fields: {
    addr: { offset: 0, size: 16 },
    mask: { offset: 16, size: 16 },
    flags: { offset: 32, size: 4 },
  },
};

/** Prefixes a set holds at most (PREFIX_SET_MAX); more are looked up in the trie. */
export const PREFIX_SET_MAX = 8;

/** struct prefix_half: one copy of a set. */
export const PREFIX_HALF_LAYOUT: StructLayout = {
  name: "prefix_half",
  size: 8 + PREFIX_SET_MAX * PREFIX_ENTRY_LAYOUT.size,
  fields: {
    count: { offset: 0, size: 4 },
    gen: { offset: 4, size: 4 },
    e: { offset: 8, size: PREFIX_SET_MAX * PREFIX_ENTRY_LAYOUT.size },
  },
};

/** struct prefix_set: two halves; the programs read half[0] unless it is being rewritten. */
export const PREFIX_SET_LAYOUT: StructLayout = {
  name: "prefix_set",
  size: 2 * PREFIX_HALF_LAYOUT.size,
  fields: {
    half: { offset: 0, size: 2 * PREFIX_HALF_LAYOUT.size },
  },
};

/** struct default_ext. */
export const DEFAULT_EXT_LAYOUT: StructLayout = {
  name: "default_ext",
  size: 92,
  fields: {
    addr: { offset: 0, size: 16 },
    valid: { offset: 16, size: 1 },
    only: { offset: 17, size: 1 },
    cfg: { offset: 20, size: 70 },
  },
};

/**
 * struct mapping_record (map_records: one binding per external port, bpf/lib/records.h), with
 * its first session inline: `ct` is a struct ct_value whose internal endpoint is the binding's.
 */
export const MAPPING_RECORD_LAYOUT: StructLayout = {
  name: "mapping_record",
  size: 64,
  fields: {
    state: { offset: 0, size: 4 },
    ref: { offset: 4, size: 4 },
    remote_addr: { offset: 8, size: 16 },
    remote_port: { offset: 24, size: 2 },
    family: { offset: 26, size: 1 },
    l4proto: { offset: 27, size: 1 },
    sess: { offset: 28, size: 4 },
    ct: { offset: 32, size: 32 },
  },
};

/** `mapping_record.sess`: the first session is inline. */
export const SESS_INLINE = 1;

/** struct outbound_line (map_outbound: the outbound index, bpf/lib/records.h). */
export const OUTBOUND_LINE_LAYOUT: StructLayout = {
  name: "outbound_line",
  size: 64,
  fields: {
    lock: { offset: 0, size: 4 },
    e: { offset: 4, size: 60 },
  },
};

/** struct ext_slot (an entry of map_slots' struct slot_table). */
export const EXT_SLOT_LAYOUT: StructLayout = {
  name: "ext_slot",
  size: 20,
  fields: {
    addr: { offset: 0, size: 16 },
    family: { offset: 16, size: 1 },
  },
};

/** Slots of external addresses (EINAT_MAX_SLOTS, bpf/einat.h). */
export const MAX_SLOTS = 16;

/** struct slot_table (map_slots' one value). */
export const SLOT_TABLE_LAYOUT: StructLayout = {
  name: "slot_table",
  size: MAX_SLOTS * 20,
  fields: { s: { offset: 0, size: MAX_SLOTS * 20 } },
};

/** `mapping_record.state` (bpf/einat.h) and the reference count's dying bit (bpf/lib/ref.h). */
export const REC = { FREE: 0, BUSY: 1, LIVE: 2, STATE_MASK: 3, GEN_ONE: 4 } as const;
export const BINDING_DYING = 0x80000000;

/** struct port_bits (value of map_port_bits): one bit per port. */
export const PORT_BITS_LAYOUT: StructLayout = {
  name: "port_bits",
  size: 8192,
  fields: { w: { offset: 0, size: 8192 } },
};

/** Protocols with per-protocol arrays: TCP, UDP, ICMP (PROTO_IDX_MAX in bpf/einat.h). */
export const PROTO_COUNT = 3;

/** Index of a protocol in per-protocol arrays (PROTO_IDX_* in bpf/einat.h). */
export function protoIdx(l4proto: number): number {
  return l4proto === IPPROTO.TCP ? 0 : l4proto === IPPROTO.UDP ? 1 : 2;
}

/**
 * Key in map_port_bits (the free-port hint) of one external-address slot and protocol: a record
 * index >> 16 (bpf/lib/binding.h).
 */
export function portBitsKey(slot: number, l4proto: number): Uint8Array {
  return new Uint8Array(new Uint32Array([slot * PROTO_COUNT + protoIdx(l4proto)]).buffer);
}

/** struct ct_key. */
export const CT_KEY_LAYOUT: StructLayout = {
  name: "ct_key",
  size: 40,
  fields: {
    flags: { offset: 0, size: 1 },
    l4proto: { offset: 1, size: 1 },
    family: { offset: 2, size: 1 },
    ext_port: { offset: 4, size: 2 },
    remote_port: { offset: 6, size: 2 },
    ext_addr: { offset: 8, size: 16 },
    remote_addr: { offset: 24, size: 16 },
  },
};

/** struct ct_value. */
export const CT_VALUE_LAYOUT: StructLayout = {
  name: "ct_value",
  size: 32,
  fields: {
    int_addr: { offset: 0, size: 16 },
    int_port: { offset: 16, size: 2 },
    state: { offset: 18, size: 1 },
    flags: { offset: 19, size: 1 },
    created_s: { offset: 20, size: 4 },
    last_seen_ns: { offset: 24, size: 8 },
  },
};

/** Keys of map_ct one run of the sweep looks at (SWEEP_KEYS in bpf/einat.h). */
export const SWEEP_KEYS = 1024;

/** struct sweep_batch (map_sweep's one value: one run of the session sweep). */
export const SWEEP_BATCH_LAYOUT: StructLayout = {
  name: "sweep_batch",
  size: 16 + SWEEP_KEYS * 40,
  fields: {
    rec_from: { offset: 0, size: 4 },
    rec_count: { offset: 4, size: 4 },
    keys_n: { offset: 8, size: 4 },
    keys: { offset: 16, size: SWEEP_KEYS * 40 },
  },
};

/** struct traffic_counter (per-CPU value of map_traffic). */
export const TRAFFIC_COUNTER_LAYOUT: StructLayout = {
  name: "traffic_counter",
  size: 16,
  fields: {
    packets: { offset: 0, size: 8 },
    bytes: { offset: 8, size: 8 },
  },
};

/**
 * struct sess_counter (per-CPU value of map_sess_counters): one session's packets and bytes,
 * counted for the session created at `created_s` (bpf/einat.h).
 */
export const SESS_COUNTER_LAYOUT: StructLayout = {
  name: "sess_counter",
  size: 40,
  fields: {
    created_s: { offset: 0, size: 4 },
    packets_out: { offset: 8, size: 8 },
    bytes_out: { offset: 16, size: 8 },
    packets_in: { offset: 24, size: 8 },
    bytes_in: { offset: 32, size: 8 },
  },
};

/** struct addr_key (map_addr_nat: address-only NAT of other IP protocols, bpf/lib/addrnat.h). */
export const ADDR_KEY_LAYOUT: StructLayout = {
  name: "addr_key",
  size: 36,
  fields: {
    family: { offset: 0, size: 1 },
    l4proto: { offset: 1, size: 1 },
    ext_addr: { offset: 4, size: 16 },
    remote_addr: { offset: 20, size: 16 },
  },
};

/** struct addr_value. */
export const ADDR_VALUE_LAYOUT: StructLayout = {
  name: "addr_value",
  size: 32,
  fields: {
    int_addr: { offset: 0, size: 16 },
    created_s: { offset: 16, size: 4 },
    last_seen_ns: { offset: 24, size: 8 },
  },
};

/**
 * struct frag_key (map_frag: what a datagram's first fragment did, for its later ones;
 * bpf/lib/frag.h). `egress` is the record's kind (FRAG_IN 0, FRAG_OUT 1, FRAG_TURN 2, the way
 * back 3 and 4); `id` the IPv4 or IPv6 identification, network order.
 */
export const FRAG_KEY_LAYOUT: StructLayout = {
  name: "frag_key",
  size: 40,
  fields: {
    family: { offset: 0, size: 1 },
    l4proto: { offset: 1, size: 1 },
    egress: { offset: 2, size: 1 },
    id: { offset: 4, size: 4 },
    src: { offset: 8, size: 16 },
    dst: { offset: 24, size: 16 },
  },
};

/** struct frag_value: the address recorded, and the session whose counts the rest go to. */
export const FRAG_VALUE_LAYOUT: StructLayout = {
  name: "frag_value",
  size: 32,
  fields: {
    addr: { offset: 0, size: 16 },
    expires_ns: { offset: 16, size: 8 },
    ext_port: { offset: 24, size: 2 },
    remote_port: { offset: 26, size: 2 },
    l4proto: { offset: 28, size: 1 },
    session: { offset: 29, size: 1 },
  },
};

/** struct host_key (map_hosts: counts per internal address, bpf/lib/hosts.h). */
export const HOST_KEY_LAYOUT: StructLayout = {
  name: "host_key",
  size: 20,
  fields: {
    family: { offset: 0, size: 1 },
    addr: { offset: 4, size: 16 },
  },
};

/** struct host_counts: bindings (while `binding_max_per_host`) and session references (while `session_max_per_host`). */
export const HOST_COUNTS_LAYOUT: StructLayout = {
  name: "host_counts",
  size: 16,
  fields: {
    bindings: { offset: 0, size: 8 },
    sessions: { offset: 8, size: 8 },
  },
};

/** One entry of `map_hosts`: an internal address and its counts. */
export interface HostCounts {
  family: 4 | 6;
  addr: Uint8Array;
  /** Its bindings (counted while `binding_max_per_host` is on). */
  bindings: bigint;
  /** Its bindings' session references (counted while `session_max_per_host` is on). */
  sessions: bigint;
}

/** Decodes a `map_hosts` entry. */
export function decodeHostCounts(key: Uint8Array, value: Uint8Array): HostCounts {
  const K = HOST_KEY_LAYOUT.fields, V = HOST_COUNTS_LAYOUT.fields;
  const family = key[K.family.offset] === 6 ? 6 : 4;
  const v = view(value);
  return {
    family,
    addr: addrOf(family, key.subarray(K.addr.offset, K.addr.offset + 16)),
    bindings: v.getBigUint64(V.bindings.offset, true),
    sessions: v.getBigUint64(V.sessions.offset, true),
  };
}

/** All layouts, for the BTF check. */
export const LAYOUTS: StructLayout[] = [
  EINAT_CONFIG_LAYOUT,
  BTF_QUERY_LAYOUT,
  EXTERNAL_CONFIG_LAYOUT,
  LPM_KEY_LAYOUT,
  PREFIX_ENTRY_LAYOUT,
  PREFIX_HALF_LAYOUT,
  PREFIX_SET_LAYOUT,
  DEFAULT_EXT_LAYOUT,
  MAPPING_RECORD_LAYOUT,
  OUTBOUND_LINE_LAYOUT,
  EXT_SLOT_LAYOUT,
  SLOT_TABLE_LAYOUT,
  PORT_BITS_LAYOUT,
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  SWEEP_BATCH_LAYOUT,
  TRAFFIC_COUNTER_LAYOUT,
  SESS_COUNTER_LAYOUT,
  ADDR_KEY_LAYOUT,
  ADDR_VALUE_LAYOUT,
  FRAG_KEY_LAYOUT,
  FRAG_VALUE_LAYOUT,
  HOST_KEY_LAYOUT,
  HOST_COUNTS_LAYOUT,
];

// --- helpers -----------------------------------------------------------

const f = (l: StructLayout, name: string): number => l.fields[name].offset;

/** An address padded to 16 bytes as `union ip_addr` holds it. */
export function addr16(addr: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out.set(addr.subarray(0, Math.min(16, addr.length)));
  return out;
}

/** The significant bytes of a `union ip_addr` for a family. */
export function addrOf(family: 4 | 6, bytes16: Uint8Array): Uint8Array {
  return bytes16.slice(0, family === 4 ? 4 : 16);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

// --- einat_config -------------------------------------------------------

/** The read-only configuration; timeouts in nanoseconds. */
export interface RoConfig {
  timeoutFragment: bigint;
  timeoutIcmp: bigint;
  timeoutUdpMin: bigint;
  timeoutUdp: bigint;
  /** TCP opening (partially open). */
  timeoutTcpTrans: bigint;
  timeoutTcpEst: bigint;
  /** TCP closing (FIN each way, or reset); `timeoutTcpTrans` when absent. */
  timeoutTcpClosing?: bigint;
  logLevel: number;
  hasEth: boolean;
  nat44: boolean;
  nat66: boolean;
  /** Choose the external address of a new mapping by a FIB lookup (kernel >= 6.7). */
  fibExternal?: boolean;
  /** Pings from outside bind their identifier to the NAT host (`allow_inbound_icmpx`). */
  inboundIcmpx?: boolean;
  /** Flow-cache slots per CPU, a power of two (`flow_cache_slots`); its default when absent. */
  flowCacheSlots?: number;
  /** Lines of the outbound index, a power of two (set by the loader, {@link outboundLines}). */
  outboundLines?: number;
  /** Bindings at most (`binding_max_records`; set by the loader). */
  bindingMax?: number;
  /** Bindings one internal address may hold (`binding_max_per_host`); 0 or absent: no limit. */
  hostMax?: number;
  /** Sessions one internal address's bindings may hold (`session_max_per_host`); 0 or absent: no limit. */
  hostSessMax?: number;
  /** Sessions whose packets and bytes are counted (`session_counters`); 0 or absent: off. */
  sessionCounters?: number;
  /**
   * The CPU may reorder loads (arm64), so the programs' re-checking readers fence theirs
   * (bpf/lib/prefixes.h, `load_fence`); absent: as the loader's machine ({@link weakOrderHere}).
   */
  weakOrder?: boolean;
  /** Address-only NAT of the IP protocols without ports: its timeout; 0 or absent: off. */
  timeoutOther?: bigint;
  /**
   * Key of the hash that picks a translated non-atomic IPv4 datagram's identification counter
   * (bpf/lib/ipid.h); the loader draws one at random when absent.
   */
  ipIdKey?: number;
}

/**
 * Lines of the outbound index for `bindings` bindings: two entries per binding, rounded up to
 * a power of two of lines (bpf/lib/records.h). At the default binding_max_records, with every
 * binding taken, a line holds 6 of its 15 entries on average and is full for about 1 insert in
 * 700 (a Poisson tail); the refusal is counted as drop_binding_full.
 */
export function outboundLines(bindings: number): number {
  let n = 1;
  while (n * 15 < bindings * 2) n *= 2;
  return n;
}

/** log2 of a flow-cache size; throws unless it is a power of two within the limits. */
export function flowCacheBits(slots: number): number {
  if (!isFlowCacheSize(slots)) {
    const { min, max } = FLOW_CACHE_SLOTS;
    throw new RangeError(
      `flow cache slots ${slots}: expected a power of two from ${min} to ${max}`,
    );
  }
  return Math.log2(slots);
}

/** The shortest of the session timeouts in `c`, ns (fragments are not sessions). */
export function shortestTimeoutNs(c: RoConfig): bigint {
  return [
    c.timeoutIcmp,
    c.timeoutUdpMin,
    c.timeoutUdp,
    c.timeoutTcpTrans,
    c.timeoutTcpEst,
    c.timeoutTcpClosing ?? c.timeoutTcpTrans,
  ].reduce((a, b) => (b < a ? b : a));
}

/**
 * How long a flow-cache slot may stand in for its session (bpf/lib/flowcache.h): a quarter of
 * the shortest session timeout, at most one second.
 */
export function flowFreshNs(c: RoConfig): bigint {
  const quarter = shortestTimeoutNs(c) / 4n;
  return quarter < 1_000_000_000n ? quarter : 1_000_000_000n;
}

/**
 * Whether this machine's CPUs may reorder loads against each other: all but x86 (whose
 * total store order keeps them) among the architectures Deno runs on.
 */
export function weakOrderHere(): boolean {
  return Deno.build.arch !== "x86_64";
}

/** Encodes `struct einat_config`. */
export function encodeRoConfig(c: RoConfig): Uint8Array {
  const L = EINAT_CONFIG_LAYOUT;
  const b = new Uint8Array(L.size);
  const v = view(b);
  v.setBigUint64(f(L, "timeout_fragment"), c.timeoutFragment, true);
  v.setBigUint64(f(L, "timeout_icmp"), c.timeoutIcmp, true);
  v.setBigUint64(f(L, "timeout_udp_min"), c.timeoutUdpMin, true);
  v.setBigUint64(f(L, "timeout_udp"), c.timeoutUdp, true);
  v.setBigUint64(f(L, "timeout_tcp_trans"), c.timeoutTcpTrans, true);
  v.setBigUint64(f(L, "timeout_tcp_est"), c.timeoutTcpEst, true);
  b[f(L, "log_level")] = c.logLevel;
  b[f(L, "has_eth")] = c.hasEth ? 1 : 0;
  b[f(L, "nat44")] = c.nat44 ? 1 : 0;
  b[f(L, "nat66")] = c.nat66 ? 1 : 0;
  b[f(L, "fib_external")] = c.fibExternal ? 1 : 0;
  b[f(L, "inbound_icmpx")] = c.inboundIcmpx ? 1 : 0;
  v.setBigUint64(f(L, "flow_fresh_ns"), flowFreshNs(c), true);
  b[f(L, "flow_cache_bits")] = flowCacheBits(c.flowCacheSlots ?? FLOW_CACHE_SLOTS.default);
  b[f(L, "session_counters")] = c.sessionCounters ? 1 : 0;
  b[f(L, "weak_order")] = (c.weakOrder ?? weakOrderHere()) ? 1 : 0;
  v.setUint32(f(L, "outbound_mask"), (c.outboundLines ?? 1) - 1, true);
  v.setUint32(f(L, "binding_max"), c.bindingMax ?? 0, true);
  v.setUint32(f(L, "host_max"), c.hostMax ?? 0, true);
  v.setBigUint64(f(L, "timeout_other"), c.timeoutOther ?? 0n, true);
  v.setBigUint64(f(L, "timeout_tcp_closing"), c.timeoutTcpClosing ?? c.timeoutTcpTrans, true);
  v.setUint32(f(L, "ip_id_key"), c.ipIdKey ?? 0, true);
  v.setUint32(f(L, "host_sess_max"), c.hostSessMax ?? 0, true);
  return b;
}

/** Decodes `struct einat_config`. */
export function decodeRoConfig(b: Uint8Array): RoConfig {
  const L = EINAT_CONFIG_LAYOUT;
  const v = view(b);
  return {
    timeoutFragment: v.getBigUint64(f(L, "timeout_fragment"), true),
    timeoutIcmp: v.getBigUint64(f(L, "timeout_icmp"), true),
    timeoutUdpMin: v.getBigUint64(f(L, "timeout_udp_min"), true),
    timeoutUdp: v.getBigUint64(f(L, "timeout_udp"), true),
    timeoutTcpTrans: v.getBigUint64(f(L, "timeout_tcp_trans"), true),
    timeoutTcpEst: v.getBigUint64(f(L, "timeout_tcp_est"), true),
    logLevel: b[f(L, "log_level")],
    hasEth: b[f(L, "has_eth")] !== 0,
    nat44: b[f(L, "nat44")] !== 0,
    nat66: b[f(L, "nat66")] !== 0,
    fibExternal: b[f(L, "fib_external")] !== 0,
    inboundIcmpx: b[f(L, "inbound_icmpx")] !== 0,
    flowCacheSlots: 2 ** b[f(L, "flow_cache_bits")],
    outboundLines: v.getUint32(f(L, "outbound_mask"), true) + 1,
    bindingMax: v.getUint32(f(L, "binding_max"), true),
    hostMax: v.getUint32(f(L, "host_max"), true),
    timeoutOther: v.getBigUint64(f(L, "timeout_other"), true),
    timeoutTcpClosing: v.getBigUint64(f(L, "timeout_tcp_closing"), true),
    ipIdKey: v.getUint32(f(L, "ip_id_key"), true),
    hostSessMax: v.getUint32(f(L, "host_sess_max"), true),
    weakOrder: b[f(L, "weak_order")] !== 0,
  };
}

// --- external_config ----------------------------------------------------

/** Port ranges and flags of one external address (the BPF view). */
export interface ExternalConfig {
  tcp: PortRange[];
  udp: PortRange[];
  /** Echo identifiers for pings from inside (icmp_out_ranges). */
  icmp: PortRange[];
  /** Echo identifiers pings from outside may bind to the NAT host (icmp_in_ranges). */
  icmpIn?: PortRange[];
  flags: number;
}

/** Encodes `struct external_config` into `out` at `offset`. */
export function encodeExternalConfig(c: ExternalConfig, out?: Uint8Array, offset = 0): Uint8Array {
  const L = EXTERNAL_CONFIG_LAYOUT;
  const b = out ?? new Uint8Array(L.size);
  const v = view(b);
  const lists = [c.tcp, c.udp, c.icmp, c.icmpIn ?? []];
  lists.forEach((list, p) => {
    if (list.length > MAX_RANGES) throw new RangeError(`more than ${MAX_RANGES} ranges`);
    list.forEach((r, i) => {
      const o = offset + f(L, "ranges") + (p * MAX_RANGES + i) * 4;
      v.setUint16(o, r.start, true);
      v.setUint16(o + 2, r.end, true);
    });
    b[offset + f(L, "range_len") + p] = list.length;
  });
  b[offset + f(L, "flags")] = c.flags;
  return b;
}

/** Decodes `struct external_config` from `b` at `offset`. */
export function decodeExternalConfig(b: Uint8Array, offset = 0): ExternalConfig {
  const L = EXTERNAL_CONFIG_LAYOUT;
  const v = view(b);
  const lists: PortRange[][] = [0, 1, 2, 3].map((p) => {
    const n = b[offset + f(L, "range_len") + p];
    const out: PortRange[] = [];
    for (let i = 0; i < n; i++) {
      const o = offset + f(L, "ranges") + (p * MAX_RANGES + i) * 4;
      out.push({ start: v.getUint16(o, true), end: v.getUint16(o + 2, true) });
    }
    return out;
  });
  return {
    tcp: lists[0],
    udp: lists[1],
    icmp: lists[2],
    icmpIn: lists[3],
    flags: b[offset + f(L, "flags")],
  };
}

// --- lpm_key / default_ext ---------------------------------------------

/** Encodes an LPM key for `addr/prefixLen` of a family. */
export function encodeLpmKey(family: 4 | 6, addr: Uint8Array, prefixLen: number): Uint8Array {
  const L = LPM_KEY_LAYOUT;
  const b = new Uint8Array(L.size);
  view(b).setUint32(f(L, "prefixlen"), 8 + prefixLen, true);
  b[f(L, "family")] = family;
  b.set(addr16(addr), f(L, "addr"));
  return b;
}

/** Decodes an LPM key. */
export function decodeLpmKey(
  b: Uint8Array,
): { family: 4 | 6; addr: Uint8Array; prefixLen: number } {
  const L = LPM_KEY_LAYOUT;
  const family = b[f(L, "family")] as 4 | 6;
  return {
    family,
    addr: addrOf(family, b.subarray(f(L, "addr"), f(L, "addr") + 16)),
    prefixLen: view(b).getUint32(f(L, "prefixlen"), true) - 8,
  };
}

/** The address new mappings of one family get, with its ranges. */
export interface DefaultExt {
  addr: Uint8Array;
  valid: boolean;
  /** The family's only external address that can be SNATed to (no FIB lookup needed). */
  only?: boolean;
  cfg: ExternalConfig;
}

/** Encodes `struct default_ext`. */
export function encodeDefaultExt(d: DefaultExt): Uint8Array {
  const L = DEFAULT_EXT_LAYOUT;
  const b = new Uint8Array(L.size);
  b.set(addr16(d.addr), f(L, "addr"));
  b[f(L, "valid")] = d.valid ? 1 : 0;
  b[f(L, "only")] = d.only ? 1 : 0;
  encodeExternalConfig(d.cfg, b, f(L, "cfg"));
  return b;
}

/** Decodes `struct default_ext` (address as 16 bytes). */
export function decodeDefaultExt(b: Uint8Array): DefaultExt {
  const L = DEFAULT_EXT_LAYOUT;
  return {
    addr: b.slice(f(L, "addr"), f(L, "addr") + 16),
    valid: b[f(L, "valid")] !== 0,
    only: b[f(L, "only")] !== 0,
    cfg: decodeExternalConfig(b, f(L, "cfg")),
  };
}

// --- sessions -----------------------------------------------------------

/** A session key: external endpoint and remote endpoint. */
export interface CtKey {
  l4proto: number;
  family: 4 | 6;
  extPort: number;
  remotePort: number;
  extAddr: Uint8Array;
  remoteAddr: Uint8Array;
}

/** A session value. */
export interface CtValue {
  intAddr: Uint8Array;
  intPort: number;
  state: number;
  flags: number;
  /** CLOCK_MONOTONIC (coarse) of the last packet. */
  lastSeenNs: bigint;
  /** CLOCK_MONOTONIC seconds when the session (or its restart) began. */
  createdS: number;
}

/** Encodes `struct ct_key`. */
export function encodeCtKey(k: CtKey): Uint8Array {
  const L = CT_KEY_LAYOUT;
  const b = new Uint8Array(L.size);
  const v = view(b);
  b[f(L, "l4proto")] = k.l4proto;
  b[f(L, "family")] = k.family;
  v.setUint16(f(L, "ext_port"), k.extPort, false);
  v.setUint16(f(L, "remote_port"), k.remotePort, false);
  b.set(addr16(k.extAddr), f(L, "ext_addr"));
  b.set(addr16(k.remoteAddr), f(L, "remote_addr"));
  return b;
}

/** Decodes `struct ct_key`. */
export function decodeCtKey(b: Uint8Array): CtKey {
  const L = CT_KEY_LAYOUT;
  const v = view(b);
  const family = b[f(L, "family")] as 4 | 6;
  return {
    l4proto: b[f(L, "l4proto")],
    family,
    extPort: v.getUint16(f(L, "ext_port"), false),
    remotePort: v.getUint16(f(L, "remote_port"), false),
    extAddr: addrOf(family, b.subarray(f(L, "ext_addr"), f(L, "ext_addr") + 16)),
    remoteAddr: addrOf(family, b.subarray(f(L, "remote_addr"), f(L, "remote_addr") + 16)),
  };
}

/** Decodes `struct ct_value` for a family. */
export function decodeCtValue(b: Uint8Array, family: 4 | 6): CtValue {
  const L = CT_VALUE_LAYOUT;
  const v = view(b);
  return {
    intAddr: addrOf(family, b.subarray(f(L, "int_addr"), f(L, "int_addr") + 16)),
    intPort: v.getUint16(f(L, "int_port"), false),
    state: b[f(L, "state")],
    flags: b[f(L, "flags")],
    lastSeenNs: v.getBigUint64(f(L, "last_seen_ns"), true),
    createdS: v.getUint32(f(L, "created_s"), true),
  };
}

/** An address-only mapping of another IP protocol (map_addr_nat). */
export interface AddrMapping {
  family: 4 | 6;
  l4proto: number;
  extAddr: Uint8Array;
  remoteAddr: Uint8Array;
  intAddr: Uint8Array;
  /** CLOCK_MONOTONIC seconds when it was made. */
  createdS: number;
  /** CLOCK_MONOTONIC of its last packet. */
  lastSeenNs: bigint;
}

/** Encodes the key of an address-only mapping. */
export function encodeAddrKey(
  k: Pick<AddrMapping, "family" | "l4proto" | "extAddr" | "remoteAddr">,
): Uint8Array {
  const L = ADDR_KEY_LAYOUT;
  const b = new Uint8Array(L.size);
  b[f(L, "family")] = k.family;
  b[f(L, "l4proto")] = k.l4proto;
  b.set(addr16(k.extAddr), f(L, "ext_addr"));
  b.set(addr16(k.remoteAddr), f(L, "remote_addr"));
  return b;
}

/**
 * Encodes a `map_frag` key: the datagram's family, protocol (IPv6: its Fragment header's next
 * header), record kind, identification (`id`, 4 bytes in network order; IPv4's 2 bytes first)
 * and addresses as the packet carries them.
 */
export function encodeFragKey(k: {
  family: number;
  l4proto: number;
  kind: number;
  id: Uint8Array;
  src: Uint8Array;
  dst: Uint8Array;
}): Uint8Array {
  const L = FRAG_KEY_LAYOUT;
  const b = new Uint8Array(L.size);
  b[f(L, "family")] = k.family;
  b[f(L, "l4proto")] = k.l4proto;
  b[f(L, "egress")] = k.kind;
  b.set(k.id.subarray(0, 4), f(L, "id"));
  b.set(addr16(k.src), f(L, "src"));
  b.set(addr16(k.dst), f(L, "dst"));
  return b;
}

/** Decodes a map_addr_nat entry (`struct addr_key`, `struct addr_value`). */
export function decodeAddrMapping(key: Uint8Array, value: Uint8Array): AddrMapping {
  const K = ADDR_KEY_LAYOUT, V = ADDR_VALUE_LAYOUT;
  const family = key[f(K, "family")] as 4 | 6;
  const at = (b: Uint8Array, o: number) => addrOf(family, b.subarray(o, o + 16));
  const v = view(value);
  return {
    family,
    l4proto: key[f(K, "l4proto")],
    extAddr: at(key, f(K, "ext_addr")),
    remoteAddr: at(key, f(K, "remote_addr")),
    intAddr: at(value, f(V, "int_addr")),
    createdS: v.getUint32(f(V, "created_s"), true),
    lastSeenNs: v.getBigUint64(f(V, "last_seen_ns"), true),
  };
}

/** Decodes per-CPU counters (one u64 per CPU) into their sum. */
export function sumPerCpu(b: Uint8Array): bigint {
  const v = view(b);
  let s = 0n;
  for (let o = 0; o + 8 <= b.length; o += 8) s += v.getBigUint64(o, true);
  return s;
}

/** Decodes per-CPU `struct traffic_counter` values into their sums. */
export function sumPerCpuTraffic(b: Uint8Array): { packets: bigint; bytes: bigint } {
  const v = view(b);
  let packets = 0n, bytes = 0n;
  for (let o = 0; o + 16 <= b.length; o += 16) {
    packets += v.getBigUint64(o, true);
    bytes += v.getBigUint64(o + 8, true);
  }
  return { packets, bytes };
}
