/**
 * Hairpinning in namespaces (RFC 4787 REQ-9/9a): a LAN host reaching another
 * LAN host's mapped external port sees it as the first host's external
 * endpoint; the rules and routes are gone after einat exits.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat, waitLog } from "./lib/einat.ts";
import {
  nsExec,
  nsExecResult,
  type NsProcess,
  peerCmd,
  type Topology,
  withTopology,
} from "./lib/netns.ts";
import { parseSeen, parseUdpReplies } from "./lib/peer.ts";
import { capture } from "./lib/capture.ts";
import { startTunWan } from "./lib/tun_wan.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

/**
 * lan2's mapping (port 5000) to `to`, which lan2 then keeps answering (8 s): returns the external
 * endpoint the server saw.
 */
async function lingeringMapping(t: Topology, to: string): Promise<string> {
  const lan2 = t.spawn(
    t.ns.lan2,
    peerCmd("udp-send", [
      "--to",
      to,
      "--from-port",
      "5000",
      "--linger-ms",
      "8000",
      "--timeout-ms",
      "15000",
    ]),
  );
  await lan2.waitForStdout(/seen .* from /, 5000);
  return parseUdpReplies(lan2.stdoutText())[0].seen;
}

/**
 * A TCP echo server in `ns` on `port` (one connection), and a client in `from` sending `data` to
 * `to`: the client's result.
 */
async function tcpEcho(
  t: Topology,
  ns: string,
  port: number,
  from: string,
  to: string,
  data: string,
) {
  const echo = t.spawn(
    ns,
    peerCmd("tcp-echo", ["--port", String(port), "--count", "1", "--timeout-ms", "15000"]),
  );
  await echo.waitForStdout(/listening/);
  return nsExecResult(
    from,
    peerCmd("tcp-send", ["--to", to, "--data", data, "--timeout-ms", "5000"]),
  );
}

/** A config file for wan0 with hairpin routing from br0, `key` (a ranges key) set to `range`. */
function writeHairpinConfig(conf: string, key: string, range: string): Promise<void> {
  return Deno.writeTextFile(
    conf,
    `[defaults]\n${key} = ["${range}"]\n[[interfaces]]\nif_name = "wan0"\nnat44 = true\n` +
      `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["br0"]\n`,
  );
}

/** A UDP echo server on srv1:3478 (30 s), listening. */
async function udpEchoOnSrv1(t: Topology): Promise<void> {
  const echo = t.spawn(t.ns.srv1, peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "30000"]));
  await echo.waitForStdout(/listening/);
}

/** `addr:port`, or `[addr]:port` for IPv6. */
const hostPortOf = (family: 4 | 6, addr: string, port: number) =>
  family === 4 ? `${addr}:${port}` : `[${addr}]:${port}`;

/** UDP from lan1:6000 to `to` (lan2's external endpoint), through the hairpin; its reply. */
async function throughHairpin(t: Topology, to: string, einat: NsProcess) {
  const hp = await nsExecResult(
    t.ns.lan1,
    peerCmd("udp-send", ["--to", to, "--from-port", "6000", "--timeout-ms", "4000"]),
  );
  assertEquals(
    hp.code,
    0,
    `no answer through the hairpin: ${hp.stdout}${hp.stderr}\n${einat.stderrText()}`,
  );
  return parseUdpReplies(hp.stdout)[0];
}

Deno.test({
  name:
    "hairpin: on an L3 external device (TUN: no link-layer address, no neighbours) lan1 reaches lan2's mapping too",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await startTunWan(t);
      const einat = await startEinat(t.ns.router, ["-i", "tun0", "--hairpin-if", "br0"]);
      try {
        assert(/hairpin routing installed/.test(einat.stderrText()), einat.stderrText());
        const table = await nsExec(t.ns.router, ["ip", "route", "show", "table", "4787"]);
        assert(/198\.18\.0\.1 dev tun0/.test(table), table);
        // lan2 makes its mapping through the TUN's far end, then answers whatever arrives.
        const lan2Ext = await lingeringMapping(t, "198.18.1.1:3478");
        assert(lan2Ext.startsWith("198.18.0.1:"), lan2Ext);
        const r = await throughHairpin(t, lan2Ext, einat);
        assert(r.seen.startsWith("198.18.0.1:"), `lan2 saw lan1's external endpoint: ${r.seen}`);
        assertEquals(r.from, lan2Ext, "the reply came back from lan2's external endpoint");
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      const left = await nsExecResult(t.ns.router, ["ip", "route", "show", "table", "4787"]);
      assertEquals(left.stdout.trim(), "", "hairpin table emptied");
    }),
});

