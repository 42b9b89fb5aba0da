/**
 * Where einat keeps state that outlives the process, and how a start treats
 * a running einat. Set once by `main.ts` from the command line.
 * @module
 */

/** Default root of the pinned state: one directory per interface below it. */
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

/** The pin directory of an interface. */
export function pinDirFor(ifname: string, root = stateOptions.pinRoot): string {
  return `${root.replace(/\/+$/, "")}/${ifname}`;
}
