/**
 * Attaching the NAT programs to an interface's clsact hooks, with ownership:
 * a lock file per (network namespace, ifindex) tells a live einat from the
 * stale filters a killed one left behind.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import { closeFd } from "../ffi/libc.ts";
import * as log from "../log.ts";

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
}

/** Raised when another live einat serves the interface. */
export class BusyError extends Error {
  constructor(readonly ifname: string, readonly pid: number) {
    super(`interface ${ifname} is already served by einat (pid ${pid}); stop it first`);
    this.name = "BusyError";
  }
}

const LOCK_DIR = "/run/einat";

function netnsId(): string {
  try {
    return String(Deno.statSync("/proc/self/ns/net").ino);
  } catch {
    return "0";
  }
}

/** The lock file path for an interface in this network namespace. */
export function lockPathFor(ifindex: number): string {
  return `${LOCK_DIR}/${netnsId()}-${ifindex}.pid`;
}

function livePid(path: string): number | null {
  let pid: number;
  try {
    pid = Number(Deno.readTextFileSync(path).trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) return null;
  try {
    const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return /einat|main\.ts/.test(cmd) ? pid : null;
  } catch {
    return null;
  }
}

function attachTcx(a: Attachment, egressFd: number, ingressFd: number): boolean {
  try {
    a.links.push(bpf.linkCreate(egressFd, a.ifindex, bpf.BPF_TCX_EGRESS));
    a.links.push(bpf.linkCreate(ingressFd, a.ifindex, bpf.BPF_TCX_INGRESS));
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

function attachTc(a: Attachment, egressFd: number, ingressFd: number): void {
  a.qdiscCreated = bpf.tcHookCreate(a.ifindex, "ingress") === "created";
  log.debug(a.qdiscCreated ? "created clsact qdisc" : "clsact qdisc already present", {
    ifname: a.ifname,
  });
  for (const [point, fd] of [["egress", egressFd], ["ingress", ingressFd]] as const) {
    const stale = bpf.tcQuery(a.ifindex, point, TC_HANDLE, TC_PRIORITY);
    if (stale !== null) {
      log.warn("replacing stale einat filter", { ifname: a.ifname, hook: point, prog_id: stale });
    }
    const f = bpf.tcAttach(a.ifindex, point, fd, {
      handle: TC_HANDLE,
      priority: TC_PRIORITY,
      replace: stale !== null,
    });
    log.info("attached filter", {
      ifname: a.ifname,
      hook: point,
      handle: `0x${f.handle.toString(16)}`,
      prio: f.priority,
      prog_id: f.progId,
    });
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
): Attachment {
  const lockPath = lockPathFor(ifindex);
  const owner = livePid(lockPath);
  if (owner !== null) throw new BusyError(ifname, owner);
  Deno.mkdirSync(LOCK_DIR, { recursive: true });
  Deno.writeTextFileSync(lockPath, `${Deno.pid}\n`);

  const a: Attachment = { ifindex, ifname, mode: "tc", links: [], qdiscCreated: false, lockPath };
  try {
    if (!preferTcx || !attachTcx(a, egressFd, ingressFd)) attachTc(a, egressFd, ingressFd);
  } catch (e) {
    detach(a);
    throw e;
  }
  return a;
}

/** Removes einat's links or filters, the qdisc if einat created it, and the lock. */
export function detach(a: Attachment): void {
  if (a.mode === "tcx") {
    for (const fd of a.links.splice(0)) closeFd(fd);
    log.info("detached TCX links", { ifname: a.ifname });
    release(a);
    return;
  }
  for (const point of ["egress", "ingress"] as const) {
    try {
      if (bpf.tcDetach(a.ifindex, point, TC_HANDLE, TC_PRIORITY)) {
        log.info("detached filter", { ifname: a.ifname, hook: point });
      }
    } catch (e) {
      log.warn("could not detach filter", { ifname: a.ifname, hook: point, error: String(e) });
    }
  }
  if (a.qdiscCreated) {
    try {
      if (bpf.tcHookDestroy(a.ifindex)) log.info("removed clsact qdisc", { ifname: a.ifname });
    } catch (e) {
      log.warn("could not remove clsact qdisc", { ifname: a.ifname, error: String(e) });
    }
  }
  try {
    if (livePid(a.lockPath) === null) Deno.removeSync(a.lockPath);
  } catch { /* already gone */ }
}

/** Forgets an attachment whose interface is gone (its filters went with it). */
export function release(a: Attachment): void {
  for (const fd of a.links.splice(0)) closeFd(fd);
  try {
    if (livePid(a.lockPath) === null) Deno.removeSync(a.lockPath);
  } catch { /* already gone */ }
}
