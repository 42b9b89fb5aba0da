/**
 * `einat --flush`: removes the pinned state of interfaces, which drops every
 * mapping they had. Refused while a live einat holds their state (lib/state/pin.ts).
 * @module
 */

import type { InterfaceConfig } from "../config/types.ts";
import { ifIndexToName } from "../ffi/libc.ts";
import * as log from "../log.ts";
import { BusyError } from "../nat/attach.ts";
import { DEFAULT_PIN_ROOT, netnsRoot, pinDirFor } from "./options.ts";
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
      if (flushPins(dir, ifname)) {
        log.info("pinned state removed", { ifname, dir });
        removeEmptyParents(root);
      } else log.info("no pinned state", { ifname, dir });
    } catch (e) {
      const why = e instanceof BusyError
        ? `einat (pid ${e.pid}) serves it and holds its state; stop that einat first`
        : (e as Error).message;
      console.error(`einat: --flush: ${ifname}: ${why}`);
      code = 2;
    }
  }
  return code;
}

/**
 * Removes the folders einat made above an interface's state once they hold nothing: this
 * namespace's (`<root>/netns:<inode>`), then the default root; a --pin-dir given stays.
 */
function removeEmptyParents(root: string): void {
  const nsRoot = netnsRoot(root);
  for (const dir of [nsRoot !== root ? nsRoot : null, root === DEFAULT_PIN_ROOT ? root : null]) {
    if (!dir) continue;
    try {
      Deno.removeSync(dir); // refused while it holds anything
    } catch { /* not empty, or gone */ }
  }
}
