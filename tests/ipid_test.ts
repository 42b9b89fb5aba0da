/**
 * The IPv4 identification of translated datagrams (RFC 6864 5.3.1, bpf/lib/ipid.h), through
 * BPF_PROG_TEST_RUN: a non-atomic datagram (DF clear, or a fragment) leaves with an ID from the
 * counter of its (external source, destination, protocol), so two hosts' datagrams with one ID
 * to one remote cannot meet in its reassembly; the fragments of one datagram keep one ID; atomic
 * datagrams and inbound ones keep theirs.
 */
import { assert, assertEquals, assertNotEquals } from "./lib/assert.ts";
import {
  buildIcmpError,
  buildPacket,
  fragment,
  internetChecksum,
  type PacketSpec,
  parsePacket,
} from "./lib/packet.ts";
import { loadTestNat, type Nat, TC_ACT_OK, testInterfaceConfig } from "./lib/natfixture.ts";
import { withPrivateBpffs } from "./lib/bpffs.ts";
import { readMeta } from "../lib/state/pin.ts";

const EXT = "203.0.113.1";
const LAN1 = "192.0.2.10";
const LAN2 = "192.0.2.20";
const SRV = "198.51.100.1";
const SRV2 = "198.51.100.2";
const payload = new TextEncoder().encode("0123456789abcdefghijklmnopqrstuvwxyz");

function dgram(
  src: string,
  dst: string,
  proto: "udp" | "tcp" | "icmp",
  o: Partial<PacketSpec> = {},
): PacketSpec {
  const ports = proto === "icmp" ? { icmpId: 4242 } : { sport: 40000, dport: 53 };
  return { family: 4, src, dst, proto, ...ports, payload, ipId: 0x1234, ...o };
}

async function withNat(fn: (n: Nat) => void | Promise<void>) {
  const n = await loadTestNat(testInterfaceConfig(), ["203.0.113.1/24"]);
  try {
    await fn(n);
  } finally {
    n.close();
  }
}

/** The identification of an egress run's output, checked translated with a valid header. */
function idOut(n: Nat, frame: Uint8Array): number {
  const r = n.runRaw("egress", frame);
  assertEquals(r.retval, TC_ACT_OK);
  const p = parsePacket(r.bytes);
  assertEquals(p.src, EXT);
  assert(p.ipChecksumOk, "IPv4 header checksum");
  if (!p.isFragment) assert(p.l4ChecksumOk, "L4 checksum");
  return p.ipId;
}

Deno.test("IPv4 ID: two hosts' non-atomic datagrams with one ID to one remote leave with different IDs, one sequence per (external, remote, protocol)", async () => {
  await withNat((n) => {
    for (const proto of ["udp", "tcp", "icmp"] as const) {
      // both hosts send ID 0x1234 every time: masquerade would send 0x1234 from EXT each time
      const ids = [];
      for (let i = 0; i < 100; i++) {
        ids.push(idOut(n, buildPacket(dgram(i % 2 ? LAN2 : LAN1, SRV, proto))));
      }
      assertEquals(new Set(ids).size, 100, `${proto}: all distinct`);
      for (let i = 1; i < ids.length; i++) {
        assertEquals(ids[i], (ids[0] + i) & 0xffff, `${proto}: one counter, in sequence`);
      }
    }
    // another remote has a counter of its own (where it starts is the keyed hash's)
    const a = idOut(n, buildPacket(dgram(LAN1, SRV2, "udp")));
    assertEquals(idOut(n, buildPacket(dgram(LAN2, SRV2, "udp"))), (a + 1) & 0xffff);
  });
});

Deno.test("IPv4 ID: atomic datagrams (DF, no fragment) keep theirs; inbound datagrams keep theirs", async () => {
  await withNat((n) => {
    for (const proto of ["udp", "tcp", "icmp"] as const) {
      const df = buildPacket(dgram(LAN1, SRV, proto, { dontFragment: true, ipId: 0x4321 }));
      assertEquals(idOut(n, df), 0x4321, `${proto} with DF`);
    }
    const ext = n.egress(dgram(LAN1, SRV, "udp")).out.sport!;
    for (const dontFragment of [false, true]) {
      const back = n.ingress({ ...dgram(SRV, EXT, "udp"), sport: 53, dport: ext, dontFragment });
      assertEquals([back.retval, back.out.dst, back.out.ipId], [TC_ACT_OK, LAN1, 0x1234]);
      assert(back.out.ipChecksumOk);
    }
  });
});

