/**
 * Running the einat daemon in a test namespace.
 * @module
 */
import { type NsProcess, spawnInNs } from "./netns.ts";

/** The project root. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

/**
 * The V8 flags einat runs with: the `start` task and the compiled executable
 * (scripts/compile.sh) use the same (tests/packaging_test.ts checks). Maglev, V8's mid-tier
 * compiler, costs the daemon ~2.5 MiB of RSS and buys it nothing it needs: its JavaScript runs
 * at start-up and on address changes, not per packet. `--expose-gc` lets the daemon collect
 * after a reconciliation before it trims malloc's free lists (lib/memory.ts, releaseMemory).
 */
export const V8_FLAGS = "--v8-flags=--no-maglev,--expose-gc";

/**
 * The command line of `deno task start ARGS`: `deno run -A V8_FLAGS main.ts ARGS`, run by
 * `deno` (the running binary unless given).
 */
export function einatCmd(args: string[], deno: string = Deno.execPath()): string[] {
  return [deno, "run", "-A", V8_FLAGS, `${ROOT}main.ts`, ...args];
}

/**
 * Starts einat in `ns` and waits until it logs that it runs (or exits). As a safety net the
 * daemon is killed after `lifetimeMs` (tests that run longer pass more).
 */
export async function startEinat(
  ns: string,
  args: string[],
  timeoutMs = 15000,
  env: Record<string, string> = {},
  lifetimeMs = 120_000,
  deno: string = Deno.execPath(),
): Promise<NsProcess> {
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const cmd = vars.length ? ["env", ...vars, ...einatCmd(args, deno)] : einatCmd(args, deno);
  const p = spawnInNs(ns, cmd, { cwd: ROOT, killAfterMs: lifetimeMs });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (/einat running/.test(p.stderrText())) return p;
    if (!p.running()) throw new Error(`einat exited early:\n${p.stderrText()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  p.kill("SIGKILL");
  throw new Error(`einat did not start in ${timeoutMs} ms:\n${p.stderrText()}`);
}

/** Sends SIGTERM and waits for the exit code. */
export async function stopEinat(p: NsProcess, timeoutMs = 5000): Promise<number> {
  p.kill("SIGTERM");
  const r = await p.output(timeoutMs);
  return r.code;
}

/** Waits until `p`'s log matches `pattern`; throws after `ms`, with the log. */
export async function waitLog(p: NsProcess, pattern: RegExp, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pattern.test(p.stderrText())) {
    if (Date.now() > end) throw new Error(`log did not show ${pattern}:\n${p.stderrText()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
