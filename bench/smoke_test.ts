/**
 * Smoke test of the benchmark suite: every part runs with tiny sizes, so a change that breaks
 * the benchmark code (or NAT under load) shows up in the normal test run. No timing is
 * asserted; figures from these sizes mean nothing.
 */

import { assert, assertEquals } from "../tests/lib/assert.ts";
import { runMemory } from "./memory.ts";
import { runProg } from "./prog.ts";
import { floodTable, measureRouterAndFlood, routerSizes } from "./router.ts";
import { runScale } from "./scale.ts";
import { runStartup, VERIFIER_LIMIT } from "./startup.ts";
import { buildObject, measureTables, PROGRAMS } from "./proto/tables.ts";
import {
  type BenchOptions,
  type PartResult,
  renderTable,
  renderTargets,
  verdict,
} from "./lib/util.ts";

const o: BenchOptions = { quick: true, smoke: true, progress: () => {} };
const opts = { sanitizeOps: false, sanitizeResources: false };

function rendersAll(r: PartResult): void {
  for (const t of r.tables) {
    assert(t.rows.length > 0, `table ${t.title} has rows`);
    assert(renderTable(t).includes(t.title));
  }
  renderTargets(r.targets);
}

Deno.test({
  name: "bench smoke: per-packet cost (prog) translates on every repeated run",
  ...opts,
  async fn() {
    const r = await runProg(o);
    rendersAll(r);
    const rows = r.tables[0].rows;
    for (const name of ["IPv4 UDP egress established", "IPv4 TCP ingress established"]) {
      const row = rows.find((x) => x[0] === name);
      assert(row && !row[1].startsWith("n/a"), `${name} measured: ${row?.[1]}`);
    }
    const newRows = r.tables[1].rows;
    for (const row of newRows) {
      assert(/^(\d+)\/\1$/.test(row[5]), `${row[0]}: every new flow translated (${row[5]})`);
    }
    const conn = r.tables.find((t) => t.title.startsWith("1c."))!;
    assertEquals(conn.rows.at(-1), ["packets not translated", "0", "0"]);
  },
});

Deno.test({
  name: "bench smoke: scale (sessions, fill levels, one free port)",
  ...opts,
  async fn() {
    const r = await runScale(o);
    rendersAll(r);
    const refusals = r.targets.find((t) => t.name.startsWith("refusals"));
    assertEquals(refusals?.value, 0, "no refusal while a port is free");
    assertEquals(verdict(refusals!), "PASS");
  },
});

Deno.test({
  name: "bench smoke: start-up and verifier counts",
  ...opts,
  async fn() {
    const r = await runStartup(o);
    rendersAll(r);
    const load = r.targets.find((t) => t.name.startsWith("NAT44 load"));
    assert(load?.value !== null && load!.value > 0, "NAT44 load+attach measured");
    const insns = r.targets.filter((t) =>
      t.name.startsWith("verifier") && t.name.includes("NAT44 ")
    );
    assertEquals(insns.length, 2);
    for (const t of insns) {
      assert(t.value! > 0 && t.value! < VERIFIER_LIMIT, `${t.name}: ${t.value}`);
    }
  },
});

Deno.test({
  name: "bench smoke: memory (maps, per mapping, daemon RSS)",
  ...opts,
  async fn() {
    const r = await runMemory(o);
    rendersAll(r);
    for (const t of r.targets) assert(t.value !== null && t.value > 0, `${t.name} measured`);
  },
});

Deno.test({
  name: "bench smoke: router through einat delivers traffic",
  ...opts,
  async fn() {
    const sz = routerSizes(o);
    const { raw, flood } = await measureRouterAndFlood(o, sz);
    for (const id of sz.tests!) {
      const v = raw[id].einat;
      assertEquals(v.length, 1, `${id} ran once`);
      assert(v[0].ok && v[0].value > 0, `${id} through einat delivered (${v[0].value})`);
    }
    // The flood: the egress program's accounting saw at least one run per completed flow.
    assertEquals(flood.map((f) => f.setup), ["einat"]);
    const [f] = flood;
    assert(f.flows > 0 && f.runs >= f.flows && f.ns > 0, `flood counted: ${JSON.stringify(f)}`);
    assertEquals(floodTable(flood, sz).table.rows.length, 1);
  },
});

Deno.test({
  name:
    "bench smoke: the state-table prototype (bench/proto) builds, and every program makes mappings",
  ...opts,
  async fn() {
    const costs = await measureTables(await buildObject(), 1, 200, 20);
    for (const p of PROGRAMS) {
      assert(costs[p].warm[0] > 0 && costs[p].oneRun[0] > 0, `${p} measured`);
    }
  },
});
