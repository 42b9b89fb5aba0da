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

/** A running sweep loop. */
export interface Sweeper {
  /** Stops the loop and waits for a sweep in progress. */
  stop(): Promise<void>;
}

/** Starts sweeping `targets()` (read anew each time, so reloads are followed). */
export function startSweeper(targets: () => SweepTarget[]): Sweeper {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();

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
    timer = setTimeout(() => {
      running = sweep().then((took) => schedule(nextSweepDelay(took)));
    }, delay);
  };
  schedule(SWEEP_MIN_INTERVAL_MS);
  return {
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
