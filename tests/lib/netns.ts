/**
 * Network-namespace test harness: builds a LAN / router / WAN topology in namespaces with a
 * unique prefix, runs commands and processes in them, and tears everything down.
 *
 * ```
 *  PFX-lan1 eth0 192.0.2.10 ─┐                         ┌─ eth0 PFX-srv1 203.0.113.11,.12
 *                            ├─ br0 PFX-router wan0 ── br0 PFX-wan
 *  PFX-lan2 eth0 192.0.2.20 ─┘  192.0.2.1  203.0.113.1 └─ eth0 PFX-srv2 203.0.113.21,.22
 * ```
 *
 * IPv6: LAN 2001:db8:1::/64 (router ::1, hosts ::10/::20), WAN 2001:db8:2::/64 (router ::1,
 * servers ::11/::12 and ::21/::22). Servers have no route back to the LAN prefixes, so replies
 * reach the LAN only through NAT. Interface names live inside their own namespaces and carry
 * no prefix: LAN hosts and servers use `eth0`, the router `br0` (LAN bridge, ports `vlan1`,
 * `vlan2`) and `wan0`, the WAN switch `br0` (ports `r`, `s1`, `s2`).
 * @module
 */

/** Options of `run`. */
export interface RunOptions {
  /** Text written to the command's stdin. */
  stdin?: string;
  /** Kill the command (SIGKILL) after this long; default 30000 ms. */
  timeoutMs?: number;
}

/** Result of `runResult`. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Runs a command; resolves with its exit code and output, never throws on a non-zero exit. */
export async function runResult(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), opts.timeoutMs ?? 30000);
  try {
    const child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: opts.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
    }).spawn();
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(enc.encode(opts.stdin));
      await w.close();
    }
    const out = await child.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a command and returns its stdout; throws with the stderr on a non-zero exit. */
export async function run(cmd: string[], opts: RunOptions = {}): Promise<string> {
  const r = await runResult(cmd, opts);
  if (r.code !== 0) {
    throw new Error(`command failed (exit ${r.code}): ${cmd.join(" ")}\n${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** Runs a command inside namespace `ns` (`ip netns exec`); like `run`. */
export function nsExec(ns: string, cmd: string[], opts: RunOptions = {}): Promise<string> {
  return run(["ip", "netns", "exec", ns, ...cmd], opts);
}

/** Like `nsExec` but never throws on a non-zero exit. */
export function nsExecResult(ns: string, cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runResult(["ip", "netns", "exec", ns, ...cmd], opts);
}

// ---------------------------------------------------------------------------------------------
// Processes

/** A process started in a namespace by `spawnInNs`. */
export interface NsProcess {
  pid: number;
  ns: string;
  cmd: string[];
  /** Resolves when the process exits. */
  status: Promise<Deno.CommandStatus>;
  /** True until the process has exited. */
  running(): boolean;
  /** Stdout collected so far. */
  stdoutText(): string;
  /** Stderr collected so far. */
  stderrText(): string;
  /** Waits until stdout matches `pattern`; returns the stdout then. Throws on timeout or exit. */
  waitForStdout(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** Waits for the exit (bounded by `timeoutMs`, default 30000, then killed) and all output. */
  output(timeoutMs?: number): Promise<RunResult>;
  /** Sends a signal (default SIGTERM) by PID if the process is still running. */
  kill(signal?: Deno.Signal): void;
}

/**
 * Deletes the test namespace `ns`, first killing (SIGKILL) what still runs in it: anything in a
 * namespace of ours was started by this test run.
 */
export async function deleteNs(ns: string): Promise<RunResult> {
  const pids = await runResult(["ip", "netns", "pids", ns]);
  for (const pid of pids.stdout.split("\n").map(Number).filter((p) => p > 1)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  return await runResult(["ip", "netns", "del", ns]);
}

/** Options of `spawnInNs`. */
export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Kill (SIGKILL) the process if still running after this long. */
  killAfterMs?: number;
}

const children = new Set<NsProcess & { drained: Promise<void> }>();

/**
 * Starts `cmd` in namespace `ns` (`ip netns exec`, which execs, so the PID is the command's).
 * The child is recorded: `destroy()` of the topology owning `ns` kills it if still running.
 */
export function spawnInNs(ns: string, cmd: string[], opts: SpawnOptions = {}): NsProcess {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...cmd],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
    cwd: opts.cwd,
  }).spawn();
  let out = "", err = "";
  let done = false;
  const collect = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    const d = new TextDecoder();
    for await (const chunk of s) add(d.decode(chunk, { stream: true }));
    add(d.decode());
  };
  const drained = Promise.all([
    collect(child.stdout, (t) => out += t),
    collect(child.stderr, (t) => err += t),
  ]).then(() => {});
  const status = child.status.then((s) => {
    done = true;
    return s;
  });
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  if (opts.killAfterMs !== undefined) {
    killTimer = setTimeout(() => proc.kill("SIGKILL"), opts.killAfterMs);
    status.finally(() => clearTimeout(killTimer));
  }
  const proc: NsProcess & { drained: Promise<void> } = {
    pid: child.pid,
    ns,
    cmd,
    status,
    drained,
    running: () => !done,
    stdoutText: () => out,
    stderrText: () => err,
    async waitForStdout(pattern, timeoutMs = 10000) {
      const until = Date.now() + timeoutMs;
      const ok = () => typeof pattern === "string" ? out.includes(pattern) : pattern.test(out);
      while (!ok()) {
        if (done) {
          await drained;
          if (ok()) break;
          throw new Error(
            `process exited before printing ${pattern}: ${cmd.join(" ")}\n${out}\n${err}`,
          );
        }
        if (Date.now() > until) {
          throw new Error(`timeout waiting for ${pattern}: ${cmd.join(" ")}\n${out}\n${err}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return out;
    },
    async output(timeoutMs = 30000) {
      const t = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
      try {
        const s = await status;
        await drained;
        return { code: s.code, stdout: out, stderr: err };
      } finally {
        clearTimeout(t);
      }
    },
    kill(signal: Deno.Signal = "SIGTERM") {
      if (done) return;
      try {
        Deno.kill(child.pid, signal);
      } catch {
        // Already gone.
      }
    },
  };
  children.add(proc);
  status.then(() => drained).finally(() => children.delete(proc));
  return proc;
}

