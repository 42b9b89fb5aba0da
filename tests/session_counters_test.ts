/**
 * Per-session packet and byte counters (`session_counters`, map_sess_counters) through
 * BPF_PROG_TEST_RUN: every translated packet of a session counts once whichever path served it
 * (a new mapping, the lookups, the flow cache; both directions; ICMP echo), a session made again
 * on the same key starts from zero, `show` lists the counts, and nothing is counted when off.
 * No namespace.
 */
import { assert, assertEquals, assertThrows } from "./lib/assert.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { formatAddr, parseAddr } from "../lib/config/cidr.ts";
import { encodeCtKey, IPPROTO, SESS_COUNTER_LAYOUT } from "../lib/nat/codec.ts";
import { bumpEpoch } from "../lib/nat/loader.ts";
import {
  counterKey,
  countingOn,
  readSessionCounters,
  type SessionCounts,
  sumCounts,
} from "../lib/nat/counters.ts";
import { endpoint, readSessions, type SessionRow } from "../lib/state/read.ts";
import { formatText, topSessions } from "../lib/state/show.ts";
import { buildPacket, fragment, type PacketSpec, parsePacket, udpSpec } from "./lib/packet.ts";
import { pinThread, restoreAffinity } from "./lib/cpu.ts";
import {
  loadTestNat,
  type Nat,
  sessionsOf,
  stat,
  stateView,
  TC_ACT_OK,
  testInterfaceConfig,
} from "./lib/natfixture.ts";

const EXT = "203.0.113.1";
const LAN1 = "192.0.2.10";
const SRV1 = "198.51.100.1";
const SRV2 = "198.51.100.2";
const EXT6 = "2001:db8:2::1";
const LAN6 = "2001:db8:1::10";
const SRV6 = "2001:db8:3::1";
const PAYLOAD = new TextEncoder().encode("hello");
/** The IP length of a {@link udp} packet: what a packet counts in bytes. */
const UDP_LEN = 20 + 8 + PAYLOAD.length;

const udp = (src: string, sport: number, dst: string, dport: number): PacketSpec =>
  udpSpec(4, src, sport, dst, dport, PAYLOAD);

/** The counts of the session (ext, remote) of `n`, as `show` would sum them. */
function countsOf(
  n: Nat,
  l4proto: number,
  ext: [string, number],
  remote: [string, number],
): SessionCounts | null {
  const family = ext[0].includes(":") ? 6 : 4;
  const key = encodeCtKey({
    l4proto,
    family,
    extAddr: parseAddr(ext[0]),
    extPort: ext[1],
    remoteAddr: parseAddr(remote[0]),
    remotePort: remote[1],
  });
  const row = readSessions(view(n)).find((s) =>
    s.external === endpoint(family, parseAddr(ext[0]), ext[1]) &&
    s.remote === endpoint(family, parseAddr(remote[0]), remote[1])
  );
  assert(row, `a session ${ext} ${remote}`);
  // What show lists is what the map holds for the session's created_s.
  const createdS =
    sessionsOf(n.nat.maps).find((x) =>
      x.key.l4proto === l4proto && x.key.extPort === ext[1] && x.key.remotePort === remote[1] &&
      formatAddr(x.key.remoteAddr) === formatAddr(parseAddr(remote[0]))
    )!.value.createdS;
  const raw = readSessionCounters(n.nat.maps.sessCounters).get(counterKey(key));
  assertEquals(row.counters ?? null, raw ? sumCounts(raw, createdS) : null);
  return row.counters ?? null;
}

const view = (n: Nat) => stateView(n.nat);

/** Runs `fn` pinned to CPU 0: each CPU counts in its own value. */
async function onCpu0<T>(fn: () => Promise<T>): Promise<T> {
  const a = pinThread(0);
  try {
    return await fn();
  } finally {
    restoreAffinity(a);
  }
}

