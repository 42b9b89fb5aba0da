/**
 * The session sweep's walk (bpf/lib/state.h, `expire_sessions`), in short
 * runs: the kernel does not reschedule inside a BPF program, and one walk of
 * every table held its CPU ~15 ms at the default sizes (110-180 ms at a
 * million sessions). Each run looks at one piece, which `map_sweep` names:
 *
 * - the mapping records, {@link RECORDS_PER_RUN} at a time (their inline
 *   first sessions);
 * - the further sessions in `map_ct`, read here in batches
 *   (`bpf_map_lookup_batch`, which also skips the hash's empty buckets ~8×
 *   faster than `bpf_for_each_map_elem` did). Only the keys of sessions idle
 *   longer than the shortest timeout go to the program, which expires those
 *   past their own timeout by its clock, as the datapath would judge them.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import { monotonicNs } from "../ffi/libc.ts";
import {
  ADDR_KEY_LAYOUT,
  ADDR_VALUE_LAYOUT,
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  HOST_COUNTS_LAYOUT,
  HOST_KEY_LAYOUT,
  SWEEP_BATCH_LAYOUT,
  SWEEP_KEYS,
} from "./codec.ts";
import { endSweep, type NatObject } from "./loader.ts";

/** Records one run walks (~0.5 ms here). */
export const RECORDS_PER_RUN = 32_768;
/** `map_ct` entries read per batch. */
const CT_BATCH = SWEEP_KEYS;
/**
 * Leeway of the idle filter, ns: the program's clock (`bpf_ktime_get_coarse_ns`) and this
 * one's need not agree to the nanosecond; a key sent too early is only looked at.
 */
const FILTER_SLACK_NS = 1_000_000_000;

/** What one sweep did. */
export interface SweepResult {
  /** Sessions expired. */
  expired: number;
  /** Program runs it took. */
  runs: number;
  /** `map_ct` entries it read (those it expired included): the further sessions it found. */
  ctEntries: number;
  /**
   * The longest piece, ns: a program run or a batch read of `map_ct`, the longest the sweep held
   * a CPU in the kernel.
   */
  longestPieceNs: number;
  /**
   * What the sweep itself cost, ns (async form): its program runs as the kernel timed them and
   * its work between them, without the waits for the event loop that other work (a metrics
   * scrape) may hold meanwhile.
   */
  costNs?: number;
}

type RunResult = { retval: number; durationNs: number };

/** A sweep that found nothing (none ran). */
export const noSweep = (): SweepResult => ({
  expired: 0,
  runs: 0,
  ctEntries: 0,
  longestPieceNs: 0,
});

/**
 * The map_sweep value being written, shared by every sweep: a piece is written and uploaded
 * without an await in between, so sweeps of several objects may interleave.
 */
const batch = new Uint8Array(SWEEP_BATCH_LAYOUT.size);
const batchView = new DataView(batch.buffer);
/** The packet of a run (the program reads none of it) and the room for its copy back. */
const RUN_DATA = new Uint8Array(64);
const RUN_OPTS = { dataOutSize: RUN_DATA.length };

const ZERO = new Uint8Array(4);
const OFF = SWEEP_BATCH_LAYOUT.fields;
const KEY_SIZE = CT_KEY_LAYOUT.size;
const VALUE_SIZE = CT_VALUE_LAYOUT.size;
const LAST_SEEN = CT_VALUE_LAYOUT.fields.last_seen_ns.offset;

/**
 * The runs of one sweep of `n`: before each yield, `map_sweep` holds the next piece; the
 * caller runs the program and passes its result back. Returns the totals, early when `n` is
 * to be closed (a run's await let `closeNat` in).
 */
function* sweepRuns(n: NatObject): Generator<void, SweepResult, RunResult> {
  const v = batchView;
  const res = noSweep();
  function* run(
    recFrom: number,
    recCount: number,
    keys: number,
  ): Generator<void, boolean, RunResult> {
    v.setUint32(OFF.rec_from.offset, recFrom, true);
    v.setUint32(OFF.rec_count.offset, recCount, true);
    v.setUint32(OFF.keys_n.offset, keys, true);
    bpf.mapUpdate(n.maps.sweep, ZERO, batch);
    const r = yield;
    res.expired += r.retval;
    res.runs += 1;
    res.longestPieceNs = Math.max(res.longestPieceNs, r.durationNs);
    return !n.closing;
  }

  const records = bpf.mapInfo(n.maps.records).maxEntries;
  for (let from = 0; from < records; from += RECORDS_PER_RUN) {
    if (!(yield* run(from, Math.min(RECORDS_PER_RUN, records - from), 0))) return res;
  }

  const shortest = Number(n.shortestTimeoutNs);
  let keys = 0;
  const reads = bpf.mapBatches(n.maps.ct, KEY_SIZE, VALUE_SIZE, CT_BATCH);
  try {
    for (;;) {
      const t0 = performance.now();
      const step = reads.next();
      res.longestPieceNs = Math.max(res.longestPieceNs, (performance.now() - t0) * 1e6);
      if (step.done) break;
      const b = step.value;
      res.ctEntries += b.count;
      // Idle longer than the shortest timeout: lastSeen < now + slack - shortest. The clock as
      // a double (exact to 2^53 ns, 104 days; beyond, off by a few ns against a 1 s leeway).
      const before = Number(monotonicNs()) + FILTER_SLACK_NS - shortest;
      const vv = new DataView(b.values.buffer, b.values.byteOffset);
      for (let i = 0; i < b.count; i++) {
        const at = i * VALUE_SIZE + LAST_SEEN;
        const lastSeen = vv.getUint32(at + 4, true) * 2 ** 32 + vv.getUint32(at, true);
        if (lastSeen >= before) continue;
        batch.set(
          b.keys.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE),
          OFF.keys.offset + keys * KEY_SIZE,
        );
        if (++keys === SWEEP_KEYS) {
          if (!(yield* run(0, 0, keys))) return res;
          keys = 0;
        }
      }
    }
  } finally {
    reads.return(undefined);
  }
  if (keys > 0) yield* run(0, 0, keys);
  return res;
}

