/**
 * Reading pinned state for `einat show` and the metrics endpoint. Every map
 * is opened read-only (`BPF_F_RDONLY`), so a reader cannot change anything
 * the running programs use; entries are copied out in batches.
 * @module
 */

import { formatAddr } from "../config/cidr.ts";
import * as bpf from "../ffi/libbpf.ts";
import { addRow, keyedRows, sortedRows } from "./rowsort.ts";
import { closeFd, monotonicNs } from "../ffi/libc.ts";
import {
  BINDING_DYING,
  CT_FLAGS,
  CT_KEY_LAYOUT,
  CT_STATE,
  CT_VALUE_LAYOUT,
  decodeAddrMapping,
  IPPROTO,
  type ProtoName,
  protoName,
  STATS,
  sumPerCpu,
  sumPerCpuTraffic,
  TRAFFIC,
} from "../nat/codec.ts";
import {
  flushHint,
  layoutProblems,
  type MetaDoc,
  readMeta,
  STATE_MAPS,
  StateError,
  type StateLayout,
  stateLayout,
  type StateMap,
} from "./pin.ts";
import { embeddedObject } from "../nat/loader.ts";
import {
  counterKey,
  countingOn,
  readSessionCounters,
  type SessionCounts,
  sumCounts,
} from "../nat/counters.ts";
import {
  forEachLiveRecord,
  forEachSession,
  readSlots,
  RECORD_AT,
  type SlotEntry,
} from "../nat/records.ts";
import { onBpffs } from "./bpffs.ts";
import { isNetnsFolder } from "./netns.ts";
import { ifnameOfPinFolder, pinRootOf } from "./options.ts";

/** A protocol as shown. */
export type { ProtoName };

/** One binding (internal endpoint ↔ external endpoint). */
export interface BindingRow {
  interface: string;
  protocol: ProtoName;
  family: 4 | 6;
  internal: string;
  external: string;
  /** Sessions holding the binding. */
  sessions: number;
}

/** One session (external endpoint ↔ remote endpoint), like a `conntrack -L` line. */
export interface SessionRow {
  interface: string;
  protocol: ProtoName;
  family: 4 | 6;
  internal: string;
  external: string;
  remote: string;
  /** TCP: SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSING, RESET; else UNREPLIED/ASSURED. */
  state: string;
  /** Timeout class: "established", "transitory" (TCP opening, UDP one-way) or "closing". */
  timeout: "established" | "transitory" | "closing";
  /** Seconds until expiry, when the timeouts are known; 0 when overdue. */
  secondsLeft: number | null;
  /** Seconds since the session was created. */
  ageSeconds: number;
  /** Seconds since the last packet. */
  idleSeconds: number;
  /**
   * Packets and bytes translated, when `session_counters` is on; null when none are kept for
   * it (not counted yet, or more sessions counted than `session_counters` keeps).
   */
  counters?: SessionCounts | null;
  /**
   * Past its timeout: gone for traffic, and removed by the daemon's next
   * sweep (or the start of the next daemon). Only when the timeouts are known.
   */
  expired: boolean;
}

/**
 * An address-only mapping of another IP protocol (GRE, ESP, ...; bpf/lib/addrnat.h): one
 * internal host per (protocol, external address, remote address).
 */
export interface AddrRow {
  interface: string;
  /** Its name (`gre`, `esp`, ...) or `proto-N`. */
  protocol: string;
  family: 4 | 6;
  internal: string;
  external: string;
  remote: string;
  /** Seconds until it expires, when the timeout is known; 0 when overdue. */
  secondsLeft: number | null;
  idleSeconds: number;
  /** Past its timeout: another host may take it over (no sweep removes it: an LRU map). */
  expired: boolean;
}

const OTHER_PROTOCOLS: Record<number, string> = {
  4: "ipip",
  33: "dccp",
  41: "ipv6",
  47: "gre",
  50: "esp",
  51: "ah",
  115: "l2tp",
  132: "sctp",
  136: "udplite",
};

