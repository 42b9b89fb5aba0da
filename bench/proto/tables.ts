/**
 * The measurement behind docs/state-tables.md: what one new mapping costs in the tables alone,
 * with the kernel's hash maps (on demand and preallocated) and with the design's records, in an
 * array or in a BPF arena (bench/proto/tables.bpf.c). Not part of einat or of `deno task bench`.
 *
 *     deno run -A bench/proto/tables.ts [--rounds N]
 *
 * Builds the object with clang-19 into a temporary directory. Each round loads it afresh (empty
 * tables) and measures every program twice: warm (`repeat` 20,000, one new mapping per run) and
 * one run at a time (1,500 single runs interleaved across the programs, medians), next to the
 * no-op in the same object.
 * @module
 */

import { parseArgs } from "node:util";
import * as bpf from "../../lib/ffi/libbpf.ts";
import { buildPacket } from "../../tests/lib/packet.ts";
import { median } from "../lib/util.ts";

/** The programs of the object, the no-op first. */
export const PROGRAMS = ["noop", "hash_dyn", "hash_pre", "array_cas", "arena_cas"] as const;

/** Where the arena would be mapped in user space (as the kernel's selftests place it). */
const ARENA_USER_START = 1n << 44n;

/** Per program: ns per run, warm and one run at a time, one value per round. */
export type TableCosts = Record<typeof PROGRAMS[number], { warm: number[]; oneRun: number[] }>;

/** Compiles bench/proto/tables.bpf.c; returns the object's bytes. */
export async function buildObject(): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "einat-proto-" });
  try {
    const src = new URL("./tables.bpf.c", import.meta.url).pathname;
    const out = `${dir}/tables.bpf.o`;
    const arch = `/usr/include/${Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"}-linux-gnu`;
    const cc = new Deno.Command("clang-19", {
      args: ["-O2", "-g", "-target", "bpf", "-mcpu=v3", `-I${arch}`, "-c", src, "-o", out],
      stderr: "piped",
    });
    const r = await cc.output();
    if (!r.success) throw new Error(`clang-19: ${new TextDecoder().decode(r.stderr)}`);
    return await Deno.readFile(out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Measures `rounds` rounds; `warmRuns` and `singleRuns` per program and round. */
export async function measureTables(
  bytes: Uint8Array,
  rounds: number,
  warmRuns = 20_000,
  singleRuns = 1_500,
): Promise<TableCosts> {
  const pkt = buildPacket({
    family: 4,
    proto: "udp",
    src: "192.0.2.10",
    dst: "198.51.100.1",
    sport: 1000,
    dport: 53,
    payload: new Uint8Array(8),
  });
  const res = {} as TableCosts;
  for (const p of PROGRAMS) res[p] = { warm: [], oneRun: [] };
  for (let round = 0; round < rounds; round++) {
    const obj = bpf.openObjectMem(bytes, "tables");
    try {
      bpf.mapSetMapExtra(bpf.findMap(obj, "arena"), ARENA_USER_START);
      await bpf.loadObject(obj);
      const setup = bpf.programFd(bpf.findProgram(obj, "setup_arena"));
      if (bpf.testRunSyscall(setup, new Uint8Array(8)).retval !== 0) {
        throw new Error("setup_arena: the arena's pages were not allocated");
      }
      const fd = Object.fromEntries(
        PROGRAMS.map((p) => [p, bpf.programFd(bpf.findProgram(obj, p))]),
      ) as Record<typeof PROGRAMS[number], number>;
      const run = (p: typeof PROGRAMS[number], repeat: number) => {
        const r = bpf.testRun(fd[p], pkt, { repeat });
        if (r.retval !== 0) throw new Error(`${p}: no mapping made (${r.retval})`);
        return r.durationNs;
      };
      const order = round % 2 ? [...PROGRAMS].reverse() : [...PROGRAMS];
      for (const p of order) res[p].warm.push(run(p, warmRuns));
      const single = Object.fromEntries(PROGRAMS.map((p) => [p, [] as number[]]));
      for (let i = 0; i < singleRuns; i++) {
        for (const p of i % 2 ? [...PROGRAMS].reverse() : PROGRAMS) single[p].push(run(p, 1));
      }
      for (const p of PROGRAMS) res[p].oneRun.push(median(single[p]));
    } finally {
      bpf.closeObject(obj);
    }
  }
  return res;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { rounds: { type: "string", default: "3" } } });
  const costs = await measureTables(await buildObject(), Number(values.rounds));
  const noop = { warm: median(costs.noop.warm), oneRun: median(costs.noop.oneRun) };
  console.log("program    | warm ns/run (rounds)     | − no-op | one run ns (rounds)   | − no-op");
  for (const p of PROGRAMS) {
    const c = costs[p];
    console.log(
      `${p.padEnd(10)} | ${c.warm.join(" ").padEnd(24)} | ${median(c.warm) - noop.warm} | ` +
        `${c.oneRun.join(" ").padEnd(21)} | ${median(c.oneRun) - noop.oneRun}`,
    );
  }
}
