/**
 * An optional Prometheus text endpoint (`--metrics HOST:PORT`), bound only to
 * the address the user gives; never on by default. Every scrape reads the
 * pinned state read-only: counters, live bindings and sessions per protocol,
 * port-range use of each external address, and map fill levels.
 * @module
 */

import type { PortRange } from "../config/types.ts";
import { inRanges } from "../config/ranges.ts";
import { formatAddr } from "../config/cidr.ts";
import { closeFd, dupFd } from "../ffi/libc.ts";
import * as log from "../log.ts";
import {
  mapFill,
  openPinned,
  type PinnedState,
  type ProtoName,
  readCounters,
  tallyBindings,
  tallySessions,
} from "./read.ts";
import { pinDirFor, stateOptions } from "./options.ts";
import { EXT_FLAGS } from "../nat/codec.ts";
import type { SweepStats } from "../nat/sweep.ts";

/** What one interface contributes: its name and the ranges of its external addresses. */
export interface MetricsTarget {
  ifname: string;
  externals: { external: string; protocol: ProtoName; ranges: PortRange[] }[];
  /** binding_max_records: the bindings' capacity (the programs' cap, not in the pinned maps). */
  bindingMax?: number;
  /** A reload's new configuration of the interface waits for an address (lib/lifecycle.ts). */
  pending?: boolean;
  /**
   * false while einat does not serve the interface (gone, renamed away, waiting for it): no
   * port gauges then, and `einat_interface_up` 0. Absent: taken from the pinned state alone.
   */
  attached?: boolean;
  /**
   * The daemon's own fd of `map_records` (writable, so it can be mapped: the walk reads memory
   * where the pinned map's read-only fd needs batch reads, ~0.2 µs a record).
   */
  recordsFd?: number;
  /** What purges of departed external addresses dropped since the daemon started. */
  purged?: { bindings: number; sessions: number; addressOnly: number };
}

/**
 * Targets from the served interfaces (only fields this module reads): every address new
 * mappings are made on, once: the default of each family, and with `bpf_fib_lookup_external`
 * the other external addresses (with ranges of their own) the FIB may choose.
 */
export function targetsOf(
  served: {
    ifname: string;
    ic?: { bindingMaxRecords: number; bpfFibLookupExternal: boolean };
    pending?: unknown;
    nat?: { maps: { records: number } } | null;
    attachment?: unknown;
    purged?: { bindings: number; sessions: number; addressOnly: number };
    plan: {
      defaultExt: Partial<Record<4 | 6, { addr: Uint8Array }>>;
      externals: {
        family: 4 | 6;
        addr: Uint8Array;
        prefixLen: number;
        cfg: Record<ProtoName, PortRange[]> & { flags: number };
      }[];
    } | null;
  }[],
): MetricsTarget[] {
  return served.map((s) => {
    const attached = s.attachment === undefined ? undefined : s.attachment !== null;
    const seen = new Set<string>();
    const defaults = new Set(
      Object.values(s.plan?.defaultExt ?? {}).map((d) => d && formatAddr(d.addr)),
    );
    // No addresses of an interface not served now: its plan is the one it last had.
    const externals = (attached === false ? [] : s.plan?.externals ?? []).filter((e) => {
      const a = formatAddr(e.addr);
      const ok = e.prefixLen === e.addr.length * 8 && (e.cfg.flags & EXT_FLAGS.EXTERNAL) !== 0 &&
        (e.cfg.flags & EXT_FLAGS.NO_SNAT) === 0 && !seen.has(a) &&
        (defaults.has(a) || s.ic?.bpfFibLookupExternal === true);
      if (ok) seen.add(a);
      return ok;
    });
    return {
      ifname: s.ifname,
      ...(s.ic ? { bindingMax: s.ic.bindingMaxRecords } : {}),
      ...(s.pending ? { pending: true } : {}),
      ...(attached !== undefined ? { attached } : {}),
      ...(s.purged ? { purged: s.purged } : {}),
      ...(s.nat ? { recordsFd: s.nat.maps.records } : {}),
      externals: externals.flatMap((e) =>
        (["tcp", "udp", "icmp"] as const).map((protocol) => ({
          external: formatAddr(e.addr),
          protocol,
          ranges: e.cfg[protocol],
        }))
      ),
    };
  });
}

/** `einat_purged_total`'s `what` label of each count. */
const PURGED = { bindings: "binding", sessions: "session", addressOnly: "address_only" } as const;

