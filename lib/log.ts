/**
 * A thin leveled logger writing one line per event to stderr:
 * `2026-11-25T12:00:00.000Z INFO  attached ingress filter ifname=wan0 handle=0x1`.
 * @module
 */

/** Log levels in increasing severity. */
export type Level = "debug" | "info" | "warn" | "error";

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
// Until the command line is read (lib/config/cli.ts checks $EINAT_LOG and --log): $EINAT_LOG
// in any case, info otherwise.
let threshold: number = ORDER[(Deno.env.get("EINAT_LOG")?.toLowerCase() as Level) ?? "info"] ??
  ORDER.info;
const encoder = new TextEncoder();
// Set once a write to stderr failed (e.g. EPIPE: the reader of a stderr pipe went away):
// later lines are dropped instead of failing again.
let broken = false;

/** Sets the lowest level that is printed. */
export function setLevel(level: Level): void {
  threshold = ORDER[level];
}

/** True when `level` would be printed. */
export function enabled(level: Level): boolean {
  return ORDER[level] >= threshold;
}

function fmtValue(v: unknown): string {
  const s = typeof v === "string" ? v : typeof v === "bigint" ? v.toString() : JSON.stringify(v);
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

/**
 * Writes one log line when `level` is enabled. Never throws: logging runs inside
 * shutdown and error handling, which must go on when stderr is gone (a closed pipe,
 * a full disk); after a failed write, lines are dropped.
 */
export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (broken || !enabled(level)) return;
  let kv: string;
  try {
    kv = Object.entries(fields).map(([k, v]) => ` ${k}=${fmtValue(v)}`).join("");
  } catch (e) {
    kv = ` fields=${JSON.stringify(`(unprintable: ${(e as Error)?.message})`)}`;
  }
  const line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${kv}\n`;
  try {
    let bytes = encoder.encode(line);
    while (bytes.length > 0) {
      const n = Deno.stderr.writeSync(bytes);
      if (n <= 0) break;
      bytes = bytes.subarray(n);
    }
  } catch {
    broken = true;
  }
}

/** Logs at debug level. */
export const debug = (msg: string, f?: Record<string, unknown>): void => log("debug", msg, f);
/** Logs at info level. */
export const info = (msg: string, f?: Record<string, unknown>): void => log("info", msg, f);
/** Logs at warn level. */
export const warn = (msg: string, f?: Record<string, unknown>): void => log("warn", msg, f);
/** Logs at error level. */
export const error = (msg: string, f?: Record<string, unknown>): void => log("error", msg, f);
