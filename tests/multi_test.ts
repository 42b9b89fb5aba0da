/**
 * Configuration end to end: two WAN links NATed by one process, and an empty
 * protocol range leaving that protocol untranslated.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { nsExec, nsExecResult, peerCmd, type Topology, withTopology } from "./lib/netns.ts";
import { parseSeen, parseUdpReplies } from "./lib/peer.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

async function withConfig(text: string, fn: (file: string) => Promise<void>) {
  const file = await Deno.makeTempFile({ suffix: ".toml" });
  try {
    await Deno.writeTextFile(file, text);
    await fn(file);
  } finally {
    await Deno.remove(file);
  }
}

async function udpSeen(t: Topology, dst: string): Promise<string> {
  const r = await nsExecResult(
    t.ns.lan1,
    peerCmd("udp-send", ["--to", `${dst}:3478`, "--timeout-ms", "3000"]),
  );
  assertEquals(r.code, 0, r.stdout + r.stderr);
  return parseUdpReplies(r.stdout)[0].seen;
}

Deno.test({
  name: "config e2e: two [[interfaces]] NAT two WAN links at once",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const sh = (ns: string, cmd: string) => nsExec(ns, ["ip", ...cmd.split(" ")]);
      await sh(t.ns.router, `link add wan1 type veth peer name r1 netns ${t.ns.wan}`);
      await sh(t.ns.wan, "link set r1 master br0");
      await sh(t.ns.wan, "link set r1 up");
      await sh(t.ns.router, "addr add 198.51.100.1/24 dev wan1");
      await sh(t.ns.router, "link set wan1 up");
      await sh(t.ns.srv1, "addr add 198.51.100.11/24 dev eth0");
      const echo = t.spawn(
        t.ns.srv1,
        peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]),
      );
      await echo.waitForStdout(/listening/);
      await withConfig(
        '[[interfaces]]\nif_name = "wan0"\nnat44 = true\n\n[[interfaces]]\nif_name = "wan1"\nnat44 = true\n',
        async (file) => {
          const einat = await startEinat(t.ns.router, ["-c", file]);
          try {
            assert(
              /einat running interfaces=wan0,wan1/.test(einat.stderrText()),
              einat.stderrText(),
            );
            assert((await udpSeen(t, t.addrs.v4.srv1[0])).startsWith("203.0.113.1:"), "via wan0");
            assert((await udpSeen(t, "198.51.100.11")).startsWith("198.51.100.1:"), "via wan1");
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
        },
      );
    }),
});

Deno.test({
  name: "config e2e: tcp_ranges = [] leaves TCP untranslated while UDP is NATed",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      // a route back, so that untranslated TCP still works and shows its source
      await nsExec(t.ns.srv1, ["ip", "route", "add", "192.0.2.0/24", "via", t.addrs.v4.routerWan]);
      const echo = t.spawn(
        t.ns.srv1,
        peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]),
      );
      await echo.waitForStdout(/listening/);
      const tcpEcho = t.spawn(
        t.ns.srv1,
        peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "10000"]),
      );
      await tcpEcho.waitForStdout(/listening/);
      await withConfig(
        '[defaults]\ntcp_ranges = []\n\n[[interfaces]]\nif_name = "wan0"\nnat44 = true\n',
        async (file) => {
          const einat = await startEinat(t.ns.router, ["-c", file]);
          try {
            assert((await udpSeen(t, t.addrs.v4.srv1[0])).startsWith("203.0.113.1:"), "UDP NATed");
            const tcp = await nsExecResult(
              t.ns.lan1,
              peerCmd("tcp-send", [
                "--to",
                `${t.addrs.v4.srv1[0]}:8080`,
                "--data",
                "x",
                "--timeout-ms",
                "4000",
              ]),
            );
            assertEquals(tcp.code, 0, tcp.stdout + tcp.stderr);
            assert(
              parseSeen(tcp.stdout)[0].startsWith(`${t.addrs.v4.lan1}:`),
              `TCP not NATed: ${tcp.stdout}`,
            );
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
        },
      );
    }),
});

/** wan0 gets 203.0.113.2 too, and srv2 a route with it as source; both servers echo UDP. */
async function fibRoutes(t: Topology): Promise<void> {
  await nsExec(t.ns.router, ["ip", "addr", "add", "203.0.113.2/24", "dev", "wan0"]);
  // srv2 is reached with source .2 (a route `src`); everything else with .1
  await nsExec(t.ns.router, [
    "ip",
    "route",
    "add",
    `${t.addrs.v4.srv2[0]}/32`,
    "dev",
    "wan0",
    "src",
    "203.0.113.2",
  ]);
  for (const ns of [t.ns.srv1, t.ns.srv2]) {
    await t.spawn(ns, peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]))
      .waitForStdout(/listening/);
  }
}

Deno.test({
  name: "config e2e: bpf_fib_lookup_external picks the external address the routes name",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await fibRoutes(t);
      await withConfig(
        '[[interfaces]]\nif_name = "wan0"\nnat44 = true\nbpf_fib_lookup_external = true\n',
        async (file) => {
          const einat = await startEinat(t.ns.router, ["-c", file]);
          try {
            assert(
              (await udpSeen(t, t.addrs.v4.srv1[0])).startsWith("203.0.113.1:"),
              "default route source",
            );
            assert(
              (await udpSeen(t, t.addrs.v4.srv2[0])).startsWith("203.0.113.2:"),
              "the route's src",
            );
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
        },
      );
    }),
});

Deno.test({
  name:
    "config e2e: bpf_fib_lookup_external: a route's source without a slot (external_slots) gives way to the default external, the flow is not refused",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await fibRoutes(t);
      await withConfig(
        '[[interfaces]]\nif_name = "wan0"\nnat44 = true\nbpf_fib_lookup_external = true\n' +
          "external_slots = 1\n",
        async (file) => {
          const einat = await startEinat(t.ns.router, ["-c", file]);
          try {
            assert(/no slot .*addr=203\.0\.113\.2/.test(einat.stderrText()), einat.stderrText());
            assert(
              (await udpSeen(t, t.addrs.v4.srv2[0])).startsWith("203.0.113.1:"),
              "the default external, which has a slot",
            );
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
        },
      );
    }),
});
