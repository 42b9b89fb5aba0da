/**
 * Port exhaustion in namespaces: einat with a 16-port UDP range and a 1-port TCP range, short
 * UDP timeouts (10 s: long enough for a loaded host, see UDP_TIMEOUT_S). More flows than ports
 * from lan1 and lan2: the extra ones are refused with ICMP 3/13 (TCP connect fails at once), the
 * old ones keep their ports, and einat warns of the refusals; once the old flows expire their
 * ports are handed out again. Meanwhile the WAN switch captures every packet with
 * an internal source: there must be none.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { nsExecResult, peerCmd, type Topology, withTopology } from "./lib/netns.ts";
import { capture } from "./lib/capture.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };
const FLOWS = new URL("./lib/udp_flows.ts", import.meta.url).pathname;

/** Runs udp_flows.ts in `ns`: ports a..b to `to`; returns port -> seen endpoint or null. */
async function flows(
  t: Topology,
  ns: string,
  to: string,
  a: number,
  b: number,
): Promise<Map<number, string | null>> {
  const cmd = [
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
    `${a}-${b}`,
  ];
  const out = await t.exec(ns, cmd, { timeoutMs: 20000 });
  const m = new Map<number, string | null>();
  for (const line of out.trim().split("\n")) {
    const [p, st, seen] = line.split(" ");
    m.set(Number(p), st === "ok" ? seen : null);
  }
  return m;
}

/** The external port of a "203.0.113.1:P" endpoint. */
const portOf = (seen: string) => Number(seen.split(":").pop());

/**
 * The UDP timeout of the test (timeout_udp_min and timeout_udp_default: the flows are answered,
 * so theirs is the default). The 16 old flows must outlive the refused 4 and lan1's second
 * round (1.6 s on an idle host, several times that on a loaded one) and then expire.
 */
const UDP_TIMEOUT_S = 10;

Deno.test({
  name:
    "exhaustion: 16 UDP ports, 20 flows: 4 refused with ICMP 3/13 and a warning, old flows keep their ports, ports reused after expiry; TCP refused at once; nothing internal leaks",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      await Deno.writeTextFile(
        conf,
        [
          "[defaults]",
          'udp_ranges = ["20000-20015"]',
          'tcp_ranges = ["20000-20000"]',
          "[[interfaces]]",
          'if_name = "wan0"',
          "nat44 = true",
          `timeout_udp_min = "${UDP_TIMEOUT_S}s"`,
          `timeout_udp_default = "${UDP_TIMEOUT_S}s"`,
        ].join("\n"),
      );
      const a = t.addrs.v4;
      const wan = await capture(
        t,
        t.ns.wan,
        "br0",
        "src net 192.0.2.0/24 or src net 2001:db8:1::/64",
      );
      const icmp2 = await capture(t, t.ns.lan2, "eth0", "icmp");
      const einat = await startEinat(t.ns.router, ["-c", conf]);
      try {
        const echo = t.spawn(
          t.ns.srv1,
          peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "60000", "--count", "1000"]),
        );
        await echo.waitForStdout(/listening/);
        const to = `${a.srv1[0]}:3478`;

        // 16 flows fill the range
        const f1 = await flows(t, t.ns.lan1, to, 41000, 41009);
        const f2 = await flows(t, t.ns.lan2, to, 41000, 41005);
        const first = [...f1.values(), ...f2.values()];
        assert(first.every((s) => s !== null), `every flow of the first 16 works: ${first}`);
        const ports = first.map((s) => portOf(s!));
        assertEquals(new Set(ports).size, 16, "16 distinct external ports");
        assert(ports.every((p) => p >= 20000 && p <= 20015), `ports in range: ${ports}`);

        // 4 more: refused, with ICMP 3/13 back to lan2
        const f3 = await flows(t, t.ns.lan2, to, 41006, 41009);
        assert([...f3.values()].every((s) => s === null), `the 17th-20th flows are refused`);
        const prohibited = icmp2.lines().filter((l) => /admin prohibited/.test(l));
        assert(prohibited.length >= 1, `ICMP 3/13 seen by lan2:\n${icmp2.lines().join("\n")}`);
        // ... and the daemon says so: one warning at the next sweep (every ~1 s here), naming
        // the refusals and what to widen
        const warned = /WARN +new mappings refused .*ifname=wan0 drop_no_port=(\d+) .*port ranges/;
        const end = Date.now() + 5000;
        while (!warned.test(einat.stderrText()) && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 100));
        }
        const w = einat.stderrText().match(warned);
        assert(w !== null, `a warning of the refused flows:\n${einat.stderrText()}`);
        assert(Number(w[1]) >= 4, `the 4 refused flows counted: ${w[0]}`);

        // the old flows keep their ports
        const again = await flows(t, t.ns.lan1, to, 41000, 41009);
        const lastUse = Date.now(); // of every old mapping (lan2's were used before)
        for (const [p, seen] of again) assertEquals(seen, f1.get(p), `lan1:${p} kept its port`);

        // TCP: one port; the first connection holds it, the second fails at once
        const tcpEcho = t.spawn(
          t.ns.srv1,
          peerCmd("tcp-echo", ["--port", "8080", "--count", "2", "--timeout-ms", "20000"]),
        );
        await tcpEcho.waitForStdout(/listening/);
        const c1 = await nsExecResult(
          t.ns.lan1,
          peerCmd("tcp-send", ["--to", `${a.srv1[0]}:8080`, "--data", "x", "--timeout-ms", "5000"]),
        );
        assertEquals(c1.code, 0, c1.stdout + c1.stderr);
        const t0 = Date.now();
        const c2 = await nsExecResult(
          t.ns.lan2,
          peerCmd("tcp-send", ["--to", `${a.srv1[0]}:8080`, "--data", "y", "--timeout-ms", "5000"]),
        );
        assert(c2.code !== 0, `second TCP connection refused: ${c2.stdout}`);
        assert(Date.now() - t0 < 4000, "refused at once (ICMP 3/13), not by a timeout");

        // after expiry (UDP_TIMEOUT_S since their last packet; the sweep runs every second) the
        // refused flows get ports: tried from then on, for as long again at most
        const expired = lastUse + UDP_TIMEOUT_S * 1000;
        await new Promise((r) => setTimeout(r, Math.max(0, expired - Date.now())));
        let f4 = await flows(t, t.ns.lan2, to, 41006, 41009);
        while ([...f4.values()].includes(null) && Date.now() < expired + UDP_TIMEOUT_S * 1000) {
          await new Promise((r) => setTimeout(r, 500));
          f4 = await flows(t, t.ns.lan2, to, 41006, 41009);
        }
        const reused = [...f4.values()];
        assert(reused.every((s) => s !== null), `after expiry the new flows work: ${reused}`);
        assert(
          reused.every((s) => portOf(s!) >= 20000 && portOf(s!) <= 20015),
          "reused ports from the range",
        );
        // the TCP refusal came within the minute: no second warning
        const warnings = einat.stderrText().split("\n").filter((l) => warned.test(l));
        assertEquals(warnings.length, 1, `one warning a minute:\n${warnings.join("\n")}`);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
        await Deno.remove(conf);
        await icmp2.stop();
      }
      const leaked = await wan.stop();
      assertEquals(leaked, [], "packets with an internal source on the WAN side");
    }),
});
