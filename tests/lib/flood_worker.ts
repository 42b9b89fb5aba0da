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
  /** Int32Array view: [stop, started]; the worker sets `started` and runs until `stop` is set. */
  flags: SharedArrayBuffer;
  /** Stop after this many runs whatever happens (a bound for a test that died). */
  maxRuns: number;
}

self.onmessage = (e: MessageEvent<FloodJob>) => {
  const job = e.data;
  try {
    pinThread(job.cpu);
    const flags = new Int32Array(job.flags);
    Atomics.store(flags, 1, 1);
    let runs = 0;
    while (Atomics.load(flags, 0) === 0 && runs < job.maxRuns) {
      bpf.testRun(job.fd, job.frames[runs % job.frames.length], { repeat: 1 });
      runs++;
    }
    self.postMessage({ runs });
  } catch (err) {
    self.postMessage({ error: (err as Error).message });
  }
};
