/**
 * Opens one UDP flow per source port in one process, for namespace tests that need many
 * flows: `deno run -A --unstable-net tests/lib/udp_flows.ts --to IP:PORT --ports A-B
 * [--timeout-ms MS]`. Each socket (bound to 0.0.0.0:P or [::]:P) sends one datagram to the
 * target and waits for the reply; a `udp-echo` peer answers `seen ADDR:PORT`. Prints one line
 * per port, `P ok SEEN` or `P timeout`, in port order, and exits 0.
 * @module
 */
import { parseHostPort } from "./peer.ts";

function opt(name: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= Deno.args.length) throw new Error(`--${name} missing`);
  return Deno.args[i + 1];
}

async function flow(port: number, to: Deno.NetAddr, ms: number): Promise<string> {
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: to.hostname.includes(":") ? "::" : "0.0.0.0",
    port,
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await sock.send(new TextEncoder().encode(`flow ${port}`), to);
    const reply = await Promise.race([
      sock.receive().then(([b]) => new TextDecoder().decode(b).trim()),
      new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
    ]);
    const seen = reply?.match(/^seen (\S+)/)?.[1];
    return seen ? `${port} ok ${seen}` : `${port} timeout`;
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

if (import.meta.main) {
  const { host, port } = parseHostPort(opt("to"));
  const [a, b] = opt("ports").split("-").map(Number);
  const ms = Deno.args.includes("--timeout-ms") ? Number(opt("timeout-ms")) : 1500;
  const ports = Array.from({ length: b - a + 1 }, (_, i) => a + i);
  const lines = await Promise.all(
    ports.map((p) => flow(p, { transport: "udp", hostname: host, port }, ms)),
  );
  console.log(lines.join("\n"));
  Deno.exit(0);
}
