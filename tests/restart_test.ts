/**
 * State across restarts, in network namespaces: a TCP connection and a UDP
 * flow survive stop-then-start and `--replace` with the same external port,
 * inbound (EIF) traffic to that port keeps working, and during `--replace`
 * the WAN side sees no untranslated packet and no message is lost.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { pinDirIn, withSharedBpffs } from "./lib/bpffs.ts";
import { einatCmd, startEinat, stopEinat } from "./lib/einat.ts";
import { type FlowLog, parseFlow, spawnFlowClient, startFlowServer } from "./lib/flow.ts";
import {
  nsExec,
  nsExecResult,
  type NsProcess,
  peerCmd,
  runResult,
  type Topology,
  withTopology,
} from "./lib/netns.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { closeFd } from "../lib/ffi/libc.ts";
import { mapFill, openPinned, readBindings } from "../lib/state/read.ts";
import { HAS_TCX } from "./lib/kernel.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

async function until(
  what: string,
  ok: () => boolean,
  timeoutMs = 10000,
  context: () => string = () => "",
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const maxSeq = (m: Map<number, string>) => Math.max(0, ...m.keys());

/** Link and program ids of the TCX links pinned in `dir` (egress, ingress). */
function pinnedLinks(dir: string): { id: number; progId: number }[] {
  const out = [];
  for (const point of ["egress", "ingress"]) {
    let fd: number;
    try {
      fd = bpf.objGetPinned(`${dir}/link_${point}`);
    } catch {
      continue;
    }
    try {
      out.push(bpf.linkInfo(fd));
    } finally {
      closeFd(fd);
    }
  }
  return out;
}

/**
 * A UDP and TCP flow from lan1 (port 40000) to srv1, one message every `intervalMs`, and a
 * capture on the WAN of anything with a LAN source (an untranslated packet).
 */
async function flowAndCapture(t: Topology, intervalMs: number) {
  const a = t.addrs.v4;
  await startFlowServer(t, t.ns.srv1);
  const client = spawnFlowClient(t, t.ns.lan1, a.srv1[0], { fromPort: 40000, intervalMs });
  await client.waitForStdout(/ready/, 10000);
  const flow = (): FlowLog => parseFlow(client.stdoutText());
  const cap = t.spawn(t.ns.wan, ["tcpdump", "-i", "r", "-n", "-l", "-U", `net ${a.lanNet}`]);
  await until("tcpdump", () => /listening on/.test(cap.stderrText()));
  return { flow, cap };
}

/** Every answer of the flow saw the same external endpoint; returns it. */
function oneEndpoint(m: Map<number, string>, what: string): string {
  const seen = new Set(m.values());
  assertEquals(seen.size, 1, `${what}: one external endpoint throughout, got ${[...seen]}`);
  return [...seen][0];
}

