/**
 * `einat show`: bindings and sessions (or counters with `--stats`) of the
 * pinned state, as a table or JSON. Reads only, through read-only map fds;
 * works whether or not einat runs.
 * @module
 */

import type { ShowCli } from "../config/cli.ts";
import {
  type AddrRow,
  type BindingRow,
  type Counters,
  openPinned,
  pinnedInterfaces,
  pinRootProblem,
  readAddrMappings,
  readBindings,
  readCounters,
  readSessions,
  type SessionRow,
} from "./read.ts";
import { DEFAULT_PIN_ROOT, netnsRoot, pinDirFor } from "./options.ts";
import { ownerOf, programsAttached } from "../nat/attach.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { parseAddr } from "../config/cidr.ts";

/** Everything `show` found. */
export interface ShowResult {
  bindings: BindingRow[];
  sessions: SessionRow[];
  /** Address-only mappings of other IP protocols (GRE, ESP, ...); none when absent. */
  addressOnly?: AddrRow[];
  counters: Counters[];
  /** Interfaces asked for but without pinned state. */
  missing: string[];
  /**
   * Each interface shown, with the pid of the einat serving it now (null: none runs) and, when
   * none does, whether programs of a killed one are still attached (translating on).
   */
  served: { interface: string; pid: number | null; orphaned?: boolean }[];
  /** `--top N`: the sessions are the N that moved the most bytes; no bindings. */
  top?: number;
  /** `--hosts`: the rows summed per internal address (with `top`, the first `top`). */
  hosts?: HostRow[];
}

/** One internal address's share of the tables (`show --hosts`). */
export interface HostRow {
  interface: string;
  address: string;
  /** Bindings in all, and per protocol. */
  bindings: number;
  tcp: number;
  udp: number;
  icmp: number;
  sessions: number;
  /** Address-only mappings of other IP protocols. */
  addressOnly: number;
}

/** The address of an endpoint as read.ts formats it: `ip:port`, `[ip6]:port`, or a bare address. */
function addressOf(endpoint: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(endpoint) ?? /^([0-9.]+):\d+$/.exec(endpoint);
  return m ? m[1] : endpoint;
}

/**
 * The rows of `r` summed per (interface, internal address): most sessions first, then most
 * bindings, then by interface and address (IPv4 before IPv6, in address order).
 */
export function hostsOf(r: ShowResult): HostRow[] {
  const by = new Map<string, HostRow>();
  const row = (iface: string, internal: string) => {
    const address = addressOf(internal), key = `${iface} ${address}`;
    let h = by.get(key);
    if (!h) {
      h = {
        interface: iface,
        address,
        bindings: 0,
        tcp: 0,
        udp: 0,
        icmp: 0,
        sessions: 0,
        addressOnly: 0,
      };
      by.set(key, h);
    }
    return h;
  };
  for (const b of r.bindings) {
    const h = row(b.interface, b.internal);
    h.bindings++;
    h[b.protocol]++;
  }
  for (const s of r.sessions) row(s.interface, s.internal).sessions++;
  for (const a of r.addressOnly ?? []) row(a.interface, a.internal).addressOnly++;
  // the address's length (IPv4 first), then its bytes: address order
  const order = (h: HostRow) => {
    try {
      const b = parseAddr(h.address);
      return String.fromCharCode(b.length, ...b);
    } catch {
      return `~${h.address}`;
    }
  };
  const keys = new Map([...by.values()].map((h) => [h, `${h.interface} ${order(h)}`]));
  return [...by.values()].sort((a, b) =>
    b.sessions - a.sessions || b.bindings - a.bindings ||
    (keys.get(a)! < keys.get(b)! ? -1 : keys.get(a)! > keys.get(b)! ? 1 : 0)
  );
}

/**
 * The `n` sessions of `rows` that moved the most bytes (out and in), most first; ties by packets.
 * Throws when none has counts (session_counters off).
 */
