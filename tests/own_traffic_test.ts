/**
 * The router's own traffic from its external address (bpf/einat.bpf.c, einat_egress_own): with
 * a port of the NAT's ranges it holds a mapping as an internal host would, so that no host's new
 * mapping takes the port of a connection of the router's and catches its replies (einat-ebpf maps
 * such packets too); every other packet of the router's passes as it is.
 * Packets go through BPF_PROG_TEST_RUN, and one live test runs einat in namespaces.
 */

import { assert, assertEquals, assertNotEquals } from "./lib/assert.ts";
import {
  hostCounts,
  loadTestNat,
  type Nat,
  sessionsOf,
  stat,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  testInterfaceConfig,
} from "./lib/natfixture.ts";
import { EXT, LAN1, SRV1, SRV2 } from "./lib/addrs.ts";
import {
  buildIcmpError,
  buildPacket,
  type PacketSpec,
  pingSpec,
  tcpSpec,
  udpSpec,
} from "./lib/packet.ts";
import { bindingCountAt, countBindings, deleteBinding, findBindingOf } from "../lib/nat/records.ts";
import { expireSessions } from "../lib/nat/expire.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import { startEinat, stopEinat, waitLog } from "./lib/einat.ts";
import { startUdpEchoes, udpToEach } from "./lib/traffic.ts";
import { parseSeen, parseUdpReplies } from "./lib/peer.ts";
import { nsExecResult, peerCmd, withTopology } from "./lib/netns.ts";

const EXT2 = "203.0.113.2";
const EXT6 = "2001:db8::1";
const LAN6 = "2001:db8:1::10";
const SRV6 = "2001:db8:2::1";
const UDP = 17, TCP = 6, ICMP = 1;

const udp = (src: string, sport: number, dst: string, dport: number): PacketSpec =>
  udpSpec(src.includes(":") ? 6 : 4, src, sport, dst, dport, new Uint8Array(8));
const tcp = (
  src: string,
  sport: number,
  dst: string,
  dport: number,
  flags: PacketSpec["tcpFlags"],
) => tcpSpec(4, src, sport, dst, dport, flags);
const ping = (src: string, dst: string, icmpType: number, icmpId: number) =>
  pingSpec(4, src, dst, icmpType, icmpId);

/** The external port the mapping of internal endpoint addr:port holds, or null. */
function mappedPort(n: Nat, l4proto: number, addr: string, port: number): number | null {
  const a = parseAddr(addr);
  const b = findBindingOf(n.nat.maps, a.length === 4 ? 4 : 6, l4proto, a, port);
  return b ? b.extPort : null;
}

/** Sends the packet and asserts it left exactly as it came. */
function passesAsItIs(n: Nat, spec: PacketSpec, what: string) {
  const b = buildPacket(spec);
  assertEquals(n.runRaw("egress", b), { retval: TC_ACT_OK, bytes: b }, what);
}

Deno.test("router's own UDP in the NAT's range: it keeps its port and holds it, so a host's new mapping takes another; the replies reach the router", async () => {
  const n = await loadTestNat();
  try {
    passesAsItIs(n, udp(EXT, 25000, SRV1, 53), "a free port kept: the packet as it is");
    assertEquals(mappedPort(n, UDP, EXT, 25000), 25000, "held by the router");
    assertEquals(
      [stat(n.nat.maps.stats, "own_binding"), stat(n.nat.maps.stats, "own_moved")],
      [1n, 0n],
    );
    // LAN1 from the same port: port preservation cannot have it.
    const lan = n.egress(udp(LAN1, 25000, SRV2, 53));
    assertEquals(lan.out.src, EXT);
    assertNotEquals(lan.out.sport, 25000, "the router's port is not given to a host");
    // SRV1 answers the router: to the router, untouched; SRV2 answers LAN1.
    const back = buildPacket(udp(SRV1, 53, EXT, 25000));
    assertEquals(n.runRaw("ingress", back), { retval: TC_ACT_OK, bytes: back });
    const toLan = n.ingress(udp(SRV2, 53, EXT, lan.out.sport!));
    assertEquals([toLan.out.dst, toLan.out.dport], [LAN1, 25000]);
    // A host sending to the router's port on the external address (hairpinning): the router's,
    // handed to its stack as it is, not turned towards the router's address as a host.
    const hp = buildPacket(udp(LAN1, 3333, EXT, 25000));
    assertEquals(n.runRaw("egress", hp), { retval: TC_ACT_REDIRECT, bytes: hp });
  } finally {
    n.close();
  }
});

