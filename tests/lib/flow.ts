/**
 * Long-lived flows for restart tests: one TCP connection and one UDP flow
 * that keep carrying numbered messages, so a test can see whether they
 * survive an einat restart and whether any message was lost.
 *
 * `deno run -A tests/lib/flow.ts serve --udp-port P --tcp-port P [--timeout-ms T]`:
 * UDP: answers every datagram with `seen SRC PAYLOAD`; TCP: per connection
 * writes `seen SRC`, then answers each line with `seen SRC LINE`.
 *
 * `deno run -A tests/lib/flow.ts client --udp IP:PORT --tcp IP:PORT --from-port P
 * [--interval-ms N] [--timeout-ms T]`: sends `u N` / `t N` every interval from local
 * port P (both protocols) and prints, per answer, `udp SEQ SEEN` / `tcp SEQ SEEN`.
 * Datagrams from anyone else (inbound, EIF) are printed as `in FROM` and answered
 * `seen FROM`. TCP errors print `tcp-error ...`; the client never reconnects.
 * Prints `ready` once both flows got a first answer. SIGUSR1 pauses sending (prints
 * `paused`), SIGUSR2 resumes (prints `resumed`).
 * @module
 */

import dgram from "node:dgram";
import net from "node:net";
import type { NsProcess, Topology } from "./netns.ts";

function arg(argv: string[], name: string, def?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= argv.length) {
    if (def !== undefined) return def;
    throw new Error(`--${name} missing`);
  }
  return argv[i + 1];
}

