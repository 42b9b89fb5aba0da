/**
 * rtnetlink operations on top of {@link ./mnl.ts} and {@link ./msg.ts}: dumps of addresses,
 * links, rules and routes, acknowledged requests (rule/route add and delete), and a watcher
 * of link and address changes that never blocks the event loop.
 *
 * Dumps and requests use a fresh socket each and a synchronous receive: rtnetlink answers
 * inside the `sendto` call (and produces further dump parts inside each `recvfrom`), so the
 * reply is already queued when we read and the event loop is not held up waiting. A
 * `SO_RCVTIMEO` guard ({@link REPLY_TIMEOUT_MS}) bounds the wait should that ever not hold.
 *
 * The watcher waits with a `nonblocking` (worker-thread) `mnl_socket_recvfrom` and a short
 * `SO_RCVTIMEO`, re-checking a stop flag after each return, so {@link Watcher.stop} completes
 * within about one timeout and leaves no pending call to keep the process alive.
 * @module
 */

import * as log from "../log.ts";
import {
  Errno,
  NETLINK_ROUTE,
  NetlinkError,
  NetlinkOpt,
  RECV_BUFFER_SIZE,
  setRecvTimeout,
  setsockoptInt,
  socketBind,
  socketClose,
  socketDrops,
  socketGetFd,
  socketGetPortid,
  socketOpen,
  socketRecvfrom,
  socketRecvfromAsync,
  socketSendto,
  socketSetsockoptInt,
  SockOpt,
  SOL_SOCKET,
  wakeSocket,
} from "./mnl.ts";
import {
  addFlags,
  type AddrMsg,
  decode,
  decodeDone,
  decodeError,
  dumpRequest,
  type Family,
  type LinkMsg,
  messageTypeName,
  NLM_F,
  type NlMsg,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseMessages,
  type RouteMsg,
  routeRequest,
  type RouteSpec,
  RTM,
  RTNLGRP,
  type RuleMsg,
  ruleRequest,
  type RuleSpec,
  setSeq,
} from "./msg.ts";

export { NetlinkError } from "./mnl.ts";
export type { AddrMsg, Family, LinkMsg, RouteMsg, RouteSpec, RuleMsg, RuleSpec } from "./msg.ts";

/** Upper bound on waiting for a kernel reply to a dump or request. */
export const REPLY_TIMEOUT_MS = 2000;
/** How often a dump is retried when the kernel flags it inconsistent (NLM_F_DUMP_INTR). */
const DUMP_RETRIES = 3;
const ETIMEDOUT = 110;

let lastSeq = Math.floor(Date.now() / 1000) >>> 0;
function nextSeq(): number {
  lastSeq = (lastSeq + 1) >>> 0;
  return lastSeq;
}

/** Result of one exchange: the reply messages and whether the kernel flagged a dump as torn. */
interface Reply {
  msgs: NlMsg[];
  interrupted: boolean;
}

/**
 * Sends `req` on a fresh socket and collects the reply up to NLMSG_DONE (dumps) or the
 * NLMSG_ERROR/ACK (requests with NLM_F_ACK).
 * @throws {NetlinkError} on a kernel error, with its strerror text and extended-ACK message.
 */