Deno.test("router's own UDP from a port a host holds: mapped to another port, and each reply reaches its own (no hijack either way)", async () => {
  const n = await loadTestNat();
  try {
    const lan = n.egress(udp(LAN1, 25000, SRV1, 53));
    assertEquals(lan.out.sport, 25000, "LAN1 keeps its port");
    const own = n.egress(udp(EXT, 25000, SRV1, 53));
    assertEquals([own.retval, own.out.src, own.out.dst, own.out.dport], [
      TC_ACT_OK,
      EXT,
      SRV1,
      53,
    ]);
    const ownPort = own.out.sport!;
    assertNotEquals(ownPort, 25000);
    assertEquals(
      [stat(n.nat.maps.stats, "own_binding"), stat(n.nat.maps.stats, "own_moved")],
      [1n, 1n],
    );
    assert(ownPort >= 20000 && ownPort <= 29999, `in the range: ${ownPort}`);
    assert(own.out.l4ChecksumOk);
    // Later packets of the router's flow: the same port (the established path).
    for (let i = 0; i < 3; i++) {
      assertEquals(n.egress(udp(EXT, 25000, SRV1, 53)).out.sport, ownPort);
    }
    // The same server answers both: LAN1 on 25000, the router on its port.
    const toLan = n.ingress(udp(SRV1, 53, EXT, 25000));
    assertEquals([toLan.out.dst, toLan.out.dport], [LAN1, 25000]);
    const toRouter = n.ingress(udp(SRV1, 53, EXT, ownPort));
    assertEquals([toRouter.out.dst, toRouter.out.dport], [EXT, 25000]);
    assert(toRouter.out.l4ChecksumOk);
  } finally {
    n.close();
  }
});

Deno.test("router's own traffic outside the NAT's ranges, echo replies and resets nothing holds pass as they are, holding nothing", async () => {
  const n = await loadTestNat();
  try {
    passesAsItIs(n, udp(EXT, 40000, SRV1, 53), "a port outside the ranges");
    passesAsItIs(n, tcp(EXT, 40001, SRV1, 443, { syn: true }), "a TCP port outside the ranges");
    // The router refusing a connection to a port of the range nothing holds: its reset leaves.
    passesAsItIs(n, tcp(EXT, 25000, SRV1, 50000, { rst: true, ack: true }), "a reset");
    // The router answering a ping from outside (identifier in the ICMP range, 0-65535 here).
    passesAsItIs(n, ping(EXT, SRV1, 0, 777), "an echo reply");
    assertEquals(sessionsOf(n.nat.maps).length, 0, "no mapping, no session");
    assertEquals(stat(n.nat.maps.stats, "own_binding"), 0n);
    assertEquals(mappedPort(n, UDP, EXT, 40000), null);
    assertEquals(mappedPort(n, TCP, EXT, 25000), null);
    // A TCP connection of the router's own in the range holds its port from its first packet.
    passesAsItIs(n, tcp(EXT, 25001, SRV1, 443, { syn: true }), "the router's SYN, port kept");
    assertEquals(mappedPort(n, TCP, EXT, 25001), 25001);
    const lan = n.egress(tcp(LAN1, 25001, SRV1, 443, { syn: true }));
    assertNotEquals(lan.out.sport, 25001);
  } finally {
    n.close();
  }
});

Deno.test("router's own traffic from its second external address is held on that address; IPv6 as IPv4", async () => {
  const n = await loadTestNat(testInterfaceConfig({ nat66: true }), [
    `${EXT}/24`,
    `${EXT2}/24`,
    `${EXT6}/64`,
  ]);
  try {
    passesAsItIs(n, udp(EXT2, 25000, SRV1, 53), "from the second address, port kept");
    assertEquals(mappedPort(n, UDP, EXT2, 25000), 25000, "held on the second address");
    passesAsItIs(n, udp(EXT6, 25000, SRV6, 53), "IPv6, port kept");
    assertEquals(mappedPort(n, UDP, EXT6, 25000), 25000);
    const lan6 = n.egress(udp(LAN6, 25000, SRV6, 53));
    assertEquals(lan6.out.src, EXT6);
    assertNotEquals(lan6.out.sport, 25000, "the router's IPv6 port is not given to a host");
    const back = buildPacket(udp(SRV6, 53, EXT6, 25000));
    assertEquals(n.runRaw("ingress", back), { retval: TC_ACT_OK, bytes: back });
  } finally {
    n.close();
  }
});

