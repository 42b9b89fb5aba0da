/**
 * A flood of frames through a program from another CPU (tests/lib/flood_worker.ts), while the
 * test changes the maps under it, and the frames of new flows to feed it.
 * @module
 */
import { buildPacket, udpSpec } from "./packet.ts";
import { runWorker } from "./race.ts";
import type { FloodJob } from "./flood_worker.ts";

const FLOOD_WORKER = new URL("./flood_worker.ts", import.meta.url);

/**
 * `n` outbound UDP frames to 198.51.100.53:53, each from a new internal endpoint (192.0.2.10 to
 * .209, source ports from 20000): through egress, each a new mapping.
 */
export function newFlowFrames(n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) =>
    buildPacket(
      udpSpec(
        4,
        `192.0.2.${10 + (i % 200)}`,
        20000 + Math.floor(i / 200),
        "198.51.100.53",
        53,
        new Uint8Array(8),
      ),
    ));
}

/** A running flood. */
export interface Flood {
  /** The runs the worker made, once it stopped (after `maxRuns`, or when told to). */
  runs: Promise<number>;
  /** Whether the worker has begun. */
  started(): boolean;
  /** How many of its holds the worker has reached (it waits at the last until released). */
  held(): number;
  /** Lets the worker past one more hold (at once if it reaches it later). */
  release(): void;
  /** Tells the worker to stop and waits for it; never rejects (for `finally`). */
  stop(): Promise<void>;
}

/**
 * Runs `frames` round and round through program `fd` on `cpu`, `maxRuns` runs at most. Before
 * each run count in `holds` (ascending) the worker waits for a `release()`.
 */
export function startFlood(
  fd: number,
  frames: Uint8Array[],
  maxRuns: number,
  cpu = 1,
  holds: number[] = [],
): Flood {
  const flags = new SharedArrayBuffer(16);
  const f = new Int32Array(flags); // [stop, started, held, released]
  const job: FloodJob = { cpu, fd, frames, flags, maxRuns, holds };
  const runs = runWorker<{ runs: number }>(FLOOD_WORKER, job).then((r) => r.runs);
  return {
    runs,
    started: () => Atomics.load(f, 1) === 1,
    held: () => Atomics.load(f, 2),
    release: () => {
      Atomics.add(f, 3, 1);
      Atomics.notify(f, 3);
    },
    stop: async () => {
      Atomics.store(f, 0, 1);
      Atomics.notify(f, 3);
      await runs.catch(() => {});
    },
  };
}