Deno.test("session counters: packets and bytes of each session, once per packet whichever path served it, both directions", () =>
  onCpu0(async () => {
    const n = await loadTestNat(testInterfaceConfig({ sessionCounters: 1024 }));
    try {
      assert(countingOn(n.nat.maps.sessCounters));
      // A new mapping (the full path), then packets the flow cache serves.
      const first = n.egress(udp(LAN1, 40000, SRV1, 53));
      assertEquals(first.retval, TC_ACT_OK);
      const ext = first.out.sport!;
      const missesBefore = stat(n.nat.maps.stats, "flow_cache_miss");
      for (let i = 0; i < 2; i++) assertEquals(n.egress(udp(LAN1, 40000, SRV1, 53)).retval, 0);
      // A moved epoch sends the next packets through the lookups (the established path).
      bumpEpoch(n.nat);
      assertEquals(n.egress(udp(LAN1, 40000, SRV1, 53)).retval, TC_ACT_OK);
      // Replies: the lookups fill the slot, the next one is served from it.
      for (let i = 0; i < 3; i++) {
        const r = n.ingress(udp(SRV1, 53, EXT, ext));
        assertEquals([r.retval, r.out.dport], [TC_ACT_OK, 40000]);
      }
      // (the first reply found the inbound slot empty: the one miss)
      assertEquals(stat(n.nat.maps.stats, "flow_cache_miss"), missesBefore + 1n);
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, ext], [SRV1, 53]), {
        packetsOut: 4,
        bytesOut: 4 * UDP_LEN,
        packetsIn: 3,
        bytesIn: 3 * UDP_LEN,
      });

      // Another remote (EIF): its first packet makes no session (nor counts), the answer does.
      assertEquals(n.ingress(udp(SRV2, 7, EXT, ext)).retval, TC_ACT_OK);
      assertEquals(n.egress(udp(LAN1, 40000, SRV2, 7)).retval, TC_ACT_OK);
      assertEquals(n.ingress(udp(SRV2, 7, EXT, ext)).retval, TC_ACT_OK);
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, ext], [SRV2, 7]), {
        packetsOut: 1,
        bytesOut: UDP_LEN,
        packetsIn: 1,
        bytesIn: UDP_LEN,
      });
      // The first session's counts did not move.
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, ext], [SRV1, 53])?.packetsOut, 4);

      // ICMP echo: the session's remote port is 0, its external port the identifier's.
      const ping: PacketSpec = {
        family: 4,
        src: LAN1,
        dst: SRV1,
        proto: "icmp",
        icmpType: 8,
        icmpId: 777,
        payload: PAYLOAD,
      };
      const echo = n.egress(ping);
      assertEquals(echo.retval, TC_ACT_OK);
      const id = echo.out.icmpId!;
      const reply = n.ingress({ ...ping, src: SRV1, dst: EXT, icmpType: 0, icmpId: id });
      assertEquals([reply.retval, reply.out.icmpId], [TC_ACT_OK, 777]);
      const icmpLen = 20 + 8 + PAYLOAD.length;
      assertEquals(countsOf(n, IPPROTO.ICMP, [EXT, id], [SRV1, 0]), {
        packetsOut: 1,
        bytesOut: icmpLen,
        packetsIn: 1,
        bytesIn: icmpLen,
      });

      // --top: the sessions that moved the most bytes, most first: the UDP flow to SRV1 (seven
      // packets), then the two of one packet each way.
      const top = topSessions(readSessions(view(n)), 2);
      assertEquals(top.map((s) => s.remote)[0], `${SRV1}:53`);
      assertEquals(top.length, 2);
      assertEquals(topSessions(readSessions(view(n)), 10).length, 3);

      // show prints them as columns.
      const text = formatText(
        { sessions: readSessions(view(n)), bindings: [], counters: [], missing: [], served: [] },
        false,
      );
      assert(/PACKETS OUT\/IN +BYTES OUT\/IN/.test(text), text);
      assert(new RegExp(`${SRV1}:53 .* 4/3 +${4 * UDP_LEN}/${3 * UDP_LEN}`).test(text), text);
    } finally {
      n.close();
    }
  }));

