/**
 * The daemon's session sweep. Sessions carry no timer (bpf/lib/ct.h): the
 * datapath treats an expired session as gone, and this sweep deletes them
 * (and bindings with their last session) by running `expire_sessions`
 * over every served interface. Walking the session table costs ~9 ms with
 * the default sizes and ~110 ms with a million sessions, so the pace follows
 * the cost: every second, or 50 times the last sweep's duration (at most
 * ~2 % of a CPU), capped at 30 s. A session's port stays bound for at most
 * that long past its timeout; no packet uses an expired session meanwhile.
 * @module
 */

import * as log from "../log.ts";
import { expireSessionsAsync, type NatObject } from "./loader.ts";

/** Shortest pause between sweeps. */
export const SWEEP_MIN_INTERVAL_MS = 1000;
/** Longest pause between sweeps. */
export const SWEEP_MAX_INTERVAL_MS = 30_000;
/** The pause is at least this many times the last sweep's duration. */
export const SWEEP_PACE = 50;

/** Pause before the next sweep, given how long the last one took. */
export function nextSweepDelay(tookMs: number): number {
  const d = Math.ceil(tookMs * SWEEP_PACE);
  return Math.min(SWEEP_MAX_INTERVAL_MS, Math.max(SWEEP_MIN_INTERVAL_MS, d));
}

/** What a sweep runs over: the interfaces being served. */
export interface SweepTarget {
  ifname: string;
  nat?: NatObject | null;
}

/** What the sweep loop has done so far. */
export interface SweepStats {
  /** Sweeps completed. */
  sweeps: number;
  /** Duration of the last sweep over all interfaces, ms (0 before the first). */
  lastMs: number;
  /** Pause before the next sweep, ms. */
  nextMs: number;
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
  const stats: SweepStats = { sweeps: 0, lastMs: 0, nextMs: SWEEP_MIN_INTERVAL_MS };

  const sweep = async () => {
    const t0 = performance.now();
    for (const t of targets()) {
      if (stopped || !t.nat) continue;
      try {
        const n = await expireSessionsAsync(t.nat);
        if (n > 0) log.debug("sessions expired", { ifname: t.ifname, sessions: n });
      } catch (e) {
        log.warn("session sweep failed", { ifname: t.ifname, error: (e as Error).message });
      }
    }
    return performance.now() - t0;
  };
  const schedule = (delay: number) => {
    if (stopped) return;
    stats.nextMs = delay;
    timer = setTimeout(() => {
      running = sweep().then((took) => {
        const next = nextSweepDelay(took);
        if (next > SWEEP_MIN_INTERVAL_MS && stats.nextMs === SWEEP_MIN_INTERVAL_MS) {
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
  schedule(SWEEP_MIN_INTERVAL_MS);
  return {
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
    stats: () => ({ ...stats }),
  };
}
