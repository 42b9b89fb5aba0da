/**
 * Lifecycle: signals (SIGINT/SIGTERM stop, SIGHUP reloads the configuration
 * file) and applying a reloaded configuration as a difference.
 * @module
 */

import type { Defaults, InterfaceConfig } from "./config/types.ts";
import { readConfig } from "./config/cli.ts";
import { noticeLevel } from "./config/toml.ts";
import { textKey } from "./key.ts";
import * as libc from "./ffi/libc.ts";
import * as log from "./log.ts";
import {
  AddressWaitError,
  hairpinOn,
  type PendingStart,
  reattach,
  resolvedName,
  type Served,
  startInterface,
  stopServing,
} from "./daemon.ts";

/** SIGHUP, SIGINT and SIGTERM caught from the moment {@link catchSignals} returns. */
export interface Signals extends AsyncIterable<Deno.Signal> {
  /** Removes the listeners (the iteration's end does it too). */
  close(): void;
}

/**
 * Catches SIGHUP, SIGINT and SIGTERM at once and queues them until iterated: one that arrives
 * while the daemon starts is taken when it runs, instead of killing it half-way (filters
 * attached, nothing to remove them). `close()` on every path that does not iterate, or the
 * listeners keep the process alive.
 */
export function catchSignals(): Signals {
  const queue: Deno.Signal[] = [];
  let wake: (() => void) | null = null;
  const sigs: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const handlers = sigs.map((sig) => {
    const h = () => {
      queue.push(sig);
      wake?.();
    };
    Deno.addSignalListener(sig, h);
    return h;
  });
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    sigs.forEach((s, i) => Deno.removeSignalListener(s, handlers[i]));
  };
  return {
    close,
    async *[Symbol.asyncIterator]() {
      try {
        while (true) {
          while (queue.length === 0) await new Promise<void>((r) => (wake = r));
          yield queue.shift()!;
        }
      } finally {
        close();
      }
    },
  };
}

/** A stable text form of an interface configuration, for comparison. */
export function configKey(ic: InterfaceConfig): string {
  return textKey(ic);
}

/**
 * Re-reads `file` and applies the difference: interfaces whose configuration
 * (and local rule preferences) is unchanged keep running untouched; changed ones are
 * restarted, the new instance taking the old one's filters or links over in place (the old one
 * goes on when the new one cannot start); removed ones stopped; new ones started. Interfaces
 * are matched by the name they resolve to, whether configured by name or by index; removed
 * ones stop before any starts, so a new one never meets their filters, lock or hairpin rules.
 * An invalid or unreadable file changes nothing.
 */
