/**
 * New mappings in a flood (bench 2b), two objects paired, or one profiled:
 *
 *   deno run -A bench/flood_ab.ts [--rounds 8] [--seconds 5] A.bpf.o B.bpf.o
 *   deno run -A bench/flood_ab.ts --profile [--seconds 10] [--top 30] A.bpf.o
 *
 * Paired: one router topology; per round, one flood of new UDP flows with each object
 * (EINAT_BPF_OBJECT for the einat the flood starts, order alternating), each flood's run time of
 * wan0's egress program per run (bpf_stats), and the paired difference B − A. Each flood is 51,000
 * flows from one address (the flow tool's port range), every one a new mapping, so the rounds do
 * equal work.
 *
 * Profile: one flood with `perf record -a -e cpu-clock` over its middle seconds, and the samples
 * in the egress program by function and source line (bench/lib/jitprof.ts; the program's JIT
 * layout is read while the flood's einat runs). How stop 44 found the flood's two cold lines
 * (docs/performance-history.md).
 * @module
 */
import { parseArgs } from "node:util";
import {
  egressProgId,
  measureFlood,
  type RouterSizes,
  routerSizes,
  withSetupTopologies,
} from "./router.ts";
import { type ProgJitInfo, progJitInfo } from "../lib/ffi/libbpf.ts";
import { attribute, dumpXlated, formatAttribution, parseXlated } from "./lib/jitprof.ts";
import { median } from "./lib/util.ts";
import type { Topology } from "../tests/lib/netns.ts";

const OPTIONS = { quick: true, progress: () => {} };

function sizes(seconds: number): RouterSizes {
  return { ...routerSizes({ quick: true }), setups: ["einat"], rounds: 1, seconds };
}

/** ns per egress run over one flood with `obj` loaded. */
async function floodWith(t: Topology, sz: RouterSizes, obj: string): Promise<number> {
  Deno.env.set("EINAT_BPF_OBJECT", obj);
  const [f] = await measureFlood(OPTIONS, t, sz);
  if (!f || f.runs === 0) throw new Error(`${obj}: no program runs in the flood`);
  return f.ns / f.runs;
}

async function paired(objs: [string, string], rounds: number, seconds: number): Promise<void> {
  const sz = sizes(seconds);
  const ns: [number[], number[]] = [[], []];
  await withSetupTopologies(sz, async (ts) => {
    for (let r = 0; r < rounds; r++) {
      for (const i of r % 2 ? [1, 0] : [0, 1]) {
        const v = await floodWith(ts.einat!, sz, objs[i]);
        ns[i].push(v);
        console.log(`round ${r + 1} ${i ? "B" : "A"} ${v.toFixed(0)} ns/run`);
      }
    }
  });
  const d = ns[1].map((b, r) => b - ns[0][r]);
  console.log(`A ${objs[0]}: median ${median(ns[0]).toFixed(0)} ns/run`);
  console.log(`B ${objs[1]}: median ${median(ns[1]).toFixed(0)} ns/run`);
  console.log(
    `B − A paired: median ${median(d).toFixed(0)} ns, B lower in ${
      d.filter((x) => x < 0).length
    } of ${rounds} (${d.map((x) => x.toFixed(0)).join(" ")})`,
  );
}

async function profile(obj: string, seconds: number, top: number): Promise<void> {
  const sz = sizes(seconds);
  const dir = await Deno.makeTempDir({ prefix: "einat-floodprof-" });
  try {
    let info: ProgJitInfo | undefined;
    let xlated = "";
    await withSetupTopologies(sz, async (ts) => {
      const t = ts.einat!;
      let done = false;
      // Once the flood's einat has attached: its JIT layout, then perf over the middle seconds.
      const watch = (async () => {
        for (let i = 0; i < 200 && !done; i++) {
          await new Promise((r) => setTimeout(r, 50));
          const id = await egressProgId(t).catch(() => undefined);
          if (!id) continue;
          info = progJitInfo(id);
          xlated = await dumpXlated(id);
          await new Promise((r) => setTimeout(r, 1500));
          await new Deno.Command("perf", {
            args: ["record", "-a", "-e", "cpu-clock", "-F", "10000", "-o", `${dir}/p.data`, "--"]
              .concat(["sleep", String(Math.max(1, seconds - 3))]),
            stdout: "null",
            stderr: "null",
          }).output();
          return;
        }
      })();
      const v = await floodWith(t, sz, obj);
      done = true;
      await watch;
      console.log(`${obj}: ${v.toFixed(0)} ns per egress run (perf running for part of it)`);
    });
    if (!info) throw new Error("the flood's egress program was not seen");
    const script = await new Deno.Command("perf", {
      args: ["script", "-i", `${dir}/p.data`, "-F", "ip,sym,symoff"],
      stderr: "null",
    }).output();
    const a = attribute(
      info,
      parseXlated(xlated),
      new TextDecoder().decode(script.stdout).split("\n"),
    );
    console.log(formatAttribution(a, top));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "8" },
      seconds: { type: "string" },
      profile: { type: "boolean", default: false },
      top: { type: "string", default: "30" },
    },
    allowPositionals: true,
  });
  const seconds = Number(values.seconds ?? (values.profile ? 10 : 5));
  if (values.profile ? positionals.length !== 1 : positionals.length !== 2) {
    console.error(
      "usage: deno run -A bench/flood_ab.ts [--rounds N] [--seconds S] A.bpf.o B.bpf.o\n" +
        "       deno run -A bench/flood_ab.ts --profile [--seconds S] [--top N] A.bpf.o",
    );
    Deno.exit(2);
  }
  if (values.profile) await profile(positionals[0], seconds, Number(values.top));
  else await paired([positionals[0], positionals[1]], Number(values.rounds), seconds);
}
