/**
 * Traffic patterns several namespace tests and the demo share.
 * @module
 */
import { nsExecResult, type NsProcess, peerCmd, type Topology } from "./netns.ts";
import { parseUdpReplies, type UdpReply } from "./peer.ts";

/** Starts a UDP echo on `port` in both servers and waits until both listen. */
export async function startUdpEchoes(
  t: Topology,
  port = 3478,
  timeoutMs = 20000,
): Promise<NsProcess[]> {
  const echoes = [t.ns.srv1, t.ns.srv2].map((ns) =>
    t.spawn(ns, peerCmd("udp-echo", ["--port", String(port), "--timeout-ms", String(timeoutMs)]))
  );
  for (const e of echoes) await e.waitForStdout(/listening/);
  return echoes;
}

/**
 * From `ns`, sends UDP from one source port to each of `tos` and then keeps
 * answering what arrives on that port for `lingerMs` (for EIF checks).
 * Resolves once every destination answered, with the client and its replies.
 */
export async function udpToEach(
  t: Topology,
  ns: string,
  tos: string[],
  fromPort: number,
  lingerMs = 6000,
): Promise<{ client: NsProcess; replies: UdpReply[] }> {
  const client = t.spawn(
    ns,
    peerCmd("udp-send", [
      ...tos.flatMap((to) => ["--to", to]),
      "--from-port",
      String(fromPort),
      "--linger-ms",
      String(lingerMs),
      "--timeout-ms",
      String(lingerMs + 9000),
    ]),
  );
  const all = new RegExp(Array(tos.length).fill("seen .* from ").join(".*\\n.*"), "s");
  await client.waitForStdout(all, 10000);
  return { client, replies: parseUdpReplies(client.stdoutText()) };
}

/** What a traceroute run printed: its exit code, output, and one line per hop. */
export interface Trace {
  code: number;
  stdout: string;
  stderr: string;
  hops: string[];
}

/**
 * `traceroute -n -q 1 -w 1` from namespace `ns` to `dst` (`fam` "-4" or "-6"), UDP or with
 * `icmp` ICMP echo, at most `maxHops` hops.
 */
export async function traceroute(
  ns: string,
  fam: "-4" | "-6",
  dst: string,
  o: { icmp?: boolean; maxHops?: number } = {},
): Promise<Trace> {
  const r = await nsExecResult(ns, [
    "traceroute",
    fam,
    ...(o.icmp ? ["-I"] : []),
    "-n",
    "-q",
    "1",
    "-w",
    "1",
    "-m",
    String(o.maxHops ?? 4),
    dst,
  ]);
  return { ...r, hops: r.stdout.trim().split("\n").slice(1) };
}
