/**
 * Normalised configuration: what the CLI and the TOML file are turned into
 * after validation. Everything downstream (plan, apply, watch) reads only
 * these types, never raw flags or TOML.
 * @module
 */

/** An inclusive port (or ICMP identifier) range. */
export interface PortRange {
  start: number;
  end: number;
}

/** Port ranges per protocol; an empty list disables NAT for that protocol. */
export interface ProtoRanges {
  tcp: PortRange[];
  udp: PortRange[];
  icmp: PortRange[];
  icmpIn: PortRange[];
  icmpOut: PortRange[];
}

/** An IP network: `addr` holds 4 or 16 bytes, host bits cleared. */
export interface Cidr {
  family: 4 | 6;
  addr: Uint8Array;
  prefixLen: number;
}

/** Which addresses an `[[interfaces.externals]]` entry describes. */
export type ExternalMatch =
  | { kind: "address"; addr: Cidr } // a static address (prefixLen 32/128)
  | { kind: "network"; net: Cidr } // match interface addresses in this network
  | { kind: "range"; family: 4 | 6; start: Uint8Array; end: Uint8Array }
  // `network = "10.0.0.5/24"`: a static network used as-is (not matched against
  // interface addresses); `address` (10.0.0.5, host bits kept) is the NAT source.
  | { kind: "staticNetwork"; net: Cidr; address: Uint8Array };

/** One `[[interfaces.externals]]` entry. */
export interface ExternalSpec {
  match: ExternalMatch;
  isInternal: boolean;
  noSnat: boolean;
  noHairpin: boolean;
  ranges: ProtoRanges;
}

/** `[interfaces.ipv4_hairpin_route]` / `[interfaces.ipv6_hairpin_route]`. */
export interface HairpinRoute {
  enable: boolean;
  internalIfNames: string[];
  ipProtocols: string[];
  ipRulePref: number;
  tableId: number;
}

/** Timeouts, in milliseconds. */
export interface Timeouts {
  fragment: number;
  icmpDefault: number;
  udpMin: number;
  udpDefault: number;
  /** TCP opening (partially open): `timeout_tcp_opening`, else `timeout_tcp_trans`. */
  tcpTrans: number;
  tcpEst: number;
  /** TCP closing (FIN each way, or reset): `timeout_tcp_closing`, else `timeout_tcp_trans`. */
  tcpClosing: number;
  /** Address-only mappings of the IP protocols without ports (`timeout_other`). */
  other: number;
}

/** One interface einat serves. */
export interface InterfaceConfig {
  /** Interface name; may be absent when only `ifIndex` is given. */
  ifName?: string;
  ifIndex?: number;
  nat44: boolean;
  nat66: boolean;
  bpfLogLevel: number;
  bpfFibLookupExternal: boolean;
  allowInboundIcmpx: boolean;
  /** Translate the source address of the IP protocols without ports (GRE, ESP, ...). */
  snatOtherProtocols: boolean;
  timeouts: Timeouts;
  fragTrackMaxRecords: number;
  /** Address-only mappings of other IP protocols at most (`other_max_records`). */
  otherMaxRecords: number;
  bindingMaxRecords: number;
  /** `binding_max_per_host`: bindings one internal address may hold; 0: no limit. */
  bindingMaxPerHost: number;
  /**
   * `session_max_per_host`: sessions the bindings of one internal address may hold (their
   * first ones included); 0: no limit.
   */
  sessionMaxPerHost: number;
  ctMaxRecords: number;
  /** `preallocate_maps`: session records allocated when the map is created. */
  preallocateMaps: boolean;
  /**
   * `external_slots`: external addresses that bindings can be made on at once (slots of the
   * mapping records, 12 MiB of kernel memory each); 0: one per NATed family, and one more.
   */
  externalSlots: number;
  /** `flow_cache_slots`: established-flow cache slots per CPU, a power of two. */
  flowCacheSlots: number;
  /**
   * `session_counters`: sessions whose packets and bytes are counted (the most recently
   * counted kept); 0: off.
   */
  sessionCounters: number;
  preferTcx: boolean;
  noSnatDests: Cidr[];
  defaultExternals: boolean;
  snatInternals: Cidr[];
  ipv4HairpinRoute: HairpinRoute;
  ipv6HairpinRoute: HairpinRoute;
  externals: ExternalSpec[];
  /** Ranges used for externals that give none of their own. */
  defaultRanges: ProtoRanges;
}

/** `[defaults]` table. */
export interface Defaults {
  ipv4LocalRulePref: number;
  ipv6LocalRulePref: number;
  ipv4HairpinRulePref: number;
  ipv6HairpinRulePref: number;
  ipv4HairpinTableId: number;
  ipv6HairpinTableId: number;
  ranges: ProtoRanges;
  /**
   * The ICMP in/out ranges as [defaults] names them, before an empty `icmp_ranges` clears them
   * in `ranges`: what an external that sets its own `icmp_ranges` inherits (as in einat-ebpf).
   */
  icmpDirs?: Pick<ProtoRanges, "icmpIn" | "icmpOut">;
}

/** The whole validated configuration. */
export interface Config {
  defaults: Defaults;
  interfaces: InterfaceConfig[];
}

/** Raised for any invalid flag or config key; `path` names the key. */
export class ConfigError extends Error {
  constructor(
    /** e.g. `interfaces[1].externals[0].match_address` or `--ports`. */
    readonly path: string,
    message: string,
    /** The file the key came from, if any. */
    readonly file?: string,
  ) {
    super(`${file ? file + ": " : ""}${path}: ${message}`);
    this.name = "ConfigError";
  }
}

/**
 * Flow-cache slots per CPU (`flow_cache_slots`, bpf/lib/flowcache.h): the default (1 MiB of
 * 64-byte slots per CPU), the smallest and the largest. A power of two.
 */
export const FLOW_CACHE_SLOTS = { default: 16384, min: 256, max: 1 << 20 } as const;

/** A valid `flow_cache_slots`: a power of two from {@link FLOW_CACHE_SLOTS}.min to .max. */
export function isFlowCacheSize(slots: number): boolean {
  return Number.isInteger(Math.log2(slots)) && slots >= FLOW_CACHE_SLOTS.min &&
    slots <= FLOW_CACHE_SLOTS.max;
}

/**
 * The most sessions `session_counters` may count: the table is allocated whole at start,
 * ~96 + 40 bytes per possible CPU an entry (~190 MiB on 2 CPUs at this size).
 */
export const SESSION_COUNTERS_MAX = 1 << 20;
