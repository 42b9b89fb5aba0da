/**
 * Filtering holds (namespaces): with a few live UDP and TCP mappings, srv1 scans the whole
 * external port range 20000-29999 of the router with UDP datagrams and TCP SYNs (connect
 * attempts) from an address no LAN host ever talked to. Only ports with a live mapping reach
 * a LAN host (tcpdump on both LAN hosts counts what arrives), every other port of the range
 * stays silent, and the router's own services outside the range (TCP 2222, UDP 5353 on the
 * external address) stay reachable. The WAN switch sees no internal source meanwhile.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { capture } from "./lib/capture.ts";
import { nsExecResult, peerCmd, type Topology, withTopology } from "./lib/netns.ts";
import { parseSeen } from "./lib/peer.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };
const FLOWS = new URL("./lib/udp_flows.ts", import.meta.url).pathname;
const SCAN = new URL("./lib/scan.ts", import.meta.url).pathname;
const deno = (script: string, args: string[]) => [
  Deno.execPath(),
  "run",
  "-A",
  "--unstable-net",
  "--no-config",
  "--no-lock",
  script,
  ...args,
];

async function udpMappings(t: Topology, ns: string, to: string, a: number, b: number) {
  const out = await t.exec(ns, deno(FLOWS, ["--to", to, "--ports", `${a}-${b}`]));
  const m = new Map<number, number>(); // internal port -> external port
  for (const line of out.trim().split("\n")) {
    const [p, st, seen] = line.split(" ");
    assertEquals(st, "ok", `mapping from ${ns}:${p}`);
    m.set(Number(p), Number(seen.split(":").pop()));
  }
  return m;
}

/** Destination ports of the packets a LAN capture printed ("IP a.b.c.d.S > e.f.g.h.D: ..."). */
function dstPorts(lines: string[]): number[] {
  return lines.map((l) => Number(/ > [\d.]+\.(\d+):/.exec(l)?.[1] ?? -1)).sort((x, y) => x - y);
}

