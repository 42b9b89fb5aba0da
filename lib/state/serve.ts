/**
 * The daemon's side of pinned state: load options per interface, the bindings
 * carried over (before attaching) and what happens once the programs are
 * attached (a first sweep, a summary logged).
 * @module
 */

import type { InterfaceConfig } from "../config/types.ts";
import * as log from "../log.ts";
import { type LoadOptions, type NatObject, syncPortHint } from "../nat/loader.ts";
import { expireSessions, noSweep } from "../nat/expire.ts";
import { pinDirFor, stateOptions } from "./options.ts";
import { ensureBpffs, PinDirError } from "./bpffs.ts";
import { StateError } from "./pin.ts";
import { bindingCountAt, setBindingCount } from "../nat/records.ts";

/**
 * The state-related load options of an interface. Without a usable bpf
 * filesystem (none mounted and no privilege to mount one) einat runs
 * without pinned state, as before, and says so; a pin folder with files in it
 * that is not on a bpffs is refused ({@link StateError}).
 */
export function stateLoadOptions(
  ic: InterfaceConfig,
  ifname: string,
): Pick<LoadOptions, "pin" | "fragMaxRecords" | "otherMaxRecords"> {
  const base = { fragMaxRecords: ic.fragTrackMaxRecords, otherMaxRecords: ic.otherMaxRecords };
  try {
    ensureBpffs(stateOptions.pinRoot);
  } catch (e) {
    // A folder einat will not mount over: the operator's choice to correct, not to run without.
    if (e instanceof PinDirError) throw new StateError(e.message);
    log.warn("no pinned state: mappings will not survive a restart", {
      ifname,
      reason: (e as Error).message,
    });
    return base;
  }
  return { ...base, pin: { dir: pinDirFor(ifname), ifname } };
}

/**
 * Once this object is loaded and the mappings of addresses that are not external any more are
 * purged (lib/nat/apply.ts), before its programs are attached: the free-port hint learns the
 * bindings carried over, and a binding count that was not carried over starts at the bindings
 * found. A carried-over count is kept as it is: the programs that share it (a running einat's,
 * under `--replace`, or the filters a killed one left) keep it exact, where this walk would
 * miss the bindings they make behind it. Returns the bindings found.
 */
export function syncBindings(nat: NatObject): number {
  const kept = nat.pins?.reused ?? [];
  // Counts per internal address carried over (lib/state/pin.ts) stand as they are, for the same
  // reason; new ones are made by the walk.
  const bindings = syncPortHint(nat, { hostsKept: kept.includes("map_hosts") });
  if (!kept.includes("map_binding_count") || !kept.includes("map_records")) {
    setBindingCount(nat.maps.bindingCount, BigInt(bindings));
  }
  return bindings;
}

/**
 * {@link syncBindings} at start, before the first attach: there is nothing to find when this load
 * made every map (`fresh`), and the walk of every record (~7 ms at the default sizes) is skipped.
 */
export function syncBindingsAtStart(nat: NatObject): number {
  return nat.fresh ? 0 : syncBindings(nat);
}

/**
 * Once this object's programs are attached: a first sweep removes the sessions that expired
 * (under this configuration's timeouts) while no einat ran, and the state is summarised
 * (`bindings`: what {@link syncBindings} found).
 */
export function afterAttach(nat: NatObject, ifname: string, bindings: number): void {
  // The sweep reads every map_ct entry: its count is the further sessions found. Maps this load
  // created empty hold nothing older than the attach a moment ago: nothing to sweep (a walk of
  // every record, ~7 ms at the default sizes).
  const sweep = nat.fresh ? noSweep() : expireSessions(nat);
  if (!nat.pins) return;
  const sessions = sweep.ctEntries + Number(bindingCountAt(nat.maps.bindingCount, 1) ?? 0n);
  const expired = sweep.expired;
  log.info(nat.fresh ? "pinned state created" : "pinned state reused", {
    ifname,
    dir: nat.pins.dir,
    ...(nat.fresh ? {} : { maps: nat.pins.reused.join(",") }),
    ...(nat.pins.migrated.length ? { carried_over: nat.pins.migrated.join(",") } : {}),
    ...(nat.pins.reset.length ? { recreated: nat.pins.reset.join(",") } : {}),
    bindings,
    sessions,
    expired,
  });
}