/** The address-only mappings of another IP protocol; none with a protocol or port filter. */
export function readAddrMappings(s: PinnedState, f: RowFilter = {}, nowNs?: bigint): AddrRow[] {
  const fd = s.fds.map_addr_nat;
  if (fd === undefined || f.proto || f.port !== undefined) return [];
  const now = nowNs ?? monotonicNs();
  const t = s.meta?.timeoutsNs?.other ? BigInt(s.meta.timeoutsNs.other) : null;
  const info = bpf.mapInfo(fd);
  const rows = keyedRows<AddrRow>(KEY2);
  for (const e of bpf.mapLookupBatch(fd, info.keySize, info.valueSize)) {
    const m = decodeAddrMapping(e.key, e.value);
    const addrs: [Uint8Array, number][] = [[m.intAddr, 0], [m.extAddr, 0], [m.remoteAddr, 0]];
    // the address filter only: a protocol or port filter returned none above
    if (
      f.addr && !matches({ addr: f.addr, addrPrefix: f.addrPrefix }, "icmp", m.family, addrs, [])
    ) {
      continue;
    }
    const idle = now > m.lastSeenNs ? now - m.lastSeenNs : 0n;
    const at = addRow(rows, {
      interface: s.ifname,
      protocol: OTHER_PROTOCOLS[m.l4proto] ?? `proto-${m.l4proto}`,
      family: m.family,
      internal: formatAddr(m.intAddr),
      external: formatAddr(m.extAddr),
      remote: formatAddr(m.remoteAddr),
      secondsLeft: t === null ? null : Number((t > idle ? t - idle : 0n) / 1_000_000_000n),
      idleSeconds: Number(idle / 1_000_000_000n),
      expired: t !== null && idle > t,
    });
    const k = putEnd(rows.keys, at, m.family, addr16Of(m.extAddr), 0, 0);
    rows.keys[putEnd(rows.keys, k, m.family, addr16Of(m.remoteAddr), 0, 0)] = m.l4proto;
  }
  return sortedRows(rows);
}

/** A filter over rows. */
export interface RowFilter {
  proto?: ProtoName;
  addr?: Uint8Array;
  /** How many leading bits of `addr` must match (default: all). */
  addrPrefix?: number;
  port?: number;
}

/** `ip:port`, `[ip6]:port`. */
export function endpoint(family: 4 | 6, addr: Uint8Array, port: number): string {
  const a = formatAddr(addr);
  return family === 6 ? `[${a}]:${port}` : `${a}:${port}`;
}

/** Bytes of an endpoint's part of a sort key: family, 16 address bytes, port. */
const END_KEY = 19;
/** Sort-key widths: one endpoint or two, then the protocol. */
const KEY1 = END_KEY + 1, KEY2 = 2 * END_KEY + 1;

/**
 * Writes an endpoint's part of a sort key at `at` of `keys`: its family, the 16 address bytes at
 * `o` of `b` (`union ip_addr`, IPv4 zero-padded), its port (big-endian). Returns the next offset.
 * Rows sort by their keys' bytes (lib/state/rowsort.ts): by the endpoints given, then protocol.
 */
function putEnd(
  keys: Uint8Array,
  at: number,
  family: number,
  b: Uint8Array,
  o: number,
  port: number,
) {
  keys[at] = family;
  for (let i = 0; i < 16; i++) keys[at + 1 + i] = b[o + i];
  keys[at + 17] = port >> 8;
  keys[at + 18] = port & 0xff;
  return at + END_KEY;
}