Deno.test("IPv4 ID: every fragment of a datagram leaves with one new ID, in order or later fragment first; two hosts' datagrams with one ID get two", async () => {
  await withNat((n) => {
    const [a1, a2] = fragment(buildPacket(dgram(LAN1, SRV, "udp")), 4, 0x77, 16);
    const [b1, b2] = fragment(buildPacket(dgram(LAN2, SRV, "udp")), 4, 0x77, 16);
    const a = [idOut(n, a1), idOut(n, a2)];
    const b = [idOut(n, b2), idOut(n, b1)]; // its later fragment first
    assertEquals(a[1], a[0], "LAN1's fragments: one ID");
    assertEquals(b[1], b[0], "LAN2's fragments, out of order: one ID");
    assertNotEquals(a[0], b[0], "two datagrams, two IDs");
    // a datagram of LAN1's with a new ID of its own: a new ID after translation too
    const [c1] = fragment(buildPacket(dgram(LAN1, SRV, "udp")), 4, 0x78, 16);
    assert(![a[0], b[0]].includes(idOut(n, c1)));
  });
});

Deno.test("IPv4 ID: a GSO skb takes one ID per segment (segmentation numbers them on from its own)", async () => {
  await withNat((n) => {
    const ctx = new Uint8Array(192); // struct __sk_buff
    const dv = new DataView(ctx.buffer);
    dv.setUint32(164, 8, true); // gso_segs
    dv.setUint32(176, 100, true); // gso_size
    const tcp = (o: Partial<PacketSpec>) =>
      dgram(LAN1, SRV, "tcp", { payload: new Uint8Array(800), tcpFlags: { ack: true }, ...o });
    n.egress(tcp({ tcpFlags: { syn: true } }));
    const g = n.runRaw("egress", buildPacket(tcp({})), { ctxIn: ctx });
    assertEquals(g.retval, TC_ACT_OK);
    const x = parsePacket(g.bytes).ipId;
    // its segments leave with x .. x + 7: the next datagram of the flow takes x + 8
    assertEquals(idOut(n, buildPacket(tcp({ ipId: 0x1300 }))), (x + 8) & 0xffff);
    assertEquals(idOut(n, buildPacket(tcp({ ipId: 0x1301 }))), (x + 9) & 0xffff);
  });
});

Deno.test("IPv4 ID: a later fragment after timeout_fragment still takes its first's new ID (kept as long as a reassembly waits)", async () => {
  const ic = testInterfaceConfig();
  const n = await loadTestNat({ ...ic, timeouts: { ...ic.timeouts, fragment: 100 } }, [
    "203.0.113.1/24",
  ]);
  try {
    const [f1, f2] = fragment(buildPacket(dgram(LAN1, SRV, "udp")), 4, 0x79, 16);
    const first = idOut(n, f1);
    await new Promise((r) => setTimeout(r, 250));
    assertEquals(idOut(n, f2), first);
  } finally {
    n.close();
  }
});

Deno.test("IPv4 ID: an internal host's ICMP error leaving takes a new ID; the datagram it quotes keeps its own", async () => {
  await withNat((n) => {
    const ext = n.egress(dgram(LAN1, SRV, "udp")).out.sport!;
    const inbound = n.ingress({ ...dgram(SRV, EXT, "udp"), sport: 53, dport: ext, ipId: 0x5555 });
    assertEquals(inbound.out.dst, LAN1);
    // the next ID of (EXT, SRV, ICMP), then LAN1's port unreachable about that datagram
    const next = (idOut(n, buildPacket(dgram(LAN2, SRV, "icmp"))) + 1) & 0xffff;
    const err = buildIcmpError(
      { family: 4, src: LAN1, dst: SRV, ipId: 0x1234 },
      inbound.bytes.slice(14),
    );
    const r = n.runRaw("egress", err);
    assertEquals(r.retval, TC_ACT_OK);
    const p = parsePacket(r.bytes);
    assertEquals([p.src, p.ipId, p.inner!.ipId], [EXT, next, 0x5555]);
    assert(p.ipChecksumOk && p.l4ChecksumOk, "checksums");
  });
});

