/**
 * Apply: write a {@link NatPlan} into the maps of a loaded object, removing
 * entries the plan no longer has. Safe to call again after any change.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import {
  addr16,
  ADDR_KEY_LAYOUT,
  ADDR_VALUE_LAYOUT,
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  DEFAULT_EXT_LAYOUT,
  encodeDefaultExt,
  encodeExternalConfig,
  encodeLpmKey,
  EXT_FLAGS,
  EXTERNAL_CONFIG_LAYOUT,
  IPPROTO,
  LPM_KEY_LAYOUT,
  type ProtoName,
  protoName,
  type StructLayout,
} from "./codec.ts";
import type { PortRange } from "../config/types.ts";
import { inRanges } from "../config/ranges.ts";
import type { NatMaps } from "./loader.ts";
import { cidrHas, type NatPlan } from "./plan.ts";
import {
  forEachLiveRecord,
  readSlots,
  RECORD_AT,
  releaseSlotRecords,
  sameAddr,
  slotCount,
  slotOf,
  writeSlots,
} from "./records.ts";
import { assignSlots, departedSlots } from "./slots.ts";
import { syncPrefixSets } from "./prefixes.ts";
import { formatAddr } from "../config/cidr.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

function syncLpm(fd: number, valueSize: number, want: Map<string, [Uint8Array, Uint8Array]>): void {
  for (const { key } of [...bpf.mapEntries(fd, LPM_KEY_LAYOUT.size, valueSize)]) {
    if (!want.has(hex(key))) bpf.mapDelete(fd, key);
  }
  for (const [k, v] of want.values()) bpf.mapUpdate(fd, k, v);
}

/**
 * The entries of `map_externals` and `map_dest_config` a plan makes, by key (hex): of two entries
 * with one key the later is the one written.
 */
export function lpmEntriesOf(
  plan: NatPlan,
): { ext: Map<string, [Uint8Array, Uint8Array]>; dest: Map<string, [Uint8Array, Uint8Array]> } {
  const ext = new Map<string, [Uint8Array, Uint8Array]>();
  for (const e of plan.externals) {
    const k = encodeLpmKey(e.family, e.addr, e.prefixLen);
    ext.set(hex(k), [k, encodeExternalConfig(e.cfg)]);
  }
  const dest = new Map<string, [Uint8Array, Uint8Array]>();
  for (const d of plan.destConfig) {
    const k = encodeLpmKey(d.family, d.addr, d.prefixLen);
    const v = new Uint8Array(4);
    new DataView(v.buffer).setUint32(0, d.flags, true);
    dest.set(hex(k), [k, v]);
  }
  return { ext, dest };
}

/**
 * Writes the plan into the maps. The plan's addresses get their slots first (when one is free):
 * a new flow sent to an address that has none yet is refused (`drop_no_port`), and the default
 * external address below is where new flows go from the moment it is written.
 */
export function applyPlan(maps: NatMaps, plan: NatPlan): void {
  syncSlots(maps, plan);
  const { ext, dest } = lpmEntriesOf(plan);
  syncLpm(maps.externals, EXTERNAL_CONFIG_LAYOUT.size, ext);
  syncLpm(maps.destConfig, 4, dest);
  // the flags-only lookups' copy of both tries
  syncPrefixSets(maps, { ext: ext.values(), dest: dest.values() });

  ([4, 6] as const).forEach((family) => writeDefaultExt(maps, plan, family));
}

function writeDefaultExt(maps: NatMaps, plan: NatPlan, family: 4 | 6): void {
  const d = plan.defaultExt[family];
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, family === 4 ? 0 : 1, true);
  const value = d
    ? encodeDefaultExt({ addr: d.addr, valid: true, only: d.only, cfg: d.cfg })
    : new Uint8Array(DEFAULT_EXT_LAYOUT.size);
  bpf.mapUpdate(maps.defaultExt, key, value);
}

/**
 * A family's default external without a slot (more addresses than `external_slots`, the new one
 * first) would refuse every new flow: the first of the plan's other addresses of that family new
 * mappings may be made on that has a slot takes its place, in `plan` and in the map (the slots
 * as {@link syncSlots} left them). Returns the addresses made default so.
 */
export function defaultsWithSlots(
  maps: NatMaps,
  plan: NatPlan,
): { family: 4 | 6; addr: Uint8Array; instead: Uint8Array }[] {
  const out: { family: 4 | 6; addr: Uint8Array; instead: Uint8Array }[] = [];
  const slotted = readSlots(maps.slots);
  for (const family of [4, 6] as const) {
    const d = plan.defaultExt[family];
    if (!d || slotOf(slotted, family, d.addr) >= 0) continue;
    const other = plan.resolved.find((r) =>
      r.family === family && !r.spec.noSnat && !r.spec.isInternal &&
      slotOf(slotted, family, r.addr) >= 0
    );
    const e = other &&
      plan.externals.find((x) => x.family === family && sameAddr(x.addr, other.addr));
    if (!other || !e || !(e.cfg.flags & EXT_FLAGS.EXTERNAL) || e.cfg.flags & EXT_FLAGS.NO_SNAT) {
      continue;
    }
    plan.defaultExt[family] = { ...other, cfg: e.cfg, only: false };
    writeDefaultExt(maps, plan, family);
    out.push({ family, addr: other.addr, instead: d.addr });
  }
  return out;
}

/**
 * Gives the plan's external addresses that have no slot a free one (lib/nat/slots.ts). Returns
 * the addresses left without one.
 */
export function syncSlots(maps: NatMaps, plan: NatPlan): { family: 4 | 6; addr: Uint8Array }[] {
  const { table, unplaced } = assignSlots(readSlots(maps.slots), plan, slotCount(maps.records));
  writeSlots(maps.slots, table);
  return unplaced;
}

