/**
 * Bindings from user space: the mapping records, the outbound index and the slot table of
 * bpf/lib/records.h and bpf/lib/binding.h. Readers (show, metrics, purging, tests) walk the
 * records; writers (tests, the benchmark's fills) claim a record and insert its outbound entry
 * as the programs do, with the same hash.
 *
 * Writes from user space take no lock and use plain stores: they are for maps no program is
 * writing at the same time (start-up, tests). The records of an address that left are freed
 * by a program ({@link releaseSlotRecords}), as the datapath frees them.
 * @module
 */
import * as bpf from "../ffi/libbpf.ts";
import { withMapping } from "../ffi/libc.ts";
import {
  addr16,
  addrOf,
  BINDING_DYING,
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  IPPROTO,
  MAPPING_RECORD_LAYOUT,
  MAX_SLOTS,
  OUTBOUND_LINE_LAYOUT,
  PORT_BITS_LAYOUT,
  portBitsKey,
  PROTO_COUNT,
  protoIdx,
  REC,
  SESS_INLINE,
  SLOT_TABLE_LAYOUT,
} from "./codec.ts";

/** The maps a binding lives in. */
export interface RecordMaps {
  records: number;
  outbound: number;
  slots: number;
  bindingCount: number;
}

/** A binding: internal endpoint, external endpoint, and its sessions' references. */
export interface Binding {
  family: 4 | 6;
  l4proto: number;
  intAddr: Uint8Array;
  intPort: number;
  extAddr: Uint8Array;
  extPort: number;
  /** Live sessions (without the dying bit). */
  ref: number;
  /** Index of its record. */
  idx: number;
}

/** An occupied slot: the external address whose records it places. */
export interface SlotEntry {
  slot: number;
  family: 4 | 6;
  addr: Uint8Array;
}

export const OB_ENTRIES = 15;
export const OB_EMPTY = 0;
export const OB_TOMB = 1;
export const OB_IDX_BITS = 22;
const OB_IDX_MASK = (1 << OB_IDX_BITS) - 1;
/** Records per slot: 3 protocols x 65,536 ports. */
export const RECORDS_PER_SLOT = PROTO_COUNT * 65536;

const u32key = (i: number) => new Uint8Array(new Uint32Array([i]).buffer);
const ZERO = u32key(0);
/**
 * Offsets in a struct mapping_record: its fields, and the binding's internal endpoint (that of
 * the record's struct ct_value).
 */
export const RECORD_AT: Record<string, { offset: number }> = {
  ...MAPPING_RECORD_LAYOUT.fields,
  int_addr: {
    offset: MAPPING_RECORD_LAYOUT.fields.ct.offset + CT_VALUE_LAYOUT.fields.int_addr.offset,
  },
  int_port: {
    offset: MAPPING_RECORD_LAYOUT.fields.ct.offset + CT_VALUE_LAYOUT.fields.int_port.offset,
  },
};
const R = RECORD_AT;

/** Slots of external addresses the records map has room for. */
export function slotCount(recordsFd: number): number {
  return Math.floor(bpf.mapInfo(recordsFd).maxEntries / RECORDS_PER_SLOT);
}

/** Index of the record of (slot, protocol index, port), as rec_index() makes it. */
export function recIndex(slot: number, pidx: number, port: number): number {
  return ((slot * 3 + pidx) << 16) | port;
}