/** The endpoint whose address is at `at` of `b` (`union ip_addr`), as {@link endpoint}. */
function endpointAt(family: number, b: Uint8Array, at: number, port: number): string {
  if (family === 4) return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}:${port}`;
  return `[${formatAddr(b.slice(at, at + 16))}]:${port}`;
}

/** Where an endpoint is in a batch buffer: the buffer, its address's offset, its port. */
type EndpointAt = [Uint8Array, number, number];

/** The fields every row starts with: interface, protocol, family, internal and external. */
function rowHead(
  s: PinnedState,
  protocol: ProtoName,
  family: number,
  [ib, ia, ip]: EndpointAt,
  [eb, ea, ep]: EndpointAt,
) {
  return {
    interface: s.ifname,
    protocol,
    family: family as 4 | 6,
    internal: endpointAt(family, ib, ia, ip),
    external: endpointAt(family, eb, ea, ep),
  };
}

/** Whether the filter's address is the one at `at` of `b`. */
function addrAt(
  f: Uint8Array,
  bits: number,
  family: number,
  b: Uint8Array,
  at: number,
): boolean {
  if (f.length !== (family === 4 ? 4 : 16)) return false;
  for (let i = 0; i < f.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((f[i] ^ b[at + i]) & mask) return false;
  }
  return true;
}

/** Whether a row passes the filter: its protocol, one of its addresses (at `addrs` of the
 * buffer each is in) and one of its ports. */
function matches(
  f: RowFilter,
  proto: ProtoName,
  family: number,
  addrs: [Uint8Array, number][],
  ports: number[],
): boolean {
  if (f.proto && f.proto !== proto) return false;
  const bits = f.addrPrefix ?? (f.addr?.length ?? 0) * 8;
  if (f.addr && !addrs.some(([b, at]) => addrAt(f.addr!, bits, family, b, at))) return false;
  if (f.port !== undefined && !ports.includes(f.port)) return false;
  return true;
}

/** Pinned maps of one interface, opened read-only. */
export interface PinnedState {
  ifname: string;
  dir: string;
  meta: MetaDoc | null;
  fds: Partial<Record<StateMap, number>>;
  close(): void;
}

/** Interfaces with pinned state under `root` (not the folders of other network namespaces). */
export function pinnedInterfaces(root: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(root)) {
      if (e.isDirectory && !isNetnsFolder(e.name)) out.push(ifnameOfPinFolder(e.name));
    }
  } catch { /* none */ }
  return out.sort();
}

/** This einat's state layout, read from its object once. */
let ownLayout: StateLayout | null = null;

/**
 * State maps the readers never decode: the fragment table is only counted (its key size taken
 * from the map itself) and the IPv4 ID maps are not read. Another layout of theirs (an einat of
 * another version still running) does not stop `show`.
 */
const UNDECODED: ReadonlySet<StateMap> = new Set(["map_frag", "map_ip_id", "map_ipid_frag"]);

/**
 * Opens the pinned maps of one interface read-only; null when there are none. Throws when those
 * the readers decode (all but {@link UNDECODED}) are not of this einat's layout (their stamp, or
 * a map's key or value size, says another): the readers decode this einat's layout, and read
 * batches sized by it.
 */
export function openPinned(dir: string, ifname: string): PinnedState | null {
  const fds: Partial<Record<StateMap, number>> = {};
  const close = () => {
    for (const fd of Object.values(fds)) if (fd !== undefined) closeFd(fd);
  };
  for (const m of STATE_MAPS) {
    try {
      fds[m] = bpf.objGetPinnedOpts(`${dir}/${m}`, { readOnly: true });
    } catch { /* absent */ }
  }
  if (Object.keys(fds).length === 0) return null;
  const meta = readMeta(dir);
  let problems: string[];
  try {
    const decoded = Object.fromEntries(
      Object.entries(fds).filter(([m]) => !UNDECODED.has(m as StateMap)),
    );
    problems = layoutProblems(meta, decoded, ownLayout ??= stateLayout(embeddedObject()));
  } catch (e) {
    close();
    throw e;
  }
  if (problems.length > 0) {
    close();
    throw new StateError(
      `${ifname}: pinned state in ${dir} is of another einat version` +
        `${meta?.einat ? ` (written by einat ${meta.einat})` : ""}: ${problems.join("; ")}; ` +
        `not read. Restart einat with this version to use it (it carries bindings and sessions ` +
        `of another layout over where it can; where it cannot, it names ` +
        `\`${flushHint(ifname, pinRootOf(dir))}\`, which drops every mapping), or show it with ` +
        `the einat that wrote it`,
    );
  }
  return { ifname, dir, meta, fds, close };
}