Deno.test({
  name:
    "hairpin: lan1 reaches lan2's mapping through the external address and is seen as lan1's external endpoint",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const rulesBefore = await nsExec(t.ns.router, ["ip", "rule", "show"]);
      await udpEchoOnSrv1(t);
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0"]);
      try {
        assert(/hairpin routing installed/.test(einat.stderrText()), einat.stderrText());
        // lan2 creates its mapping, then answers whatever arrives on it.
        const lan2Ext = await lingeringMapping(t, `${a.srv1[0]}:3478`);
        // lan1 creates its own mapping first so we know what it should look like.
        const own = await nsExecResult(
          t.ns.lan1,
          peerCmd("udp-send", [
            "--to",
            `${a.srv1[0]}:3478`,
            "--from-port",
            "6000",
            "--timeout-ms",
            "3000",
          ]),
        );
        const lan1Ext = parseUdpReplies(own.stdout)[0].seen;

        const r = await throughHairpin(t, lan2Ext, einat);
        assertEquals(r.seen, lan1Ext, "lan2 saw lan1 as its external address:port (REQ-9a)");
        assertEquals(r.from, lan2Ext, "the reply came back from lan2's external endpoint");
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      assertEquals(
        await nsExec(t.ns.router, ["ip", "rule", "show"]),
        rulesBefore,
        "rules restored",
      );
      assert(
        /hairpin routing removed family=IPv4 table=4787 routes=[1-9]\d* rules=3/.test(
          einat.stderrText(),
        ),
        einat.stderrText(),
      );
      const table = await nsExecResult(t.ns.router, ["ip", "route", "show", "table", "4787"]);
      assertEquals(table.stdout.trim(), "", "hairpin table emptied");
    }),
});