Deno.test({
  name:
    "live: the router's own UDP socket on a port a LAN host's mapping holds gets its replies (another external port), and the host keeps its own, IPv4 and IPv6; ranges overlapping the ephemeral ports are named",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withTopology(async (t) => {
      // a second range inside the namespace's ephemeral ports (32768-60999), which einat names
      const einat = await startEinat(t.ns.router, [
        "-i",
        "wan0",
        "--nat44",
        "--nat66",
        "--ports",
        "20000-29999",
        "40000-40999",
      ]);
      try {
        await waitLog(
          einat,
          /ranges overlap the router's ephemeral ports.* addr=203\.0\.113\.1 tcp=40000-40999 udp=40000-40999 ip_local_port_range=32768-60999/,
        );
        await startUdpEchoes(t);
        for (const family of [4, 6] as const) {
          const a = family === 4 ? t.addrs.v4 : t.addrs.v6;
          const srv = family === 4 ? `${a.srv1[0]}:3478` : `[${a.srv1[0]}]:3478`;
          const port = family === 4 ? 25000 : 25002;
          // lan1 takes `port` (port preservation) and keeps answering on it.
          const { client: lan1, replies } = await udpToEach(t, t.ns.lan1, [srv], port, 4000);
          const wan = (p: number) => family === 4 ? `${a.routerWan}:${p}` : `[${a.routerWan}]:${p}`;
          assertEquals(replies[0].seen, wan(port), "lan1 keeps its port");
          // The router's own socket on the same port of its external address.
          const own = await nsExecResult(
            t.ns.router,
            peerCmd("udp-send", [
              "--bind",
              a.routerWan,
              "--from-port",
              String(port),
              "--to",
              srv,
              "--reply-timeout-ms",
              "3000",
              "--timeout-ms",
              "5000",
            ]),
          );
          assertEquals(own.code, 0, `the router's socket got no reply: ${own.stdout}${own.stderr}`);
          const seen = parseUdpReplies(own.stdout)[0].seen;
          assert(seen.startsWith(family === 4 ? `${a.routerWan}:` : `[${a.routerWan}]:`), seen);
          assertNotEquals(seen, wan(port), "mapped to another port: the host holds this one");
          await lan1.status;
          // lingering, lan1 prints `seen IP:PORT` for each datagram reaching its port
          assertEquals(
            lan1.stdoutText().match(/^seen \S+$/gm),
            null,
            `lan1 received the router's reply: ${lan1.stdoutText()}`,
          );
        }
        // TCP: lan1's connection from 25010 holds the port (closing, minutes); the router's own
        // connection from that port is moved to another and carries its data both ways (its
        // locally made segments' partial checksums translated).
        const echo = t.spawn(
          t.ns.srv1,
          peerCmd("tcp-echo", ["--port", "8080", "--count", "2", "--timeout-ms", "10000"]),
        );
        await echo.waitForStdout(/listening/);
        const v4 = t.addrs.v4;
        const tcpFrom = (ns: string, bind: string[]) =>
          nsExecResult(
            ns,
            peerCmd("tcp-send", [
              ...bind,
              "--to",
              `${v4.srv1[0]}:8080`,
              "--from-port",
              "25010",
              "--data",
              "own-tcp",
              "--timeout-ms",
              "5000",
            ]),
          );
        const lanTcp = await tcpFrom(t.ns.lan1, []);
        assertEquals(lanTcp.code, 0, lanTcp.stdout + lanTcp.stderr);
        assertEquals(parseSeen(lanTcp.stdout)[0], `${v4.routerWan}:25010`, "lan1 keeps its port");
        const ownTcp = await tcpFrom(t.ns.router, ["--bind", v4.routerWan]);
        assertEquals(ownTcp.code, 0, ownTcp.stdout + ownTcp.stderr);
        assert(ownTcp.stdout.includes("own-tcp"), `echoed data missing: ${ownTcp.stdout}`);
        const seen = parseSeen(ownTcp.stdout)[0];
        assert(seen.startsWith(`${v4.routerWan}:`), seen);
        assertNotEquals(seen, `${v4.routerWan}:25010`, "moved: lan1 holds the port");
      } finally {
        await stopEinat(einat);
      }
    }),
});