function exchange(req: Uint8Array, opts: { strict?: boolean } = {}): Reply {
  const copy = req.slice();
  const type = parseMessages(copy)[0]?.type ?? 0;
  const what = messageTypeName(type);
  const nl = socketOpen(NETLINK_ROUTE);
  try {
    // Extended ACK messages and capped ACKs exist since Linux 4.12; ignore older kernels.
    for (const opt of [NetlinkOpt.EXT_ACK, NetlinkOpt.CAP_ACK]) {
      try {
        socketSetsockoptInt(nl, opt, 1);
      } catch { /* optional */ }
    }
    if (opts.strict) socketSetsockoptInt(nl, NetlinkOpt.GET_STRICT_CHK, 1);
    setRecvTimeout(socketGetFd(nl), REPLY_TIMEOUT_MS);
    socketBind(nl, 0);
    const portid = socketGetPortid(nl);
    const seq = nextSeq();
    setSeq(copy, seq);
    socketSendto(nl, copy);
    const buf = new Uint8Array(RECV_BUFFER_SIZE);
    const out: Reply = { msgs: [], interrupted: false };
    for (;;) {
      let n: number;
      try {
        n = socketRecvfrom(nl, buf);
      } catch (e) {
        if (e instanceof NetlinkError && e.errno === Errno.EAGAIN) {
          throw new NetlinkError(`${what} (no reply within ${REPLY_TIMEOUT_MS} ms)`, ETIMEDOUT);
        }
        throw e;
      }
      for (const m of parseMessages(buf.slice(0, n))) {
        if (m.seq !== seq || m.pid !== portid) continue;
        if ((m.flags & NLM_F.DUMP_INTR) !== 0) out.interrupted = true;
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m);
          if (e.errno !== 0) throw new NetlinkError(what, e.errno, e.extack);
          return out;
        }
        if (m.type === NLMSG_DONE) {
          const e = decodeDone(m);
          if (e.errno !== 0) throw new NetlinkError(what, e.errno, e.extack);
          return out;
        }
        out.msgs.push(m);
      }
    }
  } finally {
    socketClose(nl);
  }
}

function dump<T>(
  req: Uint8Array,
  pick: (m: NlMsg) => T | null,
  opts: { strict?: boolean } = {},
): T[] {
  for (let attempt = 0;; attempt++) {
    const r = exchange(req, opts);
    if (r.interrupted && attempt < DUMP_RETRIES) continue;
    if (r.interrupted) log.warn("netlink dump still inconsistent after retries", { attempt });
    const out: T[] = [];
    for (const m of r.msgs) {
      const v = pick(m);
      if (v !== null) out.push(v);
    }
    return out;
  }
}

/** Lists the IPv4 and IPv6 addresses of all interfaces (or of one family). */
export function dumpAddrs(family?: Family): Promise<AddrMsg[]> {
  return Promise.resolve().then(() =>
    dump(dumpRequest("addr", family), (m) => {
      const d = decode(m);
      return d?.type === "addr" ? d : null;
    })
  );
}

/** Lists all interfaces. */
export function dumpLinks(): Promise<LinkMsg[]> {
  return Promise.resolve().then(() =>
    dump(dumpRequest("link"), (m) => {
      const d = decode(m);
      return d?.type === "link" ? d : null;
    })
  );
}

/** Lists the FIB rules of `family`. */
export function dumpRules(family: Family): Promise<RuleMsg[]> {
  return Promise.resolve().then(() =>
    dump(dumpRequest("rule", family), (m) => {
      const d = decode(m);
      return d?.type === "rule" && d.family === family ? d : null;
    })
  );
}

/**
 * Whether the kernel lists TC filters under `parent` of interface `ifindex` (a clsact hook:
 * {@link CLSACT_INGRESS}, {@link CLSACT_EGRESS}). Blocking (a reply within
 * {@link REPLY_TIMEOUT_MS}): for the way out, where nothing else runs.
 */
export function hasFiltersSync(ifindex: number, parent: number): boolean {
  return dump(
    dumpRequest("tfilter", undefined, 0, { ifindex, parent }),
    (m) => m.type === RTM.NEWTFILTER ? m : null,
  ).length > 0;
}

/** `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: a clsact qdisc's ingress hook. */
export const CLSACT_INGRESS = 0xfffffff2;
/** `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`: its egress hook. */
export const CLSACT_EGRESS = 0xfffffff3;

/**
 * Lists the routes of `family`, of all tables or only of `table` (filtered by the kernel
 * through a strict dump; a table that does not exist gives an empty list).
 */
