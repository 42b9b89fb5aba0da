/**
 * Plan: from an interface's configuration and its current addresses, compute
 * what the BPF maps must hold. Pure functions, no I/O.
 * @module
 */

import type { Cidr, ExternalSpec, InterfaceConfig, ProtoRanges } from "../config/types.ts";
import { EXT_FLAGS, type ExternalConfig } from "./codec.ts";

/** An address assigned to an interface. */
export interface IfAddr {
  family: 4 | 6;
  addr: Uint8Array;
  prefixLen: number;
}

/** One LPM entry of `map_externals` / `map_dest_config`. */
export interface LpmEntry {
  family: 4 | 6;
  addr: Uint8Array;
  prefixLen: number;
  cfg: ExternalConfig;
}

/** A resolved external address with the entry that selected it. */
export interface ResolvedExternal {
  family: 4 | 6;
  addr: Uint8Array;
  spec: ExternalSpec;
}

/** The source address of a family's new mappings. */
export type DefaultExternal = ResolvedExternal & {
  cfg: ExternalConfig;
  /**
   * No other external address of the family can be SNATed to, so the source the FIB would pick
   * for a destination (`bpf_fib_lookup_external`) can only be this one or none: the datapath
   * skips that lookup.
   */
  only: boolean;
};

/** What the maps of one interface must contain. */
export interface NatPlan {
  /** Source address for new mappings per family, if any. */
  defaultExt: {
    4?: DefaultExternal;
    6?: DefaultExternal;
  };
  externals: LpmEntry[];
  /** `map_dest_config`: no-SNAT destination networks and the externals (EXT_FLAGS). */
  destConfig: { family: 4 | 6; addr: Uint8Array; prefixLen: number; flags: number }[];
  resolved: ResolvedExternal[];
}

/** True when `addr` (same family) lies inside `net`. */
export function cidrHas(net: Cidr, family: 4 | 6, addr: Uint8Array): boolean {
  if (net.family !== family) return false;
  let bits = net.prefixLen;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((net.addr[i] & mask) !== (addr[i] & mask)) return false;
  }
  return true;
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/** How specifically an externals entry matches `addr`; -1 if not at all. */
function matchLen(spec: ExternalSpec, family: 4 | 6, addr: Uint8Array): number {
  const m = spec.match;
  switch (m.kind) {
    case "address":
      return cidrHas(m.addr, family, addr) ? m.addr.prefixLen : -1;
    case "network":
      return cidrHas(m.net, family, addr) ? m.net.prefixLen : -1;
    case "range": {
      if (m.family !== family) return -1;
      if (cmpBytes(addr, m.start) < 0 || cmpBytes(addr, m.end) > 0) return -1;
      // A range is as specific as the smallest prefix that covers it.
      let common = 0;
      for (let i = 0; i < m.start.length; i++) {
        const x = m.start[i] ^ m.end[i];
        if (x === 0) {
          common += 8;
          continue;
        }
        common += Math.clz32(x) - 24;
        break;
      }
      return common;
    }
  }
  return -1;
}

/** The BPF view of an external's ranges and flags. */
export function externalConfigOf(spec: ExternalSpec, fallback: ProtoRanges): ExternalConfig {
  // An internal entry marks a source to SNAT explicitly (as snat_internals does): no ranges,
  // never a source of mappings nor a hairpin destination (einat-ebpf's IS_INTERNAL).
  if (spec.isInternal) return { tcp: [], udp: [], icmp: [], icmpIn: [], flags: 0 };
  const r = spec.ranges ?? fallback;
  let flags: number = EXT_FLAGS.EXTERNAL;
  if (spec.noSnat) flags = EXT_FLAGS.NO_SNAT;
  if (spec.noHairpin) flags |= EXT_FLAGS.NO_HAIRPIN;
  // Outbound echo identifiers come from icmp_out_ranges, those pings from
  // outside may bind from icmp_in_ranges (both inside icmp_ranges).
  const icmpOn = r.icmp.length > 0;
  return {
    tcp: r.tcp,
    udp: r.udp,
    icmp: icmpOn ? r.icmpOut : [],
    icmpIn: icmpOn ? r.icmpIn : [],
    flags,
  };
}

