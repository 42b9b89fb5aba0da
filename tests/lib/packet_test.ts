import assert from "node:assert/strict";
import {
  buildEth,
  buildIcmpError,
  buildPacket,
  canonicalIp,
  formatIp,
  internetChecksum,
  ipv4,
  ipv6,
  onesComplementSum,
  type PacketSpec,
  parsePacket,
} from "./packet.ts";

const enc = new TextEncoder();

Deno.test("internetChecksum: RFC 1071 example", () => {
  const data = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(onesComplementSum(data), 0xddf2);
  assert.equal(internetChecksum(data), 0x220d);
  // Odd length: trailing byte is padded with zero.
  assert.equal(onesComplementSum(Uint8Array.from([0x01])), 0x0100);
});

Deno.test("internetChecksum: known IPv4 header", () => {
  // Classic example header (checksum field 0xb861).
  const hdr = Uint8Array.from([
    0x45,
    0x00,
    0x00,
    0x73,
    0x00,
    0x00,
    0x40,
    0x00,
    0x40,
    0x11,
    0x00,
    0x00,
    0xc0,
    0xa8,
    0x00,
    0x01,
    0xc0,
    0xa8,
    0x00,
    0xc7,
  ]);
  assert.equal(internetChecksum(hdr), 0xb861);
  hdr[10] = 0xb8;
  hdr[11] = 0x61;
  assert.equal(internetChecksum(hdr), 0);
});

