/**
 * Part 2: traffic through the router namespace (veth) for four set-ups measured in one run:
 * plain routing, the no-op TC program, nftables masquerade and einat, each in a topology of its
 * own. See bench/README.md.
 * @module
 */

import { startEinat, stopEinat } from "../tests/lib/einat.ts";
import { nsExecResult, type NsProcess, type Topology, withTopology } from "../tests/lib/netns.ts";
import { ROOT } from "./lib/bpfbench.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { closeFd } from "../lib/ffi/libc.ts";
import {
  type BenchOptions,
  fmt,
  median,
  type PartResult,
  progress,
  ratio,
  sleep,
  type Table,
  type Target,
} from "./lib/util.ts";

/** The set-ups compared. */
export const SETUPS = ["plain", "noop", "nft", "einat"] as const;
/** One set-up. */
export type Setup = typeof SETUPS[number];

/** One measured line. */
interface Test {
  id: string;
  label: string;
  unit: string;
  /** Target ratio to plain routing (einat), or undefined. */
  vsPlain: number;
  run(t: Topology, ctx: RunCtx): Promise<TestValue>;
}

interface TestValue {
  value: number;
  /** UDP loss in percent. */
  loss?: number;
  /** Connections or flows that did not complete. */
  failed?: number;
  /** Connections or flows that completed. */
  count?: number;
  ok: boolean;
}

interface RunCtx {
  seconds: number;
  concurrency: number;
  /** Source address for UDP flows (distinct per set-up and round). */
  flowAddr: string;
}

/** Sizes of part 2. */
export interface RouterSizes {
  seconds: number;
  rounds: number;
  concurrency: number;
  /** Test ids to run (all when undefined). */
  tests?: string[];
  setups: readonly Setup[];
  /**
   * Wait after einat's start at the beginning of each round (every set-up checked) before the
   * round's tests: the first seconds after einat starts forward 2-3 % slower, a one-off at start
   * (README, Benchmarks), and the tests measure the steady state.
   */
  settleMs: number;
}

/** Sizes for the options. */
export function routerSizes(o: BenchOptions): RouterSizes {
  if (o.smoke) {
    return {
      seconds: 1,
      rounds: 1,
      concurrency: 8,
      tests: ["tcp1", "udp64", "conn", "uflows"],
      setups: ["einat"],
      settleMs: 0,
    };
  }
  if (o.quick) return { seconds: 1, rounds: 1, concurrency: 16, setups: SETUPS, settleMs: 0 };
  return { seconds: 2, rounds: 8, concurrency: 16, setups: SETUPS, settleMs: 3000 };
}

const FLOWS_PATH = new URL("./lib/flows.ts", import.meta.url).pathname;

/** The command line of a bench/lib/flows.ts subcommand. */
export function flowsCmd(args: string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--unstable-net",
    "--no-config",
    "--no-lock",
    FLOWS_PATH,
    ...args,
  ];
}

const SRV = "203.0.113.11";
const LAN_NET = "192.0.2.0/24";
const ROUTER_WAN = "203.0.113.1";
const NFT_TABLE = "einat_bench";
/** Clients run on CPU 0 and servers on CPU 1, so runs schedule alike (less noise). */
const CLIENT_CPU = ["taskset", "-c", "0"];
const SERVER_CPU = ["taskset", "-c", "1"];

async function iperf(
  t: Topology,
  args: string[],
  seconds: number,
): Promise<Record<string, unknown>> {
  const srv = t.spawn(t.ns.srv1, [...SERVER_CPU, "iperf3", "-s", "-1", "-B", SRV, "--forceflush"], {
    killAfterMs: (seconds + 20) * 1000,
  });
  try {
    await srv.waitForStdout(/listening/, 5000);
    const r = await nsExecResult(t.ns.lan1, [
      ...CLIENT_CPU,
      "iperf3",
      "-c",
      SRV,
      "-t",
      String(seconds),
      "-J",
      ...args,
    ], {
      timeoutMs: (seconds + 15) * 1000,
    });
    const j = JSON.parse(r.stdout || "{}");
    if (r.code !== 0 || j.error) {
      throw new Error(`iperf3 ${args.join(" ")}: ${j.error ?? r.stderr.trim()}`);
    }
    return j;
  } finally {
    srv.kill("SIGKILL");
    await srv.output(3000).catch(() => {});
  }
}

