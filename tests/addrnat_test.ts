/**
 * Address-only NAT of the IP protocols without ports (bpf/lib/addrnat.h): GRE, ESP, SCTP, DCCP,
 * UDP-Lite and the rest, as masquerade translates them. Packets through BPF_PROG_TEST_RUN, bytes
 * compared.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import {
  loadTestNat,
  type Nat,
  stat,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  testInterfaceConfig,
} from "./lib/natfixture.ts";
import {
  buildIcmpError,
  buildPacket,
  fragment,
  internetChecksum,
  ipBytes,
  onesComplementSum,
  parsePacket,
} from "./lib/packet.ts";
import type { InterfaceConfig } from "../lib/config/types.ts";
import type { CsumMode } from "../lib/nat/loader.ts";
import { readAddrMappings } from "../lib/state/read.ts";
import { applyPlan, purgeStale } from "../lib/nat/apply.ts";
import { expireAddrMappings } from "../lib/nat/expire.ts";
import { planInterface } from "../lib/nat/plan.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import { formatText } from "../lib/state/show.ts";
import { stateView } from "./lib/natfixture.ts";
import type { MetaDoc } from "../lib/state/pin.ts";

const EXT = "203.0.113.1";
const EXT6 = "2001:db8:2::1";
const LAN1 = "192.0.2.10";
const LAN2 = "192.0.2.20";
const LAN6 = "2001:db8:1::10";
const SRV1 = "198.51.100.1";
const SRV2 = "198.51.100.2";
const SRV6 = "2001:db8:3::1";
const HOP = "198.51.100.254";
const EXTS = ["203.0.113.1/24", "2001:db8:2::1/64"];
const GRE = 47, ESP = 50, SCTP = 132, DCCP = 33, UDPLITE = 136;

/** A body of 40 bytes, not a header einat knows. */
const BODY = new Uint8Array(40).map((_, i) => (i * 37 + 11) & 0xff);

/**
 * An IP packet of protocol `proto` carrying BODY: built as UDP, then the protocol set (and the
 * IPv4 header checksum made again). DCCP and UDP-Lite get a valid checksum at offset 6 over a
 * pseudo-header of their own protocol number; the others carry none.
 */
function other(family: 4 | 6, src: string, dst: string, proto: number, ipId = 0x1234) {
  const f = buildPacket({
    family,
    src,
    dst,
    proto: "udp",
    sport: 1,
    dport: 2,
    payload: BODY,
    ipId,
    dontFragment: true, // atomic: its ID stays (a non-atomic one's is new: ipid_test.ts)
  });
  const l4 = 14 + (family === 4 ? 20 : 40);
  f.set(BODY.subarray(0, 8), l4); // no UDP header: the body from the first byte
  if (family === 4) {
    f[14 + 9] = proto;
    f[14 + 10] = f[14 + 11] = 0;
    const c = internetChecksum(f.subarray(14, 34));
    f[14 + 10] = c >> 8;
    f[14 + 11] = c & 0xff;
  } else {
    f[14 + 6] = proto;
  }
  if (proto === DCCP || proto === UDPLITE) {
    f[l4 + 6] = f[l4 + 7] = 0;
    const c = internetChecksum(f.subarray(l4), pseudo(f, family, proto));
    f[l4 + 6] = c >> 8;
    f[l4 + 7] = c & 0xff;
  }
  return f;
}

/** The pseudo-header sum of a frame's addresses, protocol and L4 length. */
function pseudo(f: Uint8Array, family: 4 | 6, proto: number): number {
  const ip = f.subarray(14);
  const hl = family === 4 ? 20 : 40;
  const addrs = family === 4 ? ip.subarray(12, 20) : ip.subarray(8, 40);
  const len = ip.length - hl;
  return onesComplementSum(addrs, proto + len);
}

/** The frame with its source or destination replaced (IPv4 header checksum made again). */
function withAddr(f: Uint8Array, family: 4 | 6, which: "src" | "dst", addr: string) {
  const g = f.slice();
  const off = 14 + (family === 4 ? (which === "src" ? 12 : 16) : (which === "src" ? 8 : 24));
  g.set(ipBytes(addr), off);
  if (family === 4) {
    g[14 + 10] = g[14 + 11] = 0;
    const c = internetChecksum(g.subarray(14, 34));
    g[14 + 10] = c >> 8;
    g[14 + 11] = c & 0xff;
  }
  return g;
}

