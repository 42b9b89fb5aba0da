/**
 * End to end in network namespaces: two LAN hosts behind a router running
 * einat, two servers with two addresses each on the WAN side.
 */
import { assert, assertEquals, assertNotEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { startUdpEchoes, traceroute, udpToEach } from "./lib/traffic.ts";
import { parseSeen, parseUdpReplies } from "./lib/peer.ts";
import { buildPacket, fragment } from "./lib/packet.ts";
import { capture } from "./lib/capture.ts";
import {
  nsExec,
  nsExecResult,
  type NsProcess,
  peerCmd,
  run,
  runResult,
  type Topology,
  withTopology,
} from "./lib/netns.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

/**
 * lan1's UDP mapping: an echo on srv1:3478 answers lan1 once, then lan1 lingers `lingerMs`
 * answering whatever reaches its port. Returns lan1's process and the mapping's external port.
 */
async function lan1Mapping(
  t: Topology,
  family: 4 | 6,
  lingerMs: number,
): Promise<{ lan1: NsProcess; extPort: number }> {
  const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
  const echo = t.spawn(
    t.ns.srv1,
    peerCmd("udp-echo", ["--port", "3478", "--count", "1", "--timeout-ms", "8000"]),
  );
  await echo.waitForStdout(/listening/);
  const lan1 = t.spawn(
    t.ns.lan1,
    peerCmd("udp-send", [
      "--to",
      family === 4 ? `${a.srv1[0]}:3478` : `[${a.srv1[0]}]:3478`,
      "--from-port",
      "5000",
      "--linger-ms",
      String(lingerMs),
      "--timeout-ms",
      String(lingerMs + 4000),
    ]),
  );
  await lan1.waitForStdout(/ from /, 5000);
  const ext = parseUdpReplies(lan1.stdoutText())[0].seen;
  return { lan1, extPort: Number(ext.slice(ext.lastIndexOf(":") + 1)) };
}

/**
 * A 1000-byte UDP datagram from srv1:3479 to the router's mapping `extPort`, in two fragments
 * (IP ID `id`, `ttl` the hop limit), and a function that sends frames from srv1 as they are.
 */
function inboundFragments(t: Topology, family: 4 | 6, extPort: number, id: number, ttl = 64) {
  const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
  const frame = buildPacket({
    family,
    src: a.srv1[0],
    dst: a.routerWan,
    proto: "udp",
    sport: 3479,
    dport: extPort,
    ttl,
    payload: new Uint8Array(1000).fill(0x66),
  });
  const send = (frames: Uint8Array[]) => rawSend(t.ns.srv1, frames, 50);
  return { fragments: fragment(frame, family, id, 512), send };
}

/** Sends each frame's IP packet as it is from namespace `ns` (peer.ts raw-send), in order. */
async function rawSend(ns: string, frames: Uint8Array[], gapMs: number): Promise<void> {
  const hex = (f: Uint8Array) =>
    [...f.slice(14)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const r = await nsExecResult(
    ns,
    peerCmd("raw-send", [...frames.flatMap((f) => ["--packet", hex(f)]), "--gap-ms", `${gapMs}`]),
  );
  assertEquals(r.code, 0, r.stdout + r.stderr);
}

Deno.test({
  name:
    "e2e: full-cone NAT44 for UDP (EIM, EIF), TCP, ping and ICMP timestamps (clockdiff); nothing left after exit",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        await startUdpEchoes(t);

        // lan1:40000 to both servers: both see the same external endpoint (EIM).
        const { client: lan1, replies } = await udpToEach(t, t.ns.lan1, [
          `${a.srv1[0]}:3478`,
          `${a.srv2[0]}:3478`,
        ], 40000);
        assertEquals(replies.length, 2, lan1.stdoutText());
        assertEquals(
          replies[0].seen,
          replies[1].seen,
          "same external endpoint towards both servers",
        );
        const [extAddr, extPort] = replies[0].seen.split(":");
        assertEquals(extAddr, a.routerWan, "source is the router's external address");

        // A third endpoint that lan1 never sent to reaches the mapping (EIF).
        const third = await nsExecResult(
          t.ns.srv1,
          peerCmd("udp-send", [
            "--bind",
            a.srv1[1],
            "--to",
            `${a.routerWan}:${extPort}`,
            "--timeout-ms",
            "5000",
          ]),
        );
        assertEquals(
          third.code,
          0,
          `third endpoint got no answer from lan1: ${third.stdout}${third.stderr}`,
        );
        assertEquals(
          parseUdpReplies(third.stdout)[0].seen,
          `${a.srv1[1]}:${Number(third.stdout.match(/local \S+:(\d+)/)![1])}`,
        );

        // lan2 with the same source port gets another external port.
        const lan2 = await nsExecResult(
          t.ns.lan2,
          peerCmd("udp-send", [
            "--to",
            `${a.srv1[0]}:3478`,
            "--from-port",
            "40000",
            "--timeout-ms",
            "5000",
          ]),
        );
        assertEquals(lan2.code, 0, lan2.stdout + lan2.stderr);
        const lan2Seen = parseUdpReplies(lan2.stdout)[0].seen;
        assertEquals(lan2Seen.split(":")[0], a.routerWan);
        assertNotEquals(lan2Seen, replies[0].seen, "lan2 gets a different external port");

        // TCP carries data both ways.
        const tcpEcho = t.spawn(
          t.ns.srv2,
          peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "10000"]),
        );
        await tcpEcho.waitForStdout(/listening/);
        const tcp = await nsExecResult(
          t.ns.lan1,
          peerCmd("tcp-send", [
            "--to",
            `${a.srv2[1]}:8080`,
            "--data",
            "ping-over-tcp",
            "--timeout-ms",
            "5000",
          ]),
        );
        assertEquals(tcp.code, 0, tcp.stdout + tcp.stderr);
        assert(tcp.stdout.includes("ping-over-tcp"), `echoed data missing: ${tcp.stdout}`);
        assertEquals(
          parseSeen(tcp.stdout)[0].split(":")[0],
          a.routerWan,
          "TCP source is the external address",
        );

        // ping
        const ping = await nsExecResult(t.ns.lan1, [
          "ping",
          "-c",
          "2",
          "-i",
          "0.2",
          "-W",
          "2",
          a.srv1[0],
        ]);
        assertEquals(ping.code, 0, ping.stdout + ping.stderr);

        // ICMP timestamp queries (RFC 5508 REQ-1): clockdiff measures srv1's clock through them.
        const clock = await nsExecResult(t.ns.lan1, ["clockdiff", a.srv1[0]]);
        assertEquals(clock.code, 0, clock.stdout + clock.stderr);
        assert(/^\d+ -?\d+ -?\d+\s*$/.test(clock.stdout), clock.stdout); // time, deltas (ms)
      } finally {
        const code = await stopEinat(einat);
        assertEquals(code, 0, einat.stderrText());
      }
      const filters =
        await nsExec(t.ns.router, ["tc", "filter", "show", "dev", "wan0", "ingress"]) +
        await nsExec(t.ns.router, ["tc", "filter", "show", "dev", "wan0", "egress"]);
      assertEquals(filters.trim(), "", "no filter left");
      const qdisc = await nsExec(t.ns.router, ["tc", "qdisc", "show", "dev", "wan0"]);
      assert(!qdisc.includes("clsact"), `clsact left behind: ${qdisc}`);
    }),
});