function tcpTest(id: string, label: string, args: string[]): Test {
  return {
    id,
    label,
    unit: "Gbit/s",
    vsPlain: 0.97,
    async run(t, c) {
      const j = await iperf(t, args, c.seconds);
      const end = j.end as { sum_received: { bits_per_second: number; bytes: number } };
      return { value: end.sum_received.bits_per_second / 1e9, ok: end.sum_received.bytes > 0 };
    },
  };
}

function udpTest(id: string, label: string, args: string[]): Test {
  return {
    id,
    label,
    unit: "kpps rx",
    vsPlain: 0.95,
    async run(t, c) {
      const j = await iperf(t, ["-u", "-l", "64", "-b", "0", ...args], c.seconds);
      const s = (j.end as {
        sum: { packets: number; lost_packets: number; seconds: number; lost_percent: number };
      }).sum;
      const rx = s.packets - s.lost_packets;
      return { value: rx / s.seconds / 1e3, loss: s.lost_percent, ok: rx > 0 };
    },
  };
}

function flowsJson(out: string): { ok: number; fail: number; rate: number } {
  const line = out.trim().split("\n").pop() ?? "{}";
  return JSON.parse(line);
}

/** Every line of the router table. */
export const TESTS: Test[] = [
  tcpTest("tcp1", "TCP 1 stream lan→srv", []),
  tcpTest("tcp1r", "TCP 1 stream srv→lan (-R)", ["-R"]),
  tcpTest("tcp4", "TCP 4 streams lan→srv", ["-P", "4"]),
  tcpTest("tcp4r", "TCP 4 streams srv→lan (-R)", ["-P", "4", "-R"]),
  udpTest("udp64", "UDP 64 B lan→srv", []),
  udpTest("udp64r", "UDP 64 B srv→lan (-R)", ["-R"]),
  {
    id: "conn",
    label: "new TCP connections/s",
    unit: "conn/s",
    vsPlain: 0.95,
    async run(t, c) {
      const r = await nsExecResult(
        t.ns.lan1,
        [
          ...CLIENT_CPU,
          ...flowsCmd([
            "tcp-conn",
            "--to",
            `${SRV}:9000`,
            "--seconds",
            String(c.seconds),
            "--concurrency",
            String(c.concurrency),
          ]),
        ],
        { timeoutMs: (c.seconds + 15) * 1000 },
      );
      const j = flowsJson(r.stdout);
      return { value: j.rate, failed: j.fail, ok: j.ok > 0, count: j.ok };
    },
  },
  {
    id: "uflows",
    label: "new UDP flows/s",
    unit: "flows/s",
    vsPlain: 0.95,
    async run(t, c) {
      const r = await nsExecResult(
        t.ns.lan1,
        [
          ...CLIENT_CPU,
          ...flowsCmd([
            "udp-flows",
            "--to",
            `${SRV}:9001`,
            "--bind",
            c.flowAddr,
            "--ports",
            "10000-60999",
            "--seconds",
            String(c.seconds),
            "--concurrency",
            String(c.concurrency),
          ]),
        ],
        { timeoutMs: (c.seconds + 15) * 1000 },
      );
      const j = flowsJson(r.stdout);
      return { value: j.rate, failed: j.fail, ok: j.ok > 0, count: j.ok };
    },
  },
];

/** einat's arguments in the router benchmark (see README: the connection test needs ports). */
export const EINAT_ARGS = ["-i", "wan0", "--ports", "1024-65535"];

/**
 * Puts the router in a set-up; returns the function that undoes it. einat is killed as a safety
 * net after `einatLifetimeMs` (startEinat's default: 2 minutes).
 */
