/**
 * Small traffic tools for namespace tests, one subcommand each. Run as
 * `deno run -A --unstable-net --no-config tests/lib/peer.ts SUBCOMMAND [options]`
 * (`Deno.listenDatagram` needs `--unstable-net`; `peerCmd` in netns.ts builds that line).
 * Every tool exits by itself after `--timeout-ms` (default 5000).
 *
 * - `udp-echo --port P [--bind ADDR]... [--count N]`: binds one socket per `--bind` (default:
 *   every non-link-local address of the namespace, so replies leave from the address that was
 *   asked), prints `listening udp ADDR:PORT ...`, then for each datagram prints and replies the
 *   line `seen SRCIP:SRCPORT` (IPv6 as `[ip]:port`, IPv4-mapped sources shown as plain IPv4).
 *   Exits 0 after N datagrams in total or at the timeout.
 * - `udp-send --to IP:PORT [--to ...] [--from-port P] [--bind ADDR] [--count N]
 *   [--payload TEXT] [--reply-timeout-ms MS] [--linger-ms MS]`: prints `local ADDR:PORT`, sends
 *   N datagrams to each `--to` in turn from one socket, and after each prints the reply as
 *   `REPLYTEXT from IP:PORT` or `timeout TO`. With `--linger-ms` it then acts as udp-echo on
 *   the same socket for that long. Exits 0 when every datagram got a reply, else 3.
 * - `tcp-echo --port P [--bind ADDR] [--count N]`: prints `listening tcp ADDR:PORT`; per
 *   connection prints `seen IP:PORT`, sends that line to the client, then echoes the stream.
 *   Exits 0 after N connections or at the timeout.
 * - `tcp-send --to IP:PORT [--from-port P] [--bind ADDR] [--data TEXT]`: connects, prints
 *   `local ADDR:PORT`, sends the data, half-closes, prints every line received, exits 0 (3 on
 *   error or timeout).
 * - `raw-send --packet HEX [--packet HEX]... [--gap-ms MS]`: sends each whole IPv4/IPv6 packet
 *   (header included, e.g. hand-made fragments in a chosen order) through a raw socket, in
 *   order, and prints `sent N`. Exits 0, or 3 when a send fails.
 * - `raw-echo --proto N [--count N]`: an IPv4 raw socket of IP protocol N (GRE is 47): prints
 *   `seen SRCIP` for each packet and sends its payload back to that address. Exits 0 after N
 *   packets or at the timeout.
 * - `raw-ping --proto N --to IP [--reply-timeout-ms MS]`: sends one packet of protocol N to IP
 *   through an IPv4 raw socket and prints `reply from IP` when one of that protocol comes back
 *   from it, else `timeout`. Exits 0 on a reply, else 3.
 * @module
 */

import net from "node:net";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Formats an address as `ip:port` / `[ip6]:port`; IPv4-mapped IPv6 becomes plain IPv4. */
export function formatHostPort(host: string, port: number): string {
  const h = host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/** Splits `ip:port` or `[ip6]:port`. */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`bad host:port: ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

/** One reply line printed by `udp-send`. */
export interface UdpReply {
  /** What the server said it saw, e.g. "203.0.113.1:40000" (the mapped source). */
  seen: string;
  /** Where the reply came from, as seen by the client. */
  from: string;
}

/** Extracts `seen X from Y` lines from udp-send output. */
export function parseUdpReplies(stdout: string): UdpReply[] {
  const out: UdpReply[] = [];
  for (const line of stdout.split("\n")) {
    const m = /^seen (\S+) from (\S+)$/.exec(line.trim());
    if (m) out.push({ seen: m[1], from: m[2] });
  }
  return out;
}

/** Extracts the `seen X` lines printed by udp-echo / tcp-echo / tcp-send. */
export function parseSeen(stdout: string): string[] {
  return stdout.split("\n").map((l) => /^seen (\S+)/.exec(l.trim())?.[1]).filter((x) =>
    x !== undefined
  );
}

type Args = Map<string, string[]>;

function parseArgs(argv: string[]): Args {
  const m: Args = new Map();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    const [k, v] = eq > 0 ? [a.slice(2, eq), a.slice(eq + 1)] : [a.slice(2), argv[++i]];
    if (v === undefined) throw new Error(`missing value for ${a}`);
    m.set(k, [...(m.get(k) ?? []), v]);
  }
  return m;
}

function opt(a: Args, k: string): string | undefined {
  const v = a.get(k);
  return v?.[v.length - 1];
}

function num(a: Args, k: string, def: number): number {
  const v = opt(a, k);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${k}: not a number: ${v}`);
  return n;
}