Deno.test("IPv4 ID: another IP protocol (GRE, address-only NAT) without DF gets a new ID too", async () => {
  await withNat((n) => {
    const gre = (src: string) => {
      const f = buildPacket(dgram(src, SRV, "udp"));
      f[14 + 9] = 47;
      f[14 + 10] = f[14 + 11] = 0;
      const c = internetChecksum(f.subarray(14, 34));
      f[14 + 10] = c >> 8;
      f[14 + 11] = c & 0xff;
      return f;
    };
    const r = n.runRaw("egress", gre(LAN1));
    assertEquals(r.retval, TC_ACT_OK);
    const p = parsePacket(r.bytes);
    assertEquals(p.src, EXT);
    assert(p.ipChecksumOk, "IPv4 header checksum");
    const first = p.ipId;
    // the next datagram of the same (external, remote, protocol): the next ID
    const again = parsePacket(n.runRaw("egress", gre(LAN1)).bytes);
    assertEquals(again.ipId, (first + 1) & 0xffff);
  });
});

Deno.test("IPv4 ID: where a flow's sequence starts is drawn anew at each load (the hash key)", async () => {
  const firsts: number[] = [];
  for (let i = 0; i < 3; i++) {
    await withNat((n) => {
      firsts.push(idOut(n, buildPacket(dgram(LAN1, SRV, "udp"))));
    });
  }
  // three equal draws of 16 bits: once in 2^32 runs
  assert(new Set(firsts).size > 1, `first IDs ${firsts}`);
});

Deno.test("IPv4 ID: with pinned state a restart (or --replace) goes on with each flow's sequence, and a datagram's later fragments keep its new ID", async () => {
  const id = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  await withPrivateBpffs(`ipid-${id}`, async (bpffs) => {
    const pin = { dir: `${bpffs}/einat/zzipid0`, ifname: "zzipid0" };
    const load = () => loadTestNat(testInterfaceConfig(), [`${EXT}/24`], { pin });
    const f = (ipId: number) => buildPacket(dgram(LAN1, SRV, "udp", { ipId }));
    const g = (ipId: number) => buildPacket(dgram(LAN1, SRV2, "udp", { ipId }));
    const [d1, d2] = fragment(buildPacket(dgram(LAN2, SRV, "udp", { ipId: 0x99 })), 4, 0x99, 16);
    let before: number[], split: number;
    const a = await load();
    try {
      assert(!a.nat.pins?.reused.includes("map_ip_id"), "a first start makes the counters");
      before = [idOut(a, f(1)), idOut(a, f(2)), idOut(a, g(3))];
      assertEquals(before[1], (before[0] + 1) & 0xffff, "one flow, one sequence");
      // LAN2's datagram to SRV shares f's counter (one per external source, remote, protocol);
      // its later fragment comes after the restart
      split = idOut(a, d1);
      assertEquals(split, (before[1] + 1) & 0xffff);
    } finally {
      a.close();
    }
    const key = readMeta(pin.dir)?.ipIdKey;
    assert(typeof key === "number", `the stamp keeps the key: ${key}`);
    const b = await load();
    try {
      assert(b.nat.pins?.reused.includes("map_ip_id"), "the counters are carried over");
      assert(b.nat.pins?.reused.includes("map_ipid_frag"), "so are the datagrams' IDs");
      assertEquals(idOut(b, f(4)), (split + 1) & 0xffff, "the flow's sequence goes on");
      assertEquals(idOut(b, g(5)), (before[2] + 1) & 0xffff, "so does the other flow's");
      assertEquals(idOut(b, d2), split, "a later fragment keeps its datagram's new ID");
      assertEquals(readMeta(pin.dir)?.ipIdKey, key, "the same key, stamped again");
    } finally {
      b.close();
    }
  });
});