/** Why `root` holds nothing to show, for a message; null when it is usable. */
export function pinRootProblem(root: string): string | null {
  // An einat that found no bpffs here (`ip netns exec` mounts a fresh /sys, without one) mounted
  // one in a mount namespace of its own, which no other process sees.
  const private_ = !onBpffs(root)
    ? ` ${root} is not on a bpf filesystem in this mount namespace: an einat started where it ` +
      `was not either (as under \`ip netns exec\`) keeps its state on a bpffs only it sees; ` +
      `start einat and \`einat show\` with --pin-dir on a bpffs both see (mount -t bpf bpf DIR)`
    : "";
  try {
    Deno.statSync(root);
  } catch {
    return `no pinned state: ${root} does not exist (is einat running with --pin-dir ${root}?)` +
      (private_ ? `;${private_}` : "");
  }
  if (private_) return private_.trim();
  return null;
}

const RF = RECORD_AT;

/**
 * Calls `fn` for each live mapping record of an occupied slot, in place: the record's bytes at
 * `values[vo]`, its slot entry and port. Protocol and family are the record's.
 */
function forEachRecord(
  s: PinnedState,
  fn: (values: Uint8Array, vo: number, slot: SlotEntry, port: number, vv: DataView) => void,
): void {
  const fd = s.fds.map_records, sfd = s.fds.map_slots;
  if (fd === undefined || sfd === undefined) return;
  forEachLiveRecord(fd, readSlots(sfd), (values, vo, vv, e, port) => fn(values, vo, e, port, vv));
}

/** Bindings of the mapping records, by external endpoint; decoded in place, batch by batch. */
export function readBindings(s: PinnedState, f: RowFilter = {}): BindingRow[] {
  const rows = keyedRows<BindingRow>(KEY1);
  forEachRecord(s, (values, vo, slot, extPort, vv) => {
    const family = values[vo + RF.family.offset], l4proto = values[vo + RF.l4proto.offset];
    const ext = addr16Of(slot.addr), intAt = vo + RF.int_addr.offset;
    const intPort = vv.getUint16(vo + RF.int_port.offset);
    const proto = protoName(l4proto);
    const addrs: [Uint8Array, number][] = [[ext, 0], [values, intAt]];
    if (!matches(f, proto, family, addrs, [extPort, intPort])) return;
    const at = addRow(rows, {
      ...rowHead(s, proto, family, [values, intAt, intPort], [ext, 0, extPort]),
      sessions: vv.getUint32(vo + RF.ref.offset, true) & ~BINDING_DYING,
    });
    rows.keys[putEnd(rows.keys, at, family, ext, 0, extPort)] = l4proto;
  });
  return sortedRows(rows);
}

/** An address as the 16 bytes of a union ip_addr (IPv4 in the first 4). */
function addr16Of(a: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out.set(a);
  return out;
}

/** Live bindings counted without listing them (the metrics endpoint). */
export interface BindingTally {
  /** `FAMILY/PROTOCOL` (e.g. `4/udp`) → bindings. */
  byProto: Map<string, number>;
  /** `EXTERNAL-ADDRESS/PROTOCOL` (e.g. `192.0.2.1/udp`) → bindings: its ports in use. */
  byExternal: Map<string, number>;
  /** The same key → the ports (ICMP identifiers) in use, to count those of given ranges. */
  portsByExternal: Map<string, number[]>;
}

/**
 * Counts the bindings of a binding map batch by batch, without a row per binding: memory stays
 * constant and the cost is a few byte reads per binding.
 */
export function tallyBindings(s: PinnedState): BindingTally {
  const byProto = new Map<string, number>();
  // protocol number, then the slot
  const raw = new Map<string, number[]>();
  const slots = new Map<number, SlotEntry>();
  forEachRecord(s, (values, vo, slot, port) => {
    const family = values[vo + RF.family.offset];
    const l4proto = values[vo + RF.l4proto.offset];
    const p = `${family}/${protoName(l4proto)}`;
    byProto.set(p, (byProto.get(p) ?? 0) + 1);
    slots.set(slot.slot, slot);
    const r = `${l4proto}/${slot.slot}`;
    const ports = raw.get(r);
    if (ports) ports.push(port);
    else raw.set(r, [port]);
  });
  const byExternal = new Map<string, number>();
  const portsByExternal = new Map<string, number[]>();
  for (const [r, ports] of raw) {
    const [l4proto, slot] = r.split("/").map(Number);
    const k = `${formatAddr(slots.get(slot)!.addr)}/${protoName(l4proto)}`;
    byExternal.set(k, (byExternal.get(k) ?? 0) + ports.length);
    portsByExternal.set(k, (portsByExternal.get(k) ?? []).concat(ports));
  }
  return { byProto, byExternal, portsByExternal };
}

