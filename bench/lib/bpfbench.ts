/**
 * BPF_PROG_TEST_RUN helpers for the benchmarks: the no-op baseline program, fdinfo, counters,
 * flows established through the real programs, user-space map fills, and the "alternating
 * packet" set-up that makes `repeat` measure the translation path.
 *
 * Why alternation: BPF_PROG_TEST_RUN runs the program `repeat` times on one skb, so from the
 * second run on the program sees the packet it has already translated. For an egress packet
 * that means an external source address (passed untouched): a naive repeat measures the pass
 * path, not the translation. `enableAlternation` adds the mirror-image state (a binding and a
 * session keyed by the translated endpoint that translate it back; the binding's record is on a
 * slot given to the internal address), so every run does a full established-flow translation
 * and the packet flips between the two forms. It also marks the external address as an
 * ordinary (non-external) source in `map_externals` so egress does not pass it.
 * `checkAlternation` proves it: after 2 runs the bytes are back to the input and the NAT counter
 * grew by 2.
 * @module
 */

import * as bpf from "../../lib/ffi/libbpf.ts";
import { monotonicNs } from "../../lib/ffi/libc.ts";
import {
  addr16,
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  decodeExternalConfig,
  encodeCtKey,
  encodeExternalConfig,
  encodeLpmKey,
  EXTERNAL_CONFIG_LAYOUT,
  IPPROTO,
  MAPPING_RECORD_LAYOUT,
  PORT_BITS_LAYOUT,
  portBitsKey,
  type StatName,
} from "../../lib/nat/codec.ts";
import { bumpEpoch, defaultSlots, type NatObject } from "../../lib/nat/loader.ts";
import {
  deleteBinding,
  findSession,
  readSlots,
  slotCount,
  slotOf,
  writeBinding,
  writeSlots,
} from "../../lib/nat/records.ts";
import { roConfigOf } from "../../lib/daemon.ts";
import {
  loadTestNat,
  type Nat,
  stat as statOf,
  TC_ACT_OK,
  testInterfaceConfig,
} from "../../tests/lib/natfixture.ts";
import type { InterfaceConfig } from "../../lib/config/types.ts";
import { buildPacket, ipBytes, type PacketSpec, parsePacket } from "../../tests/lib/packet.ts";
import { pinThread, restoreAffinity } from "../../tests/lib/cpu.ts";
import { syncPrefixSets } from "../../lib/nat/prefixes.ts";

/** The project root. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

/** External IPv4 / IPv6 address of the test NAT. */
export const EXT4 = "203.0.113.1";
/** External IPv6 address of the test NAT. */
export const EXT6 = "2001:db8:2::1";

// ---------------------------------------------------------------------------------------------
// Programs

/** A loaded no-op TC program: the baseline of every BPF figure. */
export interface Noop {
  fd: number;
  close(): void;
}

/** Loads `bpf/noop.bpf.o` (build it with `make -C bpf`). */
export async function loadNoop(): Promise<Noop> {
  const path = `${ROOT}bpf/noop.bpf.o`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch {
    throw new Error(`${path} missing: run \`make -C bpf\``);
  }
  const obj = bpf.openObjectMem(bytes, "noop");
  try {
    await bpf.loadObject(obj);
    return { fd: bpf.programFd(bpf.findProgram(obj, "noop")), close: () => bpf.closeObject(obj) };
  } catch (e) {
    bpf.closeObject(obj);
    throw e;
  }
}

