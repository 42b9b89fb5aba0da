/**
 * Checksum offload end to end. Between veths a locally sent TCP or UDP packet
 * stays CHECKSUM_PARTIAL: its checksum field holds only a pseudo-header seed,
 * and a receiver on another veth trusts it unchecked, so a wrong seed goes
 * unnoticed. Here the interfaces after the NAT have transmit checksumming
 * off (the stack completes the checksum from the seed, as a NIC would) and
 * the receivers have receive checksumming off (their stack verifies it), so a
 * seed einat got wrong makes the receiver drop the packet.
 */
import { assert, assertEquals, assertNotEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { parseSeen } from "./lib/peer.ts";
import {
  nsExecResult,
  type NsProcess,
  peerCmd,
  run,
  spawnInNs,
  testPrefix,
  type Topology,
  withTopology,
} from "./lib/netns.ts";

const COMPAT = new URL("../bpf/einat_compat.bpf.o", import.meta.url).pathname;

const ethtool = (t: Topology, ns: string, dev: string, what: "tx" | "rx") =>
  t.exec(ns, ["ethtool", "-K", dev, what, "off"]);

Deno.test({
  name:
    "offload: CHECKSUM_PARTIAL TCP translated both ways, checksums completed and verified after the NAT (IPv4, IPv6; inline and helpers objects)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withTopology(async (t) => {
      // lan1 and the servers send with offload (PARTIAL); the hops after the NAT complete
      // the checksum (tx off); the final receivers check it (rx off, also on the WAN switch
      // port, which would otherwise mark completed packets as verified).
      await ethtool(t, t.ns.router, "wan0", "tx");
      await ethtool(t, t.ns.router, "vlan1", "tx");
      await ethtool(t, t.ns.wan, "r", "rx");
      for (const ns of [t.ns.lan1, t.ns.srv1, t.ns.srv2]) await ethtool(t, ns, "eth0", "rx");

      // Both objects: inline checksum updates (ip_summed through BTF), and the
      // compatibility object's kernel helpers (lib/nat/loader.ts).
      for (
        const [csum, env] of [["inline", {}], ["helpers", { EINAT_BPF_OBJECT: COMPAT }]] as const
      ) {
        const einat = await startEinat(
          t.ns.router,
          ["-i", "wan0", "--nat44", "--nat66"],
          15000,
          env,
        );
        assert(einat.stderrText().includes(`csum=${csum}`), einat.stderrText());
        try {
          for (
            const [fam, dst] of [[4, t.addrs.v4.srv2[0]], [6, `[${t.addrs.v6.srv2[0]}]`]] as const
          ) {
            const echo = t.spawn(
              t.ns.srv2,
              peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "10000"]),
            );
            await echo.waitForStdout(/listening/);
            const data = `offload-${csum}-v${fam}-`.padEnd(3000, "x"); // several segments each way
            const tcp = await nsExecResult(
              t.ns.lan1,
              peerCmd("tcp-send", ["--to", `${dst}:8080`, "--data", data, "--timeout-ms", "5000"]),
            );
            assertEquals(tcp.code, 0, `${csum} IPv${fam}: ${tcp.stdout}${tcp.stderr}`);
            assert(tcp.stdout.includes(data), `${csum} IPv${fam}: echoed data missing`);
            const local = /local (\S+)/.exec(tcp.stdout)![1];
            const seen = parseSeen(tcp.stdout)[0];
            const routerWan = fam === 4 ? t.addrs.v4.routerWan : `[${t.addrs.v6.routerWan}]`;
            assert(seen.startsWith(`${routerWan}:`), `${csum} IPv${fam} source ${seen}`);
            assertNotEquals(
              seen.split(":").at(-1),
              local.split(":").at(-1),
              `${csum} IPv${fam}: the port changed, so the seed had to leave it out`,
            );
            await echo.status;
          }
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      }
    }),
});

Deno.test({
  name:
    "offload: frames whose IP and UDP headers sit in page fragments (a TAP with IFF_NAPI_FRAGS, GRO off) are translated inbound",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ns = `${testPrefix()}-f${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
    await run(["ip", "netns", "add", ns]);
    const procs: NsProcess[] = [];
    try {
      await run(["ip", "-n", ns, "-batch", "-"], {
        stdin: "link set lo up\naddr add 192.0.2.10/32 dev lo\n",
      });
      // The "server" writes each reply as the Ethernet header (the linear part) and the rest
      // (a page fragment); with GRO off nothing pulls the headers in before TC ingress.
      const tap = spawnInNs(ns, [
        Deno.execPath(),
        "run",
        "-A",
        "--no-config",
        new URL("./lib/tap_frags.ts", import.meta.url).pathname,
        "--name",
        "tap0",
        "--timeout-ms",
        "20000",
      ]);
      procs.push(tap);
      await tap.waitForStdout(/ready/);
      await run(["ip", "-n", ns, "-batch", "-"], {
        stdin: "addr add 203.0.113.1/24 dev tap0\nlink set tap0 up\n" +
          "neigh add 203.0.113.50 lladdr 02:00:00:00:00:50 dev tap0 nud permanent\n",
      });
      await run(["ip", "netns", "exec", ns, "ethtool", "-K", "tap0", "gro", "off"]);
      const einat = await startEinat(ns, ["-i", "tap0"]);
      procs.push(einat);
      try {
        const r = await nsExecResult(
          ns,
          peerCmd("udp-send", [
            "--bind",
            "192.0.2.10",
            "--from-port",
            "40000",
            "--to",
            "203.0.113.50:9",
            "--timeout-ms",
            "3000",
          ]),
        );
        assert(/got 203\.0\.113\.1:\d+ -> 203\.0\.113\.50:9/.test(tap.stdoutText()), "SNAT out");
        assertEquals(r.code, 0, `the reply was not translated back:\n${r.stdout}${r.stderr}`);
        assert(/seen 203\.0\.113\.1:\d+/.test(r.stdout), r.stdout);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    } finally {
      for (const p of procs) if (p.running()) p.kill("SIGKILL");
      await run(["ip", "netns", "del", ns]);
    }
  },
});
