/**
 * Rows in the order of fixed-width byte keys, for `einat show`'s hundreds of thousands of rows:
 * each row's key is written into one growing buffer as the row is made, and a stable LSD radix
 * sort orders the rows by it, byte by byte from the last, skipping the bytes every key shares
 * (the zero padding of IPv4 addresses, one external address). With a string key of one character
 * per byte instead, reading 300,000 sessions took 1.8-3.7 s against 1.0-2.1 s (stop 47).
 * @module
 */

/** Rows being collected with their keys (see {@link keyedRows}). */
export interface KeyedRows<T> {
  /** Bytes per key. */
  readonly width: number;
  /** The rows, in the order they were added. */
  readonly rows: T[];
  /** Row i's key at `i * width`. Grown (replaced) by {@link addRow}. */
  keys: Uint8Array;
}

/** An empty collection of rows whose keys are `width` bytes. */
export function keyedRows<T>(width: number): KeyedRows<T> {
  if (!Number.isInteger(width) || width < 1) throw new RangeError(`key width ${width}`);
  return { width, rows: [], keys: new Uint8Array(width * 256) };
}

/**
 * Adds `row`; returns the offset in `k.keys` where the caller writes its key (the bytes there are
 * zero). Read `k.keys` after the call: it may have been replaced by a larger buffer.
 */
export function addRow<T>(k: KeyedRows<T>, row: T): number {
  const at = k.rows.length * k.width;
  if (at + k.width > k.keys.length) {
    const grown = new Uint8Array(k.keys.length * 2);
    grown.set(k.keys);
    k.keys = grown;
  }
  k.rows.push(row);
  return at;
}

/**
 * The rows ordered by their keys, compared byte by byte as unsigned numbers (as strings of one
 * character per byte compare); rows with equal keys keep the order they were added in.
 */
export function sortedRows<T>(k: KeyedRows<T>): T[] {
  const n = k.rows.length, w = k.width, keys = k.keys;
  let order = new Uint32Array(n), spare = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const count = new Uint32Array(256);
  for (let col = w - 1; col >= 0; col--) {
    count.fill(0);
    for (let i = 0, at = col; i < n; i++, at += w) count[keys[at]]++;
    if (n === 0 || count[keys[col]] === n) continue; // every key has this byte
    for (let b = 0, sum = 0; b < 256; b++) {
      const c = count[b];
      count[b] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const r = order[i];
      spare[count[keys[r * w + col]]++] = r;
    }
    [order, spare] = [spare, order];
  }
  const out = new Array<T>(n);
  for (let i = 0; i < n; i++) out[i] = k.rows[order[i]];
  return out;
}