/**
 * Deletes bindings and sessions whose external address the plan no longer
 * has (the address left the interface), and that address's free-port hint:
 * its bits would mark the purged ports taken should the address come back.
 * The address's slot is then free, and given to an address that waits for one; `unplaced`:
 * the plan's addresses still without a slot (no new mappings are made on them).
 * Mappings of addresses that remain are untouched, so their connections
 * survive unrelated changes.
 *
 * The sessions are read in batches and only the stale entries are decoded: at a start over
 * pinned state with 1,000,000 sessions, entry-by-entry reading held every entry as an object at
 * once (hundreds of MB of RSS) and took seconds. Deleting the entries of a batch before the next
 * is read is safe: a hash map's batch position is a bucket, and those buckets are behind it.
 */
export function purgeStale(
  n: { maps: NatMaps; releaseFd: number },
  plan: NatPlan,
  /** Tests: runs between the first release of the departed slots' records and the second. */
  meanwhile?: () => void,
): {
  bindings: number;
  sessions: number;
  /** Address-only mappings of other IP protocols on an address no longer translated to. */
  addressOnly: number;
  /** The external addresses whose bindings, sessions or mappings went, formatted. */
  departed: string[];
  unplaced: { family: 4 | 6; addr: Uint8Array }[];
} {
  const maps = n.maps;
  const valid = plan.resolved.map((r) => addr16(r.addr));
  const isValid = (b: Uint8Array, at: number) =>
    valid.some((v) => v.every((x, i) => x === b[at + i]));
  let bindings = 0, sessions = 0;
  const current = readSlots(maps.slots);
  const departed = departedSlots(current, plan);
  const gone = new Set<string>();
  for (const d of departed) {
    const r = releaseSlotRecords(maps, n.releaseFd, d.slot);
    bindings += r.bindings;
    sessions += r.sessions;
    if (r.bindings || r.sessions) gone.add(formatAddr(d.addr));
  }
  /** Deletes the entries of a map keyed by an external address (`key`'s ext_addr) that is not. */
  const dropDeparted = (fd: number, key: StructLayout, valueSize: number) => {
    let n = 0;
    const ks = key.size, ext = key.fields.ext_addr.offset, fam = key.fields.family.offset;
    bpf.forEachEntry(fd, ks, valueSize, ({ keys, ko }) => {
      if (isValid(keys, ko + ext) || !bpf.mapDelete(fd, keys.subarray(ko, ko + ks))) return;
      n++;
      const len = keys[ko + fam] === 4 ? 4 : 16;
      gone.add(formatAddr(keys.slice(ko + ext, ko + ext + len)));
    });
    return n;
  };
  sessions += dropDeparted(maps.ct, CT_KEY_LAYOUT, CT_VALUE_LAYOUT.size);
  const addressOnly = dropDeparted(maps.addrNat, ADDR_KEY_LAYOUT, ADDR_VALUE_LAYOUT.size);
  meanwhile?.();
  if (departed.length > 0) {
    writeSlots(maps.slots, current.filter((s) => !departed.includes(s)));
    // A binding claimed on a departed address while the above ran (its slot still named it)
    // would outlive it: the records are released again now that no new one can be claimed.
    for (const d of departed) {
      const r = releaseSlotRecords(maps, n.releaseFd, d.slot);
      bindings += r.bindings;
      sessions += r.sessions;
    }
  }
  const unplaced = syncSlots(maps, plan);
  return { bindings, sessions, addressOnly, departed: [...gone].sort(), unplaced };
}

/** Bindings of one external address and protocol whose ports lie outside its ranges now. */
export interface OutsideRanges {
  external: string;
  protocol: ProtoName;
  bindings: number;
}

/**
 * The bindings whose external port lies outside its protocol's ranges under `plan` (a restart or
 * reload narrowed them, or turned the protocol off): they keep their mapping until idle, as
 * conntrack entries outlive a changed nftables rule, and traffic keeps them alive. Inbound pings'
 * identifiers (`icmp_in_ranges`) count as inside.
 */
export function bindingsOutsideRanges(maps: NatMaps, plan: NatPlan): OutsideRanges[] {
  const count = new Map<string, OutsideRanges>(); // by external/protocol
  const rangesOf = new Map<number, Record<number, PortRange[]> | null>(); // by slot
  forEachLiveRecord(maps.records, readSlots(maps.slots), (values, vo, _vv, slot, port) => {
    let r = rangesOf.get(slot.slot);
    if (r === undefined) {
      // The longest-prefix external entry, as the datapath's LPM lookup finds it.
      const e = plan.externals
        .filter((x) => cidrHas(x, slot.family, slot.addr))
        .sort((a, b) => b.prefixLen - a.prefixLen)[0];
      r = e
        ? {
          [IPPROTO.TCP]: e.cfg.tcp,
          [IPPROTO.UDP]: e.cfg.udp,
          [IPPROTO.ICMP]: [...e.cfg.icmp, ...(e.cfg.icmpIn ?? [])],
        }
        : null;
      rangesOf.set(slot.slot, r);
    }
    if (!r) return; // no external entry: the purge drops these
    const l4proto = values[vo + RECORD_AT.l4proto.offset];
    const ranges = r[l4proto === IPPROTO.TCP || l4proto === IPPROTO.UDP ? l4proto : IPPROTO.ICMP];
    if (inRanges(port, ranges)) return;
    const external = formatAddr(slot.addr), protocol = protoName(l4proto);
    const k = `${external}/${protocol}`;
    const c = count.get(k);
    if (c) c.bindings++;
    else count.set(k, { external, protocol, bindings: 1 });
  });
  return [...count].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, o]) => o);
}
