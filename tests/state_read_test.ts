/**
 * Reading state at scale (lib/state/read.ts): the metrics endpoint's tallies count what
 * `show`'s rows list, exactly, and `show` lists and prints hundreds of thousands of sessions
 * (a spread of that many rows into a call overflowed the stack; a locale-aware sort took most
 * of a minute). Through BPF_PROG_TEST_RUN and direct map writes; no namespace.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { monotonicNs } from "../lib/ffi/libc.ts";
import { roConfigOf } from "../lib/daemon.ts";
import { timeoutsOf } from "../lib/state/pin.ts";
import {
  type PinnedState,
  readBindings,
  readSessions,
  tallyBindings,
  tallySessions,
} from "../lib/state/read.ts";
import { formatText } from "../lib/state/show.ts";
import { fillSessions } from "../bench/lib/bpfbench.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import type { PacketSpec } from "./lib/packet.ts";
import {
  loadTestNat,
  type Nat,
  stateView,
  TC_ACT_OK,
  testInterfaceConfig,
} from "./lib/natfixture.ts";

const EXT = "203.0.113.1";
const EXT6 = "2001:db8:2::1";

function view(n: Nat, withTimeouts: boolean): PinnedState {
  const timeouts = timeoutsOf(roConfigOf(testInterfaceConfig()));
  return stateView(
    n.nat,
    withTimeouts ? { maps: {}, timeoutsNs: timeouts } as PinnedState["meta"] : null,
  );
}

function pkt(family: 4 | 6, proto: "udp" | "tcp" | "icmp", src: string, dst: string, port = 0) {
  return {
    family,
    src,
    dst,
    proto,
    sport: 40000 + port,
    dport: 53,
    icmpId: 7 + port,
  } as PacketSpec;
}

/** Counts rows by a key. */
function countBy<T>(rows: T[], key: (r: T) => string | null): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of rows) {
    const k = key(r);
    if (k !== null) m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

const sorted = (m: Map<string, number>) => [...m].sort(([a], [b]) => a < b ? -1 : 1);

/** An endpoint's order: family, its 16 address bytes (IPv4 zero-padded), its port. */
function endOrder(e: string): number[] {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(e)!;
  const a = parseAddr(m[1]), v = new Array(16).fill(0);
  a.forEach((x, i) => v[i] = x);
  return [a.length === 4 ? 4 : 6, ...v, Number(m[2])];
}

/** Compares number tuples element by element. */
function tupleCmp(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

const PROTO_NUMBER: Record<string, number> = { icmp: 1, tcp: 6, udp: 17 };

Deno.test("state read: the metrics tallies count exactly what show's rows list", async () => {
  const n = await loadTestNat(testInterfaceConfig({ nat66: true }), [`${EXT}/24`, `${EXT6}/64`]);
  try {
    // Real bindings and sessions: two IPv4 UDP hosts (one with two remotes), IPv4 TCP and ICMP,
    // IPv6 UDP.
    for (
      const p of [
        pkt(4, "udp", "192.0.2.10", "198.51.100.1"),
        pkt(4, "udp", "192.0.2.10", "198.51.100.2"),
        pkt(4, "udp", "192.0.2.11", "198.51.100.1"),
        pkt(4, "tcp", "192.0.2.10", "198.51.100.1"),
        pkt(4, "icmp", "192.0.2.10", "198.51.100.1"),
        pkt(6, "udp", "2001:db8:1::10", "2001:db8:3::1"),
      ]
    ) assertEquals(n.egress(p).retval, TC_ACT_OK);
    // 3,000 more IPv4 UDP sessions written directly (remotes on binding-less external ports:
    // the tallies count what is in the map). Read as of a day later (not a day back: the
    // machine may have been up for less), when the 2,000 stamped then are live and the rest,
    // the six above included, long expired.
    const now = monotonicNs() + 86_400_000_000_000n;
    fillSessions(n.nat, 2000, { extAddr: EXT, portBase: 1024, ports: 60000, lastSeenNs: now });
    const old = now - 86_400_000_000_000n;
    fillSessions(n.nat, 1000, { extAddr: EXT, portBase: 62000, ports: 1000, lastSeenNs: old });

    for (const timeouts of [true, false]) {
      const st = view(n, timeouts);
      const b = tallyBindings(st), s = tallySessions(st, now);
      const rows = readBindings(st), srows = readSessions(st, {}, now);

      // Exact, independent of the rows.
      assertEquals(sorted(b.byProto), [["4/icmp", 1], ["4/tcp", 1], ["4/udp", 2], ["6/udp", 1]]);
      assertEquals(sorted(b.byExternal), [
        [`${EXT6}/udp`, 1],
        [`${EXT}/icmp`, 1],
        [`${EXT}/tcp`, 1],
        [`${EXT}/udp`, 2],
      ]);
      // The ports themselves, as the rows name them (metrics count those of the ranges).
      for (const [k, ports] of b.portsByExternal) {
        const [addr, proto] = k.split("/");
        const named = rows.filter((r) =>
          r.protocol === proto && r.external.replace(/:\d+$/, "").replace(/^\[|\]$/g, "") === addr
        ).map((r) => Number(/:(\d+)$/.exec(r.external)![1]));
        assertEquals([...ports].sort(), named.sort(), k);
      }
      assertEquals(s.expired, timeouts ? 1000 + 6 : 0);
      assertEquals(
        sorted(s.byProto),
        timeouts
          ? [["4/udp", 2000]]
          : [["4/icmp", 1], ["4/tcp", 1], ["4/udp", 3 + 3000], ["6/udp", 1]],
      );

      // And the same as the rows.
      assertEquals(sorted(b.byProto), sorted(countBy(rows, (r) => `${r.family}/${r.protocol}`)));
      assertEquals(
        sorted(b.byExternal),
        sorted(
          countBy(
            rows,
            (r) => `${r.external.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")}/${r.protocol}`,
          ),
        ),
      );
      assertEquals(s.expired, srows.filter((r) => r.expired).length);
      // In order: by external endpoint, then remote endpoint (family, address bytes, port), then
      // protocol; bindings by external endpoint, then protocol.
      const order = (r: { external: string; remote?: string; protocol: string }) => [
        ...endOrder(r.external),
        ...(r.remote ? endOrder(r.remote) : []),
        PROTO_NUMBER[r.protocol],
      ];
      assertEquals(srows, [...srows].sort((a, b) => tupleCmp(order(a), order(b))));
      assertEquals(rows, [...rows].sort((a, b) => tupleCmp(order(a), order(b))));
      assert(srows.some((r) => r.family === 6) && srows.some((r) => r.protocol === "icmp"));
      assertEquals(
        sorted(s.byProto),
        sorted(countBy(srows, (r) => r.expired ? null : `${r.family}/${r.protocol}`)),
      );
    }
  } finally {
    n.close();
  }
});

Deno.test("state read: show lists and prints 200,000 sessions, by external then remote endpoint", async () => {
  const n = await loadTestNat(testInterfaceConfig({ ctMaxRecords: 262144 }));
  try {
    const count = 200_000;
    fillSessions(n.nat, count, { extAddr: EXT, portBase: 1024, ports: 60000 });
    const st = view(n, true);
    const rows = readSessions(st);
    assertEquals(rows.length, count);
    // External ports 1024 + i % 60000 with remotes 198.18.0.0 + i / 60000: in order, each port's
    // remotes ascending, then the next port; numeric, so 9999 before 10000.
    assertEquals(rows[0].external, `${EXT}:1024`);
    assertEquals(rows[0].remote, "198.18.0.0:443");
    assertEquals(rows[1].remote, "198.18.0.1:443");
    assertEquals(rows[4].external, `${EXT}:1025`);
    const i9999 = rows.findIndex((r) => r.external === `${EXT}:9999`);
    assertEquals(rows[i9999 + 4].external, `${EXT}:10000`);
    const text = formatText(
      { bindings: [], sessions: rows, counters: [], missing: [], served: [] },
      false,
    );
    assert(text.split("\n").length > count, "every session printed");
  } finally {
    n.close();
  }
});
