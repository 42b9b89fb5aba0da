/**
 * Part 4: cost as work grows. Established-flow cost with 10 / 10k / 1M live sessions, and the
 * cost of a new mapping with the port range empty, 90 % and 99 % full, plus the one-free-port
 * check. See bench/README.md.
 * @module
 */

import * as bpf from "../lib/ffi/libbpf.ts";
import { IPPROTO } from "../lib/nat/codec.ts";
import { syncPortHint } from "../lib/nat/loader.ts";
import { expireSessionsAsync } from "../lib/nat/expire.ts";
import { nextSweepDelay } from "../lib/nat/sweep.ts";
import { TC_ACT_OK } from "../tests/lib/natfixture.ts";
import { parsePacket } from "../tests/lib/packet.ts";
import { pinThread, restoreAffinity } from "../tests/lib/cpu.ts";
import {
  checkAlternation,
  enableAlternation,
  establish,
  EXT4,
  fillBindings,
  fillSessions,
  type Flow,
  loadBenchNat,
  loadNoop,
  measureNewMappings,
  newFlowPackets,
  runNs,
  stat,
} from "./lib/bpfbench.ts";
import { benchNet } from "./lib/bpfbench.ts";
import {
  type BenchOptions,
  fmt,
  median,
  type PartResult,
  percentile,
  prng,
  progress,
  ratio,
  shuffled,
  type Table,
  type Target,
} from "./lib/util.ts";

/** Sizes of part 4. */
export interface ScaleSizes {
  sessions: number[];
  /** Flows established with real packets (the rest are user-space fill). */
  flows: number;
  /** Single runs of the "spread" measurement. */
  spreadRuns: number;
  repeat: number;
  rounds: number;
  /** Loads of each session count for the hot figure (one object's placement moves its figures). */
  hotLoads: number;
  fills: number[];
  newFlows: number;
}

/** Sizes for the options. */
export function scaleSizes(o: BenchOptions): ScaleSizes {
  if (o.smoke) {
    return {
      sessions: [10, 100, 1000],
      flows: 10,
      spreadRuns: 40,
      repeat: 1000,
      rounds: 2,
      hotLoads: 1,
      fills: [0, 0.9, 0.99],
      newFlows: 10,
    };
  }
  if (o.quick) {
    return {
      sessions: [10, 10_000, 100_000],
      flows: 1000,
      spreadRuns: 2000,
      repeat: 10_000,
      rounds: 5,
      hotLoads: 2,
      fills: [0, 0.9, 0.99],
      newFlows: 300,
    };
  }
  return {
    sessions: [10, 10_000, 1_000_000],
    flows: 4000,
    spreadRuns: 8000,
    repeat: 1_000_000,
    rounds: 15,
    hotLoads: 3,
    fills: [0, 0.9, 0.99],
    newFlows: 1000,
  };
}

const RANGE = { start: 20000, end: 29999 }; // the default UDP range of the test NAT
const FILL_EXT = "203.0.113.2"; // filler sessions/bindings use another external address

/** Single runs over many flows: medians, the NAT's p90 over the no-op's median, slot misses. */
interface Spread {
  nat: number;
  noop: number;
  delta: number;
  p90: number;
  /** Runs the flow cache did not serve from the flow's slot (its `flow_cache_miss` count). */
  misses: number;
}

interface SessionResult {
  sessions: number;
  fillMs: number;
  hotEgress: { nat: number; noop: number; delta: number };
  hotIngress: { nat: number; noop: number; delta: number };
  spreadEgress: Spread;
  spreadIngress: Spread;
  /** One session sweep over the table (all live: nothing to delete), ms. */
  sweepMs: number;
  /** Its longest piece in the kernel (one program run or one batch read of map_ct), ms. */
  sweepPieceMs: number;
}

/** One session count, loaded and filled; kept loaded while every case is measured. */
interface SessionSetup {
  sessions: number;
  fillMs: number;
  n: Awaited<ReturnType<typeof loadBenchNat>>;
  flows: Flow[];
}

