/**
 * Part 1: per-packet cost of the NAT programs in BPF_PROG_TEST_RUN, each figure next to the
 * no-op TC program measured in the same rounds. See bench/README.md for the method.
 * @module
 */

import type { Nat } from "../tests/lib/natfixture.ts";
import { buildPacket } from "../tests/lib/packet.ts";
import {
  type ChainedNewMappings,
  checkAlternation,
  CONN_STEPS,
  type ConnectionResult,
  enableAlternation,
  establish,
  EXT4,
  type Flow,
  type FlowSpec,
  loadBenchNat,
  loadNoop,
  measureChainedNewMappings,
  measureConnections,
  measureNewMappings,
  newFlowPackets,
  runNs,
} from "./lib/bpfbench.ts";
import {
  type BenchOptions,
  fmt,
  median,
  type PartResult,
  percentile,
  progress,
  type Table,
  type Target,
} from "./lib/util.ts";

/** Sizes of part 1. */
export interface ProgSizes {
  repeat: number;
  rounds: number;
  newFlows: number;
}

/** Sizes for the options. */
export function progSizes(o: BenchOptions): ProgSizes {
  if (o.smoke) return { repeat: 1000, rounds: 2, newFlows: 20 };
  if (o.quick) return { repeat: 10_000, rounds: 5, newFlows: 200 };
  return { repeat: 1_000_000, rounds: 7, newFlows: 2000 };
}

/** One measured case. */
interface Case {
  name: string;
  family: 4 | 6;
  /** counted: established with session_counters on (no target: an opt-in's cost). */
  kind: "established" | "pass" | "counted";
  fd: number;
  bytes: Uint8Array;
  /** Set when the case cannot run (e.g. not translated by the datapath). */
  na?: string;
}

/** Per-round figures of a case. */
interface CaseResult {
  case: Case;
  nat: number[];
  noop: number[];
  delta: number[];
}

const LAN = { 4: "192.0.2.10", 6: "2001:db8:1::10" } as const;
const REMOTE = { 4: "198.51.100.1", 6: "2001:db8:2::11" } as const;
/** Protocol, label, ports; DF (default set); the directions measured (default both). */
const PROTOS: readonly [
  FlowSpec["proto"],
  string,
  number,
  number,
  { dontFragment?: boolean; dirs?: readonly ("egress" | "ingress")[]; v4only?: boolean }?,
][] = [
  ["udp", "UDP", 40000, 3478],
  ["tcp", "TCP", 40001, 443],
  ["icmp", "ICMP echo", 4242, 0],
  // A non-atomic datagram: a new IPv4 ID each packet (bpf/lib/ipid.h); inbound keeps its ID.
  ["udp", "UDP DF clear", 40002, 3478, {
    dontFragment: false,
    dirs: ["egress"],
    v4only: true,
  }],
];

function flowCases(n: Nat, family: 4 | 6): Case[] {
  const out: Case[] = [];
  for (const [proto, label, lanPort, remotePort, o = {}] of PROTOS) {
    if (o.v4only && family !== 4) continue;
    const dirs = o.dirs ?? ["egress", "ingress"] as const;
    const spec: FlowSpec = {
      family,
      proto,
      lan: LAN[family],
      lanPort,
      remote: REMOTE[family],
      remotePort,
      dontFragment: o.dontFragment,
    };
    const name = (dir: string) => `IPv${family} ${label} ${dir} established`;
    let flow: Flow;
    try {
      flow = establish(n, spec);
      enableAlternation(n, flow);
    } catch (e) {
      const na = `n/a (${(e as Error).message})`;
      for (const dir of dirs) {
        out.push({
          name: name(dir),
          family,
          kind: "established",
          fd: -1,
          bytes: new Uint8Array(),
          na,
        });
      }
      continue;
    }
    for (const dir of dirs) {
      const bad = checkAlternation(n, flow, dir);
      out.push({
        name: name(dir),
        family,
        kind: "established",
        fd: dir === "egress" ? n.nat.egressFd : n.nat.ingressFd,
        bytes: dir === "egress" ? flow.egress : flow.ingress,
        ...(bad ? { na: `n/a (${bad})` } : {}),
      });
    }
  }
  return out;
}

