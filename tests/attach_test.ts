/**
 * Attachment paths in namespaces: TCX links (kernel >= 6.6) and clsact
 * filters, both translating, both leaving nothing behind.
 */
import { addForeignFilter } from "./lib/bpfobj.ts";
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { nsExec, nsExecResult, peerCmd, run, withTopology } from "./lib/netns.ts";
import { withSharedBpffs } from "./lib/bpffs.ts";
import { parseUdpReplies } from "./lib/peer.ts";
import { HAS_TCX } from "./lib/kernel.ts";
import { capture } from "./lib/capture.ts";
import { startTunWan } from "./lib/tun_wan.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

/**
 * Ids of the BPF links a process holds (`link_id` in /proc/PID/fdinfo). `bpftool link show`
 * lists every namespace's links, so tests running in parallel would be counted too.
 */
function linkIdsOf(pid: number): number[] {
  const ids: number[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^link_id:\s+(\d+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`));
      if (m) ids.push(Number(m[1]));
    } catch { /* closed meanwhile */ }
  }
  return ids;
}

for (const asked of [true, false]) {
  // TCX when asked for and the kernel has it; clsact filters otherwise.
  const preferTcx = asked && HAS_TCX;
  Deno.test({
    name: `attach: ${
      asked ? "TCX links (clsact before Linux 6.6)" : "clsact filters"
    } translate and are removed on exit`,
    ...sanitize,
    fn: () =>
      withTopology(async (t) => {
        const conf = await Deno.makeTempFile({ suffix: ".toml" });
        try {
          await Deno.writeTextFile(
            conf,
            `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nprefer_tcx = ${asked}\n`,
          );
          const echo = t.spawn(
            t.ns.srv1,
            peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]),
          );
          await echo.waitForStdout(/listening/);
          const einat = await startEinat(t.ns.router, ["-c", conf]);
          let linkIds: number[] = [];
          try {
            assert(
              (preferTcx ? /attached TCX links/ : /attached filter/).test(einat.stderrText()),
              einat.stderrText(),
            );
            const filters = await nsExec(t.ns.router, [
              "tc",
              "filter",
              "show",
              "dev",
              "wan0",
              "egress",
            ]);
            assertEquals(filters.includes("0xe1a7"), !preferTcx, `tc filters: ${filters}`);
            linkIds = linkIdsOf(einat.pid);
            assertEquals(linkIds.length, preferTcx ? 2 : 0, `links held: ${linkIds}`);
            const r = await nsExecResult(
              t.ns.lan1,
              peerCmd("udp-send", ["--to", `${t.addrs.v4.srv1[0]}:3478`, "--timeout-ms", "3000"]),
            );
            assertEquals(r.code, 0, r.stdout + r.stderr);
            assert(parseUdpReplies(r.stdout)[0].seen.startsWith(`${t.addrs.v4.routerWan}:`));
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
          for (const id of linkIds) {
            const r = await nsExecResult(t.ns.router, [
              "bpftool",
              "link",
              "show",
              "id",
              String(id),
            ]);
            assert(r.code !== 0, `TCX link ${id} left: ${r.stdout}`);
          }
          const q = await nsExec(t.ns.router, ["tc", "qdisc", "show", "dev", "wan0"]);
          assert(!q.includes("clsact"), q);
        } finally {
          await Deno.remove(conf);
        }
      }),
  });
}

Deno.test({
  name:
    "attach: the clsact qdisc einat made is removed on exit, unless filters others added since are on it (kept, with them)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const qdisc = () => nsExec(t.ns.router, ["tc", "qdisc", "show", "dev", "wan0"]);
      const filters = (hook: string) =>
        nsExec(t.ns.router, ["tc", "filter", "show", "dev", "wan0", hook]);
      // Alone on it: removed.
      let einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      assert((await qdisc()).includes("clsact"));
      assertEquals(await stopEinat(einat), 0, einat.stderrText());
      assert(/removed clsact qdisc/.test(einat.stderrText()), einat.stderrText());
      assert(!(await qdisc()).includes("clsact"), await qdisc());
      // Another tool's filter added while einat ran: the qdisc stays, and the filter with it.
      einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      await addForeignFilter(t.ns.router, "wan0", "ingress", 10);
      assertEquals(await stopEinat(einat), 0, einat.stderrText());
      assert(
        /clsact qdisc kept: filters einat did not add are on it .*hooks=ingress/.test(
          einat.stderrText(),
        ),
        einat.stderrText(),
      );
      assert(!/removed clsact qdisc/.test(einat.stderrText()), einat.stderrText());
      assert((await qdisc()).includes("clsact"), await qdisc());
      const left = await filters("ingress");
      assert(/pref 10 bpf/.test(left) && !left.includes("0xe1a7"), left);
      assert(!(await filters("egress")).includes("0xe1a7"), "einat's own filters went");
    }),
});

Deno.test({
  name:
    "attach: on an L3 device (TUN) a flow refused for want of a port gets its ICMP 3/13 (sent back in with a blank Ethernet header)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const tun = await startTunWan(t, 20000);
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      await Deno.writeTextFile(
        conf,
        [
          "[defaults]",
          'udp_ranges = ["20000-20000"]',
          "[[interfaces]]",
          'if_name = "tun0"',
          "nat44 = true",
        ]
          .join("\n"),
      );
      const icmp2 = await capture(t, t.ns.lan2, "eth0", "icmp");
      const einat = await startEinat(t.ns.router, ["-c", conf]);
      try {
        const send = (ns: string) =>
          nsExecResult(
            ns,
            peerCmd("udp-send", ["--to", "198.18.1.1:3478", "--timeout-ms", "2000"]),
          );
        const first = await send(t.ns.lan1);
        assertEquals(first.code, 0, `${first.stdout}${first.stderr}\n${tun.stdoutText()}`);
        const refused = await send(t.ns.lan2);
        assert(refused.code !== 0, `the one port is taken: ${refused.stdout} / ${first.stdout}`);
        const lines = await icmp2.stop();
        assert(
          lines.some((l) => /admin prohibited/.test(l)),
          `ICMP 3/13 seen by lan2:\n${lines.join("\n")}\n${einat.stderrText()}`,
        );
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "attach: TCX links are detached at exit even when their pins cannot be reached (the bpffs unmounted underneath einat): no program left translating with no einat",
  ignore: !HAS_TCX,
  ...sanitize,
  fn: () =>
    withTopology((t) =>
      withSharedBpffs(t.ns.router, async (pin) => {
        const conf = await Deno.makeTempFile({ suffix: ".toml" });
        try {
          await Deno.writeTextFile(
            conf,
            `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nprefer_tcx = true\n`,
          );
          const echo = t.spawn(
            t.ns.srv1,
            peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "20000"]),
          );
          await echo.waitForStdout(/listening/);
          // srv1 has no route back to the LAN: only a translated flow gets an answer.
          const answered = async () =>
            (await nsExecResult(
              t.ns.lan1,
              peerCmd("udp-send", ["--to", `${t.addrs.v4.srv1[0]}:3478`, "--timeout-ms", "1500"]),
            )).code === 0;
          const einat = await startEinat(t.ns.router, ["-c", conf, "--pin-dir", pin]);
          try {
            assert(/attached TCX links/.test(einat.stderrText()), einat.stderrText());
            assert(await answered(), "translated while einat runs");
            // Out of einat's sight only: the pins stay in the test's mount namespace.
            await run(["nsenter", "-t", String(einat.pid), "-m", "umount", "-l", pin]);
          } finally {
            assertEquals(await stopEinat(einat), 0, einat.stderrText());
          }
          assert(!await answered(), "translated with no einat running: TCX links left attached");
        } finally {
          await Deno.remove(conf);
        }
      })
    ),
});

Deno.test({
  name: "attach: an L3 device (TUN, no Ethernet header) is translated both ways",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const tun = await startTunWan(t, 20000);
      const einat = await startEinat(t.ns.router, ["-i", "tun0"]);
      try {
        assert(/l2=none/.test(einat.stderrText()), einat.stderrText());
        const r = await nsExecResult(
          t.ns.lan1,
          peerCmd("udp-send", [
            "--to",
            "198.18.1.1:3478",
            "--from-port",
            "40000",
            "--timeout-ms",
            "4000",
          ]),
        );
        assertEquals(r.code, 0, `${r.stdout}${r.stderr}\n${tun.stdoutText()}`);
        const rep = parseUdpReplies(r.stdout)[0];
        assert(
          rep.seen.startsWith("198.18.0.1:"),
          `the server saw the external address: ${rep.seen}`,
        );
        assert(/checksum ok/.test(tun.stdoutText()), tun.stdoutText());
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});
