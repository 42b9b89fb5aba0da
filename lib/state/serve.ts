/**
 * The daemon's side of pinned state: load options per interface and what
 * happens once the programs are attached (a first sweep, a summary logged).
 * @module
 */

import type { InterfaceConfig } from "../config/types.ts";
import * as log from "../log.ts";
import { type LoadOptions, type NatObject, syncPortHint } from "../nat/loader.ts";
import { expireSessions } from "../nat/expire.ts";
import { pinDirFor, stateOptions } from "./options.ts";
import { ensureBpffs } from "./bpffs.ts";
import { bindingCountAt } from "../nat/records.ts";

/**
 * The state-related load options of an interface. Without a usable bpf
 * filesystem (none mounted and no privilege to mount one) einat runs
 * without pinned state, as before, and says so.
 */
export function stateLoadOptions(
  ic: InterfaceConfig,
  ifname: string,
): Pick<LoadOptions, "pin" | "fragMaxRecords"> {
  const base = { fragMaxRecords: ic.fragTrackMaxRecords };
  try {
    ensureBpffs(stateOptions.pinRoot);
  } catch (e) {
    log.warn("no pinned state: mappings will not survive a restart", {
      ifname,
      reason: (e as Error).message,
    });
    return base;
  }
  return { ...base, pin: { dir: pinDirFor(ifname), ifname } };
}

/**
 * Once this object's programs are attached: the free-port hint learns the
 * carried-over bindings, a first sweep removes the sessions that expired
 * (under this configuration's timeouts) while no einat ran, and the state
 * is summarised.
 */
export function afterAttach(nat: NatObject, ifname: string): void {
  // first: expiring sessions then clear their bindings' bits; it counts the bindings and the
  // sessions inline in them (in the program: a walk of every record here grew the daemon by
  // ~5 MiB)
  const bindings = syncPortHint(nat);
  // The sweep reads every map_ct entry: its count is the further sessions found.
  const sweep = expireSessions(nat);
  if (!nat.pins) return;
  const sessions = sweep.ctEntries + Number(bindingCountAt(nat.maps.bindingCount, 1) ?? 0n);
  const expired = sweep.expired;
  const fresh = nat.pins.reused.length === 0;
  log.info(fresh ? "pinned state created" : "pinned state reused", {
    ifname,
    dir: nat.pins.dir,
    ...(fresh ? {} : { maps: nat.pins.reused.join(",") }),
    ...(nat.pins.reset.length ? { recreated: nat.pins.reset.join(",") } : {}),
    bindings,
    sessions,
    expired,
  });
}