Deno.test("session counters: a value left by an earlier session on the same key (another created_s) is not shown as this one's, and the lookups start it over", () =>
  onCpu0(async () => {
    const n = await loadTestNat(testInterfaceConfig({ sessionCounters: 1024 }));
    try {
      // 25000 is in the range: kept, so the session comes back on the same key.
      for (let i = 0; i < 3; i++) n.egress(udp(LAN1, 25000, SRV1, 53));
      const key = encodeCtKey({
        l4proto: IPPROTO.UDP,
        family: 4,
        extAddr: parseAddr(EXT),
        extPort: 25000,
        remoteAddr: parseAddr(SRV1),
        remotePort: 53,
      });
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, 25000], [SRV1, 53])?.packetsOut, 3);
      // Counts of an earlier session on this key (its created_s a few seconds apart, as a
      // session gone and made again has it): the next packet that takes the lookups starts
      // the value over for this session.
      const fd = n.nat.maps.sessCounters;
      const raw = readSessionCounters(fd).get(counterKey(key))!;
      const slot = Math.ceil(SESS_COUNTER_LAYOUT.size / 8) * 8;
      const v = new DataView(raw.buffer, raw.byteOffset);
      for (let o = 0; o + slot <= raw.length; o += slot) {
        v.setUint32(o, v.getUint32(o, true) - 5, true);
      }
      bpf.mapUpdate(fd, key, raw);
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, 25000], [SRV1, 53]), {
        packetsOut: 0,
        bytesOut: 0,
        packetsIn: 0,
        bytesIn: 0,
      }, "another session's counts are not this one's");
      // A packet from the slot adds to the value where it is; the lookups start it over.
      n.egress(udp(LAN1, 25000, SRV1, 53));
      bumpEpoch(n.nat);
      n.egress(udp(LAN1, 25000, SRV1, 53));
      n.egress(udp(LAN1, 25000, SRV1, 53));
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, 25000], [SRV1, 53]), {
        packetsOut: 2,
        bytesOut: 2 * UDP_LEN,
        packetsIn: 0,
        bytesIn: 0,
      });
    } finally {
      n.close();
    }
  }));

Deno.test("session counters: a hairpinned packet counts out of the sender's session and into the target's", () =>
  onCpu0(async () => {
    const n = await loadTestNat(testInterfaceConfig({ sessionCounters: 1024 }));
    try {
      const A = "192.0.2.10", B = "192.0.2.20";
      const a = n.egress(udp(A, 40000, SRV1, 53)).out.sport!;
      const b = n.egress(udp(B, 41000, SRV1, 53)).out.sport!;
      // A reaches B's mapping through the external address, three times (each goes the full
      // path: a hairpinned session stays off the flow cache). The first makes no session on
      // B's binding (nobody answered yet, as from outside); B's answer, turned back to A,
      // makes it, and A's later packets count into it.
      const hairpin = () => {
        const hp = n.egress(udp(A, 40000, EXT, b));
        assertEquals([hp.out.src, hp.out.sport, hp.out.dst, hp.out.dport], [EXT, a, B, 41000]);
      };
      hairpin();
      const back = n.egress(udp(B, 41000, EXT, a));
      assertEquals([back.out.src, back.out.sport, back.out.dst, back.out.dport], [
        EXT,
        b,
        A,
        40000,
      ]);
      hairpin();
      hairpin();
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, a], [EXT, b]), {
        packetsOut: 3,
        bytesOut: 3 * UDP_LEN,
        packetsIn: 1,
        bytesIn: UDP_LEN,
      });
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, b], [EXT, a]), {
        packetsOut: 1,
        bytesOut: UDP_LEN,
        packetsIn: 2,
        bytesIn: 2 * UDP_LEN,
      });
    } finally {
      n.close();
    }
  }));

