import { equal } from "node:assert/strict";
import {
  nextSweepDelay,
  SWEEP_MAX_INTERVAL_MS,
  SWEEP_MIN_INTERVAL_MS,
  SWEEP_PACE,
  sweepFloorMs,
} from "./sweep.ts";
import { DEFAULTS } from "../config/toml.ts";
import type { Timeouts } from "../config/types.ts";
import { shortestTimeoutNs } from "./codec.ts";
import { roConfigOf } from "../daemon.ts";
import { testInterfaceConfig } from "../../tests/lib/natfixture.ts";

/** The shortest session timeout the loader gives an object of these timeouts, ms. */
const shortestMs = (timeouts: Timeouts = DEFAULTS.timeouts) =>
  Number(shortestTimeoutNs(roConfigOf(testInterfaceConfig({ timeouts })))) / 1e6;

Deno.test("sweep pace: the floor while sweeps are cheap, 50x a slow sweep's duration, at most 30 s", () => {
  equal(nextSweepDelay(0), SWEEP_MIN_INTERVAL_MS);
  equal(nextSweepDelay(8), SWEEP_MIN_INTERVAL_MS, "default-size table, few sessions");
  equal(nextSweepDelay(20), 20 * SWEEP_PACE);
  equal(nextSweepDelay(110), 5500, "a million sessions");
  equal(nextSweepDelay(10_000), SWEEP_MAX_INTERVAL_MS);
  equal(nextSweepDelay(15, 6000), 6000, "cheap: the timeouts' floor");
  equal(nextSweepDelay(180, 6000), 9000, "dear: its cost");
});

Deno.test("sweep floor: a tenth of the shortest session timeout, from 1 s to 30 s (6 s by default)", () => {
  equal(shortestMs(), 60_000, "ICMP's 60 s");
  equal(sweepFloorMs(shortestMs()), 6000);
  equal(sweepFloorMs(2000), SWEEP_MIN_INTERVAL_MS, "short test timeouts: every second");
  equal(sweepFloorMs(45_000), 4500);
  equal(sweepFloorMs(3_600_000), SWEEP_MAX_INTERVAL_MS);
  equal(
    shortestMs({ ...DEFAULTS.timeouts, udpMin: 2000, fragment: 500 }),
    2000,
    "fragments are not sessions",
  );
});