export async function reload(file: string, served: Served[]): Promise<Served[]> {
  let next: InterfaceConfig[];
  let defaults: Defaults;
  try {
    const read = readConfig(file);
    // What the file's parse says (a merged overlap, a minimum over the default), as at start.
    for (const n of read.notices) log.log(noticeLevel(n), `SIGHUP: ${n}`);
    const parsed = read.config;
    next = parsed.interfaces;
    defaults = parsed.defaults;
  } catch (e) {
    log.error("SIGHUP: configuration not reloaded", { error: (e as Error).message });
    return served;
  }
  for (const s of served) s.pending = undefined; // this file's configuration supersedes it
  // The local rule preferences matter to an interface with hairpin routing of that family only.
  const samePrefs = (s: Served) =>
    (!hairpinOn(s.ic, 4) || s.localPref[4] === defaults.ipv4LocalRulePref) &&
    (!hairpinOn(s.ic, 6) || s.localPref[6] === defaults.ipv6LocalRulePref);
  const keep: Served[] = [];
  const starts: [string, InterfaceConfig, Served | undefined][] = [];
  const byName = new Map(served.map((s) => [s.ifname, s]));
  for (const ic of next) {
    const name = resolvedName(ic) ?? `#${ic.ifIndex}`; // an index without an interface
    const old = byName.get(name);
    byName.delete(name);
    if (old && configKey(old.ic) === configKey(ic) && samePrefs(old)) {
      keep.push(old);
      continue;
    }
    if (old) {
      log.info("SIGHUP: configuration changed, restarting interface", { ifname: name });
    } else {
      log.info("SIGHUP: new interface", { ifname: name });
    }
    starts.push([name, ic, old]);
  }
  const unchanged = keep.map((s) => s.ifname);
  for (const [name, s] of byName) {
    log.info("SIGHUP: interface removed from the configuration", { ifname: name });
    await stopServing(s);
  }
  // A changed interface is restarted as --replace does it: the new instance takes the filters
  // or links over in place (the old programs run until then, no packet passes untranslated),
  // then the old one lets go. If the new one cannot start, the old one goes on serving.
  const restarted: string[] = [], notApplied: string[] = [], waiting: string[] = [];
  for (const [name, ic, old] of starts) {
    const fresh = await replace(name, { ic, defaults }, old, keep, "SIGHUP");
    if (fresh) restarted.push(name);
    else if (old?.pending) waiting.push(name);
    else notApplied.push(name);
    const now = fresh ?? old;
    if (now) keep.push(now);
  }
  // What it did: the interfaces served now, and of them those restarted with the new
  // configuration, those left as they were, and those the new configuration could not start
  // (their error above; the running configuration, if any, serves on).
  log.info("SIGHUP: configuration reloaded", {
    interfaces: keep.map((s) => s.ifname).join(","),
    ...(restarted.length ? { restarted: restarted.join(",") } : {}),
    ...(notApplied.length ? { not_applied: notApplied.join(",") } : {}),
    ...(waiting.length ? { waiting_for_address: waiting.join(",") } : {}),
    ...(unchanged.length ? { unchanged: unchanged.join(",") } : {}),
    ...(byName.size ? { removed: [...byName.keys()].join(",") } : {}),
  });
  return keep;
}

/**
 * Starts `next` for interface `name`, taking over from `old` if it runs; `old` lets go once the
 * new instance serves. Returns the new instance, or null when it could not start: then `old`
 * (attached again) goes on, and when only an address was missing the new configuration waits
 * for it in `old.pending` ({@link retryPending}). `why` begins the log lines; `retry`: a pending
 * start tried again, which says nothing while the address is still missing.
 */
async function replace(
  name: string,
  next: PendingStart,
  old: Served | undefined,
  others: Served[],
  why: string,
  retry = false,
): Promise<Served | null> {
  let fresh: Served;
  try {
    fresh = await startInterface(next.ic, next.defaults, others, old !== undefined);
  } catch (e) {
    const waits = old !== undefined && e instanceof AddressWaitError;
    if (waits && retry) return null; // refused before anything was loaded or attached
    // Waiting for an address, the running configuration kept meanwhile, is a wait, not a failure.
    log.log(
      waits ? "warn" : "error",
      waits
        ? `${why}: the new configuration waits for an address; the running one serves meanwhile`
        : `${why}: interface not served with the new configuration`,
      {
        ifname: name,
        error: (e as Error).message,
        ...(old ? { kept: "the running configuration" } : {}),
        ...(waits ? { pending: "until the address comes" } : {}),
      },
    );
    if (old) {
      old.pending = waits ? next : undefined;
      try {
        await reattach(old);
      } catch (e) {
        log.error(`${why}: the running configuration could not be attached again`, {
          ifname: name,
          error: (e as Error).message,
        });
      }
    }
    return null;
  }
  if (retry) log.info(`${why}: applied, its address came`, { ifname: name });
  if (!old) return fresh;
  try {
    await stopServing(old, true);
  } catch (e) {
    log.warn(`${why}: the replaced instance did not let go cleanly`, {
      ifname: name,
      error: (e as Error).message,
    });
  }
  return fresh;
}

/**
 * Starts the configurations a reload left waiting for an address ({@link replace}) whose
 * interface has it now, each replacing its running instance in `served`, in place. Run after
 * every reconciliation; one still without its address goes on waiting.
 */
export async function retryPending(served: Served[]): Promise<void> {
  for (const [i, s] of served.entries()) {
    // An interface that is gone waits for its address too (one that comes back comes without).
    if (!s.pending || s.stopped || libc.ifNameToIndex(s.ifname) === 0) continue;
    const others = served.filter((o) => o !== s);
    const fresh = await replace(s.ifname, s.pending, s, others, "pending configuration", true);
    if (fresh) served[i] = fresh;
  }
}
