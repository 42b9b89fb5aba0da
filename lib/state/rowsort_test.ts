import { assert, assertEquals, assertThrows } from "../../tests/lib/assert.ts";
import { addRow, keyedRows, sortedRows } from "./rowsort.ts";

/** A small seeded generator (mulberry32), so a failure can be run again. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Sorts rows as read.ts did before: a string of one character per key byte, stable sort. */
function byStringKey(rows: { id: number; key: number[] }[]): number[] {
  return rows
    .map((r) => ({ id: r.id, s: String.fromCharCode(...r.key) }))
    .sort((a, b) => a.s < b.s ? -1 : a.s > b.s ? 1 : 0)
    .map((r) => r.id);
}

Deno.test("rowsort: the order of one-character-per-byte string keys, equal keys in the order added", () => {
  for (
    const [seed, n, width] of [[1, 0, 5], [2, 1, 3], [3, 300, 39], [4, 5000, 20], [5, 2000, 1]]
  ) {
    const next = rng(seed);
    const k = keyedRows<number>(width);
    const ref: { id: number; key: number[] }[] = [];
    for (let id = 0; id < n; id++) {
      // Few values per byte, so equal keys and shared bytes occur; some columns constant.
      const key = Array.from(
        { length: width },
        (_, c) => c % 4 === 0 ? 7 : Math.floor(next() * (c % 3 === 0 ? 2 : 256)),
      );
      const at = addRow(k, id);
      k.keys.set(key, at);
      ref.push({ id, key });
    }
    assertEquals(sortedRows(k), byStringKey(ref), `seed ${seed}, ${n} rows of ${width} bytes`);
  }
});

Deno.test("rowsort: bytes compare unsigned, the first byte first; the buffer grows and keeps the keys written", () => {
  const k = keyedRows<string>(2);
  const rows: [string, number, number][] = [["c", 0x80, 0], ["a", 0x01, 0xff], ["b", 0x01, 0xff]];
  for (let i = 0; i < 1000; i++) rows.push([`z${i}`, 0xff, i & 0xff]);
  for (const [id, b0, b1] of rows) {
    const at = addRow(k, id);
    k.keys[at] = b0;
    k.keys[at + 1] = b1;
  }
  assert(k.keys.length >= 2 * rows.length, "grown past its first 256 rows");
  const out = sortedRows(k);
  assertEquals(out.slice(0, 3), ["a", "b", "c"], "0x01 before 0x80, equal keys as added");
  assertEquals(out[3], "z0");
  assertEquals(out.length, rows.length);
  assertEquals(sortedRows(keyedRows<string>(4)), []);
  assertThrows(() => keyedRows(0), /key width 0/);
});
