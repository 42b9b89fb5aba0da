/**
 * An L3 external interface for the router of a test topology: `tun0` (no Ethernet header) with
 * 198.18.0.1/24, its far end served by tests/lib/tun_echo.ts (UDP `seen` answers from
 * 198.18.1.0/24, routed into it).
 * @module
 */
import { nsExec, type NsProcess, type Topology } from "./netns.ts";

/** The router's address on tun0, and a server address behind it. */
export const TUN_WAN = { router: "198.18.0.1", server: "198.18.1.1" } as const;

/** Creates tun0 in the router (served until `timeoutMs`), addressed and routed; returns its server. */
export async function startTunWan(t: Topology, timeoutMs = 30000): Promise<NsProcess> {
  const tun = t.spawn(t.ns.router, [
    Deno.execPath(),
    "run",
    "-A",
    new URL("./tun_echo.ts", import.meta.url).pathname,
    "--name",
    "tun0",
    "--timeout-ms",
    String(timeoutMs),
  ]);
  await tun.waitForStdout(/ready/);
  for (
    const cmd of [
      `addr add ${TUN_WAN.router}/24 dev tun0`,
      "link set tun0 up",
      "route add 198.18.1.0/24 dev tun0",
    ]
  ) {
    await nsExec(t.ns.router, ["ip", ...cmd.split(" ")]);
  }
  return tun;
}
