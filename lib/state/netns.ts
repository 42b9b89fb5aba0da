/**
 * Which network namespace einat runs in, for the place of its pinned state:
 * the initial one (that of pid 1) keeps `<root>/<ifname>`, any other one gets
 * a folder of its own, `<root>/netns:<inode>/<ifname>`, so that einats of two
 * namespaces that share a bpffs never share (nor flush) each other's state.
 *
 * The kernel gives a new namespace the inode of one that is gone, so the state
 * also records the namespace's cookie ({@link netnsIdentity}): a folder whose
 * state was written under this inode by another cookie is a deleted
 * namespace's (lib/state/pin.ts starts that afresh).
 * @module
 */

import { netnsCookie } from "../ffi/libc.ts";
import * as log from "../log.ts";

/** The network namespace of this process. */
export interface NetnsInfo {
  /** Inode of /proc/self/ns/net (as `lsns -t net`, `stat -L /run/netns/NAME` show it). */
  ino: number;
  /** True in the namespace of pid 1 (also when that cannot be told: see {@link netnsOf}). */
  initial: boolean;
  /** False when neither /proc/1/ns/net nor /proc/1/net could be compared. */
  known: boolean;
}

/** Whether two paths name the same inode; null when either cannot be stat'ed. */
export function sameInode(a: string, b: string): boolean | null {
  try {
    return Deno.statSync(a).ino === Deno.statSync(b).ino;
  } catch {
    return null;
  }
}

/**
 * The network namespace of this process, read from `proc` (/proc). /proc/1/ns/net needs the
 * right to trace pid 1, which a process with fewer capabilities than pid 1 lacks (the systemd
 * unit's); /proc/1/net/dev does not, and its inode is that namespace's own entry. When neither
 * can be compared the namespace is taken as the initial one (where einat ran before it kept
 * state per namespace), and `known` is false.
 */
export function netnsOf(proc = "/proc"): NetnsInfo {
  const ino = Deno.statSync(`${proc}/self/ns/net`).ino ?? 0;
  const same = sameInode(`${proc}/self/ns/net`, `${proc}/1/ns/net`) ??
    sameInode(`${proc}/self/net/dev`, `${proc}/1/net/dev`);
  return { ino, initial: same ?? true, known: same !== null };
}

/** The sub-folder of a namespace's state below the pin root; "" for the initial namespace. */
export function netnsFolderOf(ns: NetnsInfo): string {
  return ns.initial ? "" : `netns:${ns.ino}`;
}

let cached: string | null = null;

/** {@link netnsFolderOf} this process's namespace (which does not change while einat runs). */
export function netnsFolder(): string {
  if (cached === null) {
    const ns = netnsOf();
    if (!ns.known) {
      log.warn(
        "could not tell whether this is the initial network namespace (/proc/1 unreadable); " +
          "pinned state kept as for the initial one",
        { netns: ns.ino },
      );
    }
    cached = netnsFolderOf(ns);
  }
  return cached;
}

/** True for a folder name of another namespace's state (never an interface name: no ':'). */
export function isNetnsFolder(name: string): boolean {
  return /^netns:\d+$/.test(name);
}

/** What tells this network namespace from every other, written with its pinned state. */
export interface NetnsIdentity {
  /** Inode of /proc/self/ns/net (reused by a later namespace once this one is gone). */
  ino: number;
  /** `SO_NETNS_COOKIE` (decimal), never reused while the system runs; absent before Linux 5.14. */
  cookie?: string;
}

let identity: NetnsIdentity | null = null;

/** This process's {@link NetnsIdentity} (read once: the namespace does not change). */
export function netnsIdentity(): NetnsIdentity {
  if (identity === null) {
    const c = netnsCookie();
    let ino = 0;
    try {
      ino = Deno.statSync("/proc/self/ns/net").ino ?? 0;
    } catch { /* no /proc: 0 matches no stamp's namespace */ }
    identity = typeof c === "bigint" ? { ino, cookie: String(c) } : { ino };
    if (typeof c !== "bigint") {
      log.debug(
        "network namespace cookie unavailable (SO_NETNS_COOKIE needs Linux 5.14): pinned state " +
          "of a deleted namespace is told from this one's by its inode only",
        { netns: ino, errno: -c },
      );
    }
  }
  return identity;
}

/**
 * True when `written` (a stamp's namespace) was another namespace with this one's inode: one that
 * is gone, since two live namespaces never share an inode. False when either cookie is unknown
 * (an einat before the cookie was kept, a kernel before 5.14) or the inodes differ (state given
 * by `--pin-dir` from another namespace, which is not this check's to judge).
 */
export function deletedNamespace(
  written: NetnsIdentity | undefined,
  now: NetnsIdentity = netnsIdentity(),
): boolean {
  return written?.cookie !== undefined && now.cookie !== undefined &&
    written.ino === now.ino && written.cookie !== now.cookie;
}
