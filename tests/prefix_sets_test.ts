/**
 * The prefix sets (bpf/lib/prefixes.h, lib/nat/prefixes.ts) against longest-prefix matching:
 * random nested `snat_internals` and `no_snat_dests`, IPv4 and IPv6. Each new flow's verdict
 * must be what the most specific prefix of the plan says (a no-SNAT source or destination passes
 * untouched, any other is translated), with the sets scanned, with every set sent to the trie,
 * with more prefixes than a set holds, and half-way through a rewrite of the sets.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { loadTestNat, type Nat, TC_ACT_OK, testInterfaceConfig } from "./lib/natfixture.ts";
import { buildPacket, parsePacket } from "./lib/packet.ts";
import { formatAddr, parseAddr } from "../lib/config/cidr.ts";
import type { Cidr, InterfaceConfig } from "../lib/config/types.ts";
import {
  EXT_FLAGS,
  PREFIX_HALF_LAYOUT,
  PREFIX_SET_LAYOUT,
  PREFIX_SET_MAX,
} from "../lib/nat/codec.ts";
import { cidrHas, type NatPlan, planInterface } from "../lib/nat/plan.ts";
import {
  encodePrefixHalf,
  PREFIX_SET,
  PREFIX_SET_TRIE,
  prefixHalves,
  prefixSetWrites,
  writePrefixSet,
} from "../lib/nat/prefixes.ts";
import { applyPlan, lpmEntriesOf } from "../lib/nat/apply.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { fdinfo } from "../bench/lib/bpfbench.ts";
import { dumpXlated } from "../bench/lib/jitprof.ts";

const EXTS = ["203.0.113.1/24", "2001:db8:2::1/64"];
const EXT = { 4: "203.0.113.1", 6: "2001:db8:2::1" } as const;
const IFADDRS = EXTS.map((s) => {
  const [a, p] = s.split("/");
  const addr = parseAddr(a);
  return { family: addr.length === 4 ? 4 as const : 6 as const, addr, prefixLen: Number(p) };
});
/** Where the random prefixes and addresses lie: sources, destinations. */
const SPACE = {
  4: { src: "198.18.0.0", srcLen: 15, dst: "198.51.100.0", dstLen: 24 },
  6: { src: "2001:db8:1000::", srcLen: 36, dst: "2001:db8:3000::", dstLen: 36 },
} as const;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random address inside base/len. */
function addrIn(r: () => number, base: Uint8Array, len: number): Uint8Array {
  const a = base.slice();
  for (let i = 0; i < a.length; i++) {
    const keep = Math.max(0, Math.min(8, len - 8 * i));
    const m = (0xff00 >> keep) & 0xff;
    a[i] = (a[i] & m) | (Math.floor(r() * 256) & ~m & 0xff);
  }
  return a;
}

/** n random prefixes of a family's source or destination space, nested in each other often. */
function prefixes(r: () => number, family: 4 | 6, side: "src" | "dst", n: number): Cidr[] {
  const sp = SPACE[family], bits = family === 4 ? 32 : 128;
  const outer = { family, addr: parseAddr(sp[side]), prefixLen: sp[`${side}Len`] };
  const out: Cidr[] = [];
  for (let tries = 0; out.length < n && tries < 1000; tries++) {
    const open = out.filter((c) => c.prefixLen < bits - 4); // room for a longer one inside
    const within = open.length && r() < 0.6 ? open[Math.floor(r() * open.length)] : outer;
    const len = within.prefixLen + 1 + Math.floor(r() * Math.min(12, bits - 1 - within.prefixLen));
    const net = {
      family,
      addr: addrIn(() => 0, addrIn(r, within.addr, within.prefixLen), len),
      prefixLen: len,
    };
    if (!out.some((c) => c.prefixLen === len && cidrHas(c, family, net.addr))) out.push(net);
  }
  assert(out.length === n, `${n} distinct prefixes`);
  return out;
}

function config(seed: number, internals: number, dests: number): InterfaceConfig {
  const r = rng(seed);
  return testInterfaceConfig({
    nat66: true,
    snatInternals: [...prefixes(r, 4, "src", internals), ...prefixes(r, 6, "src", internals)],
    noSnatDests: [...prefixes(r, 4, "dst", dests), ...prefixes(r, 6, "dst", dests)],
  });
}