function say(line: string): void {
  Deno.stdout.writeSync(enc.encode(line + "\n"));
}

function armTimeout(a: Args, code: number): void {
  const ms = num(a, "timeout-ms", 5000);
  const t = setTimeout(() => {
    say("exit timeout");
    Deno.exit(code);
  }, ms);
  Deno.unrefTimer(t);
}

/** Races `p` against a timer; undefined on timeout. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

function bindFor(host: string | undefined): string {
  return host && !host.includes(":") ? "0.0.0.0" : "::";
}

/** Shared state of echo loops running on several sockets. */
interface EchoState {
  n: number;
  count: number;
  untilMs: number;
  /** Called when `count` is reached. */
  onDone?: () => void;
}

async function echoLoop(
  sock: Deno.DatagramConn,
  st: EchoState,
  pending: Promise<[Uint8Array, Deno.Addr]> = sock.receive(),
): Promise<void> {
  while (st.n < st.count && Date.now() < st.untilMs) {
    const r = await within(pending, Math.max(1, st.untilMs - Date.now()));
    if (!r || st.n >= st.count) break;
    pending = sock.receive();
    const addr = r[1] as Deno.NetAddr;
    const line = `seen ${formatHostPort(addr.hostname, addr.port)}`;
    say(line);
    await sock.send(enc.encode(line + "\n"), addr);
    if (++st.n >= st.count) st.onDone?.();
  }
}

/**
 * Local addresses to bind one UDP socket each, so that replies leave from the address the
 * request was sent to (a wildcard socket would answer from the primary address).
 */
function localAddrs(): string[] {
  return Deno.networkInterfaces().map((i) => i.address).filter((a) =>
    !/^fe[89ab]/i.test(a) && !a.includes("%")
  );
}

async function udpEcho(a: Args): Promise<number> {
  armTimeout(a, 0);
  const port = num(a, "port", 0);
  const binds = a.get("bind") ?? localAddrs();
  const socks = binds.map((hostname) => Deno.listenDatagram({ hostname, port, transport: "udp" }));
  say(`listening udp ${
    socks.map((s) => {
      const la = s.addr as Deno.NetAddr;
      return formatHostPort(la.hostname, la.port);
    }).join(" ")
  }`);
  const st: EchoState = {
    n: 0,
    count: num(a, "count", Infinity),
    untilMs: Date.now() + num(a, "timeout-ms", 5000),
  };
  const done = new Promise<void>((r) => st.onDone = r);
  await Promise.race([done, Promise.all(socks.map((s) => echoLoop(s, st)))]);
  return 0;
}

async function udpSend(a: Args): Promise<number> {
  armTimeout(a, 3);
  const tos = (a.get("to") ?? []).map(parseHostPort);
  if (tos.length === 0) throw new Error("udp-send needs --to");
  const sock = Deno.listenDatagram({
    hostname: opt(a, "bind") ?? bindFor(tos[0].host),
    port: num(a, "from-port", 0),
    transport: "udp",
  });
  const la = sock.addr as Deno.NetAddr;
  say(`local ${formatHostPort(la.hostname, la.port)}`);
  const count = num(a, "count", 1);
  const replyMs = num(a, "reply-timeout-ms", 1000);
  let missing = 0;
  let pending = sock.receive();
  for (const to of tos) {
    for (let i = 0; i < count; i++) {
      const text = opt(a, "payload") ?? `ping ${i}`;
      await sock.send(enc.encode(text), { transport: "udp", hostname: to.host, port: to.port });
      const r = await within(pending, replyMs);
      if (!r) {
        say(`timeout ${formatHostPort(to.host, to.port)}`);
        missing++;
        continue;
      }
      pending = sock.receive();
      const from = r[1] as Deno.NetAddr;
      const body = dec.decode(r[0]).trim() || "(empty)";
      say(`${body} from ${formatHostPort(from.hostname, from.port)}`);
    }
  }
  const linger = num(a, "linger-ms", 0);
  if (linger > 0) {
    await echoLoop(sock, { n: 0, count: Infinity, untilMs: Date.now() + linger }, pending);
  }
  return missing === 0 ? 0 : 3;
}

