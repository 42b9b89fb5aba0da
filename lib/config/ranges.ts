/**
 * Port and ICMP identifier ranges (`tcp_ranges = ["20000-29999"]`).
 *
 * Accepted element forms: `"20000-29999"` (what einat-ebpf accepts), plus
 * `"53"` and `53` for a single value. A bare string or number is taken as a
 * one-element list. TCP/UDP ports must lie in 1..65535 (einat-ebpf rejects 0
 * there); ICMP identifiers in 0..65535. `start > end` is an error.
 *
 * After parsing, ranges are sorted and touching ranges (`1000-1999` and
 * `2000-2999`) are merged, as einat-ebpf does; the merged list may hold at most
 * {@link MAX_RANGES} entries, the size of the per-external array in the BPF
 * maps. Overlapping ranges are merged too, as einat-ebpf does, but not
 * silently: each overlap is reported through `options.warn` (it may be a
 * typo), naming both ranges and what they became.
 * @module
 */

import { ConfigError, type PortRange } from "./types.ts";

/** Maximum number of (merged) ranges per protocol, as in einat-ebpf's BPF maps. */
export const MAX_RANGES = 4;

/** `"port"`: TCP/UDP ports, 1..65535. `"icmp"`: ICMP query ids, 0..65535. */
export type RangeKind = "port" | "icmp";

/** Where a value came from, for error messages. */
export interface RangeSource {
  /** Key path, e.g. `defaults.tcp_ranges` or `--ports`. */
  path: string;
  /** File the value came from, if any. */
  file?: string;
  /** Append `[i]` to `path` for errors about one element (default true). */
  indexElements?: boolean;
}

/** Options for {@link parseRanges}. */
export interface ParseRangesOptions {
  /** Told of each overlap (`path`: the later element's), which is merged all the same. */
  warn?: (path: string, message: string) => void;
}

function lowest(kind: RangeKind): number {
  return kind === "port" ? 1 : 0;
}

function describeKind(kind: RangeKind): string {
  return kind === "port" ? "a port number from 1 to 65535" : "an ICMP identifier from 0 to 65535";
}

const NUM = /^(0|[1-9][0-9]*)$/;

/**
 * Parses one range element (`"20000-29999"`, `"53"` or `53`).
 * @throws {RangeError} with a message describing what is wrong.
 */
export function parseRange(value: unknown, kind: RangeKind): PortRange {
  const min = lowest(kind);
  const example = kind === "port" ? `"20000-29999"` : `"0-9999"`;
  let start: number, end: number;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) {
      throw new RangeError(`${value} is not an integer; expected ${describeKind(kind)}`);
    }
    start = end = value;
  } else if (typeof value === "string") {
    const text = value.trim();
    const parts = text.split("-");
    if (parts.length > 2 || !parts.every((p) => NUM.test(p.trim()))) {
      throw new RangeError(
        `"${value}" is not a range; expected "start-end" such as ${example}, or a single number`,
      );
    }
    start = Number(parts[0].trim());
    end = Number((parts[1] ?? parts[0]).trim());
  } else {
    throw new RangeError(
      `expected a range string such as ${example}, got ${
        Array.isArray(value) ? "an array" : typeof value === "object" ? "a table" : typeof value
      }`,
    );
  }
  for (const n of [start, end]) {
    if (n < min || n > 65535) {
      const zero = n === 0 && kind === "port"
        ? " (port 0 cannot be mapped; start TCP/UDP ranges at 1 or above)"
        : "";
      throw new RangeError(
        `${JSON.stringify(value)} contains ${n}, outside ${min}-65535${zero}; expected ${
          describeKind(kind)
        }`,
      );
    }
  }
  if (start > end) {
    throw new RangeError(
      `"${value}" is reversed (start ${start} > end ${end}); did you mean "${end}-${start}"?`,
    );
  }
  return { start, end };
}

/** Sorts ranges and merges overlapping or touching ones. */
export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = ranges.map((r) => ({ ...r })).sort((a, b) => a.start - b.start || a.end - b.end);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end + 1) {
      last.end = Math.max(last.end, r.end);
    } else {
      out.push(r);
    }
  }
  return out;
}

/** Formats ranges as `20000-29999, 40000-49999` (`none` for an empty list). */
export function formatRanges(ranges: readonly PortRange[]): string {
  if (ranges.length === 0) return "none";
  return ranges.map((r) => r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`).join(", ");
}

/**
 * Parses a range list (or a single element), validates it and returns the
 * sorted, merged ranges. An empty list is valid and means "disabled".
 * @throws {ConfigError} naming `source.path` (and the element index).
 */
export function parseRanges(
  value: unknown,
  kind: RangeKind,
  source: RangeSource,
  options: ParseRangesOptions = {},
): PortRange[] {
  const isList = Array.isArray(value);
  const items: unknown[] = isList ? value as unknown[] : [value];
  const at = (i: number) =>
    isList && source.indexElements !== false ? `${source.path}[${i}]` : source.path;
  const parsed = items.map((item, i) => {
    try {
      return parseRange(item, kind);
    } catch (e) {
      throw new ConfigError(at(i), (e as Error).message, source.file);
    }
  });
  const merged = mergeRanges(parsed);
  for (let i = 0; i < parsed.length && options.warn; i++) {
    for (let j = 0; j < i; j++) {
      const a = parsed[j], b = parsed[i];
      if (a.start <= b.end && b.start <= a.end) {
        options.warn(
          at(i),
          `range "${formatRanges([b])}" overlaps "${formatRanges([a])}" (element ${j}); ` +
            `taken as "${formatRanges(merged)}", as einat-ebpf does`,
        );
      }
    }
  }
  if (merged.length > MAX_RANGES) {
    throw new ConfigError(
      source.path,
      `${merged.length} separate ranges (${formatRanges(merged)}) but at most ${MAX_RANGES} ` +
        `are supported; join or drop some`,
      source.file,
    );
  }
  return merged;
}

/** True when `port` lies in one of `ranges`. */
export function inRanges(port: number, ranges: readonly PortRange[]): boolean {
  return ranges.some((r) => port >= r.start && port <= r.end);
}

/** True when every value in `inner` is also covered by `outer`. */
export function rangesContain(outer: readonly PortRange[], inner: readonly PortRange[]): boolean {
  const o = mergeRanges(outer);
  return mergeRanges(inner).every((r) => o.some((x) => x.start <= r.start && r.end <= x.end));
}

/** The parts of `ranges` inside `other` (their intersection), in order. */
export function intersectRanges(ranges: readonly PortRange[], other: PortRange): PortRange[] {
  const out: PortRange[] = [];
  for (const r of ranges) {
    const start = Math.max(r.start, other.start), end = Math.min(r.end, other.end);
    if (start <= end) out.push({ start, end });
  }
  return out;
}

/**
 * Parses `net.ipv4.ip_local_port_range` (`"32768\t60999"`): the ports the kernel picks for the
 * router's own connections (IPv6 too). Null when the text is not two ports.
 */
export function parseLocalPortRange(text: string): PortRange | null {
  const m = text.trim().match(/^(\d+)\s+(\d+)$/);
  if (!m) return null;
  const start = Number(m[1]), end = Number(m[2]);
  return start >= 1 && start <= end && end <= 65535 ? { start, end } : null;
}
