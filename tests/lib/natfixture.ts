/**
 * A loaded NAT object with a plan applied, for packet tests through
 * BPF_PROG_TEST_RUN. No interface or namespace is involved.
 * @module
 */

import {
  FLOW_CACHE_SLOTS,
  type InterfaceConfig,
  type PortRange,
  type ProtoRanges,
} from "../../lib/config/types.ts";
import { formatAddr, parseAddr } from "../../lib/config/cidr.ts";
import * as bpf from "../../lib/ffi/libbpf.ts";
import {
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  type CtKey,
  type CtValue,
  decodeCtKey,
  decodeCtValue,
  decodeHostCounts,
  HOST_COUNTS_LAYOUT,
  HOST_KEY_LAYOUT,
  type RoConfig,
} from "../../lib/nat/codec.ts";
import { forEachSession } from "../../lib/nat/records.ts";
import { applyPlan } from "../../lib/nat/apply.ts";
import { roConfigOf } from "../../lib/daemon.ts";
import {
  closeNat,
  type CsumMode,
  loadNat,
  type LoadOptions,
  type NatMaps,
  type NatObject,
} from "../../lib/nat/loader.ts";
import { planInterface } from "../../lib/nat/plan.ts";
import { STATS } from "../../lib/nat/codec.ts";
import { type PinnedState, statCount } from "../../lib/state/read.ts";
import { buildPacket, type PacketSpec, type ParsedPacket, parsePacket } from "./packet.ts";

/** TC verdicts. */
export const TC_ACT_OK = 0;
/** TC verdict: drop. */
export const TC_ACT_SHOT = 2;
/** TC verdict: redirected (bpf_redirect*). */
export const TC_ACT_REDIRECT = 7;

/** Ranges for all protocols. */
export function ranges(tcp: PortRange[], udp = tcp, icmp = tcp): ProtoRanges {
  return { tcp, udp, icmp, icmpIn: icmp, icmpOut: icmp };
}

/** An interface config with einat's defaults, overridable. */
export function testInterfaceConfig(o: Partial<InterfaceConfig> = {}): InterfaceConfig {
  const r = ranges([{ start: 20000, end: 29999 }], [{ start: 20000, end: 29999 }], [{
    start: 0,
    end: 65535,
  }]);
  return {
    ifName: "wan0",
    nat44: true,
    nat66: false,
    bpfLogLevel: 0,
    bpfFibLookupExternal: false,
    allowInboundIcmpx: false,
    snatOtherProtocols: true,
    timeouts: {
      fragment: 2000,
      icmpDefault: 60_000,
      udpMin: 120_000,
      udpDefault: 300_000,
      tcpTrans: 240_000,
      tcpEst: 7_440_000,
      tcpClosing: 240_000,
      other: 600_000,
    },
    fragTrackMaxRecords: 65536,
    otherMaxRecords: 4096,
    bindingMaxRecords: 65536,
    bindingMaxPerHost: 0,
    sessionMaxPerHost: 0,
    ctMaxRecords: 65536 * 2,
    preferTcx: false,
    preallocateMaps: false,
    flowCacheSlots: FLOW_CACHE_SLOTS.default,
    sessionCounters: 0,
    externalSlots: 0,
    noSnatDests: [],
    defaultExternals: true,
    snatInternals: [],
    ipv4HairpinRoute: {
      enable: false,
      internalIfNames: [],
      ipProtocols: [],
      ipRulePref: 0,
      tableId: 0,
    },
    ipv6HairpinRoute: {
      enable: false,
      internalIfNames: [],
      ipProtocols: [],
      ipRulePref: 0,
      tableId: 0,
    },
    externals: [],
    defaultRanges: r,
    ...o,
  };
}

/** A NAT loaded for tests, with helpers to push packets through it. */
export interface Nat {
  nat: NatObject;
  egress(spec: PacketSpec): { retval: number; out: ParsedPacket; bytes: Uint8Array };
  ingress(spec: PacketSpec): { retval: number; out: ParsedPacket; bytes: Uint8Array };
  runRaw(
    dir: "egress" | "ingress",
    bytes: Uint8Array,
    opts?: bpf.TestRunOptions,
  ): { retval: number; bytes: Uint8Array };
  close(): void;
}

