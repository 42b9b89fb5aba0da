/**
 * Part 5: memory. Kernel memory of the maps of a running daemon at default sizes, the kernel
 * memory one IPv4 mapping costs, and the daemon's RSS idle and under load. See
 * bench/README.md.
 * @module
 */

import { startEinat, stopEinat } from "../tests/lib/einat.ts";
import { privateDeno } from "../tests/lib/private_deno.ts";
import { type Rss, rssKb } from "../tests/lib/rss.ts";
import { ranges } from "../tests/lib/natfixture.ts";
import { nsExecResult, type Topology, withTopology } from "../tests/lib/netns.ts";
import { RECORDS_PER_SLOT } from "../lib/nat/records.ts";
import {
  fdinfo,
  loadBenchNat,
  loadNoop,
  measureNewMappings,
  newFlowPackets,
} from "./lib/bpfbench.ts";
import { flowsCmd } from "./router.ts";
import {
  type BenchOptions,
  bytes,
  fmt,
  median,
  type PartResult,
  progress,
  sleep,
  type Table,
  type Target,
} from "./lib/util.ts";

/** Sizes of part 5. */
export function memorySizes(
  o: BenchOptions,
): { mappings: number; loadSeconds: number; addressChanges: number } {
  if (o.smoke) return { mappings: 200, loadSeconds: 1, addressChanges: 2 };
  if (o.quick) return { mappings: 5000, loadSeconds: 2, addressChanges: 20 };
  return { mappings: 30000, loadSeconds: 5, addressChanges: 100 };
}

interface MapInfo {
  name: string;
  type: string;
  max_entries: number;
  bytes_memlock: number;
}

