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
import { type Flood, newFlowFrames, startFlood } from "./lib/flood.ts";
import { loadTestNat, stat, testInterfaceConfig } from "./lib/natfixture.ts";

const CHANGES = 400;

Deno.test("address changes under a flood of new flows: none refused for want of records", async () => {
  const ic = testInterfaceConfig();
  const n = await loadTestNat(ic, ["203.0.113.1/24"]);
  const affinity = pinThread(0);
  let flood: Flood | null = null;
  try {
    const before = stat(n.nat.maps.stats, "drop_no_port");
    // Each frame a new internal endpoint: every run is a new mapping (or one made a round ago).
    flood = startFlood(n.nat.egressFd, newFlowFrames(20_000), 50_000_000);
    for (let i = 0; i < 1000 && !flood.started(); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assertEquals(flood.started(), true, "the flood started");
    const made0 = stat(n.nat.maps.stats, "egress_nat");
    const addrs = ["203.0.113.1", "203.0.113.201"];
    for (let i = 1; i <= CHANGES; i++) {
      const plan = planInterface(ic, [{ family: 4, addr: parseAddr(addrs[i % 2]), prefixLen: 24 }]);
      applyPlan(n.nat.maps, plan);
      assertEquals(purgeStale(n.nat, plan).unplaced, [], `change ${i}: the address has a slot`);
    }
    const translated = stat(n.nat.maps.stats, "egress_nat") - made0;
    await flood.stop();
    const runs = await flood.runs;
    assert(translated > BigInt(CHANGES), `flows translated during the changes: ${translated}`);
    const refused = stat(n.nat.maps.stats, "drop_no_port") - before;
    assertEquals(
      refused,
      0n,
      `${refused} new flows refused for want of records (${runs} runs, ${translated} translated during the changes)`,
    );
  } finally {
    await flood?.stop();
    restoreAffinity(affinity);
    n.close();
  }
});