/** Path of peer.ts next to this file. */
export const PEER_PATH: string = new URL("./peer.ts", import.meta.url).pathname;

/** The command line running a peer.ts subcommand with the current Deno binary. */
export function peerCmd(sub: string, args: string[] = []): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--unstable-net",
    "--no-config",
    "--no-lock",
    PEER_PATH,
    sub,
    ...args,
  ];
}

async function stopProcesses(procs: (NsProcess & { drained: Promise<void> })[]): Promise<void> {
  const live = procs.filter((p) => p.running());
  for (const p of live) p.kill("SIGTERM");
  const settle = (ms: number) => {
    let t: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      Promise.all(procs.map((p) => p.status.then(() => p.drained))),
      new Promise((r) => t = setTimeout(r, ms)),
    ]).finally(() => clearTimeout(t));
  };
  await settle(1000);
  for (const p of live) p.kill("SIGKILL");
  await settle(2000);
}

// ---------------------------------------------------------------------------------------------
// Topology

/** Addresses of one family. `srv1`/`srv2` each have two. */
export interface FamilyAddrs {
  lan1: string;
  lan2: string;
  routerLan: string;
  routerWan: string;
  srv1: [string, string];
  srv2: [string, string];
  /** LAN prefix, e.g. "192.0.2.0/24". */
  lanNet: string;
  /** WAN prefix, e.g. "203.0.113.0/24". */
  wanNet: string;
}

/** Addresses of the topology by family. */
export interface TopologyAddrs {
  v4: FamilyAddrs;
  v6: FamilyAddrs;
}

/** The namespaces of a topology (full names). */
export interface TopologyNs {
  lan1: string;
  lan2: string;
  router: string;
  srv1: string;
  srv2: string;
  wan: string;
}

/** A built topology. */
export interface Topology {
  /** Unique prefix of the namespace names, e.g. "einat-t3f9a1c-". */
  prefix: string;
  ns: TopologyNs;
  addrs: TopologyAddrs;
  /** Interface names inside their namespaces. */
  ifaces: { routerLan: "br0"; routerWan: "wan0"; host: "eth0"; wanSwitch: "br0" };
  /** Runs a command in one of this topology's namespaces. */
  exec(ns: string, cmd: string[], opts?: RunOptions): Promise<string>;
  /** `spawnInNs`, for symmetry. */
  spawn(ns: string, cmd: string[], opts?: SpawnOptions): NsProcess;
  /** Kills recorded children and every process left in the namespaces, deletes them. */
  destroy(): Promise<void>;
}

