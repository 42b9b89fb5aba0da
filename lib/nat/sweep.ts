/**
 * The daemon's session sweep. Sessions carry no timer (bpf/lib/ct.h): the
 * datapath treats an expired session as gone, and this sweep deletes them
 * (and bindings with their last session) over every served interface, in
 * short runs of `expire_sessions` (lib/nat/expire.ts; each ≤ ~1 ms, where one
 * walk of every table held its CPU ~15 ms at the default sizes and 110-180 ms
 * at a million sessions). A sweep costs ~6 ms at the default sizes and ~0.4
 * µs per further session in `map_ct`, so the pace follows both the timeouts
 * and the cost: a tenth of the shortest session timeout (6 s with the
 * defaults, whose shortest is ICMP's 60 s), at least 1 s, or 50 times the last
 * sweep's duration (at most ~2 % of a CPU), capped at 30 s. A session's port
 * stays bound for at most that long past its timeout; no packet uses an
 * expired session meanwhile. Each sweep also warns of new mappings refused for
 * want of room since the last one (lib/nat/exhaustion.ts).
 * @module
 */

import * as log from "../log.ts";
import type { NatObject } from "./loader.ts";
import { expireSessionsAsync } from "./expire.ts";
import { exhaustionWatch, readExhaustion } from "./exhaustion.ts";

/** Shortest pause between sweeps, whatever the timeouts. */
export const SWEEP_MIN_INTERVAL_MS = 1000;
/** Longest pause between sweeps. */
export const SWEEP_MAX_INTERVAL_MS = 30_000;
/** The pause is at least this many times the last sweep's duration. */
export const SWEEP_PACE = 50;
/** The pause is at least the shortest session timeout divided by this. */
export const SWEEP_TIMEOUT_SHARE = 10;

/**
 * The shortest pause between sweeps of sessions whose shortest timeout is `shortestMs`: a
 * tenth of it, from 1 s to 30 s.
 */
export function sweepFloorMs(shortestMs: number): number {
  const d = Math.floor(shortestMs / SWEEP_TIMEOUT_SHARE);
  return Math.min(SWEEP_MAX_INTERVAL_MS, Math.max(SWEEP_MIN_INTERVAL_MS, d));
}

/** Pause before the next sweep, given how long the last one took and the floor. */
export function nextSweepDelay(tookMs: number, floorMs = SWEEP_MIN_INTERVAL_MS): number {
  const d = Math.ceil(tookMs * SWEEP_PACE);
  return Math.min(SWEEP_MAX_INTERVAL_MS, Math.max(floorMs, d));
}

/** What a sweep runs over: the interfaces being served (not those waited for: no object). */
export interface SweepTarget {
  ifname: string;
  nat?: NatObject | null;
}

/**
 * The shortest session timeout among the loaded objects of `targets`, ms (the one their
 * programs apply: `NatObject.shortestTimeoutNs`), or Infinity without any.
 */
function shortestOf(targets: SweepTarget[]): number {
  return Math.min(...targets.flatMap((t) => t.nat ? [Number(t.nat.shortestTimeoutNs) / 1e6] : []));
}

/** What the sweep loop has done so far. */
export interface SweepStats {
  /** Sweeps completed. */
  sweeps: number;
  /** Duration of the last sweep over all interfaces, ms (0 before the first). */
  lastMs: number;
  /** Pause before the next sweep, ms. */
  nextMs: number;
  /**
   * The last sweep's longest piece in the kernel (a program run or a batch read of `map_ct`),
   * ms: the longest it held a CPU.
   */
  longestPieceMs: number;
}

/** A running sweep loop. */
export interface Sweeper {
  /** Stops the loop and waits for a sweep in progress. */
  stop(): Promise<void>;
  /** Counts and timings, for the metrics endpoint. */
  stats(): SweepStats;
}

/** Starts sweeping `targets()` (read anew each time, so reloads are followed). */
export function startSweeper(targets: () => SweepTarget[]): Sweeper {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  const stats: SweepStats = { sweeps: 0, lastMs: 0, nextMs: 0, longestPieceMs: 0 };
  const exhaustion = exhaustionWatch();
  // Refusals counted so far (pinned counters of an earlier run, the start) are the baseline;
  // from then on each sweep warns of new ones (rate-limited).
  const watchRefusals = (t: SweepTarget) => {
    if (!t.nat) return;
    try {
      exhaustion.check(t.ifname, readExhaustion(t.nat.maps.stats));
    } catch (e) {
      log.debug("refusal counters unreadable", { ifname: t.ifname, error: (e as Error).message });
    }
  };
  for (const t of targets()) watchRefusals(t);

  // What a sweep costs: its own work (expireSessionsAsync's costNs), not the wall time across
  // its awaits, which other work on the event loop (a metrics scrape) would stretch.
  const sweep = async () => {
    let took = 0;
    let longest = 0;
    const now = targets();
    exhaustion.retain(now.map((t) => t.ifname));
    for (const t of now) {
      if (stopped || !t.nat) continue;
      watchRefusals(t);
      try {
        const r = await expireSessionsAsync(t.nat);
        took += (r.costNs ?? 0) / 1e6;
        longest = Math.max(longest, r.longestPieceNs / 1e6);
        const n = r.expired;
        if (n > 0) log.debug("sessions expired", { ifname: t.ifname, sessions: n });
      } catch (e) {
        log.warn("session sweep failed", { ifname: t.ifname, error: (e as Error).message });
      }
    }
    stats.longestPieceMs = longest;
    return took;
  };
  let lastFloor: number | undefined;
  // The floor of the interfaces served now (a reload may change their timeouts), logged when
  // it changes.
  const floorNow = () => {
    const shortest = shortestOf(targets());
    const floor = Number.isFinite(shortest) ? sweepFloorMs(shortest) : SWEEP_MIN_INTERVAL_MS;
    if (floor !== lastFloor) {
      if (Number.isFinite(shortest)) {
        log.info("session sweep paced by the shortest timeout", {
          every_s: (floor / 1000).toFixed(1),
          shortest_timeout_s: (shortest / 1000).toFixed(1),
        });
      } else {
        log.info("session sweep idle: no interface served yet", {
          every_s: (floor / 1000).toFixed(1),
        });
      }
      lastFloor = floor;
    }
    return floor;
  };
  const schedule = (delay: number) => {
    if (stopped) return;
    stats.nextMs = delay;
    timer = setTimeout(() => {
      running = sweep().then((took) => {
        const floor = floorNow();
        const next = nextSweepDelay(took, floor);
        if (next > floor && stats.nextMs <= floor) {
          log.info("session sweep slowed to its cost", {
            sweep_ms: took.toFixed(1),
            every_s: (next / 1000).toFixed(1),
          });
        }
        stats.sweeps += 1;
        stats.lastMs = took;
        schedule(next);
      });
    }, delay);
  };
  schedule(floorNow());
  return {
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
    stats: () => ({ ...stats }),
  };
}