Deno.test({
  name: "e2e: NAT66 alongside NAT44: UDP EIM/EIF, TCP and ping over IPv6; UDP traceroute completes",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v6;
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
      try {
        await startUdpEchoes(t);
        const { client: lan1, replies } = await udpToEach(t, t.ns.lan1, [
          `[${a.srv1[0]}]:3478`,
          `[${a.srv2[0]}]:3478`,
        ], 40000);
        assertEquals(replies.length, 2, lan1.stdoutText());
        assertEquals(replies[0].seen, replies[1].seen, "EIM over IPv6");
        const m = /^\[(.+)\]:(\d+)$/.exec(replies[0].seen)!;
        assertEquals(m[1], a.routerWan);
        const third = await nsExecResult(
          t.ns.srv1,
          peerCmd("udp-send", [
            "--bind",
            a.srv1[1],
            "--to",
            `[${a.routerWan}]:${m[2]}`,
            "--timeout-ms",
            "5000",
          ]),
        );
        assertEquals(third.code, 0, `EIF over IPv6: ${third.stdout}${third.stderr}`);

        const tcpEcho = t.spawn(
          t.ns.srv2,
          peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "10000"]),
        );
        await tcpEcho.waitForStdout(/listening/);
        const tcp = await nsExecResult(
          t.ns.lan1,
          peerCmd("tcp-send", [
            "--to",
            `[${a.srv2[1]}]:8080`,
            "--data",
            "v6-data",
            "--timeout-ms",
            "5000",
          ]),
        );
        assertEquals(tcp.code, 0, tcp.stdout + tcp.stderr);
        assert(tcp.stdout.includes("v6-data"));
        assert(parseSeen(tcp.stdout)[0].startsWith(`[${a.routerWan}]:`), tcp.stdout);

        const ping = await nsExecResult(t.ns.lan1, [
          "ping",
          "-6",
          "-c",
          "2",
          "-i",
          "0.2",
          "-W",
          "2",
          a.srv1[0],
        ]);
        assertEquals(ping.code, 0, ping.stdout + ping.stderr);

        // UDP traceroute ends with the server's port unreachable, which only
        // reaches lan1 if einat translates the ICMP error back.
        for (const [fam, dst] of [["-4", t.addrs.v4.srv1[0]], ["-6", a.srv1[0]]] as const) {
          const tr = await traceroute(t.ns.lan1, fam, dst);
          assertEquals(tr.code, 0, tr.stdout + tr.stderr);
          assert(tr.hops.at(-1)!.includes(dst), `traceroute ${fam} reached ${dst}:\n${tr.stdout}`);
        }
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "e2e: port exhaustion refuses new flows with ICMP 3/13 (ping says 'Packet filtered'); old ones keep working",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      try {
        await Deno.writeTextFile(
          conf,
          [
            "[defaults]",
            'icmp_ranges = ["100-100"]',
            'icmp_in_ranges = ["100-100"]',
            'icmp_out_ranges = ["100-100"]',
            "[[interfaces]]",
            'if_name = "wan0"',
            "nat44 = true",
          ].join("\n"),
        );
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        try {
          const dst = t.addrs.v4.srv1[0];
          const long = t.spawn(t.ns.lan1, ["ping", "-c", "8", "-i", "0.25", "-W", "2", dst]);
          await long.waitForStdout(/icmp_seq=2/, 5000);
          const refused = await nsExecResult(t.ns.lan2, ["ping", "-c", "1", "-W", "2", dst]);
          assert(refused.code !== 0, refused.stdout);
          assert(/Packet filtered/.test(refused.stdout), `expected ICMP 3/13:\n${refused.stdout}`);
          const first = await long.output(10000);
          assertEquals(first.code, 0, `the existing mapping keeps working:\n${first.stdout}`);
          assert(/8 received/.test(first.stdout), first.stdout);
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name: "e2e: fragmented UDP datagrams (IPv4 and IPv6) are translated fragment by fragment",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
      try {
        const echo = t.spawn(
          t.ns.srv1,
          peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]),
        );
        await echo.waitForStdout(/listening/);
        const big = "f".repeat(4000); // > 1500: the sender fragments it
        for (const dst of [`${t.addrs.v4.srv1[0]}:3478`, `[${t.addrs.v6.srv1[0]}]:3478`]) {
          const r = await nsExecResult(
            t.ns.lan1,
            peerCmd("udp-send", ["--to", dst, "--payload", big, "--timeout-ms", "4000"]),
          );
          assertEquals(r.code, 0, `${dst}: ${r.stdout}${r.stderr}`);
          const seen = parseUdpReplies(r.stdout)[0].seen;
          const ext = dst.startsWith("[")
            ? `[${t.addrs.v6.routerWan}]:`
            : `${t.addrs.v4.routerWan}:`;
          assert(seen.startsWith(ext), `the server reassembled a datagram from ${seen}`);
        }
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "e2e: two LAN hosts' fragmented IPv4 datagrams with one ID, interleaved, both reach the server whole: each leaves with an ID of its own (RFC 6864)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        const echo = t.spawn(
          t.ns.srv1,
          peerCmd("udp-echo", ["--port", "3478", "--count", "2", "--timeout-ms", "8000"]),
        );
        await echo.waitForStdout(/listening/);
        // The same ID from both hosts, as two hosts' counters can meet: from one external
        // address, unchanged, the server would put their fragments in one reassembly.
        const frags = (ns: string, src: string, sport: number) => {
          const frame = buildPacket({
            family: 4,
            src,
            dst: a.srv1[0],
            proto: "udp",
            sport,
            dport: 3478,
            payload: new Uint8Array(1000).fill(sport & 0xff),
          });
          return { ns, frames: fragment(frame, 4, 0x4242, 512) };
        };
        const send = (ns: string, frames: Uint8Array[]) => rawSend(ns, frames, 20);
        const one = frags(t.ns.lan1, a.lan1, 7001), two = frags(t.ns.lan2, a.lan2, 7002);
        await send(one.ns, [one.frames[0]]);
        await send(two.ns, two.frames);
        await send(one.ns, [one.frames[1]]);
        await echo.waitForStdout(/seen[^]*seen/, 4000).catch(() => {
          throw new Error(`the server reassembled:\n${echo.stdoutText()}\n${einat.stderrText()}`);
        });
        const seen = [...echo.stdoutText().matchAll(/seen (\S+)/g)].map((m) => m[1]);
        assertEquals(seen.length, 2, echo.stdoutText());
        for (const s of seen) assert(s.startsWith(`${a.routerWan}:`), s);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

for (const family of [4, 6] as const) {
  Deno.test({
    name:
      `e2e: an inbound IPv${family} datagram whose later fragment arrives before its first reaches the LAN host (RFC 4787 REQ-14)`,
    ...sanitize,
    fn: () =>
      withTopology(async (t) => {
        const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
        const hp = (h: string, p: number) => family === 4 ? `${h}:${p}` : `[${h}]:${p}`;
        const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
        try {
          // lan1 makes its mapping, then answers whatever reaches it; srv1 sends a datagram to
          // that mapping in two fragments, the later first
          const { lan1, extPort } = await lan1Mapping(t, family, 6000);
          const { fragments: [f1, f2], send } = inboundFragments(t, family, extPort, 0x5151);
          await send([f2, f1]);
          await lan1.waitForStdout(
            new RegExp(`seen ${hp(a.srv1[0], 3479).replace(/[[\].]/g, "\\$&")}`),
            3000,
          )
            .catch(() => {
              throw new Error(
                `lan1 did not receive the datagram:\n${lan1.stdoutText()}\n${einat.stderrText()}`,
              );
            });
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      }, { ipv6: family === 6 }),
  });
}

Deno.test({
  name:
    "e2e: the router's ICMPv6 time exceeded about each fragment of an inbound datagram hides the LAN host's address, the later fragments' too",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v6;
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
      try {
        const { extPort } = await lan1Mapping(t, 6, 3000);
        const wan = await capture(t, t.ns.wan, "br0", "icmp6 and ip6[40] == 3");
        // srv1 sends a datagram to the mapping in two fragments with hop limit 1: the router,
        // forwarding them to lan1 after einat translated them, reports each one.
        const { fragments, send } = inboundFragments(t, 6, extPort, 0x5353, 1);
        await send(fragments);
        const until = Date.now() + 3000;
        while (wan.lines().length < 2 && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 50));
        }
        const lines = await wan.stop();
        assertEquals(lines.length, 2, `one time exceeded per fragment:\n${lines.join("\n")}`);
        for (const l of lines) {
          assert(!l.includes(a.lan1), `the LAN host's address left in a quote: ${l}`);
          assert(l.includes(`for ${a.routerWan}`), `quoted destination: ${l}`);
        }
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }, { ipv6: true }),
});

