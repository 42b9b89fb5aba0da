import { equal } from "node:assert/strict";
import {
  nextSweepDelay,
  SWEEP_MAX_INTERVAL_MS,
  SWEEP_MIN_INTERVAL_MS,
  SWEEP_PACE,
} from "./sweep.ts";

Deno.test("sweep pace: every second while sweeps are cheap, 50x a slow sweep's duration, at most 30 s", () => {
  equal(nextSweepDelay(0), SWEEP_MIN_INTERVAL_MS);
  equal(nextSweepDelay(8), SWEEP_MIN_INTERVAL_MS, "default-size table, few sessions");
  equal(nextSweepDelay(20), 20 * SWEEP_PACE);
  equal(nextSweepDelay(110), 5500, "a million sessions");
  equal(nextSweepDelay(10_000), SWEEP_MAX_INTERVAL_MS);
});