async function setupSessions(
  o: BenchOptions,
  sz: ScaleSizes,
  sessions: number,
): Promise<SessionSetup> {
  const maxSessions = Math.max(...sz.sessions);
  const n = await loadBenchNat({
    ic: { ctMaxRecords: maxSessions + sz.flows + 1024, bindingMaxRecords: 65536 },
  });
  try {
    const k = Math.min(sessions, sz.flows);
    const flows: Flow[] = [];
    for (let i = 0; i < k; i++) {
      flows.push(
        establish(n, {
          family: 4,
          proto: "udp",
          lan: benchNet(i),
          lanPort: 40000,
          remote: "198.51.100.1",
          remotePort: 3478,
        }),
      );
    }
    enableAlternation(n, flows[0]);
    for (const dir of ["egress", "ingress"] as const) {
      const bad = checkAlternation(n, flows[0], dir);
      if (bad) throw new Error(`alternation check (${dir}): ${bad}`);
    }
    // The two mirror-image entries of the alternation count as sessions too.
    const filler = Math.max(0, sessions - k - 1);
    const ports = 30000;
    const fillMs = fillSessions(n.nat, filler, { extAddr: FILL_EXT, portBase: 1024, ports });
    fillBindings(
      n.nat,
      FILL_EXT,
      Array.from({ length: Math.min(filler, ports) }, (_, i) => 1024 + i),
      IPPROTO.UDP,
    );
    progress(
      o,
      `scale: ${sessions} sessions (${k} real flows, ${filler} filled in ${
        fmt(fillMs / 1000, 1)
      } s)`,
    );
    return { sessions, fillMs, n, flows };
  } catch (e) {
    n.close();
    throw e;
  }
}

type Hot = { nat: number; noop: number; delta: number };

/**
 * The hot flow of every case, in interleaved rounds: each round runs every case (rotating which
 * goes first), each next to the no-op on the same packet, so drift of the machine's state
 * during the part reaches every case alike and the ratios between cases stay honest.
 */
async function measureHot(
  sz: ScaleSizes,
  noopFd: number,
  cases: SessionSetup[],
  dir: "egress" | "ingress",
): Promise<Hot[]> {
  const pkt = (c: SessionSetup) => dir === "egress" ? c.flows[0].egress : c.flows[0].ingress;
  const fd = (c: SessionSetup) => dir === "egress" ? c.n.nat.egressFd : c.n.nat.ingressFd;
  const a = cases.map(() => [] as number[]), b = cases.map(() => [] as number[]);
  for (const c of cases) await runNs(fd(c), pkt(c), Math.min(sz.repeat, 10_000));
  for (let r = 0; r < sz.rounds; r++) {
    for (let j = 0; j < cases.length; j++) {
      const i = (j + r) % cases.length;
      const c = cases[i];
      if (r % 2) b[i].push(await runNs(noopFd, pkt(c), sz.repeat));
      a[i].push(await runNs(fd(c), pkt(c), sz.repeat));
      if (r % 2 === 0) b[i].push(await runNs(noopFd, pkt(c), sz.repeat));
    }
  }
  return cases.map((_, i) => ({
    nat: median(a[i]),
    noop: median(b[i]),
    delta: median(a[i].map((x, k) => x - b[i][k])),
  }));
}

