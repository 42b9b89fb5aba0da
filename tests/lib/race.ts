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

/**
 * Runs a worker module (a URL) on `job` and resolves to its one reply; a reply with `error`, a
 * worker's exception or 60 s without a reply reject. The worker is terminated either way.
 */
export function runWorker<T>(module: URL, job: unknown): Promise<T> {
  const w = new Worker(module.href, { type: "module" });
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("worker timed out")), 60_000);
    const end = (f: () => void) => {
      clearTimeout(timer);
      w.terminate();
      f();
    };
    w.onmessage = (e) =>
      end(() => e.data.error ? reject(new Error(e.data.error)) : resolve(e.data));
    w.onerror = (e) => end(() => reject(new Error(e.message)));
    w.postMessage(job);
  });
}

const RACE_WORKER = new URL("./race_worker.ts", import.meta.url);

async function runRace(job: RaceJob): Promise<RaceResult> {
  const r = await runWorker<{ verdicts: number[]; outs?: Uint8Array[] }>(RACE_WORKER, job);
  return { verdicts: r.verdicts, outs: r.outs ?? [] };
}

/** Runs step lists `a` on CPU 0 and `b` on CPU 1, step by step together. */
export function onTwoCpus(
  a: RaceJob["steps"],
  b: RaceJob["steps"],
  outputs = false,
): Promise<RaceResult[]> {
  const barrier = new SharedArrayBuffer(8);
  return Promise.all([
    runRace({ cpu: 0, parties: 2, barrier, steps: a, outputs }),
    runRace({ cpu: 1, parties: 2, barrier, steps: b, outputs }),
  ]);
}