function hostPort(s: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`bad host:port ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

function fmt(addr: string, port: number): string {
  const a = addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
  return a.includes(":") ? `[${a}]:${port}` : `${a}:${port}`;
}
const out = (line: string) => console.log(line);

function serve(argv: string[]): void {
  const udpPort = Number(arg(argv, "udp-port"));
  const tcpPort = Number(arg(argv, "tcp-port"));
  const u = dgram.createSocket("udp4");
  u.on("message", (msg, r) => {
    u.send(`seen ${fmt(r.address, r.port)} ${msg.toString().trim()}`, r.port, r.address);
  });
  u.bind(udpPort);
  const t = net.createServer((c) => {
    const src = fmt(c.remoteAddress ?? "?", c.remotePort ?? 0);
    out(`tcp-conn ${src}`);
    c.write(`seen ${src}\n`);
    let buf = "";
    c.on("data", (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        c.write(`seen ${src} ${buf.slice(0, nl)}\n`);
        buf = buf.slice(nl + 1);
      }
    });
    c.on("error", (e) => out(`tcp-error ${e.message}`));
  });
  t.listen(tcpPort, () => out("listening"));
}

function client(argv: string[]): void {
  const udp = hostPort(arg(argv, "udp"));
  const tcp = hostPort(arg(argv, "tcp"));
  const fromPort = Number(arg(argv, "from-port"));
  const interval = Number(arg(argv, "interval-ms", "50"));
  let useq = 0, tseq = 0, gotU = false, gotT = false;
  const ready = () => {
    if (gotU && gotT) out("ready");
  };
  const u = dgram.createSocket("udp4");
  u.on("message", (msg, r) => {
    const text = msg.toString().trim();
    if (r.address === udp.host && r.port === udp.port) {
      const m = /^seen (\S+) u (\d+)$/.exec(text);
      if (m) {
        out(`udp ${m[2]} ${m[1]}`);
        if (!gotU) {
          gotU = true;
          ready();
        }
      }
      return;
    }
    out(`in ${fmt(r.address, r.port)} ${text}`);
    u.send(`seen ${fmt(r.address, r.port)}`, r.port, r.address);
  });
  u.bind(fromPort);
  const c = net.connect({ host: tcp.host, port: tcp.port, localPort: fromPort });
  c.setNoDelay(true);
  let buf = "";
  c.on("data", (d) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const m = /^seen (\S+) t (\d+)$/.exec(line);
      if (m) {
        out(`tcp ${m[2]} ${m[1]}`);
        if (!gotT) {
          gotT = true;
          ready();
        }
      }
    }
  });
  c.on("error", (e) => out(`tcp-error ${e.message}`));
  c.on("close", () => out("tcp-closed"));
  let paused = false;
  Deno.addSignalListener("SIGUSR1", () => {
    paused = true;
    out("paused");
  });
  Deno.addSignalListener("SIGUSR2", () => {
    paused = false;
    out("resumed");
  });
  c.on("connect", () => {
    setInterval(() => {
      if (paused) return;
      u.send(`u ${++useq}`, udp.port, udp.host);
      if (!c.destroyed) c.write(`t ${++tseq}\n`);
    }, interval);
  });
}

/** Replies the client printed: seq → what the server saw, per protocol. */
export interface FlowLog {
  udp: Map<number, string>;
  tcp: Map<number, string>;
  inbound: string[];
  tcpErrors: string[];
}

/** Parses the client's output. */
export function parseFlow(stdout: string): FlowLog {
  const r: FlowLog = { udp: new Map(), tcp: new Map(), inbound: [], tcpErrors: [] };
  for (const line of stdout.split("\n")) {
    const m = /^(udp|tcp) (\d+) (\S+)$/.exec(line);
    if (m) (m[1] === "udp" ? r.udp : r.tcp).set(Number(m[2]), m[3]);
    else if (line.startsWith("in ")) r.inbound.push(line.slice(3));
    else if (/^tcp-(error|closed)/.test(line)) r.tcpErrors.push(line);
  }
  return r;
}

/** The command line running a flow.ts subcommand. */
export function flowCmd(sub: "serve" | "client", args: string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--no-config",
    "--no-lock",
    new URL(import.meta.url).pathname,
    sub,
    ...args,
  ];
}

/** The ports the flow server listens on and clients talk to. */
export const FLOW_PORTS = { udp: 3478, tcp: 8080 } as const;

/** Starts the flow server in `ns` (on FLOW_PORTS) and waits until it listens. */
export async function startFlowServer(
  t: Topology,
  ns: string,
  timeoutMs?: number,
): Promise<NsProcess> {
  const limit = timeoutMs === undefined ? [] : ["--timeout-ms", String(timeoutMs)];
  const server = t.spawn(
    ns,
    flowCmd("serve", [
      "--udp-port",
      String(FLOW_PORTS.udp),
      "--tcp-port",
      String(FLOW_PORTS.tcp),
      ...limit,
    ]),
  );
  await server.waitForStdout(/listening/);
  return server;
}

/** How a flow client runs. */
export interface FlowClientOptions {
  /** The local port of both flows. */
  fromPort: number;
  /** Between messages, ms. */
  intervalMs: number;
  /** The client exits after this long (flow.ts's default: 60 s). */
  timeoutMs?: number;
}

/**
 * Spawns a flow client in `ns` to the flow server at `dst` (both protocols, FLOW_PORTS); it
 * prints `ready` once both flows are answered.
 */
export function spawnFlowClient(
  t: Topology,
  ns: string,
  dst: string,
  o: FlowClientOptions,
): NsProcess {
  const host = dst.includes(":") ? `[${dst}]` : dst;
  const limit = o.timeoutMs === undefined ? [] : ["--timeout-ms", String(o.timeoutMs)];
  return t.spawn(
    ns,
    flowCmd("client", [
      "--udp",
      `${host}:${FLOW_PORTS.udp}`,
      "--tcp",
      `${host}:${FLOW_PORTS.tcp}`,
      "--from-port",
      String(o.fromPort),
      "--interval-ms",
      String(o.intervalMs),
      ...limit,
    ]),
  );
}

if (import.meta.main) {
  const [sub, ...rest] = Deno.args;
  const timeout = Number(arg(rest, "timeout-ms", "60000"));
  setTimeout(() => Deno.exit(0), timeout);
  if (sub === "serve") serve(rest);
  else if (sub === "client") client(rest);
  else throw new Error(`unknown subcommand ${sub}`);
}
