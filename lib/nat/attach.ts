/**
 * Attaching the NAT programs to an interface's clsact hooks, with ownership:
 * a lock file per (network namespace, ifindex) tells a live einat from the
 * stale filters a killed one left behind.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import { closeFd } from "../ffi/libc.ts";
import * as log from "../log.ts";
import { CLSACT_EGRESS, CLSACT_INGRESS, hasFiltersSync } from "../netlink/rtnl.ts";
import { pinDirFor, stateOptions } from "../state/options.ts";
import { onBpffs } from "../state/bpffs.ts";

/** Filter handle and priority einat owns on both hooks. */
export const TC_HANDLE = 0xe1a7;
/** Priority of einat's filters. */
export const TC_PRIORITY = 1;

/** What {@link attach} did, so {@link detach} undoes exactly that. */
export interface Attachment {
  ifindex: number;
  ifname: string;
  /** TCX links (kernel >= 6.6) or clsact + cls_bpf filters. */
  mode: "tcx" | "tc";
  /** TCX link fds (egress, ingress); closing them detaches. */
  links: number[];
  qdiscCreated: boolean;
  lockPath: string;
  /** Program ids attached (egress, ingress): a different id later means replaced. */
  progIds?: number[];
  /** bpffs paths of pinned TCX links (removed by `detach` unless replaced). */
  linkPins?: string[];
  /**
   * Handed over within this process (a reload that restarted the interface): what another
   * attachment took over stays, as after `--replace` (the lock names this process still).
   */
  handedOver?: boolean;
}

/** Raised when another live einat serves the interface. */
export class BusyError extends Error {
  constructor(readonly ifname: string, readonly pid: number) {
    super(
      `interface ${ifname} is already served by einat (pid ${pid}); stop it first, or take ` +
        `it over without a gap with --replace`,
    );
    this.name = "BusyError";
  }
}

const LOCK_DIR = "/run/einat";

/** This process's namespace of `kind` (its inode), or null when the kernel has none. */
function nsInode(kind: "net" | "time"): string | null {
  try {
    return String(Deno.statSync(`/proc/self/ns/${kind}`).ino);
  } catch {
    return null;
  }
}

function netnsId(): string {
  return nsInode("net") ?? "0";
}

/** The lock file path for an interface in this network namespace. */
export function lockPathFor(ifindex: number): string {
  return `${LOCK_DIR}/${netnsId()}-${ifindex}.pid`;
}

/**
 * Whether einat's programs are attached to `ifindex` (its filter), or TCX links of its are
 * pinned in the state folder `dir`: a killed einat's go on translating.
 */
export function programsAttached(ifindex: number, dir: string): boolean {
  try {
    if (bpf.tcQuery(ifindex, "egress", TC_HANDLE, TC_PRIORITY) !== null) return true;
  } catch { /* no qdisc, or no such link */ }
  try {
    Deno.statSync(`${dir}/link_egress`);
    return true;
  } catch {
    return false;
  }
}

/** The pids of the other live einats serving interfaces of this network namespace. */
export function otherEinatsHere(): number[] {
  const prefix = `${netnsId()}-`;
  const pids = new Set<number>();
  try {
    for (const e of Deno.readDirSync(LOCK_DIR)) {
      if (!e.name.startsWith(prefix) || !e.name.endsWith(".pid")) continue;
      const pid = livePid(`${LOCK_DIR}/${e.name}`);
      if (pid !== null) pids.add(pid);
    }
  } catch { /* no lock folder: none */ }
  return [...pids];
}

/** The pid of the live einat serving `ifindex` in this network namespace, if any. */
export function ownerOf(ifindex: number): number | null {
  return livePid(lockPathFor(ifindex));
}

/**
 * The attachment of this process that holds each lock file: another of its attachments letting
 * go of the same interface (two of its interfaces' names swapped, each re-attached to the other's
 * link) must not remove the lock the holder just wrote (livePid does not see this process's own).
 */
const lockHolders = new Map<string, Attachment>();

/**
 * When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); null
 * when there is no such process. A PID and its start name one process: a PID alone may be
 * reused. The kernel shows it shifted by the reader's time namespace: compare only starts read
 * in one (`timeNamespace`).
 */