export function topSessions(rows: SessionRow[], n: number): SessionRow[] {
  // Sessions with counts kept (null: none kept for it, as undefined: counting off).
  const counted = rows.filter((r) => r.counters != null);
  if (rows.length > 0 && counted.length === 0) {
    throw new Error("--top: no session counts here: session_counters is off");
  }
  const bytes = (r: SessionRow) => r.counters ? r.counters.bytesOut + r.counters.bytesIn : -1;
  const packets = (r: SessionRow) => r.counters ? r.counters.packetsOut + r.counters.packetsIn : -1;
  return counted.sort((a, b) => bytes(b) - bytes(a) || packets(b) - packets(a)).slice(0, n);
}

/** Reads what `show` prints. */
export function collect(opts: ShowCli): ShowResult {
  const root = opts.pinDir ?? DEFAULT_PIN_ROOT;
  const problem = pinRootProblem(root);
  if (problem) throw new Error(problem);
  // This network namespace's interfaces, as the daemon pins them (options.ts).
  const names = opts.ifnames.length ? opts.ifnames : pinnedInterfaces(netnsRoot(root));
  const res: ShowResult = {
    bindings: [],
    sessions: [],
    addressOnly: [],
    counters: [],
    missing: [],
    served: [],
  };
  const filter = {
    proto: opts.proto,
    addr: opts.addr,
    addrPrefix: opts.addrPrefix,
    port: opts.port,
  };
  for (const ifname of names) {
    const st = openPinned(pinDirFor(ifname, root), ifname);
    if (!st) {
      res.missing.push(ifname);
      continue;
    }
    const ifindex = ifNameToIndex(ifname);
    const pid = ifindex ? ownerOf(ifindex) : null;
    const orphaned = pid === null && ifindex !== 0 &&
      programsAttached(ifindex, pinDirFor(ifname, root));
    res.served.push({ interface: ifname, pid, ...(orphaned ? { orphaned } : {}) });
    try {
      if (opts.stats) {
        res.counters.push(readCounters(st));
      } else {
        // concat, not push(...rows): spreading 100,000s of rows overflows the stack
        const all = opts.top === undefined || opts.hosts;
        if (all) res.bindings = res.bindings.concat(readBindings(st, filter));
        res.sessions = res.sessions.concat(readSessions(st, filter));
        if (all) res.addressOnly = (res.addressOnly ?? []).concat(readAddrMappings(st, filter));
      }
    } finally {
      st.close();
    }
  }
  if (opts.hosts) {
    const hosts = hostsOf(res);
    res.hosts = opts.top === undefined ? hosts : hosts.slice(0, opts.top);
    res.top = opts.top;
  } else if (opts.top !== undefined) {
    res.sessions = topSessions(res.sessions, opts.top);
    res.top = opts.top;
  }
  return res;
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => rows.reduce((m, r) => Math.max(m, r[i].length), h.length));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i])).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

