/**
 * systemd's service notification protocol (sd_notify(3)): state lines, one datagram, to the
 * socket named by `$NOTIFY_SOCKET`, which systemd sets for `Type=notify` units. Without it
 * nothing is sent, so the same binary runs anywhere.
 * @module
 */

import { monotonicNs, sendUnixDatagram } from "./ffi/libc.ts";
import * as log from "./log.ts";

let failed = false;

/** Sends `lines` (such as `READY=1`) to systemd; false when there is no socket or it failed. */
export function sdNotify(lines: string[]): boolean {
  const path = Deno.env.get("NOTIFY_SOCKET");
  if (!path) return false;
  const err = sendUnixDatagram(path, new TextEncoder().encode(lines.join("\n")));
  if (err !== 0 && !failed) {
    failed = true; // said once: systemd would time the start out on its own
    log.warn("could not notify systemd", { socket: path, errno: err });
  }
  return err === 0;
}

/** Ready: every interface started (`READY=1`), with a status line for `systemctl status`. */
export function notifyReady(status: string): boolean {
  return sdNotify(["READY=1", `STATUS=${status}`]);
}

/** Reloading the configuration (`RELOADING=1`, dated as `Type=notify-reload` wants it). */
export function notifyReloading(): boolean {
  return sdNotify(["RELOADING=1", `MONOTONIC_USEC=${monotonicNs() / 1000n}`]);
}

/** Stopping: what is attached is being removed. */
export function notifyStopping(): boolean {
  return sdNotify(["STOPPING=1", "STATUS=stopping"]);
}
