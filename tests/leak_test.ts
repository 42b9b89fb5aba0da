/**
 * No internal address leaks to the WAN (namespaces): the WAN switch captures every packet with
 * a source in 192.0.2.0/24 or 2001:db8:1::/64 while both LAN hosts ping (IPv4 and IPv6) and
 * open UDP flows, and the router's external addresses are swapped twice under that load
 * (einat follows the change). The capture must stay empty. (Load alone and port exhaustion are
 * covered the same way in filtering_test.ts and exhaustion_test.ts.)
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { capture } from "./lib/capture.ts";
import { peerCmd, withTopology } from "./lib/netns.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };
const FLOWS = new URL("./lib/udp_flows.ts", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name:
    "no leak: no internal source on the WAN during load and while the external addresses change",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a4 = t.addrs.v4, a6 = t.addrs.v6;
      const wan = await capture(
        t,
        t.ns.wan,
        "br0",
        "src net 192.0.2.0/24 or src net 2001:db8:1::/64",
      );
      const all = await capture(t, t.ns.wan, "br0", "ip or ip6");
      // deleting the primary address promotes the new one instead of removing it too
      await t.exec(t.ns.router, ["sysctl", "-q", "-w", "net.ipv4.conf.wan0.promote_secondaries=1"]);
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
      try {
        const echo = t.spawn(
          t.ns.srv1,
          peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "30000", "--count", "100000"]),
        );
        await echo.waitForStdout(/listening/);
        const pings = [
          t.spawn(t.ns.lan1, ["ping", "-q", "-i", "0.02", "-c", "250", "-W", "1", a4.srv1[0]]),
          t.spawn(t.ns.lan2, ["ping", "-q", "-i", "0.02", "-c", "250", "-W", "1", a4.srv2[0]]),
          t.spawn(t.ns.lan1, ["ping", "-q", "-i", "0.02", "-c", "250", "-W", "1", a6.srv1[0]]),
          t.spawn(t.ns.lan2, ["ping", "-q", "-i", "0.02", "-c", "250", "-W", "1", a6.srv2[0]]),
        ];
        let loadError: unknown = null;
        const udpLoad = (async () => {
          for (let round = 0; round < 8; round++) {
            for (
              const [ns, to] of [[t.ns.lan1, `${a4.srv1[0]}:3478`], [
                t.ns.lan2,
                `[${a6.srv1[0]}]:3478`,
              ]]
            ) {
              await t.exec(ns, [
                Deno.execPath(),
                "run",
                "-A",
                "--unstable-net",
                "--no-config",
                "--no-lock",
                FLOWS,
                "--to",
                to,
                "--ports",
                `${44000 + round * 10}-${44009 + round * 10}`,
                "--timeout-ms",
                "300",
              ]);
            }
          }
        })().catch((e) => loadError = e);
        const swap = async (from4: string, to4: string, from6: string, to6: string) => {
          await t.exec(t.ns.router, ["ip", "addr", "add", `${to4}/24`, "dev", "wan0"]);
          await t.exec(t.ns.router, ["ip", "addr", "add", `${to6}/64`, "dev", "wan0", "nodad"]);
          await t.exec(t.ns.router, ["ip", "addr", "del", `${from4}/24`, "dev", "wan0"]);
          await t.exec(t.ns.router, ["ip", "addr", "del", `${from6}/64`, "dev", "wan0"]);
        };
        await sleep(1500);
        await swap(a4.routerWan, "203.0.113.2", a6.routerWan, "2001:db8:2::2");
        await sleep(1500);
        await swap("203.0.113.2", a4.routerWan, "2001:db8:2::2", a6.routerWan);
        await udpLoad;
        assertEquals(loadError, null);
        for (const p of pings) await p.output(15000);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      const wanLines = await all.stop();
      const total = wanLines.length;
      assert(
        wanLines.some((l) => /IP 203\.0\.113\.2(\.\d+)? > /.test(l)),
        "during the swap, traffic left from the new address (einat followed the change)",
      );
      const leaked = await wan.stop();
      console.log(`${total} packets on the WAN, ${leaked.length} with an internal source`);
      assert(total > 1000, `load reached the WAN: ${total} packets`);
      assertEquals(leaked, [], "packets with an internal source on the WAN side");
    }),
});
