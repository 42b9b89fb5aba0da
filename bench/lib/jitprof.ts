/**
 * Maps the samples of a CPU profile that fall in a BPF program's JITed code to the program's
 * source lines: `perf record -a -e cpu-clock` (no hardware counters needed) and `perf script -F
 * ip,sym,symoff` name each sample `bpf_prog_<tag>_<function>+0x<offset>`; the program's JIT
 * layout and line info (lib/ffi/libbpf.ts, progJitInfo) place the offset on a line-info record,
 * and `bpftool prog dump xlated linum` names that record's source line. How stop 37 found where a
 * new mapping waits (docs/performance-history.md).
 * @module
 */
import type { ProgJitInfo } from "../../lib/ffi/libbpf.ts";

/** A program's functions and the source line of each xlated instruction, from bpftool's dump. */
export interface XlatedDump {
  /** Function names in the order of the program's functions (main program first). */
  funcs: string[];
  /** Xlated instruction index → its source line (`text [file:line]`, the file's base name). */
  source: Map<number, string>;
}

/** `bpftool prog dump xlated id ID` of a loaded program (with `linum`, its source lines). */
export async function dumpXlated(id: number, linum = true): Promise<string> {
  const out = await new Deno.Command("bpftool", {
    args: ["prog", "dump", "xlated", "id", String(id), ...(linum ? ["linum"] : [])],
  }).output();
  if (!out.success) {
    throw new Error(`bpftool prog dump xlated id ${id}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Parses `bpftool prog dump xlated id ID linum`. */
export function parseXlated(text: string): XlatedDump {
  const funcs: string[] = [];
  const source = new Map<number, string>();
  let line = "?";
  for (const l of text.split("\n")) {
    const f = /^\S.*?(\w+)\(.*\):$/.exec(l);
    if (f && !l.startsWith(";")) {
      funcs.push(f[1]);
      continue;
    }
    if (l.startsWith("; ")) {
      line = l.slice(2).replace(/\s*\[file:\S*?([^/\s]+) line_num:(\d+)[^\]]*\]$/, " [$1:$2]");
      continue;
    }
    const insn = /^\s*(\d+):/.exec(l);
    if (insn && !source.has(Number(insn[1]))) source.set(Number(insn[1]), line);
  }
  return { funcs, source };
}

/** Samples of one source line of one function. */
export interface LineSamples {
  func: string;
  source: string;
  samples: number;
}

/** What {@link attribute} found. */
export interface Attribution {
  /** Samples in the program's functions. */
  total: number;
  /** Samples per function. */
  perFunc: Map<string, number>;
  /** Samples per source line, most first. */
  lines: LineSamples[];
}

const SAMPLE = /bpf_prog_([0-9a-f]+)_(\w+)\+0x([0-9a-f]+)/;

/**
 * Attributes `perf script` lines to the source lines of the program described by `info` and
 * `xl`. A function is known by its name and, but for the main program (whose symbol carries the
 * program's tag), its tag, so that another program's function of the same name (ingress's copy
 * of a global function, say) is left out. Offsets come from the symbol, so samples taken while an
 * earlier load of the same object ran count as well.
 */
export function attribute(info: ProgJitInfo, xl: XlatedDump, perfLines: string[]): Attribution {
  const order = info.lineAddr.map((a, i) => [a, i] as const).sort((x, y) =>
    x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0
  );
  const counts = new Map<string, LineSamples>();
  const perFunc = new Map<string, number>();
  let total = 0;
  for (const l of perfLines) {
    const m = SAMPLE.exec(l);
    if (!m) continue;
    const fi = xl.funcs.indexOf(m[2]);
    if (fi < 0 || fi >= info.ksyms.length) continue;
    if (fi > 0 && info.funcTags[fi] !== undefined && info.funcTags[fi] !== m[1]) continue;
    const at = info.ksyms[fi] + BigInt(parseInt(m[3], 16));
    let lo = 0, hi = order.length - 1, j = -1;
    while (lo <= hi) { // the last line-info record starting at or before the address
      const mid = (lo + hi) >> 1;
      if (order[mid][0] <= at) (j = mid, lo = mid + 1);
      else hi = mid - 1;
    }
    const source = j < 0 ? "?" : xl.source.get(info.lineInsn[order[j][1]]) ?? "?";
    const key = `${m[2]}\0${source}`;
    const c = counts.get(key) ?? { func: m[2], source, samples: 0 };
    c.samples++;
    counts.set(key, c);
    perFunc.set(m[2], (perFunc.get(m[2]) ?? 0) + 1);
    total++;
  }
  const lines = [...counts.values()].sort((a, b) => b.samples - a.samples);
  return { total, perFunc, lines };
}

/** The report of an attribution: samples per function, then the `top` source lines. */
export function formatAttribution(a: Attribution, top: number): string {
  const pct = (n: number) => (100 * n / Math.max(a.total, 1)).toFixed(1).padStart(5);
  const out = [`${a.total} samples in the program`];
  for (const [f, n] of [...a.perFunc].sort((x, y) => y[1] - x[1])) {
    out.push(`${String(n).padStart(7)} ${pct(n)} %  ${f}`);
  }
  out.push("");
  for (const l of a.lines.slice(0, top)) {
    out.push(`${String(l.samples).padStart(7)} ${pct(l.samples)} %  ${l.func}: ${l.source}`);
  }
  return out.join("\n");
}
