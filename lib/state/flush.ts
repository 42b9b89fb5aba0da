/**
 * `einat --flush`: removes the pinned state of interfaces, which drops every
 * mapping they had. Refused while a live einat holds their state (lib/state/pin.ts).
 * @module
 */

import type { InterfaceConfig } from "../config/types.ts";
import { ifIndexToName } from "../ffi/libc.ts";
import * as log from "../log.ts";
import { DEFAULT_PIN_ROOT, pinDirFor } from "./options.ts";
import { flushPins } from "./pin.ts";

/** Runs `--flush`; returns the exit code. */
export function runFlush(pinDir: string | undefined, interfaces: InterfaceConfig[]): number {
  const root = pinDir ?? DEFAULT_PIN_ROOT;
  let code = 0;
  for (const ic of interfaces) {
    const ifname = ic.ifName ?? ifIndexToName(ic.ifIndex ?? 0);
    if (!ifname) {
      console.error(`einat: --flush: ifindex ${ic.ifIndex}: no such interface`);
      code = 2;
      continue;
    }
    const dir = pinDirFor(ifname, root);
    try {
      if (flushPins(dir, ifname)) log.info("pinned state removed", { ifname, dir });
      else log.info("no pinned state", { ifname, dir });
    } catch (e) {
      console.error(`einat: --flush: ${ifname}: ${(e as Error).message}`);
      code = 2;
    }
  }
  return code;
}
