/**
 * Memory: gives back what start-up and reconciliations leave behind (V8's garbage, malloc's
 * free lists, the executable's clean file pages).
 *
 * Most of the daemon's RSS is the runtime's own binary: code and read-only data that start-up
 * (the dynamic loader's relocations, V8's snapshot, code run once) and an address change's
 * reconciliation (V8's optimizing compiler) read and then leave alone. They are clean file pages,
 * so `MADV_PAGEOUT` can take them out of the process: a page touched again is mapped back from
 * the page cache, or read from the file if it has left the cache. What this does not change is
 * the memory the daemon needs of its own (anonymous: V8's heap, malloc).
 *
 * Measured (kernel 6.18, ext4, a copy of the deno binary no other process maps): ~17 MB of the
 * process's mappings went at once, of it ~3-5.5 MB out of the page cache; the rest stays cached,
 * unmapped, which the kernel reclaims before mapped pages. Pages another process maps (a second
 * Deno process on the same binary) the kernel leaves mapped. One call costs 10-30 ms (the walk of
 * ~95 MB of mappings).
 * @module
 */

import * as libc from "./ffi/libc.ts";
import * as log from "./log.ts";

/** `MADV_PAGEOUT` (Linux 5.4): reclaim the range's pages now. */
export const MADV_PAGEOUT = 21;

/** One mapping of `/proc/<pid>/smaps`. */
export interface Mapping {
  start: bigint;
  end: bigint;
  /** `r-xp` and so on. */
  perms: string;
  /** The mapped file, or a pseudo-name such as `[heap]`, or "". */
  path: string;
  rssKb: number;
}

/** Parses `/proc/<pid>/smaps` (or `/proc/<pid>/maps`) text into its mappings. */
export function parseSmaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | null = null;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = {
        start: BigInt(`0x${head[1]}`),
        end: BigInt(`0x${head[2]}`),
        perms: head[3],
        path: head[4],
        rssKb: 0,
      };
      out.push(cur);
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && cur) cur.rssKb = Number(rss[1]);
  }
  return out;
}

/** The mappings of `exe` that cannot have been written: its code and read-only data. */
export function readOnlyMappingsOf(maps: Mapping[], exe: string): Mapping[] {
  return maps.filter((m) => m.path === exe && m.perms[1] !== "w" && m.perms[0] === "r");
}

/** What one page-out did. */
export interface PageOut {
  /** Mappings advised. */
  mappings: number;
  /** The first error (-errno), or 0. */
  error: number;
}

/**
 * Reclaims the running executable's read-only mappings (`MADV_PAGEOUT`). Pages the process
 * needs again come back from the file when touched.
 */
export function pageOutExecutable(): PageOut {
  // The kernel's name for the executable, as /proc/self/maps spells it (`/proc/self/exe`): no
  // realpath, which fails once the file is replaced under the running daemon (an upgrade), when
  // both read "PATH (deleted)".
  const exe = Deno.execPath();
  // maps, not smaps: smaps walks the page tables of every mapping (10-40 ms here).
  const maps = readOnlyMappingsOf(parseSmaps(Deno.readTextFileSync("/proc/self/maps")), exe);
  const r: PageOut = { mappings: 0, error: 0 };
  for (const m of maps) {
    const e = libc.madvise(m.start, m.end - m.start, MADV_PAGEOUT);
    if (e !== 0) {
      r.error ||= e;
      continue;
    }
    r.mappings++;
  }
  return r;
}

/**
 * Gives back what start-up or a reconciliation left: buffers it made, once collected, stay in
 * malloc's free lists, and the executable's pages it read stay mapped. Collects first when V8
 * exposes `gc` (the daemon runs with `--expose-gc`: deno.json's `start`, scripts/compile.sh),
 * then trims malloc, then pages the executable out. Measured in stop 21, when the purge still
 * read and wrote each binding from user space (bench memory, after a load's 10,000 bindings, 100
 * address changes): anonymous memory back at 19 MiB instead of 27 MiB.
 */
export function releaseMemory(): PageOut {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === "function") gc();
  libc.mallocTrim();
  let r: PageOut, why = "";
  try {
    r = pageOutExecutable();
  } catch (e) {
    r = { mappings: 0, error: -1 }; // never fatal: this runs after every reconciliation
    why = (e as Error).message;
  }
  if (r.error !== 0 && !pageOutWarned) {
    pageOutWarned = true; // once: the answer will not change
    log.warn("cannot page the executable out: RSS stays higher", {
      error: why || `errno ${-r.error} (MADV_PAGEOUT needs Linux 5.4)`,
    });
  }
  log.debug("memory released", { paged_out_mappings: r.mappings });
  return r;
}

let pageOutWarned = false;