Deno.test({
  name:
    "filtering: a scan of all 10000 NAT ports (UDP and TCP) reaches LAN hosts only through live mappings; the router's own services outside the range stay reachable",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const scanner = a.srv1[1]; // never contacted by a LAN host
      const wan = await capture(
        t,
        t.ns.wan,
        "br0",
        "src net 192.0.2.0/24 or src net 2001:db8:1::/64",
      );
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        // the router's own services, bound to the external address, outside the NAT range
        const ssh = t.spawn(
          t.ns.router,
          peerCmd("tcp-echo", ["--port", "2222", "--bind", a.routerWan, "--timeout-ms", "60000"]),
        );
        const dns = t.spawn(
          t.ns.router,
          peerCmd("udp-echo", ["--port", "5353", "--bind", a.routerWan, "--timeout-ms", "60000"]),
        );
        const udpEcho = t.spawn(
          t.ns.srv1,
          peerCmd("udp-echo", ["--port", "3478", "--bind", a.srv1[0], "--timeout-ms", "60000"]),
        );
        const tcpEcho = t.spawn(
          t.ns.srv1,
          peerCmd("tcp-echo", ["--port", "8080", "--bind", a.srv1[0], "--timeout-ms", "60000"]),
        );
        for (const p of [ssh, dns, udpEcho, tcpEcho]) await p.waitForStdout(/listening/);

        // live mappings: 5 UDP from lan1, 3 UDP from lan2, one TCP from each
        const u1 = await udpMappings(t, t.ns.lan1, `${a.srv1[0]}:3478`, 42000, 42004);
        const u2 = await udpMappings(t, t.ns.lan2, `${a.srv1[0]}:3478`, 42000, 42002);
        const tcpMap = new Map<string, number>(); // ns -> external port
        for (const [ns, from] of [[t.ns.lan1, "43001"], [t.ns.lan2, "43002"]]) {
          const r = await nsExecResult(
            ns,
            peerCmd("tcp-send", [
              "--to",
              `${a.srv1[0]}:8080`,
              "--from-port",
              from,
              "--data",
              "x",
              "--timeout-ms",
              "5000",
            ]),
          );
          assertEquals(r.code, 0, r.stdout + r.stderr);
          tcpMap.set(ns, Number(parseSeen(r.stdout)[0].split(":").pop()));
        }

        const lanFilter = `src host ${scanner}`;
        const cap1 = await capture(t, t.ns.lan1, "eth0", `${lanFilter} and udp`);
        const cap2 = await capture(t, t.ns.lan2, "eth0", `${lanFilter} and udp`);
        const udpScan = await t.exec(
          t.ns.srv1,
          deno(SCAN, ["udp", "--to", a.routerWan, "--ports", "20000-29999", "--bind", scanner]),
          { timeoutMs: 30000 },
        );
        assertEquals(udpScan.trim(), "sent 10000");
        const got1 = dstPorts(await cap1.stop()), got2 = dstPorts(await cap2.stop());
        assertEquals(got1, [...u1.keys()], "lan1 receives exactly its 5 mapped UDP ports");
        assertEquals(got2, [...u2.keys()], "lan2 receives exactly its 3 mapped UDP ports");

        const syn1 = await capture(t, t.ns.lan1, "eth0", `${lanFilter} and tcp`);
        const syn2 = await capture(t, t.ns.lan2, "eth0", `${lanFilter} and tcp`);
        const tcpScan = await t.exec(
          t.ns.srv1,
          deno(SCAN, [
            "tcp",
            "--to",
            a.routerWan,
            "--ports",
            "20000-29999",
            "--bind",
            scanner,
            "--concurrency",
            "1000",
            "--timeout-ms",
            "500",
          ]),
          { timeoutMs: 50000 },
        );
        const answered = tcpScan.trim().split("\n").filter((l) => !l.startsWith("summary"))
          .map((l) => Number(l.split(" ")[0])).sort((x, y) => x - y);
        assertEquals(
          answered,
          [...tcpMap.values()].sort((x, y) => x - y),
          `only the TCP-mapped ports answer: ${tcpScan}`,
        );
        assert(/timeout=9998 error=0/.test(tcpScan), tcpScan);
        const s1 = (await syn1.stop()).filter((l) => /Flags \[S\]/.test(l));
        const s2 = (await syn2.stop()).filter((l) => /Flags \[S\]/.test(l));
        assertEquals(dstPorts(s1), [43001], "lan1 sees SYNs only on its mapped TCP port");
        assertEquals(dstPorts(s2), [43002], "lan2 sees SYNs only on its mapped TCP port");

        // the router's own services outside the range
        const toSsh = await nsExecResult(
          t.ns.srv1,
          peerCmd("tcp-send", [
            "--to",
            `${a.routerWan}:2222`,
            "--data",
            "hi",
            "--timeout-ms",
            "3000",
          ]),
        );
        assertEquals(toSsh.code, 0, `router TCP 2222: ${toSsh.stdout}${toSsh.stderr}`);
        const toDns = await nsExecResult(
          t.ns.srv1,
          peerCmd("udp-send", [
            "--to",
            `${a.routerWan}:5353`,
            "--bind",
            scanner,
            "--timeout-ms",
            "3000",
          ]),
        );
        assertEquals(toDns.code, 0, `router UDP 5353: ${toDns.stdout}${toDns.stderr}`);
        console.log(
          `scanned 10000 UDP + 10000 TCP ports: UDP reached LAN on ${got1.length + got2.length} ` +
            `mapped ports, TCP answered on ${answered.length} mapped ports, ${
              /timeout=(\d+)/.exec(tcpScan)![1]
            } SYNs dropped`,
        );
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      assertEquals(await wan.stop(), [], "packets with an internal source on the WAN side");
    }),
});