async function bpftoolJson(ns: string, args: string[]): Promise<unknown> {
  const r = await nsExecResult(ns, ["bpftool", ...args, "-j"]);
  if (r.code !== 0) throw new Error(`bpftool ${args.join(" ")}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
}

/** Maps used by the einat filters on the router's wan0 (via bpftool). */
async function daemonMaps(t: Topology): Promise<MapInfo[]> {
  const net = await bpftoolJson(t.ns.router, ["net", "show", "dev", "wan0"]) as {
    tc: { id: number }[];
  }[];
  const ids = new Set<number>();
  for (const f of net[0]?.tc ?? []) {
    const p = await bpftoolJson(t.ns.router, ["prog", "show", "id", String(f.id)]) as {
      map_ids?: number[];
    };
    for (const m of p.map_ids ?? []) ids.add(m);
  }
  const out: MapInfo[] = [];
  for (const id of ids) {
    out.push(await bpftoolJson(t.ns.router, ["map", "show", "id", String(id)]) as MapInfo);
  }
  return out.sort((a, b) => b.bytes_memlock - a.bytes_memlock);
}

function meminfoKb(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of Deno.readTextFileSync("/proc/meminfo").split("\n")) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** One row of table 5c. */
function rssRow(label: string, r: Rss): string[] {
  return [label, bytes(r.rss * 1024), bytes(r.anon * 1024), bytes(r.file * 1024)];
}

interface DaemonMem {
  maps: MapInfo[];
  /** RSS of a bare Deno process (the floor of any Deno daemon). */
  bare: Rss;
  /** Idle, the daemon started from the harness's own deno binary (pages shared with it). */
  sharedIdle: Rss;
  idle: Rss;
  /** The sample of the load with the largest RSS. */
  loadMax: Rss;
  hwmKb: number;
  flows: string;
  /** Address changes after the load, and the RSS once the daemon has applied them. */
  changes: number;
  churn: Rss;
}

/** The address the router's WAN interface alternates with during the churn. */
const CHURN_ADDR = "203.0.113.201";

async function daemonMemory(
  o: BenchOptions,
  loadSeconds: number,
  changes: number,
): Promise<DaemonMem> {
  return await withTopology(async (t) => {
    const bareP = t.spawn(t.ns.router, [Deno.execPath(), "eval", "setTimeout(() => {}, 5000)"], {
      killAfterMs: 10000,
    });
    await sleep(1500);
    const none = { rss: NaN, anon: NaN, file: NaN, hwm: NaN };
    const bare = bareP.running() ? rssKb(bareP.pid) : none;
    bareP.kill("SIGKILL");
    await bareP.output(3000).catch(() => {});
    const shared = await startEinat(t.ns.router, ["-i", "wan0"]);
    let sharedIdle = none;
    try {
      await sleep(1000);
      sharedIdle = rssKb(shared.pid);
    } finally {
      await stopEinat(shared);
    }
    const deno = privateDeno();
    const einat = await startEinat(t.ns.router, ["-i", "wan0"], 15000, {}, 120_000, deno.path)
      .catch((e) => {
        deno.remove();
        throw e;
      });
    try {
      const maps = await daemonMaps(t);
      await sleep(1000);
      const idle = rssKb(einat.pid);
      progress(o, `memory: daemon idle RSS ${idle.rss} kB; ${loadSeconds} s of load`);
      await t.exec(t.ns.lan1, ["ip", "addr", "add", "192.0.2.100/24", "dev", "eth0"]);
      const srv = t.spawn(
        t.ns.srv1,
        flowsCmd([
          "server",
          "--bind",
          "203.0.113.11",
          "--tcp-port",
          "9000",
          "--udp-port",
          "9001",
          "--timeout-ms",
          String((loadSeconds + 30) * 1000),
        ]),
      );
      const iperfSrv = t.spawn(t.ns.srv1, [
        "iperf3",
        "-s",
        "-1",
        "-B",
        "203.0.113.11",
        "--forceflush",
      ], { killAfterMs: (loadSeconds + 30) * 1000 });
      let loadMax = idle;
      let flows = "";
      try {
        await srv.waitForStdout(/listening/, 15000);
        await iperfSrv.waitForStdout(/listening/, 5000);
        let done = false;
        const load = Promise.all([
          nsExecResult(t.ns.lan1, [
            "iperf3",
            "-c",
            "203.0.113.11",
            "-t",
            String(loadSeconds),
            "-P",
            "4",
          ], { timeoutMs: (loadSeconds + 15) * 1000 }),
          nsExecResult(
            t.ns.lan1,
            flowsCmd([
              "udp-flows",
              "--to",
              "203.0.113.11:9001",
              "--bind",
              "192.0.2.100",
              "--ports",
              "10000-60999",
              "--seconds",
              String(loadSeconds),
              "--concurrency",
              "16",
            ]),
            { timeoutMs: (loadSeconds + 15) * 1000 },
          ),
        ]).finally(() => done = true);
        for (let i = 0; i < 10 * (loadSeconds + 20) && !done; i++) {
          const r = rssKb(einat.pid);
          if (r.rss > loadMax.rss) loadMax = r;
          await sleep(100);
        }
        const [, f] = await load;
        const j = JSON.parse(f.stdout.trim().split("\n").pop() || "{}");
        flows = `${j.ok ?? 0} new UDP flows + iperf3 -P 4`;
      } finally {
        srv.kill("SIGKILL");
        iperfSrv.kill("SIGKILL");
      }
      const hwmKb = rssKb(einat.pid).hwm;
      // Address churn (a DHCP or PPPoE uplink's changes, compressed): the WAN address
      // alternates every 0.5 s; each change is a reconciliation (plan, purge, apply).
      progress(o, `memory: ${changes} address changes, 0.5 s apart`);
      await t.exec(t.ns.router, ["sysctl", "-qw", "net.ipv4.conf.wan0.promote_secondaries=1"]);
      let [from, to] = [`${t.addrs.v4.routerWan}/24`, `${CHURN_ADDR}/24`];
      for (let i = 0; i < changes; i++) {
        await t.exec(t.ns.router, ["ip", "addr", "add", to, "dev", "wan0"]);
        await t.exec(t.ns.router, ["ip", "addr", "del", from, "dev", "wan0"]);
        [from, to] = [to, from];
        await sleep(500);
      }
      // The largest RSS over the 12 s after the last change: a page-out follows each
      // reconciliation, and the daemon's timers (the sweep, every few seconds) touch their
      // pages again after it.
      let churn = rssKb(einat.pid);
      for (let i = 0; i < 60; i++) {
        await sleep(200);
        const r = rssKb(einat.pid);
        if (r.rss > churn.rss) churn = r;
      }
      return { maps, bare, sharedIdle, idle, loadMax, hwmKb, flows, changes, churn };
    } finally {
      await stopEinat(einat);
      deno.remove();
    }
  }, { ipv6: false });
}

interface MappingMem {
  n: number;
  memlockDelta: number;
  /** Of it, map_records and map_outbound (preallocated arrays: a binding allocates nothing). */
  bindingMemlockDelta: number;
  slabDeltaKb: number;
  slabDeltasKb: number[];
  /**
   * Reserved at load, per what a mapping occupies: its record (map_records' memlock per entry),
   * the outbound index's share per binding (memlock / binding_max_records, which sizes it), and
   * a session (map_ct's memlock per entry).
   */
  perEntry: { record: number; outbound: number; ct: number };
  /** map_records' memlock per external-address slot: all its ports' records, at load. */
  recordsPerSlot: number;
  /** map_flags of the session map (BPF_F_NO_PREALLOC = 1: allocated on demand). */
  flags: number;
  reservedPerMapping: number;
  memlockPerMapping: number;
  slabPerMapping: number;
  dynamicPerMapping: number;
}

/** Creates N mappings of a family through the program; memlock and slab growth per mapping. */
async function mappingMemory(
  n: number,
  noopFd: number,
  reps: number,
  family: 4 | 6,
): Promise<MappingMem> {
  const slab = () => {
    const m = meminfoKb();
    return m.SUnreclaim + m.Percpu;
  };
  const bindingMax = 65536;
  const memlockDeltas: number[] = [], bindingDeltas: number[] = [], slabDeltas: number[] = [];
  let perEntry = { record: NaN, outbound: NaN, ct: NaN };
  let recordsPerSlot = NaN;
  let flags = 0;
  for (let rep = 0; rep < reps; rep++) {
    const nat = await loadBenchNat({
      nat66: family === 6,
      ic: {
        defaultRanges: ranges([{ start: 1024, end: 65535 }]),
        bindingMaxRecords: bindingMax,
        ctMaxRecords: 131072,
      },
    });
    try {
      const { records, outbound, ct } = nat.nat.maps;
      const memlockOf = (fds: number[]) => fds.reduce((s, fd) => s + Number(fdinfo(fd).memlock), 0);
      const memlock = () => memlockOf([records, outbound, ct]);
      const bindingMemlock = () => memlockOf([records, outbound]);
      const r = fdinfo(records), ob = fdinfo(outbound), c = fdinfo(ct);
      perEntry = {
        record: Number(r.memlock) / Number(r.max_entries),
        outbound: Number(ob.memlock) / bindingMax,
        ct: Number(c.memlock) / Number(c.max_entries),
      };
      recordsPerSlot = Number(r.memlock) / (Number(r.max_entries) / RECORDS_PER_SLOT);
      flags = Number(c.map_flags);
      const l0 = memlock(), b0 = bindingMemlock(), s0 = slab();
      const res = measureNewMappings(nat.nat, noopFd, newFlowPackets(n, "udp", 0, family), false);
      const l1 = memlock(), b1 = bindingMemlock(), s1 = slab();
      if (res.failures) throw new Error(`${res.failures} of ${n} mappings not created`);
      memlockDeltas.push(l1 - l0);
      bindingDeltas.push(b1 - b0);
      slabDeltas.push(s1 - s0);
    } finally {
      nat.close();
    }
  }
  // The largest growth: a later run reuses the slab pages an earlier run's closed maps freed
  // (the kernel keeps them in its caches), so its growth undercounts.
  const slabDeltaKb = Math.max(...slabDeltas);
  const memlockDelta = median(memlockDeltas);
  const memlockPerMapping = Math.max(0, memlockDelta / n);
  const slabPerMapping = Math.max(0, (slabDeltaKb * 1024) / n);
  return {
    n,
    memlockDelta,
    bindingMemlockDelta: median(bindingDeltas),
    slabDeltaKb,
    slabDeltasKb: slabDeltas,
    perEntry,
    recordsPerSlot,
    flags,
    reservedPerMapping: perEntry.record + perEntry.outbound + perEntry.ct,
    memlockPerMapping,
    slabPerMapping,
    // memlock growth is the kernel's own count of on-demand elements; the
    // slab growth also sees allocator rounding and the timers: take the larger
    dynamicPerMapping: Math.max(memlockPerMapping, slabPerMapping),
  };
}

/** Runs part 5. */
export async function runMemory(o: BenchOptions): Promise<PartResult> {
  const sz = memorySizes(o);
  const noop = await loadNoop();
  try {
    progress(o, `memory: ${sz.mappings} IPv4 and IPv6 mappings through the program`);
    const reps = o.smoke ? 1 : 3;
    const mm = await mappingMemory(sz.mappings, noop.fd, reps, 4);
    const mm6 = await mappingMemory(sz.mappings, noop.fd, reps, 6);
    const dm = await daemonMemory(o, sz.loadSeconds, sz.addressChanges);
    const total = dm.maps.reduce((s, m) => s + m.bytes_memlock, 0);
    const mapRows = dm.maps.map((m) => [
      m.name,
      m.type,
      m.max_entries.toLocaleString("en"),
      bytes(m.bytes_memlock),
      m.max_entries > 1 ? fmt(m.bytes_memlock / m.max_entries, 1) : "",
    ]);
    mapRows.push(["total", "", "", bytes(total), ""]);
    const perMapping = mm.reservedPerMapping + mm.dynamicPerMapping;
    const perMapping6 = mm6.reservedPerMapping + mm6.dynamicPerMapping;
    const both = (f: (m: MappingMem) => number) => [fmt(f(mm), 1), fmt(f(mm6), 1)];
    const slabRuns = (m: MappingMem) => m.slabDeltasKb.join(", ");
    const onDemand = (mm.flags & 1) !== 0;
    const perSlot = bytes(mm.recordsPerSlot);
    const mode = onDemand ? "bucket share; elements on demand" : "preallocated";
    const tables: Table[] = [
      {
        title: "5a. Kernel memory of the maps (running daemon, `einat -i wan0`, default sizes)",
        head: ["map", "type", "max_entries", "memlock", "B per entry"],
        rows: mapRows,
        notes: [
          "From `bpftool map show -j` (bytes_memlock) for every map of the two attached programs.",
        ],
      },
      {
        title: `5b. Kernel memory per mapping (${
          mm.n.toLocaleString("en")
        } UDP mappings of each family created by the program)`,
        head: ["what", "IPv4 bytes", "IPv6 bytes"],
        rows: [
          [
            "mapping record, reserved at load (map_records: one per external port)",
            ...both((m) => m.perEntry.record),
          ],
          [
            "outbound index share per binding, reserved at load (map_outbound / binding_max_records)",
            ...both((m) => m.perEntry.outbound),
          ],
          [`session entry, reserved at load (${mode})`, ...both((m) => m.perEntry.ct)],
          [
            "reserved per mapping (1 record + 1 outbound share + 1 session)",
            ...both((m) => m.reservedPerMapping),
          ],
          [
            "memlock growth per mapping (the kernel's count of allocated elements)",
            ...both((m) => m.memlockPerMapping),
          ],
          [
            "of which map_records + map_outbound (preallocated: a binding allocates nothing)",
            ...both((m) => m.bindingMemlockDelta / m.n),
          ],
          [
            "unreclaimable slab + percpu growth per mapping (/proc/meminfo: allocator size classes; " +
            `largest of ${mm.slabDeltasKb.length} runs: ${slabRuns(mm)} / ${slabRuns(mm6)} kB)`,
            ...both((m) => m.slabPerMapping),
          ],
          [
            "total per mapping (reserved + the larger growth)",
            fmt(perMapping, 1),
            fmt(perMapping6, 1),
          ],
        ],
        notes: [
          "A binding is a mapping record of map_records, an array preallocated for every port of each " +
          `external address (${perSlot} per address slot, whatever the mappings), and an entry of the ` +
          "outbound index map_outbound, preallocated for binding_max_records bindings: making one allocates " +
          "nothing (the memlock growth of the two maps above). Its reserved cost above is its record and its " +
          "share of the index.",
          onDemand
            ? "Sessions are allocated on demand (BPF_F_NO_PREALLOC): what is reserved at load is the bucket " +
              "array (its share per entry above); each mapping then allocates its session. Slab growth is " +
              "measured system-wide, so it is approximate."
            : "The session map is preallocated: memory is reserved at load for max_entries, so a mapping's cost " +
              "is the per-entry share of memlock (elements + bucket array) plus what the kernel allocates on the " +
              "fly (allocator size classes), measured system-wide and therefore approximate.",
        ],
      },
      {
        title: "5c. Daemon RSS (VmRSS of the einat process)",
        head: ["state", "RSS", "anonymous", "file-backed"],
        rows: [
          rssRow("bare `deno eval` (baseline, 1.5 s after start)", dm.bare),
          rssRow("idle, from the harness's deno binary (pages shared)", dm.sharedIdle),
          rssRow("idle (1 s after start)", dm.idle),
          rssRow(`under load (max, ${sz.loadSeconds} s: ${dm.flows})`, dm.loadMax),
          ["VmHWM after the load", bytes(dm.hwmKb * 1024), "", ""],
          rssRow(`after ${dm.changes} address changes, 0.5 s apart (max of 12 s)`, dm.churn),
        ],
        notes: [
          "From the third row on, the daemon runs from a copy of the deno binary that no other " +
          "process maps, as the compiled einat runs from its own file. The daemon pages its " +
          "executable's clean pages out after start-up and after each reconciliation (lib/memory.ts); " +
          "pages another process maps stay, which is what the second row shows (the bench itself " +
          "runs on that binary). The file-backed pages left are those the daemon touched since. " +
          "Anonymous memory (V8's heap, malloc) is the daemon's own.",
          "The address changes come after the load: the router's WAN address alternates between " +
          `203.0.113.1 and ${CHURN_ADDR}.`,
        ],
      },
    ];
    const targets: Target[] = [
      {
        part: "memory",
        name: "kernel memory per IPv4 mapping",
        value: perMapping,
        limit: 150,
        unit: "B",
        cmp: "le",
      },
      {
        part: "memory",
        name: "kernel memory per IPv6 mapping",
        value: perMapping6,
        limit: 250,
        unit: "B",
        cmp: "le",
      },
      {
        part: "memory",
        name: "daemon RSS (peak: max of idle, load and VmHWM)",
        // The "60 MB": 60,000,000 bytes (57.2 MiB). VmRSS is in KiB.
        value: Math.max(dm.idle.rss, dm.loadMax.rss, dm.hwmKb) * 1024 / 1e6,
        limit: 60,
        unit: "MB",
        cmp: "le",
      },
      {
        part: "memory",
        name: `daemon RSS after ${dm.changes} address changes`,
        value: dm.churn.rss * 1024 / 1e6,
        limit: 60,
        unit: "MB",
        cmp: "le",
      },
    ];
    const summary = [
      ["Kernel memory of the maps at default sizes", bytes(total)],
      [
        "Kernel memory per IPv4 / IPv6 mapping (reserved + on demand)",
        `${fmt(perMapping, 0)} B / ${fmt(perMapping6, 0)} B`,
      ],
      [
        "Daemon RSS idle / under load / peak (VmHWM, judged)",
        `${bytes(dm.idle.rss * 1024)} / ${bytes(dm.loadMax.rss * 1024)} / ${
          bytes(dm.hwmKb * 1024)
        }`,
      ],
      [`Daemon RSS after ${dm.changes} address changes`, bytes(dm.churn.rss * 1024)],
    ];
    return {
      part: "memory",
      tables,
      targets,
      summary,
      data: { mappings: mm, mappings6: mm6, daemon: dm, totalMemlock: total },
    };
  } finally {
    noop.close();
  }
}
