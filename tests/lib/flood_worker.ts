/**
 * A worker that floods a program with frames (`BPF_PROG_TEST_RUN`, repeat 1, one after another
 * round the list) from one CPU until told to stop: a datapath busy while the main thread changes
 * the maps under it.
 * @module
 */
/// <reference lib="deno.worker" />

import * as bpf from "../../lib/ffi/libbpf.ts";
import { pinThread } from "./cpu.ts";

/** What the test sends the worker. */
export interface FloodJob {
  cpu: number;
  fd: number;
  frames: Uint8Array[];
  /**
   * Int32Array view: [stop, started, held, released]; the worker sets `started` and runs until
   * `stop` is set. At its i-th hold it sets `held` to i + 1 and waits until `released` > i.
   */
  flags: SharedArrayBuffer;
  /** Stop after this many runs whatever happens (a bound for a test that died). */
  maxRuns: number;
  /** Run counts, ascending, before which the worker waits to be released (none by default). */
  holds?: number[];
}

self.onmessage = (e: MessageEvent<FloodJob>) => {
  const job = e.data;
  try {
    pinThread(job.cpu);
    const flags = new Int32Array(job.flags);
    Atomics.store(flags, 1, 1);
    const holds = job.holds ?? [];
    let runs = 0;
    let h = 0;
    while (Atomics.load(flags, 0) === 0 && runs < job.maxRuns) {
      if (h < holds.length && runs === holds[h]) {
        Atomics.store(flags, 2, h + 1);
        for (let r; (r = Atomics.load(flags, 3)) <= h && Atomics.load(flags, 0) === 0;) {
          Atomics.wait(flags, 3, r, 100);
        }
        h++;
        continue;
      }
      bpf.testRun(job.fd, job.frames[runs % job.frames.length], { repeat: 1 });
      runs++;
    }
    self.postMessage({ runs });
  } catch (err) {
    self.postMessage({ error: (err as Error).message });
  }
};
