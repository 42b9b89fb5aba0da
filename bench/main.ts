/**
 * einat benchmark suite. Run as root:
 *
 * ```
 * deno run -A bench/main.ts [--quick] [--only prog|router|startup|scale|memory[,…]] [--json out.json]
 * ```
 *
 * Prints one table per part with every figure next to its baseline measured in the same run,
 * then the targets with PASS/MISS and a compact Markdown table for the README. Namespaces and
 * programs it creates are removed again, also on failure or Ctrl-C. See bench/README.md.
 * @module
 */

import { parseArgs } from "node:util";
import { libbpfVersion } from "../lib/ffi/libbpf.ts";
import { runMemory } from "./memory.ts";
import { runProg } from "./prog.ts";
import { runRouter } from "./router.ts";
import { runScale } from "./scale.ts";
import { runStartup } from "./startup.ts";
import {
  type BenchOptions,
  type Part,
  type PartResult,
  PARTS,
  renderTable,
  renderTargets,
  type Target,
  verdict,
} from "./lib/util.ts";

/** The function running each part. */
export const RUNNERS: Record<Part, (o: BenchOptions) => Promise<PartResult>> = {
  prog: runProg,
  router: runRouter,
  startup: runStartup,
  scale: runScale,
  memory: runMemory,
};

/** A short description of the machine, printed above the results. */
export function machineInfo(): string {
  const read = (p: string) => {
    try {
      return Deno.readTextFileSync(p);
    } catch {
      return "";
    }
  };
  const cpu = /model name\s*:\s*(.*)/.exec(read("/proc/cpuinfo"))?.[1] ?? "unknown CPU";
  let lib = "libbpf ?";
  try {
    lib = `libbpf ${libbpfVersion()}`;
  } catch { /* reported by the parts */ }
  return `${Deno.osRelease()} · ${navigator.hardwareConcurrency} × ${cpu.trim()} · deno ${Deno.version.deno} · ${lib}`;
}

/** Renders the compact README table from the parts' summaries. */
export function renderSummary(results: PartResult[], targets: Target[]): string {
  const rows = results.flatMap((r) => r.summary);
  const pass = targets.filter((t) => verdict(t) === "PASS").length;
  const miss = targets.filter((t) => verdict(t) === "MISS").length;
  return renderTable({
    title: "Summary (for the README)",
    head: ["figure", "value"],
    rows,
    notes: [`Targets: ${pass} PASS, ${miss} MISS, ${targets.length - pass - miss} n/a.`],
  });
}

/** Parses the command line; throws on unknown options or parts. */
export function parseBenchArgs(args: string[]): { quick: boolean; only: Part[]; json?: string } {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string", multiple: true },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log("usage: deno run -A bench/main.ts [--quick] [--only PART[,PART]] [--json FILE]");
    console.log(`parts: ${PARTS.join(", ")}`);
    Deno.exit(0);
  }
  const only = (values.only ?? []).flatMap((s) => s.split(",")).filter(Boolean);
  for (const p of only) {
    if (!(PARTS as readonly string[]).includes(p)) {
      throw new Error(`unknown part ${p} (parts: ${PARTS.join(", ")})`);
    }
  }
  return {
    quick: values.quick,
    only: (only.length ? only : [...PARTS]) as Part[],
    json: values.json,
  };
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseBenchArgs(Deno.args);
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    return 2;
  }
  if (Deno.uid() !== 0) {
    console.error("bench: run as root (BPF, namespaces)");
    return 2;
  }
  const o: BenchOptions = { quick: args.quick };
  const started = new Date();
  console.log(`# einat benchmarks${args.quick ? " (--quick)" : ""}\n\n${machineInfo()}\n`);
  const results: PartResult[] = [];
  const errors: Record<string, string> = {};
  for (const part of PARTS.filter((p) => args.only.includes(p))) {
    const t0 = performance.now();
    try {
      const r = await RUNNERS[part](o);
      results.push(r);
      for (const t of r.tables) console.log(`${renderTable(t)}\n`);
      console.error(`[bench] ${part} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (e) {
      errors[part] = (e as Error).stack ?? String(e);
      console.log(`### ${part}: FAILED\n\n\`\`\`\n${(e as Error).message}\n\`\`\`\n`);
    }
  }
  const targets = results.flatMap((r) => r.targets);
  console.log(`${renderTargets(targets)}\n`);
  console.log(renderSummary(results, targets));
  if (args.json) {
    const out = {
      started: started.toISOString(),
      machine: machineInfo(),
      quick: args.quick,
      results: results.map((r) => ({ part: r.part, tables: r.tables, data: r.data })),
      targets: targets.map((t) => ({ ...t, verdict: verdict(t) })),
      errors,
    };
    await Deno.writeTextFile(
      args.json,
      JSON.stringify(out, (_k, v) => typeof v === "bigint" ? v.toString() : v, 2) + "\n",
    );
    console.error(`[bench] wrote ${args.json}`);
  }
  return Object.keys(errors).length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
