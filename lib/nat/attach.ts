/**
 * Attaching the NAT programs to an interface's clsact hooks, with ownership:
 * a lock file per (network namespace, ifindex) tells a live einat from the
 * stale filters a killed one left behind.
 * @module
 */

import * as bpf from "../ffi/libbpf.ts";
import * as log from "../log.ts";

/** Filter handle and priority einat owns on both hooks. */
export const TC_HANDLE = 0xe1a7;
/** Priority of einat's filters. */
export const TC_PRIORITY = 1;

/** What {@link attach} did, so {@link detach} undoes exactly that. */
export interface Attachment {
  ifindex: number;
  ifname: string;
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

/**
 * Attaches egress and ingress programs. Refuses when a live einat owns the
 * interface; replaces stale einat filters left by a killed process.
 */
export function attach(
  ifindex: number,
  ifname: string,
  egressFd: number,
  ingressFd: number,
): Attachment {
  const lockPath = lockPathFor(ifindex);
  const owner = livePid(lockPath);
  if (owner !== null) throw new BusyError(ifname, owner);
  Deno.mkdirSync(LOCK_DIR, { recursive: true });
  Deno.writeTextFileSync(lockPath, `${Deno.pid}\n`);

  const qdiscCreated = bpf.tcHookCreate(ifindex, "ingress") === "created";
  log.debug(qdiscCreated ? "created clsact qdisc" : "clsact qdisc already present", { ifname });
  const a: Attachment = { ifindex, ifname, qdiscCreated, lockPath };
  try {
    for (const [point, fd] of [["egress", egressFd], ["ingress", ingressFd]] as const) {
      const stale = bpf.tcQuery(ifindex, point, TC_HANDLE, TC_PRIORITY);
      if (stale !== null) {
        log.warn("replacing stale einat filter", { ifname, hook: point, prog_id: stale });
      }
      const f = bpf.tcAttach(ifindex, point, fd, {
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
        replace: stale !== null,
      });
      log.info("attached filter", {
        ifname,
        hook: point,
        handle: `0x${f.handle.toString(16)}`,
        prio: f.priority,
        prog_id: f.progId,
      });
    }
  } catch (e) {
    detach(a);
    throw e;
  }
  return a;
}

/** Removes einat's filters, the qdisc if einat created it, and the lock. */
export function detach(a: Attachment): void {
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
  try {
    if (livePid(a.lockPath) === null) Deno.removeSync(a.lockPath);
  } catch { /* already gone */ }
}