Deno.test({
  name:
    "e2e: path-MTU discovery and traceroute (UDP, ICMP) through the NAT: errors from beyond it reach the LAN host",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      // A host beyond srv1, behind a link with MTU 1280; srv1 routes to it.
      const far = `${t.prefix}far`;
      const sh = (ns: string, cmd: string) => nsExec(ns, cmd.split(" "));
      await run(["ip", "netns", "add", far]);
      try {
        await sh(t.ns.srv1, `ip link add up0 mtu 1280 type veth peer name eth0 netns ${far}`);
        await sh(t.ns.srv1, "ip link set up0 up");
        await sh(t.ns.srv1, "ip addr add 198.18.0.1/24 dev up0");
        await sh(t.ns.srv1, "ip addr add 2001:db8:4::1/64 dev up0 nodad");
        await sh(t.ns.srv1, "sysctl -qw net.ipv4.ip_forward=1");
        await sh(t.ns.srv1, "sysctl -qw net.ipv6.conf.all.forwarding=1");
        await sh(far, "ip link set lo up");
        await sh(far, "ip link set eth0 mtu 1280 up");
        await sh(far, "ip addr add 198.18.0.2/24 dev eth0");
        await sh(far, "ip addr add 2001:db8:4::2/64 dev eth0 nodad");
        await sh(far, "ip route add default via 198.18.0.1");
        await sh(far, "ip -6 route add default via 2001:db8:4::1");
        await sh(t.ns.router, `ip route add 198.18.0.0/24 via ${t.addrs.v4.srv1[0]}`);
        await sh(t.ns.router, `ip -6 route add 2001:db8:4::/64 via ${t.addrs.v6.srv1[0]}`);
        const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat44", "--nat66"]);
        try {
          // Large pings with DF: the first is answered by srv1 with an error that only reaches
          // lan1 if einat translates it; ping then reports the smaller MTU.
          const v4 = await nsExecResult(t.ns.lan1, [
            "ping",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1400",
            "198.18.0.2",
          ]);
          assert(
            new RegExp(`From (${t.addrs.v4.srv1.join("|")}) .*mtu ?= ?1280`, "i").test(v4.stdout),
            `IPv4 PMTU not learned:\n${v4.stdout}${v4.stderr}`,
          );
          const v6 = await nsExecResult(t.ns.lan1, [
            "ping",
            "-6",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "1",
            "-s",
            "1400",
            "2001:db8:4::2",
          ]);
          assert(
            new RegExp(`From (${t.addrs.v6.srv1.join("|")}) .*mtu ?= ?1280`, "i").test(v6.stdout),
            `IPv6 PMTU not learned:\n${v6.stdout}${v6.stderr}`,
          );
          // and traffic that fits gets through
          const ok = await nsExecResult(t.ns.lan1, [
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-s",
            "1200",
            "198.18.0.2",
          ]);
          assertEquals(ok.code, 0, ok.stdout + ok.stderr);

          // traceroute (UDP and ICMP echo) shows the hop beyond the NAT: srv1's time exceeded
          // reaches lan1 only if einat translates it back.
          for (
            const [fam, dst, hop] of [["-4", "198.18.0.2", t.addrs.v4.srv1], [
              "-6",
              "2001:db8:4::2",
              t.addrs.v6.srv1,
            ]] as const
          ) {
            for (const icmp of [false, true]) {
              const tr = await traceroute(t.ns.lan1, fam, dst, { icmp, maxHops: 5 });
              const what = `traceroute ${fam} ${icmp ? "-I" : "(UDP)"}:\n${tr.stdout}`;
              assertEquals(tr.code, 0, what + tr.stderr);
              assert(hop.some((h) => tr.hops[1]?.includes(h)), `hop 2 is srv1 — ${what}`);
              assert(tr.hops.at(-1)!.includes(dst), `reached ${dst} — ${what}`);
            }
          }
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      } finally {
        await runResult(["ip", "netns", "del", far]);
      }
    }),
});