async function withNat(
  fn: (n: Nat) => void | Promise<void>,
  o: Partial<InterfaceConfig> = {},
  csum?: CsumMode,
) {
  const n = await loadTestNat(testInterfaceConfig({ nat66: true, ...o }), EXTS, { csum });
  try {
    await fn(n);
  } finally {
    n.close();
  }
}

Deno.test("other protocols: GRE, ESP and SCTP leave with the external address and come back to their host; nothing else in them changes", async () => {
  await withNat((n) => {
    for (const proto of [GRE, ESP, SCTP]) {
      const out = other(4, LAN1, SRV1, proto);
      const r = n.runRaw("egress", out);
      assertEquals(r.retval, TC_ACT_OK, `${proto} out`);
      assertEquals(r.bytes, withAddr(out, 4, "src", EXT), `${proto}: the source only`);
      assert(parsePacket(r.bytes).ipChecksumOk, "IPv4 header checksum");
      const back = other(4, SRV1, EXT, proto);
      const b = n.runRaw("ingress", back);
      assertEquals(b.retval, TC_ACT_OK);
      assertEquals(b.bytes, withAddr(back, 4, "dst", LAN1), `${proto}: back to ${LAN1}`);
    }
    // IPv6 (NAT66): no header checksum, nothing else changes.
    const out6 = other(6, LAN6, SRV6, ESP);
    assertEquals(n.runRaw("egress", out6).bytes, withAddr(out6, 6, "src", EXT6));
    const back6 = other(6, SRV6, EXT6, ESP);
    assertEquals(n.runRaw("ingress", back6).bytes, withAddr(back6, 6, "dst", LAN6));
    assertEquals(stat(n.nat.maps.stats, "new_addr_mapping"), 4n);
  });
});

Deno.test("other protocols: address-dependent filtering, one host per (protocol, remote): another host is refused with ICMP 3/13, another remote or protocol is free", async () => {
  await withNat((n) => {
    assertEquals(n.runRaw("egress", other(4, LAN1, SRV1, GRE)).retval, TC_ACT_OK);
    // From a remote LAN1 never sent GRE to: the router's, as it is.
    const stranger = other(4, SRV2, EXT, GRE);
    assertEquals(n.runRaw("ingress", stranger), { retval: TC_ACT_OK, bytes: stranger });
    // LAN1's ESP to the same remote has no mapping either.
    const esp = other(4, SRV1, EXT, ESP);
    assertEquals(n.runRaw("ingress", esp), { retval: TC_ACT_OK, bytes: esp });
    // LAN2's GRE to SRV1: taken. Refused, and told.
    const clash = other(4, LAN2, SRV1, GRE);
    const r = n.runRaw("egress", clash, { dataOutSize: clash.length + 256 });
    assert([TC_ACT_SHOT, TC_ACT_REDIRECT].includes(r.retval), `verdict ${r.retval}`);
    const icmp = parsePacket(r.bytes);
    assertEquals([icmp.proto, icmp.icmpType, icmp.icmpCode, icmp.dst], ["icmp", 3, 13, LAN2]);
    assertEquals([icmp.inner!.src, icmp.inner!.dst, icmp.inner!.protoNum], [LAN2, SRV1, GRE]);
    assertEquals(stat(n.nat.maps.stats, "drop_addr_in_use"), 1n);
    // LAN2's GRE to SRV2 and ESP to SRV1 are free.
    const to2 = other(4, LAN2, SRV2, GRE);
    assertEquals(n.runRaw("egress", to2).bytes, withAddr(to2, 4, "src", EXT));
    const esp2 = other(4, LAN2, SRV1, ESP);
    assertEquals(n.runRaw("egress", esp2).bytes, withAddr(esp2, 4, "src", EXT));
    assertEquals(parsePacket(n.runRaw("ingress", other(4, SRV2, EXT, GRE)).bytes).dst, LAN2);
    assertEquals(parsePacket(n.runRaw("ingress", other(4, SRV1, EXT, GRE)).bytes).dst, LAN1);
  });
});

