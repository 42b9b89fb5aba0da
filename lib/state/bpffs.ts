/**
 * The bpf filesystem the pinned state lives on: detecting it, and mounting
 * one when the pin folder is not on one.
 * @module
 */

import { BPF_FS_MAGIC, fsType, mountBpffs } from "../ffi/libc.ts";
import * as log from "../log.ts";

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

function inInitialMountNs(): boolean {
  try {
    return Deno.statSync("/proc/self/ns/mnt").ino === Deno.statSync("/proc/1/ns/mnt").ino;
  } catch {
    return true;
  }
}

const ensured = new Set<string>();

/**
 * Makes sure `root` is a folder on a bpf filesystem. When it is not, a bpffs
 * is mounted: at /sys/fs/bpf for a root below it (as tc and systemd do),
 * else at `root` itself. A mount made inside a private mount namespace (as
 * `ip netns exec` creates) disappears with this process: that is logged.
 */
export function ensureBpffs(root: string): void {
  if (ensured.has(root)) return;
  if (!onBpffs(root)) {
    const target = root === "/sys/fs/bpf" || root.startsWith("/sys/fs/bpf/") ? "/sys/fs/bpf" : root;
    Deno.mkdirSync(target, { recursive: true });
    try {
      mountBpffs(target);
    } catch (e) {
      throw new Error(
        `${root} is not on a bpf filesystem and mounting one at ${target} failed ` +
          `(${(e as Error).message}); mount it (mount -t bpf bpf ${target}) or choose --pin-dir`,
      );
    }
    if (inInitialMountNs()) {
      log.info("mounted bpf filesystem", { at: target });
    } else {
      log.warn(
        "mounted a bpf filesystem in a private mount namespace: pinned state ends with this " +
          "process; give --pin-dir a folder on a bpffs the next einat sees too",
        { at: target },
      );
    }
  }
  Deno.mkdirSync(root, { recursive: true });
  ensured.add(root);
}