/** The flags of the longest prefix of `entries` covering addr (the tries' answer). */
function lpm(
  entries: { family: 4 | 6; addr: Uint8Array; prefixLen: number; flags: number }[],
  family: 4 | 6,
  addr: Uint8Array,
): number {
  let best = -1, flags = 0;
  for (const e of entries) {
    if (e.prefixLen > best && cidrHas(e, family, addr)) [best, flags] = [e.prefixLen, e.flags];
  }
  return flags;
}

/** Each family's set as applyPlan writes it for a plan. */
function planSets(plan: NatPlan): Uint8Array[] {
  const { ext, dest } = lpmEntriesOf(plan);
  return prefixHalves(ext.values(), dest.values());
}

let sport = 10000;

/** Sends `count` new flows of each family; returns the mismatches with the plan's verdicts. */
function check(n: Nat, plan: NatPlan, seed: number, count: number): string[] {
  const r = rng(seed), bad: string[] = [];
  const ext = plan.externals.map((e) => ({ ...e, flags: e.cfg.flags }));
  const { EXTERNAL, NO_SNAT } = EXT_FLAGS;
  for (const family of [4, 6] as const) {
    const sp = SPACE[family];
    const srcNets = plan.externals.filter((e) => e.family === family && e.prefixLen > 0);
    const dstNets = plan.destConfig.filter((d) => d.family === family && d.flags & NO_SNAT);
    for (let i = 0; i < count; i++) {
      // inside one of the prefixes (at any depth) most of the time, anywhere in the space else
      const pick = <T extends Cidr>(nets: T[], base: string, len: number) =>
        nets.length && r() < 0.7
          ? (({ addr, prefixLen }) => addrIn(r, addr, prefixLen))(
            nets[Math.floor(r() * nets.length)],
          )
          : addrIn(r, parseAddr(base), len);
      // now and then a source among the no-SNAT destinations: the set's most specific prefix
      // for it is then map_dest_config's, whose map_externals answer is an outer prefix's
      const src = r() < 0.25
        ? pick(dstNets, sp.dst, sp.dstLen)
        : pick(srcNets.filter((e) => !(e.cfg.flags & EXTERNAL)), sp.src, sp.srcLen);
      const dst = pick(dstNets, sp.dst, sp.dstLen);
      const srcFlags = lpm(ext, family, src);
      const pass = (srcFlags & (EXTERNAL | NO_SNAT)) !== 0 ||
        (lpm(plan.destConfig, family, dst) & NO_SNAT) !== 0;
      sport = sport >= 60000 ? 10000 : sport + 1;
      const pkt = buildPacket({
        family,
        src: formatAddr(src),
        dst: formatAddr(dst),
        proto: "udp",
        sport,
        dport: 53,
        payload: new Uint8Array(8),
      });
      const res = n.runRaw("egress", pkt);
      const untouched = res.bytes.length === pkt.length && res.bytes.every((b, j) => b === pkt[j]);
      const translated = res.retval === TC_ACT_OK && parsePacket(res.bytes).src === EXT[family];
      if (res.retval !== TC_ACT_OK || (pass ? !untouched : !translated)) {
        bad.push(
          `${formatAddr(src)} -> ${formatAddr(dst)}: expected ${pass ? "pass" : "translated"}, ` +
            `got ${res.retval} ${untouched ? "untouched" : parsePacket(res.bytes).src}`,
        );
      }
    }
  }
  return bad;
}

const key = (i: number) => new Uint8Array(new Uint32Array([i]).buffer);
/** The count word of each set's half[0]. */
function counts(n: Nat): number[] {
  return [PREFIX_SET[4], PREFIX_SET[6]].map((i) => {
    const v = bpf.mapLookup(n.nat.maps.prefixSets, key(i), PREFIX_SET_LAYOUT.size)!;
    return new DataView(v.buffer).getUint32(PREFIX_HALF_LAYOUT.fields.count.offset, true);
  });
}

Deno.test("prefix sets: new flows pass or are translated as the most specific snat_internals / no_snat_dests prefix says, scanned or from the trie, v4 and v6", async () => {
  const ic = config(39, 3, 3);
  const plan = planInterface(ic, IFADDRS);
  const n = await loadTestNat(ic, EXTS);
  try {
    const c = counts(n);
    assert(c.every((x) => x > 0 && x <= PREFIX_SET_MAX), `every set scanned: ${c}`);
    assertEquals(check(n, plan, 1, 300), [], "scanned");
    for (const i of [PREFIX_SET[4], PREFIX_SET[6]]) {
      writePrefixSet(n.nat.maps.prefixSets, i, encodePrefixHalf("trie"));
    }
    assertEquals(counts(n), [PREFIX_SET_TRIE, PREFIX_SET_TRIE]);
    assertEquals(check(n, plan, 2, 300), [], "from the trie");
  } finally {
    n.close();
  }
});