async function tcpEcho(a: Args): Promise<number> {
  armTimeout(a, 0);
  const l = Deno.listen({ hostname: opt(a, "bind") ?? "::", port: num(a, "port", 0) });
  const la = l.addr as Deno.NetAddr;
  say(`listening tcp ${formatHostPort(la.hostname, la.port)}`);
  const count = num(a, "count", Infinity);
  const until = Date.now() + num(a, "timeout-ms", 5000);
  const conns: Promise<void>[] = [];
  for (let n = 0; n < count && Date.now() < until; n++) {
    const c = await within(l.accept(), Math.max(1, until - Date.now()));
    if (!c) break;
    conns.push((async () => {
      const ra = c.remoteAddr as Deno.NetAddr;
      const line = `seen ${formatHostPort(ra.hostname, ra.port)}`;
      say(line);
      try {
        await c.write(enc.encode(line + "\n"));
        const buf = new Uint8Array(4096);
        for (let i = 0; i < 100000; i++) {
          const k = await c.read(buf);
          if (k === null) break;
          await c.write(buf.subarray(0, k));
        }
      } catch (e) {
        say(`error ${(e as Error).message}`);
      } finally {
        try {
          c.close();
        } catch { /* already closed */ }
      }
    })());
  }
  await within(Promise.all(conns), Math.max(1, until - Date.now()));
  return 0;
}

function tcpSend(a: Args): Promise<number> {
  armTimeout(a, 3);
  const to = parseHostPort(opt(a, "to") ?? "");
  const fromPort = num(a, "from-port", 0);
  return new Promise((resolve) => {
    const s = net.connect({
      host: to.host,
      port: to.port,
      ...(fromPort ? { localPort: fromPort } : {}),
      ...(opt(a, "bind") ? { localAddress: opt(a, "bind") } : {}),
    });
    let text = "";
    s.on("connect", () => {
      say(`local ${formatHostPort(s.localAddress ?? "?", s.localPort ?? 0)}`);
      s.end(opt(a, "data") ?? "hello\n");
    });
    s.on("data", (d: Uint8Array) => {
      text += dec.decode(d, { stream: true });
      const lines = text.split("\n");
      text = lines.pop() ?? "";
      for (const line of lines) say(line);
    });
    s.on("error", (e: Error) => {
      say(`error ${e.message}`);
      resolve(3);
    });
    s.on("close", () => {
      if (text) say(text);
      resolve(0);
    });
  });
}

/** Raw IP sockets through libc: Deno has none. IPPROTO_RAW means "header included". */
async function rawSend(a: Args): Promise<number> {
  const libc = Deno.dlopen("libc.so.6", {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    sendto: {
      parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
      result: "isize",
    },
    close: { parameters: ["i32"], result: "i32" },
  });
  const packets = (a.get("packet") ?? []).map((h) =>
    new Uint8Array(h.match(/../g)!.map((x) => parseInt(x, 16)))
  );
  const gap = num(a, "gap-ms", 20);
  let sent = 0;
  try {
    for (const pkt of packets) {
      const v6 = pkt[0] >> 4 === 6;
      const fd = libc.symbols.socket(v6 ? 10 : 2, 3, 255); // AF_INET(6), SOCK_RAW, IPPROTO_RAW
      if (fd < 0) throw new Error("raw socket");
      const sa = new Uint8Array(v6 ? 28 : 16);
      sa[0] = v6 ? 10 : 2; // sa_family, little-endian u16
      if (v6) sa.set(pkt.subarray(24, 40), 8);
      else sa.set(pkt.subarray(16, 20), 4);
      const r = libc.symbols.sendto(fd, pkt, BigInt(pkt.length), 0, sa, sa.length);
      libc.symbols.close(fd);
      if (Number(r) !== pkt.length) {
        say(`send failed after ${sent}`);
        return 3;
      }
      sent++;
      await new Promise((r) => setTimeout(r, gap));
    }
  } finally {
    libc.close();
  }
  say(`sent ${sent}`);
  return 0;
}

