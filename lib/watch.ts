/**
 * Watch: follows link and address changes over netlink and reconciles the
 * served interfaces once per coalesced burst of events.
 * @module
 */

import { formatAddr, isLinkLocal6 } from "./config/cidr.ts";
import * as libc from "./ffi/libc.ts";
import * as log from "./log.ts";
import { releaseMemory } from "./memory.ts";
import { dumpAddrs, dumpLinks, watch, type WatchEvent } from "./netlink/rtnl.ts";
import { type AddrMsg, IFA_F, type LinkMsg, ownAddr } from "./netlink/msg.ts";
import { reconcile, type Served } from "./daemon.ts";
import { BusyError } from "./nat/attach.ts";

/** A running follower. */
export interface Follower {
  /** Stops watching and waits for a reconciliation in progress. */
  stop(): Promise<void>;
  /** Runs a reconciliation now (e.g. after a reload); resolves when done. */
  resync(): Promise<void>;
  /**
   * Runs `fn` (a reload) between reconciliations, never beside one: a reconciliation of an
   * interface being stopped would load and attach it again.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * The served interface an event concerns: by name, or by the index it is attached to (a link
 * renamed away from its configured name concerns it too).
 */
function relevant(ev: WatchEvent, served: Served[]): Served | undefined {
  const a = ev.type === "addr" ? (ev.local ?? ev.addr) : null;
  if (a && isLinkLocal6(a)) return undefined;
  return served.find((s) =>
    ev.ifindex === s.attachment?.ifindex ||
    (ev.type === "link" ? ev.ifname === s.ifname : ev.ifindex === libc.ifNameToIndex(s.ifname))
  );
}

/** One short description of an event for the log. */
export function describeEvent(ev: WatchEvent, ifname: string): string {
  const sign = ev.op === "new" ? "+" : "-";
  if (ev.type === "link") {
    return `link${sign} ${ev.ifname || ifname}${ev.op === "new" ? (ev.up ? " up" : " down") : ""}`;
  }
  // The interface's name now (it may have been renamed away from the one einat serves).
  const now = libc.ifIndexToName(ev.ifindex) ?? ifname;
  return `addr${sign} ${formatAddr(ev.local ?? ev.addr)}/${ev.prefixLen} ${now}`;
}

/**
 * What a batch of events changed for the interfaces `served`, described for the log. Every event
 * goes through `changed`, an unserved interface's too: one served later must not find a stale
 * entry that makes its address's return look like nothing.
 */
export function networkNews(
  events: WatchEvent[],
  served: Served[],
  changed: (ev: WatchEvent) => boolean,
): string[] {
  return events.flatMap((ev) => {
    const news = changed(ev);
    const s = relevant(ev, served);
    return s && news ? [describeEvent(ev, s.ifname)] : [];
  });
}

/** The first and the longest wait before a busy interface is tried again. */
const RETRY_MIN_MS = 1000, RETRY_MAX_MS = 30_000;

/** A task run one call at a time (see {@link serialized}). */
export interface Serialized {
  /** Queues a call; resolves when it is done, whether it threw or not. */
  run(): Promise<void>;
  /** Queues `fn` in the same line, so no call of the task runs meanwhile; settles as `fn` does. */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** Resolves when every call queued so far is done. */
  settled(): Promise<void>;
}

/**
 * Runs `task` one call at a time, in call order: each call waits for the ones before it. A call
 * that throws is logged and does not stop the next (nor reject its caller).
 */
export function serialized(task: () => Promise<void>): Serialized {
  let chain: Promise<void> = Promise.resolve();
  return {
    run: () => {
      chain = chain.then(task).catch((e) => {
        log.error("reconciliation failed", { error: (e as Error).message });
      });
      return chain;
    },
    exclusive: <T>(fn: () => Promise<T>) => {
      const p = chain.then(fn);
      chain = p.then(() => {}, () => {});
      return p;
    },
    settled: () => chain,
  };
}

/** The address flags einat acts on (lib/daemon.ts: which addresses serve, in which order). */
const ADDR_FLAGS_USED = IFA_F.SECONDARY | IFA_F.DADFAILED | IFA_F.DEPRECATED | IFA_F.TENTATIVE;

/** Tells network changes from netlink messages that change nothing einat uses. */
export interface ChangeFilter {
  /** Whether `ev` changes what einat uses; remembers it. */
  changed(ev: WatchEvent): boolean;
  /** Records links and addresses as they are, where no event told of them yet. */
  know(links: LinkMsg[], addrs: AddrMsg[]): void;
}

/**
 * What einat uses of each link (name, up, running, type, address) and of each address (its
 * peer, label and the flags einat acts on): a link message that changes none of it (MTU,
 * promiscuity, statistics) and an address message that only renews lifetimes (what every IPv6
 * Router Advertisement sends for SLAAC addresses, every few minutes) are not network changes to
 * reconcile or log.
 */
export function changeFilter(): ChangeFilter {
  const seen = new Map<string, string>();
  const keyOf = (ev: WatchEvent) =>
    ev.type === "link"
      ? `link ${ev.ifindex}`
      : `addr ${ev.ifindex} ${formatAddr(ownAddr(ev))}/${ev.prefixLen}`;
  const sigOf = (ev: WatchEvent) =>
    ev.type === "link"
      ? [ev.ifname, ev.up, ev.running, ev.linkType, ev.address?.join(":")].join("|")
      : [formatAddr(ev.addr), ev.label ?? "", ev.flags & ADDR_FLAGS_USED].join("|");
  return {
    changed: (ev) => {
      const key = keyOf(ev);
      if (ev.op === "del") {
        seen.delete(key);
        return true;
      }
      if (seen.get(key) === sigOf(ev)) return false;
      seen.set(key, sigOf(ev));
      return true;
    },
    know: (links, addrs) => {
      for (const ev of [...links, ...addrs]) {
        if (!seen.has(keyOf(ev))) seen.set(keyOf(ev), sigOf(ev));
      }
    },
  };
}

/**
 * Starts following the network for `served` (the array may change later). `after` runs after
 * each reconciliation, in its turn (the daemon's pending reloads).
 */
export function follow(served: () => Served[], after?: () => Promise<void>): Follower {
  // An interface another einat still held (it lets go on the same netlink event, a moment
  // later: a name moved between two einats) is tried again, 1 s then up to 30 s apart, not
  // left unserved until some other event.
  let retry: ReturnType<typeof setTimeout> | undefined;
  let retryMs = RETRY_MIN_MS, stopped = false;
  const { run, settled, exclusive } = serialized(async () => {
    let busy = false;
    for (const s of served()) {
      try {
        await reconcile(s);
      } catch (e) {
        busy ||= e instanceof BusyError;
        log.error("reconfiguration failed", {
          ifname: s.ifname,
          error: (e as Error).message,
          ...(e instanceof BusyError ? { retry_in_s: retryMs / 1000 } : {}),
        });
      }
    }
    if (busy && retry === undefined && !stopped) {
      retry = setTimeout(() => {
        retry = undefined;
        run();
      }, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    } else if (!busy) {
      retryMs = RETRY_MIN_MS;
    }
    await after?.();
    releaseMemory();
  });
  const { changed, know } = changeFilter();
  // As the links and addresses are now (an event coming first wins: it is newer).
  Promise.all([dumpLinks(), dumpAddrs()]).then(([ls, as]) => know(ls, as)).catch(() => {});
  const w = watch(() => {}, {
    onBatch: (events) => {
      const seen = networkNews(events, served(), changed);
      if (seen.length === 0) return;
      // The same event told twice in a burst (a link coming up sends several) is said once.
      log.info("network changed", { events: [...new Set(seen)].join("; ") });
      run();
    },
    onOverrun: () => {
      log.warn("netlink notifications lost; re-reading the network state");
      run();
    },
  });
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(retry);
      await w.stop();
      await settled();
      clearTimeout(retry);
    },
    resync: run,
    exclusive,
  };
}