Deno.test("prefix sets: with more prefixes than a set holds the programs ask the trie, and a reload that shrinks them scans again", async () => {
  const ic = config(40, PREFIX_SET_MAX + 4, PREFIX_SET_MAX + 2);
  const n = await loadTestNat(ic, EXTS);
  try {
    assertEquals(counts(n), [PREFIX_SET_TRIE, PREFIX_SET_TRIE]);
    assertEquals(check(n, planInterface(ic, IFADDRS), 3, 300), [], "more than a set holds");
    const small = config(41, 2, 2);
    const plan = planInterface(small, IFADDRS);
    applyPlan(n.nat.maps, plan);
    assert(counts(n).every((x) => x <= PREFIX_SET_MAX), `scanned again: ${counts(n)}`);
    assertEquals(check(n, plan, 4, 300), [], "after the reload");
  } finally {
    n.close();
  }
});

Deno.test("prefix sets: half-way through a rewrite the programs read the new set in half[1], then half[0] again", async () => {
  const ic = config(42, 2, 2);
  const n = await loadTestNat(ic, EXTS);
  try {
    const next = config(43, 2, 3);
    const plan = planInterface(next, IFADDRS);
    const fd = n.nat.maps.prefixSets;
    const writes = planSets(plan).map((half, i) =>
      prefixSetWrites(bpf.mapLookup(fd, key(i), PREFIX_SET_LAYOUT.size)!, half)
    );
    assert(writes.every((w) => w.length === 4), "every set changes");
    // the new set in half[1], half[0] marked moved: the tries still hold the old config
    writes.forEach((w, i) => w.slice(0, 2).forEach((v) => bpf.mapUpdate(fd, key(i), v)));
    assertEquals(check(n, plan, 5, 200), [], "reading half[1]");
    // half[0] rewritten, still marked moved
    writes.forEach((w, i) => bpf.mapUpdate(fd, key(i), w[2]));
    assertEquals(check(n, plan, 6, 200), [], "half[0] rewritten, half[1] read");
    writes.forEach((w, i) => bpf.mapUpdate(fd, key(i), w[3]));
    assert(counts(n).every((x) => x <= PREFIX_SET_MAX));
    assertEquals(check(n, plan, 7, 200), [], "half[0] again");
  } finally {
    n.close();
  }
});

/** `bpftool prog dump xlated` of a loaded program. */
const xlated = (fd: number) => dumpXlated(Number(fdinfo(fd).prog_id), false);

Deno.test("prefix sets: with the scan's loads fenced (weak_order, set on arm64) the verdicts are the same, and only then does the program carry the fences", async () => {
  const ic = config(44, 3, 3);
  const plan = planInterface(ic, IFADDRS);
  const xchgs = (text: string) => (text.match(/xchg/g) ?? []).length;
  const plain = await loadTestNat(ic, EXTS, { ro: { weakOrder: false } });
  let base: number;
  try {
    base = xchgs(await xlated(plain.nat.egressFd));
    assertEquals(check(plain, plan, 8, 100), [], "unfenced");
  } finally {
    plain.close();
  }
  const n = await loadTestNat(ic, EXTS, { ro: { weakOrder: true } });
  try {
    // one fence before the scan and one after it, in einat_prefix_flags (verified once)
    assertEquals(xchgs(await xlated(n.nat.egressFd)) - base, 2, "the fences, where x86 has none");
    assertEquals(check(n, plan, 9, 300), [], "fenced, scanned");
    // and half-way through a rewrite, as above
    const fd = n.nat.maps.prefixSets;
    const next = planInterface(config(45, 2, 3), IFADDRS);
    const writes = planSets(next).map((half, i) =>
      prefixSetWrites(bpf.mapLookup(fd, key(i), PREFIX_SET_LAYOUT.size)!, half)
    );
    writes.forEach((w, i) => w.slice(0, 2).forEach((v) => bpf.mapUpdate(fd, key(i), v)));
    assertEquals(check(n, next, 10, 200), [], "fenced, reading half[1]");
    writes.forEach((w, i) => w.slice(2).forEach((v) => bpf.mapUpdate(fd, key(i), v)));
    assertEquals(check(n, next, 11, 200), [], "fenced, half[0] again");
  } finally {
    n.close();
  }
});
