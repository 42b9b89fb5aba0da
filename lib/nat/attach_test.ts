import { assert, assertEquals } from "../../tests/lib/assert.ts";
import { livePid, lockOwner, processStart } from "./attach.ts";

/**
 * A process whose command line names einat (argv[0]) and whose comm is `comm`, for `fn`: bash
 * under that name, waiting in a builtin (no child left behind when it is killed).
 */
async function withFakeEinat(comm: string, fn: (pid: number) => void | Promise<void>) {
  const dir = Deno.makeTempDirSync({ prefix: "einat-lock-test-" });
  let child: Deno.ChildProcess | null = null;
  try {
    const bin = `${dir}/${comm}`;
    Deno.symlinkSync("/bin/bash", bin);
    child = new Deno.Command("bash", {
      args: ["-c", `exec -a einat-fake "${bin}" -c 'read -t 30 x'`],
      stdin: "piped", // never written: the read waits
      stdout: "null",
      stderr: "null",
    }).spawn();
    const pid = child.pid;
    const named = () => {
      try {
        return Deno.readTextFileSync(`/proc/${pid}/cmdline`).startsWith("einat-fake");
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 200 && !named(); i++) await new Promise((r) => setTimeout(r, 10));
    assert(named(), "the stand-in einat did not start");
    await fn(pid);
  } finally {
    if (child) {
      child.kill("SIGKILL");
      await child.stdin.close().catch(() => {});
      await child.status;
    }
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("processStart: field 22 of /proc/PID/stat, whatever the comm holds; null for no process", async () => {
  await withFakeEinat("a b) (c", (pid) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    assert(stat.includes("(a b) (c)"), stat);
    const start = processStart(pid);
    assert(start !== null && /^\d+$/.test(start), `start ${start}`);
    // the same as field 22 counted past the comm's own spaces (two here)
    assertEquals(start, stat.trimEnd().split(" ")[21 + 2]);
  });
  assertEquals(processStart(0x3fffffff), null);
  assertEquals(processStart("self"), processStart(Deno.pid));
});

Deno.test("livePid: the lock's process while it runs; not once its PID names another process (a killed einat's PID reused)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "einat-lock-test-" });
  try {
    const lock = `${dir}/lock.pid`;
    const timens = String(Deno.statSync("/proc/self/ns/time").ino);
    await withFakeEinat("sleep", (pid) => {
      const start = processStart(pid)!;
      Deno.writeTextFileSync(lock, `${pid}\nstart=${start}\ntimens=${timens}\n`);
      assertEquals(lockOwner(lock), { pid, start }, "the einat that wrote it");
      Deno.writeTextFileSync(lock, `${pid}\nstart=${start}\nqdisc=created\n`);
      assertEquals(livePid(lock), pid, "with the qdisc line");
      Deno.writeTextFileSync(lock, `${pid}\nstart=${Number(start) + 1}\ntimens=${timens}\n`);
      assertEquals(livePid(lock), null, "another process with that PID");
      // written in another time namespace: its start is not comparable, the PID alone counts
      Deno.writeTextFileSync(lock, `${pid}\nstart=${Number(start) + 1}\ntimens=1\n`);
      assertEquals(lockOwner(lock), { pid, start: null });
      Deno.writeTextFileSync(lock, `${pid}\n`);
      assertEquals(livePid(lock), pid, "a lock of an einat before start times: the PID alone");
    });
    Deno.writeTextFileSync(lock, `${Deno.pid}\nstart=${processStart(Deno.pid)}\n`);
    assertEquals(livePid(lock), null, "this process's own lock");
    Deno.removeSync(lock);
    assertEquals(livePid(lock), null, "no lock");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