async function enter(
  t: Topology,
  s: Setup,
  einatLifetimeMs?: number,
): Promise<{ leave: () => Promise<void>; einat?: NsProcess }> {
  if (s === "plain") {
    for (const n of [t.ns.srv1, t.ns.srv2]) {
      await t.exec(n, ["ip", "route", "add", LAN_NET, "via", ROUTER_WAN]);
    }
    return {
      leave: async () => {
        for (const n of [t.ns.srv1, t.ns.srv2]) {
          await t.exec(n, ["ip", "route", "del", LAN_NET, "via", ROUTER_WAN]);
        }
      },
    };
  }
  if (s === "noop") {
    // Plain routing with the no-op TC program on both clsact hooks of wan0: what any TC
    // program costs on this path, einat's logic aside.
    const leavePlain = (await enter(t, "plain")).leave;
    const obj = `${ROOT}bpf/noop.bpf.o`;
    await t.exec(t.ns.router, ["tc", "qdisc", "add", "dev", "wan0", "clsact"]);
    for (const hook of ["ingress", "egress"]) {
      await t.exec(t.ns.router, [
        "tc",
        "filter",
        "add",
        "dev",
        "wan0",
        hook,
        "bpf",
        "da",
        "obj",
        obj,
        "sec",
        "tc",
      ]);
    }
    return {
      leave: async () => {
        await t.exec(t.ns.router, ["tc", "qdisc", "del", "dev", "wan0", "clsact"]);
        await leavePlain();
      },
    };
  }
  if (s === "nft") {
    const rules = `table ip ${NFT_TABLE} {\n  chain postrouting {\n` +
      `    type nat hook postrouting priority srcnat; policy accept;\n    oifname "wan0" masquerade\n  }\n}\n`;
    await t.exec(t.ns.router, ["nft", "-f", "-"], { stdin: rules });
    return {
      leave: () => t.exec(t.ns.router, ["nft", "delete", "table", "ip", NFT_TABLE]).then(() => {}),
    };
  }
  const einat = await startEinat(t.ns.router, EINAT_ARGS, undefined, undefined, einatLifetimeMs);
  return {
    einat,
    leave: async () => {
      const code = await stopEinat(einat);
      if (code !== 0) throw new Error(`einat exited with ${code}`);
    },
  };
}

/** Checks the set-up forwards (and, for NAT set-ups, that the server has no route back). */
async function sanity(t: Topology): Promise<void> {
  const r = await nsExecResult(t.ns.lan1, ["ping", "-c", "1", "-W", "2", SRV]);
  if (r.code !== 0) throw new Error(`lan1 cannot reach ${SRV}: ${r.stdout}${r.stderr}`);
}

/** Raw results: test id → set-up → values per round. */
export type RouterRaw = Record<string, Record<Setup, TestValue[]>>;

/** The flows server (TCP and UDP echo) on srv1. */
async function startFlowServer(t: Topology): Promise<NsProcess> {
  const server = t.spawn(
    t.ns.srv1,
    [
      ...SERVER_CPU,
      ...flowsCmd([
        "server",
        "--bind",
        SRV,
        "--tcp-port",
        "9000",
        "--udp-port",
        "9001",
        "--timeout-ms",
        String(30 * 60_000),
      ]),
    ],
  );
  try {
    await server.waitForStdout(/listening/, 15000);
  } catch (e) {
    server.kill("SIGKILL");
    throw e;
  }
  return server;
}

/** Egress program runs and run time over one flood of new UDP flows, for one set-up. */
export interface FloodRun {
  setup: Setup;
  /** Flows completed (each one datagram out, a new mapping, and its echo back). */
  flows: number;
  /** Runs of wan0's egress program meanwhile (run_cnt). */
  runs: number;
  /** Their run time (run_time_ns). */
  ns: number;
}

/** The id of the program on wan0's egress hook in the router (clsact or TCX). */
export async function egressProgId(t: Topology): Promise<number> {
  const out = await t.exec(t.ns.router, ["bpftool", "-j", "net", "show", "dev", "wan0"]);
  // bpftool 7 names the program "id" (clsact and tcx alike)
  const tc: { kind?: string; id?: number; prog_id?: number }[] = JSON.parse(out)[0]?.tc ?? [];
  const id = tc.filter((x) => String(x.kind).endsWith("egress")).map((x) => x.id ?? x.prog_id)
    .find((x) => x);
  if (!id) throw new Error(`no program on wan0 egress: ${out}`);
  return id;
}