Deno.test("other protocols: a mapping without traffic for timeout_other is gone, and another host takes (protocol, remote) over", async () => {
  await withNat(async (n) => {
    assertEquals(n.runRaw("egress", other(4, LAN1, SRV1, GRE)).retval, TC_ACT_OK);
    const clash = other(4, LAN2, SRV1, GRE);
    assert(n.runRaw("egress", clash).retval !== TC_ACT_OK, "LAN1's while it lives");
    await new Promise((r) => setTimeout(r, 250));
    const back = other(4, SRV1, EXT, GRE);
    assertEquals(n.runRaw("ingress", back), { retval: TC_ACT_OK, bytes: back }, "expired");
    assertEquals(n.runRaw("egress", clash).bytes, withAddr(clash, 4, "src", EXT), "taken over");
    assertEquals(parsePacket(n.runRaw("ingress", back).bytes).dst, LAN2);
  }, { timeouts: { ...testInterfaceConfig().timeouts, other: 100 } });
});

Deno.test("other protocols: DCCP and UDP-Lite keep a valid checksum over the new pseudo-header, both ways", async () => {
  await withNat((n) => {
    for (const proto of [DCCP, UDPLITE]) {
      for (
        const [family, lan, srv, ext] of [[4, LAN1, SRV1, EXT], [6, LAN6, SRV6, EXT6]] as const
      ) {
        const out = n.runRaw("egress", other(family, lan, srv, proto));
        assertEquals(parsePacket(out.bytes).src, ext);
        const l4 = 14 + (family === 4 ? 20 : 40);
        const sum = (f: Uint8Array) => internetChecksum(f.subarray(l4), pseudo(f, family, proto));
        assertEquals(sum(out.bytes), 0, `${proto} v${family} out`);
        const back = n.runRaw("ingress", other(family, srv, ext, proto));
        assertEquals(parsePacket(back.bytes).dst, lan);
        assertEquals(sum(back.bytes), 0, `${proto} v${family} back`);
      }
    }
  });
});

Deno.test("other protocols: a UDP-Lite checksum that comes out zero is sent as all ones (RFC 3828 3.1), as UDP's, by both objects", async () => {
  for (const csum of ["inline", "helpers"] as const) {
    await withNat(
      (n) => {
        for (
          const [family, lan, srv, ext] of [[4, LAN1, SRV1, EXT], [6, LAN6, SRV6, EXT6]] as const
        ) {
          const f = other(family, lan, srv, UDPLITE);
          const l4 = 14 + (family === 4 ? 20 : 40);
          // A payload word that makes the sum over the translated packet all ones: its checksum 0.
          f.fill(0, l4 + 6, l4 + 10);
          const t = withAddr(f, family, "src", ext);
          const s = onesComplementSum(t.subarray(l4), pseudo(t, family, UDPLITE));
          const w = s === 0 ? 0xffff : 0xffff - s;
          f[l4 + 8] = w >> 8;
          f[l4 + 9] = w & 0xff;
          const c = internetChecksum(f.subarray(l4), pseudo(f, family, UDPLITE));
          f[l4 + 6] = c >> 8;
          f[l4 + 7] = c & 0xff;
          const out = n.runRaw("egress", f).bytes;
          assertEquals(parsePacket(out).src, ext);
          assertEquals((out[l4 + 6] << 8) | out[l4 + 7], 0xffff, `v${family} ${csum}: not 0x0000`);
        }
      },
      {},
      csum,
    );
  }
});