/** `/proc/self/fdinfo/FD` as key/value pairs (memlock, prog_id, verified_insns, ...). */
export function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).split("\n")) {
    const m = /^([\w]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Sum over CPUs of one `map_stats` counter. */
export function stat(nat: NatObject, name: StatName): bigint {
  return statOf(nat.maps.stats, name);
}

/** Runs `fd` on `bytes` `repeat` times; returns the kernel's average ns per run. */
export async function runNs(fd: number, bytes: Uint8Array, repeat: number): Promise<number> {
  const r = repeat > 1
    ? await bpf.testRunAsync(fd, bytes, { repeat })
    : bpf.testRun(fd, bytes, { repeat });
  return r.durationNs;
}

// ---------------------------------------------------------------------------------------------
// Loading

/**
 * Loads the NAT with the test defaults, optionally NAT66, and overrides, with one more
 * external-address slot than the daemon's default: records of addresses outside the plan need one each (alternation: the internal
 * address of each family; scale: one internal and one filler address), see {@link ensureSlot}.
 */
export async function loadBenchNat(
  o: { nat66?: boolean; ic?: Partial<InterfaceConfig> } = {},
): Promise<Nat> {
  const ic = testInterfaceConfig({ nat66: o.nat66 ?? false, ...o.ic });
  const ext = [`${EXT4}/24`, ...(o.nat66 ? [`${EXT6}/64`] : [])];
  return await loadTestNat(ic, ext, { extSlots: defaultSlots(roConfigOf(ic)) + 1 });
}

/**
 * The slot of `addr` in `map_slots`, given the first free one when it has none (records of
 * addresses outside the plan: the program places a binding by its external address's slot).
 * Throws when every slot is taken.
 */
export function ensureSlot(nat: NatObject, family: 4 | 6, addr: Uint8Array): number {
  const slots = readSlots(nat.maps.slots);
  const have = slotOf(slots, family, addr);
  if (have >= 0) return have;
  const count = slotCount(nat.maps.records);
  const used = new Set(slots.map((s) => s.slot));
  let slot = 0;
  while (slot < count && used.has(slot)) slot++;
  if (slot >= count) throw new Error(`no free slot for ${addr.join(".")} (${count} slots)`);
  writeSlots(nat.maps.slots, [...slots, { slot, family, addr }]);
  return slot;
}

// ---------------------------------------------------------------------------------------------
// Flows

/** The internal and remote side of a flow. */
export interface FlowSpec {
  family: 4 | 6;
  proto: "udp" | "tcp" | "icmp";
  lan: string;
  lanPort: number;
  remote: string;
  remotePort: number;
  /**
   * IPv4 DF, set by default as Linux sends TCP, and UDP with path MTU discovery: an atomic
   * datagram keeps its ID. Clear, each translated packet takes a new one (bpf/lib/ipid.h).
   */
  dontFragment?: boolean;
}

/** A flow established through the programs: its external endpoint and packets. */
export interface Flow extends FlowSpec {
  ext: string;
  extPort: number;
  /** An established egress packet (LAN → remote); TCP: ACK. */
  egress: Uint8Array;
  /** An established ingress packet (remote → external endpoint). */
  ingress: Uint8Array;
}

const PAYLOAD = new Uint8Array(22); // 64-byte IPv4/UDP frame

function l4Proto(p: FlowSpec["proto"]): number {
  return p === "tcp" ? IPPROTO.TCP : p === "udp" ? IPPROTO.UDP : IPPROTO.ICMP;
}

/** A packet of the flow. `dir` egress: LAN → remote; ingress: remote → ext endpoint. */
export function flowPacket(
  f: FlowSpec & { ext?: string; extPort?: number },
  dir: "egress" | "ingress",
  tcpFlags: PacketSpec["tcpFlags"] = { ack: true },
): Uint8Array {
  const eg = dir === "egress";
  const base = {
    family: f.family,
    src: eg ? f.lan : f.remote,
    dst: eg ? f.remote : f.ext!,
    dontFragment: f.dontFragment ?? true,
  };
  if (f.proto === "icmp") {
    const req = f.family === 4 ? 8 : 128;
    return buildPacket({
      ...base,
      proto: "icmp",
      icmpType: eg ? req : req + (f.family === 4 ? -8 : 1),
      icmpId: eg ? f.lanPort : f.extPort,
      icmpSeq: 1,
      payload: PAYLOAD,
    });
  }
  return buildPacket({
    ...base,
    proto: f.proto,
    sport: eg ? f.lanPort : f.remotePort,
    dport: eg ? f.remotePort : f.extPort,
    tcpFlags,
    payload: f.proto === "udp" ? PAYLOAD : new Uint8Array(0),
  });
}

/**
 * Establishes a flow with real packets (TCP: SYN out, SYN-ACK in, ACK out; UDP and ICMP: one
 * out, one in). Throws with a reason when the datapath does not translate it.
 */
export function establish(n: Nat, s: FlowSpec): Flow {
  const first = n.runRaw("egress", flowPacket(s, "egress", { syn: true }));
  const out = parsePacket(first.bytes);
  const ext = s.family === 4 ? EXT4 : EXT6;
  if (first.retval !== TC_ACT_OK || out.src !== ext) {
    throw new Error(`not translated (verdict ${first.retval}, source ${out.src})`);
  }
  const extPort = s.proto === "icmp" ? out.icmpId! : out.sport!;
  const f = { ...s, ext, extPort };
  const back = n.runRaw("ingress", flowPacket(f, "ingress", { syn: true, ack: true }));
  const inn = parsePacket(back.bytes);
  if (back.retval !== TC_ACT_OK || inn.dst !== s.lan) {
    throw new Error(`reply not translated (verdict ${back.retval}, destination ${inn.dst})`);
  }
  if (s.proto === "tcp") n.runRaw("egress", flowPacket(s, "egress", { ack: true }));
  return { ...f, egress: flowPacket(f, "egress"), ingress: flowPacket(f, "ingress") };
}

function ctKeyOf(f: Flow, extSide: boolean): Uint8Array {
  const proto = l4Proto(f.proto);
  return encodeCtKey({
    l4proto: proto,
    family: f.family,
    extPort: extSide ? f.extPort : f.lanPort,
    remotePort: f.proto === "icmp" ? 0 : f.remotePort,
    extAddr: ipBytes(extSide ? f.ext : f.lan),
    remoteAddr: ipBytes(f.remote),
  });
}

/** Marks the external address as a plain internal source in `map_externals` (see module doc). */
export function unmarkExternal(n: Nat, family: 4 | 6): void {
  const addr = ipBytes(family === 4 ? EXT4 : EXT6);
  const key = encodeLpmKey(family, addr, family === 4 ? 32 : 128);
  const v = bpf.mapLookup(n.nat.maps.externals, key, EXTERNAL_CONFIG_LAYOUT.size);
  const cfg = v ? decodeExternalConfig(v) : { tcp: [], udp: [], icmp: [], flags: 0 };
  bpf.mapUpdate(n.nat.maps.externals, key, encodeExternalConfig({ ...cfg, flags: 0 }));
  syncPrefixSets(n.nat.maps);
}

/** Adds the mirror-image binding and session so the flow's packets alternate (module doc). */
export function enableAlternation(n: Nat, f: Flow): void {
  const m = n.nat.maps;
  unmarkExternal(n, f.family);
  const proto = l4Proto(f.proto);
  const real = findSession(m, ctKeyOf(f, true));
  if (!real) throw new Error("session of the flow not found");
  const v = real.slice();
  v.set(addr16(ipBytes(f.ext)), CT_VALUE_LAYOUT.fields.int_addr.offset);
  new DataView(v.buffer).setUint16(CT_VALUE_LAYOUT.fields.int_port.offset, f.extPort, false);
  bpf.mapUpdate(m.ct, ctKeyOf(f, false), v);
  const ext = ipBytes(f.ext), lan = ipBytes(f.lan);
  // egress of the translated packet: (ext, extPort) is "internal", maps back to (lan, lanPort),
  // which is "external" (its record is in a slot of its own), held by the mirror session
  ensureSlot(n.nat, f.family, lan);
  writeBinding(m, {
    family: f.family,
    l4proto: proto,
    intAddr: ext,
    intPort: f.extPort,
    extAddr: lan,
    extPort: f.lanPort,
    ref: 1,
  });
}

/** Proves that repeated runs translate every time (module doc); returns a reason or null. */
export function checkAlternation(n: Nat, f: Flow, dir: "egress" | "ingress"): string | null {
  const fd = dir === "egress" ? n.nat.egressFd : n.nat.ingressFd;
  const pkt = dir === "egress" ? f.egress : f.ingress;
  const counter: StatName = dir === "egress" ? "egress_nat" : "ingress_nat";
  const before = stat(n.nat, counter);
  const one = bpf.testRun(fd, pkt, { repeat: 1 });
  const two = bpf.testRun(fd, pkt, { repeat: 2 });
  const grown = stat(n.nat, counter) - before;
  const p1 = parsePacket(one.dataOut);
  const translated = dir === "egress" ? p1.src === f.ext : p1.dst === f.lan;
  if (!translated) return "first run did not translate";
  if (!p1.ipChecksumOk || !p1.l4ChecksumOk) return "bad checksum after translation";
  // A non-atomic IPv4 datagram leaves with a new ID each run (and its header checksum with it).
  const newId = f.family === 4 && f.dontFragment === false && dir === "egress";
  const ipIdOrCheck = (i: number) => newId && [18, 19, 24, 25].includes(i);
  if (
    two.dataOut.length !== pkt.length ||
    two.dataOut.some((b, i) => b !== pkt[i] && !ipIdOrCheck(i))
  ) {
    return "second run did not translate back";
  }
  if (grown !== 3n) return `${counter} grew by ${grown}, expected 3`;
  return null;
}

// ---------------------------------------------------------------------------------------------
// User-space fills

/** Encodes a `struct ct_value` (no codec encoder exists: user space never writes sessions). */
export function encodeCtValue(
  v: { intAddr: Uint8Array; intPort: number; state: number; flags: number; nowNs: bigint },
): Uint8Array {
  const L = CT_VALUE_LAYOUT.fields;
  const b = new Uint8Array(CT_VALUE_LAYOUT.size);
  const dv = new DataView(b.buffer);
  b.set(addr16(v.intAddr), L.int_addr.offset);
  dv.setUint16(L.int_port.offset, v.intPort, false);
  b[L.state.offset] = v.state;
  b[L.flags.offset] = v.flags;
  dv.setBigUint64(L.last_seen_ns.offset, v.nowNs, true);
  dv.setUint32(L.created_s.offset, Number(v.nowNs / 1_000_000_000n), true);
  return b; // live for its timeout from nowNs (no sweep runs in the benchmarks)
}

/** IPv4 address number → dotted quad. */
export function v4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** 198.18.0.0/15 address number `i` (0 ≤ i < 131072). */
export function benchNet(i: number): string {
  return v4(((198 << 24) | (18 << 16)) + i);
}

/**
 * Inserts `count` UDP sessions from user space, external side `extAddr` ports
 * `portBase + i % ports`, remote 198.18.0.0/15 address `i / ports`, port 443, last seen at
 * `lastSeenNs` (default: now); no sweep runs in the benchmarks, so they stay until deleted.
 * Returns elapsed ms.
 */
export function fillSessions(
  nat: NatObject,
  count: number,
  o: { extAddr: string; portBase: number; ports: number; lastSeenNs?: bigint },
): number {
  const t0 = performance.now();
  const ext = ipBytes(o.extAddr);
  const value = encodeCtValue({
    intAddr: ipBytes("192.0.2.99"),
    intPort: 50000,
    state: 1,
    flags: 0x03,
    nowNs: o.lastSeenNs ?? monotonicNs(),
  });
  // Encoded once with the codec, then only the varying fields are patched at the codec's
  // offsets (encoding a fresh key per entry costs more than the map update itself).
  const key = encodeCtKey({
    l4proto: IPPROTO.UDP,
    family: 4,
    extPort: 0,
    remotePort: 443,
    extAddr: ext,
    remoteAddr: new Uint8Array(4),
  });
  const kv = new DataView(key.buffer);
  const portOff = CT_KEY_LAYOUT.fields.ext_port.offset;
  const remoteOff = CT_KEY_LAYOUT.fields.remote_addr.offset;
  for (let i = 0; i < count; i++) {
    if (i % o.ports === 0) key.set(ipBytes(benchNet(i / o.ports)), remoteOff);
    kv.setUint16(portOff, o.portBase + (i % o.ports), false);
    bpf.mapUpdate(nat.maps.ct, key, value, bpf.BPF_NOEXIST);
  }
  return performance.now() - t0;
}

/**
 * Inserts bindings (record and outbound entry, one session reference each) for external
 * `ports` of `extAddr`, internal endpoints 198.19.x.y:50000 (distinct per port), protocol
 * `l4proto`. `extAddr` is given a slot when it has none ({@link ensureSlot}). The free-port
 * hint is not updated (the program's is, when it makes bindings).
 */
export function fillBindings(
  nat: NatObject,
  extAddr: string,
  ports: number[],
  l4proto: number,
): void {
  const ext = ipBytes(extAddr);
  ensureSlot(nat, 4, ext);
  ports.forEach((port, i) => {
    writeBinding(nat.maps, {
      family: 4,
      l4proto,
      intAddr: ipBytes(benchNet(65536 + (i % 65536))),
      intPort: 50000 + Math.floor(i / 65536),
      extAddr: ext,
      extPort: port,
      ref: 1,
    });
  });
}

// ---------------------------------------------------------------------------------------------
// New mappings

/** A packet that creates a new mapping, and how to undo it. */
export interface NewFlowPacket {
  spec: FlowSpec;
  bytes: Uint8Array;
}

/**
 * `count` new-flow packets (UDP, or TCP SYN) from distinct sources, port 40000: 198.18.0.0/15
 * for IPv4, 2001:db8:1::/64 for IPv6.
 */
export function newFlowPackets(
  count: number,
  proto: "udp" | "tcp",
  offset = 0,
  family: 4 | 6 = 4,
): NewFlowPacket[] {
  return Array.from({ length: count }, (_, i) => {
    const n = offset + i;
    const spec: FlowSpec = {
      family,
      proto,
      lan: family === 4
        ? benchNet(n)
        : `2001:db8:1::${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`,
      lanPort: 40000,
      remote: family === 4 ? "198.51.100.1" : "2001:db8:3::1",
      remotePort: 3478,
    };
    return { spec, bytes: flowPacket(spec, "egress", { syn: true }) };
  });
}

/**
 * Clears a port's bit in the free-port hint, as the program does when it
 * deletes a binding (a deletion from user space would leave it set).
 */
function releaseHintBit(
  nat: NatObject,
  family: 4 | 6,
  l4proto: number,
  ext: Uint8Array,
  port: number,
): void {
  const fd = nat.maps.portBits;
  const slot = slotOf(readSlots(nat.maps.slots), family, ext);
  if (slot < 0) return;
  const key = portBitsKey(slot, l4proto);
  const v = bpf.mapLookup(fd, key, PORT_BITS_LAYOUT.size);
  if (!v) return;
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const off = (port >> 6) * 8;
  dv.setBigUint64(off, dv.getBigUint64(off, true) & ~(1n << BigInt(port & 63)), true);
  bpf.mapUpdate(fd, key, v);
}

/**
 * Deletes the binding (record and outbound entry) and session a new-flow packet created, and
 * moves the mapping epoch as the daemon does after deleting mappings itself, so no flow-cache
 * slot serves the deleted mapping: the next run of the same packet makes a new one.
 */
export function undoNewFlow(nat: NatObject, p: NewFlowPacket, extPort: number): void {
  const s = p.spec, proto = l4Proto(s.proto), ext = ipBytes(s.family === 4 ? EXT4 : EXT6);
  deleteBinding(nat.maps, s.family, proto, ext, extPort);
  releaseHintBit(nat, s.family, proto, ext, extPort);
  bpf.mapDelete(
    nat.maps.ct,
    encodeCtKey({
      l4proto: proto,
      family: s.family,
      extPort,
      remotePort: s.remotePort,
      extAddr: ext,
      remoteAddr: ipBytes(s.remote),
    }),
  );
  bumpEpoch(nat);
}

/** Result of {@link measureNewMappings}. */
export interface NewMappingResult {
  /** Kernel-reported ns of each new-mapping run. */
  runs: number[];
  /** Kernel-reported ns of the no-op run next to each. */
  noop: number[];
  /** Runs that did not create a translated mapping. */
  failures: number;
}

/**
 * Runs each packet once (repeat 1: one packet, one new mapping) and the no-op program once
 * next to it (alternating which goes first). With `undo` the mapping is deleted again from
 * user space after the run (not timed), so the port range keeps its fill level.
 */
export function measureNewMappings(
  nat: NatObject,
  noopFd: number,
  packets: NewFlowPacket[],
  undo: boolean,
): NewMappingResult {
  const res: NewMappingResult = { runs: [], noop: [], failures: 0 };
  packets.forEach((p, i) => {
    const nop = () => res.noop.push(bpf.testRun(noopFd, p.bytes, { repeat: 1 }).durationNs);
    const made = stat(nat, "new_binding");
    if (i % 2) nop();
    const r = bpf.testRun(nat.egressFd, p.bytes, { repeat: 1 });
    if (i % 2 === 0) nop();
    const out = parsePacket(r.dataOut);
    const ext = p.spec.family === 4 ? EXT4 : EXT6;
    if (r.retval !== TC_ACT_OK || out.src !== ext || stat(nat, "new_binding") !== made + 1n) {
      res.failures++;
      return;
    }
    res.runs.push(r.durationNs);
    if (undo) undoNewFlow(nat, p, out.sport!);
  });
  return res;
}

/** Result of {@link measureChainedNewMappings}. */
export interface ChainedNewMappings {
  /** Kernel-reported average ns per run; each run made one new mapping. */
  ns: number;
  /** No-op average ns on the same packet. */
  noop: number;
  /** New bindings the runs made (should equal the runs). */
  made: number;
  runs: number;
}

/**
 * New mappings with warm caches: the external address is unmarked as external (like the
 * alternation set-up), so a translated packet (external address, new port) is an internal
 * source again and the next of `runs` repeats maps it anew. Every run is one new binding and
 * session, half-way into an emptying range; `made` proves it. `preallocateMaps` loads the
 * object with a preallocated session map (binding records are preallocated either way).
 */
export async function measureChainedNewMappings(
  noopFd: number,
  runs: number,
  preallocateMaps = false,
): Promise<ChainedNewMappings> {
  const n = await loadBenchNat({ ic: { preallocateMaps } });
  try {
    unmarkExternal(n, 4);
    const pkt = buildPacket({
      family: 4,
      src: "192.0.2.10",
      dst: "198.51.100.1",
      proto: "udp",
      sport: 40000,
      dport: 53,
      payload: PAYLOAD,
    });
    const before = stat(n.nat, "new_binding");
    const ns = await runNs(n.nat.egressFd, pkt, runs);
    const made = Number(stat(n.nat, "new_binding") - before);
    return { ns, noop: await runNs(noopFd, pkt, runs), made, runs };
  } finally {
    n.close();
  }
}

// ---------------------------------------------------------------------------------------------
// A TCP connection's packets

/** One packet of a TCP connection: its direction, its name in the tables, its flags. */
export interface ConnStep {
  dir: "egress" | "ingress";
  name: string;
  flags: PacketSpec["tcpFlags"];
  payload: number;
}

/**
 * The ten packets of a connection of the router part's `tcp-conn` test (bench/lib/flows.ts: the
 * client sends a byte, the server answers one and closes), five each way.
 */
export const CONN_STEPS: readonly ConnStep[] = [
  { dir: "egress", name: "SYN", flags: { syn: true }, payload: 0 },
  { dir: "ingress", name: "SYN-ACK", flags: { syn: true, ack: true }, payload: 0 },
  { dir: "egress", name: "ACK", flags: { ack: true }, payload: 0 },
  { dir: "egress", name: "request byte", flags: { ack: true, psh: true }, payload: 1 },
  { dir: "ingress", name: "ACK of the request", flags: { ack: true }, payload: 0 },
  { dir: "ingress", name: "answer byte", flags: { ack: true, psh: true }, payload: 1 },
  { dir: "ingress", name: "server's FIN", flags: { ack: true, fin: true }, payload: 0 },
  { dir: "egress", name: "ACK of the answer", flags: { ack: true }, payload: 0 },
  { dir: "egress", name: "client's FIN", flags: { ack: true, fin: true }, payload: 0 },
  { dir: "ingress", name: "last ACK", flags: { ack: true }, payload: 0 },
];

/** Result of {@link measureConnections}: per step of {@link CONN_STEPS}, ns over the no-op. */
export interface ConnectionResult {
  /** deltas[step][connection]: the step's run minus the no-op's run on the same packet. */
  deltas: number[][];
  /** Packets not translated as they should be (the verdict, or the address). */
  failures: number;
}

/**
 * Runs `count` connections through the programs one packet at a time (repeat 1 each, the no-op
 * next to each run), client ports `firstPort`.. from LAN to port 9000 of a remote. Each
 * connection's lines are cold at its SYN, as for a new connection in a router: the other
 * connections ran in between. A port run again finds its earlier connection's closed session.
 */
export function measureConnections(
  n: Nat,
  noopFd: number,
  count: number,
  firstPort: number,
): ConnectionResult {
  const lan = "192.0.2.10", remote = "198.51.100.1";
  const res: ConnectionResult = { deltas: CONN_STEPS.map(() => []), failures: 0 };
  // On one CPU: the flow cache is per CPU, and a connection moved to another misses there.
  const affinity = pinThread(0);
  try {
    runConnections(n, noopFd, count, firstPort, lan, remote, res);
  } finally {
    restoreAffinity(affinity);
  }
  return res;
}

function runConnections(
  n: Nat,
  noopFd: number,
  count: number,
  firstPort: number,
  lan: string,
  remote: string,
  res: ConnectionResult,
): void {
  for (let i = 0; i < count; i++) {
    let ext = 0;
    CONN_STEPS.forEach((s, k) => {
      const eg = s.dir === "egress";
      const pkt = buildPacket({
        family: 4,
        src: eg ? lan : remote,
        dst: eg ? remote : EXT4,
        proto: "tcp",
        sport: eg ? firstPort + i : 9000,
        dport: eg ? 9000 : ext,
        tcpFlags: s.flags,
        payload: new Uint8Array(s.payload),
      });
      const nop = () => bpf.testRun(noopFd, pkt, { repeat: 1 }).durationNs;
      const before = i % 2 ? nop() : 0;
      const r = bpf.testRun(eg ? n.nat.egressFd : n.nat.ingressFd, pkt, { repeat: 1 });
      const base = i % 2 ? before : nop();
      const out = parsePacket(r.dataOut);
      if (k === 0) ext = out.sport ?? 0;
      const translated = eg
        ? out.src === EXT4 && out.sport === ext
        : out.dst === lan && out.dport === firstPort + i;
      if (r.retval !== TC_ACT_OK || !translated) res.failures++;
      else res.deltas[k].push(r.durationNs - base);
    });
  }
}

/**
 * Sizes of a session key (map_ct, allocated per session) and of a mapping record (map_records,
 * preallocated: one per external port).
 */
export const KEY_SIZES = {
  ct: CT_KEY_LAYOUT.size,
  mappingRecord: MAPPING_RECORD_LAYOUT.size,
} as const;