/** A match-all externals entry using the interface's default ranges. */
function matchAll(family: 4 | 6, ranges: ProtoRanges): ExternalSpec {
  return {
    match: {
      kind: "network",
      net: { family, addr: new Uint8Array(family === 4 ? 4 : 16), prefixLen: 0 },
    },
    isInternal: false,
    noSnat: false,
    noHairpin: false,
    ranges,
  };
}

/**
 * Resolves which addresses are externals: static `address` entries always,
 * interface addresses through the most specific matching entry (earlier
 * entries win ties). Order: entries in config order, addresses in interface
 * order within an entry.
 */
export function resolveExternals(ic: InterfaceConfig, addrs: IfAddr[]): ResolvedExternal[] {
  const specs = [...ic.externals];
  // Match-all entries for the families NATed only (as einat-ebpf): an address of a family
  // that is not NATed never takes an external slot.
  if (ic.defaultExternals && ic.nat44) specs.push(matchAll(4, ic.defaultRanges));
  if (ic.defaultExternals && ic.nat66) specs.push(matchAll(6, ic.defaultRanges));
  const chosen = new Map<ExternalSpec, ResolvedExternal[]>();
  const seen = new Set<string>();
  const key = (family: number, a: Uint8Array) => `${family}/${a.join(".")}`;
  for (const s of specs) chosen.set(s, []);
  for (const s of specs) {
    const m = s.match;
    const a = m.kind === "address"
      ? m.addr
      : m.kind === "staticNetwork"
      ? { family: m.net.family, addr: m.address }
      : null;
    // the unspecified address is no source (the parser says it has no effect)
    if (!a || a.addr.every((b) => b === 0)) continue;
    const k = key(a.family, a.addr);
    if (!seen.has(k)) {
      seen.add(k);
      chosen.get(s)!.push({ family: a.family, addr: a.addr, spec: s });
    }
  }
  for (const ia of addrs) {
    const k = key(ia.family, ia.addr);
    if (seen.has(k)) continue;
    let best: ExternalSpec | undefined;
    let bestLen = -1;
    for (const s of specs) {
      if (s.match.kind === "address" || s.match.kind === "staticNetwork") continue;
      const l = matchLen(s, ia.family, ia.addr);
      if (l > bestLen) {
        best = s;
        bestLen = l;
      }
    }
    if (best) {
      seen.add(k);
      chosen.get(best)!.push({ family: ia.family, addr: ia.addr, spec: best });
    }
  }
  return specs.flatMap((s) => chosen.get(s)!)
    .filter((r) => r.family === 4 ? ic.nat44 : ic.nat66);
}