/** Whether the loaded datapath translates IPv6 (NAT66); a reason when not. */
async function nat66Support(): Promise<string | null> {
  let n: Nat;
  try {
    n = await loadBenchNat({ nat66: true });
  } catch (e) {
    return `NAT66 object does not load: ${(e as Error).message.split("\n")[0]}`;
  }
  try {
    establish(n, {
      family: 6,
      proto: "udp",
      lan: LAN[6],
      lanPort: 40000,
      remote: REMOTE[6],
      remotePort: 53,
    });
    return null;
  } catch {
    return "NAT66 not implemented yet";
  } finally {
    n.close();
  }
}

/**
 * Table 1c: a TCP connection's packets one by one, over the no-op, on new client ports and on
 * the same ports again; and the sums of the medians, each direction (new ports).
 */
function connectionTable(
  fresh: ConnectionResult,
  again: ConnectionResult,
  count: number,
): { table: Table; egress: number; ingress: number } {
  const sums = { egress: 0, ingress: 0 }, sumsAgain = { egress: 0, ingress: 0 };
  const rows = CONN_STEPS.map((s, k) => {
    const a = median(fresh.deltas[k]), b = median(again.deltas[k]);
    sums[s.dir] += a;
    sumsAgain[s.dir] += b;
    return [`${s.dir} ${s.name}`, fmt(a, 0), fmt(b, 0)];
  });
  rows.push(
    ["egress, five packets", fmt(sums.egress, 0), fmt(sumsAgain.egress, 0)],
    ["ingress, five packets", fmt(sums.ingress, 0), fmt(sumsAgain.ingress, 0)],
    [
      "the connection, ten packets",
      fmt(sums.egress + sums.ingress, 0),
      fmt(sumsAgain.egress + sumsAgain.ingress, 0),
    ],
    ["packets not translated", String(fresh.failures), String(again.failures)],
  );
  return {
    table: {
      title:
        `1c. A TCP connection's packets (${count} connections, one run a packet; ns over the no-op, medians)`,
      head: ["packet", "new client port", "the port again"],
      rows,
      notes: [
        "The packets of the router part's new-TCP-connections test (a byte each way, the " +
        "server closes first), run through both programs in order, each next to a no-op run; " +
        "the other connections run in between, so each one's lines are cold at its SYN. A port " +
        "run again finds its earlier connection's closed session (as a client reusing a port " +
        "does in the router test). The sums add the medians.",
      ],
    },
    egress: sums.egress,
    ingress: sums.ingress,
  };
}