Deno.test("other protocols: the router's own, no-SNAT, to our own address, and with snat_other_protocols off pass as they are; the router's own holds its (protocol, remote) against hosts", async () => {
  await withNat((n) => {
    const own = other(4, EXT, SRV1, GRE);
    assertEquals(n.runRaw("egress", own), { retval: TC_ACT_OK, bytes: own }, "the router's");
    const toUs = other(4, LAN1, EXT, GRE);
    const r = n.runRaw("egress", toUs);
    assertEquals([r.retval, r.bytes], [TC_ACT_REDIRECT, toUs], "to the router, as it is");
    // The router's own holds (GRE, SRV1): no internal host takes its tunnel's traffic.
    assertEquals(stat(n.nat.maps.stats, "new_addr_mapping"), 1n, "the router's own mapping");
    const host = n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    assertEquals(parsePacket(host.bytes).icmpType, 3, "a host is refused (ICMP 3/13)");
    assertEquals(stat(n.nat.maps.stats, "drop_addr_in_use"), 1n);
    const back = other(4, SRV1, EXT, GRE);
    assertEquals(n.runRaw("ingress", back), { retval: TC_ACT_OK, bytes: back }, "to the router");
    // An error about the router's own packet is the router's, as it is (not checked, counted
    // or rewritten as one about a host's).
    const ptb = buildIcmpError(
      { family: 4, src: HOP, dst: EXT, icmpType: 3, icmpCode: 4, mtu: 1400 },
      own.slice(14),
    );
    assertEquals(n.runRaw("ingress", ptb), { retval: TC_ACT_OK, bytes: ptb });
    assertEquals(stat(n.nat.maps.stats, "icmp_error_nat"), 0n);
    // Another remote is free for the host.
    assertEquals(parsePacket(n.runRaw("egress", other(4, LAN1, SRV2, GRE)).bytes).src, EXT);
  });
  await withNat((n) => {
    const g = other(4, LAN1, SRV1, GRE);
    assertEquals(n.runRaw("egress", g), { retval: TC_ACT_OK, bytes: g }, "off: as it is");
    assertEquals(stat(n.nat.maps.stats, "new_addr_mapping"), 0n);
  }, { snatOtherProtocols: false });
});

Deno.test("other protocols: fragments follow their first, in order or not, both ways", async () => {
  await withNat((n) => {
    // Out, later fragment first: the default external address, as its first then gets.
    const [o1, o2] = fragment(other(4, LAN1, SRV1, GRE, 0x4711), 4, 0x4711, 16);
    assertEquals(parsePacket(n.runRaw("egress", o2).bytes).src, EXT, "later, before its first");
    assertEquals(parsePacket(n.runRaw("egress", o1).bytes).src, EXT, "first");
    const [p1, p2] = fragment(other(4, LAN1, SRV1, GRE, 0x4712), 4, 0x4712, 16);
    assertEquals(parsePacket(n.runRaw("egress", p1).bytes).src, EXT);
    assertEquals(parsePacket(n.runRaw("egress", p2).bytes).src, EXT, "later, after its first");
    // In, in order: both to LAN1.
    const [i1, i2] = fragment(other(4, SRV1, EXT, GRE, 0x4713), 4, 0x4713, 16);
    assertEquals(parsePacket(n.runRaw("ingress", i1).bytes).dst, LAN1);
    assertEquals(parsePacket(n.runRaw("ingress", i2).bytes).dst, LAN1);
    // In, the later one first: held, then released by its first.
    const [k1, k2] = fragment(other(4, SRV1, EXT, GRE, 0x4714), 4, 0x4714, 16);
    assertEquals(n.runRaw("ingress", k2).retval, TC_ACT_SHOT, "held");
    assertEquals(parsePacket(n.runRaw("ingress", k1).bytes).dst, LAN1);
    assertEquals(stat(n.nat.maps.stats, "fragment_released"), 1n);
    // A refused first fragment (lan2: lan1 holds GRE to SRV1): the rest of its datagram is
    // dropped too, not sent from the external address under lan1's mapping.
    const [r1, r2] = fragment(other(4, LAN2, SRV1, GRE, 0x4715), 4, 0x4715, 16);
    assert(n.runRaw("egress", r1).retval !== TC_ACT_OK, "refused");
    assertEquals(n.runRaw("egress", r2).retval, TC_ACT_SHOT, "its later fragment");
    // IPv6: the Fragment header names the protocol.
    const [v1, v2] = fragment(other(6, LAN6, SRV6, ESP), 6, 0x99, 16);
    assertEquals(parsePacket(n.runRaw("egress", v1).bytes).src, EXT6);
    assertEquals(parsePacket(n.runRaw("egress", v2).bytes).src, EXT6);
  });
});

