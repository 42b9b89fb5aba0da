import { deepStrictEqual, ok } from "node:assert/strict";
import {
  encodePrefixHalf,
  mergePrefixes,
  PREFIX_SET_MOVED,
  PREFIX_SET_TRIE,
  type PrefixEntry,
  prefixSetWrites,
  type SetPrefix,
} from "./prefixes.ts";
import {
  PREFIX_ENTRY_LAYOUT,
  PREFIX_HALF_LAYOUT,
  PREFIX_SET_LAYOUT,
  PREFIX_SET_MAX,
} from "./codec.ts";
import { cidrContains, parseCidr } from "../config/cidr.ts";

const H = PREFIX_HALF_LAYOUT, E = PREFIX_ENTRY_LAYOUT;
const u32 = (b: Uint8Array, at: number) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** A set prefix with map_externals' flags `ext` and map_dest_config's `dest`. */
function setPrefix(cidr: string, ext: number, dest = 0): SetPrefix {
  const c = parseCidr(cidr);
  return { ...c, ext, dest };
}

/** Entry i of a half: [addr, mask] in hex, flags. */
function entryAt(half: Uint8Array, i: number): [string, string, number] {
  const o = H.fields.e.offset + i * E.size;
  return [
    hex(half.subarray(o + E.fields.addr.offset, o + E.fields.addr.offset + 16)),
    hex(half.subarray(o + E.fields.mask.offset, o + E.fields.mask.offset + 16)),
    u32(half, o + E.fields.flags.offset),
  ];
}

Deno.test("encodePrefixHalf: longest prefix first, host bits cleared, masks made", () => {
  const h = encodePrefixHalf([
    setPrefix("0.0.0.0/0", 2),
    setPrefix("192.0.2.77/25", 0),
    setPrefix("192.0.2.1/32", 1, 5),
  ]);
  deepStrictEqual(u32(h, H.fields.count.offset), 3);
  const z12 = "00".repeat(12);
  deepStrictEqual(entryAt(h, 0), ["c0000201" + z12, "ffffffff" + z12, 1 | 5 << 8]);
  deepStrictEqual(entryAt(h, 1), ["c0000200" + z12, "ffffff80" + z12, 0]);
  deepStrictEqual(entryAt(h, 2), ["00000000" + z12, "00000000" + z12, 2]);
  const v6 = encodePrefixHalf([setPrefix("2001:db8:1:2:3::/61", 2)]);
  deepStrictEqual(entryAt(v6, 0), [
    "20010db8000100000000000000000000",
    "fffffffffffffff80000000000000000",
    2,
  ]);
});

Deno.test("encodePrefixHalf: more than PREFIX_SET_MAX prefixes, or 'trie', send the programs to the trie", () => {
  const many = Array.from(
    { length: PREFIX_SET_MAX + 1 },
    (_, i) => setPrefix(`198.18.${i}.0/24`, 2),
  );
  deepStrictEqual(u32(encodePrefixHalf(many), 0), PREFIX_SET_TRIE);
  deepStrictEqual(u32(encodePrefixHalf(many.slice(1)), 0), PREFIX_SET_MAX);
  deepStrictEqual(u32(encodePrefixHalf("trie"), 0), PREFIX_SET_TRIE);
});

/** The half a program reads in value v (bpf/lib/prefixes.h). */
const readHalf = (v: Uint8Array) => u32(v, H.fields.count.offset) === PREFIX_SET_MOVED ? 1 : 0;

/** Every byte-wise mixture of two count words, as a reader racing a write could see. */
function mixtures(a: number, b: number): number[] {
  const out: number[] = [];
  for (let m = 0; m < 16; m++) {
    let x = 0;
    for (let i = 0; i < 4; i++) {
      const from = (m >> i) & 1 ? b : a;
      x |= ((from >>> (8 * i)) & 0xff) << (8 * i);
    }
    out.push(x >>> 0);
  }
  return out;
}