/** IPv4 raw sockets of one IP protocol through libc (the kernel adds the IP header). */
function rawProto(proto: number, timeoutMs: number) {
  const libc = Deno.dlopen("libc.so.6", {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
    sendto: {
      parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
      result: "isize",
    },
    recvfrom: {
      parameters: ["i32", "buffer", "usize", "i32", "pointer", "pointer"],
      result: "isize",
    },
    close: { parameters: ["i32"], result: "i32" },
  });
  const fd = libc.symbols.socket(2, 3, proto); // AF_INET, SOCK_RAW
  if (fd < 0) throw new Error(`raw socket of protocol ${proto}`);
  const tv = new BigInt64Array([
    BigInt(Math.floor(timeoutMs / 1000)),
    BigInt((timeoutMs % 1000) * 1000),
  ]);
  libc.symbols.setsockopt(fd, 1, 20, new Uint8Array(tv.buffer), 16); // SOL_SOCKET, SO_RCVTIMEO
  const sockaddr = (ip: string) => {
    const sa = new Uint8Array(16);
    sa[0] = 2;
    sa.set(ip.split(".").map(Number), 4);
    return sa;
  };
  const buf = new Uint8Array(2048);
  return {
    send: (to: string, payload: Uint8Array) =>
      Number(libc.symbols.sendto(fd, payload, BigInt(payload.length), 0, sockaddr(to), 16)),
    /** The next packet: its source and payload (after the IP header); null at the timeout. */
    recv: (): { from: string; payload: Uint8Array } | null => {
      const n = Number(libc.symbols.recvfrom(fd, buf, BigInt(buf.length), 0, null, null));
      if (n <= 0) return null;
      const ihl = (buf[0] & 15) * 4;
      return { from: [...buf.subarray(12, 16)].join("."), payload: buf.slice(ihl, n) };
    },
    close: () => {
      libc.symbols.close(fd);
      libc.close();
    },
  };
}

function rawEcho(a: Args): number {
  const count = num(a, "count", Infinity);
  const end = Date.now() + num(a, "timeout-ms", 5000);
  const s = rawProto(num(a, "proto", 47), 200);
  say(`listening raw ${num(a, "proto", 47)}`);
  let n = 0;
  try {
    while (n < count && Date.now() < end) {
      const p = s.recv();
      if (!p) continue;
      say(`seen ${p.from}`);
      s.send(p.from, p.payload);
      n++;
    }
  } finally {
    s.close();
  }
  return 0;
}

function rawPing(a: Args): number {
  const to = opt(a, "to");
  if (!to) throw new Error("--to is required");
  const end = Date.now() + num(a, "reply-timeout-ms", 2000);
  const s = rawProto(num(a, "proto", 47), 200);
  try {
    s.send(to, enc.encode("einat raw probe"));
    while (Date.now() < end) {
      const p = s.recv();
      if (p && p.from === to) {
        say(`reply from ${p.from}`);
        return 0;
      }
    }
    say("timeout");
    return 3;
  } finally {
    s.close();
  }
}

/** Runs one subcommand; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const a = parseArgs(rest);
  switch (sub) {
    case "udp-echo":
      return await udpEcho(a);
    case "udp-send":
      return await udpSend(a);
    case "tcp-echo":
      return await tcpEcho(a);
    case "tcp-send":
      return await tcpSend(a);
    case "raw-send":
      return await rawSend(a);
    case "raw-echo":
      return rawEcho(a);
    case "raw-ping":
      return rawPing(a);
    default:
      console.error(
        "usage: peer.ts udp-echo|udp-send|tcp-echo|tcp-send|raw-send|raw-echo|raw-ping [--options]",
      );
      return 2;
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    console.error(`peer: ${(e as Error).message}`);
    code = 2;
  }
  Deno.exit(code);
}