export function processStart(pid: number | "self"): string | null {
  try {
    const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // after "pid (comm) ": fields 3.. (comm may hold spaces and parentheses)
    return st.slice(st.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

let ownStart: string | null | undefined;
let ownTimeNs: string | null | undefined;

/** This process's time namespace (its inode), read once: it does not change. */
function timeNamespace(): string | null {
  if (ownTimeNs === undefined) ownTimeNs = nsInode("time");
  return ownTimeNs;
}

/**
 * Writes the lock file, whole (a reader never sees half of it): `PID`, then `start=TICKS` and
 * `timens=INODE` (the start time as this time namespace shows it: {@link processStart}), then
 * `qdisc=created` when einat created the clsact qdisc.
 */
function writeLock(a: Attachment): void {
  lockHolders.set(a.lockPath, a);
  Deno.mkdirSync(LOCK_DIR, { recursive: true });
  if (ownStart === undefined) ownStart = processStart("self");
  const ns = timeNamespace();
  const tmp = `${a.lockPath}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(
    tmp,
    `${Deno.pid}\n${ownStart !== null ? `start=${ownStart}\n` : ""}` +
      `${ns !== null ? `timens=${ns}\n` : ""}${a.qdiscCreated ? "qdisc=created\n" : ""}`,
  );
  Deno.renameSync(tmp, a.lockPath);
}

/** The einat a lock file names: its PID and, when the lock can tell, its start time. */
export interface LockOwner {
  pid: number;
  start: string | null;
}

/**
 * The einat a lock file names, when it still runs: its PID, the same process (its start time,
 * when the lock has one read in this time namespace: lock files of einats before it have none)
 * and an einat's command line. A killed einat's PID taken by another process, einat or not, is
 * no owner.
 */
export function lockOwner(path: string): LockOwner | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return null;
  }
  const pid = Number(text.split("\n")[0].trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) return null;
  const ns = /^timens=(\d+)$/m.exec(text)?.[1];
  const comparable = ns === undefined || ns === timeNamespace();
  const start = comparable ? /^start=(\d+)$/m.exec(text)?.[1] ?? null : null;
  if (start !== null && processStart(pid) !== start) return null;
  try {
    const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return /einat|main\.ts/.test(cmd) ? { pid, start } : null;
  } catch {
    return null;
  }
}

/** The PID of {@link lockOwner}. */
export function livePid(path: string): number | null {
  return lockOwner(path)?.pid ?? null;
}

/** Where the TCX links of an interface are pinned (next to its state), if anywhere. */
function linkPin(a: Attachment, point: "egress" | "ingress"): string | null {
  const dir = pinDirFor(a.ifname);
  try {
    return Deno.statSync(dir).isDirectory && onBpffs(dir) ? `${dir}/link_${point}` : null;
  } catch {
    return null;
  }
}

/**
 * One TCX link, pinned so that it outlives this process until `detach`: a
 * link pinned by a running (`--replace`) or killed einat gets our program
 * atomically (`bpf_link_update`); otherwise a new link is created and pinned.
 */
function tcxLink(a: Attachment, point: "egress" | "ingress", progFd: number, takeover: boolean) {
  const pin = linkPin(a, point);
  if (pin) {
    let fd = -1;
    try {
      fd = bpf.objGetPinned(pin);
      bpf.linkUpdate(fd, progFd);
      (a.linkPins ??= []).push(pin);
      log[takeover ? "info" : "warn"](
        takeover ? "taking over TCX link" : "replacing stale einat TCX link",
        { ifname: a.ifname, hook: point },
      );
      return fd;
    } catch {
      if (fd >= 0) closeFd(fd);
      try {
        Deno.removeSync(pin); // a link of a vanished interface, or none
      } catch { /* none */ }
    }
  }
  const fd = bpf.linkCreate(
    progFd,
    a.ifindex,
    point === "egress" ? bpf.BPF_TCX_EGRESS : bpf.BPF_TCX_INGRESS,
  );
  if (pin) {
    try {
      bpf.objPin(fd, pin);
      (a.linkPins ??= []).push(pin);
    } catch (e) {
      log.warn("could not pin TCX link", { ifname: a.ifname, error: (e as Error).message });
    }
  }
  return fd;
}

function attachTcx(a: Attachment, egressFd: number, ingressFd: number, takeover = false): boolean {
  try {
    a.links.push(tcxLink(a, "egress", egressFd, takeover));
    a.links.push(tcxLink(a, "ingress", ingressFd, takeover));
    a.progIds = a.links.map((fd) => bpf.linkProgId(fd));
  } catch (e) {
    for (const fd of a.links.splice(0)) closeFd(fd);
    log.info("TCX not available, using clsact", { ifname: a.ifname, error: (e as Error).message });
    return false;
  }
  a.mode = "tcx";
  // A killed einat of the clsact kind would translate a second time: remove its filters.
  for (const point of ["egress", "ingress"] as const) {
    if (bpf.tcQuery(a.ifindex, point, TC_HANDLE, TC_PRIORITY) !== null) {
      log.warn("removing stale einat clsact filter", { ifname: a.ifname, hook: point });
      bpf.tcDetach(a.ifindex, point, TC_HANDLE, TC_PRIORITY);
    }
  }
  log.info("attached TCX links", { ifname: a.ifname, hooks: "egress,ingress" });
  return true;
}

function attachTc(a: Attachment, egressFd: number, ingressFd: number, takeover = false): void {
  a.qdiscCreated = bpf.tcHookCreate(a.ifindex, "ingress") === "created" || a.qdiscCreated;
  a.progIds = [];
  log.debug(a.qdiscCreated ? "created clsact qdisc" : "clsact qdisc already present", {
    ifname: a.ifname,
  });
  for (const [point, fd] of [["egress", egressFd], ["ingress", ingressFd]] as const) {
    const stale = bpf.tcQuery(a.ifindex, point, TC_HANDLE, TC_PRIORITY);
    if (stale !== null && takeover) {
      log.info("taking over filter", { ifname: a.ifname, hook: point, old_prog_id: stale });
    } else if (stale !== null) {
      log.warn("replacing stale einat filter", { ifname: a.ifname, hook: point, prog_id: stale });
    }
    const f = bpf.tcAttach(a.ifindex, point, fd, {
      handle: TC_HANDLE,
      priority: TC_PRIORITY,
      replace: stale !== null,
    });
    a.progIds.push(f.progId);
    log.info("attached filter", {
      ifname: a.ifname,
      hook: point,
      handle: `0x${f.handle.toString(16)}`,
      prio: f.priority,
      prog_id: f.progId,
    });
  }
  // A killed einat of the TCX kind: its pinned links run ahead of these filters (a program
  // that returns TC_ACT_OK ends the TCX chain), translating with its old configuration for as
  // long as they stay pinned. Unpinned, nothing holds them: they go. (One being replaced is
  // live and removes its own at exit.)
  if (takeover) return;
  for (const point of ["egress", "ingress"] as const) {
    const pin = linkPin(a, point);
    if (!pin) continue;
    try {
      Deno.removeSync(pin);
      log.warn("removed a stale einat TCX link", { ifname: a.ifname, hook: point });
    } catch { /* none */ }
  }
}

/**
 * Attaches egress and ingress programs: as TCX links when `preferTcx` and the
 * kernel has TCX, else as clsact filters. Refuses when a live einat owns the
 * interface; replaces stale einat filters left by a killed process.
 */
export function attach(
  ifindex: number,
  ifname: string,
  egressFd: number,
  ingressFd: number,
  preferTcx = false,
  takeover = false,
): Attachment {
  const lockPath = lockPathFor(ifindex);
  const owner = lockOwner(lockPath);
  if (owner !== null && !stateOptions.replace) throw new BusyError(ifname, owner.pid);
  // Taking over: from another einat (--replace), or from this one (`takeover`: a reload).
  const taking = owner !== null || takeover;
  // --replace: the running einat's qdisc becomes ours to remove at the end; so does the qdisc
  // of a killed einat, whose lock file is left (nobody else would remove it).
  const inherited = /qdisc=created/.test(readLock(lockPath));
  const a: Attachment = {
    ifindex,
    ifname,
    mode: "tc",
    links: [],
    qdiscCreated: inherited,
    lockPath,
  };
  writeLock(a);
  try {
    if (!preferTcx || !attachTcx(a, egressFd, ingressFd, taking)) {
      attachTc(a, egressFd, ingressFd, taking);
    }
    writeLock(a);
  } catch (e) {
    detach(a);
    throw e;
  }
  if (owner !== null) handOver(a, owner);
  return a;
}

function readLock(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Previous einats to ask to exit once the batch of take-overs ends (pid → owner, interfaces). */
let deferred: Map<number, { owner: LockOwner; ifnames: string[] }> | null = null;

/**
 * `--replace`: the programs now attached are ours; the previous einat is
 * told to stop (SIGTERM). It finds its filters carry other programs and
 * leaves them, the qdisc and the pinned state alone. Inside a batch
 * ({@link deferHandOvers}) it is told when the batch ends: it serves the
 * interfaces not taken over yet until then, and leaves none of them bare.
 */
function handOver(a: Attachment, owner: LockOwner): void {
  if (deferred) {
    const d = deferred.get(owner.pid) ?? { owner, ifnames: [] };
    d.ifnames.push(a.ifname);
    deferred.set(owner.pid, d);
    return;
  }
  signalPrevious(owner, [a.ifname]);
}

function signalPrevious({ pid, start }: LockOwner, ifnames: string[]): void {
  // Still the process the lock named: one that exited meanwhile may have left its PID to another.
  if (start !== null && processStart(pid) !== start) {
    log.info("the einat taken over from has exited already", { ifname: ifnames.join(","), pid });
    return;
  }
  try {
    Deno.kill(pid, "SIGTERM");
    log.info("took over from the running einat; asked it to exit", {
      ifname: ifnames.join(","),
      pid,
    });
  } catch (e) {
    log.warn("could not signal the previous einat", { pid, error: (e as Error).message });
  }
}

/**
 * Starts a batch of take-overs (`--replace` of several interfaces): the previous einat serves
 * every interface until all are attached (its SIGTERM makes it stop them all at once). Returns
 * the function that ends the batch and asks the previous einats to exit.
 */
export function deferHandOvers(): () => void {
  deferred ??= new Map();
  return () => {
    const pending = deferred ?? new Map();
    deferred = null;
    for (const { owner, ifnames } of pending.values()) signalPrevious(owner, ifnames);
  };
}

/**
 * True when another einat has taken the interface over (`--replace`): the
 * lock file names it. What is shared with it (hairpin routes and rules, the
 * qdisc) must then be left alone.
 */
export function replaced(a: Attachment): boolean {
  return a.handedOver === true || livePid(a.lockPath) !== null;
}

/**
 * Removes the clsact qdisc einat made, unless filters of others are on it now (they would go
 * with it): then it stays, and the log says so.
 */
function destroyQdisc(a: Attachment): void {
  try {
    const others = ([["ingress", CLSACT_INGRESS], ["egress", CLSACT_EGRESS]] as const)
      .filter(([, parent]) => hasFiltersSync(a.ifindex, parent)).map(([hook]) => hook);
    if (others.length > 0) {
      log.info("clsact qdisc kept: filters einat did not add are on it", {
        ifname: a.ifname,
        hooks: others.join(","),
      });
      return;
    }
    if (bpf.tcHookDestroy(a.ifindex)) log.info("removed clsact qdisc", { ifname: a.ifname });
  } catch (e) {
    log.warn("could not remove clsact qdisc", { ifname: a.ifname, error: String(e) });
  }
}

/** True when `a`'s programs are still the ones attached (its links or filters carry them). */
export function stillAttached(a: Attachment): boolean {
  try {
    if (a.mode === "tcx") return a.links.length === 2 && !linksReplaced(a);
    return (["egress", "ingress"] as const).every((point, i) =>
      bpf.tcQuery(a.ifindex, point, TC_HANDLE, TC_PRIORITY) === a.progIds?.[i]
    );
  } catch {
    return false;
  }
}

/** True when a TCX link of `a` runs another program than ours: another einat took it over. */
function linksReplaced(a: Attachment): boolean {
  return a.links.some((fd, i) => {
    try {
      return bpf.linkProgId(fd) !== a.progIds?.[i];
    } catch {
      return false;
    }
  });
}

/** True when `pin` holds one of the links of `a`, running the program attached to it. */
function ownLinkPin(a: Attachment, pin: string): boolean {
  let fd = -1;
  try {
    fd = bpf.objGetPinned(pin);
    const pinned = bpf.linkInfo(fd);
    return a.links.some((l, i) => {
      const own = bpf.linkInfo(l);
      return own.id === pinned.id && own.progId === a.progIds?.[i];
    });
  } catch {
    return false; // gone, or not a link
  } finally {
    if (fd >= 0) closeFd(fd);
  }
}

/**
 * Detaches the TCX links of `a` and removes their pins (a pinned link stays, attached or
 * defunct, with its program) unless another einat runs its programs on them (`--replace`) or
 * pinned links of its own in their place. Returns false when the links were left to another
 * einat. The links are detached through their fds, not only by losing their pins and fds: a pin
 * einat cannot reach any more (its bpffs unmounted underneath it) would keep them attached,
 * translating with no einat running.
 */
function unpinLinks(a: Attachment): boolean {
  const pins = a.linkPins ?? [];
  a.linkPins = [];
  if (linksReplaced(a)) return false;
  for (const pin of pins) {
    if (!ownLinkPin(a, pin)) continue;
    try {
      Deno.removeSync(pin);
    } catch { /* already gone */ }
  }
  for (const [i, fd] of a.links.entries()) {
    try {
      // Only a link that still runs our program: never one another einat took over.
      if (bpf.linkProgId(fd) === a.progIds?.[i]) bpf.linkDetach(fd);
    } catch (e) {
      log.warn("could not detach a TCX link", { ifname: a.ifname, error: (e as Error).message });
    }
  }
  return true;
}

/** Removes einat's links or filters, the qdisc if einat created it, and the lock. */
export function detach(a: Attachment): void {
  const handedOver = replaced(a);
  if (a.mode === "tcx") {
    if (unpinLinks(a)) {
      log.info("detached TCX links", { ifname: a.ifname });
    } else {
      log.info(
        a.handedOver
          ? "TCX links run the reloaded configuration's programs now; left attached"
          : movedHere(a)
          ? "TCX links run the programs of another of this einat's interfaces now (names moved); left attached"
          : "TCX links run another einat's programs now (--replace); left attached",
        { ifname: a.ifname },
      );
    }
    for (const fd of a.links.splice(0)) closeFd(fd);
    // A qdisc taken over from a clsact einat by --replace.
    if (a.qdiscCreated && !handedOver) destroyQdisc(a);
    release(a);
    return;
  }
  let replacedFilter = false;
  for (const [i, point] of (["egress", "ingress"] as const).entries()) {
    try {
      const now = a.progIds?.[i] ? bpf.tcQuery(a.ifindex, point, TC_HANDLE, TC_PRIORITY) : null;
      if (now !== null && now !== a.progIds![i]) {
        replacedFilter = true;
        log.info(
          a.handedOver
            ? "filter carries the reloaded configuration's program now; left attached"
            : movedHere(a)
            ? "filter carries the program of another of this einat's interfaces now (names moved); left attached"
            : "filter carries another einat's program now (--replace); left attached",
          { ifname: a.ifname, hook: point, prog_id: now },
        );
        continue;
      }
      if (bpf.tcDetach(a.ifindex, point, TC_HANDLE, TC_PRIORITY)) {
        log.info("detached filter", { ifname: a.ifname, hook: point });
      }
    } catch (e) {
      log.warn("could not detach filter", { ifname: a.ifname, hook: point, error: String(e) });
    }
  }
  if (a.qdiscCreated && !replacedFilter && !handedOver) destroyQdisc(a);
  dropLock(a);
}

/** Another attachment of this process holds `a`'s interface now (two names swapped). */
function movedHere(a: Attachment): boolean {
  const holder = lockHolders.get(a.lockPath);
  return holder !== undefined && holder !== a;
}

/**
 * Removes the lock file, unless another einat, this one's new instance or another of its
 * attachments holds it now.
 */
function dropLock(a: Attachment): void {
  if (movedHere(a)) return;
  lockHolders.delete(a.lockPath);
  try {
    if (!a.handedOver && livePid(a.lockPath) === null) Deno.removeSync(a.lockPath);
  } catch { /* already gone */ }
}

/**
 * Forgets an attachment whose interface is gone or was recreated. Its filters went with it; its
 * TCX links are defunct but would hold their programs as long as they stay pinned, so their pins
 * go too (unless another einat took them over).
 */
export function release(a: Attachment): void {
  if (a.mode === "tcx" && !unpinLinks(a)) {
    log.info("TCX links run another einat's programs now (--replace); pins left", {
      ifname: a.ifname,
    });
  }
  for (const fd of a.links.splice(0)) closeFd(fd);
  dropLock(a);
}
