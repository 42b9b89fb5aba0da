/**
 * Command-line entry of the packet fuzzer, so it can run inside a network namespace (the FIB
 * lookups of hairpinning and ICMP 3/13 then succeed and take their redirect paths):
 * `deno run -A tests/lib/fuzz_cli.ts [--seed N] [--count N] [--epoch N] [--check-every N]
 * [--max-violations N] [--session-counters N] [--strict] [--quiet]`
 * (run from the project root, whose deno.json enables raw imports). Prints progress on stderr
 * and the report as one JSON line on stdout.
 * @module
 */
import { runFuzz } from "./fuzz.ts";

function arg(name: string, dflt: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
}

if (import.meta.main) {
  const report = await runFuzz({
    seed: arg("seed", 1) >>> 0,
    count: arg("count", 10000),
    epoch: arg("epoch", 100_000),
    checkEvery: arg("check-every", 2500),
    maxViolations: arg("max-violations", 50),
    sessionCounters: arg("session-counters", 0),
    strict: Deno.args.includes("--strict"),
    log: Deno.args.includes("--quiet") ? undefined : (l) => console.error(l),
  });
  console.log(JSON.stringify(report));
}