Deno.test("session counters: a datagram's later fragments count in its session, both ways, IPv4 and IPv6", () =>
  onCpu0(async () => {
    const n = await loadTestNat(
      testInterfaceConfig({ sessionCounters: 1024, nat66: true }),
      [`${EXT}/24`, `${EXT6}/64`],
    );
    try {
      const big = new Uint8Array(40).fill(7); // 48 bytes of UDP: 16 in the first fragment
      const answer = new Uint8Array(72).fill(9); // larger: a count in the wrong direction shows
      for (
        const [family, lan, srv, ext] of [[4, LAN1, SRV1, EXT], [6, LAN6, SRV6, EXT6]] as const
      ) {
        const bytes = (f: Uint8Array) => f.length - 14; // what a packet counts: its IP bytes
        // Out: a datagram in two fragments; the first makes the mapping and its session.
        const [o1, o2] = fragment(
          buildPacket(udpSpec(family, lan, 5000, srv, 53, big)),
          family,
          0x51,
          16,
        );
        const first = n.runRaw("egress", o1);
        assertEquals(first.retval, TC_ACT_OK);
        const port = parsePacket(first.bytes).sport!;
        const later = parsePacket(n.runRaw("egress", o2).bytes);
        assertEquals(later.src, ext, `${family}: the later fragment is translated`);
        // In: the answer, in two fragments.
        const [i1, i2] = fragment(
          buildPacket(udpSpec(family, srv, 53, ext, port, answer)),
          family,
          0x52,
          16,
        );
        assertEquals(parsePacket(n.runRaw("ingress", i1).bytes).dst, lan);
        assertEquals(parsePacket(n.runRaw("ingress", i2).bytes).dst, lan);
        // An unfragmented packet each way as well.
        const whole = buildPacket(udpSpec(family, lan, 5000, srv, 53, PAYLOAD));
        assertEquals(n.runRaw("egress", whole).retval, TC_ACT_OK);
        assertEquals(countsOf(n, IPPROTO.UDP, [ext, port], [srv, 53]), {
          packetsOut: 3,
          bytesOut: bytes(o1) + bytes(o2) + bytes(whole),
          packetsIn: 2,
          bytesIn: bytes(i1) + bytes(i2),
        }, `IPv${family}`);
      }
      // A datagram from outside that nobody answered (no session: it makes none) counts nowhere,
      // and takes nothing from the session above.
      const ext = n.egress(udp(LAN1, 5001, SRV1, 53)).out.sport!;
      const before = countsOf(n, IPPROTO.UDP, [EXT, ext], [SRV1, 53]);
      const [u1, u2] = fragment(buildPacket(udp(SRV2, 7, EXT, ext)), 4, 0x53, 8);
      assertEquals(parsePacket(n.runRaw("ingress", u1).bytes).dst, LAN1);
      assertEquals(parsePacket(n.runRaw("ingress", u2).bytes).dst, LAN1);
      assertEquals(countsOf(n, IPPROTO.UDP, [EXT, ext], [SRV1, 53]), before);
      assertEquals(
        sessionsOf(n.nat.maps).filter((s) => formatAddr(s.key.remoteAddr) === SRV2).length,
        0,
      );
    } finally {
      n.close();
    }
  }));

Deno.test("session counters: off by default, nothing counted, show lists no counts", async () => {
  const n = await loadTestNat();
  try {
    assert(!countingOn(n.nat.maps.sessCounters));
    const r = n.egress(udp(LAN1, 40000, SRV1, 53));
    n.ingress(udp(SRV1, 53, EXT, r.out.sport!));
    assertEquals(readSessionCounters(n.nat.maps.sessCounters).size, 0);
    const rows = readSessions(view(n));
    assertEquals(rows.length, 1);
    assert(!("counters" in rows[0]), JSON.stringify(rows[0]));
    assertThrows(
      () => topSessions(rows, 5),
      /--top: no session counts here: session_counters is off/,
    );
  } finally {
    n.close();
  }
});

Deno.test("show --top leaves out sessions whose counts were not kept (more sessions than session_counters)", () => {
  const row = (
    remote: string,
    counters: SessionRow["counters"],
  ) => ({ remote, counters } as unknown as SessionRow);
  const c = { packetsOut: 1, packetsIn: 1, bytesOut: 100, bytesIn: 100 };
  const top = topSessions([row("a", null), row("b", c), row("c", null)], 10);
  assertEquals(top.map((r) => r.remote), ["b"]);
});