async function progRunStats(t: Topology, id: number): Promise<{ runs: number; ns: number }> {
  const j = JSON.parse(await t.exec(t.ns.router, ["bpftool", "-j", "prog", "show", "id", `${id}`]));
  return { runs: j.run_cnt ?? 0, ns: j.run_time_ns ?? 0 };
}

/**
 * New mappings in a flood: one `udp-flows` run per set-up with a TC program (no-op, einat) and
 * round, with the kernel's run-time accounting on (BPF_ENABLE_STATS) only meanwhile. Each flow
 * sends one datagram, so nearly every egress run is a new mapping made with the code and the
 * tables as warm as a stream of new flows keeps them.
 */
export async function measureFlood(
  o: BenchOptions,
  t: Topology,
  sz: RouterSizes,
): Promise<FloodRun[]> {
  const setups = sz.setups.filter((s) => s === "noop" || s === "einat");
  const rounds = Math.min(sz.rounds, 3);
  const addrs = Array.from({ length: setups.length * rounds }, (_, i) => `192.0.2.${201 + i}`);
  for (const a of addrs) await t.exec(t.ns.lan1, ["ip", "addr", "add", `${a}/24`, "dev", "eth0"]);
  const uflows = TESTS.find((x) => x.id === "uflows")!;
  const runs: FloodRun[] = [];
  const server = await startFlowServer(t);
  try {
    for (let r = 0; r < rounds; r++) {
      progress(o, `router: flood of new UDP flows with bpf_stats, round ${r + 1}/${rounds}`);
      for (const [i, s] of (r % 2 ? [...setups].reverse() : setups).entries()) {
        const st = await enter(t, s);
        try {
          await sanity(t);
          const id = await egressProgId(t);
          const stats = bpf.enableRunTimeStats();
          try {
            const before = await progRunStats(t, id);
            const v = await uflows.run(t, {
              seconds: sz.seconds,
              concurrency: sz.concurrency,
              flowAddr: addrs[r * setups.length + i],
            });
            const after = await progRunStats(t, id);
            runs.push({
              setup: s,
              flows: v.count ?? 0,
              runs: after.runs - before.runs,
              ns: after.ns - before.ns,
            });
          } finally {
            closeFd(stats);
          }
        } finally {
          await st.leave();
        }
      }
    }
  } finally {
    server.kill("SIGKILL");
    await server.output(3000).catch(() => {});
    // the topology may be flooded again (bench/flood_ab.ts)
    for (const a of addrs) {
      await t.exec(t.ns.lan1, ["ip", "addr", "del", `${a}/24`, "dev", "eth0"]).catch(() => {});
    }
  }
  return runs;
}

/** One topology per set-up (each set-up has a copy of the router topology of its own). */
export type SetupTopologies = Partial<Record<Setup, Topology>>;

/**
 * Builds one topology per set-up of `sz`, runs `fn` with them and always destroys them. Each set-up
 * keeps its own copy, so none has to be entered and left between the tests of a round.
 */
export async function withSetupTopologies<T>(
  sz: RouterSizes,
  fn: (ts: SetupTopologies) => Promise<T>,
): Promise<T> {
  const ts: SetupTopologies = {};
  const build = async (i: number): Promise<T> => {
    if (i === sz.setups.length) return await fn(ts);
    return await withTopology((t) => {
      ts[sz.setups[i]] = t;
      return build(i + 1);
    }, { ipv6: false });
  };
  return await build(0);
}

function topologyOf(ts: SetupTopologies, s: Setup): Topology {
  const t = ts[s];
  if (!t) throw new Error(`no topology for set-up ${s}`);
  return t;
}

/**
 * Runs the measurements (used by the smoke test too). Every set-up lives in its own topology and is
 * entered once, before the rounds (plain routing, the no-op program, nftables); einat is started
 * afresh at the start of each round (empty tables: a round's new flows need most of a protocol's
 * port range) and the round's tests begin `settleMs` later. Within a round, each test runs its
 * set-ups back to back, order rotating, with nothing entered or left in between.
 */