/** Spread runs and one sweep of one case (in turn: their point is each case's own caches). */
async function measureSpread(
  sz: ScaleSizes,
  noopFd: number,
  c: SessionSetup,
  hotEgress: Hot,
  hotIngress: Hot,
): Promise<SessionResult> {
  const { n, flows } = c;
  const spread = (dir: "egress" | "ingress"): Spread => {
    const fd = dir === "egress" ? n.nat.egressFd : n.nat.ingressFd;
    // On one CPU, as a flow is steered in a router: the flow cache is per CPU, and a run that
    // landed on the other CPU would miss it.
    const affinity = pinThread(0);
    try {
      // Warm-up: every flow seen once just before, so each is an active flow (its flow-cache
      // slot, trusted for a second after its session's refresh, is current) in every case alike.
      for (const f of flows) {
        bpf.testRun(fd, dir === "egress" ? f.egress : f.ingress, { repeat: 1 });
      }
      return spreadRuns(dir, fd);
    } finally {
      restoreAffinity(affinity);
    }
  };
  const spreadRuns = (dir: "egress" | "ingress", fd: number): Spread => {
    const a: number[] = [], b: number[] = [];
    let order: Flow[] = [];
    const before = stat(n.nat, dir === "egress" ? "egress_nat" : "ingress_nat");
    const missed = stat(n.nat, "flow_cache_miss");
    for (let j = 0; j < sz.spreadRuns; j++) {
      if (order.length === 0) order = shuffled(flows);
      const f = order.pop()!;
      const pkt = dir === "egress" ? f.egress : f.ingress;
      if (j % 2) b.push(bpf.testRun(noopFd, pkt, { repeat: 1 }).durationNs);
      const r = bpf.testRun(fd, pkt, { repeat: 1 });
      if (j % 2 === 0) b.push(bpf.testRun(noopFd, pkt, { repeat: 1 }).durationNs);
      if (r.retval !== TC_ACT_OK) throw new Error(`spread ${dir}: verdict ${r.retval}`);
      a.push(r.durationNs);
    }
    const grown = stat(n.nat, dir === "egress" ? "egress_nat" : "ingress_nat") - before;
    if (grown !== BigInt(sz.spreadRuns)) {
      throw new Error(`spread ${dir}: ${grown} of ${sz.spreadRuns} translated`);
    }
    return {
      nat: median(a),
      noop: median(b),
      delta: median(a) - median(b),
      p90: percentile(a, 90) - median(b),
      misses: Number(stat(n.nat, "flow_cache_miss") - missed),
    };
  };
  const spreadEgress = spread("egress"), spreadIngress = spread("ingress");
  // One sweep unmeasured (the code's first run), then the median of three, as the daemon
  // repeats it; the longest piece over the three.
  const took: number[] = [];
  let piece = 0;
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const { expired, longestPieceNs } = await expireSessionsAsync(n.nat);
    if (i > 0) {
      took.push(performance.now() - t0);
      piece = Math.max(piece, longestPieceNs);
    }
    if (expired !== 0) throw new Error(`sweep: ${expired} sessions expired, none should have`);
  }
  const sweepMs = median(took);
  return {
    sessions: c.sessions,
    fillMs: c.fillMs,
    hotEgress,
    hotIngress,
    spreadEgress,
    spreadIngress,
    sweepMs,
    sweepPieceMs: piece / 1e6,
  };
}

/** The medians of one session count's loads: each load's figures, medians of its rounds. */
function medianOfLoads(hs: Hot[]): Hot {
  return {
    nat: median(hs.map((h) => h.nat)),
    noop: median(hs.map((h) => h.noop)),
    delta: median(hs.map((h) => h.delta)),
  };
}

/**
 * Every session count, loaded `hotLoads` times: set up all, hot flows interleaved over every
 * load, then spread and sweep in turn on each count's first load.
 */
async function sessionsCases(
  o: BenchOptions,
  sz: ScaleSizes,
  noopFd: number,
): Promise<SessionResult[]> {
  const cases: SessionSetup[] = []; // each count's loads in a row
  try {
    for (const s of sz.sessions) {
      for (let l = 0; l < sz.hotLoads; l++) cases.push(await setupSessions(o, sz, s));
    }
    progress(o, `scale: hot flows, ${sz.rounds} interleaved rounds over ${cases.length} cases`);
    const eg = await measureHot(sz, noopFd, cases, "egress");
    const ing = await measureHot(sz, noopFd, cases, "ingress");
    const out: SessionResult[] = [];
    for (let i = 0; i < sz.sessions.length; i++) {
      const loads = (hs: Hot[]) => medianOfLoads(hs.slice(i * sz.hotLoads, (i + 1) * sz.hotLoads));
      out.push(await measureSpread(sz, noopFd, cases[i * sz.hotLoads], loads(eg), loads(ing)));
    }
    return out;
  } finally {
    for (const c of cases) c.n.close();
  }
}

