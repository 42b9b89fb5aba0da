/**
 * Two CPUs at once: step lists run by workers pinned to CPUs 0 and 1 (tests/lib/race_worker.ts),
 * meeting at a barrier before every step.
 * @module
 */
import type { RaceJob } from "./race_worker.ts";

/** What a worker ran: each step's verdict, and its output frame when asked for. */
export interface RaceResult {
  verdicts: number[];
  outs: Uint8Array[];
}

function runWorker(job: RaceJob): Promise<RaceResult> {
  const w = new Worker(new URL("./race_worker.ts", import.meta.url).href, { type: "module" });
  return new Promise<RaceResult>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("worker timed out")), 60_000);
    w.onmessage = (e) => {
      clearTimeout(timer);
      w.terminate();
      if (e.data.error) reject(new Error(e.data.error));
      else resolve({ verdicts: e.data.verdicts, outs: e.data.outs ?? [] });
    };
    w.onerror = (e) => {
      clearTimeout(timer);
      w.terminate();
      reject(new Error(e.message));
    };
    w.postMessage(job);
  });
}

/** Runs step lists `a` on CPU 0 and `b` on CPU 1, step by step together. */
export function onTwoCpus(
  a: RaceJob["steps"],
  b: RaceJob["steps"],
  outputs = false,
): Promise<RaceResult[]> {
  const barrier = new SharedArrayBuffer(8);
  return Promise.all([
    runWorker({ cpu: 0, parties: 2, barrier, steps: a, outputs }),
    runWorker({ cpu: 1, parties: 2, barrier, steps: b, outputs }),
  ]);
}
