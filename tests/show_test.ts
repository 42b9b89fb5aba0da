/**
 * Observability in network namespaces: `einat show` against known flows
 * (JSON parsed and compared, filters, text, `--stats`), the Prometheus
 * endpoint scraped with curl and parsed, and `--flush`.
 */
import { parseProm } from "./lib/prom.ts";
import { assert, assertEquals } from "./lib/assert.ts";
import { pinDirIn, withSharedBpffs } from "./lib/bpffs.ts";
import { einatCmd, startEinat, stopEinat } from "./lib/einat.ts";
import { parseFlow, spawnFlowClient, startFlowServer } from "./lib/flow.ts";
import { nsExec, nsExecResult, type NsProcess, peerCmd, withTopology } from "./lib/netns.ts";
import type { BindingRow, SessionRow } from "../lib/state/read.ts";
import type { HostRow } from "../lib/state/show.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

type Row = Record<string, unknown>;
const pick = (r: Row, keys: string[]) => Object.fromEntries(keys.map((k) => [k, r[k]]));
const SKEYS = ["protocol", "internal", "external", "remote", "state", "timeout"];
const sortRows = (rows: Row[]) =>
  rows.map((r) => JSON.stringify(r)).sort().map((s) => JSON.parse(s));

Deno.test({
  name:
    "show: bindings and sessions of known flows (JSON, filters, text), --stats, metrics, --flush",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      await withSharedBpffs(t.ns.router, async (bpffs) => {
        const pin = `${bpffs}/einat`;
        let einat: NsProcess | null = await startEinat(t.ns.router, [
          "-i",
          "wan0",
          "--pin-dir",
          pin,
          "--metrics",
          "127.0.0.1:9482",
        ]);
        const show = async (...args: string[]) => {
          const r = await nsExecResult(t.ns.router, einatCmd(["show", "--pin-dir", pin, ...args]));
          return r;
        };
        const showJson = async (...args: string[]) => {
          const r = await show("--json", ...args);
          assertEquals(r.code, 0, r.stderr);
          return JSON.parse(r.stdout) as {
            sessions: SessionRow[];
            bindings: BindingRow[];
            missing: string[];
          };
        };
        try {
          await startFlowServer(t, t.ns.srv1, 30000);
          // lan1:40000: a UDP flow with answers and an established TCP connection.
          const client = spawnFlowClient(t, t.ns.lan1, a.srv1[0], {
            fromPort: 40000,
            intervalMs: 500,
            timeoutMs: 30000,
          });
          await client.waitForStdout(/ready/, 10000);
          const f = parseFlow(client.stdoutText());
          const udp1 = [...f.udp.values()][0], tcp1 = [...f.tcp.values()][0];
          // lan2:40000 with an answer; lan2:40001 one way (nothing listens on port 9).
          const lan2 = await nsExecResult(
            t.ns.lan2,
            peerCmd("udp-send", ["--to", `${a.srv1[0]}:3478`, "--from-port", "40000"]),
          );
          assertEquals(lan2.code, 0, lan2.stdout + lan2.stderr);
          const udp2 = lan2.stdout.match(/seen (\S+) ping/)![1];
          await nsExecResult(
            t.ns.lan2,
            peerCmd("udp-send", [
              "--to",
              `${a.srv2[0]}:9`,
              "--from-port",
              "40001",
              "--reply-timeout-ms",
              "200",
            ]),
          );
          const ping = await nsExecResult(t.ns.lan1, ["ping", "-c", "1", "-W", "2", a.srv1[0]]);
          assertEquals(ping.code, 0, ping.stdout);

          const all = await showJson();
          const ext = /^203\.0\.113\.1:\d+$/;
          for (const s of all.sessions) assert(ext.test(s.external), s.external);
          const icmp = all.sessions.find((s) => s.protocol === "icmp")!;
          assert(icmp, JSON.stringify(all.sessions));
          const e4 = all.sessions.find((s) => s.internal === "192.0.2.20:40001")?.external;
          assertEquals(
            sortRows(all.sessions.map((s) => pick(s as unknown as Row, SKEYS))),
            sortRows([
              {
                protocol: "udp",
                internal: "192.0.2.10:40000",
                external: udp1,
                remote: `${a.srv1[0]}:3478`,
                state: "ASSURED",
                timeout: "established",
              },
              {
                protocol: "tcp",
                internal: "192.0.2.10:40000",
                external: tcp1,
                remote: `${a.srv1[0]}:8080`,
                state: "ESTABLISHED",
                timeout: "established",
              },
              {
                protocol: "udp",
                internal: "192.0.2.20:40000",
                external: udp2,
                remote: `${a.srv1[0]}:3478`,
                state: "ASSURED",
                timeout: "established",
              },
              {
                protocol: "udp",
                internal: "192.0.2.20:40001",
                external: e4,
                remote: `${a.srv2[0]}:9`,
                state: "UNREPLIED",
                timeout: "transitory",
              },
              {
                protocol: "icmp",
                internal: icmp.internal,
                external: icmp.external,
                remote: `${a.srv1[0]}:0`,
                state: "ASSURED",
                timeout: "established",
              },
            ]),
          );
          const leftOf = (internal: string, proto: string) =>
            all.sessions.find((s) => s.internal === internal && s.protocol === proto)!
              .secondsLeft!;
          const within = (v: number, lo: number, hi: number, what: string) =>
            assert(v >= lo && v <= hi, `${what}: ${v} not in ${lo}..${hi}`);
          within(leftOf("192.0.2.10:40000", "udp"), 280, 300, "udp established");
          within(leftOf("192.0.2.10:40000", "tcp"), 7420, 7440, "tcp established");
          within(leftOf("192.0.2.20:40001", "udp"), 100, 120, "udp one way");
          within(icmp.secondsLeft!, 40, 60, "icmp");
          assertEquals(
            sortRows(all.bindings.map((b) => pick(b as unknown as Row, ["protocol", "internal"]))),
            sortRows([
              { protocol: "udp", internal: "192.0.2.10:40000" },
              { protocol: "tcp", internal: "192.0.2.10:40000" },
              { protocol: "udp", internal: "192.0.2.20:40000" },
              { protocol: "udp", internal: "192.0.2.20:40001" },
              { protocol: "icmp", internal: icmp.internal },
            ]),
          );
          for (const b of all.bindings) assertEquals(b.sessions, 1, JSON.stringify(b));

          // Per internal address: who holds how much, most sessions first.
          const hosts = async (...args: string[]) => {
            const r = await show("--json", "--hosts", ...args);
            assertEquals(r.code, 0, r.stderr);
            return (JSON.parse(r.stdout) as { hosts: HostRow[] }).hosts;
          };
          const row = (address: string, tcp: number, udp: number, icmp: number) => ({
            interface: "wan0",
            address,
            bindings: tcp + udp + icmp,
            tcp,
            udp,
            icmp,
            sessions: tcp + udp + icmp,
            addressOnly: 0,
          });
          assertEquals(await hosts(), [row(a.lan1, 1, 1, 1), row(a.lan2, 0, 2, 0)]);
          assertEquals(await hosts("--top", "1"), [row(a.lan1, 1, 1, 1)]);
          assertEquals(await hosts("--proto", "udp"), [row(a.lan2, 0, 2, 0), row(a.lan1, 0, 1, 0)]);
          const hostText = await show("--hosts");
          assert(
            hostText.stdout.includes(
              "2 internal addresses: 5 sessions, 5 bindings, 0 address-only",
            ),
            hostText.stdout,
          );

          // Filters.
          const tcpOnly = await showJson("--proto", "tcp");
          assertEquals(tcpOnly.sessions.map((s) => s.external), [tcp1]);
          assertEquals(tcpOnly.bindings.map((b) => b.external), [tcp1]);
          const port = await showJson("--port", "40001");
          assertEquals(port.sessions.map((s) => s.internal), ["192.0.2.20:40001"]);
          assertEquals(port.bindings.map((b) => b.internal), ["192.0.2.20:40001"]);
          const remote = await showJson("--addr", a.srv2[0]);
          assertEquals(remote.sessions.map((s) => s.internal), ["192.0.2.20:40001"]);
          assertEquals(remote.bindings, []);
          const lan1 = await showJson("--addr", a.lan1, "-i", "wan0");
          assertEquals(lan1.sessions.length, 3);
          // A network: every address in it (the LAN's two hosts).
          const lan = await showJson("--addr", "192.0.2.0/25");
          assertEquals(lan.sessions.length, 5);
          assertEquals((await showJson("--addr", "192.0.2.128/25")).sessions, []);
          const none = await show("--json", "-i", "nosuch0");
          assertEquals(none.code, 1);
          assertEquals(JSON.parse(none.stdout).missing, ["nosuch0"]);
          const text = await show();
          assertEquals(text.code, 0, text.stderr);
          assert(/^IF\s+PROTO\s+INTERNAL\s+EXTERNAL\s+REMOTE\s+STATE\s+LEFT/m.test(text.stdout));
          assert(text.stdout.includes(`192.0.2.10:40000  ${tcp1}`), text.stdout);
          assert(/5 sessions, 5 bindings/.test(text.stdout), text.stdout);
          assert(text.stdout.includes(`wan0: served by einat (pid ${einat!.pid})`), text.stdout);

          // Counters.
          const st = await show("--stats", "--json");
          assertEquals(st.code, 0, st.stderr);
          const c = JSON.parse(st.stdout).counters[0];
          assertEquals(c.interface, "wan0");
          assertEquals(c.events.new_binding, 5);
          assertEquals(c.events.new_session, 5);
          const eg4 = c.traffic.find((x: Row) => x.direction === "egress" && x.family === 4);
          assert(eg4.packets >= 6 && eg4.bytes >= eg4.packets * 28, JSON.stringify(c.traffic));

          // Metrics, scraped with curl inside the router; bound to 127.0.0.1 only.
          const scrape = await nsExec(t.ns.router, [
            "curl",
            "-sS",
            "-D",
            "-",
            "http://127.0.0.1:9482/metrics",
          ]);
          const [head, body] = scrape.split("\r\n\r\n");
          assert(/content-type: text\/plain; version=0\.0\.4/i.test(head), head);
          const m = parseProm(body);
          const w = 'interface="wan0"';
          assertEquals(m.get(`einat_bindings{${w},family="ipv4",protocol="udp"}`), 3);
          assertEquals(m.get(`einat_bindings{${w},family="ipv4",protocol="tcp"}`), 1);
          assertEquals(m.get(`einat_sessions{${w},family="ipv4",protocol="icmp"}`), 1);
          assertEquals(m.get(`einat_sessions_expired{${w}}`), 0);
          assertEquals(m.get(`einat_reload_pending{${w}}`), 0, "no reload waits");
          // Few sessions: every 6 s (a tenth of the shortest default timeout, ICMP's 60 s),
          // unless the last walk took over 120 ms (a loaded machine).
          const took = m.get("einat_sweep_duration_seconds") ?? 0;
          const paced = Math.min(30, Math.max(6, took * 50));
          const interval = m.get("einat_sweep_interval_seconds") ?? -1;
          assert(
            Math.abs(interval - paced) <= 0.002,
            `sweep paced at 50x its duration (${took} s), between 6 and 30 s: ${interval}`,
          );
          assert((m.get("einat_sweeps_total") ?? -1) >= 0, "the sweep's figures are exported");
          const piece = m.get("einat_sweep_longest_piece_seconds") ?? -1;
          assert(piece >= 0 && piece <= took, `the longest piece ${piece} s within the sweep`);
          assertEquals(m.get(`einat_events_total{${w},event="new_binding"}`), 5);
          assertEquals(m.get(`einat_drops_total{${w},reason="no_port"}`), 0);
          assertEquals(
            m.get(`einat_ports_capacity{${w},external="203.0.113.1",protocol="udp"}`),
            10000,
          );
          assertEquals(m.get(`einat_ports_used{${w},external="203.0.113.1",protocol="udp"}`), 3);
          assertEquals(m.get(`einat_map_entries{${w},map="map_records"}`), 5, "live bindings");
          assertEquals(
            m.get(`einat_map_capacity{${w},map="map_records"}`),
            65536 * 3,
            "against binding_max_records, not the records of every slot",
          );
          assert((m.get(`einat_map_capacity{${w},map="map_ct"}`) ?? 0) > 0);
          assert(
            (m.get(`einat_translated_packets_total{${w},direction="ingress",family="ipv4"}`) ??
              0) >= 3,
          );
          const outside = await nsExecResult(t.ns.srv1, [
            "curl",
            "-sS",
            "--max-time",
            "2",
            `http://${a.routerWan}:9482/metrics`,
          ]);
          assert(outside.code !== 0, "metrics must not answer on the WAN address");

          // --flush is refused while einat serves the interface.
          const busy = await nsExecResult(
            t.ns.router,
            einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]),
          );
          assertEquals(busy.code, 2, busy.stderr);
          assert(
            /serves it and holds its state; stop that einat first/.test(busy.stderr),
            busy.stderr,
          );
          client.kill("SIGTERM");
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
          einat = null;
          // Stopped: state still readable, then flushed.
          assertEquals((await showJson()).bindings.length, 5);
          assert(
            /wan0: no einat serves it now/.test((await show()).stdout),
            "show says no einat runs",
          );
          const flush = await nsExecResult(
            t.ns.router,
            einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]),
          );
          assertEquals(flush.code, 0, flush.stderr);
          assert(/pinned state removed/.test(flush.stderr), flush.stderr);
          let gone = false;
          try {
            Deno.statSync(pinDirIn(pin, t.ns.router));
          } catch {
            gone = true;
          }
          assert(gone, "pin folder removed");
          assertEquals((await showJson()).sessions, []);
        } finally {
          if (einat) await stopEinat(einat);
        }
      });
    }),
});
