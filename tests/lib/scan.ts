/**
 * A port scanner for namespace tests (run with `deno run -A --unstable-net`):
 *
 * - `udp --to ADDR --ports A-B [--bind ADDR]`: one datagram to every port, from one socket,
 *   paced; prints `sent N`.
 * - `tcp --to ADDR --ports A-B [--bind ADDR] [--concurrency N] [--timeout-ms MS]`: a connect
 *   attempt to every port; prints `PORT open` or `PORT refused` for the ports that answered
 *   and then `summary open=N refused=N timeout=N error=N`. A port whose SYN is dropped times
 *   out.
 * @module
 */
import net from "node:net";

function opt(name: string, dflt?: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < Deno.args.length) return Deno.args[i + 1];
  if (dflt === undefined) throw new Error(`--${name} missing`);
  return dflt;
}

function ports(): number[] {
  const [a, b] = opt("ports").split("-").map(Number);
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

async function udp(): Promise<void> {
  const to = opt("to");
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: opt("bind", to.includes(":") ? "::" : "0.0.0.0"),
    port: 0,
  });
  const data = new TextEncoder().encode("scan");
  let n = 0;
  for (const port of ports()) {
    await sock.send(data, { transport: "udp", hostname: to, port });
    if (++n % 200 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  sock.close();
  console.log(`sent ${n}`);
}

function probe(host: string, port: number, bind: string | undefined, ms: number) {
  return new Promise<"open" | "refused" | "timeout" | "error">((resolve) => {
    const s = net.connect({ host, port, localAddress: bind });
    const done = (r: "open" | "refused" | "timeout" | "error") => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done("timeout"), ms);
    s.once("connect", () => done("open"));
    s.once(
      "error",
      (e: NodeJS.ErrnoException) => done(e.code === "ECONNREFUSED" ? "refused" : "error"),
    );
  });
}

async function tcp(): Promise<void> {
  const to = opt("to");
  const bind = Deno.args.includes("--bind") ? opt("bind") : undefined;
  const conc = Number(opt("concurrency", "500"));
  const ms = Number(opt("timeout-ms", "400"));
  const all = ports();
  const count = { open: 0, refused: 0, timeout: 0, error: 0 };
  for (let i = 0; i < all.length; i += conc) {
    const chunk = all.slice(i, i + conc);
    const res = await Promise.all(chunk.map((p) => probe(to, p, bind, ms)));
    res.forEach((r, j) => {
      count[r]++;
      if (r === "open" || r === "refused") console.log(`${chunk[j]} ${r}`);
    });
  }
  console.log(
    `summary open=${count.open} refused=${count.refused} timeout=${count.timeout} error=${count.error}`,
  );
}

if (import.meta.main) {
  if (Deno.args[0] === "udp") await udp();
  else if (Deno.args[0] === "tcp") await tcp();
  else throw new Error("usage: scan.ts udp|tcp --to ADDR --ports A-B");
  Deno.exit(0);
}
