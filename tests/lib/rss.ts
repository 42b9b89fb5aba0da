/**
 * A process's resident memory, as `/proc/PID/status` gives it.
 * @module
 */

/** RSS in KiB: all of it, its anonymous and file-backed parts, and the peak since start. */
export interface Rss {
  rss: number;
  anon: number;
  file: number;
  hwm: number;
}

/** Reads `VmRSS`, `RssAnon`, `RssFile` and `VmHWM` of `pid` (NaN for a line that is missing). */
export function rssKb(pid: number): Rss {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const get = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: get("VmRSS"), anon: get("RssAnon"), file: get("RssFile"), hwm: get("VmHWM") };
}