Deno.test("prefixSetWrites: no write tears what a program reads, and the set ends as written", () => {
  const sets = [
    encodePrefixHalf([setPrefix("192.0.2.0/25", 0), setPrefix("0.0.0.0/0", 2)]),
    encodePrefixHalf([setPrefix("203.0.113.1/32", 1, 1)]),
    encodePrefixHalf("trie"),
    encodePrefixHalf([]),
    encodePrefixHalf([setPrefix("192.0.2.0/25", 0), setPrefix("0.0.0.0/0", 2)]),
  ];
  let v: Uint8Array = new Uint8Array(PREFIX_SET_LAYOUT.size);
  let moves = 0;
  for (const half of sets) {
    const writes = prefixSetWrites(v, half);
    deepStrictEqual(writes.length, 4);
    for (const next of writes) {
      const changed = [...next.keys()].filter((i) => next[i] !== v[i]);
      const count = H.fields.count.offset;
      if (changed.some((i) => i < count + 4)) {
        ok(changed.every((i) => i < count + 4), "a count word changes alone");
        // a reader may see any byte-wise mixture of the old and the new count word
        const [a, b] = [u32(v, count), u32(next, count)];
        for (const x of mixtures(a, b)) {
          ok(x === a || x === b || x > PREFIX_SET_MAX, `torn count ${x.toString(16)} reads a set`);
        }
      } else {
        const r = readHalf(v), from = r * H.size;
        ok(
          changed.every((i) => i < from || i >= from + H.size),
          "the half being read is left alone",
        );
      }
      v = next;
    }
    deepStrictEqual(readHalf(v), 0, "the programs read half[0] again");
    const gen = H.fields.gen.offset;
    deepStrictEqual(
      hex(v.subarray(0, H.size)).slice(0, gen * 2) + hex(v.subarray(gen + 4, H.size)),
      hex(half).slice(0, gen * 2) + hex(half.subarray(gen + 4)),
    );
    moves++;
    deepStrictEqual(u32(v, gen), moves, "half[0]'s generation moved");
  }
  deepStrictEqual(prefixSetWrites(v, sets[sets.length - 1]), [], "unchanged: nothing written");
});

/** The flags of the longest prefix of `trie` holding addr (what an LPM trie answers). */
function lpm(trie: PrefixEntry[], addr: Uint8Array): number {
  let best = -1, flags = 0;
  for (const q of trie) {
    if (q.prefixLen > best && cidrContains(q, addr)) [best, flags] = [q.prefixLen, q.flags];
  }
  return flags;
}

Deno.test("mergePrefixes: the first prefix of the set holding an address (longest first) gives what each trie's longest match gives", () => {
  let seed = 0x39;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let round = 0; round < 200; round++) {
    // nested prefixes of 10.0.0.0/8 (tests' addresses stay in the 8 bits below the /8 anyway)
    const prefix = (): PrefixEntry => {
      const len = 8 + Math.floor(rnd() * 17);
      const addr = new Uint8Array([10, Math.floor(rnd() * 4) << 6, Math.floor(rnd() * 256), 0]);
      return { family: 4, addr, prefixLen: len, flags: 1 + Math.floor(rnd() * 7) };
    };
    const ext = Array.from({ length: Math.floor(rnd() * 6) }, prefix);
    const dest = Array.from({ length: Math.floor(rnd() * 6) }, prefix);
    if (rnd() < 0.5 && ext.length) dest.push({ ...ext[0], flags: 5 }); // one prefix in both
    const set = mergePrefixes(ext, dest).sort((x, y) => y.prefixLen - x.prefixLen);
    ok(set.length <= ext.length + dest.length);
    for (let k = 0; k < 64; k++) {
      const a = new Uint8Array([10, Math.floor(rnd() * 256), Math.floor(rnd() * 256), 7]);
      const first = set.find((p) => lpm([{ ...p, flags: 1 }], a) === 1);
      deepStrictEqual(
        [first?.ext ?? 0, first?.dest ?? 0],
        [lpm(ext, a), lpm(dest, a)],
        `${a.join(".")} in ${JSON.stringify(set.map((p) => [p.addr.join("."), p.prefixLen]))}`,
      );
    }
  }
});
