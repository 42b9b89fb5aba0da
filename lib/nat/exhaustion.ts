/**
 * Warnings when new mappings are refused for want of room: the datapath counts
 * each refusal (`drop_no_port`, `drop_binding_full`, `drop_ct_full` in
 * `map_stats`) and answers with ICMP 3/13, but the daemon would say nothing.
 * The session sweep (lib/nat/sweep.ts) hands each interface's counters to
 * {@link ExhaustionWatch.check}: when they grew since the last report, one
 * warning line per interface names the refusals since then and what to raise,
 * at most once a minute per interface and reason (the first at the first sweep
 * that sees one). Counters already there when an interface is first seen
 * (pinned state of an earlier run) are not reported.
 * @module
 */

import * as log from "../log.ts";
import { statCount } from "../state/read.ts";

/** The refusal counters watched, and what to do about each. */
export const EXHAUSTION_REASONS = {
  drop_no_port:
    "widen the port ranges (tcp_ranges, udp_ranges, icmp_ranges), or add external addresses " +
    "(each needs a slot: external_slots)",
  drop_binding_full: "raise binding_max_records",
  drop_ct_full: "raise ct_max_records",
  drop_host_full: "one internal address holds binding_max_per_host bindings: raise it if that " +
    "host is meant to",
  drop_host_ct_full: "one internal address's bindings hold session_max_per_host sessions: " +
    "raise it if that host is meant to",
} as const;

/** A watched counter. */
export type ExhaustionReason = keyof typeof EXHAUSTION_REASONS;

const REASONS = Object.keys(EXHAUSTION_REASONS) as ExhaustionReason[];

/** Shortest pause between two warnings of one interface for one reason. */
export const EXHAUSTION_REPORT_INTERVAL_MS = 60_000;

/** Reads the watched counters of `map_stats` (fd), summed over CPUs. */
export function readExhaustion(statsFd: number): Record<ExhaustionReason, number> {
  const out = {} as Record<ExhaustionReason, number>;
  for (const r of REASONS) out[r] = statCount(statsFd, r);
  return out;
}

interface Seen {
  /** What the counters were at the last report of each reason (or when first seen). */
  reported: Record<ExhaustionReason, number>;
  /** When each reason was last reported, ms (performance.now()). */
  at: Partial<Record<ExhaustionReason, number>>;
}

/** The counters' history of every interface: `check` logs what is due. */
export interface ExhaustionWatch {
  /**
   * Takes `counts` of `ifname` at `now` ms; logs one warning when refusals grew and are due,
   * and returns the refusals reported (empty: none). The first counts of an interface are the
   * baseline.
   */
  check(
    ifname: string,
    counts: Record<ExhaustionReason, number>,
    now?: number,
  ): Partial<Record<ExhaustionReason, number>>;
  /** Forgets interfaces no longer served. */
  retain(ifnames: Iterable<string>): void;
}

/** A new {@link ExhaustionWatch}. */
export function exhaustionWatch(): ExhaustionWatch {
  const seen = new Map<string, Seen>();
  return {
    check(ifname, counts, now = performance.now()) {
      const s = seen.get(ifname);
      if (!s) {
        seen.set(ifname, { reported: { ...counts }, at: {} });
        return {};
      }
      const due: Partial<Record<ExhaustionReason, number>> = {};
      for (const r of REASONS) {
        // A counter that went down: maps made anew (a reload), counting from 0.
        if (counts[r] < s.reported[r]) s.reported[r] = 0;
        const grew = counts[r] - s.reported[r];
        const last = s.at[r];
        if (grew > 0 && (last === undefined || now - last >= EXHAUSTION_REPORT_INTERVAL_MS)) {
          due[r] = grew;
          s.reported[r] = counts[r];
          s.at[r] = now;
        }
      }
      const reasons = Object.keys(due) as ExhaustionReason[];
      if (reasons.length > 0) {
        const fields: Record<string, unknown> = { ifname };
        for (const r of reasons) fields[r] = due[r];
        fields.fix = reasons.map((r) => EXHAUSTION_REASONS[r]).join("; ");
        log.warn("new mappings refused for want of room since the last report", fields);
      }
      return due;
    },
    retain(ifnames) {
      const keep = new Set(ifnames);
      for (const k of seen.keys()) if (!keep.has(k)) seen.delete(k);
    },
  };
}