/** Slot, protocol index and port of record index `idx`. */
export function recPlace(idx: number): { slot: number; pidx: number; port: number } {
  const hi = idx >>> 16;
  return { slot: Math.floor(hi / 3), pidx: hi % 3, port: idx & 0xffff };
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** ob_hash() of bpf/lib/records.h: the endpoint's hash (line: low bits; tag: top 10 bits). */
export function obHash(family: 4 | 6, l4proto: number, addr: Uint8Array, port: number): number {
  const a = addr16(addr);
  const w = new DataView(a.buffer, a.byteOffset, 16);
  // the port is a __be16 read as a number: its bytes swapped on a little-endian machine
  const be = ((port & 0xff) << 8) | (port >>> 8);
  let h = ((family << 24) ^ (l4proto << 16) ^ be) >>> 0;
  for (let i = 0; i < 4; i++) {
    h = (Math.imul((h ^ w.getUint32(i * 4, true)) >>> 0, 0x9e3779b1) + 0x7f4a7c15) >>> 0;
  }
  return fmix32(h);
}

function obTag(h: number): number {
  const t = h >>> OB_IDX_BITS;
  return t ? t : 1;
}

/** The slot table (map_slots): the occupied slots. */
export function readSlots(fd: number): SlotEntry[] {
  const v = bpf.mapLookup(fd, ZERO, SLOT_TABLE_LAYOUT.size);
  if (!v) throw new Error("map_slots has no table");
  const out: SlotEntry[] = [];
  for (let i = 0; i < MAX_SLOTS; i++) {
    const f = v[i * 20 + 16];
    if (f === 4 || f === 6) {
      out.push({ slot: i, family: f, addr: addrOf(f, v.subarray(i * 20, i * 20 + 16)) });
    }
  }
  return out;
}

/** Writes the slot table: `entries` occupied, every other slot free. */
export function writeSlots(fd: number, entries: SlotEntry[]): void {
  const v = new Uint8Array(SLOT_TABLE_LAYOUT.size);
  for (const e of entries) {
    v.set(addr16(e.addr), e.slot * 20);
    v[e.slot * 20 + 16] = e.family;
  }
  bpf.mapUpdate(fd, ZERO, v);
}

/** The same address (the same bytes). */
export const sameAddr = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** The slot of an external address, or -1. */
export function slotOf(slots: SlotEntry[], family: 4 | 6, addr: Uint8Array): number {
  return slots.find((s) => s.family === family && sameAddr(s.addr, addr))?.slot ?? -1;
}

/** Records mapped at a time (1 MiB): what a walk adds to the process's memory. */
const RECORD_WINDOW = 16384;

/** Records per batch read (256 KiB), where the records cannot be mapped. */
const RECORD_BATCH = 4096;

/**
 * Calls `fn` for every mapping record not free, in place, with its index. The records are read
 * through a mapping of the map (BPF_F_MMAPABLE), a window at a time; batch reads, which cost
 * ~200 ns a record in the kernel (~120 ms for the default 589,824 records), only where the fd
 * cannot be mapped (a read-only fd: `einat show`). Free records (most of them) are passed over
 * in the loop itself. `spans` (record index ranges, `[from, to)`) limits the walk to them.
 */
export function forEachRecordAt(
  recordsFd: number,
  fn: (values: Uint8Array, vo: number, vv: DataView, idx: number) => void,
  spans?: [number, number][],
): void {
  const size = MAPPING_RECORD_LAYOUT.size, state = R.state.offset;
  const walk = (values: Uint8Array, n: number, first: number) => {
    const vv = new DataView(values.buffer, values.byteOffset, values.byteLength);
    for (let i = 0, vo = 0; i < n; i++, vo += size) {
      if ((values[vo + state] & REC.STATE_MASK) === REC.FREE) continue;
      fn(values, vo, vv, first + i);
    }
  };
  const total = bpf.mapInfo(recordsFd).maxEntries;
  const within = (spans ?? [[0, total]]).map(([a, b]) =>
    [Math.max(0, a), Math.min(total, b)] as const
  ).filter(([a, b]) => a < b);
  if (mappable(recordsFd)) {
    for (const [from, to] of within) {
      for (let first = from; first < to; first += RECORD_WINDOW) {
        const n = Math.min(RECORD_WINDOW, to - first);
        withMapping(recordsFd, first * size, n * size, (values) => walk(values, n, first));
      }
    }
    return;
  }
  for (const [from, to] of within) {
    let first = from;
    // An array's batches come in index order, from the one after `after`.
    const after = from > 0 ? u32key(from - 1) : null;
    for (const { values, count } of bpf.mapBatches(recordsFd, 4, size, RECORD_BATCH, after)) {
      walk(values, Math.min(count, to - first), first);
      first += count;
      if (first >= to) break;
    }
  }
}

/**
 * Calls `fn` for every live mapping record whose slot is occupied, in place, with that slot's
 * entry, its external port and its index (the walk of {@link forEachRecordAt}).
 */
export function forEachLiveRecord(
  recordsFd: number,
  slots: SlotEntry[],
  fn: (
    values: Uint8Array,
    vo: number,
    vv: DataView,
    slot: SlotEntry,
    port: number,
    idx: number,
  ) => void,
): void {
  const bySlot: (SlotEntry | undefined)[] = [];
  for (const e of slots) bySlot[e.slot] = e;
  // Only the records of occupied slots: those of a free one hold no live binding to report.
  const spans = slots.map((e) =>
    [recIndex(e.slot, 0, 0), recIndex(e.slot + 1, 0, 0)] as [number, number]
  );
  forEachRecordAt(recordsFd, (values, vo, vv, idx) => {
    if ((values[vo + R.state.offset] & REC.STATE_MASK) !== REC.LIVE) return;
    const { slot, port } = recPlace(idx);
    const e = bySlot[slot];
    if (e) fn(values, vo, vv, e, port, idx);
  }, spans);
}

/** Whether `fd` can be mapped (opened for writing: a read-only shared mapping of a read-only
 * fd is refused by the kernel). */
function mappable(fd: number): boolean {
  try {
    withMapping(fd, 0, 4096, () => {});
    return true;
  } catch {
    return false;
  }
}

function readRecord(fd: number, idx: number): Uint8Array | null {
  return bpf.mapLookup(fd, u32key(idx), MAPPING_RECORD_LAYOUT.size);
}

function readLine(fd: number, line: number): Uint32Array {
  const v = bpf.mapLookup(fd, u32key(line), OUTBOUND_LINE_LAYOUT.size);
  if (!v) throw new Error(`map_outbound has no line ${line}`);
  return new Uint32Array(v.slice().buffer);
}

function writeLine(fd: number, line: number, words: Uint32Array): void {
  bpf.mapUpdate(fd, u32key(line), new Uint8Array(words.buffer));
}

function lineOf(maps: RecordMaps, h: number): number {
  return h & (bpf.mapInfo(maps.outbound).maxEntries - 1);
}

function liveNames(
  rec: Uint8Array,
  family: 4 | 6,
  l4proto: number,
  addr: Uint8Array,
  port: number,
): boolean {
  const v = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  return (v.getUint32(R.state.offset, true) & REC.STATE_MASK) === REC.LIVE &&
    !(v.getUint32(R.ref.offset, true) & BINDING_DYING) &&
    rec[R.family.offset] === family && rec[R.l4proto.offset] === l4proto &&
    v.getUint16(R.int_port.offset, false) === port &&
    sameAddr(rec.subarray(R.int_addr.offset, R.int_addr.offset + 16), addr16(addr));
}

/** The record index of the binding of an internal endpoint (the outbound index), or -1. */
export function findOutbound(
  maps: RecordMaps,
  family: 4 | 6,
  l4proto: number,
  addr: Uint8Array,
  port: number,
): number {
  const h = obHash(family, l4proto, addr, port);
  const line = readLine(maps.outbound, lineOf(maps, h));
  const tag = obTag(h);
  for (let i = 1; i <= OB_ENTRIES; i++) {
    const e = line[i];
    if (e === OB_EMPTY) break;
    if (e >>> OB_IDX_BITS !== tag) continue;
    const rec = readRecord(maps.records, e & OB_IDX_MASK);
    if (rec && liveNames(rec, family, l4proto, addr, port)) return e & OB_IDX_MASK;
  }
  return -1;
}

function decodeAt(b: Uint8Array, at: number, idx: number, slots: SlotEntry[]): Binding | null {
  const v = new DataView(b.buffer, b.byteOffset + at, MAPPING_RECORD_LAYOUT.size);
  if ((v.getUint32(R.state.offset, true) & REC.STATE_MASK) !== REC.LIVE) return null;
  const family = b[at + R.family.offset] === 6 ? 6 : 4;
  const { slot, port } = recPlace(idx);
  const s = slots.find((x) => x.slot === slot);
  if (!s) return null;
  return {
    family,
    l4proto: b[at + R.l4proto.offset],
    intAddr: addrOf(family, b.subarray(at + R.int_addr.offset, at + R.int_addr.offset + 16)),
    intPort: v.getUint16(R.int_port.offset, false),
    extAddr: s.addr,
    extPort: port,
    ref: v.getUint32(R.ref.offset, true) & ~BINDING_DYING,
    idx,
  };
}

/** The binding of an external endpoint (its record, when live), or null. */
export function findBinding(
  maps: RecordMaps,
  family: 4 | 6,
  l4proto: number,
  extAddr: Uint8Array,
  extPort: number,
): Binding | null {
  const slots = readSlots(maps.slots);
  const slot = slotOf(slots, family, extAddr);
  if (slot < 0) return null;
  const idx = recIndex(slot, protoIdx(l4proto), extPort);
  const rec = readRecord(maps.records, idx);
  const b = rec ? decodeAt(rec, 0, idx, slots) : null;
  return b && b.family === family && b.l4proto === l4proto ? b : null;
}

/** The binding of an internal endpoint, or null. */
export function findBindingOf(
  maps: RecordMaps,
  family: 4 | 6,
  l4proto: number,
  intAddr: Uint8Array,
  intPort: number,
): Binding | null {
  const idx = findOutbound(maps, family, l4proto, intAddr, intPort);
  if (idx < 0) return null;
  const rec = readRecord(maps.records, idx);
  return rec ? decodeAt(rec, 0, idx, readSlots(maps.slots)) : null;
}

/** Every live binding, walking the records in batches. */
export function* bindings(maps: RecordMaps): Generator<Binding> {
  const slots = readSlots(maps.slots);
  const out: Binding[] = [];
  forEachLive(maps, slots, (b) => out.push(b));
  yield* out;
}

/** Calls `fn` for every live binding (records read in batches). */
export function forEachLive(maps: RecordMaps, slots: SlotEntry[], fn: (b: Binding) => void): void {
  forEachLiveRecord(maps.records, slots, (values, vo, _vv, slot, _port, idx) => {
    const b = decodeAt(values, vo, idx, [slot]);
    if (b) fn(b);
  });
}

/** Number of live bindings: records in the LIVE state. */
export function countBindings(recordsFd: number): number {
  let n = 0;
  forEachRecordAt(recordsFd, (values, vo) => {
    if ((values[vo + R.state.offset] & REC.STATE_MASK) === REC.LIVE) n++;
  });
  return n;
}

/**
 * Entry `i` of map_binding_count: 0, the live bindings the programs count; 1, the sessions
 * inline in records as sync_port_hint last counted them. Null when it cannot be read.
 */
export function bindingCountAt(fd: number, i: 0 | 1): bigint | null {
  const v = bpf.mapLookup(fd, u32key(i), 8);
  return v ? new DataView(v.buffer).getBigUint64(0, true) : null;
}

/**
 * Sets the live-binding count (entry 0 of map_binding_count). Only while no program counts in
 * it: the programs move it atomically, this is a plain write.
 */
export function setBindingCount(fd: number, n: bigint): void {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, true);
  bpf.mapUpdate(fd, ZERO, out);
}