export async function measureRouter(
  o: BenchOptions,
  ts: SetupTopologies,
  sz: RouterSizes,
): Promise<RouterRaw> {
  const tests = TESTS.filter((x) => !sz.tests || sz.tests.includes(x.id));
  const raw: RouterRaw = {};
  for (const x of tests) raw[x.id] = { plain: [], noop: [], nft: [], einat: [] };
  // One UDP flow source address per round (in every set-up's LAN), so every flow is new.
  const addrs = Array.from({ length: sz.rounds }, (_, r) => `192.0.2.${101 + r}`);
  // einat runs through a round: its safety-net lifetime covers every test's own timeout
  const roundMs = (sz.setups.length * (tests.length * (sz.seconds + 15) + 20) + 60) * 1000 +
    sz.settleMs;
  const servers: NsProcess[] = [];
  const leaves: (() => Promise<void>)[] = [];
  try {
    for (const s of sz.setups) {
      const t = topologyOf(ts, s);
      for (const a of addrs) {
        await t.exec(t.ns.lan1, ["ip", "addr", "add", `${a}/24`, "dev", "eth0"]);
      }
      servers.push(await startFlowServer(t));
      if (s !== "einat") leaves.push((await enter(t, s)).leave);
    }
    for (let r = 0; r < sz.rounds; r++) {
      progress(o, `router: round ${r + 1}/${sz.rounds}`);
      const einat = sz.setups.includes("einat")
        ? await enter(topologyOf(ts, "einat"), "einat", roundMs)
        : undefined;
      try {
        for (const s of sz.setups) await sanity(topologyOf(ts, s));
        if (r === 0) {
          // warm-up (not recorded): the first transfers after a topology is built run slow
          for (const s of sz.setups) await iperf(topologyOf(ts, s), [], 1);
        }
        if (sz.settleMs) await sleep(sz.settleMs);
        // the same for every test and set-up of the round (each set-up has its own LAN)
        const ctx: RunCtx = {
          seconds: sz.seconds,
          concurrency: sz.concurrency,
          flowAddr: addrs[r],
        };
        for (const [i, x] of tests.entries()) {
          const k = (r + i) % sz.setups.length;
          const order = [...sz.setups.slice(k), ...sz.setups.slice(0, k)];
          for (const s of order) {
            raw[x.id][s].push(await x.run(topologyOf(ts, s), ctx));
            await sleep(100);
          }
        }
      } finally {
        await einat?.leave();
      }
    }
  } finally {
    for (const p of servers) {
      p.kill("SIGKILL");
      await p.output(3000).catch(() => {});
    }
    for (const leave of leaves.reverse()) await leave();
  }
  return raw;
}

/**
 * Part 2's measurements in topologies of their own, destroyed after (the smoke test's too): the
 * rounds, then the flood, which enters its set-ups in turn on einat's topology (bare by then).
 */
export function measureRouterAndFlood(
  o: BenchOptions,
  sz: RouterSizes,
): Promise<{ raw: RouterRaw; flood: FloodRun[] }> {
  return withSetupTopologies(sz, async (ts) => {
    const raw = await measureRouter(o, ts, sz);
    return { raw, flood: await measureFlood(o, topologyOf(ts, "einat"), sz) };
  });
}

/** Median over rounds of the paired ratio a_r / b_r (NaN when either is missing). */
export function pairedRatio(raw: RouterRaw, id: string, a: Setup, b: Setup): number {
  return median(roundRatios(raw, id, a, b));
}

/** The per-round ratios of set-up `a` to `b` in test `id` (same round, back to back). */
function roundRatios(raw: RouterRaw, id: string, a: Setup, b: Setup): number[] {
  const xs = raw[id][a], ys = raw[id][b];
  const n = Math.min(xs.length, ys.length);
  return Array.from({ length: n }, (_, i) => xs[i].value / ys[i].value);
}

