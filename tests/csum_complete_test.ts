/**
 * Translation of CHECKSUM_COMPLETE skbs (what many NICs hand the stack on
 * receive): the kernel's test run computes `skb->csum` before the program and
 * fails the run with EBADMSG when the program left it out of step with the
 * bytes (`BPF_F_TEST_SKB_CHECKSUM_COMPLETE`). A wrong `skb->csum` makes the
 * stack log "hw csum failure" and check every such packet again in software.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import {
  buildIcmpError,
  buildPacket,
  fragment,
  internetChecksum,
  type PacketSpec,
  parsePacket,
  udpSpec,
} from "./lib/packet.ts";
import {
  loadTestNat,
  ranges,
  TC_ACT_OK,
  TC_ACT_SHOT,
  testInterfaceConfig,
} from "./lib/natfixture.ts";
import type { CsumMode } from "../lib/nat/loader.ts";

const EXTS = ["203.0.113.1/24", "2001:db8:2::1/64"];
const ADDR = {
  4: { lan: "192.0.2.10", srv: "198.51.100.1", ext: "203.0.113.1" },
  6: { lan: "2001:db8:1::10", srv: "2001:db8:3::1", ext: "2001:db8:2::1" },
};
const payload = new TextEncoder().encode("0123456789abcdefghijklmnopqrstuvwxyz");

const natFor = (csum: CsumMode) =>
  loadTestNat(
    testInterfaceConfig({ nat66: true, defaultRanges: ranges([{ start: 20000, end: 29999 }]) }),
    EXTS,
    { csum },
  );
const udp = (family: 4 | 6, src: string, sport: number, dst: string, dport: number) =>
  udpSpec(family, src, sport, dst, dport, payload);
const COMPLETE = { checksumComplete: true };

function spec(
  family: 4 | 6,
  proto: "udp" | "tcp" | "icmp",
  egress: boolean,
  extPort = 0,
): PacketSpec {
  const a = ADDR[family];
  // The internal port (41000) lies outside the external range, so it always changes.
  const [src, dst, sport, dport] = egress ? [a.lan, a.srv, 41000, 53] : [a.srv, a.ext, 53, extPort];
  if (proto === "icmp") {
    return {
      family,
      src,
      dst,
      proto,
      icmpType: egress ? (family === 4 ? 8 : 128) : (family === 4 ? 0 : 129),
      icmpId: egress ? 41000 : extPort,
      icmpSeq: 1,
      payload,
    };
  }
  return { family, src, dst, proto, sport, dport, tcpFlags: { ack: true }, payload };
}

// Both objects: the inline checksum update (ip_summed read through BTF) and the
// compatibility one through the kernel's helpers (lib/nat/loader.ts).
for (const csum of ["inline", "helpers"] as const) {
  const tag = csum === "inline" ? "" : " [helpers object]";
  for (const family of [4, 6] as const) {
    for (const proto of ["udp", "tcp", "icmp"] as const) {
      Deno.test(`CHECKSUM_COMPLETE skb: IPv${family} ${proto} both ways keeps skb->csum valid${tag}`, async () => {
        const n = await natFor(csum);
        try {
          // A first run without the flag: a new mapping takes the slow path.
          const first = n.runRaw("egress", buildPacket(spec(family, proto, true)));
          assertEquals(first.retval, TC_ACT_OK);
          for (let i = 0; i < 2; i++) {
            // throws EBADMSG when skb->csum went wrong
            const out = n.runRaw("egress", buildPacket(spec(family, proto, true)), COMPLETE);
            assertEquals(out.retval, TC_ACT_OK);
            const p = parsePacket(out.bytes);
            assertEquals(p.src, ADDR[family].ext);
            assert(p.l4ChecksumOk, "L4 checksum after egress");
            const ext = proto === "icmp" ? p.icmpId! : p.sport!;
            assert(ext >= 20000 && ext <= 29999, `external port ${ext}`);
            const back = n.runRaw(
              "ingress",
              buildPacket(spec(family, proto, false, ext)),
              COMPLETE,
            );
            assertEquals(back.retval, TC_ACT_OK);
            const q = parsePacket(back.bytes);
            assertEquals(q.dst, ADDR[family].lan);
            assert(q.l4ChecksumOk, "L4 checksum after ingress");
          }
        } finally {
          n.close();
        }
      });
    }
  }

  for (const family of [4, 6] as const) {
    const a = ADDR[family];
    Deno.test(`CHECKSUM_COMPLETE skb: IPv${family} ICMP errors both ways keep skb->csum valid${tag}`, async () => {
      const n = await natFor(csum);
      try {
        const sent = n.runRaw(
          "egress",
          buildPacket(udp(family, a.lan, 41000, a.srv, 53)),
          COMPLETE,
        );
        const ext = parsePacket(sent.bytes).sport!;
        const hop = family === 4 ? "198.51.100.254" : "2001:db8:3::fe";
        const inErr = buildIcmpError(
          {
            family,
            src: hop,
            dst: a.ext,
            icmpType: family === 4 ? 3 : 1,
            icmpCode: family === 4 ? 3 : 4,
          },
          sent.bytes.slice(14),
        );
        const r = n.runRaw("ingress", inErr, COMPLETE);
        assertEquals(r.retval, TC_ACT_OK);
        const p = parsePacket(r.bytes);
        assertEquals([p.dst, p.inner!.src, p.inner!.sport], [a.lan, a.lan, 41000]);
        assert(p.l4ChecksumOk && p.inner!.l4ChecksumOk, "checksums");

        const inbound = n.runRaw(
          "ingress",
          buildPacket(udp(family, a.srv, 7777, a.ext, ext)),
          COMPLETE,
        );
        const outErr = buildIcmpError({ family, src: a.lan, dst: a.srv }, inbound.bytes.slice(14));
        const o = n.runRaw("egress", outErr, COMPLETE);
        assertEquals(o.retval, TC_ACT_OK);
        const q = parsePacket(o.bytes);
        assertEquals([q.src, q.inner!.dst, q.inner!.dport], [a.ext, a.ext, ext]);
        assert(q.l4ChecksumOk && q.inner!.l4ChecksumOk, "checksums");
      } finally {
        n.close();
      }
    });

    Deno.test(`CHECKSUM_COMPLETE skb: IPv${family} fragments both ways keep skb->csum valid${tag}`, async () => {
      const n = await natFor(csum);
      try {
        const [f1, f2] = fragment(
          buildPacket(udp(family, a.lan, 41000, a.srv, 53)),
          family,
          0x1234,
          16,
        );
        const o1 = parsePacket(n.runRaw("egress", f1, COMPLETE).bytes);
        const o2 = parsePacket(n.runRaw("egress", f2, COMPLETE).bytes);
        assertEquals([o1.src, o2.src], [a.ext, a.ext]);
        const [g1, g2] = fragment(
          buildPacket(udp(family, a.srv, 53, a.ext, o1.sport!)),
          family,
          0x99,
          16,
        );
        const i1 = parsePacket(n.runRaw("ingress", g1, COMPLETE).bytes);
        const i2 = parsePacket(n.runRaw("ingress", g2, COMPLETE).bytes);
        assertEquals([i1.dst, i1.dport, i2.dst], [a.lan, 41000, a.lan]);
        // Out of order: the later fragment is held, then the first is rewritten over by the
        // replay and restored (the replay itself is not cloned under a test run).
        const [h1, h2] = fragment(
          buildPacket(udp(family, a.srv, 53, a.ext, o1.sport!)),
          family,
          0x77,
          16,
        );
        assertEquals(n.runRaw("ingress", h2, COMPLETE).retval, TC_ACT_SHOT, "later fragment held");
        const r1 = n.runRaw("ingress", h1, COMPLETE);
        assertEquals(r1.retval, TC_ACT_OK);
        assertEquals(parsePacket(r1.bytes).dst, a.lan);
      } finally {
        n.close();
      }
    });
  }

  Deno.test(`CHECKSUM_COMPLETE skb: UDP without checksum (v4, and v6 as tunnels send it) keeps skb->csum valid both ways${tag}`, async () => {
    const n = await natFor(csum);
    try {
      for (const family of [4, 6] as const) {
        const a = ADDR[family];
        const out = n.runRaw(
          "egress",
          buildPacket({ ...udp(family, a.lan, 41000, a.srv, 53), udpZeroChecksum: true }),
          COMPLETE,
        );
        const p = parsePacket(out.bytes);
        assertEquals([p.src, p.l4Checksum], [a.ext, 0], `IPv${family} egress`);
        const back = n.runRaw(
          "ingress",
          buildPacket({ ...udp(family, a.srv, 53, a.ext, p.sport!), udpZeroChecksum: true }),
          COMPLETE,
        );
        const q = parsePacket(back.bytes);
        assertEquals([q.dst, q.dport, q.l4Checksum], [a.lan, 41000, 0], `IPv${family} ingress`);
      }
    } finally {
      n.close();
    }
  });

  Deno.test(`CHECKSUM_COMPLETE skb: releasing held fragments (one as long as the first, one shorter) leaves the first fragment's skb->csum valid${tag}`, async () => {
    const n = await natFor(csum);
    try {
      for (const family of [4, 6] as const) {
        const a = ADDR[family];
        const ext = parsePacket(
          n.runRaw("egress", buildPacket(udp(family, a.lan, 41000, a.srv, 53))).bytes,
        )
          .sport!;
        // A datagram of 3 fragments, 24 + 24 + 8 bytes of UDP: the middle one is as long as
        // the first, the last shorter. Both later ones come first and are held.
        const dgram = buildPacket({
          ...udp(family, a.srv, 53, a.ext, ext),
          payload: new Uint8Array(48),
        });
        const [f1, rest] = fragment(dgram, family, 0x4242, 24); // rest: 32 bytes from offset 24
        const [, f3] = fragment(dgram, family, 0x4242, 48); // the last 8 bytes
        const hl = family === 4 ? 20 : 48;
        const f2 = rest.slice(0, 14 + hl + 24); // the 24 bytes from offset 24, more to come
        const v = new DataView(f2.buffer);
        if (family === 4) {
          v.setUint16(14 + 2, hl + 24);
          v.setUint16(14 + 6, v.getUint16(14 + 6) | 0x2000);
          v.setUint16(14 + 10, 0);
          v.setUint16(14 + 10, internetChecksum(f2.subarray(14, 14 + hl)));
        } else {
          v.setUint16(14 + 4, 8 + 24);
          v.setUint16(14 + 40 + 2, v.getUint16(14 + 40 + 2) | 1);
        }
        assertEquals(f2.length, f1.length, "middle fragment as long as the first");
        assert(f3.length < f1.length && f3.length > 14 + hl);
        assertEquals(n.runRaw("ingress", f2, COMPLETE).retval, TC_ACT_SHOT, "held");
        assertEquals(n.runRaw("ingress", f3, COMPLETE).retval, TC_ACT_SHOT, "held");
        const first = n.runRaw("ingress", f1, COMPLETE); // EBADMSG before the fix
        assertEquals(first.retval, TC_ACT_OK);
        assertEquals(parsePacket(first.bytes).dst, a.lan);
      }
    } finally {
      n.close();
    }
  });
}