function addCount(maps: RecordMaps, d: number): void {
  const next = (bindingCountAt(maps.bindingCount, 0) ?? 0n) + BigInt(d);
  // Never below zero, as the programs count (binding_count_drop in bpf/lib/binding.h).
  setBindingCount(maps.bindingCount, next < 0n ? 0n : next);
}

/**
 * Writes a binding as the programs make one: its record (live, `ref` references) and its
 * outbound entry, and counts it. The external address must have a slot. Throws when the
 * record is taken or the outbound line is full.
 */
export function writeBinding(
  maps: RecordMaps,
  b: Omit<Binding, "idx" | "ref"> & { ref?: number },
): number {
  const slot = slotOf(readSlots(maps.slots), b.family, b.extAddr);
  if (slot < 0) throw new Error(`no slot for external address of binding`);
  const idx = recIndex(slot, protoIdx(b.l4proto), b.extPort);
  const old = readRecord(maps.records, idx);
  const oldState = old ? new DataView(old.buffer).getUint32(0, true) : 0;
  if ((oldState & REC.STATE_MASK) !== REC.FREE) throw new Error(`record ${idx} is taken`);
  const h = obHash(b.family, b.l4proto, b.intAddr, b.intPort);
  const ln = lineOf(maps, h);
  const line = readLine(maps.outbound, ln);
  let free = -1;
  for (let i = 1; i <= OB_ENTRIES; i++) {
    if (line[i] === OB_EMPTY || line[i] === OB_TOMB) {
      free = i;
      break;
    }
  }
  if (free < 0) throw new Error(`outbound line ${ln} is full`);
  const rec = new Uint8Array(MAPPING_RECORD_LAYOUT.size);
  const v = new DataView(rec.buffer);
  v.setUint32(R.state.offset, ((oldState & ~REC.STATE_MASK) + REC.GEN_ONE) | REC.LIVE, true);
  v.setUint32(R.ref.offset, b.ref ?? 0, true);
  rec.set(addr16(b.intAddr), R.int_addr.offset);
  v.setUint16(R.int_port.offset, b.intPort, false);
  rec[R.family.offset] = b.family;
  rec[R.l4proto.offset] = b.l4proto;
  bpf.mapUpdate(maps.records, u32key(idx), rec);
  line[free] = ((obTag(h) << OB_IDX_BITS) | idx) >>> 0;
  writeLine(maps.outbound, ln, line);
  addCount(maps, 1);
  return idx;
}