Deno.test("other protocols: an ICMP error about an outbound packet reaches its host, quoted source translated (RFC 5508 REQ-4); one about nothing mapped stays with the router", async () => {
  await withNat((n) => {
    const sent = n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    const err = buildIcmpError(
      { family: 4, src: HOP, dst: EXT, icmpType: 3, icmpCode: 4, mtu: 1400 },
      sent.bytes.slice(14),
    );
    const r = n.runRaw("ingress", err);
    assertEquals(r.retval, TC_ACT_OK);
    const p = parsePacket(r.bytes);
    assertEquals([p.dst, p.inner!.src, p.inner!.dst, p.inner!.protoNum], [LAN1, LAN1, SRV1, GRE]);
    assert(p.ipChecksumOk && p.l4ChecksumOk && p.inner!.ipChecksumOk, "checksums");
    assertEquals(stat(n.nat.maps.stats, "icmp_error_nat"), 1n);
    const unknown = buildIcmpError(
      { family: 4, src: HOP, dst: EXT, icmpType: 3, icmpCode: 4, mtu: 1400 },
      other(4, EXT, SRV2, GRE).slice(14),
    );
    assertEquals(n.runRaw("ingress", unknown), { retval: TC_ACT_OK, bytes: unknown });
    // IPv6: packet too big.
    const sent6 = n.runRaw("egress", other(6, LAN6, SRV6, GRE));
    const ptb = buildIcmpError(
      { family: 6, src: SRV6, dst: EXT6, icmpType: 2, icmpCode: 0, mtu: 1280 },
      sent6.bytes.slice(14),
    );
    const p6 = parsePacket(n.runRaw("ingress", ptb).bytes);
    assertEquals([p6.dst, p6.inner!.src], [LAN6, LAN6]);
    assert(p6.l4ChecksumOk, "ICMPv6 checksum");
  });
});

Deno.test("other protocols: protocol 1 over IPv6 is one of them (not ICMPv6): an error about it changes its addresses only, not bytes 2-3 as an ICMP checksum", async () => {
  // Found by the fuzzer (seed 4402): the quoted packet's bytes 2-3 were "updated" as an ICMPv6
  // checksum over the new addresses.
  await withNat((n) => {
    const sent = n.runRaw("egress", other(6, LAN6, SRV6, 1));
    assertEquals(parsePacket(sent.bytes).src, EXT6, "address-only NAT");
    const quoted = sent.bytes.slice(14);
    const err = buildIcmpError(
      { family: 6, src: SRV6, dst: EXT6, icmpType: 4, icmpCode: 1, icmpRest: 40 },
      quoted,
    );
    const r = n.runRaw("ingress", err);
    assertEquals(r.retval, TC_ACT_OK);
    const p = parsePacket(r.bytes);
    assertEquals([p.dst, p.inner!.src], [LAN6, LAN6]);
    assert(p.l4ChecksumOk, "ICMPv6 checksum");
    const inner = r.bytes.slice(14 + 40 + 8);
    assertEquals(inner.slice(40), quoted.slice(40), "the quoted payload is as it was");
  });
});

Deno.test("other protocols: einat show lists the address-only mappings, with what is left of their timeout", async () => {
  await withNat((n) => {
    n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    n.runRaw("egress", other(6, LAN6, SRV6, ESP));
    const meta = { timeoutsNs: { other: String(600n * 1_000_000_000n) } } as unknown as MetaDoc;
    const st = stateView(n.nat, meta);
    const rows = readAddrMappings(st);
    assertEquals(
      rows.map((r) => [r.protocol, r.internal, r.external, r.remote, r.expired]),
      [["gre", LAN1, EXT, SRV1, false], ["esp", LAN6, EXT6, SRV6, false]],
    );
    assert(rows.every((r) => r.secondsLeft! > 590 && r.secondsLeft! <= 600), "left");
    assertEquals(readAddrMappings(st, { proto: "udp" }), [], "a protocol filter: none");
    const text = formatText({
      bindings: [],
      sessions: [],
      addressOnly: rows,
      counters: [],
      missing: [],
      served: [],
    }, false);
    assert(/gre +192\.0\.2\.10 +203\.0\.113\.1 +198\.51\.100\.1/.test(text), text);
    assert(text.includes("2 address-only (other IP protocols)"), text);
  });
});