/** What {@link loadTestNat} may change from the daemon's load of an interface. */
export interface TestNatOptions {
  /** The embedded object to load (the inline-checksum one where the kernel allows, when absent). */
  csum?: CsumMode;
  /** External-address slots (the loader's default when absent). */
  extSlots?: number;
  /** Keeps the state maps pinned there, reusing those already pinned (lib/state/pin.ts). */
  pin?: LoadOptions["pin"];
  /** Knobs of the read-only config that override what the interface config gives. */
  ro?: Partial<RoConfig>;
}

/** Loads the NAT with `ic` and external addresses `extAddrs` (CIDR strings), and `opts`. */
export async function loadTestNat(
  ic: InterfaceConfig = testInterfaceConfig(),
  extAddrs = ["203.0.113.1/24"],
  { csum, extSlots, pin, ro = {} }: TestNatOptions = {},
): Promise<Nat> {
  const nat = await loadNat({
    ro: { ...roConfigOf(ic), ...ro },
    bindingMaxRecords: ic.bindingMaxRecords,
    ctMaxRecords: ic.ctMaxRecords,
    preallocate: ic.preallocateMaps,
    otherMaxRecords: ic.otherMaxRecords,
    csum,
    extSlots,
    pin,
  });
  const addrs = extAddrs.map((s) => {
    const [a, p] = s.split("/");
    const addr = parseAddr(a);
    return { family: addr.length === 4 ? 4 as const : 6 as const, addr, prefixLen: Number(p) };
  });
  applyPlan(nat.maps, planInterface(ic, addrs));
  const runRaw = (dir: "egress" | "ingress", bytes: Uint8Array, opts?: bpf.TestRunOptions) => {
    const r = bpf.testRun(dir === "egress" ? nat.egressFd : nat.ingressFd, bytes, opts);
    return { retval: r.retval, bytes: r.dataOut };
  };
  const run = (dir: "egress" | "ingress") => (spec: PacketSpec) => {
    const r = runRaw(dir, buildPacket(spec));
    return { retval: r.retval, out: parsePacket(r.bytes), bytes: r.bytes };
  };
  return {
    nat,
    egress: run("egress"),
    ingress: run("ingress"),
    runRaw,
    close: () => closeNat(nat),
  };
}

/** A counter of `map_stats` (fd), summed over CPUs. */
export function stat(fd: number, name: typeof STATS[number]): bigint {
  return BigInt(statCount(fd, name));
}

/**
 * Every session of the NAT, decoded: the map_ct entries and the first sessions inline in the
 * mapping records.
 */
export function sessionsOf(maps: NatMaps): { key: CtKey; value: CtValue }[] {
  const out: { key: CtKey; value: CtValue }[] = [];
  forEachSession({ ct: maps.ct, records: maps.records, slots: maps.slots }, (e) => {
    const key = decodeCtKey(e.keys.slice(e.ko, e.ko + CT_KEY_LAYOUT.size));
    out.push({
      key,
      value: decodeCtValue(e.values.slice(e.vo, e.vo + CT_VALUE_LAYOUT.size), key.family),
    });
  });
  return out;
}

/**
 * A loaded NAT's maps as lib/state/read.ts reads a pinned state's (`meta` gives the timeouts
 * `show` would know).
 */
export function stateView(nat: NatObject, meta: PinnedState["meta"] = null): PinnedState {
  return {
    ifname: "test",
    dir: "",
    meta,
    fds: {
      map_records: nat.maps.records,
      map_slots: nat.maps.slots,
      map_ct: nat.maps.ct,
      map_stats: nat.maps.stats,
      map_traffic: nat.maps.traffic,
      map_sess_counters: nat.maps.sessCounters,
      map_addr_nat: nat.maps.addrNat,
    },
    close() {},
  };
}

/** The counts of `map_hosts` (bpf/lib/hosts.h), by internal address. */
export function hostCounts(n: Nat): Record<string, { bindings: number; sessions: number }> {
  const out: Record<string, { bindings: number; sessions: number }> = {};
  for (const e of bpf.mapEntries(n.nat.maps.hosts, HOST_KEY_LAYOUT.size, HOST_COUNTS_LAYOUT.size)) {
    const h = decodeHostCounts(e.key, e.value);
    out[formatAddr(h.addr)] = { bindings: Number(h.bindings), sessions: Number(h.sessions) };
  }
  return out;
}
