import { assert, assertEquals } from "../tests/lib/assert.ts";
import { privateDeno } from "../tests/lib/private_deno.ts";
import { parseSmaps, readOnlyMappingsOf } from "./memory.ts";

const SMAPS = `00400000-00452000 r--p 00000000 fd:01 131 /opt/einat/einat
Size:                328 kB
Rss:                 120 kB
Anonymous:             0 kB
00452000-00900000 r-xp 00052000 fd:01 131 /opt/einat/einat
Rss:                2048 kB
00900000-00902000 rw-p 00500000 fd:01 131 /opt/einat/einat
Rss:                   8 kB
00902000-00a00000 ---p 00000000 00:00 0
Rss:                   0 kB
7f0000000000-7f0000001000 r-xp 00000000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   4 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
`;

Deno.test("memory: smaps text parses into mappings with their RSS", () => {
  const m = parseSmaps(SMAPS);
  assertEquals(m.length, 6);
  assertEquals(m[0], {
    start: 0x400000n,
    end: 0x452000n,
    perms: "r--p",
    path: "/opt/einat/einat",
    rssKb: 120,
  });
  assertEquals(m[1].rssKb, 2048);
  assertEquals(m[3].path, "");
  assertEquals(m[5].path, "[stack]");
  assertEquals(m[5].end, 0x7ffd00021000n);
});

Deno.test("memory: only the executable's read-only mappings are paged out", () => {
  const picked = readOnlyMappingsOf(parseSmaps(SMAPS), "/opt/einat/einat");
  // Not its writable data (a private copy may hold writes), not libc, not the guard region.
  assertEquals(picked.map((m) => m.perms), ["r--p", "r-xp"]);
});

/**
 * Runs `script` (TypeScript) in a child on a private copy of the deno binary (no other process
 * maps its pages, while the suite runs many on the shared one) and returns the JSON it printed.
 */
async function onPrivateCopy(script: string): Promise<Record<string, unknown>> {
  const deno = privateDeno();
  try {
    const out = await new Deno.Command(deno.path, {
      args: ["eval", "--ext=ts", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout).trim());
  } finally {
    deno.remove();
  }
}

const MEMORY_TS = new URL("./memory.ts", import.meta.url).href;

Deno.test("memory: a page-out gives the executable's pages back and the process runs on", async () => {
  // The RSS (KiB) of the child's executable's read-only mappings before and after a page-out,
  // the page-out's result, and proof that it still runs.
  const r = await onPrivateCopy(`
import { pageOutExecutable, parseSmaps, readOnlyMappingsOf } from "${MEMORY_TS}";
const exe = Deno.execPath();
const rss = () => readOnlyMappingsOf(parseSmaps(Deno.readTextFileSync("/proc/self/smaps")), exe)
  .reduce((a, m) => a + m.rssKb, 0);
const before = rss();
const r = pageOutExecutable();
const after = rss();
// Work that needs pages back (regexps, JSON, a timer) still runs.
await new Promise((ok) => setTimeout(ok, 50));
console.log(JSON.stringify({ before, after, ...r, alive: /^(\\d+)$/.exec("42")?.[1] }));
`) as { before: number; after: number; mappings: number; error: number; alive: string };
  assertEquals(r.error, 0);
  assert(r.mappings >= 2, `mappings advised: ${r.mappings}`);
  assertEquals(r.alive, "42");
  assert(r.before > 4096, `RSS of the executable before: ${r.before} KiB`);
  assert(
    r.after < r.before / 2,
    `RSS of the executable's read-only mappings ${r.before} → ${r.after} KiB`,
  );
});

Deno.test("memory: a page-out works on, and never throws, once the executable is replaced", async () => {
  // An upgrade replaces the file under the running daemon: /proc/self/exe and the mappings then
  // read "PATH (deleted)", and the path cannot be resolved any more.
  const r = await onPrivateCopy(`
import { pageOutExecutable, releaseMemory } from "${MEMORY_TS}";
Deno.removeSync(Deno.execPath());
console.log(JSON.stringify({ exe: Deno.execPath(), out: pageOutExecutable(), again: releaseMemory() }));
`) as { exe: string; out: { mappings: number; error: number }; again: { error: number } };
  assert(r.exe.endsWith(" (deleted)"), `exe: ${r.exe}`);
  assertEquals(r.out.error, 0);
  assert(r.out.mappings >= 2, `mappings advised: ${r.out.mappings}`);
  assertEquals(r.again.error, 0);
});