function freeRecord(maps: RecordMaps, idx: number, rec: Uint8Array): void {
  const v = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  const family = rec[R.family.offset] === 6 ? 6 : 4;
  const intAddr = rec.subarray(R.int_addr.offset, R.int_addr.offset + 16);
  const h = obHash(family, rec[R.l4proto.offset], intAddr, v.getUint16(R.int_port.offset, false));
  const ln = lineOf(maps, h);
  const line = readLine(maps.outbound, ln);
  const want = ((obTag(h) << OB_IDX_BITS) | idx) >>> 0;
  const at = line.indexOf(want, 1);
  if (at > 0) {
    line[at] = OB_TOMB;
    writeLine(maps.outbound, ln, line);
  }
  const out = new Uint8Array(MAPPING_RECORD_LAYOUT.size);
  const ov = new DataView(out.buffer);
  ov.setUint32(R.state.offset, v.getUint32(R.state.offset, true) & ~REC.STATE_MASK, true);
  ov.setUint32(R.ref.offset, BINDING_DYING, true);
  bpf.mapUpdate(maps.records, u32key(idx), out);
  addCount(maps, -1);
}

/** Deletes the binding of an external endpoint: its outbound entry and its record. */
export function deleteBinding(
  maps: RecordMaps,
  family: 4 | 6,
  l4proto: number,
  extAddr: Uint8Array,
  extPort: number,
): boolean {
  const b = findBinding(maps, family, l4proto, extAddr, extPort);
  if (!b) return false;
  const rec = readRecord(maps.records, b.idx);
  if (!rec) return false;
  freeRecord(maps, b.idx, rec);
  return true;
}

