/**
 * The prefix sets (`map_prefix_sets`, bpf/lib/prefixes.h): each family's prefixes of
 * `map_externals` and `map_dest_config` with their EXT_* flags, longest first. The programs scan
 * them for the lookups that need only the flags (every new flow's source and destination checks)
 * instead of walking the tries' nodes. {@link syncPrefixSets} writes them from what the tries
 * hold: the entries applyPlan has just written, or the tries read back after a direct change.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import {
  addr16,
  decodeLpmKey,
  EXTERNAL_CONFIG_LAYOUT,
  LPM_KEY_LAYOUT,
  PREFIX_ENTRY_LAYOUT,
  PREFIX_HALF_LAYOUT,
  PREFIX_SET_LAYOUT,
  PREFIX_SET_MAX,
} from "./codec.ts";
import type { NatMaps } from "./loader.ts";
import { cidrContains, maskInPlace } from "../config/cidr.ts";
import type { Cidr } from "../config/types.ts";

/** One prefix of a trie, with its EXT_* flags. */
export interface PrefixEntry extends Cidr {
  /** EXT_* flags. */
  flags: number;
}

/**
 * One prefix of a set: a prefix of either trie, with the flags each trie gives the addresses
 * for which it is the most specific prefix of the set.
 */
export interface SetPrefix extends Cidr {
  /** `map_externals`' EXT_* flags. */
  ext: number;
  /** `map_dest_config`'s EXT_* flags. */
  dest: number;
}

/** Set indexes: one set per family. */
export const PREFIX_SET = { 4: 0, 6: 1 } as const;

/** A half's count when its tries have more than PREFIX_SET_MAX prefixes: the programs ask them. */
export const PREFIX_SET_TRIE = 0xffffffff;
/** Half[0]'s count while it is rewritten: the programs read half[1]. */
export const PREFIX_SET_MOVED = 0xfffffffe;
/** Where `map_dest_config`'s flags sit in an entry's flags word (PREFIX_DEST_SHIFT). */
const DEST_SHIFT = 8;

/** The flags of the longest prefix of `trie` holding p, 0 when none does. */
function longest(trie: PrefixEntry[], p: Cidr): number {
  let best = -1, flags = 0;
  for (const q of trie) {
    if (q.prefixLen > best && cidrContains(q, p)) [best, flags] = [q.prefixLen, q.flags];
  }
  return flags;
}

/**
 * One family's set from its two tries: every prefix of either, with what each trie answers for
 * it. Prefixes that hold one address are nested, so an address's most specific prefix in the
 * set, P, tells both answers: a trie's longest prefix holding the address is its longest
 * holding P.
 */
export function mergePrefixes(ext: PrefixEntry[], dest: PrefixEntry[]): SetPrefix[] {
  const all = new Map<string, Cidr>();
  for (const e of [...ext, ...dest]) {
    const addr = e.addr.slice();
    maskInPlace(addr, e.prefixLen);
    all.set(`${addr.join(".")}/${e.prefixLen}`, { family: e.family, addr, prefixLen: e.prefixLen });
  }
  return [...all.values()].map((p) => ({ ...p, ext: longest(ext, p), dest: longest(dest, p) }));
}

/**
 * Encodes one half of a set (`struct prefix_half`): the prefixes longest first, host bits
 * cleared, each with its mask and both flags; `"trie"` (or more than PREFIX_SET_MAX prefixes)
 * sends the programs to the tries.
 */
export function encodePrefixHalf(entries: SetPrefix[] | "trie"): Uint8Array {
  const b = new Uint8Array(PREFIX_HALF_LAYOUT.size);
  const v = new DataView(b.buffer);
  if (entries === "trie" || entries.length > PREFIX_SET_MAX) {
    v.setUint32(PREFIX_HALF_LAYOUT.fields.count.offset, PREFIX_SET_TRIE, true);
    return b;
  }
  const sorted = [...entries].sort((x, y) => y.prefixLen - x.prefixLen);
  v.setUint32(PREFIX_HALF_LAYOUT.fields.count.offset, sorted.length, true);
  const E = PREFIX_ENTRY_LAYOUT;
  sorted.forEach((e, i) => {
    const o = PREFIX_HALF_LAYOUT.fields.e.offset + i * E.size;
    const addr = addr16(e.addr), mask = new Uint8Array(16).fill(0xff);
    maskInPlace(addr, e.prefixLen);
    maskInPlace(mask, e.prefixLen);
    b.set(addr, o + E.fields.addr.offset);
    b.set(mask, o + E.fields.mask.offset);
    v.setUint32(o + E.fields.flags.offset, e.ext | e.dest << DEST_SHIFT, true);
  });
  return b;
}

