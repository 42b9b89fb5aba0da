/**
 * New mappings made on two CPUs at once (`BPF_PROG_TEST_RUN` from two workers pinned to CPUs 0
 * and 1, meeting at a barrier before every packet): the first packets of one internal endpoint
 * race to create its binding, and, to one remote, its session. Whoever loses takes the winner's
 * binding, and the reference counts still equal the sessions afterwards (tests/lib/fuzz.ts
 * checkMaps: both directions agree, every session has its binding, ref = sessions).
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { checkMaps, EXT_CIDRS, fuzzConfig } from "./lib/fuzz.ts";
import { loadTestNat, TC_ACT_OK } from "./lib/natfixture.ts";
import { buildPacket } from "./lib/packet.ts";
import type { RaceJob } from "./lib/race_worker.ts";

const ENDPOINTS = 600;

/** The frame of an internal endpoint's first UDP packet to a remote. */
function first(j: number, remote: string): Uint8Array {
  return buildPacket({
    family: 4,
    proto: "udp",
    src: `192.0.2.${10 + (j % 200)}`,
    dst: remote,
    // half keep their port if they can (in the ranges), half need a port chosen for them
    sport: j % 2 ? 20000 + j : 40000 + j,
    dport: 53,
    payload: new TextEncoder().encode("race"),
  });
}

function runWorker(job: RaceJob): Promise<number[]> {
  const w = new Worker(new URL("./lib/race_worker.ts", import.meta.url).href, { type: "module" });
  return new Promise<number[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("worker timed out")), 60_000);
    w.onmessage = (e) => {
      clearTimeout(timer);
      w.terminate();
      if (e.data.error) reject(new Error(e.data.error));
      else resolve(e.data.verdicts);
    };
    w.onerror = (e) => {
      clearTimeout(timer);
      w.terminate();
      reject(new Error(e.message));
    };
    w.postMessage(job);
  });
}

Deno.test({
  name: "race: one endpoint's first packets on two CPUs at once make one binding, refs = sessions",
  ignore: navigator.hardwareConcurrency < 2,
  async fn() {
    const ic = fuzzConfig();
    const n = await loadTestNat(ic, EXT_CIDRS);
    try {
      // Steps alternate: the same remote on both CPUs (one session, made once), or a remote
      // each (two sessions on the one binding).
      const stepsA = [], stepsB = [];
      let sessions = 0;
      for (let j = 0; j < ENDPOINTS; j++) {
        const same = j % 4 < 2;
        stepsA.push({ fd: n.nat.egressFd, bytes: first(j, "198.51.100.1") });
        stepsB.push({
          fd: n.nat.egressFd,
          bytes: first(j, same ? "198.51.100.1" : "198.51.100.2"),
        });
        sessions += same ? 1 : 2;
      }
      const barrier = new SharedArrayBuffer(8);
      const [a, b] = await Promise.all([
        runWorker({ cpu: 0, parties: 2, barrier, steps: stepsA }),
        runWorker({ cpu: 1, parties: 2, barrier, steps: stepsB }),
      ]);
      assertEquals(a.filter((v) => v !== TC_ACT_OK), [], "CPU 0: every packet translated");
      assertEquals(b.filter((v) => v !== TC_ACT_OK), [], "CPU 1: every packet translated");
      const check = checkMaps(n, { bindingEntries: 4 * ENDPOINTS, ctEntries: 4 * ENDPOINTS }, ic);
      assertEquals(check.violations, []);
      assertEquals([check.bindings, check.sessions], [ENDPOINTS, sessions]);
      assert(check.bindings > 0);
    } finally {
      n.close();
    }
  },
});