/** The state name of a session, conntrack style. */
export function sessionState(l4proto: number, flags: number): string {
  const both = (flags & (CT_FLAGS.SEEN_OUT | CT_FLAGS.SEEN_IN)) ===
    (CT_FLAGS.SEEN_OUT | CT_FLAGS.SEEN_IN);
  if (l4proto !== IPPROTO.TCP) return both ? "ASSURED" : "UNREPLIED";
  if (flags & CT_FLAGS.RST) return "RESET";
  const fins = flags & (CT_FLAGS.FIN_OUT | CT_FLAGS.FIN_IN);
  if (fins === (CT_FLAGS.FIN_OUT | CT_FLAGS.FIN_IN)) return "CLOSING";
  if (fins) return "FIN_WAIT";
  // Established once a SYN went each way, or without any SYN seen (picked up mid-stream).
  const syn = flags & (CT_FLAGS.SYN_OUT | CT_FLAGS.SYN_IN);
  if (both && (syn === 0 || syn === (CT_FLAGS.SYN_OUT | CT_FLAGS.SYN_IN))) return "ESTABLISHED";
  if (syn) return syn === CT_FLAGS.SYN_OUT ? "SYN_SENT" : "SYN_RECV";
  return flags & CT_FLAGS.SEEN_OUT ? "SYN_SENT" : "SYN_RECV";
}

/** The timeout class of a session's `state` (`CT_STATE`), as `show` names it. */
export function timeoutClass(state: number): "established" | "transitory" | "closing" {
  return state === CT_STATE.EST
    ? "established"
    : state === CT_STATE.CLOSING
    ? "closing"
    : "transitory";
}

function timeoutNs(meta: MetaDoc | null, l4proto: number, state: number): bigint | null {
  const t = meta?.timeoutsNs;
  if (!t) return null;
  const est = state === CT_STATE.EST;
  const key = l4proto === IPPROTO.TCP
    // A stamp written before the closing timeout had its own: the transitory one.
    ? (est ? "tcpEst" : state === CT_STATE.CLOSING && t.tcpClosing ? "tcpClosing" : "tcpTrans")
    : l4proto === IPPROTO.UDP
    ? (est ? "udp" : "udpMin")
    : "icmp";
  return t[key] ? BigInt(t[key]) : null;
}

const CK = CT_KEY_LAYOUT.fields, CV = CT_VALUE_LAYOUT.fields;

/** A session class's timeout (l4proto, state) as {@link timeoutsAt} gives it. */
interface ClassTimeout {
  /** The timeout in ns. */
  ns: number;
  /** now - timeout as (high, low) 32-bit halves: last_seen_ns below it has expired. */
  hi: number;
  lo: number;
}

/**
 * The timeouts of the session classes at `now`, cached per class; null for every class when the
 * timeouts are not known. Expiry compares last_seen_ns's 32-bit halves with the class's, so that
 * no BigInt is made per session.
 */
function timeoutsAt(
  s: PinnedState,
  now: bigint,
): (l4proto: number, state: number) => ClassTimeout | null {
  const cache = new Map<number, ClassTimeout | null>(); // by l4proto * 256 + state
  return (l4proto, state) => {
    const c = l4proto * 256 + state;
    let v = cache.get(c);
    if (v === undefined) {
      const t = timeoutNs(s.meta, l4proto, state);
      const x = t === null ? 0n : t > now ? 0n : now - t;
      v = t === null ? null : { ns: Number(t), hi: Number(x >> 32n), lo: Number(x & 0xffffffffn) };
      cache.set(c, v);
    }
    return v;
  };
}

