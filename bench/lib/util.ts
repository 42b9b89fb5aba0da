/**
 * Shared pieces of the benchmark suite: options, statistics, table printing and the
 * target (PASS/MISS) bookkeeping every part reports into.
 * @module
 */

/** The parts of the suite, in the order they run. */
export const PARTS = ["prog", "router", "startup", "scale", "memory"] as const;
/** One part of the suite. */
export type Part = typeof PARTS[number];

/** Options every part receives. */
export interface BenchOptions {
  /** Short runs (`--quick`). */
  quick: boolean;
  /** Tiny sizes for the smoke test: bounded seconds, figures not meaningful. */
  smoke?: boolean;
  /** Where progress lines go (default: stderr). */
  progress?: (line: string) => void;
}

/** One target of the brief, judged on a figure measured in this run. */
export interface Target {
  part: Part;
  name: string;
  /** The measured figure, in `unit`. */
  value: number | null;
  /** The limit, in `unit`. */
  limit: number;
  unit: string;
  /** "le": value ≤ limit passes; "ge": value ≥ limit passes. */
  cmp: "le" | "ge";
  /** Why there is no value (e.g. "n/a (NAT66 not implemented yet)"). */
  note?: string;
  /** Relative run-to-run noise of the value (0.3 = ±30 %), when known. */
  noise?: number;
}

/** Verdict of a target: PASS, MISS, or n/a when nothing was measured. */
export function verdict(t: Target): "PASS" | "MISS" | "n/a" {
  if (t.value === null || !Number.isFinite(t.value)) return "n/a";
  return (t.cmp === "le" ? t.value <= t.limit : t.value >= t.limit) ? "PASS" : "MISS";
}

/** A printed table: a title, column headers, rows of cells, notes below. */
export interface Table {
  title: string;
  head: string[];
  rows: string[][];
  notes?: string[];
}

/** What a part hands back: its tables, targets, README lines and raw figures. */
export interface PartResult {
  part: Part;
  tables: Table[];
  targets: Target[];
  /** Rows of the compact README table: [figure, value, baseline, ratio/target]. */
  summary: string[][];
  /** Raw figures for `--json`. */
  data: Record<string, unknown>;
}

/** Median of a non-empty list (mean of the two middle values for even lengths). */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The p-th percentile (0-100) by nearest rank. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

/** Formats a number with `digits` decimals, or "n/a". */
export function fmt(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
  return x.toFixed(digits);
}

/** Formats a count with SI suffixes (k, M, G). */
export function si(x: number | null | undefined, digits = 2): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
  const a = Math.abs(x);
  if (a >= 1e9) return `${(x / 1e9).toFixed(digits)} G`;
  if (a >= 1e6) return `${(x / 1e6).toFixed(digits)} M`;
  if (a >= 1e3) return `${(x / 1e3).toFixed(digits)} k`;
  return x.toFixed(0);
}

/** Formats bytes as B / KiB / MiB. */
export function bytes(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
  if (Math.abs(x) >= 1 << 20) return `${(x / (1 << 20)).toFixed(1)} MiB`;
  if (Math.abs(x) >= 1 << 10) return `${(x / (1 << 10)).toFixed(1)} KiB`;
  return `${x.toFixed(0)} B`;
}

/** A ratio `a / b` as "0.97×", or "n/a". */
export function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "n/a";
  return `${(a / b).toFixed(2)}×`;
}

/** Renders a table as aligned Markdown. */
export function renderTable(t: Table): string {
  const widths = t.head.map((h, i) =>
    Math.max(h.length, ...t.rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(" | ")
    } |`;
  const sep = `|${
    widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")
  }|`;
  const out = [`### ${t.title}`, "", line(t.head), sep, ...t.rows.map(line)];
  if (t.notes?.length) out.push("", ...t.notes.map((n) => `- ${n}`));
  return out.join("\n");
}

/** Renders the targets as a table with PASS/MISS. */
export function renderTargets(targets: Target[]): string {
  const rows = targets.map((t) => {
    const v = verdict(t);
    const digits = t.unit === "×" ? 2 : ["insns", "B", "refusals"].includes(t.unit) ? 0 : 1;
    const value = t.value === null ? (t.note ?? "n/a") : `${fmt(t.value, digits)} ${t.unit}`;
    // A verdict the noise could flip is marked, so nobody reads a coin toss as a result.
    const unsure = t.noise !== undefined && t.value !== null &&
      Math.abs(t.value - t.limit) <= Math.abs(t.value) * t.noise;
    return [
      `${t.part}: ${t.name}`,
      value,
      `${t.cmp === "le" ? "≤" : "≥"} ${t.limit} ${t.unit}`,
      unsure ? `${v} (within ±${fmt(t.noise! * 100, 0)}% noise)` : v,
    ];
  });
  return renderTable({ title: "Targets", head: ["target", "measured", "limit", "verdict"], rows });
}

/** Writes a progress line to stderr (or the options' sink). */
export function progress(o: BenchOptions, line: string): void {
  if (o.progress) o.progress(line);
  else console.error(`[bench] ${line}`);
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A shuffled copy (Fisher-Yates) using `rand` (default Math.random). */
export function shuffled<T>(xs: T[], rand = Math.random): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A small deterministic PRNG (mulberry32), so fills are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
