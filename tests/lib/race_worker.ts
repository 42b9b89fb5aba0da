/**
 * A worker of tests/race_test.ts: pinned to one CPU, it runs its list of packets through the
 * NAT's programs one by one (`BPF_PROG_TEST_RUN`, repeat 1), meeting the other workers at a
 * barrier before each, so that the same step runs on every CPU at nearly the same moment.
 * @module
 */
/// <reference lib="deno.worker" />

import * as bpf from "../../lib/ffi/libbpf.ts";
import { pinThread } from "./cpu.ts";

/** What the test sends a worker. */
export interface RaceJob {
  cpu: number;
  /** Workers meeting at the barrier. */
  parties: number;
  /** Int32Array view: [arrived, generation]. */
  barrier: SharedArrayBuffer;
  /** Per step: the program fd and the frame. */
  steps: { fd: number; bytes: Uint8Array }[];
  /** Send back each run's output frame too (`outs`). */
  outputs?: boolean;
}

/**
 * Waits until every party has arrived, spinning (a futex wake-up would start the waiter tens of
 * microseconds after the last arrival, long after its new mapping is made); gives up after 10 s
 * (a party that died).
 */
function barrier(s: Int32Array, parties: number): void {
  const gen = Atomics.load(s, 1);
  if (Atomics.add(s, 0, 1) === parties - 1) {
    Atomics.store(s, 0, 0);
    Atomics.add(s, 1, 1);
    return;
  }
  const deadline = Date.now() + 10_000;
  for (let i = 0; Atomics.load(s, 1) === gen; i++) {
    if ((i & 0xffff) === 0 && Date.now() > deadline) {
      throw new Error("barrier: another worker did not arrive");
    }
  }
}

self.onmessage = (e: MessageEvent<RaceJob>) => {
  const job = e.data;
  try {
    pinThread(job.cpu);
    const s = new Int32Array(job.barrier);
    const verdicts: number[] = [];
    const outs: Uint8Array[] = [];
    for (const step of job.steps) {
      barrier(s, job.parties);
      const r = bpf.testRun(step.fd, step.bytes, { repeat: 1 });
      verdicts.push(r.retval);
      if (job.outputs) outs.push(r.dataOut);
    }
    self.postMessage({ verdicts, outs });
  } catch (err) {
    self.postMessage({ error: (err as Error).message });
  }
};