/** Whether last_seen_ns (as its halves) lies past the class's timeout. */
function pastTimeout(t: ClassTimeout | null, hi: number, lo: number): boolean {
  return t !== null && (hi < t.hi || (hi === t.hi && lo < t.lo));
}

/**
 * Sessions of a session map, by external then remote endpoint; decoded in place, batch by batch.
 * `nowNs` is CLOCK_MONOTONIC (default: now). Seconds are computed in floating point (exact to
 * the nanosecond for 104 days of uptime); whether a session expired, exactly.
 */
export function readSessions(s: PinnedState, f: RowFilter = {}, nowNs?: bigint): SessionRow[] {
  const fd = s.fds.map_ct;
  if (fd === undefined) return [];
  const fds = { ct: fd, records: s.fds.map_records, slots: s.fds.map_slots };
  const now = nowNs ?? monotonicNs();
  const nowF = Number(now);
  const timeoutOf = timeoutsAt(s, now);
  const rows = keyedRows<SessionRow>(KEY2);
  const cfd = s.fds.map_sess_counters;
  const counted = cfd !== undefined && countingOn(cfd) ? readSessionCounters(cfd) : null;
  forEachSession(fds, (e) => {
    const { keys, values, kv, vv, ko, vo } = e;
    const family = keys[ko + CK.family.offset], l4proto = keys[ko + CK.l4proto.offset];
    const extAt = ko + CK.ext_addr.offset, remoteAt = ko + CK.remote_addr.offset;
    const intAt = vo + CV.int_addr.offset;
    const extPort = kv.getUint16(ko + CK.ext_port.offset);
    const remotePort = kv.getUint16(ko + CK.remote_port.offset);
    const intPort = vv.getUint16(vo + CV.int_port.offset);
    const proto = protoName(l4proto);
    const addrs: [Uint8Array, number][] = [[values, intAt], [keys, extAt], [keys, remoteAt]];
    if (!matches(f, proto, family, addrs, [intPort, extPort, remotePort])) return;
    const state = values[vo + CV.state.offset];
    const t = timeoutOf(l4proto, state);
    const o = vo + CV.last_seen_ns.offset;
    const hi = vv.getUint32(o + 4, true), lo = vv.getUint32(o, true);
    const idle = Math.max(0, nowF - (hi * 2 ** 32 + lo));
    const createdS = vv.getUint32(vo + CV.created_s.offset, true);
    const raw = counted?.get(counterKey(keys, ko));
    const at = addRow(rows, {
      ...rowHead(s, proto, family, [values, intAt, intPort], [keys, extAt, extPort]),
      remote: endpointAt(family, keys, remoteAt, remotePort),
      state: sessionState(l4proto, values[vo + CV.flags.offset]),
      timeout: timeoutClass(state),
      secondsLeft: t === null ? null : Math.floor(Math.max(0, t.ns - idle) / 1e9),
      ageSeconds: Math.max(0, Math.floor(nowF / 1e9 - createdS)),
      idleSeconds: Math.floor(idle / 1e9),
      expired: pastTimeout(t, hi, lo),
      ...(counted ? { counters: raw ? sumCounts(raw, createdS) : null } : {}),
    });
    const k = putEnd(rows.keys, at, family, keys, extAt, extPort);
    rows.keys[putEnd(rows.keys, k, family, keys, remoteAt, remotePort)] = l4proto;
  });
  return sortedRows(rows);
}

/** Sessions counted without listing them (the metrics endpoint). */
export interface SessionTally {
  /** `FAMILY/PROTOCOL` (e.g. `4/udp`) → live sessions. */
  byProto: Map<string, number>;
  /** Sessions past their timeout (only when the timeouts are known), not in `byProto`. */
  expired: number;
}

/**
 * Counts the sessions of a session map batch by batch, as {@link readSessions} would list them,
 * without a row per session. `nowNs` is CLOCK_MONOTONIC (default: now).
 */