/** How many of `ports` lie in `ranges`. */
export function portsInRanges(ports: number[], ranges: PortRange[]): number {
  return ports.filter((p) => inRanges(p, ranges)).length;
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/**
 * The exposition text: every metric's lines as one group, HELP and TYPE first (the text
 * format 0.0.4 requires it), in the order the metrics were first added.
 */
class Writer {
  private groups = new Map<string, string[]>();
  add(
    name: string,
    type: "counter" | "gauge",
    help: string,
    labels: Record<string, string>,
    value: number,
  ) {
    let g = this.groups.get(name);
    if (!g) {
      g = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
      this.groups.set(name, g);
    }
    const l = Object.entries(labels).map(([k, v]) => `${k}="${esc(v)}"`).join(",");
    g.push(`${name}${l ? `{${l}}` : ""} ${value}`);
  }
  text(): string {
    return [...this.groups.values()].flat().join("\n") + "\n";
  }
}

function rangeSize(ranges: PortRange[]): number {
  return ranges.reduce((n, r) => n + r.end - r.start + 1, 0);
}

function scrapeOne(w: Writer, st: PinnedState, t: MetricsTarget): void {
  const iface = st.ifname;
  const c = readCounters(st);
  for (const tr of c.traffic) {
    const labels = { interface: iface, direction: tr.direction, family: `ipv${tr.family}` };
    w.add(
      "einat_translated_packets_total",
      "counter",
      "Packets translated, by direction and family.",
      labels,
      tr.packets,
    );
    w.add(
      "einat_translated_bytes_total",
      "counter",
      "Bytes (from the IP header on) translated, by direction and family.",
      labels,
      tr.bytes,
    );
  }
  for (const [name, v] of Object.entries(c.events)) {
    if (name.startsWith("drop_")) {
      w.add(
        "einat_drops_total",
        "counter",
        "Packets dropped, by reason.",
        { interface: iface, reason: name.slice(5) },
        v,
      );
    } else {
      w.add(
        "einat_events_total",
        "counter",
        "Datapath events: new bindings and sessions, expiries, ICMP errors translated, hairpin turns, passes.",
        { interface: iface, event: name },
        v,
      );
    }
  }
  // Counted batch by batch: a row per binding or session would cost the daemon ~4 KB of heap
  // and ~0.15 ms per session at every scrape (1.2 GB and 49 s at 300,000 sessions).
  const bindings = tallyBindings(st);
  const sessions = tallySessions(st);
  const count = bindings.byProto, used = bindings.portsByExternal;
  const scount = sessions.byProto;
  const expired = sessions.expired;
  w.add(
    "einat_sessions_expired",
    "gauge",
    "Sessions past their timeout that the next sweep removes (no packet uses them).",
    { interface: iface },
    expired,
  );
  for (const family of [4, 6]) {
    for (const protocol of ["tcp", "udp", "icmp"]) {
      const labels = { interface: iface, family: `ipv${family}`, protocol };
      w.add(
        "einat_bindings",
        "gauge",
        "Live bindings (internal endpoint to external endpoint).",
        labels,
        count.get(`${family}/${protocol}`) ?? 0,
      );
      w.add(
        "einat_sessions",
        "gauge",
        "Live sessions (external endpoint to remote endpoint).",
        labels,
        scount.get(`${family}/${protocol}`) ?? 0,
      );
    }
  }
  for (const e of t.externals) {
    const labels = { interface: iface, external: e.external, protocol: e.protocol };
    const total = rangeSize(e.ranges);
    // The ports of the ranges held: bindings outside them (a reload narrowed the ranges, an
    // inbound ping's identifier) are not counted against them.
    const inUse = portsInRanges(used.get(`${e.external}/${e.protocol}`) ?? [], e.ranges);
    w.add(
      "einat_ports_capacity",
      "gauge",
      "Ports (ICMP identifiers) in the ranges of an external address.",
      labels,
      total,
    );
    w.add("einat_ports_used", "gauge", "Ports of the ranges held by bindings.", labels, inUse);
    w.add(
      "einat_port_utilization_ratio",
      "gauge",
      "Share of the port ranges held by bindings.",
      labels,
      total ? inUse / total : 0,
    );
  }
  for (const [what, n] of Object.entries(t.purged ?? {})) {
    w.add(
      "einat_purged_total",
      "counter",
      "Mappings dropped because their external address is no longer translated to (it left, " +
        "or its family's NAT went off), since this einat started: what no datapath counter sees.",
      { interface: iface, what: PURGED[what as keyof typeof PURGED] },
      n,
    );
  }
  w.add(
    "einat_reload_pending",
    "gauge",
    "1 while a reload's new configuration of the interface waits for an external address.",
    { interface: iface },
    t.pending ? 1 : 0,
  );
  for (const m of mapFill(st, t.bindingMax)) {
    const labels = { interface: iface, map: m.map };
    w.add("einat_map_entries", "gauge", "Entries in a state map.", labels, m.entries);
    w.add(
      "einat_map_capacity",
      "gauge",
      "Capacity (max_entries) of a state map.",
      labels,
      m.capacity,
    );
  }
}

/** The metrics page for `targets`, with the session sweep's figures when given. */
export function renderMetrics(
  targets: MetricsTarget[],
  root = stateOptions.pinRoot,
  sweep: SweepStats | null = null,
): string {
  const w = new Writer();
  if (sweep) {
    w.add("einat_sweeps_total", "counter", "Session sweeps completed.", {}, sweep.sweeps);
    w.add(
      "einat_sweep_duration_seconds",
      "gauge",
      "Duration of the last session sweep over every interface.",
      {},
      sweep.lastMs / 1000,
    );
    w.add(
      "einat_sweep_longest_piece_seconds",
      "gauge",
      "Longest piece of the last sweep in the kernel (a program run or a batch read of map_ct): " +
        "the longest it held a CPU.",
      {},
      sweep.longestPieceMs / 1000,
    );
    w.add(
      "einat_sweep_interval_seconds",
      "gauge",
      "Pause before the next session sweep: the most a session's port outlives its timeout.",
      {},
      sweep.nextMs / 1000,
    );
  }
  for (const t of targets) {
    const st = openPinned(pinDirFor(t.ifname, root), t.ifname);
    w.add(
      "einat_interface_up",
      "gauge",
      "1 while einat serves the interface (its programs attached, its pinned state there).",
      { interface: t.ifname },
      st && t.attached !== false ? 1 : 0,
    );
    if (!st) continue;
    try {
      if (t.recordsFd !== undefined) {
        // The same map as the pin: its mappable fd (a copy, which st.close() closes).
        const fd = dupFd(t.recordsFd);
        closeFd(st.fds.map_records ?? -1);
        st.fds.map_records = fd;
      }
      scrapeOne(w, st, t);
    } finally {
      st.close();
    }
  }
  return w.text();
}

/** A running endpoint. */
export interface MetricsServer {
  /** The port bound (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (and `/`) on `addr`; `HEAD` answers without a scrape (health checks). */
export function startMetrics(
  addr: { hostname: string; port: number },
  targets: () => MetricsTarget[],
  sweep: () => SweepStats | null = () => null,
): MetricsServer {
  const server = Deno.serve({
    hostname: addr.hostname,
    port: addr.port,
    onListen: () => {},
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (path !== "/metrics" && path !== "/") return new Response("not found\n", { status: 404 });
    if (req.method === "HEAD") return new Response(null, { headers: { "content-type": TEXT } });
    if (req.method !== "GET") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    try {
      return new Response(renderMetrics(targets(), stateOptions.pinRoot, sweep()), {
        headers: { "content-type": TEXT },
      });
    } catch (e) {
      log.warn("metrics scrape failed", { error: (e as Error).message });
      return new Response(`error: ${(e as Error).message}\n`, { status: 500 });
    }
  });
  const port = (server.addr as Deno.NetAddr).port;
  log.info("metrics endpoint", { listen: `${addr.hostname}:${port}`, path: "/metrics" });
  return { port, close: () => server.shutdown() };
}

/** The Prometheus text format's content type. */
const TEXT = "text/plain; version=0.0.4; charset=utf-8";

/** How often `--replace` tries the busy metrics port, and for how long after the take-over. */
export const METRICS_RETRY_MS = 100;
export const METRICS_RETRY_FOR_MS = 10_000;

/**
 * `--replace --metrics`: binds with `start` in the background every METRICS_RETRY_MS while
 * the port is in use, and hands the server to `bound`. Gives up with a warning
 * METRICS_RETRY_FOR_MS after `running()` first holds (the take-over done: the replaced einat
 * exits then), or quietly once it no longer does (stopping; also a start that failed).
 */
export function bindWhenFree(
  start: () => MetricsServer,
  running: () => boolean,
  bound: (m: MetricsServer) => void,
  listen: string,
): void {
  let since: number | undefined;
  const t0 = Date.now();
  const attempt = () => {
    const now = Date.now();
    if (running()) since ??= now;
    else if (since !== undefined || now - t0 > 5 * 60_000) return;
    try {
      bound(start());
      return;
    } catch (e) {
      if (
        !(e instanceof Deno.errors.AddrInUse) ||
        (since !== undefined && now - since >= METRICS_RETRY_FOR_MS)
      ) {
        log.warn("metrics endpoint not started", { listen, error: (e as Error).message });
        return;
      }
    }
    setTimeout(attempt, METRICS_RETRY_MS);
  };
  setTimeout(attempt, METRICS_RETRY_MS);
}
