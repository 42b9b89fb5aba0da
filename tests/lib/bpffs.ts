/**
 * A bpf filesystem shared by every `ip netns exec` process of a test.
 *
 * `ip netns exec` runs its command in a new mount namespace with a fresh
 * /sys, so /sys/fs/bpf there is empty and a bpffs mounted there lives only as
 * long as that one command: the next einat would not see the pins. /run is
 * left as it is, and a new mount namespace copies the mounts that exist when
 * it is created. So the test mounts a private bpffs instance on a folder of
 * its own under /run *before* starting einat, from a process that is in the
 * test's network namespace but in the host's mount namespace (`nsenter
 * --net`), and passes it as `--pin-dir`. The host's /sys/fs/bpf is never
 * touched; the mount and the folder are removed afterwards.
 * @module
 */
import { run, runResult, testPrefix } from "./netns.ts";

/** Mounts a bpffs for `ns`, runs `fn` with its path, always unmounts and removes it. */
export function withSharedBpffs<T>(ns: string, fn: (dir: string) => Promise<T>): Promise<T> {
  return withBpffs(ns, ["nsenter", `--net=/run/netns/${ns}`], fn);
}

/**
 * Mounts a private bpffs for this process (pins of objects it loads itself, no namespace), runs
 * `fn` with its path, always unmounts and removes it. `name` makes the folder's name unique.
 */
export function withPrivateBpffs<T>(name: string, fn: (dir: string) => Promise<T>): Promise<T> {
  return withBpffs(name, [], fn);
}

async function withBpffs<T>(
  name: string,
  prefix: string[],
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = `/run/${testPrefix()}-test-bpffs-${name}`;
  Deno.mkdirSync(dir);
  try {
    await run([...prefix, "mount", "-t", "bpf", "bpf", dir]);
    try {
      return await fn(dir);
    } finally {
      const r = await runResult(["umount", dir]);
      if (r.code !== 0) await runResult(["umount", "-l", dir]);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/**
 * The pin folder of `ifname` that einat in the test namespace `ns` uses below `root`: below
 * `netns:<inode>/`, as outside the initial network namespace (lib/state/netns.ts).
 */
export function pinDirIn(root: string, ns: string, ifname = "wan0"): string {
  return `${root}/netns:${Deno.statSync(`/run/netns/${ns}`).ino}/${ifname}`;
}