export function dumpRoutes(family: Family, table?: number): Promise<RouteMsg[]> {
  return Promise.resolve().then(() => {
    const pick = (m: NlMsg): RouteMsg | null => {
      const d = decode(m);
      if (d?.type !== "route" || d.family !== family) return null;
      return table === undefined || d.table === table ? d : null;
    };
    if (table === undefined) return dump(dumpRequest("route", family), pick);
    try {
      return dump(dumpRequest("route", family, 0, { table }), pick, { strict: true });
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === Errno.ENOENT) return [];
      throw e;
    }
  });
}

/**
 * Sends a request built by msg.ts (e.g. {@link ruleRequest}), with NLM_F_ACK forced on, and
 * resolves when the kernel acknowledges it.
 * @throws {NetlinkError} with the strerror text (and the kernel's extended-ACK message).
 */
export function request(msg: Uint8Array): Promise<void> {
  return Promise.resolve().then(() => {
    const copy = msg.slice();
    addFlags(copy, NLM_F.ACK);
    exchange(copy);
  });
}

/** Adds a FIB rule (fails with EEXIST when an identical rule exists). */
export function addRule(spec: RuleSpec): Promise<void> {
  return request(ruleRequest("new", spec));
}

/** Deletes the first FIB rule matching every field given in `spec` (ENOENT when none). */
export function delRule(spec: RuleSpec): Promise<void> {
  return request(ruleRequest("del", spec));
}

/** Adds a route (fails with EEXIST when it exists). */
export function addRoute(spec: RouteSpec): Promise<void> {
  return request(routeRequest("new", spec));
}

/** Deletes the route matching `spec` (ESRCH when none). */
export function delRoute(spec: RouteSpec): Promise<void> {
  return request(routeRequest("del", spec));
}

// ---------------------------------------------------------------------------------------------
// Watching

/** What {@link watch} reports. */
export type WatchEvent = AddrMsg | LinkMsg;

/** Options of {@link watch}. */
export interface WatchOptions {
  /** Events closer together than this form one batch for `onBatch` (default 100 ms). */
  coalesceMs?: number;
  /** A batch is delivered at the latest this long after its first event (default 1000 ms). */
  maxDelayMs?: number;
  /** Receives each batch of coalesced events, oldest first. */
  onBatch?: (events: WatchEvent[]) => void;
  /**
   * Called when the kernel dropped notifications (receive queue overrun): the state must be
   * re-read with the dump functions. Default: a warning in the log.
   */
  onOverrun?: () => void;
  /**
   * `SO_RCVTIMEO` of the waiting receive (default {@link WATCH_RECV_TIMEOUT_MS}). `stop()` wakes
   * the receive with a message of its own, so this only bounds how long `stop()` takes should
   * that message not arrive; an idle watch wakes once per timeout.
   */
  recvTimeoutMs?: number;
  /** Receive buffer size asked for (SO_RCVBUFFORCE, else SO_RCVBUF); default 1 MiB. */
  rcvbufBytes?: number;
}

/** Default {@link WatchOptions.recvTimeoutMs}. */
export const WATCH_RECV_TIMEOUT_MS = 5000;

/** A running {@link watch}. */
export interface Watcher {
  /**
   * Stops receiving, discards a batch not yet delivered, wakes the pending receive (a message
   * sent to the watch's own socket; failing that, it returns within `recvTimeoutMs`) and closes
   * the socket once it returned. No callback runs after it resolves. Idempotent.
   */
  stop(): Promise<void>;
}

/**
 * Subscribes to link and IPv4/IPv6 address changes. `onEvent` gets each change as it arrives;
 * `onBatch` (optional) the same changes coalesced. Start the watch before dumping the
 * current state so that no change falls between the two. Callback exceptions are logged.
 * @throws {NetlinkError} when the socket cannot be set up.
 */
