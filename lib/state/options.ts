/**
 * Where einat keeps state that outlives the process, and how a start treats
 * a running einat. Set once by `main.ts` from the command line.
 * @module
 */

import { netnsFolder } from "./netns.ts";

/**
 * Default root of the pinned state: one directory per interface below it (below
 * `netns:<inode>/` outside the initial network namespace, see `netns.ts`).
 */
export const DEFAULT_PIN_ROOT = "/sys/fs/bpf/einat";

/** Process-wide state options. */
export interface StateOptions {
  /** Root directory on a bpf filesystem; `<root>/<ifname>/` holds one interface's maps. */
  pinRoot: string;
  /** Take over interfaces a running einat serves (`--replace`) instead of refusing. */
  replace: boolean;
}

/** The options in effect. */
export const stateOptions: StateOptions = { pinRoot: DEFAULT_PIN_ROOT, replace: false };

/** Sets the options (from the command line). */
export function configureState(o: Partial<StateOptions>): void {
  Object.assign(stateOptions, o);
}

/**
 * The folder of this network namespace's state below `root`: `root` itself in the initial
 * namespace, `root/netns:<inode>` in any other.
 */
export function netnsRoot(root = stateOptions.pinRoot, folder = netnsFolder()): string {
  const r = root.replace(/\/+$/, "");
  return folder ? `${r}/${folder}` : r;
}

/**
 * The folder name of an interface's state: its name, with `%` and `.` written `%25` and `%2E`
 * (a bpf filesystem refuses names with a dot, as VLAN interfaces such as `eth0.7` have).
 */
export function pinFolderName(ifname: string): string {
  return ifname.replace(/%/g, "%25").replace(/\./g, "%2E");
}

/** The interface name of a folder of {@link pinFolderName}. */
export function ifnameOfPinFolder(folder: string): string {
  return folder.replace(/%(25|2E)/gi, (_m, h: string) => (h === "25" ? "%" : "."));
}

/** The pin directory of an interface of this network namespace. */
export function pinDirFor(ifname: string, root = stateOptions.pinRoot): string {
  return `${netnsRoot(root)}/${pinFolderName(ifname)}`;
}

/** The pin root a pin directory of {@link pinDirFor} is under. */
export function pinRootOf(dir: string): string {
  return dir.replace(/\/[^/]+\/?$/, "").replace(/\/netns:\d+$/, "") || "/";
}