/** Records `release_records` frees in one run: a piece as short as a sweep's (lib/nat/expire.ts). */
const RELEASE_PIECE = 32768;

/**
 * Frees every live record of `slot` (an external address that left), the first sessions inline
 * in them going too, with `release_records` (bpf/lib/state.h, program `releaseFd`), a piece at
 * a time: in the kernel, as the datapath frees a binding, not record by record from here.
 * Returns how many bindings and how many of those sessions.
 */
export function releaseSlotRecords(
  maps: RecordMaps & { portBits: number },
  releaseFd: number,
  slot: number,
): { bindings: number; sessions: number } {
  let bindings = 0, sessions = 0;
  const total = bpf.mapInfo(maps.records).maxEntries;
  const lo = Math.min(total, recIndex(slot, 0, 0)), hi = Math.min(total, lo + RECORDS_PER_SLOT);
  const io = new Uint8Array(64), dv = new DataView(io.buffer);
  for (let first = lo; first < hi; first += RELEASE_PIECE) {
    dv.setUint32(0, first, true);
    dv.setUint32(4, Math.min(RELEASE_PIECE, hi - first), true);
    const r = bpf.testRun(releaseFd, io, { dataOutSize: io.length });
    const out = new DataView(r.dataOut.buffer, r.dataOut.byteOffset, r.dataOut.byteLength);
    if (r.retval !== 0 || out.byteLength < 16) {
      throw new Error(`release_records: records ${first}.. of slot ${slot} not released`);
    }
    bindings += out.getUint32(8, true);
    sessions += out.getUint32(12, true);
  }
  // The slot's free-port hint goes too: its bits would mark ports taken for the next address.
  const none = new Uint8Array(PORT_BITS_LAYOUT.size);
  for (const proto of [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.ICMP]) {
    bpf.mapUpdate(maps.portBits, portBitsKey(slot, proto), none);
  }
  return { bindings, sessions };
}

