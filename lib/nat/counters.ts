/**
 * Per-session packet and byte counters (`session_counters`, map_sess_counters): one value per
 * CPU, each counting for the session created at its `created_s` (bpf/einat.h struct
 * sess_counter); a session's counts are the sum over the CPUs whose value carries its
 * created_s, so a session made again on the same key never shows the counts of the one before.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import { CT_KEY_LAYOUT, SESS_COUNTER_LAYOUT } from "./codec.ts";

/** One session's packets and bytes (IP header onwards), out (egress) and in (ingress). */
export interface SessionCounts {
  packetsOut: number;
  bytesOut: number;
  packetsIn: number;
  bytesIn: number;
}

/** The raw per-CPU values of every counted session, by {@link counterKey} of its ct_key. */
export type CounterTable = Map<string, Uint8Array>;

/** The table key of the ct_key at `keys[ko..]` (one character per byte). */
export function counterKey(keys: Uint8Array, ko = 0): string {
  return String.fromCharCode(...keys.subarray(ko, ko + CT_KEY_LAYOUT.size));
}

/** Whether map `fd` counts sessions: it is sized for more than the one entry of "off". */
export function countingOn(fd: number): boolean {
  return bpf.mapInfo(fd).maxEntries > 1;
}

/** Reads every entry of map_sess_counters `fd`, in batches. */
export function readSessionCounters(fd: number): CounterTable {
  const info = bpf.mapInfo(fd), size = bpf.valueBytes(info);
  const out: CounterTable = new Map();
  bpf.forEachEntry(fd, info.keySize, size, (e) => {
    out.set(counterKey(e.keys, e.ko), e.values.slice(e.vo, e.vo + size));
  });
  return out;
}

/**
 * The counts of the session created at `createdS` from its per-CPU values `raw` (each slot
 * 8-byte aligned: the struct is 40 bytes): the CPUs whose value counts another incarnation of
 * the key are left out.
 */
export function sumCounts(raw: Uint8Array, createdS: number): SessionCounts {
  const L = SESS_COUNTER_LAYOUT.fields, slot = Math.ceil(SESS_COUNTER_LAYOUT.size / 8) * 8;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: SessionCounts = { packetsOut: 0, bytesOut: 0, packetsIn: 0, bytesIn: 0 };
  for (let o = 0; o + slot <= raw.length; o += slot) {
    if (v.getUint32(o + L.created_s.offset, true) !== createdS) continue;
    out.packetsOut += Number(v.getBigUint64(o + L.packets_out.offset, true));
    out.bytesOut += Number(v.getBigUint64(o + L.bytes_out.offset, true));
    out.packetsIn += Number(v.getBigUint64(o + L.packets_in.offset, true));
    out.bytesIn += Number(v.getBigUint64(o + L.bytes_in.offset, true));
  }
  return out;
}
