/**
 * The bpf filesystem the pinned state lives on: detecting it, and mounting
 * one when the pin folder is not on one.
 * @module
 */

import { BPF_FS_MAGIC, fsType, mountBpffs } from "../ffi/libc.ts";
import * as log from "../log.ts";
import { sameInode } from "./netns.ts";

/** True when `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function nearestExisting(path: string): string {
  let p = path;
  while (p !== "/" && !exists(p)) p = p.replace(/\/[^/]*\/?$/, "") || "/";
  return p;
}

/** True when `path` (or the nearest existing folder above it) is on a bpf filesystem. */
export function onBpffs(path: string): boolean {
  return fsType(nearestExisting(path)) === BPF_FS_MAGIC;
}

function firstLine(path: string): string | null {
  try {
    return Deno.readTextFileSync(path).split("\n")[0] || null;
  } catch {
    return null;
  }
}

/**
 * True when this process is in the mount namespace of pid 1, false when not, null when that
 * cannot be told. /proc/1/ns/mnt needs the right to trace pid 1 (EACCES with fewer capabilities
 * than it has, as under the systemd unit); /proc/1/mountinfo does not, and its first line (the
 * namespace's root mount, with a mount id no other namespace has) tells as well.
 */
export function inInitialMountNs(proc = "/proc"): boolean | null {
  const same = sameInode(`${proc}/self/ns/mnt`, `${proc}/1/ns/mnt`);
  if (same !== null) return same;
  const self = firstLine(`${proc}/self/mountinfo`), init = firstLine(`${proc}/1/mountinfo`);
  return self === null || init === null ? null : self === init;
}

const ensured = new Set<string>();

/**
 * Raised when the pin folder exists with files in it and is not on a bpf filesystem: a bpffs
 * mounted there would hide them (`--pin-dir /run` would hide the system's run-time files).
 */
export class PinDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PinDirError";
  }
}

/** Throws {@link PinDirError} when `target` is a folder with files in it (or not a folder). */
function refuseToHide(root: string, target: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(target);
  } catch {
    return; // a new folder
  }
  let empty = false;
  try {
    empty = info.isDirectory && Deno.readDirSync(target)[Symbol.iterator]().next().done === true;
  } catch { /* unreadable: taken as not empty */ }
  if (!empty) {
    throw new PinDirError(
      `--pin-dir ${root}${target === root ? "" : `: ${target}`} is not on a bpf filesystem and ` +
        `is not empty; einat mounts a bpffs only on a new or empty folder, so as not to hide ` +
        `what is in it: choose another --pin-dir (e.g. /sys/fs/bpf/einat)`,
    );
  }
}

/**
 * Makes sure `root` is a folder on a bpf filesystem. When it is not, a bpffs
 * is mounted: at /sys/fs/bpf for a root below it (as tc and systemd do),
 * else at `root` itself, but only on a new or empty folder ({@link PinDirError}
 * otherwise). A mount made inside a private mount namespace (as `ip netns
 * exec` creates) disappears with this process: that is logged.
 */
export function ensureBpffs(root: string): void {
  if (ensured.has(root)) return;
  if (!onBpffs(root)) {
    const target = root === "/sys/fs/bpf" || root.startsWith("/sys/fs/bpf/") ? "/sys/fs/bpf" : root;
    refuseToHide(root, target);
    Deno.mkdirSync(target, { recursive: true });
    try {
      mountBpffs(target);
    } catch (e) {
      throw new Error(
        `${root} is not on a bpf filesystem and mounting one at ${target} failed ` +
          `(${(e as Error).message}); mount it (mount -t bpf bpf ${target}) or choose --pin-dir`,
      );
    }
    const initial = inInitialMountNs();
    if (initial) {
      log.info("mounted bpf filesystem", { at: target });
    } else {
      log.warn(
        `mounted a bpf filesystem ${
          initial === null
            ? "in what may be a private mount namespace (/proc/1 unreadable): if it is, " +
              "pinned state ends with this process"
            : "in a private mount namespace: pinned state ends with this process"
        }; give --pin-dir a folder on a bpffs the next einat sees too`,
        { at: target },
      );
    }
  }
  Deno.mkdirSync(root, { recursive: true });
  ensured.add(root);
}
