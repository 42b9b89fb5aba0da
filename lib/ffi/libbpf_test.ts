/**
 * Tests of the libbpf/libc bindings. Need root and clang-19 (skipped with a printed reason
 * otherwise). The TC part runs as a subprocess inside a private network namespace.
 * Run: `deno test -A lib/ffi/`.
 */

import assert from "node:assert/strict";
import * as log from "../log.ts";
import * as bpf from "./libbpf.ts";
import {
  closeFd,
  cString,
  errno,
  errnoMessage,
  ifIndexToName,
  ifNameToIndex,
  readCString,
} from "./libc.ts";
import { testNsName } from "../../tests/lib/netns.ts";

const FIXTURE = new URL("../../tests/fixtures/ffi_test.bpf.c", import.meta.url).pathname;
const LIBBPF_URL = new URL("./libbpf.ts", import.meta.url).href;
const LIBC_URL = new URL("./libc.ts", import.meta.url).href;

function findInPath(cmd: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").concat("/usr/bin")) {
    try {
      const p = `${dir}/${cmd}`;
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return null;
}

const clang = findInPath("clang-19");
const isRoot = Deno.uid() === 0;
const skipReason = !isRoot ? "not root" : clang === null ? "clang-19 not found" : null;
if (skipReason) console.log(`lib/ffi/libbpf_test.ts: skipping BPF tests: ${skipReason}`);
const ignore = skipReason !== null;

async function run(cmd: string, args: string[], opts: { check?: boolean } = {}) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const res = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if ((opts.check ?? true) && out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${res.stderr}${res.stdout}`);
  }
  return res;
}

let built: Promise<{ good: string; bad: string; dir: string }> | null = null;

/** Compiles the fixture (good and -DFFI_TEST_BAD variants) once into a temp dir. */
function buildFixtures(): Promise<{ good: string; bad: string; dir: string }> {
  built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "einatffi-" });
    const base = ["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", FIXTURE];
    const good = `${dir}/ffi_test.bpf.o`;
    const bad = `${dir}/ffi_bad.bpf.o`;
    await run(clang!, [...base, "-o", good]);
    await run(clang!, [...base, "-DFFI_TEST_BAD", "-o", bad]);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* ignore */ }
    });
    return { good, bad, dir };
  })();
  return built;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function u64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

const readU32 = (b: Uint8Array, off = 0) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);
const readU64 = (b: Uint8Array) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);

/** Opens the good fixture with `knob` set and loads it. */
async function loadFixture(knob: number): Promise<bpf.BpfObject> {
  const { good } = await buildFixtures();
  const obj = bpf.openObjectMem(await Deno.readFile(good), "ffi_test");
  try {
    const ro = bpf.findMap(obj, ".rodata");
    const init = bpf.mapInitialValue(ro);
    assert.equal(init.length, 4);
    init.set(u32(knob));
    bpf.mapSetInitialValue(ro, init);
    await bpf.loadObject(obj);
    return obj;
  } catch (e) {
    bpf.closeObject(obj);
    throw e;
  }
}

Deno.test("libc helpers", () => {
  const s = cString("abc");
  assert.deepEqual([...s], [97, 98, 99, 0]);
  assert.throws(() => cString("a\0b"), TypeError);
  assert.equal(readCString(Deno.UnsafePointer.of(s)), "abc");
  assert.equal(readCString(Deno.UnsafePointer.of(s), 2), "ab");
  assert.equal(readCString(null), null);
  const lo = ifNameToIndex("lo");
  assert.ok(lo > 0);
  assert.equal(ifIndexToName(lo), "lo");
  assert.equal(ifNameToIndex("einatffi-none0"), 0);
  assert.equal(ifNameToIndex("a-name-much-too-long-for-ifnamsiz"), 0);
  assert.equal(ifIndexToName(0x7ffffff0), null);
  assert.equal(typeof errno(), "number");
});

Deno.test("errnoMessage: op, text and number; the number alone when strerror has nothing", () => {
  assert.equal(errnoMessage("op", -5, () => "I/O error"), "op: I/O error (errno 5)");
  assert.equal(errnoMessage("op", 4001, () => ""), "op: error 4001 (errno 4001)");
  const fails = () => {
    throw new Error("no library");
  };
  assert.equal(errnoMessage("op", 2, fails), "op: error 2 (errno 2)");
});

Deno.test({ name: "libbpf version and BpfError text", ignore }, () => {
  assert.match(bpf.libbpfVersion(), /^\d+\.\d+$/);
  const e = new bpf.BpfError("bpf_thing", -2);
  assert.equal(e.message, "bpf_thing: No such file or directory (errno 2)");
  assert.equal(e.errno, 2);
  assert.equal(e.op, "bpf_thing");
  assert.equal(e.log, undefined);
  const long = Array.from({ length: 100 }, (_, i) => `line ${i}`).join("\n");
  const withLog = new bpf.BpfError("bpf_object__load", 13, long);
  assert.equal(withLog.log, long);
  assert.ok(withLog.message.includes("line 99"));
  assert.ok(withLog.message.includes("line 70"));
  assert.ok(!withLog.message.includes("line 69\n"));
  assert.match(bpf.strerror(4007), /./); // libbpf's own code range
});

Deno.test({ name: "open, set .rodata, load, test_run", ignore }, async () => {
  const { good } = await buildFixtures();
  const obj = bpf.openObjectMem(await Deno.readFile(good), "ffi_test");
  try {
    const counts = bpf.findMap(obj, "counts");
    assert.equal(bpf.mapKeySize(counts), 4);
    assert.equal(bpf.mapValueSize(counts), 8);
    assert.equal(bpf.mapMaxEntries(counts), 1024);
    bpf.mapSetMaxEntries(counts, 4096);
    assert.equal(bpf.mapMaxEntries(counts), 4096);
    assert.throws(() => bpf.findMap(obj, "nope"), bpf.BpfError);
    assert.throws(() => bpf.findProgram(obj, "nope"), bpf.BpfError);
    assert.throws(() => bpf.mapFd(counts), bpf.BpfError); // not loaded yet

    const ro = bpf.findMap(obj, ".rodata");
    assert.deepEqual([...bpf.mapInitialValue(ro)], [0, 0, 0, 0]);
    bpf.mapSetInitialValue(ro, u32(0xabc));
    assert.equal(readU32(bpf.mapInitialValue(ro)), 0xabc);
    assert.throws(() => bpf.mapSetInitialValue(ro, new Uint8Array(3)), bpf.BpfError);

    const prog = bpf.findProgram(obj, "ffi_test_prog");
    bpf.programSetLogLevel(prog, 0);
    await bpf.loadObject(obj);
    assert.throws(() => bpf.mapSetInitialValue(ro, u32(1)), bpf.BpfError); // EBUSY after load

    const fd = bpf.programFd(prog);
    assert.ok(fd > 0);
    const pkt = new Uint8Array(64);
    const r = bpf.testRun(fd, pkt);
    assert.equal(r.retval, 0xabc);
    assert.equal(r.dataOut.length, 64);
    assert.equal(readU32(r.dataOut, 14), 0xabc);
    assert.equal(pkt[14], 0); // input untouched
    assert.ok(r.durationNs >= 0);

    // A too-small output buffer reports the needed size.
    const small = (() => {
      try {
        bpf.testRun(fd, pkt, { dataOutSize: 10 });
      } catch (e) {
        return e;
      }
    })();
    assert.ok(small instanceof bpf.BpfError);
    assert.equal(small.errno, bpf.Errno.ENOSPC);
    assert.match(small.message, /needs 64 bytes/);
    // Shorter than an Ethernet header: EINVAL.
    assert.throws(
      () => bpf.testRun(fd, new Uint8Array(4)),
      (e) => e instanceof bpf.BpfError && e.errno === 22,
    );

    // A __sk_buff context goes in and comes back.
    const ctx = new Uint8Array(192);
    new DataView(ctx.buffer).setUint32(8, 0x55, true); // mark
    const rc = bpf.testRun(fd, pkt, { ctxIn: ctx });
    assert.equal(rc.ctxOut?.length, 192);
    assert.equal(readU32(rc.ctxOut!, 8), 0x55);

    const ra = await bpf.testRunAsync(fd, pkt, { repeat: 1000 });
    assert.equal(ra.retval, 0xabc);

    // 1 + 1 (ENOSPC still ran) + 1 (ctx) + 1000 runs counted under key knob.
    const cfd = bpf.mapFd(counts);
    assert.equal(readU64(bpf.mapLookup(cfd, u32(0xabc), 8)!), 1003n);
  } finally {
    bpf.closeObject(obj);
    bpf.closeObject(obj); // idempotent
  }
  assert.throws(() => bpf.findMap(obj, "counts"), /closed/);
});

Deno.test({ name: "map element ops round trip", ignore }, async () => {
  const obj = await loadFixture(1);
  try {
    const fd = bpf.mapFd(bpf.findMap(obj, "counts"));
    assert.equal(bpf.mapLookup(fd, u32(42), 8), null);
    assert.equal(bpf.mapNextKey(fd, null, 4), null);
    assert.deepEqual(bpf.mapLookupBatch(fd, 4, 8), []);

    bpf.mapUpdate(fd, u32(42), u64(4200n));
    assert.equal(readU64(bpf.mapLookup(fd, u32(42), 8)!), 4200n);
    assert.throws(
      () => bpf.mapUpdate(fd, u32(42), u64(1n), bpf.BPF_NOEXIST),
      (e) => e instanceof bpf.BpfError && e.errno === bpf.Errno.EEXIST,
    );
    assert.throws(
      () => bpf.mapUpdate(fd, u32(43), u64(1n), bpf.BPF_EXIST),
      (e) => e instanceof bpf.BpfError && e.errno === bpf.Errno.ENOENT,
    );
    bpf.mapUpdate(fd, u32(42), u64(1n), bpf.BPF_EXIST);
    assert.equal(readU64(bpf.mapLookup(fd, u32(42), 8)!), 1n);
    assert.equal(readU32(bpf.mapNextKey(fd, null, 4)!), 42);
    assert.equal(bpf.mapNextKey(fd, u32(42), 4), null);
    assert.equal(bpf.mapDelete(fd, u32(42)), true);
    assert.equal(bpf.mapDelete(fd, u32(42)), false);
    assert.throws(() => bpf.mapUpdate(fd, u32(1), new Uint8Array(8), 99), bpf.BpfError);

    // Many entries: batch (small batches force bucket-size growth) and next-key walk agree.
    const N = 700;
    for (let i = 0; i < N; i++) bpf.mapUpdate(fd, u32(i * 7), u64(BigInt(i) * 3n));
    for (const batch of [1, 7, 256, 5000]) {
      const entries = bpf.mapLookupBatch(fd, 4, 8, batch);
      assert.equal(entries.length, N, `batch ${batch}`);
      const seen = new Map(entries.map((e) => [readU32(e.key), readU64(e.value)]));
      assert.equal(seen.size, N);
      for (let i = 0; i < N; i++) assert.equal(seen.get(i * 7), BigInt(i) * 3n);
    }
    const walked = [...bpf.mapEntries(fd, 4, 8)];
    assert.equal(walked.length, N);
    for (const e of walked) assert.equal(readU64(e.value), BigInt(readU32(e.key) / 7) * 3n);

    let keys = 0;
    for (let k = bpf.mapNextKey(fd, null, 4); k; k = bpf.mapNextKey(fd, k, 4)) keys++;
    assert.equal(keys, N);
  } finally {
    bpf.closeObject(obj);
  }
});

Deno.test({ name: "whole-map reads refuse a key or value size not the map's", ignore }, () => {
  // As a pinned map of another program version would be: the kernel writes 16-byte values.
  const fd = bpf.mapCreate(bpf.MapType.HASH, "wider", 4, 16, 1024);
  try {
    for (let i = 0; i < 600; i++) bpf.mapUpdate(fd, u32(i), new Uint8Array(16).fill(0xa5));
    const sizes = /\(wider\): the map's keys are 4 bytes and its values 16, not the 4 and 8/;
    assert.throws(() => bpf.mapLookupBatch(fd, 4, 8), sizes);
    assert.throws(() => bpf.forEachEntry(fd, 4, 8, () => {}), sizes);
    assert.throws(() => [...bpf.mapEntries(fd, 4, 8)], sizes);
    assert.throws(() => bpf.mapLookupBatch(fd, 8, 16), /keys are 4 bytes/);
    assert.equal(bpf.mapLookupBatch(fd, 4, 16).length, 600);
    assert.equal(bpf.mapCount(fd, 4), 600);
  } finally {
    closeFd(fd);
  }
  // Per-CPU values: one 8-byte-aligned slot per possible CPU.
  const pc = bpf.mapCreate(bpf.MapType.PERCPU_ARRAY, "pcpu", 4, 4, 3);
  try {
    const slot = 8 * bpf.numPossibleCpus();
    assert.equal(bpf.valueBytes(bpf.mapInfo(pc)), slot);
    assert.equal(bpf.mapLookupBatch(pc, 4, slot).length, 3);
    assert.throws(() => bpf.mapLookupBatch(pc, 4, 4), /values \d+, not the 4 and 4/);
  } finally {
    closeFd(pc);
  }
});

Deno.test({ name: "verifier rejection carries the log", ignore }, async () => {
  const { bad } = await buildFixtures();
  const lines: string[] = [];
  bpf.setPrintHandler((level, line) => lines.push(`${level}|${line}`));
  const obj = bpf.openObjectMem(await Deno.readFile(bad), "ffi_bad");
  try {
    const err = await bpf.loadObject(obj).then(() => null, (e) => e);
    assert.ok(err instanceof bpf.BpfError, `expected BpfError, got ${err}`);
    assert.equal(err.op, "bpf_object__load");
    assert.equal(err.errno, bpf.Errno.EACCES);
    assert.ok(err.log, "log attached");
    assert.match(err.log!, /invalid access to packet/);
    assert.match(err.message, /^bpf_object__load: Permission denied \(errno 13\)\n/);
    assert.match(err.message, /invalid access to packet/);
  } finally {
    bpf.closeObject(obj);
    bpf.setPrintHandler(null);
  }
  assert.ok(lines.some((l) => l.startsWith("debug|libbpf: loading object 'ffi_bad'")));
  assert.ok(lines.some((l) => l.startsWith("warn|") && l.includes("ffi_test_bad")));
  assert.ok(lines.every((l) => !l.endsWith("\n")));
});

Deno.test({ name: "print handler formats long messages", ignore }, async () => {
  // A 9000-byte object name exceeds the 8 KiB first-pass buffer of the trampoline.
  const { good } = await buildFixtures();
  const name = "n".repeat(9000);
  const lines: string[] = [];
  bpf.setPrintHandler((_level, line) => lines.push(line));
  try {
    const obj = bpf.openObjectMem(await Deno.readFile(good), name);
    bpf.closeObject(obj);
  } finally {
    bpf.setPrintHandler(null);
  }
  assert.ok(lines.some((l) => l.includes(`loading object '${name}' from buffer`)));
});

Deno.test({ name: "routeLibbpfPrintToLog writes debug lines", ignore }, async () => {
  const { good } = await buildFixtures();
  const captured: string[] = [];
  const stderr = Deno.stderr as { writeSync(p: Uint8Array): number };
  const original = stderr.writeSync;
  stderr.writeSync = (p: Uint8Array) => {
    captured.push(new TextDecoder().decode(p));
    return p.length;
  };
  log.setLevel("debug");
  try {
    bpf.routeLibbpfPrintToLog();
    bpf.closeObject(bpf.openObjectMem(await Deno.readFile(good), "ffi_route"));
  } finally {
    stderr.writeSync = original;
    log.setLevel("info");
    bpf.setPrintHandler(null);
  }
  const line = captured.find((l) => l.includes("loading object 'ffi_route'"));
  assert.ok(line, captured.join(""));
  assert.match(line!, / DEBUG libbpf: loading object 'ffi_route' from buffer\n$/);
});

// ---------------------------------------------------------------------------------------------
// TC attach + pinning, in a private netns (subprocess: Deno cannot setns).

const NETNS_SCRIPT = `
import * as bpf from ${JSON.stringify(LIBBPF_URL)};
import { closeFd, ifNameToIndex } from ${JSON.stringify(LIBC_URL)};
const [objPath, pinDir] = Deno.args;
const out: Record<string, unknown> = {};
const tcShow = async (dir: string) => new TextDecoder().decode(
  (await new Deno.Command("tc", { args: ["filter", "show", "dev", "d0", dir], stdout: "piped" })
    .output()).stdout);
const ifindex = ifNameToIndex("d0");
out.ifindex = ifindex;
const obj = bpf.openObjectMem(await Deno.readFile(objPath), "ffi_test");
try {
  await bpf.loadObject(obj);
  const fd = bpf.programFd(bpf.findProgram(obj, "ffi_test_prog"));
  out.destroyNone = bpf.tcHookDestroy(ifindex);
  try { bpf.tcAttach(ifindex, "ingress", fd); } catch (e) { out.attachNoQdisc = e.errno; }
  out.create1 = bpf.tcHookCreate(ifindex, "ingress");
  out.create2 = bpf.tcHookCreate(ifindex, "egress");
  const f = bpf.tcAttach(ifindex, "ingress", fd);
  out.filter = f;
  out.query = bpf.tcQuery(ifindex, "ingress", f.handle, f.priority);
  out.showIngress = await tcShow("ingress");
  try { bpf.tcAttach(ifindex, "ingress", fd, { handle: f.handle, priority: f.priority }); }
  catch (e) { out.attachDup = e.errno; }
  out.replaced = bpf.tcAttach(ifindex, "ingress", fd,
    { handle: f.handle, priority: f.priority, replace: true });
  out.egress = bpf.tcAttach(ifindex, "egress", fd, { handle: 7, priority: 3 });
  out.queryEgress = bpf.tcQuery(ifindex, "egress", 7, 3);
  out.queryMissing = bpf.tcQuery(ifindex, "egress", 8, 3);
  out.detach1 = bpf.tcDetach(ifindex, "ingress", f.handle, f.priority);
  out.queryAfter = bpf.tcQuery(ifindex, "ingress", f.handle, f.priority);
  out.detach2 = bpf.tcDetach(ifindex, "ingress", f.handle, f.priority);
  out.destroy = bpf.tcHookDestroy(ifindex);
  out.queryNoQdisc = bpf.tcQuery(ifindex, "egress", 7, 3);
  out.detachNoQdisc = bpf.tcDetach(ifindex, "egress", 7, 3);
  try { bpf.tcQuery(ifindex, "egress", 0, 3); } catch (e) { out.queryZero = e.name; }
  out.showEgressAfter = await tcShow("egress");

  const mfd = bpf.mapFd(bpf.findMap(obj, "counts"));
  bpf.mapUpdate(mfd, new Uint8Array([9, 0, 0, 0]), new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0]));
  const pin = pinDir + "/counts";
  bpf.objPin(mfd, pin);
  try { bpf.objPin(mfd, pin); } catch (e) { out.pinTwice = e.errno; }
  const pfd = bpf.objGetPinned(pin);
  out.pinnedValue = Array.from(bpf.mapLookup(pfd, new Uint8Array([9, 0, 0, 0]), 8) ?? []);
  closeFd(pfd);
  try { bpf.objGetPinned(pinDir + "/missing"); } catch (e) { out.getMissing = e.errno; }
} finally {
  bpf.closeObject(obj);
}
console.log(JSON.stringify(out));
`;

Deno.test({ name: "tc hook/attach/query/detach and pinning in a netns", ignore }, async () => {
  const { good, dir } = await buildFixtures();
  const ns = testNsName("ffi");
  const script = `${dir}/netns_script.ts`;
  await Deno.writeTextFile(script, NETNS_SCRIPT);
  await run("ip", ["netns", "add", ns]);
  try {
    // A veth pair created inside the netns (the dummy module may be unavailable).
    await run("ip", ["-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    await run("ip", ["-n", ns, "link", "set", "d0", "up"]);
    // `ip netns exec` gives a private mount namespace: mount a fresh bpffs there for pinning.
    const pinDir = "/sys/fs/bpf/einatffi";
    const sh = `mount -t bpf bpf /sys/fs/bpf && mkdir -p ${pinDir} && ` +
      `exec "$0" run -A --no-check "$1" "$2" "$3"`;
    const res = await run("ip", [
      "netns",
      "exec",
      ns,
      "sh",
      "-c",
      sh,
      Deno.execPath(),
      script,
      good,
      pinDir,
    ], { check: false });
    assert.equal(res.code, 0, `netns script failed:\n${res.stderr}\n${res.stdout}`);
    const out = JSON.parse(res.stdout.trim().split("\n").at(-1)!);
    assert.ok(out.ifindex > 0);
    assert.equal(out.destroyNone, false);
    assert.equal(out.attachNoQdisc, bpf.Errno.EINVAL);
    assert.equal(out.create1, "created");
    assert.equal(out.create2, "exists");
    assert.ok(out.filter.handle > 0 && out.filter.priority > 0 && out.filter.progId > 0);
    assert.equal(out.query, out.filter.progId);
    assert.match(out.showIngress, /ffi_test_prog/);
    assert.match(out.showIngress, /direct-action/);
    assert.equal(out.attachDup, bpf.Errno.EEXIST);
    assert.deepEqual(out.replaced, out.filter);
    assert.deepEqual(out.egress, { handle: 7, priority: 3, progId: out.filter.progId });
    assert.equal(out.queryEgress, out.filter.progId);
    assert.equal(out.queryMissing, null);
    assert.equal(out.detach1, true);
    assert.equal(out.queryAfter, null);
    assert.equal(out.detach2, false);
    assert.equal(out.destroy, true);
    assert.equal(out.queryNoQdisc, null);
    assert.equal(out.detachNoQdisc, false);
    assert.equal(out.queryZero, "RangeError");
    assert.equal(out.showEgressAfter.trim(), "");
    assert.equal(out.pinTwice, bpf.Errno.EEXIST);
    assert.deepEqual(out.pinnedValue, [5, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(out.getMissing, bpf.Errno.ENOENT);
  } finally {
    await run("ip", ["netns", "del", ns], { check: false });
  }
  const left = await run("ip", ["netns", "list"]);
  assert.ok(!left.stdout.includes(ns), "netns removed");
});

Deno.test("closeFd on a bad fd", () => {
  assert.equal(closeFd(-1), false);
});