Deno.test("addresses: parse and canonical format", () => {
  assert.deepEqual(Array.from(ipv4("203.0.113.11")), [203, 0, 113, 11]);
  assert.throws(() => ipv4("1.2.3"));
  assert.throws(() => ipv4("1.2.3.256"));
  assert.equal(formatIp(ipv6("2001:DB8:0:0:0:0:0:1")), "2001:db8::1");
  assert.equal(canonicalIp("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(canonicalIp("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
  assert.equal(canonicalIp("::"), "::");
  assert.equal(canonicalIp("::1"), "::1");
  assert.equal(canonicalIp("fe80::"), "fe80::");
  assert.equal(canonicalIp("::ffff:192.0.2.1"), "::ffff:c000:201");
  assert.equal(canonicalIp("2001:db8:2::11"), "2001:db8:2::11");
  assert.throws(() => ipv6("1::2::3"));
  assert.throws(() => ipv6("1:2:3:4:5:6:7:8:9"));
});

Deno.test("buildEth: layout", () => {
  const h = buildEth({ src: "02:00:00:00:00:aa", dst: "ff:ff:ff:ff:ff:ff", type: 0x0800 });
  assert.equal(h.length, 14);
  assert.deepEqual(Array.from(h.subarray(0, 6)), [255, 255, 255, 255, 255, 255]);
  assert.equal(h[11], 0xaa);
  assert.equal(h[12], 0x08);
});

const cases: PacketSpec[] = [
  {
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "udp",
    sport: 40000,
    dport: 53,
    payload: enc.encode("hello"),
    ttl: 17,
    ipId: 0x1234,
  },
  {
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "tcp",
    sport: 1234,
    dport: 80,
    tcpFlags: { syn: true, ack: true },
    seq: 0xfffffff0,
    ackNum: 7,
    payload: enc.encode("odd"),
  },
  {
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "icmp",
    icmpId: 0xbeef,
    icmpSeq: 3,
    payload: enc.encode("ping!"),
  },
  {
    family: 6,
    src: "2001:db8:1::10",
    dst: "2001:db8:2::11",
    proto: "udp",
    sport: 5353,
    dport: 5354,
    payload: enc.encode("v6 udp"),
  },
  {
    family: 6,
    src: "2001:db8:1::10",
    dst: "2001:db8:2::11",
    proto: "tcp",
    sport: 5353,
    dport: 443,
    tcpFlags: { fin: true, ack: true, psh: true },
  },
  {
    family: 6,
    src: "2001:db8:1::10",
    dst: "2001:db8:2::11",
    proto: "icmp",
    icmpId: 99,
    icmpSeq: 1,
    noEth: true,
  },
];

Deno.test("buildPacket/parsePacket: round trips with valid checksums", () => {
  for (const spec of cases) {
    const bytes = buildPacket(spec);
    const p = parsePacket(bytes, { noEth: spec.noEth });
    const what = `${spec.family}/${spec.proto}`;
    assert.equal(p.family, spec.family, what);
    assert.equal(p.src, canonicalIp(spec.src), what);
    assert.equal(p.dst, canonicalIp(spec.dst), what);
    assert.equal(p.proto, spec.proto, what);
    assert.equal(p.ttl, spec.ttl ?? 64, what);
    assert.ok(p.ipChecksumOk, what);
    assert.ok(p.l4ChecksumOk, what);
    assert.equal(p.truncated, false);
    assert.deepEqual(p.payload, spec.payload ?? new Uint8Array(0), what);
    if (spec.proto !== "icmp") {
      assert.equal(p.sport, spec.sport, what);
      assert.equal(p.dport, spec.dport, what);
    } else {
      assert.equal(p.icmpType, spec.family === 4 ? 8 : 128);
      assert.equal(p.icmpId, spec.icmpId);
      assert.equal(p.icmpSeq, spec.icmpSeq);
    }
    if (spec.proto === "tcp") {
      assert.equal(p.seq, spec.seq ?? 0);
      assert.equal(p.ackNum, spec.ackNum ?? 0);
      for (const k of ["syn", "ack", "fin", "rst", "psh"] as const) {
        assert.equal(p.tcpFlags?.[k], spec.tcpFlags?.[k] ?? false, `${what} ${k}`);
      }
    }
    if (spec.ipId !== undefined) assert.equal(p.ipId, spec.ipId);
    if (!spec.noEth) assert.equal(p.eth?.type, spec.family === 4 ? 0x0800 : 0x86dd);
    else assert.equal(p.eth, undefined);
  }
});

Deno.test("parsePacket: one mutated byte fails the checksum", () => {
  for (const spec of cases) {
    const bytes = buildPacket({ ...spec, noEth: true });
    const ipHdr = spec.family === 4 ? 20 : 40;
    // Flip a payload/L4 byte: L4 checksum fails, IP checksum unaffected.
    const l4 = bytes.slice();
    l4[ipHdr + 4] ^= 0x01;
    const p = parsePacket(l4, { noEth: true });
    assert.equal(p.l4ChecksumOk, false, `${spec.family}/${spec.proto}`);
    if (spec.family === 4) {
      assert.ok(p.ipChecksumOk);
      // Flip the TTL: IPv4 header checksum fails; L4 (pseudo header has no TTL) still fine.
      const ip = bytes.slice();
      ip[8] ^= 0x01;
      const q = parsePacket(ip, { noEth: true });
      assert.equal(q.ipChecksumOk, false);
      assert.ok(q.l4ChecksumOk);
    }
    // Changing the destination address breaks the pseudo-header checksum (not ICMPv4).
    const addr = bytes.slice();
    addr[spec.family === 4 ? 19 : 39] ^= 0x01;
    const r = parsePacket(addr, { noEth: true });
    assert.equal(r.l4ChecksumOk, spec.family === 4 && spec.proto === "icmp");
  }
});

Deno.test("UDP zero checksum: ok over IPv4, not over IPv6", () => {
  const base = {
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "udp" as const,
    sport: 1,
    dport: 2,
  };
  const p4 = parsePacket(buildPacket({ ...base, family: 4, udpZeroChecksum: true }));
  assert.equal(p4.l4Checksum, 0);
  assert.ok(p4.l4ChecksumOk);
  const p6 = parsePacket(
    buildPacket({
      ...base,
      family: 6,
      src: "2001:db8::1",
      dst: "2001:db8::2",
      udpZeroChecksum: true,
    }),
  );
  assert.equal(p6.l4Checksum, 0);
  assert.equal(p6.l4ChecksumOk, false);
});

Deno.test("UDP checksum that computes to 0 is sent as 0xffff", () => {
  const spec: PacketSpec = {
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "udp",
    sport: 1000,
    dport: 2000,
    payload: new Uint8Array(2),
    noEth: true,
  };
  // With a zero payload word the checksum is c; a payload word of c makes the sum 0xffff.
  const c = parsePacket(buildPacket(spec), { noEth: true }).l4Checksum!;
  const p = parsePacket(
    buildPacket({ ...spec, payload: Uint8Array.from([c >> 8, c & 0xff]) }),
    { noEth: true },
  );
  assert.equal(p.l4Checksum, 0xffff);
  assert.ok(p.l4ChecksumOk);
});

Deno.test("fragments: IPv4 and IPv6", () => {
  const first = parsePacket(buildPacket({
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "udp",
    sport: 7,
    dport: 9,
    moreFragments: true,
    ipId: 77,
    payload: new Uint8Array(16),
  }));
  assert.ok(first.isFragment && first.moreFragments);
  assert.equal(first.fragOffset, 0);
  assert.equal(first.sport, 7);
  const later = parsePacket(buildPacket({
    family: 4,
    src: "192.0.2.10",
    dst: "203.0.113.11",
    proto: "udp",
    fragOffset: 24,
    ipId: 77,
    payload: enc.encode("tail"),
  }));
  assert.equal(later.fragOffset, 24);
  assert.equal(later.moreFragments, false);
  assert.ok(later.isFragment);
  assert.ok(later.ipChecksumOk);
  assert.equal(later.sport, undefined);
  assert.deepEqual(later.payload, enc.encode("tail"));
  const v6 = parsePacket(buildPacket({
    family: 6,
    src: "2001:db8:1::10",
    dst: "2001:db8:2::11",
    proto: "udp",
    sport: 7,
    dport: 9,
    moreFragments: true,
    ipId: 0xdeadbeef,
  }));
  assert.equal(v6.proto, "udp");
  assert.equal(v6.ipId, 0xdeadbeef);
  assert.ok(v6.moreFragments);
  assert.equal(v6.sport, 7);
  assert.ok(v6.l4ChecksumOk);
  const v6b = parsePacket(buildPacket({
    family: 6,
    src: "2001:db8:1::10",
    dst: "2001:db8:2::11",
    proto: "tcp",
    fragOffset: 1232,
    payload: enc.encode("x"),
  }));
  assert.equal(v6b.fragOffset, 1232);
  assert.equal(v6b.proto, "tcp");
  assert.equal(v6b.dport, undefined);
});

Deno.test("buildIcmpError: embeds and parses the inner packet", () => {
  const inner = buildPacket({
    family: 4,
    src: "203.0.113.1",
    dst: "203.0.113.11",
    proto: "udp",
    sport: 20000,
    dport: 53,
    payload: enc.encode("query"),
    noEth: true,
  });
  const err = buildIcmpError(
    { family: 4, src: "203.0.113.11", dst: "203.0.113.1", icmpType: 3, icmpCode: 4, mtu: 1400 },
    inner,
  );
  const p = parsePacket(err);
  assert.equal(p.proto, "icmp");
  assert.equal(p.icmpType, 3);
  assert.equal(p.icmpCode, 4);
  assert.equal(p.icmpRest, 1400);
  assert.ok(p.ipChecksumOk && p.l4ChecksumOk);
  assert.ok(p.inner);
  assert.equal(p.inner.src, "203.0.113.1");
  assert.equal(p.inner.sport, 20000);
  assert.ok(p.inner.ipChecksumOk && p.inner.l4ChecksumOk);

  // Truncated inner (as routers send: IP header + 8 bytes).
  const trunc = parsePacket(buildIcmpError(
    { family: 4, src: "203.0.113.11", dst: "203.0.113.1" },
    inner.subarray(0, 28),
  ));
  assert.equal(trunc.icmpType, 3);
  assert.equal(trunc.icmpCode, 3);
  assert.ok(trunc.l4ChecksumOk);
  assert.ok(trunc.inner?.truncated);
  assert.equal(trunc.inner?.dport, 53);
  assert.equal(trunc.inner?.l4ChecksumOk, false);

  const inner6 = buildPacket({
    family: 6,
    src: "2001:db8:2::1",
    dst: "2001:db8:2::11",
    proto: "tcp",
    sport: 3000,
    dport: 22,
    noEth: true,
  });
  const e6 = parsePacket(buildIcmpError(
    { family: 6, src: "2001:db8:2::11", dst: "2001:db8:2::1", icmpType: 2, icmpCode: 0, mtu: 1280 },
    inner6,
  ));
  assert.equal(e6.icmpType, 2);
  assert.equal(e6.icmpRest, 1280);
  assert.ok(e6.l4ChecksumOk);
  assert.equal(e6.inner?.sport, 3000);
  assert.ok(e6.inner?.l4ChecksumOk);
  const unreach6 = parsePacket(buildIcmpError(
    { family: 6, src: "2001:db8:2::11", dst: "2001:db8:2::1" },
    inner6,
  ));
  assert.equal(unreach6.icmpType, 1);
  assert.equal(unreach6.icmpCode, 4);
});

Deno.test("parsePacket: rejects garbage", () => {
  assert.throws(() => parsePacket(new Uint8Array(5)));
  assert.throws(() => parsePacket(Uint8Array.from([0x45, 0, 0]), { noEth: true }));
  assert.throws(() => parsePacket(Uint8Array.from([0x75, 0, 0]), { noEth: true }));
});
