/**
 * Where a BPF program's samples in a CPU profile fall, by source line (bench/lib/jitprof.ts).
 *
 *   perf record -a -e cpu-clock -F 20000 -o p.data -- <workload running the program>
 *   perf script -i p.data -F ip,sym,symoff > p.txt
 *   deno run -A bench/jitprof.ts --id <prog id> [--top 30] p.txt
 *
 * `--id` names a loaded program of the same object and configuration as the profiled one (the
 * profiled one may be gone: offsets are per function), e.g. einat's egress program as `bpftool
 * prog show` lists it.
 * @module
 */
import { parseArgs } from "node:util";
import { progJitInfo } from "../lib/ffi/libbpf.ts";
import { attribute, dumpXlated, formatAttribution, parseXlated } from "./lib/jitprof.ts";

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { id: { type: "string" }, top: { type: "string", default: "30" } },
    allowPositionals: true,
  });
  const id = Number(values.id);
  if (!Number.isInteger(id) || id <= 0) {
    console.error("usage: deno run -A bench/jitprof.ts --id PROG_ID [--top N] [PERF_SCRIPT_FILE]");
    Deno.exit(2);
  }
  const xlated = await dumpXlated(id).catch((e) => {
    console.error(e.message);
    Deno.exit(1);
  });
  const text = positionals[0]
    ? await Deno.readTextFile(positionals[0])
    : await new Response(Deno.stdin.readable).text();
  const a = attribute(
    progJitInfo(id),
    parseXlated(xlated),
    text.split("\n"),
  );
  console.log(formatAttribution(a, Number(values.top)));
}
