import { equal } from "node:assert/strict";
import { inInitialMountNs } from "./bpffs.ts";

/** A fake /proc: `files` as [path, content], `links` as [path, target] (same target: same inode). */
function fakeProc(files: [string, string][], links: [string, string][] = []): string {
  const proc = Deno.makeTempDirSync({ prefix: "einat-bpffs-test-" });
  const folder = (path: string) =>
    Deno.mkdirSync(`${proc}/${path.slice(0, path.lastIndexOf("/") + 1)}`, { recursive: true });
  for (const [path, text] of files) {
    folder(path);
    Deno.writeTextFileSync(`${proc}/${path}`, text);
  }
  for (const [path, target] of links) {
    folder(path);
    Deno.symlinkSync(`${proc}/${target}`, `${proc}/${path}`);
  }
  return proc;
}

Deno.test("bpffs: the initial mount namespace by /proc/1/ns/mnt, else by /proc/1/mountinfo", () => {
  const root = "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n";
  const other = "301 300 0:21 / / rw,relatime - ext4 /dev/vda rw\n";
  const cases: [string, [string, string][], [string, string][], boolean | null][] = [
    ["same ns file", [["a", "a"], ["b", "b"]], [["self/ns/mnt", "a"], ["1/ns/mnt", "a"]], true],
    ["another ns file", [["a", "a"], ["b", "b"]], [["self/ns/mnt", "a"], ["1/ns/mnt", "b"]], false],
    // /proc/1/ns/mnt unreadable (EACCES without the right to trace pid 1, as under
    // `ip netns exec` with fewer capabilities than pid 1): the root mounts tell.
    ["same root mount", [["self/mountinfo", root + "x"], ["1/mountinfo", root + "y"]], [], true],
    ["another root mount", [["self/mountinfo", other], ["1/mountinfo", root]], [], false],
    ["nothing readable", [], [], null],
  ];
  for (const [what, files, links, want] of cases) {
    const proc = fakeProc(files, links);
    try {
      equal(inInitialMountNs(proc), want, what);
    } finally {
      Deno.removeSync(proc, { recursive: true });
    }
  }
});
