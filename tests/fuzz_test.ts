/**
 * Packet fuzzing of the datapath through BPF_PROG_TEST_RUN (tests/lib/fuzz.ts has the
 * generator, the oracle and the map invariants).
 *
 * - Random packets: `EINAT_FUZZ_COUNT` (default 20000) generated and mutated frames, egress
 *   and ingress, IPv4 and IPv6, run inside the router namespace of a test topology so the FIB
 *   lookups of hairpinning and ICMP 3/13 succeed. Seed: `EINAT_FUZZ_SEED` (default 20240601,
 *   "random" for a fresh one); it is printed, and a failure prints the packets in hex.
 * - Deterministic sweeps (no namespace): every truncation of a set of template packets, IPv6
 *   extension chains of every length, every IPv4 IHL with several total lengths.
 *
 * Known datapath bugs (`KNOWN_BUGS`) and leak classes (`LEAK_CLASSES`) are counted and
 * printed; `EINAT_FUZZ_STRICT=1` makes them fail.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import {
  bindingView,
  checkMaps,
  checkPacket,
  dissect,
  EXT4,
  EXT6,
  EXT_CIDRS,
  type ExtHdr,
  fixChecksums,
  fuzzConfig,
  fuzzEnv,
  type FuzzReport,
  hex,
  kernelRefuses,
  KNOWN_BUGS,
  type PacketCheck,
  replayNote,
  withIpv4Options,
  withIpv6Ext,
} from "./lib/fuzz.ts";
import { loadTestNat, type Nat, TC_ACT_OK, TC_ACT_SHOT } from "./lib/natfixture.ts";
import {
  buildIcmpError,
  buildPacket,
  fragment,
  type L4Proto,
  type PacketSpec,
} from "./lib/packet.ts";
import { withTopology } from "./lib/netns.ts";
import { ROOT } from "./lib/einat.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import * as bpf from "../lib/ffi/libbpf.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };
const env = fuzzEnv(20240601, 20000);

function describe(r: FuzzReport): string {
  const lines = [
    `seed ${r.seed} (replay: EINAT_FUZZ_SEED=${r.seed} EINAT_FUZZ_COUNT=${r.packets}): ` +
    `${r.packets} packets in ${r.ms} ms, ${r.kernelRejected} refused by BPF_PROG_TEST_RUN, ` +
    `${r.mapChecks} map checks (max ${r.maxBindings} bindings, ${r.maxSessions} sessions)`,
    `objects ${JSON.stringify(r.objects)}`,
    `outcomes ${JSON.stringify(r.outcomes)}`,
    `leak classes ${JSON.stringify(r.leaks)}`,
    `known bugs ${JSON.stringify(r.known)}`,
  ];
  for (const [id, n] of Object.entries(r.known)) {
    const b = KNOWN_BUGS.find((x) => x.id === id)!;
    lines.push(`  known bug ${id} x${n} (${b.repro}): example input ${r.knownExample[id].input}`);
  }
  for (const v of r.violations.slice(0, 8)) {
    lines.push(
      `VIOLATION #${v.index} ${v.dir} ${v.kind} -> ${v.outcome} verdict ${v.verdict}: ` +
        `${v.messages.join("; ")}\n  in  ${v.input}\n  out ${v.output}`,
    );
  }
  return lines.join("\n");
}

Deno.test({
  name: "fuzz: random and mutated packets keep every datapath promise and map invariant",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const args = [
        "run",
        "-A",
        "--config",
        `${ROOT}deno.json`,
        `${ROOT}tests/lib/fuzz_cli.ts`,
        "--seed",
        String(env.seed),
        "--count",
        String(env.count),
        "--check-every",
        String(env.count > 200_000 ? 20_000 : 2500),
        "--epoch", // at least two epochs: they alternate between the two objects
        String(Math.min(100_000, Math.ceil(env.count / 2))),
        "--quiet",
        ...(env.strict ? ["--strict"] : []),
      ];
      const out = await t.exec(t.ns.router, [Deno.execPath(), ...args], {
        timeoutMs: Math.max(50_000, env.count * 2),
      });
      const r = JSON.parse(out) as FuzzReport;
      console.log(describe(r));
      assertEquals(r.packets, env.count);
      assert(r.objects.inline > 0 && r.objects.helpers > 0, JSON.stringify(r.objects));
      assert(r.outcomes["egress:translated"] > 0 && r.outcomes["ingress:translated"] > 0);
      assert((r.outcomes["egress:hairpin"] ?? 0) > 0, "the hairpin path was exercised");
      assertEquals(r.violations.length, 0, describe(r));
      if (env.strict) {
        assertEquals(r.leaks, {}, "internal sources left untranslated (strict)");
      }
    }, { ipv6: true }),
});

// --- deterministic sweeps (no namespace) ------------------------------------------------

const LAN = { 4: "192.0.2.10", 6: "2001:db8:1::10" } as const;
const SRV = { 4: "198.51.100.1", 6: "2001:db8:3::1" } as const;
const EXT = { 4: EXT4, 6: EXT6 } as const;
const payload = new TextEncoder().encode("0123456789abcdefghijklmnopqrstuvwxyz!");

interface Runner {
  nat: Nat;
  run(dir: "egress" | "ingress", b: Uint8Array): { verdict: number; out: Uint8Array } | null;
  failures: string[];
  counts: Record<string, number>;
}

async function runner(): Promise<Runner> {
  const ic = fuzzConfig();
  const nat = await loadTestNat(ic, EXT_CIDRS);
  const view = bindingView(nat);
  const r: Runner = {
    nat,
    failures: [],
    counts: {},
    run(dir, b) {
      if (kernelRefuses(b)) return null;
      const fd = dir === "egress" ? nat.nat.egressFd : nat.nat.ingressFd;
      const t = bpf.testRun(fd, b, { dataOutSize: b.length + 256 });
      const c: PacketCheck = checkPacket(dir, b, t.retval, t.dataOut, view);
      const k = `${dir}:${c.outcome}`;
      r.counts[k] = (r.counts[k] ?? 0) + 1;
      if (c.violations.length && r.failures.length < 10) {
        r.failures.push(
          `${dir} ${c.violations.join("; ")}\n  in  ${hex(b)}\n  out ${hex(t.dataOut)}`,
        );
      }
      return { verdict: t.retval, out: t.dataOut };
    },
  };
  return r;
}

function finish(r: Runner): void {
  const ic = fuzzConfig();
  const m = checkMaps(r.nat, { bindings: ic.bindingMaxRecords, ctEntries: 1 << 30 }, ic);
  r.nat.close();
  assertEquals(r.failures, [], r.failures.join("\n"));
  assertEquals(m.violations, [], m.violations.join("\n"));
}

const spec = (
  family: 4 | 6,
  proto: L4Proto,
  src: string,
  sport: number,
  dst: string,
  dport: number,
  extra: Partial<PacketSpec> = {},
): PacketSpec => ({
  family,
  src,
  dst,
  proto,
  sport,
  dport,
  icmpId: proto === "icmp" ? (dst === EXT[family] ? dport : sport) : undefined,
  icmpType: proto === "icmp"
    ? (dst === EXT[family] ? (family === 4 ? 0 : 129) : (family === 4 ? 8 : 128))
    : undefined,
  payload,
  ...extra,
});

Deno.test("fuzz sweep: every truncation of every template packet, both directions", async () => {
  const r = await runner();
  try {
    let runs = 0, refused = 0;
    for (const family of [4, 6] as const) {
      for (const proto of ["tcp", "udp", "icmp"] as const) {
        const sport = proto === "icmp" ? 4242 : 40000 + family;
        // a live mapping: the templates below refer to it
        const first = r.run(
          "egress",
          buildPacket(spec(family, proto, LAN[family], sport, SRV[family], 53)),
        )!;
        assertEquals(first.verdict, TC_ACT_OK);
        const d = dissect(first.out);
        const ext = d.sport;
        const inbound = r.run(
          "ingress",
          buildPacket(spec(family, proto, SRV[family], 53, EXT[family], ext)),
        )!;
        const templates: ["egress" | "ingress", Uint8Array][] = [
          ["egress", buildPacket(spec(family, proto, LAN[family], sport, SRV[family], 53))],
          ["ingress", buildPacket(spec(family, proto, SRV[family], 53, EXT[family], ext))],
          [
            "ingress",
            buildIcmpError({ family, src: SRV[family], dst: EXT[family] }, first.out.slice(14)),
          ],
          [
            "egress",
            buildIcmpError({ family, src: LAN[family], dst: SRV[family] }, inbound.out.slice(14)),
          ],
          [
            "egress",
            buildPacket(
              spec(family, proto, LAN[family], sport, SRV[family], 53, {
                moreFragments: true,
                ipId: 7,
              }),
            ),
          ],
          [
            "ingress",
            buildPacket(
              spec(family, proto, SRV[family], 53, EXT[family], ext, { fragOffset: 24, ipId: 8 }),
            ),
          ],
          family === 4
            ? [
              "egress",
              fixChecksums(
                withIpv4Options(
                  buildPacket(spec(4, proto, LAN[4], sport, SRV[4], 53)),
                  new Uint8Array([7, 7, 4, 0, 0, 0, 0, 1]),
                ),
              ),
            ]
            : [
              "egress",
              withIpv6Ext(buildPacket(spec(6, proto, LAN[6], sport, SRV[6], 53)), [{ type: 0 }, {
                type: 60,
                len8: 1,
              }, { type: 44 }]),
            ],
        ];
        if (family === 6) {
          // ICMPv6 errors quoting a later fragment of a datagram einat translated, either way:
          // the datagram's way-back record maps them (frag.h).
          const [i1, i2] = fragment(
            buildPacket(spec(6, proto, SRV[6], 53, EXT[6], ext)),
            6,
            0x5151,
            24, // past TCP's header
          );
          const in1 = r.run("ingress", i1)!;
          assertEquals([in1.verdict, dissect(in1.out).dst], [TC_ACT_OK, parseAddr(LAN[6])]);
          const in2 = r.run("ingress", i2)!;
          const [o1, o2] = fragment(
            buildPacket(spec(6, proto, LAN[6], sport, SRV[6], 53)),
            6,
            0x5252,
            24,
          );
          assertEquals(r.run("egress", o1)!.verdict, TC_ACT_OK, `${proto} first fragment out`);
          const out2 = r.run("egress", o2)!;
          const quote = (f: Uint8Array) => f.slice(14);
          templates.push(
            [
              "egress",
              buildIcmpError(
                { family: 6, src: EXT[6], dst: SRV[6], icmpType: 3, icmpCode: 0 },
                quote(in2.out),
              ),
            ],
            ["egress", buildIcmpError({ family: 6, src: LAN[6], dst: SRV[6] }, quote(in2.out))],
            [
              "ingress",
              buildIcmpError(
                { family: 6, src: SRV[6], dst: EXT[6], icmpType: 2, icmpCode: 0, mtu: 1280 },
                quote(out2.out),
              ),
            ],
          );
          for (const [dir, full] of templates.slice(-3)) { // whole, each is translated
            const t = r.run(dir, full)!;
            assertEquals(t.verdict, TC_ACT_OK);
            assert(hex(t.out) !== hex(full), `${proto}: a ${dir} error quoting a later fragment`);
          }
        }
        for (const [dir, full] of templates) {
          for (let len = 14; len <= full.length; len++) {
            const res = r.run(dir, full.slice(0, len));
            if (res === null) refused++;
            runs++;
          }
        }
      }
    }
    console.log(
      `${runs} truncations (${refused} refused by the kernel):`,
      JSON.stringify(r.counts),
    );
  } finally {
    finish(r);
  }
});

Deno.test("fuzz sweep: IPv6 extension chains of every length, kind and lie", async () => {
  const r = await runner();
  try {
    const types = [0, 43, 60, 44];
    const chains: ExtHdr[][] = [];
    for (let n = 0; n <= 8; n++) {
      for (const t of types) chains.push(Array.from({ length: n }, () => ({ type: t })));
    }
    for (const a of types) {
      for (const b of types) {
        for (const c of types) {
          chains.push([{ type: a }, { type: b, len8: 2 }, { type: c }]);
        }
      }
    }
    chains.push([{ type: 0, next: 0 }, { type: 0 }], [{ type: 60, next: 59 }], [{
      type: 60,
      len8: 255,
    }]);
    chains.push([{ type: 44, fragOff: 1, more: true }], [{ type: 44, fragOff: 8191 }], [{
      type: 44,
    }, { type: 44, fragOff: 3 }]);
    let translated = 0, dropped = 0;
    let port = 41000;
    for (const chain of chains) {
      for (const proto of ["udp", "tcp", "icmp"] as const) {
        const p = port++;
        const out = r.run(
          "egress",
          withIpv6Ext(buildPacket(spec(6, proto, LAN[6], p, SRV[6], 53)), chain, p),
        );
        if (!out) continue;
        const headers = chain.length;
        const lie = chain.some((h) => h.next !== undefined || (h.len8 ?? 0) > 60);
        if (!lie && headers <= 6) {
          if (out.verdict === TC_ACT_OK) translated++;
        } else if (!lie) {
          // more headers than the bounded walk takes: dropped, never leaked
          assertEquals(out.verdict, TC_ACT_SHOT, `chain of ${headers} from inside`);
          dropped++;
        }
        const ext = dissect(out.out).sport;
        r.run("ingress", withIpv6Ext(buildPacket(spec(6, proto, SRV[6], 53, EXT6, ext)), chain, p));
      }
    }
    console.log(
      `${chains.length} chains x 3 protocols: ${translated} translated, ${dropped} too long and dropped`,
      JSON.stringify(r.counts),
    );
    assert(translated > 100 && dropped > 10);
  } finally {
    finish(r);
  }
});

Deno.test("fuzz sweep: every IPv4 IHL with every kind of total length", async () => {
  const r = await runner();
  try {
    for (let ihl = 0; ihl < 16; ihl++) {
      for (const tot of [0, 19, 20, 21, 40, 60, 64, 65535]) {
        for (const fix of [false, true]) {
          for (
            const [dir, src, dst] of [["egress", LAN[4], SRV[4]], [
              "ingress",
              SRV[4],
              EXT4,
            ]] as const
          ) {
            const b = buildPacket(
              spec(4, "udp", src, 40100 + ihl, dst, 53, { payload: new Uint8Array(64) }),
            );
            b[14] = 0x40 | ihl;
            b[16] = tot >> 8;
            b[17] = tot & 0xff;
            r.run(dir, fix ? fixChecksums(b) : b);
          }
        }
      }
    }
    console.log(JSON.stringify(r.counts));
  } finally {
    finish(r);
  }
});

Deno.test("fuzz oracle: an IPv4 later fragment of protocol 58 is a datagram of its own, not an ICMP one's of its ID (seed 6105)", async () => {
  const r = await runner();
  try {
    const remote = "198.51.100.77";
    const ping = buildPacket({
      family: 4,
      src: remote,
      dst: EXT4,
      proto: "icmp",
      icmpType: 8,
      icmpId: 7,
      icmpSeq: 1,
      payload,
    });
    // a ping to the router in two fragments: its first passes, recorded as the router's
    const [first, later] = fragment(ping, 4, 0x2222, 16);
    assertEquals(r.run("ingress", first)!.verdict, TC_ACT_OK);
    // a later fragment of that ID and source, but of protocol 58: its first is not known yet,
    // so it is held for it (an ICMPv6 in IPv4 is another protocol; the oracle keyed it as ICMP)
    later[14 + 9] = 58;
    const res = r.run("ingress", fixChecksums(later))!;
    assertEquals(res.verdict, TC_ACT_SHOT);
    assertEquals(r.counts["ingress:held"], 1, JSON.stringify(r.counts));
  } finally {
    finish(r);
  }
});

Deno.test("fuzz report: a violation is replayed once, with its verdict and the counters it moved", async () => {
  const r = await runner();
  try {
    const out = buildPacket(spec(4, "udp", LAN[4], 40100, SRV[4], 53));
    assertEquals(r.run("egress", out)!.verdict, TC_ACT_OK);
    // established: the replay translates it again from the flow's session
    assertEquals(
      replayNote(r.nat, r.nat.nat.egressFd, out, false),
      "replayed: verdict 0, counters egress_nat +1",
    );
    // to a port with no mapping: passed to the router, untouched
    const stray = buildPacket(spec(4, "udp", SRV[4], 53, EXT4, 40999));
    assertEquals(
      replayNote(r.nat, r.nat.nat.ingressFd, stray, false),
      "replayed: verdict 0, counters pass +1, flow_cache_miss +1",
    );
  } finally {
    finish(r);
  }
});
