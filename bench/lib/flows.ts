/**
 * New-flow rate tools for the router benchmark. Run as
 * `deno run -A --unstable-net bench/lib/flows.ts SUBCOMMAND [options]`; every subcommand exits by
 * itself (hard limit `--timeout-ms`, default 60000).
 *
 * - `server --bind ADDR --tcp-port P --udp-port Q`: TCP: per connection reads one byte, answers
 *   one byte and closes (so the server side holds TIME_WAIT, never the client); UDP: echoes
 *   every datagram. Prints `listening` when ready.
 * - `tcp-conn --to IP:PORT --seconds S --concurrency C`: C workers each loop connect, send a
 *   byte, read the answer and the close, close. Prints one JSON line
 *   `{"ok":N,"fail":N,"seconds":S,"rate":R}` (completed connections per second).
 * - `udp-flows --to IP:PORT --bind ADDR --ports A-B --seconds S --concurrency C`: each flow
 *   binds the next source port of A-B (so every flow is a new 5-tuple and a new NAT mapping),
 *   sends one datagram, waits for the echo (`--reply-ms`, default 500), closes. Stops at S
 *   seconds or when the ports run out. Prints the same JSON (completed flows per second).
 * @module
 */

const enc = new TextEncoder();

function arg(name: string, def?: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  const v = i >= 0 ? Deno.args[i + 1] : def;
  if (v === undefined) throw new Error(`missing --${name}`);
  return v;
}

function hostPort(s: string): { hostname: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(s);
  if (!m) throw new Error(`bad IP:PORT ${s}`);
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** Resolves to the value, or to `undefined` after `ms` (the loser is not cancelled). */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((r) => t = setTimeout(() => r(undefined), ms)),
  ]).finally(() => clearTimeout(t));
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

async function server(): Promise<void> {
  const hostname = arg("bind");
  const tcp = Deno.listen({ hostname, port: Number(arg("tcp-port")) });
  const udp = Deno.listenDatagram({ hostname, port: Number(arg("udp-port")), transport: "udp" });
  console.log("listening");
  const serveTcp = async () => {
    for await (const c of tcp) {
      (async () => {
        const b = new Uint8Array(1);
        try {
          await within(c.read(b), 2000);
          await c.write(b);
        } catch { /* client gone */ }
        closeQuietly(c);
      })();
    }
  };
  const serveUdp = async () => {
    for await (const [data, from] of udp) {
      try {
        await udp.send(data, from);
      } catch { /* ignore */ }
    }
  };
  await Promise.all([serveTcp(), serveUdp()]);
}

interface Counts {
  ok: number;
  fail: number;
}

async function tcpConn(): Promise<void> {
  const to = hostPort(arg("to"));
  const seconds = Number(arg("seconds", "3"));
  const conc = Number(arg("concurrency", "16"));
  const n: Counts = { ok: 0, fail: 0 };
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const one = async (): Promise<boolean> => {
    const pending = Deno.connect(to);
    const c = await within(pending, 1000).catch(() => undefined);
    if (!c) {
      pending.then(closeQuietly, () => {});
      return false;
    }
    try {
      await c.write(enc.encode("x"));
      const b = new Uint8Array(1);
      const r = await within(c.read(b), 1000);
      if (r !== 1) return false;
      await within(c.read(b), 1000); // the server's close
      return true;
    } catch {
      return false;
    } finally {
      closeQuietly(c);
    }
  };
  const worker = async () => {
    while (performance.now() < until) (await one()) ? n.ok++ : n.fail++;
  };
  await Promise.all(Array.from({ length: conc }, worker));
  const s = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ ...n, seconds: s, rate: n.ok / s }));
}

async function udpFlows(): Promise<void> {
  const to = { ...hostPort(arg("to")), transport: "udp" as const };
  const bind = arg("bind");
  const [lo, hi] = arg("ports").split("-").map(Number);
  const seconds = Number(arg("seconds", "3"));
  const conc = Number(arg("concurrency", "16"));
  const replyMs = Number(arg("reply-ms", "500"));
  const n: Counts = { ok: 0, fail: 0 };
  let next = lo;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const one = async (port: number): Promise<boolean> => {
    let s: Deno.DatagramConn;
    try {
      s = Deno.listenDatagram({ hostname: bind, port, transport: "udp" });
    } catch {
      return false; // port busy
    }
    try {
      const pending = s.receive();
      pending.catch(() => {});
      await s.send(enc.encode("flow"), to);
      return (await within(pending, replyMs)) !== undefined;
    } catch {
      return false;
    } finally {
      closeQuietly(s);
    }
  };
  const worker = async () => {
    while (performance.now() < until && next <= hi) (await one(next++)) ? n.ok++ : n.fail++;
  };
  await Promise.all(Array.from({ length: conc }, worker));
  const s = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ ...n, seconds: s, rate: n.ok / s, lastPort: next - 1 }));
}

if (import.meta.main) {
  const hard = setTimeout(() => {
    console.error("flows: hard time limit reached");
    Deno.exit(3);
  }, Number(arg("timeout-ms", "60000")));
  Deno.unrefTimer(hard);
  const sub = Deno.args[0];
  try {
    if (sub === "server") await server();
    else if (sub === "tcp-conn") await tcpConn();
    else if (sub === "udp-flows") await udpFlows();
    else throw new Error("usage: flows.ts server|tcp-conn|udp-flows [--options]");
  } catch (e) {
    console.error(`flows: ${(e as Error).message}`);
    Deno.exit(2);
  }
  Deno.exit(0);
}