/** Options of `createTopology`. */
export interface TopologyOptions {
  /** Namespace name prefix; default `einat-t<6 hex>-` (see {@link testPrefix}). Must be unused. */
  prefix?: string;
  /** Configure IPv6 addresses and routes (default true). */
  ipv6?: boolean;
}

/** Addresses used by every topology. */
export const ADDRS: TopologyAddrs = {
  v4: {
    lan1: "192.0.2.10",
    lan2: "192.0.2.20",
    routerLan: "192.0.2.1",
    routerWan: "203.0.113.1",
    srv1: ["203.0.113.11", "203.0.113.12"],
    srv2: ["203.0.113.21", "203.0.113.22"],
    lanNet: "192.0.2.0/24",
    wanNet: "203.0.113.0/24",
  },
  v6: {
    lan1: "2001:db8:1::10",
    lan2: "2001:db8:1::20",
    routerLan: "2001:db8:1::1",
    routerWan: "2001:db8:2::1",
    srv1: ["2001:db8:2::11", "2001:db8:2::12"],
    srv2: ["2001:db8:2::21", "2001:db8:2::22"],
    lanNet: "2001:db8:1::/64",
    wanNet: "2001:db8:2::/64",
  },
};

const live = new Set<Topology>();
let signalHandler: (() => void) | undefined;
let cleaningUp = false;

function onSignal(): void {
  if (cleaningUp) return;
  cleaningUp = true;
  console.error("einat test harness: signal received, deleting namespaces");
  const all = [...live].map((t) => t.destroy().catch((e) => console.error(String(e))));
  Promise.all(all).finally(() => Deno.exit(130));
}

function trackTopology(t: Topology): void {
  live.add(t);
  if (!signalHandler) {
    signalHandler = onSignal;
    Deno.addSignalListener("SIGINT", signalHandler);
    Deno.addSignalListener("SIGTERM", signalHandler);
  }
}

function untrackTopology(t: Topology): void {
  live.delete(t);
  if (live.size === 0 && signalHandler) {
    Deno.removeSignalListener("SIGINT", signalHandler);
    Deno.removeSignalListener("SIGTERM", signalHandler);
    signalHandler = undefined;
  }
}

/** Names of existing namespaces that start with `prefix`. */
export async function listNamespaces(prefix: string): Promise<string[]> {
  const out = await run(["ip", "netns", "list"]);
  return out.split("\n").map((l) => l.split(" ")[0]).filter((n) => n && n.startsWith(prefix));
}

/**
 * What the names of a test's namespaces and host folders start with: `einat`, or
 * `$EINAT_TEST_PREFIX` (e.g. to tell one developer's test runs from another's).
 */
export function testPrefix(): string {
  return Deno.env.get("EINAT_TEST_PREFIX") || "einat";
}

/**
 * A fresh name for a test's own namespace: `<testPrefix()>-<tag><8 hex>`, e.g.
 * `einat-nl3f9a1c2d`, so that scripts/test.sh's sweep of an interrupted run finds it.
 */