/** The text form of a {@link ShowResult}. */
export function formatText(r: ShowResult, stats: boolean): string {
  const out: string[] = [];
  if (stats) {
    for (const c of r.counters) {
      out.push(`${c.interface}:`);
      out.push(
        table(
          ["DIRECTION", "FAMILY", "PACKETS", "BYTES"],
          c.traffic.map((t) => [t.direction, `ipv${t.family}`, String(t.packets), String(t.bytes)]),
        ).split("\n").map((l) => `  ${l}`).join("\n"),
      );
      const ev = Object.entries(c.events);
      const w = Math.max(...ev.map(([k]) => k.length));
      for (const [k, v] of ev) out.push(`  ${k.padEnd(w)}  ${v}`);
    }
  } else if (r.hosts) {
    out.push(
      table(
        ["IF", "INTERNAL", "BINDINGS", "TCP", "UDP", "ICMP", "SESSIONS", "ADDRESS-ONLY"],
        r.hosts.map((h) => [
          h.interface,
          h.address,
          String(h.bindings),
          String(h.tcp),
          String(h.udp),
          String(h.icmp),
          String(h.sessions),
          String(h.addressOnly),
        ]),
      ),
    );
    out.push("");
    out.push(
      r.top !== undefined
        ? `the ${r.hosts.length} internal addresses holding the most sessions (--top ${r.top})`
        : `${r.hosts.length} internal ${r.hosts.length === 1 ? "address" : "addresses"}: ` +
          `${r.sessions.length} sessions, ${r.bindings.length} bindings, ` +
          `${(r.addressOnly ?? []).length} address-only`,
    );
  } else {
    // Packet and byte columns when an interface counts sessions (session_counters).
    const counted = r.sessions.some((s) => s.counters !== undefined);
    const counts = (s: SessionRow) =>
      !counted ? [] : s.counters
        ? [
          `${s.counters.packetsOut}/${s.counters.packetsIn}`,
          `${s.counters.bytesOut}/${s.counters.bytesIn}`,
        ]
        : ["-", "-"];
    out.push(
      table(
        ["IF", "PROTO", "INTERNAL", "EXTERNAL", "REMOTE", "STATE", "LEFT", "IDLE"].concat(
          counted ? ["PACKETS OUT/IN", "BYTES OUT/IN"] : [],
        ),
        r.sessions.map((s) => [
          s.interface,
          s.protocol,
          s.internal,
          s.external,
          s.remote,
          s.state,
          s.expired ? "expired" : s.secondsLeft === null ? "?" : `${s.secondsLeft}s`,
          `${s.idleSeconds}s`,
          ...counts(s),
        ]),
      ),
    );
    out.push("");
    if (r.top !== undefined) {
      out.push(`the ${r.sessions.length} sessions that moved the most bytes (--top ${r.top})`);
    } else {
      out.push(
        table(
          ["IF", "PROTO", "INTERNAL", "EXTERNAL", "SESSIONS"],
          r.bindings.map((
            b,
          ) => [b.interface, b.protocol, b.internal, b.external, String(b.sessions)]),
        ),
      );
      out.push("");
      const addressOnly = r.addressOnly ?? [];
      if (addressOnly.length > 0) {
        out.push(
          table(
            ["IF", "PROTO", "INTERNAL", "EXTERNAL", "REMOTE", "LEFT", "IDLE"],
            addressOnly.map((a) => [
              a.interface,
              a.protocol,
              a.internal,
              a.external,
              a.remote,
              a.expired ? "expired" : a.secondsLeft === null ? "?" : `${a.secondsLeft}s`,
              `${a.idleSeconds}s`,
            ]),
          ),
        );
        out.push("");
      }
      const other = addressOnly.length
        ? `, ${addressOnly.length} address-only (other IP protocols)`
        : "";
      out.push(`${r.sessions.length} sessions, ${r.bindings.length} bindings${other}`);
    }
  }
  for (const m of r.missing) out.push(`${m}: no pinned state`);
  for (const { interface: i, pid, orphaned } of r.served) {
    out.push(
      pid !== null
        ? `${i}: served by einat (pid ${pid})`
        : orphaned
        ? `${i}: no einat serves it, but a stopped one's programs are still attached and translate ` +
          `with this state (nothing expires it); start einat to take over, or einat --flush`
        : `${i}: no einat serves it now; the state is as the last one left it`,
    );
  }
  return out.join("\n");
}

/** The JSON form of a {@link ShowResult}. */
export function formatJson(r: ShowResult, stats: boolean): string {
  return JSON.stringify(
    stats
      ? { counters: r.counters, missing: r.missing, served: r.served }
      : r.hosts
      ? { hosts: r.hosts, missing: r.missing, served: r.served }
      : {
        sessions: r.sessions,
        bindings: r.bindings,
        addressOnly: r.addressOnly,
        missing: r.missing,
        served: r.served,
      },
    null,
    2,
  );
}

/** Runs `einat show`; returns the exit code. */
export function runShow(opts: ShowCli): number {
  let r: ShowResult;
  try {
    r = collect(opts);
  } catch (e) {
    console.error(`einat: show: ${(e as Error).message}`);
    return 2;
  }
  console.log(opts.json ? formatJson(r, opts.stats) : formatText(r, opts.stats));
  return r.missing.length && opts.ifnames.length ? 1 : 0;
}