/**
 * Calls `fn` for every session: the map_ct entries, in place batch by batch, then the first
 * sessions inline in live mapping records, each presented as its map_ct entry would be (key and
 * value in buffers of their own, reused).
 */
export function forEachSession(
  fds: { ct: number; records?: number; slots?: number },
  fn: (e: bpf.EntryAt) => void,
): void {
  bpf.forEachEntry(fds.ct, CT_KEY_LAYOUT.size, CT_VALUE_LAYOUT.size, fn);
  if (fds.records === undefined || fds.slots === undefined) return;
  const keys = new Uint8Array(CT_KEY_LAYOUT.size), values = new Uint8Array(CT_VALUE_LAYOUT.size);
  const e: bpf.EntryAt = {
    keys,
    values,
    kv: new DataView(keys.buffer),
    vv: new DataView(values.buffer),
    ko: 0,
    vo: 0,
  };
  const K = CT_KEY_LAYOUT.fields;
  forEachLiveRecord(fds.records, readSlots(fds.slots), (recs, vo, vv, s, port) => {
    if (vv.getUint32(vo + R.sess.offset, true) !== SESS_INLINE) return;
    keys.fill(0);
    keys[K.l4proto.offset] = recs[vo + R.l4proto.offset];
    keys[K.family.offset] = recs[vo + R.family.offset];
    e.kv.setUint16(K.ext_port.offset, port, false);
    keys.set(
      recs.subarray(vo + R.remote_port.offset, vo + R.remote_port.offset + 2),
      K.remote_port.offset,
    );
    keys.set(addr16(s.addr), K.ext_addr.offset);
    keys.set(
      recs.subarray(vo + R.remote_addr.offset, vo + R.remote_addr.offset + 16),
      K.remote_addr.offset,
    );
    values.set(recs.subarray(vo + R.ct.offset, vo + R.ct.offset + CT_VALUE_LAYOUT.size));
    fn(e);
  });
}

/**
 * The record index and bytes of the binding whose first session, inline in its record, is the
 * session of key `key` (a struct ct_key); null when that session is not inline.
 */
function inlineRecordOf(
  maps: RecordMaps,
  key: Uint8Array,
): { idx: number; rec: Uint8Array } | null {
  const K = CT_KEY_LAYOUT.fields;
  const kv = new DataView(key.buffer, key.byteOffset, key.byteLength);
  const family = key[K.family.offset] === 6 ? 6 : 4;
  const ext = addrOf(family, key.subarray(K.ext_addr.offset, K.ext_addr.offset + 16));
  const b = findBinding(maps, family, key[K.l4proto.offset], ext, kv.getUint16(K.ext_port.offset));
  const rec = b ? readRecord(maps.records, b.idx) : null;
  if (!b || !rec) return null;
  const rv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  const remote = key.subarray(K.remote_addr.offset, K.remote_addr.offset + 16);
  const inline = rv.getUint32(R.sess.offset, true) === SESS_INLINE &&
    rv.getUint16(R.remote_port.offset) === kv.getUint16(K.remote_port.offset) &&
    sameAddr(rec.subarray(R.remote_addr.offset, R.remote_addr.offset + 16), remote);
  return inline ? { idx: b.idx, rec } : null;
}

/**
 * The value of the session of key `key` (a struct ct_key): a copy of the one inline in its
 * binding's record, or of its map_ct entry; null when there is none.
 */
export function findSession(maps: RecordMaps & { ct: number }, key: Uint8Array): Uint8Array | null {
  const r = inlineRecordOf(maps, key);
  if (r) return r.rec.slice(R.ct.offset, R.ct.offset + CT_VALUE_LAYOUT.size);
  return bpf.mapLookup(maps.ct, key, CT_VALUE_LAYOUT.size);
}

/**
 * Writes the value of the session of key `key`: into its binding's record when the session is
 * inline there, else into map_ct (user space: tests and benchmarks, which age sessions).
 */
export function writeSession(
  maps: RecordMaps & { ct: number },
  key: Uint8Array,
  value: Uint8Array,
): void {
  const r = inlineRecordOf(maps, key);
  if (!r) {
    bpf.mapUpdate(maps.ct, key, value);
    return;
  }
  const out = r.rec.slice();
  out.set(value, R.ct.offset);
  bpf.mapUpdate(maps.records, u32key(r.idx), out);
}
