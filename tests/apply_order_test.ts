/**
 * An address change under a flood of new flows: the daemon's reconciliation (applyPlan, then
 * purgeStale, as lib/daemon.ts runs them) alternates the interface's address while a worker on
 * the other CPU makes new mappings without pause. No new flow may find the default external
 * address without records (`drop_no_port`): the address gets its slot before packets are sent
 * to it.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import { applyPlan, purgeStale } from "../lib/nat/apply.ts";
import { planInterface } from "../lib/nat/plan.ts";
import { pinThread, restoreAffinity } from "./lib/cpu.ts";
import { runWorker } from "./lib/race.ts";
import type { FloodJob } from "./lib/flood_worker.ts";
import { loadTestNat, stat, testInterfaceConfig } from "./lib/natfixture.ts";
import { buildPacket } from "./lib/packet.ts";

const CHANGES = 400;

const FLOOD_WORKER = new URL("./lib/flood_worker.ts", import.meta.url);

Deno.test("address changes under a flood of new flows: none refused for want of records", async () => {
  const ic = testInterfaceConfig();
  const n = await loadTestNat(ic, ["203.0.113.1/24"]);
  const affinity = pinThread(0);
  const flags = new SharedArrayBuffer(8);
  const f = new Int32Array(flags);
  let running: Promise<number> | null = null;
  try {
    // Each frame a new internal endpoint: every run is a new mapping (or one made a round ago).
    const frames = Array.from({ length: 20_000 }, (_, i) =>
      buildPacket({
        family: 4,
        proto: "udp",
        src: `192.0.2.${10 + (i % 200)}`,
        dst: "198.51.100.53",
        sport: 20000 + Math.floor(i / 200),
        dport: 53,
        payload: new Uint8Array(8),
      }));
    const before = stat(n.nat.maps.stats, "drop_no_port");
    const job: FloodJob = { cpu: 1, fd: n.nat.egressFd, frames, flags, maxRuns: 50_000_000 };
    running = runWorker<{ runs: number }>(FLOOD_WORKER, job).then((r) => r.runs);
    for (let i = 0; i < 1000 && Atomics.load(f, 1) === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assertEquals(Atomics.load(f, 1), 1, "the flood started");
    const made0 = stat(n.nat.maps.stats, "egress_nat");
    const addrs = ["203.0.113.1", "203.0.113.201"];
    for (let i = 1; i <= CHANGES; i++) {
      const plan = planInterface(ic, [{ family: 4, addr: parseAddr(addrs[i % 2]), prefixLen: 24 }]);
      applyPlan(n.nat.maps, plan);
      assertEquals(purgeStale(n.nat, plan).unplaced, [], `change ${i}: the address has a slot`);
    }
    const translated = stat(n.nat.maps.stats, "egress_nat") - made0;
    Atomics.store(f, 0, 1);
    const runs = await running;
    running = null;
    assert(translated > BigInt(CHANGES), `flows translated during the changes: ${translated}`);
    const refused = stat(n.nat.maps.stats, "drop_no_port") - before;
    assertEquals(
      refused,
      0n,
      `${refused} new flows refused for want of records (${runs} runs, ${translated} translated during the changes)`,
    );
  } finally {
    Atomics.store(f, 0, 1);
    await running?.catch(() => {});
    restoreAffinity(affinity);
    n.close();
  }
});
