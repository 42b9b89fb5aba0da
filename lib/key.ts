/**
 * Text keys of plain values, for comparing and indexing them: configurations, plans, rules.
 * @module
 */

/** `value` as JSON, byte arrays as arrays of numbers (so equal bytes give equal keys). */
export function textKey(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v));
}
