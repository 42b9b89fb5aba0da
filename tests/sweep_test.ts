/**
 * scripts/lib/sweep.sh, which scripts/test.sh runs after every test run: what a run that died
 * left behind (its namespaces with their processes, its bpffs folders) is found by the run's
 * prefix and removed, and nothing of another prefix is touched.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { run, runResult, testPrefix } from "./lib/netns.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Runs `script` in bash with sweep.sh sourced and EINAT_TEST_PREFIX set to `prefix`. */
async function sweepShell(
  prefix: string,
  script: string,
): Promise<{ code: number; stdout: string }> {
  const out = await new Deno.Command("bash", {
    args: ["-c", `. scripts/lib/sweep.sh; ${script}`],
    cwd: ROOT,
    env: { EINAT_TEST_PREFIX: prefix },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
}

const alive = (pid: number) => {
  try {
    // a zombie (exited, not yet reaped) is gone for this purpose
    return !/^State:\s+Z/m.test(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return false;
  }
};

Deno.test("sweep: a dead run's namespaces (with their processes) and bpffs folders go, another prefix's stay", async () => {
  const tag = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  const prefix = `${testPrefix()}-sw${tag}`; // what a run of its own would use
  const ns = `${prefix}-router`, other = `${testPrefix()}-sx${tag}`; // the latter: not ours
  const dir = `/run/${prefix}-test-bpffs-x`;
  let sleeper: Deno.ChildProcess | null = null;
  try {
    await run(["ip", "netns", "add", ns]);
    await run(["ip", "netns", "add", other]);
    sleeper = new Deno.Command("ip", {
      args: ["netns", "exec", ns, "sleep", "300"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    Deno.mkdirSync(dir);
    await run(["mount", "-t", "bpf", "bpf", dir]);
    for (let i = 0; i < 200 && (await run(["ip", "netns", "pids", ns])).trim() === ""; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const pid = Number((await run(["ip", "netns", "pids", ns])).trim().split("\n")[0]);
    assert(pid > 0 && alive(pid), "a process runs in the namespace");

    const listed = await sweepShell(prefix, "leftovers");
    assertEquals(listed.stdout.trim().split("\n").sort(), [`bpffs ${dir}`, `netns ${ns}`]);

    const swept = await sweepShell(prefix, "sweep; leftovers");
    assertEquals([swept.code, swept.stdout.trim()], [0, ""]);
    const names = (await run(["ip", "netns", "list"])).split("\n").map((l) => l.split(" ")[0]);
    assert(!names.includes(ns), "the namespace is gone");
    assert(names.includes(other), "another prefix's namespace stays");
    for (let i = 0; i < 200 && alive(pid); i++) await new Promise((r) => setTimeout(r, 10));
    assert(!alive(pid), "its process is gone");
    let gone = false;
    try {
      Deno.statSync(dir);
    } catch {
      gone = true;
    }
    assert(gone, "the bpffs folder is gone");
  } finally {
    try {
      sleeper?.kill("SIGKILL");
    } catch { /* exited */ }
    await sleeper?.status;
    await runResult(["umount", dir]);
    try {
      Deno.removeSync(dir);
    } catch { /* gone */ }
    await runResult(["ip", "netns", "del", ns]);
    await runResult(["ip", "netns", "del", other]);
  }
});