Deno.test({
  name:
    "e2e: another IP protocol (GRE-numbered raw packets) leaves with the external address and its reply comes back; a second LAN host to the same remote is refused, to another it is not",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      const echo = (ns: string) =>
        t.spawn(ns, peerCmd("raw-echo", ["--proto", "47", "--timeout-ms", "15000"]));
      const e1 = echo(t.ns.srv1), e2 = echo(t.ns.srv2);
      await e1.waitForStdout(/listening/);
      await e2.waitForStdout(/listening/);
      const ping = (ns: string, to: string) =>
        nsExecResult(ns, peerCmd("raw-ping", ["--proto", "47", "--to", to]));
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        const r1 = await ping(t.ns.lan1, a.srv1[0]);
        assertEquals(r1.code, 0, `lan1's reply: ${r1.stdout}${r1.stderr}`);
        assert(e1.stdoutText().includes(`seen ${a.routerWan}\n`), e1.stdoutText());
        assert(!/seen 192\.0\.2\./.test(e1.stdoutText()), "a LAN source left the router");
        // lan2 to the same remote: lan1 holds (GRE, external, srv1); to srv2 it is free.
        const r2 = await ping(t.ns.lan2, a.srv1[0]);
        assertEquals(r2.code, 3, `refused while lan1's mapping lives: ${r2.stdout}`);
        const r3 = await ping(t.ns.lan2, a.srv2[0]);
        assertEquals(r3.code, 0, `lan2 to srv2: ${r3.stdout}${r3.stderr}`);
        assert(e2.stdoutText().includes(`seen ${a.routerWan}\n`), e2.stdoutText());
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});