interface FillResult {
  /** The free-port hint was refilled after the fill, as the daemon does at start. */
  synced: boolean;
  fill: number;
  occupied: number;
  median: number;
  noop: number;
  delta: number;
  p90: number;
  refusals: number;
  runs: number;
}

/** Passes over the fills in part 4b (see runScale). */
const FILL_PASSES = 3;

/** One fill's figures from its parts: medians of the parts' medians, refusals and runs summed. */
function mergeFill(parts: FillResult[]): FillResult {
  const med = (k: "median" | "noop" | "delta" | "p90") => median(parts.map((p) => p[k]));
  return {
    ...parts[0],
    median: med("median"),
    noop: med("noop"),
    delta: med("delta"),
    p90: med("p90"),
    refusals: parts.reduce((n, p) => n + p.refusals, 0),
    runs: parts.reduce((n, p) => n + p.runs, 0),
  };
}

function randomPorts(count: number, seed: number, exclude?: number): number[] {
  const all = [];
  for (let p = RANGE.start; p <= RANGE.end; p++) if (p !== exclude) all.push(p);
  return shuffled(all, prng(seed)).slice(0, count);
}

async function fillCase(
  noopFd: number,
  fill: number,
  newFlows: number,
  synced: boolean,
): Promise<FillResult> {
  const n = await loadBenchNat();
  try {
    const total = RANGE.end - RANGE.start + 1;
    const occupied = Math.round(total * fill);
    fillBindings(n.nat, EXT4, randomPorts(occupied, 42), IPPROTO.UDP);
    if (synced) syncPortHint(n.nat);
    const res = measureNewMappings(n.nat, noopFd, newFlowPackets(newFlows, "udp"), true);
    const m = median(res.runs), z = median(res.noop);
    return {
      synced,
      fill,
      occupied,
      median: m,
      noop: z,
      delta: m - z,
      p90: percentile(res.runs, 90) - z,
      refusals: res.failures,
      runs: res.runs.length + res.failures,
    };
  } finally {
    n.close();
  }
}

/** Fills all ports but one; checks a new flow gets exactly that port. */
async function oneFreePort(): Promise<{ ok: boolean; detail: string }> {
  const n = await loadBenchNat();
  try {
    const total = RANGE.end - RANGE.start + 1;
    const free = RANGE.start + Math.floor(prng(7)() * total);
    fillBindings(n.nat, EXT4, randomPorts(total - 1, 43, free), IPPROTO.UDP);
    const [a, b] = newFlowPackets(2, "udp", 500);
    const r1 = n.runRaw("egress", a.bytes);
    const p1 = parsePacket(r1.bytes);
    const got = r1.retval === TC_ACT_OK && p1.src === EXT4 ? p1.sport! : null;
    const dropsBefore = stat(n.nat, "drop_no_port");
    const r2 = n.runRaw("egress", b.bytes);
    const refused = r2.retval !== TC_ACT_OK && stat(n.nat, "drop_no_port") === dropsBefore + 1n;
    const ok = got === free;
    return {
      ok,
      detail: `free port ${free}: new flow got ${got ?? "refused"}` +
        `; next flow with the range full ${refused ? "refused (drop_no_port)" : "NOT refused"}`,
    };
  } finally {
    n.close();
  }
}