export function watch(onEvent: (ev: WatchEvent) => void, opts: WatchOptions = {}): Watcher {
  const coalesceMs = opts.coalesceMs ?? 100;
  const maxDelayMs = Math.max(coalesceMs, opts.maxDelayMs ?? 1000);
  const recvTimeoutMs = opts.recvTimeoutMs ?? WATCH_RECV_TIMEOUT_MS;
  const onOverrun = opts.onOverrun ??
    (() => log.warn("netlink: notifications lost (receive queue overrun); resync needed"));

  const nl = socketOpen(NETLINK_ROUTE);
  let fd: number;
  let portid: number;
  try {
    socketBind(nl, 0);
    portid = socketGetPortid(nl);
    for (const g of [RTNLGRP.LINK, RTNLGRP.IPV4_IFADDR, RTNLGRP.IPV6_IFADDR]) {
      socketSetsockoptInt(nl, NetlinkOpt.ADD_MEMBERSHIP, g);
    }
    fd = socketGetFd(nl);
    setRecvTimeout(fd, recvTimeoutMs);
    const rcvbuf = opts.rcvbufBytes ?? 1 << 20;
    try {
      setsockoptInt(fd, SOL_SOCKET, SockOpt.SO_RCVBUFFORCE, rcvbuf);
    } catch {
      try {
        setsockoptInt(fd, SOL_SOCKET, SockOpt.SO_RCVBUF, rcvbuf);
      } catch { /* keep the default */ }
    }
  } catch (e) {
    socketClose(nl);
    throw e;
  }

  let stopping = false;
  let batch: WatchEvent[] = [];
  let batchStart = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const safely = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      log.error(`netlink watch: ${what} threw`, { error: String(e) });
    }
  };

  const flush = () => {
    timer = undefined;
    if (stopping || batch.length === 0) return;
    const events = batch;
    batch = [];
    safely("onBatch", () => opts.onBatch?.(events));
  };

  const emit = (ev: WatchEvent) => {
    safely("onEvent", () => onEvent(ev));
    if (opts.onBatch === undefined || stopping) return;
    const now = Date.now();
    if (batch.length === 0) batchStart = now;
    batch.push(ev);
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(flush, Math.max(0, Math.min(coalesceMs, batchStart + maxDelayMs - now)));
  };

  const handle = (data: Uint8Array) => {
    let msgs: NlMsg[];
    try {
      msgs = parseMessages(data);
    } catch (e) {
      log.warn("netlink watch: malformed datagram ignored", { error: String(e) });
      return;
    }
    for (const m of msgs) {
      if (stopping) return;
      try {
        const ev = decode(m);
        if (ev?.type === "addr" || ev?.type === "link") emit(ev);
      } catch (e) {
        log.warn("netlink watch: malformed message ignored", { type: m.type, error: String(e) });
      }
    }
  };

  const loop = async () => {
    const buf = new Uint8Array(RECV_BUFFER_SIZE);
    let drops = socketDrops(fd);
    let quickFailures = 0;
    while (!stopping) {
      const started = performance.now();
      const n = await socketRecvfromAsync(nl, buf);
      if (stopping) break;
      if (n > 0) {
        quickFailures = 0;
        handle(buf.subarray(0, n));
        continue;
      }
      // -1: timeout (the usual case), overrun (ENOBUFS) or another error; errno is not
      // observable from the worker thread, so tell them apart by the drop counter and time.
      const d = socketDrops(fd);
      if (d !== drops) {
        drops = d;
        quickFailures = 0;
        flush();
        safely("onOverrun", onOverrun);
        continue;
      }
      if (performance.now() - started < recvTimeoutMs / 2 && ++quickFailures >= 5) {
        log.warn("netlink watch: receive keeps failing; backing off");
        quickFailures = 0;
        await new Promise((r) => setTimeout(r, recvTimeoutMs));
      }
    }
  };

  const done = loop().catch((e) => {
    log.error("netlink watch: receive loop failed", { error: String(e) });
  });

  let stopped: Promise<void> | null = null;
  return {
    stop(): Promise<void> {
      if (stopped === null) {
        stopping = true;
        if (timer !== undefined) clearTimeout(timer);
        timer = undefined;
        batch = [];
        wakeSocket(portid); // else the receive returns at its timeout
        stopped = done.then(() => socketClose(nl));
      }
      return stopped;
    },
  };
}