/** Computes the map contents for one interface. */
export function planInterface(ic: InterfaceConfig, addrs: IfAddr[]): NatPlan {
  const resolved = resolveExternals(ic, addrs);
  const plan: NatPlan = { defaultExt: {}, externals: [], destConfig: [], resolved };
  const noSnat: ExternalConfig = { tcp: [], udp: [], icmp: [], flags: EXT_FLAGS.NO_SNAT };

  // A match-all internal network means every source is internal: the family's internals are
  // dropped and everything is translated (einat-ebpf does the same). Kept, its /0 entry would
  // be overwritten by the catch-all no-SNAT one below under the same key.
  const internals = ic.snatInternals.filter((n) =>
    !ic.snatInternals.some((m) => m.family === n.family && m.prefixLen === 0)
  );
  for (const net of internals) {
    plan.externals.push({
      family: net.family,
      addr: net.addr,
      prefixLen: net.prefixLen,
      cfg: { ...noSnat, flags: 0 },
    });
  }
  if (internals.length > 0) {
    for (const family of [4, 6] as const) {
      if (!internals.some((n) => n.family === family)) continue;
      plan.externals.push({
        family,
        addr: new Uint8Array(family === 4 ? 4 : 16),
        prefixLen: 0,
        cfg: noSnat,
      });
    }
  }
  for (const r of resolved) {
    const cfg = externalConfigOf(r.spec, ic.defaultRanges);
    plan.externals.push({
      family: r.family,
      addr: r.addr,
      prefixLen: r.family === 4 ? 32 : 128,
      cfg,
    });
    const enabled = r.family === 4 ? ic.nat44 : ic.nat66;
    if (
      enabled && !plan.defaultExt[r.family] && cfg.flags & EXT_FLAGS.EXTERNAL &&
      !(cfg.flags & EXT_FLAGS.NO_SNAT)
    ) {
      plan.defaultExt[r.family] = { ...r, cfg, only: false };
    }
  }
  // `network = "a/n"`: its address is an external like any (above); the rest of its network is
  // the external side's too, as einat-ebpf installs the whole prefix: sources there leave
  // untranslated (a routed public prefix's hosts, the router's other addresses there). NO_SNAT
  // and not EXTERNAL: no slot, never a FIB-chosen source, no hairpin turn, and the network's
  // other hosts (the ISP's gateway) are not taken for our own address on the way in.
  for (const s of ic.externals) {
    const m = s.match;
    if (m.kind !== "staticNetwork" || m.net.prefixLen === m.net.addr.length * 8) continue;
    if (!(m.net.family === 4 ? ic.nat44 : ic.nat66)) continue;
    const taken = plan.externals.some((e) =>
      e.family === m.net.family && e.prefixLen === m.net.prefixLen &&
      cmpBytes(e.addr, m.net.addr) === 0
    );
    if (taken) continue; // an earlier entry of the same network wins (einat-ebpf: first wins)
    plan.externals.push({
      family: m.net.family,
      addr: m.net.addr,
      prefixLen: m.net.prefixLen,
      cfg: { ...noSnat, flags: s.isInternal ? 0 : EXT_FLAGS.NO_SNAT },
    });
  }
  for (const family of [4, 6] as const) {
    const d = plan.defaultExt[family];
    if (!d) continue;
    const snatTo = plan.externals.filter((e) =>
      e.family === family && e.cfg.flags & EXT_FLAGS.EXTERNAL && !(e.cfg.flags & EXT_FLAGS.NO_SNAT)
    );
    d.only = snatTo.length === 1;
  }
  for (const d of ic.noSnatDests) {
    plan.destConfig.push({
      family: d.family,
      addr: d.addr,
      prefixLen: d.prefixLen,
      flags: EXT_FLAGS.NO_SNAT,
    });
  }
  // The externals as destinations too, so that a new flow's destination takes one lookup
  // (bpf/einat.bpf.c, einat_egress_full): EXTERNAL (with NO_HAIRPIN when set) makes it a
  // hairpin turn; one inside a no_snat_dests network keeps that network's NO_SNAT.
  for (const e of plan.externals) {
    if (!(e.cfg.flags & EXT_FLAGS.EXTERNAL)) continue;
    const flags = EXT_FLAGS.EXTERNAL | (e.cfg.flags & EXT_FLAGS.NO_HAIRPIN) |
      (ic.noSnatDests.some((d) => cidrHas(d, e.family, e.addr)) ? EXT_FLAGS.NO_SNAT : 0);
    const same = plan.destConfig.find((d) =>
      d.family === e.family && d.prefixLen === e.prefixLen && cmpBytes(d.addr, e.addr) === 0
    );
    if (same) same.flags |= flags;
    else plan.destConfig.push({ family: e.family, addr: e.addr, prefixLen: e.prefixLen, flags });
  }
  return plan;
}