export function testNsName(tag: string): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return `${testPrefix()}-${tag}${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

function randomPrefix(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return `${testPrefix()}-t${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}-`;
}

const COMMON_SYSCTLS = [
  "net.ipv6.conf.all.accept_dad=0",
  "net.ipv6.conf.default.accept_dad=0",
  "net.ipv6.conf.all.accept_ra=0",
  "net.ipv6.conf.default.accept_ra=0",
  "net.ipv6.conf.default.router_solicitations=0",
  "net.ipv4.conf.all.rp_filter=0",
  "net.ipv4.conf.default.rp_filter=0",
];

/**
 * Builds the topology described in the module doc. On any failure everything created so far
 * is deleted before the error is rethrown. The returned handle must be `destroy()`ed; prefer
 * `withTopology`.
 */
export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const v6 = opts.ipv6 ?? true;
  let prefix = opts.prefix ?? randomPrefix();
  for (let i = 0; i < 5 && (await listNamespaces(prefix)).length > 0; i++) {
    if (opts.prefix) throw new Error(`namespaces with prefix ${prefix} already exist`);
    prefix = randomPrefix();
  }
  const ns: TopologyNs = {
    lan1: `${prefix}lan1`,
    lan2: `${prefix}lan2`,
    router: `${prefix}router`,
    srv1: `${prefix}srv1`,
    srv2: `${prefix}srv2`,
    wan: `${prefix}wan`,
  };
  const created: string[] = [];
  let destroyed: Promise<void> | undefined;
  const nsSet = new Set(Object.values(ns));

  const topo: Topology = {
    prefix,
    ns,
    addrs: ADDRS,
    ifaces: { routerLan: "br0", routerWan: "wan0", host: "eth0", wanSwitch: "br0" },
    exec: (n, cmd, o) => {
      if (!nsSet.has(n)) throw new Error(`${n} is not a namespace of this topology`);
      return nsExec(n, cmd, o);
    },
    spawn: (n, cmd, o) => {
      if (!nsSet.has(n)) throw new Error(`${n} is not a namespace of this topology`);
      return spawnInNs(n, cmd, o);
    },
    destroy() {
      destroyed ??= (async () => {
        const errors: string[] = [];
        await stopProcesses([...children].filter((c) => nsSet.has(c.ns)));
        for (const n of created) {
          const r = await deleteNs(n);
          if (r.code !== 0) errors.push(`${n}: ${r.stderr.trim()}`);
        }
        untrackTopology(topo);
        if (errors.length) throw new Error(`destroy: ${errors.join("; ")}`);
      })();
      return destroyed;
    },
  };
  trackTopology(topo);

  try {
    for (const n of Object.values(ns)) {
      await run(["ip", "netns", "add", n]);
      created.push(n);
      await nsExec(n, ["sysctl", "-q", "-w", ...COMMON_SYSCTLS]);
    }
    await nsExec(ns.router, [
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.ip_forward=1",
      "net.ipv6.conf.all.forwarding=1",
    ]);
    const a4 = ADDRS.v4, a6 = ADDRS.v6;
    const batch = async (n: string, lines: string[]) => {
      await run(["ip", "-n", n, "-batch", "-"], { stdin: lines.join("\n") + "\n" });
    };
    const bridge = "type bridge stp_state 0 forward_delay 0 mcast_snooping 0";
    // Router: LAN bridge with one veth per LAN host, WAN veth to the switch.
    await batch(ns.router, [
      "link set lo up",
      `link add br0 ${bridge}`,
      `link add vlan1 type veth peer name eth0 netns ${ns.lan1}`,
      `link add vlan2 type veth peer name eth0 netns ${ns.lan2}`,
      `link add wan0 type veth peer name r netns ${ns.wan}`,
      "link set vlan1 master br0",
      "link set vlan2 master br0",
      "link set vlan1 up",
      "link set vlan2 up",
      "link set br0 up",
      "link set wan0 up",
      `addr add ${a4.routerLan}/24 dev br0`,
      `addr add ${a4.routerWan}/24 dev wan0`,
      ...(v6
        ? [
          `addr add ${a6.routerLan}/64 dev br0 nodad`,
          `addr add ${a6.routerWan}/64 dev wan0 nodad`,
        ]
        : []),
    ]);
    await batch(ns.wan, [
      "link set lo up",
      `link add br0 ${bridge}`,
      `link add s1 type veth peer name eth0 netns ${ns.srv1}`,
      `link add s2 type veth peer name eth0 netns ${ns.srv2}`,
      "link set r master br0",
      "link set s1 master br0",
      "link set s2 master br0",
      "link set r up",
      "link set s1 up",
      "link set s2 up",
      "link set br0 up",
    ]);
    for (const [n, v4addr, v6addr] of [[ns.lan1, a4.lan1, a6.lan1], [ns.lan2, a4.lan2, a6.lan2]]) {
      await batch(n, [
        "link set lo up",
        "link set eth0 up",
        `addr add ${v4addr}/24 dev eth0`,
        `route add default via ${a4.routerLan}`,
        ...(v6
          ? [`addr add ${v6addr}/64 dev eth0 nodad`, `route add default via ${a6.routerLan}`]
          : []),
      ]);
    }
    for (
      const [n, v4s, v6s] of [[ns.srv1, a4.srv1, a6.srv1], [ns.srv2, a4.srv2, a6.srv2]] as const
    ) {
      await batch(n, [
        "link set lo up",
        "link set eth0 up",
        ...v4s.map((x) => `addr add ${x}/24 dev eth0`),
        ...(v6 ? v6s.map((x) => `addr add ${x}/64 dev eth0 nodad`) : []),
      ]);
    }
  } catch (e) {
    await topo.destroy().catch(() => {});
    throw e;
  }
  return topo;
}

/** Creates a topology, runs `fn` with it and always destroys it afterwards. */
export async function withTopology<T>(
  fn: (t: Topology) => Promise<T> | T,
  opts: TopologyOptions = {},
): Promise<T> {
  const t = await createTopology(opts);
  try {
    return await fn(t);
  } finally {
    await t.destroy();
  }
}