export function tallySessions(s: PinnedState, nowNs?: bigint): SessionTally {
  const byProto = new Map<string, number>();
  let expired = 0;
  const fd = s.fds.map_ct;
  if (fd === undefined) return { byProto, expired };
  const timeoutOf = timeoutsAt(s, nowNs ?? monotonicNs());
  const fds = { ct: fd, records: s.fds.map_records, slots: s.fds.map_slots };
  forEachSession(fds, ({ keys, values, vv, ko, vo }) => {
    const l4proto = keys[ko + CK.l4proto.offset];
    const o = vo + CV.last_seen_ns.offset;
    const state = values[vo + CV.state.offset];
    if (pastTimeout(timeoutOf(l4proto, state), vv.getUint32(o + 4, true), vv.getUint32(o, true))) {
      expired++;
      return;
    }
    const p = `${keys[ko + CK.family.offset]}/${protoName(l4proto)}`;
    byProto.set(p, (byProto.get(p) ?? 0) + 1);
  });
  return { byProto, expired };
}

/** Counters of one interface. */
export interface Counters {
  interface: string;
  /** Every `enum einat_stat` counter by name, summed over CPUs. */
  events: Record<string, number>;
  /** Packets and bytes translated per direction and family. */
  traffic: { direction: "egress" | "ingress"; family: 4 | 6; packets: number; bytes: number }[];
}

function perCpuValues(fd: number, slot: number, n: number, from = 0): Uint8Array[] {
  const cpus = bpf.numPossibleCpus();
  const out: Uint8Array[] = [];
  for (let i = from; i < from + n; i++) {
    const key = new Uint8Array(4);
    new DataView(key.buffer).setUint32(0, i, true);
    out.push(bpf.mapLookup(fd, key, slot * cpus) ?? new Uint8Array(slot * cpus));
  }
  return out;
}

/** One counter of `map_stats` (fd), by its name in STATS, summed over CPUs. */
export function statCount(statsFd: number, name: typeof STATS[number]): number {
  const [v] = perCpuValues(statsFd, 8, 1, STATS.indexOf(name));
  return Number(sumPerCpu(v));
}

/** Reads the counters (per-CPU maps, summed). */
export function readCounters(s: PinnedState): Counters {
  const events: Record<string, number> = {};
  const sfd = s.fds.map_stats;
  if (sfd !== undefined) {
    const info = bpf.mapInfo(sfd);
    const values = perCpuValues(sfd, 8, Math.min(info.maxEntries, STATS.length));
    STATS.forEach((name, i) => events[name] = values[i] ? Number(sumPerCpu(values[i])) : 0);
  }
  const traffic: Counters["traffic"] = [];
  const tfd = s.fds.map_traffic;
  if (tfd !== undefined) {
    const values = perCpuValues(tfd, 16, TRAFFIC.length);
    TRAFFIC.forEach((t, i) => {
      const sum = sumPerCpuTraffic(values[i]);
      traffic.push({
        direction: t.direction,
        family: t.family,
        packets: Number(sum.packets),
        bytes: Number(sum.bytes),
      });
    });
  }
  return { interface: s.ifname, events, traffic };
}

/**
 * Entries and capacity of each pinned map (counted by reading them in batches). `map_records`
 * counts live bindings, against what can be made: the records of the slots, or fewer when
 * `bindingMax` (binding_max_records, which the programs hold the count to; not pinned) is given.
 */
export function mapFill(
  s: PinnedState,
  bindingMax?: number,
): { map: string; entries: number; capacity: number }[] {
  const out: { map: string; entries: number; capacity: number }[] = [];
  const rfd = s.fds.map_records, cfd = s.fds.map_binding_count;
  if (rfd !== undefined && cfd !== undefined) {
    // live bindings (the programs' count), against the records of the slots
    const n = bpf.mapLookup(cfd, new Uint8Array(4), 8);
    out.push({
      map: "map_records",
      entries: n ? Number(new DataView(n.buffer).getBigUint64(0, true)) : 0,
      capacity: Math.min(bpf.mapInfo(rfd).maxEntries, bindingMax ?? Infinity),
    });
  }
  for (const m of ["map_ct", "map_frag", "map_addr_nat"] as const) {
    const fd = s.fds[m];
    if (fd === undefined) continue;
    const info = bpf.mapInfo(fd);
    out.push({ map: m, entries: bpf.mapCount(fd, info.keySize), capacity: info.maxEntries });
  }
  return out;
}