/** Runs part 1. */
export async function runProg(o: BenchOptions): Promise<PartResult> {
  const sz = progSizes(o);
  const noop = await loadNoop();
  const no66 = await nat66Support();
  const nat = await loadBenchNat({ nat66: no66 === null });
  const passNat = await loadBenchNat();
  const newNat = await loadBenchNat();
  const preNat = await loadBenchNat({ ic: { preallocateMaps: true } });
  const connNat = await loadBenchNat();
  const countNat = await loadBenchNat({ ic: { sessionCounters: 65536 } });
  try {
    progress(o, `prog: repeat ${sz.repeat}, ${sz.rounds} rounds`);
    const cases: Case[] = [...flowCases(nat, 4)];
    if (no66 === null) cases.push(...flowCases(nat, 6));
    else {
      for (const p of ["UDP", "TCP", "ICMP echo"]) {
        for (const d of ["egress", "ingress"]) {
          cases.push({
            name: `IPv6 ${p} ${d} established`,
            family: 6,
            kind: "established",
            fd: -1,
            bytes: new Uint8Array(),
            na: `n/a (${no66})`,
          });
        }
      }
    }
    const own = buildPacket({
      family: 4,
      src: EXT4,
      dst: REMOTE[4],
      proto: "udp",
      sport: 5000,
      dport: 53,
      payload: new Uint8Array(22),
    });
    const unmapped = buildPacket({
      family: 4,
      src: REMOTE[4],
      dst: EXT4,
      proto: "tcp",
      sport: 50000,
      dport: 22,
      tcpFlags: { syn: true },
    });
    cases.push(
      {
        name: "IPv4 egress pass (router's own source)",
        family: 4,
        kind: "pass",
        fd: passNat.nat.egressFd,
        bytes: own,
      },
      {
        name: "IPv4 ingress pass (no mapping, e.g. SSH)",
        family: 4,
        kind: "pass",
        fd: passNat.nat.ingressFd,
        bytes: unmapped,
      },
    );

    // The same UDP flow with per-session counters on: what the opt-in costs a packet.
    for (const c of flowCases(countNat, 4).filter((c) => / UDP (e|in)gress /.test(c.name))) {
      cases.push({ ...c, name: `${c.name}, session counters on`, kind: "counted" });
    }

    const live = cases.filter((c) => !c.na);
    const results = new Map<Case, CaseResult>(
      live.map((c) => [c, { case: c, nat: [], noop: [], delta: [] }]),
    );
    for (const c of live) { // warm-up, not recorded
      await runNs(c.fd, c.bytes, Math.min(sz.repeat, 10_000));
      await runNs(noop.fd, c.bytes, Math.min(sz.repeat, 10_000));
    }
    for (let r = 0; r < sz.rounds; r++) {
      for (const c of live) {
        const res = results.get(c)!;
        let a: number, b: number;
        if (r % 2) {
          b = await runNs(noop.fd, c.bytes, sz.repeat);
          a = await runNs(c.fd, c.bytes, sz.repeat);
        } else {
          a = await runNs(c.fd, c.bytes, sz.repeat);
          b = await runNs(noop.fd, c.bytes, sz.repeat);
        }
        res.nat.push(a);
        res.noop.push(b);
        res.delta.push(a - b);
      }
    }

    progress(o, `prog: ${sz.newFlows} new mappings (UDP and TCP SYN), one run each`);
    const newUdp = measureNewMappings(
      newNat.nat,
      noop.fd,
      newFlowPackets(sz.newFlows, "udp"),
      true,
    );
    const newTcp = measureNewMappings(
      newNat.nat,
      noop.fd,
      newFlowPackets(sz.newFlows, "tcp", 20000),
      true,
    );

    const newUdpPre = measureNewMappings(
      preNat.nat,
      noop.fd,
      newFlowPackets(sz.newFlows, "udp", 40000),
      true,
    );
    const chained = [], chainedPre = [];
    for (let i = 0; i < 3; i++) {
      const runs = Math.min(2000, sz.newFlows * 10);
      chained.push(await measureChainedNewMappings(noop.fd, runs));
      chainedPre.push(await measureChainedNewMappings(noop.fd, runs, true));
    }

    progress(o, `prog: ${sz.newFlows} TCP connections, ten packets each, twice`);
    const connNew = measureConnections(connNat, noop.fd, sz.newFlows, 20000);
    const connAgain = measureConnections(connNat, noop.fd, sz.newFlows, 20000);

    const targets: Target[] = [];
    const rows: string[][] = [];
    const data: Record<string, unknown> = { repeat: sz.repeat, rounds: sz.rounds, cases: {} };
    for (const c of cases) {
      const res = results.get(c);
      const limit = c.family === 4 ? 60 : 90;
      const targeted = c.kind === "established" && !c.name.includes("ICMP");
      if (!res) {
        rows.push([c.name, c.na!, "", "", "", ""]);
        if (targeted) {
          targets.push({
            part: "prog",
            name: `${c.name}: NAT − no-op`,
            value: null,
            limit,
            unit: "ns",
            cmp: "le",
            note: c.na,
          });
        }
        continue;
      }
      const d = median(res.delta);
      rows.push([
        c.name,
        fmt(median(res.nat)),
        fmt(median(res.noop)),
        fmt(d),
        `${fmt(Math.min(...res.delta))}..${fmt(Math.max(...res.delta))}`,
        targeted ? `≤ ${limit}` : "",
      ]);
      (data.cases as Record<string, unknown>)[c.name] = {
        nat: res.nat,
        noop: res.noop,
        delta: res.delta,
      };
      if (targeted) {
        targets.push({
          part: "prog",
          name: `${c.name}: NAT − no-op`,
          value: d,
          limit,
          unit: "ns",
          cmp: "le",
        });
      }
    }
    const newRows: string[][] = [];
    for (
      const [label, res] of [["IPv4 UDP new mapping", newUdp], [
        "IPv4 TCP SYN new mapping",
        newTcp,
      ]] as const
    ) {
      const d = median(res.runs) - median(res.noop);
      newRows.push([
        label,
        fmt(median(res.runs)),
        fmt(median(res.noop)),
        fmt(d),
        fmt(percentile(res.runs, 90) - median(res.noop)),
        `${res.runs.length}/${res.runs.length + res.failures}`,
      ]);
      targets.push({
        part: "prog",
        name: `${label} (BPF, empty range)`,
        value: d / 1000,
        limit: 1,
        unit: "µs",
        cmp: "le",
      });
      data[label] = res;
    }

    const chainedRow = (label: string, runs: ChainedNewMappings[]) => {
      const ch = runs.map((c) => c.ns - c.noop);
      newRows.push([
        `${label} (${runs[0].runs} repeats, warm caches)`,
        fmt(median(runs.map((c) => c.ns))),
        fmt(median(runs.map((c) => c.noop))),
        fmt(median(ch)),
        `${fmt(Math.min(...ch))}..${fmt(Math.max(...ch))}`,
        `${runs.reduce((a, c) => a + c.made, 0)}/${runs.length * runs[0].runs}`,
      ]);
    };
    chainedRow("IPv4 UDP new mapping, chained", chained);
    const dPre = median(newUdpPre.runs) - median(newUdpPre.noop);
    newRows.push([
      "IPv4 UDP new mapping, preallocate_maps",
      fmt(median(newUdpPre.runs)),
      fmt(median(newUdpPre.noop)),
      fmt(dPre),
      fmt(percentile(newUdpPre.runs, 90) - median(newUdpPre.noop)),
      `${newUdpPre.runs.length}/${newUdpPre.runs.length + newUdpPre.failures}`,
    ]);
    chainedRow("IPv4 UDP new mapping, chained, preallocate_maps", chainedPre);
    data.chained = chained;
    data.chainedPreallocated = chainedPre;
    data.newUdpPreallocated = newUdpPre;

    const tables: Table[] = [
      {
        title:
          `1. Per-packet cost in BPF (BPF_PROG_TEST_RUN, repeat ${sz.repeat}, median of ${sz.rounds} rounds)`,
        head: ["case", "einat ns", "no-op ns", "einat − no-op", "min..max Δ", "target Δ"],
        rows,
        notes: [
          "Established rows alternate one packet between its two translated forms (bench/README.md), " +
          "so each of the `repeat` runs is a full translation; the NAT counters prove it.",
          "No-op and NAT runs alternate within each round on the same packet; Δ is the per-round difference.",
        ],
      },
      {
        title:
          `1b. New mapping cost (${sz.newFlows} distinct flows, one run each, undone after the run)`,
        head: ["case", "median ns", "no-op ns", "Δ median", "Δ p90", "translated"],
        rows: newRows,
        notes: [
          "repeat cannot create distinct mappings, so each new flow is its own BPF_PROG_TEST_RUN " +
          "with repeat 1; the kernel-reported duration of that one run is taken, next to a " +
          "repeat-1 no-op run. Each mapping is deleted again from user space (not timed) to keep the range empty.",
          "The chained row measures the same with warm caches: the external address is unmarked, so " +
          "each repeat maps the previous run's output anew (bench/lib/bpfbench.ts); its Δ column " +
          "shows min..max of 3 rounds, the last column the bindings made. Targets use the one-run rows.",
          "preallocate_maps rows: the same with the session map preallocated (an option, off by " +
          "default; bindings are mapping records, preallocated either way). A new mapping's first " +
          "session lives in its record, so these rows differ from the others only by noise.",
        ],
      },
    ];
    const conn = connectionTable(connNew, connAgain, sz.newFlows);
    tables.push(conn.table);
    data.connections = { new: connNew, again: connAgain };
    const get = (name: string) => {
      const c = cases.find((x) => x.name === name);
      const r = c && results.get(c);
      return r ? `${fmt(median(r.delta))} ns` : (c?.na ?? "n/a");
    };
    const summary = [
      [
        "BPF cost, IPv4 UDP established (egress / ingress), over no-op",
        `${get("IPv4 UDP egress established")} / ${get("IPv4 UDP ingress established")}`,
      ],
      [
        "BPF cost, IPv4 TCP established (egress / ingress), over no-op",
        `${get("IPv4 TCP egress established")} / ${get("IPv4 TCP ingress established")}`,
      ],
      [
        "BPF cost, IPv6 UDP established (egress / ingress), over no-op",
        `${get("IPv6 UDP egress established")} / ${get("IPv6 UDP ingress established")}`,
      ],
      [
        "BPF cost, new IPv4 UDP mapping, over no-op",
        `${fmt(median(newUdp.runs) - median(newUdp.noop))} ns`,
      ],
      [
        "BPF cost of a new TCP connection's ten packets (egress + ingress), over no-op",
        `${fmt(conn.egress, 0)} + ${fmt(conn.ingress, 0)} ns`,
      ],
    ];
    return { part: "prog", tables, targets, summary, data };
  } finally {
    nat.close();
    passNat.close();
    newNat.close();
    preNat.close();
    connNat.close();
    countNat.close();
    noop.close();
  }
}