Deno.test({
  name:
    "restart: TCP and UDP flows keep their external port across stop-then-start and --replace; EIF keeps working; --replace leaks and loses nothing",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v4;
      await withSharedBpffs(t.ns.router, async (bpffs) => {
        const pin = `${bpffs}/einat`;
        // With hairpin routing: what --replace hands over includes its rules and the moved
        // local rule, which the last einat puts back.
        const args = ["-i", "wan0", "--pin-dir", pin, "--hairpin-if", "br0"];
        const rulesBefore = await nsExec(t.ns.router, ["ip", "rule", "show"]);
        let einat: NsProcess | null = await startEinat(t.ns.router, args);
        try {
          await startFlowServer(t, t.ns.srv1, 60000);
          const client = spawnFlowClient(t, t.ns.lan1, a.srv1[0], {
            fromPort: 40000,
            intervalMs: 20,
            timeoutMs: 60000,
          });
          await client.waitForStdout(/ready/, 10000);
          const flow = (): FlowLog => parseFlow(client.stdoutText());
          await until("a few answers", () => flow().udp.size > 5 && flow().tcp.size > 5);
          const before = flow();
          const udpExt = oneEndpoint(before.udp, "udp");
          const tcpExt = oneEndpoint(before.tcp, "tcp");
          assertEquals(udpExt.split(":")[0], a.routerWan);

          // A capture on the WAN side: a LAN address there is an untranslated packet.
          const cap = t.spawn(t.ns.wan, [
            "tcpdump",
            "-i",
            "r",
            "-n",
            "-l",
            "-U",
            `net ${a.lanNet}`,
          ]);
          await until("tcpdump", () => /listening on/.test(cap.stderrText()));

          // Stop, then start: the pinned state is picked up. Packets in the gap are not
          // translated (an inbound TCP segment would reach the router itself and be answered
          // with a RST), so the flows pause while no einat runs.
          client.kill("SIGUSR1");
          await client.waitForStdout(/paused/);
          await new Promise((r) => setTimeout(r, 300));
          const gapUdp = maxSeq(flow().udp), gapTcp = maxSeq(flow().tcp);
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
          einat = null;
          // The control: what is sent in the gap leaves untranslated, and the capture sees it.
          await nsExecResult(
            t.ns.lan1,
            peerCmd("udp-send", ["--to", `${a.srv1[0]}:9`, "--from-port", "40001"]).concat(
              ["--reply-timeout-ms", "100", "--timeout-ms", "2000"],
            ),
          );
          await until("the gap packet in the capture", () => /40001/.test(cap.stdoutText()));
          einat = await startEinat(t.ns.router, args);
          client.kill("SIGUSR2");
          assert(
            /pinned state reused .*bindings=2 sessions=2/.test(einat.stderrText()),
            einat.stderrText(),
          );
          await until(
            "answers after the restart",
            () => maxSeq(flow().udp) > gapUdp + 10 && maxSeq(flow().tcp) > gapTcp + 10,
            10000,
            () =>
              `udp ${gapUdp}->${maxSeq(flow().udp)} tcp ${gapTcp}->${maxSeq(flow().tcp)}\n` +
              client.stdoutText().split("\n").slice(-8).join("\n") + "\n" + einat?.stderrText(),
          );
          let f = flow();
          assertEquals(f.tcpErrors, [], "the TCP connection survived");
          assertEquals(oneEndpoint(f.udp, "udp after restart"), udpExt);
          assertEquals(oneEndpoint(f.tcp, "tcp after restart"), tcpExt);

          // EIF: a host lan1 never talked to reaches the same external port.
          const eif = async (from: string) => {
            const r = await nsExecResult(
              t.ns.srv2,
              peerCmd("udp-send", ["--bind", from, "--to", udpExt, "--timeout-ms", "5000"]),
            );
            assertEquals(r.code, 0, `inbound to ${udpExt} from ${from}: ${r.stdout}${r.stderr}`);
          };
          await eif(a.srv2[0]);

          // --replace: the capture must see no LAN address from now on.
          const leaked = cap.stdoutText().trim().split("\n").length;
          const old = einat;
          const replStartUdp = maxSeq(flow().udp);
          const repl = await startEinat(t.ns.router, [...args, "--replace"]);
          einat = repl;
          const oldExit = await old.output(10000);
          assertEquals(oldExit.code, 0, oldExit.stderr);
          assert(/left attached/.test(oldExit.stderr), oldExit.stderr);
          assert(/taking over filter/.test(repl.stderrText()), repl.stderrText());
          const replEndUdp = maxSeq(flow().udp);
          await until("answers after --replace", () => maxSeq(flow().udp) > replEndUdp + 10);
          cap.kill("SIGTERM");
          const capOut = await cap.output(5000);
          assertEquals(
            capOut.stdout.trim().split("\n").slice(leaked),
            [],
            "untranslated packets on the WAN side during --replace",
          );
          f = flow();
          const lost: number[] = [];
          for (let s = replStartUdp + 1; s <= replEndUdp; s++) if (!f.udp.has(s)) lost.push(s);
          assertEquals(lost, [], "UDP messages lost during --replace");
          for (let s = 1; s <= maxSeq(f.tcp); s++) assert(f.tcp.has(s), `tcp message ${s}`);
          assertEquals(f.tcpErrors, []);
          assertEquals(oneEndpoint(f.udp, "udp after --replace"), udpExt);
          assertEquals(oneEndpoint(f.tcp, "tcp after --replace"), tcpExt);
          await eif(a.srv2[1]);
          // The live-binding count the replacing einat took over is the bindings' own.
          const st = openPinned(pinDirIn(pin, t.ns.router), "wan0");
          assert(st, "pinned state after --replace");
          try {
            const counted = mapFill(st).find((m) => m.map === "map_records")?.entries;
            assertEquals(counted, readBindings(st).length, "binding count after --replace");
          } finally {
            st.close();
          }

          // Without --replace a served interface is still refused.
          const second = await nsExecResult(t.ns.router, [
            ...einatCmd(args),
          ]);
          assertEquals(second.code, 2, second.stderr);
          assert(/already served by einat/.test(second.stderr), second.stderr);

          assertEquals(await stopEinat(repl), 0, repl.stderrText());
          einat = null;
          const left = await nsExec(t.ns.router, ["tc", "qdisc", "show", "dev", "wan0"]);
          assert(!left.includes("clsact"), `the replacing einat removed the qdisc: ${left}`);
          assertEquals(
            await nsExec(t.ns.router, ["ip", "rule", "show"]),
            rulesBefore,
            "the replacing einat removed the hairpin rules and moved the local rule back",
          );
        } finally {
          if (einat) await stopEinat(einat);
        }
      });
    }),
});

