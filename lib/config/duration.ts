/**
 * Durations such as `"2s"`, `"5m"`, `"120m"`, `"2h"`, `"1h30m"`.
 *
 * einat-ebpf parses timeouts with fundu's default parser: a decimal number
 * (fraction and exponent allowed) followed by an optional unit, a missing unit
 * meaning seconds (`"300"` = 5 minutes). Its units are `ns`, `Ms` (micro),
 * `ms`, `s`, `m`, `h`, `d` and `w` — case-sensitive, so `"1M"` is rejected and
 * `"1Ms"` is a microsecond. This module accepts all of that and, as
 * extensions, `us`/`µs` for microseconds, several unit-carrying parts in a row
 * (`"1h30m"`) and a bare TOML number (seconds). Results are milliseconds,
 * rounded to the nearest millisecond.
 * @module
 */

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  Ms: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const PART = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Zµ]*)/y;

const HINT = `expected a number with a unit such as "2s", "5m", "2h" or "1h30m" ` +
  `(units: ns, us, ms, s, m, h, d, w; no unit means seconds)`;

/**
 * Parses a duration and returns milliseconds.
 * @param value a duration string, or a non-negative number of seconds.
 * @throws {SyntaxError} for malformed text, {RangeError} for negative or
 * non-finite values.
 */
export function parseDuration(value: string | number): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(`${value} is not a valid number of seconds; ${HINT}`);
    }
    return Math.round(value * 1000);
  }
  const text = value.trim();
  if (text.startsWith("-")) throw new RangeError(`"${value}" is negative; ${HINT}`);
  const body = text.startsWith("+") ? text.slice(1) : text;
  if (body === "") throw new SyntaxError(`"${value}" is empty; ${HINT}`);
  let ms = 0;
  let pos = 0;
  let parts = 0;
  let lastUnitless = false;
  while (pos < body.length) {
    PART.lastIndex = pos;
    const m = PART.exec(body);
    if (!m || m[0] === "") throw new SyntaxError(`"${value}" is not a duration; ${HINT}`);
    const [, num, exp, unit] = m;
    if (unit !== "" && !(unit in UNIT_MS)) {
      const hint = unit === "M" || unit === "y" || unit === "min" || unit === "sec"
        ? ` ("${unit}" is not a unit here)`
        : "";
      throw new SyntaxError(`"${value}" has an unknown unit "${unit}"${hint}; ${HINT}`);
    }
    if (lastUnitless) throw new SyntaxError(`"${value}" is not a duration; ${HINT}`);
    lastUnitless = unit === "";
    const n = Number(num) * 10 ** Number(exp ?? 0);
    ms += n * (unit === "" ? 1000 : UNIT_MS[unit]);
    pos = PART.lastIndex;
    parts++;
  }
  if (parts > 1 && lastUnitless) {
    throw new SyntaxError(`"${value}" ends in a number without a unit; ${HINT}`);
  }
  if (!Number.isFinite(ms)) throw new RangeError(`"${value}" is too large; ${HINT}`);
  return Math.round(ms);
}

/** Formats milliseconds compactly: `7200000` → `"2h"`, `90000` → `"1m30s"`, `1500` → `"1500ms"`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms % 1000 !== 0) return `${ms}ms`;
  let s = ms / 1000;
  let out = "";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]] as const) {
    if (s >= size) {
      out += `${Math.floor(s / size)}${unit}`;
      s %= size;
    }
  }
  return out;
}