/**
 * The noise of a paired ratio, as a verdict reads it (±): half the range of its per-round
 * ratios over their median. Drift all set-ups share cancels in the pairs, so this is narrower
 * than the raw rates' spread (the table's noise column).
 */
export function pairedNoise(raw: RouterRaw, id: string, a: Setup, b: Setup): number | undefined {
  const r = roundRatios(raw, id, a, b);
  if (r.length < 2) return undefined;
  return (Math.max(...r) - Math.min(...r)) / 2 / median(r);
}

function loadavg(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

/** Runs part 2. */
export async function runRouter(o: BenchOptions): Promise<PartResult> {
  const sz = routerSizes(o);
  const loadBefore = loadavg();
  const { raw, flood } = await measureRouterAndFlood(o, sz);
  const loadAfter = loadavg();
  const tests = TESTS.filter((x) => raw[x.id]);
  const med = (id: string, s: Setup) => median(raw[id][s].map((v) => v.value));
  const pr = (id: string, a: Setup, b: Setup) => pairedRatio(raw, id, a, b);
  const rows = tests.map((x) => {
    const extra = (s: Setup) => {
      const v = raw[x.id][s];
      const loss = v.map((y) => y.loss).filter((y) => y !== undefined);
      if (loss.length) return ` (${fmt(median(loss), 0)}% loss)`;
      const failed = v.reduce((n, y) => n + (y.failed ?? 0), 0);
      return failed ? ` (${failed} failed)` : "";
    };
    const digits = x.unit === "Gbit/s" ? 2 : x.unit === "kpps rx" ? 1 : 0;
    const spread = Math.max(...sz.setups.map((st) => {
      const v = raw[x.id][st].map((y) => y.value);
      return v.length > 1 ? (Math.max(...v) - Math.min(...v)) / median(v) : 0;
    }));
    const r = (a: number) => (Number.isFinite(a) ? `${a.toFixed(2)}×` : "n/a");
    return [
      `${x.label} [${x.unit}]`,
      ...SETUPS.map((st) => fmt(med(x.id, st), digits) + extra(st)),
      r(pr(x.id, "noop", "plain")),
      r(pr(x.id, "nft", "plain")),
      r(pr(x.id, "einat", "plain")),
      r(pr(x.id, "einat", "nft")),
      sz.rounds > 1 ? `${fmt(spread * 100, 0)}%` : "n/a",
    ];
  });
  const targets: Target[] = [];
  for (const x of tests) {
    targets.push({
      part: "router",
      name: `${x.label}: einat / plain`,
      value: pr(x.id, "einat", "plain"),
      limit: x.vsPlain,
      unit: "×",
      cmp: "ge",
      noise: pairedNoise(raw, x.id, "einat", "plain"),
    });
    targets.push({
      part: "router",
      name: `${x.label}: einat / nft masquerade`,
      value: pr(x.id, "einat", "nft"),
      limit: 1,
      unit: "×",
      cmp: "ge",
      noise: pairedNoise(raw, x.id, "einat", "nft"),
    });
  }
  const table: Table = {
    title:
      `2. Through the router namespace (veth; ${sz.seconds} s per test, ${sz.rounds} round(s); medians)`,
    head: [
      "test",
      "plain",
      "plain+no-op TC",
      "nft masq",
      "einat",
      "no-op/plain",
      "nft/plain",
      "einat/plain",
      "einat/nft",
      "noise",
    ],
    rows,
    notes: [
      "lan1 → router (br0 … wan0) → srv1 over veth pairs and bridges, all in namespaces on this 2-core machine; " +
      "iperf3 and the flow tools share the CPUs with the forwarding, so the rates are end-to-end, not router-only.",
      "plain: the servers get a route back to the LAN; plain+no-op TC: the same with bpf/noop.bpf.o on both clsact " +
      "hooks of wan0; nft: `masquerade` on wan0 postrouting in the router namespace (conntrack); einat: " +
      `\`einat ${EINAT_ARGS.join(" ")}\`.`,
      "UDP: iperf3 -u -l 64 -b 0, packets received per second (sender-limited: loss shows the drops).",
      "Each set-up has a copy of the topology of its own, set up once: plain routing, the no-op and nftables " +
      "stay entered for the whole part, einat starts afresh at the start of each round (empty tables) and " +
      "keeps running through the round. Within a round each test runs its set-ups back to back (rotating " +
      "order), nothing entered or left in between; ratios are medians of the per-round ratios. Each round's " +
      "UDP flows use a fresh source address, so every flow is a new mapping." +
      (sz.settleMs
        ? ` A round's tests begin ${
          sz.settleMs / 1000
        } s after einat's start: its first seconds after a start forward 2-3 % slower ` +
          "(README, Benchmarks)."
        : ""),
      "noise: the largest (max − min) / median of one set-up's rates over the rounds (drift included). A target's verdict reads \"within ±N% noise\" when its limit lies within half the range of the ratio's own per-round values (pairing cancels shared drift, so that range is narrower). " +
      `Load average before/after: ${loadBefore} / ${loadAfter} (other work on the machine adds noise).`,
    ],
  };
  const fl = floodTable(flood, sz);
  if (fl.target) targets.push(fl.target);
  const summary = tests.filter((x) => ["tcp1", "tcp4", "udp64", "conn", "uflows"].includes(x.id))
    .map((x) => [
      `Router: ${x.label}, einat vs plain routing / vs nft masquerade`,
      `${ratio(pr(x.id, "einat", "plain"), 1)} / ${ratio(pr(x.id, "einat", "nft"), 1)}`,
    ]);
  if (fl.summary) summary.push(fl.summary);
  return {
    part: "router",
    tables: [table, fl.table],
    targets,
    summary,
    data: { sizes: sz, raw, flood, loadavg: [loadBefore, loadAfter] },
  };
}

/** Table 2b, and its target when both set-ups ran: ns per egress run, einat − no-op. */
export function floodTable(
  flood: FloodRun[],
  sz: RouterSizes,
): { table: Table; target?: Target; summary?: string[] } {
  const per = (s: Setup) => {
    const xs = flood.filter((f) => f.setup === s && f.runs > 0);
    return xs.length ? median(xs.map((f) => f.ns / f.runs)) : NaN;
  };
  const rows = (["noop", "einat"] as const).filter((s) => flood.some((f) => f.setup === s)).map(
    (s) => {
      const xs = flood.filter((f) => f.setup === s);
      return [
        s === "noop" ? "plain + no-op TC" : "einat",
        xs.map((f) => f.flows.toLocaleString("en")).join(", "),
        xs.map((f) => f.runs.toLocaleString("en")).join(", "),
        fmt(per(s), 1),
        s === "einat" && Number.isFinite(per("noop")) ? fmt(per("einat") - per("noop"), 1) : "",
      ];
    },
  );
  const table: Table = {
    title: `2b. New mappings in a flood of new UDP flows: egress program run time (bpf_stats; ${
      Math.min(sz.rounds, 3)
    } run(s) of ${sz.seconds} s per set-up)`,
    head: ["set-up", "flows completed", "egress runs", "ns per run (median)", "einat − no-op"],
    rows,
    notes: [
      "The router's `new UDP flows/s` test again, with the kernel's run-time accounting on " +
      "(BPF_ENABLE_STATS) during the run only: run_time_ns / run_cnt of the program on wan0's egress hook. " +
      "Each flow sends one datagram and takes its echo back, so nearly every egress run is a new mapping " +
      "(the rest: ARP), made with the code and tables as warm as a stream of new flows keeps them, " +
      "the allocator's refills included. The accounting's own two clock reads per run count in both rows.",
    ],
  };
  const d = per("einat") - per("noop");
  if (!Number.isFinite(d)) return { table };
  return {
    table,
    target: {
      part: "router",
      name: "new IPv4 UDP mapping in a flood (bpf_stats): einat − no-op",
      value: d,
      limit: 1000,
      unit: "ns",
      cmp: "le",
    },
    summary: [
      "BPF cost, new IPv4 UDP mapping in a flood of new flows (bpf_stats), over no-op",
      `${fmt(d, 0)} ns`,
    ],
  };
}