/**
 * The session sweep: deletes every session past its timeout, and each binding with its last
 * session, in short runs of the program. The daemon runs it once at start and then paced by
 * lib/nat/sweep.ts.
 */
export function expireSessions(n: NatObject): SweepResult {
  if (n.closing) return noSweep();
  n.sweeps = (n.sweeps ?? 0) + 1;
  const runs = sweepRuns(n);
  try {
    let step = runs.next();
    while (!step.done) step = runs.next(bpf.testRun(n.expireFd, RUN_DATA, RUN_OPTS));
    expireAddrMappings(n);
    forgetIdleHosts(n);
    return step.value;
  } finally {
    runs.return(undefined as never); // a failed run leaves the batch read's buffers with it
    endSweep(n);
  }
}

/** Deletes the entries of map `fd` whose value `drop` picks, read in batches; returns how many. */
function deleteWhere(
  fd: number,
  keySize: number,
  valueSize: number,
  drop: (vv: DataView, vo: number) => boolean,
): number {
  let deleted = 0;
  bpf.forEachEntry(fd, keySize, valueSize, ({ keys, ko, vv, vo }) => {
    if (drop(vv, vo) && bpf.mapDelete(fd, keys.subarray(ko, ko + keySize))) deleted++;
  });
  return deleted;
}

/**
 * Deletes the address-only mappings of other IP protocols (bpf/lib/addrnat.h) idle past
 * `timeout_other` (with the clocks' leeway): the programs count them as gone already, and the
 * table is a plain hash (a full one refuses new mappings, `drop_addr_full`), so a host cannot
 * push others' live ones out. other_max_records entries at most (4,096 by default: ~2 ms), read
 * in batches. Returns how many.
 */
export function expireAddrMappings(n: NatObject): number {
  if (!n.timeoutOtherNs) return 0;
  const ks = ADDR_KEY_LAYOUT.size, vs = ADDR_VALUE_LAYOUT.size;
  const seenAt = ADDR_VALUE_LAYOUT.fields.last_seen_ns.offset;
  const before = monotonicNs() - n.timeoutOtherNs - BigInt(FILTER_SLACK_NS);
  return deleteWhere(
    n.maps.addrNat,
    ks,
    vs,
    (vv, vo) => vv.getBigUint64(vo + seenAt, true) < before,
  );
}

/**
 * Deletes the entries of `map_hosts` (bpf/lib/hosts.h) whose counts are all zero: internal
 * addresses that hold nothing any more. The programs make an entry for every address that binds
 * and leave it (a delete there could lose another CPU's take), and the map has room for as many
 * addresses as there can be bindings: without this, addresses that come and go (DHCP leases,
 * IPv6 temporary addresses) would fill it, and every new one would be refused. A host that takes
 * a binding at the very moment its entry goes loses that count (the limit then lets it one
 * further), never the other way. Returns how many went.
 */
export function forgetIdleHosts(n: NatObject): number {
  const ks = HOST_KEY_LAYOUT.size, vs = HOST_COUNTS_LAYOUT.size;
  const b = HOST_COUNTS_LAYOUT.fields.bindings.offset;
  const s = HOST_COUNTS_LAYOUT.fields.sessions.offset;
  return deleteWhere(
    n.maps.hosts,
    ks,
    vs,
    (vv, vo) => !vv.getBigUint64(vo + b, true) && !vv.getBigUint64(vo + s, true),
  );
}

/**
 * {@link expireSessions} with each run off the JS thread, so the event loop turns between runs.
 * `closeNat` meanwhile ends it after the run in progress, and the object closes then.
 */
export async function expireSessionsAsync(n: NatObject): Promise<SweepResult> {
  if (n.closing) return noSweep();
  n.sweeps = (n.sweeps ?? 0) + 1;
  const runs = sweepRuns(n);
  try {
    let t = performance.now();
    let step = runs.next();
    let costMs = performance.now() - t;
    while (!step.done) {
      const r = await bpf.testRunAsync(n.expireFd, RUN_DATA, RUN_OPTS);
      t = performance.now();
      step = runs.next(r);
      costMs += performance.now() - t + r.durationNs / 1e6;
    }
    t = performance.now();
    expireAddrMappings(n);
    forgetIdleHosts(n);
    costMs += performance.now() - t;
    return { ...step.value, costNs: Math.round(costMs * 1e6) };
  } finally {
    runs.return(undefined as never); // a failed run leaves the batch read's buffers with it
    endSweep(n);
  }
}
