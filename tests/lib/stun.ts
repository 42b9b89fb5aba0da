/**
 * NAT behaviour discovery with third-party tools: coturn's `turnserver` as an RFC 5780 STUN
 * server (two addresses, alternate port) and two clients, coturn's `turnutils_natdiscovery`
 * (RFC 5780 mapping, filtering and hairpinning tests) and the classic RFC 3489 `stun` client
 * (Debian's stun-client), whose one-line summary names mapping, filtering and hairpinning.
 * @module
 */
import { nsExecResult, type NsProcess, spawnInNs } from "./netns.ts";

/** What `turnutils_natdiscovery` concluded; a field is absent when its test did not conclude. */
export interface Discovery {
  /** "Endpoint Independent", "Address Dependent", "Address and Port Dependent" or "No NAT". */
  mapping?: string;
  /** As `mapping`, for the filtering test. */
  filtering?: string;
  /** The hairpinning test received its own request back through the NAT. */
  hairpin: boolean;
  /** The tool's whole output. */
  out: string;
}

/**
 * Starts coturn as a STUN-only server on `addrs` (two addresses of one family make it answer
 * RFC 5780 CHANGE-REQUESTs; more families may follow) at `port`, and waits until every address
 * listens on the alternate port (`port` + 1). `-c /dev/null`: Debian's /etc/turnserver.conf
 * turns RFC 5780 off.
 */
export async function startStunServer(
  ns: string,
  addrs: string[],
  port = 3478,
): Promise<NsProcess> {
  const p = spawnInNs(ns, [
    "turnserver",
    "-c",
    "/dev/null",
    "-p",
    String(port),
    ...addrs.flatMap((a) => ["-L", a]),
    "--stun-only",
    "--no-tls",
    "--no-dtls",
    "--no-cli",
    "--no-stdout-log",
  ], { killAfterMs: 120_000 });
  const alt = port + 1;
  const want = addrs.map((a) => (a.includes(":") ? `[${a}]:${alt}` : `${a}:${alt}`));
  for (let i = 0; i < 100; i++) {
    const ss = await nsExecResult(ns, ["ss", "-Hlun"]);
    if (want.every((w) => ss.stdout.includes(w))) return p;
    if (!p.running()) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  p.kill("SIGKILL");
  throw new Error(`turnserver did not listen on ${want.join(", ")}:\n${p.stderrText()}`);
}

/** Parses `turnutils_natdiscovery` output. */
export function parseDiscovery(out: string): Discovery {
  const verdict = (kind: string) => {
    const m = out.match(new RegExp(`NAT with ([A-Za-z ]+?) ${kind}!`));
    if (m) return m[1];
    return /No NAT!/.test(out) ? "No NAT" : undefined;
  };
  return {
    mapping: verdict("Mapping"),
    filtering: verdict("Filtering"),
    hairpin: /Received a request \(maybe a successful hairpinning\)/.test(out),
    out,
  };
}

/**
 * Runs `turnutils_natdiscovery` in `ns` against `server` at `port`: the mapping and filtering
 * tests, then unless `hairpin` is false the hairpinning test (a separate run: the tool does one
 * or the other).
 */
export async function natDiscovery(
  ns: string,
  server: string,
  { hairpin = true, port = 3478 }: { hairpin?: boolean; port?: number } = {},
): Promise<Discovery> {
  const tool = ["turnutils_natdiscovery", "-p", String(port)];
  const mf = await nsExecResult(ns, [...tool, "-m", "-f", server], { timeoutMs: 30000 });
  const d = parseDiscovery(mf.stdout + mf.stderr);
  if (!hairpin) return d;
  const h = await nsExecResult(ns, [...tool, "-H", server], {
    timeoutMs: 30000,
  });
  return { ...d, hairpin: parseDiscovery(h.stdout + h.stderr).hairpin, out: d.out + h.stdout };
}

/**
 * Runs the classic `stun` client in `ns` against `server` (IPv4 only) and returns its summary,
 * e.g. "Independent Mapping, Independent Filter, random port, will hairpin".
 */
export async function classicStun(ns: string, server: string): Promise<string> {
  const r = await nsExecResult(ns, ["stun", server], { timeoutMs: 30000 });
  const m = (r.stdout + r.stderr).match(/Primary: (.*)/);
  if (!m) throw new Error(`stun printed no summary:\n${r.stdout}${r.stderr}`);
  return m[1].trim();
}