Deno.test({
  name: "hairpin: TCP to lan2's mapped port through the external address carries data both ways",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const srvEcho = t.spawn(
        t.ns.srv1,
        peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "15000"]),
      );
      await srvEcho.waitForStdout(/listening/);
      // A misspelt internal interface beside the real one: reported, once.
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0", "br9"]);
      try {
        const absent = einat.stderrText().match(/no such internal interface.*internal=br9/g) ?? [];
        assertEquals(absent.length, 1, einat.stderrText());
        assert(!/no such internal interface.*internal=br0/.test(einat.stderrText()));
        // lan2:8080 gets a mapping by talking out first ...
        const out = await nsExecResult(
          t.ns.lan2,
          peerCmd("tcp-send", [
            "--to",
            `${a.srv1[0]}:8080`,
            "--from-port",
            "8080",
            "--data",
            "x",
            "--timeout-ms",
            "4000",
          ]),
        );
        assertEquals(out.code, 0, out.stdout + out.stderr);
        const lan2Ext = parseSeen(out.stdout)[0];
        // ... then serves on that port; lan1 reaches it through the external address.
        const hp = await tcpEcho(t, t.ns.lan2, 8080, t.ns.lan1, lan2Ext, "through-the-hairpin");
        assertEquals(hp.code, 0, `${hp.stdout}${hp.stderr}\n${einat.stderrText()}`);
        assert(hp.stdout.includes("through-the-hairpin"), hp.stdout);
        assert(
          parseSeen(hp.stdout)[0].startsWith(`${a.routerWan}:`),
          `lan2 saw an external source: ${hp.stdout}`,
        );
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

for (const family of [4, 6] as const) {
  Deno.test({
    name:
      `hairpin IPv${family}: an internal host's ICMP error about a hairpinned packet reaches the sender (RFC 5508 REQ-7); a ping to the external address is answered by the router`,
    ...sanitize,
    fn: () =>
      withTopology(async (t) => {
        const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
        const hostPort = (addr: string, port: number) => hostPortOf(family, addr, port);
        await udpEchoOnSrv1(t);
        const einat = await startEinat(
          t.ns.router,
          ["-i", "wan0", "--hairpin-if", "br0", ...(family === 6 ? ["--nat66"] : [])],
        );
        try {
          // lan2 gets a mapping from port 5000, then stops listening there.
          const out = await nsExecResult(
            t.ns.lan2,
            peerCmd("udp-send", [
              "--to",
              hostPort(a.srv1[0], 3478),
              "--from-port",
              "5000",
              "--timeout-ms",
              "3000",
            ]),
          );
          assertEquals(out.code, 0, out.stdout + out.stderr);
          const lan2Ext = parseUdpReplies(out.stdout)[0].seen;
          const extPort = Number(lan2Ext.slice(lan2Ext.lastIndexOf(":") + 1));
          const cap = await capture(t, t.ns.lan1, "eth0", family === 4 ? "icmp" : "icmp6");
          // lan1 sends to that mapping: hairpinned to lan2:5000, which answers port unreachable.
          await nsExecResult(
            t.ns.lan1,
            peerCmd("udp-send", ["--to", lan2Ext, "--from-port", "6000", "--timeout-ms", "1500"]),
          );
          const ping = await nsExecResult(t.ns.lan1, [
            "ping",
            `-${family}`,
            "-c",
            "1",
            "-W",
            "2",
            a.routerWan,
          ]);
          const lines = await cap.stop();
          const text = lines.join("\n");
          const unreachable = family === 4
            ? new RegExp(
              `IP ${a.routerWan} > ${a.lan1}: ICMP ${a.routerWan} udp port ${extPort} unreachable`,
            )
            : new RegExp(
              `IP6 ${a.routerWan} > ${a.lan1}: ICMP6, destination unreachable, unreachable port, ${a.routerWan} udp port ${extPort}`,
            );
          assert(
            unreachable.test(text),
            `lan1 did not get lan2's error from lan2's external address:\n${text}\n${einat.stderrText()}`,
          );
          assertEquals(ping.code, 0, `ping to the external address: ${ping.stdout}${ping.stderr}`);
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      }, { ipv6: family === 6 }),
  });
}

Deno.test({
  name:
    "hairpin: a SIGHUP that restarts the interface keeps its hairpin routing whole (the neighbour entry too: held by both instances)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (range: string) => writeHairpinConfig(conf, "udp_ranges", range);
      const neigh = () => nsExec(t.ns.router, ["ip", "neigh", "show", "dev", "wan0"]);
      const table = () => nsExec(t.ns.router, ["ip", "route", "show", "table", "4787"]);
      try {
        await write("20000-29999");
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        try {
          const before = [await neigh(), await table()];
          assert(/203\.0\.113\.1 .*PERMANENT/.test(before[0]), before[0]);
          await write("30000-39999");
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration reloaded/, 10000);
          assert(/restarting interface/.test(einat.stderrText()), einat.stderrText());
          assertEquals([await neigh(), await table()], before, "hairpin routing as before");
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        assertEquals((await table()).trim(), "", "hairpin table emptied at exit");
        assert(!/203\.0\.113\.1 .*PERMANENT/.test(await neigh()), "neighbour entry removed");
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "hairpin: the WAN link taken down and up gets its hairpin routes back; an address change re-routes without removing a rule or route both keep",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      await udpEchoOnSrv1(t);
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0"]);
      const table = () => nsExec(t.ns.router, ["ip", "route", "show", "table", "4787"]);
      try {
        const routes = await table();
        assert(routes.trim() !== "", "hairpin routes installed");
        await nsExec(t.ns.router, ["ip", "link", "set", "wan0", "down"]);
        assertEquals((await table()).trim(), "", "the kernel drops them with the link");
        await nsExec(t.ns.router, ["ip", "link", "set", "wan0", "up"]);
        await waitLog(einat, /hairpin routes restored .*routes=1/, 10000);
        assertEquals(await table(), routes);
        const lan2Ext = await lingeringMapping(t, `${a.srv1[0]}:3478`);
        const r = await throughHairpin(t, lan2Ext, einat);
        assertEquals(r.from, lan2Ext, "hairpinning works again");

        // A second address: its route is added, and nothing einat holds is deleted meanwhile.
        const monitor = t.spawn(t.ns.router, ["ip", "monitor", "route", "rule"]);
        await new Promise((r) => setTimeout(r, 300));
        await nsExec(t.ns.router, ["ip", "addr", "add", "203.0.113.9/24", "dev", "wan0"]);
        await waitLog(einat, /external addresses changed/, 10000);
        await new Promise((r) => setTimeout(r, 500));
        monitor.kill("SIGTERM");
        const seen = monitor.stdoutText();
        assert(/203\.0\.113\.9 .*table 4787/.test(seen), `its route added:\n${seen}`);
        assert(!/^Deleted/m.test(seen), `nothing deleted on the way:\n${seen}`);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

for (const family of [4, 6] as const) {
  Deno.test({
    name:
      `hairpin IPv${family}: with two external addresses each gets its route, none a gateway for the other (IPv6 refuses a local one), hairpinning works, and the router's own TCP service on its external address is reached from inside`,
    ...sanitize,
    fn: () =>
      withTopology(async (t) => {
        const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
        const second = family === 4 ? "203.0.113.5" : "2001:db8:2::5";
        const hostPort = (addr: string, port: number) => hostPortOf(family, addr, port);
        await nsExec(t.ns.router, [
          "ip",
          "addr",
          "add",
          `${second}/${family === 4 ? 24 : 64}`,
          "dev",
          "wan0",
          ...(family === 6 ? ["nodad"] : []),
        ]);
        await udpEchoOnSrv1(t);
        const einat = await startEinat(
          t.ns.router,
          ["-i", "wan0", "--hairpin-if", "br0", ...(family === 6 ? ["--nat66", "--nat44"] : [])],
        );
        try {
          assert(!/hairpin routing not installed/.test(einat.stderrText()), einat.stderrText());
          const routes = await nsExec(t.ns.router, [
            "ip",
            `-${family}`,
            "route",
            "show",
            "table",
            "4787",
          ]);
          for (const addr of [a.routerWan, second]) {
            assert(new RegExp(`^${addr} dev wan0`, "m").test(routes), routes);
          }
          assert(!/ via /.test(routes), `no gateway: ${routes}`);
          const lan2Ext = await lingeringMapping(t, hostPort(a.srv1[0], 3478));
          const r = await throughHairpin(t, lan2Ext, einat);
          assertEquals(r.from, lan2Ext, "hairpinned to lan2 and back");
          // The router's own TCP service on its external address (outside the NAT's ranges):
          // reached from inside, data and all (the TCP rules match the NAT's ports only).
          const to = hostPort(a.routerWan, 2222);
          const svc = await tcpEcho(t, t.ns.router, 2222, t.ns.lan1, to, "to-the-router");
          assertEquals(svc.code, 0, `${svc.stdout}${svc.stderr}`);
          assert(svc.stdout.includes("to-the-router"), svc.stdout);
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      }),
  });
}

Deno.test({
  name:
    "hairpin: TCP rules follow the TCP ranges; rules of other ranges (a reload's) or of an earlier einat (any port) are removed",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (range: string) => writeHairpinConfig(conf, "tcp_ranges", range);
      const tcpRules = async () =>
        (await nsExec(t.ns.router, ["ip", "rule", "show"])).split("\n").filter((l) =>
          /iif br0 ipproto tcp/.test(l)
        ).map((l) => l.replace(/^\d+:\s+/, "").trim());
      try {
        // An earlier einat's any-port TCP rule, left behind.
        await nsExec(t.ns.router, [
          "ip",
          "rule",
          "add",
          "pref",
          "100",
          "iif",
          "br0",
          "ipproto",
          "tcp",
          "lookup",
          "4787",
        ]);
        await write("20000-29999");
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        try {
          assert(
            /stale hairpin rules removed .*rules=1/.test(einat.stderrText()),
            einat.stderrText(),
          );
          assertEquals(await tcpRules(), [
            "from all iif br0 ipproto tcp dport 20000-29999 lookup 4787",
          ]);
          await write("30000-30999");
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration reloaded/, 10000);
          assertEquals(await tcpRules(), [
            "from all iif br0 ipproto tcp dport 30000-30999 lookup 4787",
          ]);
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        assertEquals(await tcpRules(), [], "none left at exit");
      } finally {
        await Deno.remove(conf);
      }
    }),
});