/** A configuration file serving wan0 through TCX links (removed by the caller). */
async function tcxConfig(): Promise<string> {
  const conf = await Deno.makeTempFile({ suffix: ".toml" });
  await Deno.writeTextFile(
    conf,
    `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nprefer_tcx = true\n`,
  );
  return conf;
}

Deno.test({
  name:
    "restart: --replace over TCX links swaps programs atomically (bpf_link_update): no leak, no loss",
  ignore: !HAS_TCX, // Linux 6.6+
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await tcxConfig();
      try {
        await withSharedBpffs(t.ns.router, async (bpffs) => {
          const args = ["-c", conf, "--pin-dir", `${bpffs}/einat`];
          let einat: NsProcess | null = await startEinat(t.ns.router, args);
          try {
            assert(/attached TCX links/.test(einat.stderrText()), einat.stderrText());
            const { flow, cap } = await flowAndCapture(t, 20);
            const before = pinnedLinks(pinDirIn(`${bpffs}/einat`, t.ns.router));
            assertEquals(before.length, 2, "the TCX links pinned (egress, ingress)");
            const old = einat;
            const from = maxSeq(flow().udp);
            einat = await startEinat(t.ns.router, [...args, "--replace"]);
            assert(/taking over TCX link/.test(einat.stderrText()), einat.stderrText());
            const oldExit = await old.output(10000);
            assertEquals(oldExit.code, 0, oldExit.stderr);
            assert(/left attached/.test(oldExit.stderr), oldExit.stderr);
            const to = maxSeq(flow().udp);
            await until("answers after --replace", () => maxSeq(flow().udp) > to + 10);
            cap.kill("SIGTERM");
            assertEquals((await cap.output(5000)).stdout.trim(), "", "untranslated packets");
            const f = flow();
            const lost: number[] = [];
            for (let s = from + 1; s <= to; s++) if (!f.udp.has(s)) lost.push(s);
            assertEquals(lost, [], "UDP messages lost during --replace");
            for (let s = 1; s <= maxSeq(f.tcp); s++) assert(f.tcp.has(s), `tcp message ${s}`);
            assertEquals(f.tcpErrors, []);
            oneEndpoint(f.udp, "udp");
            oneEndpoint(f.tcp, "tcp");
            // The same links, now running other programs: updated in place, not re-created.
            const after = pinnedLinks(pinDirIn(`${bpffs}/einat`, t.ns.router));
            assertEquals(after.map((l) => l.id), before.map((l) => l.id));
            for (const [i, l] of after.entries()) assert(l.progId !== before[i].progId);
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
            einat = null;
            assertEquals(
              pinnedLinks(pinDirIn(`${bpffs}/einat`, t.ns.router)),
              [],
              "link pins removed",
            );
            for (const l of after) {
              const r = await runResult(["bpftool", "link", "show", "id", String(l.id)]);
              assert(r.code !== 0, `TCX link ${l.id} left: ${r.stdout}`);
            }
          } finally {
            if (einat) await stopEinat(einat);
          }
        });
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name: "restart: the TCX link pins of an interface deleted while einat runs are removed at exit",
  ignore: !HAS_TCX, // Linux 6.6+
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await tcxConfig();
      try {
        await withSharedBpffs(t.ns.router, async (bpffs) => {
          const dir = pinDirIn(`${bpffs}/einat`, t.ns.router);
          let einat: NsProcess | null = await startEinat(t.ns.router, [
            "-c",
            conf,
            "--pin-dir",
            `${bpffs}/einat`,
          ]);
          try {
            assert(/attached TCX links/.test(einat.stderrText()), einat.stderrText());
            const links = pinnedLinks(dir);
            assertEquals(links.length, 2, "both links pinned");
            await nsExec(t.ns.router, ["ip", "link", "del", "wan0"]);
            const p = einat;
            await until("the interface gone", () => /interface gone/.test(p.stderrText()));
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
            einat = null;
            // A pinned link of a deleted interface holds its program until the pin goes.
            assertEquals(pinnedLinks(dir), [], "link pins removed");
            for (const l of links) {
              const r = await runResult(["bpftool", "link", "show", "id", String(l.id)]);
              assert(r.code !== 0, `TCX link ${l.id} left: ${r.stdout}`);
            }
            // The state itself stays for the next start.
            assert(Deno.statSync(`${dir}/map_records`).isFile);
          } finally {
            if (einat) await stopEinat(einat);
          }
        });
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "restart: --replace of several interfaces asks the running einat to exit once all are attached: it leaves every one attached, none bare",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      // a second external interface in the router
      await nsExec(t.ns.router, ["ip", "link", "add", "wan9", "type", "veth", "peer", "wan9p"]);
      await nsExec(t.ns.router, ["ip", "addr", "add", "198.18.0.1/24", "dev", "wan9"]);
      for (const l of ["wan9", "wan9p"]) await nsExec(t.ns.router, ["ip", "link", "set", l, "up"]);
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      await Deno.writeTextFile(
        conf,
        ["wan0", "wan9"].map((i) => `[[interfaces]]\nif_name = "${i}"\nnat44 = true\n`).join(""),
      );
      try {
        await withSharedBpffs(t.ns.router, async (bpffs) => {
          const args = ["-c", conf, "--pin-dir", `${bpffs}/einat`];
          const old = await startEinat(t.ns.router, args);
          let next: NsProcess | null = null;
          try {
            next = await startEinat(t.ns.router, [...args, "--replace"]);
            const oldExit = await old.output(10000);
            assertEquals(oldExit.code, 0, oldExit.stderr);
            const took = [...next.stderrText().matchAll(/took over from the running einat.*/g)];
            assertEquals(took.length, 1, `asked once, after both:\n${next.stderrText()}`);
            assert(/ifname=wan0,wan9 /.test(took[0][0]), took[0][0]);
            const gone = oldExit.stderr.split("\n").filter((l) =>
              /detached (TCX links|filter)|removed clsact/.test(l)
            );
            assertEquals(gone, [], "the old einat left every interface to the new one");
            assertEquals(
              oldExit.stderr.split("\n").filter((l) => /left attached/.test(l)).length >= 2,
              true,
              oldExit.stderr,
            );
          } finally {
            if (next) assertEquals(await stopEinat(next), 0, next.stderrText());
          }
        });
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "restart: after a killed einat, the next start removes what it left: its TCX links (before clsact filters they would shadow) and, at exit, its clsact qdisc",
  ignore: !HAS_TCX, // Linux 6.6+
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await tcxConfig();
      const qdisc = async () =>
        (await nsExec(t.ns.router, ["tc", "qdisc", "show", "dev", "wan0"])).includes("clsact");
      try {
        await withSharedBpffs(t.ns.router, async (bpffs) => {
          const pin = ["--pin-dir", `${bpffs}/einat`];
          const dir = pinDirIn(`${bpffs}/einat`, t.ns.router);
          // A TCX einat killed: its links stay pinned, attached.
          const killed = await startEinat(t.ns.router, ["-c", conf, ...pin]);
          const links = pinnedLinks(dir);
          assertEquals(links.length, 2, killed.stderrText());
          killed.kill("SIGKILL");
          await killed.output(10000);
          // show says the killed einat's programs still translate (not "as the last one left it").
          const orphan = /no einat serves it, but a stopped one's programs are still attached/;
          const shown = async () =>
            (await nsExecResult(t.ns.router, einatCmd(["show", ...pin]))).stdout;
          assert(orphan.test(await shown()), await shown());
          // The next start uses clsact (the command line): the links go.
          const tc = await startEinat(t.ns.router, ["-i", "wan0", ...pin]);
          const removed = tc.stderrText().match(/removed a stale einat TCX link/g) ?? [];
          assertEquals(removed.length, 2, tc.stderrText());
          assertEquals(pinnedLinks(dir), [], "unpinned");
          for (const l of links) {
            const r = await runResult(["bpftool", "link", "show", "id", String(l.id)]);
            assert(r.code !== 0, `stale TCX link ${l.id} still attached: ${r.stdout}`);
          }
          assert(await qdisc(), "the clsact qdisc einat made");
          // Killed in turn: the clsact einat's qdisc is the next one's to remove at exit.
          tc.kill("SIGKILL");
          await tc.output(10000);
          assert(orphan.test(await shown()), await shown()); // its filters, this time
          const next = await startEinat(t.ns.router, ["-i", "wan0", ...pin]);
          assertEquals(await stopEinat(next), 0, next.stderrText());
          assert(!(await qdisc()), "the qdisc left by the killed einat is removed");
          assert(/no einat serves it now; the state is as/.test(await shown()), await shown());
        });
      } finally {
        await Deno.remove(conf);
      }
    }),
});

for (const tcx of [false, true]) {
  Deno.test({
    name:
      `restart: a SIGHUP that changes an interface's configuration swaps its programs in place (${
        tcx ? "TCX" : "clsact"
      }): no packet leaves untranslated; one whose new instance cannot start keeps the old`,
    ignore: tcx && !HAS_TCX,
    ...sanitize,
    fn: () =>
      withTopology(async (t) => {
        const conf = await Deno.makeTempFile({ suffix: ".toml" });
        const write = (body: string) =>
          Deno.writeTextFile(
            conf,
            `[defaults]\n${body}\n[[interfaces]]\nif_name = "wan0"\nnat44 = true\n` +
              `prefer_tcx = ${tcx}\n`,
          );
        try {
          await write('udp_ranges = ["20000-29999"]');
          const einat = await startEinat(t.ns.router, ["-c", conf]);
          try {
            const { flow, cap } = await flowAndCapture(t, 5);
            const reloads = () => einat.stderrText().match(/configuration reloaded/g)?.length ?? 0;
            // A changed range: the interface restarts, its new programs taking over in place.
            await write('udp_ranges = ["30000-39999"]');
            einat.kill("SIGHUP");
            await until("reload", () => reloads() === 1, 10000, () => einat.stderrText());
            assert(
              /taking over (filter|TCX link)/.test(einat.stderrText()),
              einat.stderrText(),
            );
            const after = maxSeq(flow().udp);
            await until("answers after the reload", () => maxSeq(flow().udp) > after + 20);
            // A new configuration the interface cannot take (NAT66 only, no IPv6 address): the
            // old instance goes on serving.
            await Deno.writeTextFile(
              conf,
              `[[interfaces]]\nif_name = "wan0"\nnat44 = false\nnat66 = true\n`,
            );
            einat.kill("SIGHUP");
            await until("reload", () => reloads() === 2, 10000, () => einat.stderrText());
            assert(/kept="the running configuration"/.test(einat.stderrText()), einat.stderrText());
            // The summary says so: not restarted, waiting for its address.
            const summary = einat.stderrText().split("\n").filter((l) =>
              /configuration reloaded/.test(l)
            ).at(-1)!;
            assert(/interfaces=wan0 waiting_for_address=wan0$/.test(summary), summary);
            const later = maxSeq(flow().udp);
            await until("answers with the old instance", () => maxSeq(flow().udp) > later + 20);
            cap.kill("SIGTERM");
            assertEquals((await cap.output(5000)).stdout.trim(), "", "untranslated packets");
            oneEndpoint(flow().udp, "udp"); // the mapping made before the reloads is kept
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
          const tc = await nsExec(t.ns.router, ["tc", "filter", "show", "dev", "wan0", "egress"]);
          assertEquals(tc.trim(), "", "nothing left attached");
        } finally {
          await Deno.remove(conf);
        }
      }, { ipv6: false }),
  });
}