Deno.test("an inbound ping to the identifier the router's own ping went out from (mapped to another) binds nothing more, and the counts stay true", async () => {
  const base = testInterfaceConfig();
  const n = await loadTestNat(
    testInterfaceConfig({
      allowInboundIcmpx: true,
      timeouts: { ...base.timeouts, icmpDefault: 300 },
      // the per-host counts on: the router's address is counted as a host's
      bindingMaxPerHost: 100,
      sessionMaxPerHost: 100,
    }),
  );
  try {
    assertEquals(n.egress(ping(LAN1, SRV1, 8, 4000)).out.icmpId, 4000, "LAN1 keeps its id");
    const ownId = n.egress(ping(EXT, SRV1, 8, 4000)).out.icmpId!;
    assertNotEquals(ownId, 4000);
    // LAN1's mapping expires; the router's, refreshed, stays.
    for (let i = 0; i < 30 && mappedPort(n, ICMP, LAN1, 4000) !== null; i++) {
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(n.egress(ping(EXT, SRV1, 8, 4000)).out.icmpId, ownId);
      expireSessions(n.nat);
    }
    assertEquals(mappedPort(n, ICMP, LAN1, 4000), null, "LAN1's mapping expired");
    assertEquals(countBindings(n.nat.maps.records), 1, "the router's alone");
    // A ping from outside to identifier 4000, now free: the router's endpoint (EXT, 4000) has
    // its mapping already, so none is made; the ping passes to the router as it is.
    const inbound = buildPacket(ping(SRV2, EXT, 8, 4000));
    assertEquals(n.runRaw("ingress", inbound), { retval: TC_ACT_OK, bytes: inbound });
    assertEquals(countBindings(n.nat.maps.records), 1, "no second binding");
    assertEquals(bindingCountAt(n.nat.maps.bindingCount, 0), 1n, "the live count agrees");
    assertEquals(
      hostCounts(n)[EXT],
      { bindings: 1, sessions: 1 },
      "the router's one binding and its one session, nothing of the ping's left counted",
    );
    assertEquals(n.egress(ping(EXT, SRV1, 8, 4000)).out.icmpId, ownId, "the router's mapping");
  } finally {
    n.close();
  }
});

Deno.test("router's own port whose free-port hint is stale (freed from user space) is kept all the same: a service of the router's answers from its own port", async () => {
  const n = await loadTestNat();
  try {
    assertEquals(n.egress(udp(LAN1, 25000, SRV1, 53)).out.sport, 25000);
    assert(deleteBinding(n.nat.maps, 4, UDP, parseAddr(EXT), 25000), "freed from user space");
    // A host's preservation trusts the hint's bit, left set: it takes another port.
    assertNotEquals(n.egress(udp("192.0.2.30", 25000, SRV1, 53)).out.sport, 25000);
    // The router's own packet tries the claim: the port is free.
    passesAsItIs(n, udp(EXT, 25000, SRV2, 51820), "the router's reply from its own port");
    assertEquals(stat(n.nat.maps.stats, "own_moved"), 0n);
  } finally {
    n.close();
  }
});

Deno.test("an internal host's ICMP error about a packet of the router's own (its port held by the router) goes to the router as it is", async () => {
  const n = await loadTestNat();
  try {
    passesAsItIs(n, udp(EXT, 25000, SRV1, 53), "the router's port held");
    n.egress(udp(LAN1, 7777, SRV1, 53)); // LAN1's port mapped too
    // The router sent LAN1 a datagram from EXT:25000 (straight out of the LAN side); LAN1's port
    // is closed, and its error goes to EXT (the hairpin rules route it through the WAN's hook).
    const err = buildIcmpError(
      { family: 4, src: LAN1, dst: EXT, icmpType: 3, icmpCode: 3 },
      buildPacket(udp(EXT, 25000, LAN1, 7777)).slice(14),
    );
    assertEquals(n.runRaw("egress", err), { retval: TC_ACT_REDIRECT, bytes: err });
  } finally {
    n.close();
  }
});

Deno.test("the router's own mappings are counted for its address but held to no per-host limit (as its inbound pings' are not)", async () => {
  const n = await loadTestNat(
    testInterfaceConfig({ bindingMaxPerHost: 1, sessionMaxPerHost: 2 }),
  );
  try {
    for (const port of [25000, 25001, 25002]) {
      passesAsItIs(n, udp(EXT, port, SRV1, 53), `the router's port ${port}`);
      passesAsItIs(n, udp(EXT, port, SRV2, 53), `its second remote from ${port}`);
    }
    assertEquals(stat(n.nat.maps.stats, "own_binding"), 3n);
    assertEquals(hostCounts(n)[EXT], { bindings: 3, sessions: 6 }, "counted all the same");
    // A LAN host is held to its limits: one binding.
    assertEquals(n.egress(udp(LAN1, 40000, SRV1, 53)).retval, TC_ACT_OK);
    assertNotEquals(n.egress(udp(LAN1, 40001, SRV1, 53)).retval, TC_ACT_OK, "LAN1's second");
    assertEquals(stat(n.nat.maps.stats, "drop_host_full"), 1n);
  } finally {
    n.close();
  }
});
