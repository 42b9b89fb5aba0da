import { deepStrictEqual, equal } from "node:assert/strict";
import { deletedNamespace, isNetnsFolder, netnsFolderOf, netnsIdentity, netnsOf } from "./netns.ts";
import { ifnameOfPinFolder, netnsRoot, pinDirFor, pinFolderName, pinRootOf } from "./options.ts";
import { pinnedInterfaces } from "./read.ts";

/** A fake /proc: `self/ns/net`, and `links` as [path, target] (same target: same inode). */
function fakeProc(links: [string, string][]): string {
  const proc = Deno.makeTempDirSync({ prefix: "einat-netns-test-" });
  for (const f of ["a", "b"]) Deno.writeTextFileSync(`${proc}/${f}`, f);
  for (const [path, target] of [["self/ns/net", "a"], ...links]) {
    Deno.mkdirSync(`${proc}/${path.replace(/\/[^/]+$/, "")}`, { recursive: true });
    Deno.symlinkSync(`${proc}/${target}`, `${proc}/${path}`);
  }
  return proc;
}

Deno.test("netns: the initial namespace by /proc/1/ns/net, else by /proc/1/net/dev", () => {
  const cases: [string, [string, string][], boolean, boolean][] = [
    ["same ns file", [["1/ns/net", "a"]], true, true],
    ["another ns file", [["1/ns/net", "b"]], false, true],
    // /proc/1/ns/net unreadable (EACCES without the right to trace pid 1): net/dev decides.
    ["same net/dev", [["self/net/dev", "a"], ["1/net/dev", "a"]], true, true],
    ["another net/dev", [["self/net/dev", "a"], ["1/net/dev", "b"]], false, true],
    ["neither readable", [], true, false],
  ];
  for (const [what, links, initial, known] of cases) {
    const proc = fakeProc(links);
    try {
      const ns = netnsOf(proc);
      equal(ns.ino, Deno.statSync(`${proc}/a`).ino, what);
      deepStrictEqual([ns.initial, ns.known], [initial, known], what);
      equal(netnsFolderOf(ns), initial ? "" : `netns:${ns.ino}`, what);
    } finally {
      Deno.removeSync(proc, { recursive: true });
    }
  }
});

Deno.test("netns: pin folders per namespace; the initial one keeps <root>/<ifname>", () => {
  equal(netnsRoot("/sys/fs/bpf/einat/", ""), "/sys/fs/bpf/einat");
  equal(netnsRoot("/sys/fs/bpf/einat", "netns:4026532177"), "/sys/fs/bpf/einat/netns:4026532177");
  equal(pinRootOf("/sys/fs/bpf/einat/wan0"), "/sys/fs/bpf/einat");
  equal(pinRootOf("/sys/fs/bpf/einat/netns:4026532177/wan0"), "/sys/fs/bpf/einat");
  equal(isNetnsFolder("netns:4026532177"), true);
  equal(isNetnsFolder("netns"), false); // a possible interface name; ':' is not
  const root = Deno.makeTempDirSync({ prefix: "einat-netns-test-" });
  try {
    for (const d of ["wan0", "netns:4026532177", "netns"]) Deno.mkdirSync(`${root}/${d}`);
    deepStrictEqual(pinnedInterfaces(root), ["netns", "wan0"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("pin folder names: a dot and a percent sign are escaped, and read back", () => {
  for (const name of ["wan0", "eth0.7", "a%2E", "x.y.z", "%", "ppp0"]) {
    const f = pinFolderName(name);
    equal(f.includes("."), false, f);
    equal(ifnameOfPinFolder(f), name);
  }
  equal(pinFolderName("eth0.100"), "eth0%2E100");
  equal(pinDirFor("eth0.7", "/r").endsWith("/eth0%2E7"), true);
});

Deno.test("netns: state written under this inode by another cookie is a deleted namespace's", () => {
  const now = { ino: 4026532177, cookie: "4096" };
  equal(deletedNamespace({ ino: 4026532177, cookie: "4095" }, now), true);
  equal(deletedNamespace({ ino: 4026532177, cookie: "4096" }, now), false); // this one's
  // Another inode: state given by --pin-dir from elsewhere, not judged here.
  equal(deletedNamespace({ ino: 4026532178, cookie: "4095" }, now), false);
  // Either cookie unknown (an einat before it was kept, a kernel before 5.14): as before.
  equal(deletedNamespace(undefined, now), false);
  equal(deletedNamespace({ ino: 4026532177 }, now), false);
  equal(deletedNamespace({ ino: 4026532177, cookie: "4095" }, { ino: 4026532177 }), false);
  // This kernel (5.14 or later) has a cookie; this process's namespace is never a deleted one.
  const me = netnsIdentity();
  equal(me.ino, Deno.statSync("/proc/self/ns/net").ino);
  equal(/^\d+$/.test(me.cookie ?? ""), true, JSON.stringify(me));
  equal(deletedNamespace(me), false);
});