/** One trie entry: its key (`struct lpm_key`) and value (the trie's own). */
export type LpmEntry = readonly [key: Uint8Array, value: Uint8Array];

/**
 * Each family's set half ({@link encodePrefixHalf}, by {@link PREFIX_SET} index) from the entries
 * of `map_externals` (values `struct external_config`) and `map_dest_config` (`__u32` flags).
 */
export function prefixHalves(ext: Iterable<LpmEntry>, dest: Iterable<LpmEntry>): Uint8Array[] {
  const sets = { 4: { ext: [], dest: [] }, 6: { ext: [], dest: [] } } as Record<
    4 | 6,
    { ext: PrefixEntry[]; dest: PrefixEntry[] }
  >;
  for (const [entries, isDest] of [[ext, false], [dest, true]] as const) {
    for (const [key, value] of entries) {
      const k = decodeLpmKey(key);
      const flags = isDest
        ? new DataView(value.buffer, value.byteOffset).getUint32(0, true)
        : value[EXTERNAL_CONFIG_LAYOUT.fields.flags.offset];
      sets[k.family][isDest ? "dest" : "ext"].push({ ...k, flags });
    }
  }
  return ([4, 6] as const).map((f) => encodePrefixHalf(mergePrefixes(sets[f].ext, sets[f].dest)));
}

/**
 * The values to write, in order, to make `half` (from {@link encodePrefixHalf}) the content of
 * a set whose value is `cur`: each changes what a program may be reading by one count word at
 * most (bpf/einat.h). The new set goes into half[1]; half[0]'s count to PREFIX_SET_MOVED (the
 * programs read half[1]); half[0] is rewritten, its generation moved; its count is set (back to
 * half[0]). None when the set already reads so.
 */
export function prefixSetWrites(cur: Uint8Array, half: Uint8Array): Uint8Array[] {
  const H = PREFIX_HALF_LAYOUT, count = H.fields.count.offset, gen = H.fields.gen.offset;
  const v = cur.slice();
  const dv = new DataView(v.buffer);
  if (half.every((x, i) => (i >= gen && i < gen + 4) || v[i] === x)) return [];
  const out: Uint8Array[] = [];
  const rewrite = (at: number) => {
    const g = dv.getUint32(at + gen, true);
    v.set(half, at);
    dv.setUint32(at + gen, (g + 1) >>> 0, true);
  };
  rewrite(H.size);
  out.push(v.slice());
  dv.setUint32(count, PREFIX_SET_MOVED, true);
  out.push(v.slice());
  const n = new DataView(half.buffer, half.byteOffset).getUint32(count, true);
  rewrite(0);
  dv.setUint32(count, PREFIX_SET_MOVED, true);
  out.push(v.slice());
  dv.setUint32(count, n, true);
  out.push(v.slice());
  return out;
}

/** Makes `half` the content of set `idx` ({@link prefixSetWrites}). */
export function writePrefixSet(fd: number, idx: number, half: Uint8Array): void {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, idx, true);
  const cur = bpf.mapLookup(fd, key, PREFIX_SET_LAYOUT.size) ??
    new Uint8Array(PREFIX_SET_LAYOUT.size);
  for (const v of prefixSetWrites(cur, half)) bpf.mapUpdate(fd, key, v);
}

/**
 * Writes both families' prefix sets: from the entries the tries were just given (applyPlan), or
 * else from the tries' contents, read back (after a trie was changed directly, as the bench does).
 */
export function syncPrefixSets(
  maps: Pick<NatMaps, "externals" | "destConfig" | "prefixSets">,
  written?: { ext: Iterable<LpmEntry>; dest: Iterable<LpmEntry> },
): void {
  const read = (fd: number, size: number) =>
    [...bpf.mapEntries(fd, LPM_KEY_LAYOUT.size, size)].map((e) => [e.key, e.value] as const);
  const halves = written
    ? prefixHalves(written.ext, written.dest)
    : prefixHalves(read(maps.externals, EXTERNAL_CONFIG_LAYOUT.size), read(maps.destConfig, 4));
  halves.forEach((half, idx) => writePrefixSet(maps.prefixSets, idx, half));
}