Deno.test("other protocols: the mappings of an external address that left are dropped with its others, and counted", async () => {
  const ic = testInterfaceConfig({ nat66: true });
  await withNat((n) => {
    n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    n.runRaw("egress", other(6, LAN6, SRV6, ESP));
    // IPv4 moves to another address; the IPv6 one stays.
    const plan = planInterface(ic, [
      { family: 4, addr: parseAddr("203.0.113.2"), prefixLen: 24 },
      { family: 6, addr: parseAddr(EXT6), prefixLen: 64 },
    ]);
    applyPlan(n.nat.maps, plan);
    assertEquals(purgeStale(n.nat, plan).addressOnly, 1);
    assertEquals(readAddrMappings(stateView(n.nat)).map((r) => r.protocol), ["esp"]);
    // The next GRE packet maps on the new address.
    assertEquals(
      parsePacket(n.runRaw("egress", other(4, LAN1, SRV1, GRE)).bytes).src,
      "203.0.113.2",
    );
  });
});

Deno.test("other protocols: an ICMP error leaving about an inbound packet quotes the external address: the router's own (time exceeded, packet too big) and an internal host's (translated outside too)", async () => {
  await withNat((n) => {
    for (
      const [family, lan, srv, ext, proto] of [[4, LAN1, SRV1, EXT, GRE], [
        6,
        LAN6,
        SRV6,
        EXT6,
        ESP,
      ]] as const
    ) {
      n.runRaw("egress", other(family, lan, srv, proto));
      const inside = n.runRaw("ingress", other(family, srv, ext, proto)).bytes; // srv -> lan
      // The router's own error about it (TTL out on the way in, or too big for the LAN).
      const own = buildIcmpError(
        family === 4
          ? { family, src: ext, dst: srv, icmpType: 11, icmpCode: 0 }
          : { family, src: ext, dst: srv, icmpType: 2, icmpCode: 0, mtu: 1280 },
        inside.slice(14),
      );
      const r = n.runRaw("egress", own);
      assertEquals(r.retval, TC_ACT_OK);
      const p = parsePacket(r.bytes);
      assertEquals([p.src, p.inner!.src, p.inner!.dst], [ext, srv, ext], `v${family} own`);
      assert(p.l4ChecksumOk && p.inner!.ipChecksumOk, "checksums");
      // An internal host's (protocol unreachable): both its source and the quote made external.
      const host = buildIcmpError(
        family === 4
          ? { family, src: lan, dst: srv, icmpType: 3, icmpCode: 2 }
          : { family, src: lan, dst: srv, icmpType: 4, icmpCode: 1 },
        inside.slice(14),
      );
      const h = parsePacket(n.runRaw("egress", host).bytes);
      assertEquals([h.src, h.inner!.dst], [ext, ext], `v${family} host`);
      assert(h.l4ChecksumOk, "checksum");
    }
  });
});

Deno.test("other protocols: a host filling the table cannot push another's live mapping out: new ones are refused (drop_addr_full), the sweep frees expired ones", async () => {
  // A flood of mappings to 4,096 remotes from lan2, then lan2 to lan1's remote.
  await withNat((n) => {
    n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    let refused = 0;
    for (let i = 0; i < 4200; i++) {
      const r = n.runRaw("egress", other(4, LAN2, `198.18.${i >> 8}.${i & 0xff}`, GRE));
      if (r.retval !== TC_ACT_OK) refused++;
    }
    assertEquals(refused, 4200 - 4095, "the table holds 4,096 (lan1's one of them)");
    assertEquals(stat(n.nat.maps.stats, "drop_addr_full"), BigInt(4200 - 4095));
    assert(n.runRaw("egress", other(4, LAN2, SRV1, GRE)).retval !== TC_ACT_OK, "not taken over");
    assertEquals(parsePacket(n.runRaw("ingress", other(4, SRV1, EXT, GRE)).bytes).dst, LAN1);
  });
  // The sweep deletes the mappings idle past timeout_other (and its clock leeway of 1 s).
  await withNat(async (n) => {
    n.runRaw("egress", other(4, LAN1, SRV1, GRE));
    n.runRaw("egress", other(6, LAN6, SRV6, ESP));
    assertEquals(expireAddrMappings(n.nat), 0, "live");
    await new Promise((r) => setTimeout(r, 1300));
    n.runRaw("egress", other(6, LAN6, SRV6, ESP)); // this one is in use again
    assertEquals(expireAddrMappings(n.nat), 1);
    assertEquals(readAddrMappings(stateView(n.nat)).map((r) => r.protocol), ["esp"]);
  }, { timeouts: { ...testInterfaceConfig().timeouts, other: 200 } });
});