/** Runs part 4. */
export async function runScale(o: BenchOptions): Promise<PartResult> {
  const sz = scaleSizes(o);
  const noop = await loadNoop();
  try {
    const sessions = await sessionsCases(o, sz, noop.fd);
    progress(o, `scale: new mappings at fill ${sz.fills.map((f) => `${f * 100}%`).join(", ")}`);
    // Each fill is measured in FILL_PASSES parts, the fills in rotating order within each pass,
    // so no fill (the empty range, the ratios' baseline, least of all) is measured in one
    // stretch of the machine's state alone; a fill's figures are the medians of its parts.
    const parts = new Map<string, FillResult[]>();
    const per = Math.max(1, Math.ceil(sz.newFlows / FILL_PASSES));
    for (let pass = 0; pass < FILL_PASSES; pass++) {
      for (let i = 0; i < sz.fills.length; i++) {
        const f = sz.fills[(i + pass) % sz.fills.length];
        for (const synced of [true, false]) {
          const k = `${f}/${synced}`;
          parts.set(k, [...parts.get(k) ?? [], await fillCase(noop.fd, f, per, synced)]);
        }
      }
    }
    const merged = (f: number, synced: boolean) => mergeFill(parts.get(`${f}/${synced}`)!);
    const fills = sz.fills.map((f) => merged(f, true));
    const unsynced = sz.fills.map((f) => merged(f, false));
    const one = await oneFreePort();

    const base = sessions[0];
    const t1: Table = {
      title: `4a. Established IPv4 UDP flow vs live sessions (ns per packet, NAT − no-op)`,
      head: [
        "sessions",
        "hot egress",
        "hot ingress",
        "ratio",
        "spread egress",
        "spread ingress",
        "ratio",
        "spread p90 eg",
        "slot misses eg / in",
        "sweep ms",
        "longest piece ms",
      ],
      rows: sessions.map((s) => [
        s.sessions.toLocaleString("en"),
        fmt(s.hotEgress.delta),
        fmt(s.hotIngress.delta),
        `${ratio(s.hotEgress.delta, base.hotEgress.delta)} / ${
          ratio(s.hotIngress.delta, base.hotIngress.delta)
        }`,
        fmt(s.spreadEgress.delta),
        fmt(s.spreadIngress.delta),
        `${ratio(s.spreadEgress.delta, base.spreadEgress.delta)} / ${
          ratio(s.spreadIngress.delta, base.spreadIngress.delta)
        }`,
        fmt(s.spreadEgress.p90),
        `${s.spreadEgress.misses} / ${s.spreadIngress.misses}`,
        fmt(s.sweepMs, 1),
        fmt(s.sweepPieceMs, 2),
      ]),
      notes: [
        `hot: one flow, repeat ${sz.repeat} (alternating packet), median of ${sz.rounds} rounds; ` +
        `no-op ${fmt(base.hotEgress.noop)} ns. All cases are loaded at once and each round runs ` +
        `every case (rotating the order), each next to the no-op, so the machine's drift during ` +
        `the part reaches all cases alike. Each session count is loaded ${sz.hotLoads} time(s) ` +
        `and its figure is the median of its loads': a load's placement moves its hot figures ` +
        `for its whole life (±6 ns between ten loads of one case, one 12-16 ns low now and then).`,
        `spread: ${sz.spreadRuns} single runs (repeat 1) over up to ${sz.flows} real flows in random order, ` +
        `next to single no-op runs (no-op ${
          fmt(base.spreadEgress.noop)
        } ns), after one unmeasured run of every flow (so each is active: seen within the ` +
        `second its flow-cache slot is trusted); this sees cache misses a repeated packet hides. ` +
        `Warm-up and runs on one CPU (the flow cache is per CPU, as a flow is steered to one); ` +
        `slot misses: runs the flow cache did not serve (its 2-way sets lose some flows to others).`,
        `Sessions beyond the real flows are inserted from user space (stamped now; no sweep runs meanwhile) on ${FILL_EXT}, ` +
        `with up to 30000 filler bindings; every case uses the same map size (ctMaxRecords ${
          Math.max(...sz.sessions) + sz.flows + 1024
        }).`,
        "sweep: the median of three session sweeps over the whole table after one unmeasured (lib/nat/expire.ts: " +
        "expire_sessions in runs of " +
        "32,768 records, then map_ct read in batches of 1,024), all sessions live; longest piece: the longest of their " +
        "program run or batch read, the longest it held a CPU in the kernel. The daemon repeats it every tenth " +
        "of the shortest timeout, or 50× its duration when slower (lib/nat/sweep.ts).",
      ],
    };
    const empty = fills[0];
    const t2: Table = {
      title:
        `4b. New IPv4 UDP mapping vs port-range fill (range ${RANGE.start}-${RANGE.end}, ${sz.newFlows} new flows each)`,
      head: [
        "fill",
        "ports taken",
        "Δ median ns",
        "Δ p90 ns",
        "vs empty",
        "refused",
        "hint empty: Δ median",
        "vs empty",
        "refused",
      ],
      rows: fills.map((f, i) => [
        `${f.fill * 100}%`,
        String(f.occupied),
        fmt(f.delta),
        fmt(f.p90),
        ratio(f.delta, empty.delta),
        `${f.refusals}/${f.runs}`,
        fmt(unsynced[i].delta),
        ratio(unsynced[i].delta, unsynced[0].delta),
        `${unsynced[i].refusals}/${unsynced[i].runs}`,
      ]),
      notes: [
        `Each fill in ${FILL_PASSES} parts of ${per} new flows, the fills in rotating order within each pass; Δ and p90 are medians of the parts'. ` +
        "Taken ports are random (seeded), each binding written from user space (its record and outbound entry); new flows come from " +
        "source ports outside the range. One random port of the range is tried first; when the hint marks it " +
        "taken, the search scans the free-port hint (one bit per port, 64 ports per " +
        "step) from a random word, then falls back to probing the records from a random index.",
        "First columns: the hint refilled after the fill (sync_port_hint, as the daemon does at every start): " +
        'the steady state, where the program made every binding. "hint empty": the same bindings unknown to ' +
        "the hint (as if written by another program); failed claims set their bits, so the hint converges " +
        "within the run. Each new mapping is undone (binding, session and hint bit) before the next.",
        `One free port left: ${one.detail} → ${one.ok ? "PASS" : "FAIL"}.`,
      ],
    };
    const last = sessions[sessions.length - 1];
    const f99 = fills.find((f) => f.fill === 0.99);
    // Established cost with the most sessions against the fewest, each way, hot and spread.
    const scaling = (["hot", "spread"] as const).flatMap((kind) =>
      (["Egress", "Ingress"] as const).map((dir): Target => {
        const key = `${kind}${dir}` as const;
        return {
          part: "scale",
          name: `established ${dir.toLowerCase()}, ${
            last.sessions.toLocaleString("en")
          } vs ${base.sessions} sessions (${kind})`,
          value: last[key].delta / base[key].delta,
          limit: 1.2,
          unit: "×",
          cmp: "le",
        };
      })
    );
    const targets: Target[] = [
      ...scaling,
      {
        part: "scale",
        name: "new mapping at 99% fill vs empty range",
        value: f99 ? f99.delta / empty.delta : null,
        limit: 3,
        unit: "×",
        cmp: "le",
      },
      {
        part: "scale",
        name: "refusals while a port is free (all fills + one-free-port check)",
        value: [...fills, ...unsynced].reduce((s, f) => s + f.refusals, 0) + (one.ok ? 0 : 1),
        limit: 0,
        unit: "refusals",
        cmp: "le",
      },
    ];
    const summary = [
      [
        `Established cost ${
          last.sessions.toLocaleString("en")
        } vs ${base.sessions} sessions (hot / spread; egress, ingress)`,
        `${ratio(last.hotEgress.delta, base.hotEgress.delta)} / ${
          ratio(last.spreadEgress.delta, base.spreadEgress.delta)
        }; ${ratio(last.hotIngress.delta, base.hotIngress.delta)} / ${
          ratio(last.spreadIngress.delta, base.spreadIngress.delta)
        }`,
      ],
      [
        "New mapping at 99% port fill vs empty",
        f99 ? `${ratio(f99.delta, empty.delta)} (${fmt(f99.delta / 1000, 2)} µs)` : "n/a",
      ],
      ["New mapping with one free port left", one.ok ? "succeeds" : "FAILS"],
      [
        `Session sweep over ${last.sessions.toLocaleString("en")} live sessions`,
        `${fmt(last.sweepMs, 1)} ms in pieces of ≤ ${fmt(last.sweepPieceMs, 2)} ms, next after ${
          fmt(nextSweepDelay(last.sweepMs) / 1000, 1)
        } s`,
      ],
    ];
    return {
      part: "scale",
      tables: [t1, t2],
      targets,
      summary,
      data: { sessions, fills, unsynced, oneFreePort: one },
    };
  } finally {
    noop.close();
  }
}
