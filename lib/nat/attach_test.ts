import { assert, assertEquals } from "../../tests/lib/assert.ts";
import { livePid, processStart } from "./attach.ts";

/** A process whose command line names einat (argv[0]) and whose comm is `comm`, for `fn`. */
async function withFakeEinat(comm: string, fn: (pid: number) => void | Promise<void>) {
  const dir = Deno.makeTempDirSync({ prefix: "einat-lock-test-" });
  const bin = `${dir}/${comm}`;
  Deno.symlinkSync("/bin/sleep", bin);
  const child = new Deno.Command("bash", {
    args: ["-c", `exec -a einat-fake "${bin}" 30`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // until the exec has happened
    for (
      let i = 0;
      i < 200 && !Deno.readTextFileSync(`/proc/${child.pid}/cmdline`).startsWith("einat-fake");
      i++
    ) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await fn(child.pid);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("processStart: field 22 of /proc/PID/stat, whatever the comm holds; null for no process", async () => {
  await withFakeEinat("a b) (c", (pid) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    assert(stat.includes("(a b) (c)"), stat);
    const start = processStart(pid);
    assert(start !== null && /^\d+$/.test(start), `start ${start}`);
    // the same as the field counted from the other end (52 fields on Linux >= 3.5)
    const fields = stat.trimEnd().split(" ");
    assertEquals(start, fields[fields.length - 52 + 21]);
  });
  assertEquals(processStart(0x3fffffff), null);
});

Deno.test("livePid: the lock's process while it runs; not once its PID names another process (a killed einat's PID reused)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "einat-lock-test-" });
  try {
    const lock = `${dir}/lock.pid`;
    await withFakeEinat("sleep", (pid) => {
      const start = processStart(pid)!;
      Deno.writeTextFileSync(lock, `${pid}\nstart=${start}\n`);
      assertEquals(livePid(lock), pid, "the einat that wrote it");
      Deno.writeTextFileSync(lock, `${pid}\nstart=${start}\nqdisc=created\n`);
      assertEquals(livePid(lock), pid, "with the qdisc line");
      Deno.writeTextFileSync(lock, `${pid}\nstart=${Number(start) + 1}\n`);
      assertEquals(livePid(lock), null, "another process with that PID");
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
