/**
 * Daemon start-up and shutdown behaviour in a network namespace of its own:
 * one-line errors with exit code 2 that leave the network untouched, the
 * second-instance refusal, and recovery from a killed instance.
 */
import { assert, assertEquals, assertThrows } from "./lib/assert.ts";
import { einatCmd, startEinat, stopEinat, waitLog } from "./lib/einat.ts";
import { addForeignFilter, withVariant } from "./lib/bpfobj.ts";
import { deleteNs, nsExec, nsExecResult, run, spawnInNs, testPrefix } from "./lib/netns.ts";
import { checkKernel, checkPrivileges } from "../lib/preflight.ts";
import { WATCH_RECV_TIMEOUT_MS } from "../lib/netlink/rtnl.ts";
import { notifySocket } from "./lib/notify_socket.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

/** Kills what still runs in `ns` and deletes it. */
async function dropNs(ns: string): Promise<void> {
  const r = await deleteNs(ns);
  if (r.code !== 0) throw new Error(`ip netns del ${ns}: ${r.stderr}`);
}

async function withNs(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = `${testPrefix()}-d${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
  await run(["ip", "netns", "add", ns]);
  try {
    await nsExec(ns, ["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "noaddr0"]);
    await nsExec(ns, ["ip", "addr", "add", "203.0.113.1/24", "dev", "wan0"]);
    // No IPv6 link-local addresses: their DAD ends with address notifications at times of its
    // own, which would wake the daemon's netlink watch (the SIGTERM test relies on its quiet).
    for (const dev of ["wan0", "noaddr0"]) {
      await nsExec(ns, ["ip", "link", "set", dev, "addrgenmode", "none"]);
    }
    await nsExec(ns, ["ip", "link", "set", "wan0", "up"]);
    await nsExec(ns, ["ip", "link", "set", "noaddr0", "up"]);
    await fn(ns);
  } finally {
    await dropNs(ns);
  }
}

async function einatOnce(ns: string, args: string[], prefix: string[] = []) {
  return await nsExecResult(ns, [...prefix, ...einatCmd(args)]);
}

async function tcState(ns: string, dev: string): Promise<string> {
  return await nsExec(ns, ["tc", "qdisc", "show", "dev", dev]) +
    await nsExec(ns, ["tc", "filter", "show", "dev", dev, "ingress"]) +
    await nsExec(ns, ["tc", "filter", "show", "dev", dev, "egress"]);
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n").filter((l) => l.startsWith("einat:"));
  assertEquals(lines.length, 1, `expected one "einat:" line, got:\n${stderr}`);
  return lines[0];
}

Deno.test({
  name: "daemon: bad flag, missing interface, no privileges each exit 2 with one line",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const before = await tcState(ns, "wan0") + await tcState(ns, "noaddr0");
      const cases: [string[], RegExp, string[]?][] = [
        [["-i", "wan0", "--ports", "70000"], /--ports/],
        [["--frobnicate"], /--frobnicate: unknown option/],
        [["--ifindex", "9999"], /ifindex 9999: no such interface/],
        [["-i", "lo"], /lo: a loopback interface cannot be the external one/],
        [["-i", "wan0"], /missing privileges: .*CAP_NET_ADMIN/, [
          "setpriv",
          "--bounding-set=-all",
          "--inh-caps=-all",
        ]],
      ];
      for (const [args, pattern, prefix] of cases) {
        const r = await einatOnce(ns, args, prefix);
        assertEquals(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
        assert(pattern.test(oneLine(r.stderr)), `${args.join(" ")}: ${r.stderr}`);
      }
      assertEquals(
        await tcState(ns, "wan0") + await tcState(ns, "noaddr0"),
        before,
        "network untouched",
      );
    }),
});

Deno.test({
  name:
    "daemon: an interface without an address yet (DHCP, PPPoE) is served; new flows wait, and the address is taken when it comes",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const einat = await startEinat(ns, ["-i", "noaddr0"]);
      try {
        assertEquals(
          einat.stderrText().match(/WARN .*no IPv4/g),
          ["WARN  no IPv4"],
          `said once, as it is:\n${einat.stderrText()}`,
        );
        assert(
          /WARN +no IPv4 address to use as external address \(NAT44 is on\); serving it/.test(
            einat.stderrText(),
          ),
          einat.stderrText(),
        );
        await nsExec(ns, ["ip", "addr", "add", "198.18.5.1/24", "dev", "noaddr0"]);
        await waitLog(einat, /external address ifname=noaddr0 addr=198\.18\.5\.1/, 10000);
        // It goes again: said once more, as what it is now.
        await nsExec(ns, ["ip", "addr", "del", "198.18.5.1/24", "dev", "noaddr0"]);
        await waitLog(einat, /no IPv4 external address any more/, 10000);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "daemon: a second einat on a served interface is refused; after SIGKILL the next start replaces stale filters",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const first = await startEinat(ns, ["-i", "wan0"]);
      try {
        const second = await einatOnce(ns, ["-i", "wan0"]);
        assertEquals(second.code, 2, second.stderr);
        assert(
          /already served by einat \(pid \d+\); stop it first, or .*--replace/.test(
            oneLine(second.stderr),
          ),
          second.stderr,
        );
      } finally {
        first.kill("SIGKILL");
        await first.output(5000);
      }
      const stale = await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
      assert(/handle 0xe1a7/.test(stale), `filters outlive a SIGKILL: ${stale}`);

      const again = await startEinat(ns, ["-i", "wan0"]);
      assert(/replacing stale einat filter/.test(again.stderrText()), again.stderrText());
      const filters = await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
      assertEquals(filters.match(/direct-action/g)?.length, 1, `exactly one filter: ${filters}`);
      // SIGTERM to exit must not wait for the netlink watch's pending receive to time out
      // (WATCH_RECV_TIMEOUT_MS, 5 s): stop() wakes it. A change on another interface just
      // before re-arms that receive, so a stop that waits for it takes >= ~4.5 s, while the
      // bound, half the timeout, leaves a loaded host seconds for the rest of the shutdown.
      await nsExec(ns, ["ip", "addr", "add", "198.51.100.1/32", "dev", "noaddr0"]);
      await new Promise((r) => setTimeout(r, 300));
      const limit = WATCH_RECV_TIMEOUT_MS / 2;
      const t0 = performance.now();
      assertEquals(await stopEinat(again, 2 * WATCH_RECV_TIMEOUT_MS), 0);
      const stopMs = performance.now() - t0;
      assert(stopMs < limit, `SIGTERM to exit took ${stopMs.toFixed(0)} ms (limit ${limit})`);
      assertEquals(
        (await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "ingress"])).trim(),
        "",
      );
    }),
});

Deno.test({
  name: "daemon: keeps a clsact qdisc it did not create, and other people's filters",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      await nsExec(ns, ["tc", "qdisc", "add", "dev", "wan0", "clsact"]);
      await addForeignFilter(ns, "wan0", "ingress", 7);
      const p = await startEinat(ns, ["-i", "wan0"]);
      assertEquals(await stopEinat(p), 0, p.stderrText());
      const q = await nsExec(ns, ["tc", "qdisc", "show", "dev", "wan0"]);
      assert(q.includes("clsact"), "pre-existing qdisc kept");
      const f = await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
      assert(f.includes("noop.bpf.o") && !f.includes("0xe1a7"), f);
    }),
});

/** BPF programs a process holds open (`prog_id` in /proc/PID/fdinfo). */
function progFdsOf(pid: number): number {
  let n = 0;
  for (const e of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    try {
      if (/^prog_id:/m.test(Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`))) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

Deno.test({
  name:
    "daemon: an interface configured by name and by index is served once; a start refused in a reload (another einat serves it) leaves no program open",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      // noaddr0 gets an address: an external interface another einat serves.
      await nsExec(ns, ["ip", "addr", "add", "198.51.100.1/24", "dev", "noaddr0"]);
      const tcBefore = await tcState(ns, "wan0") + await tcState(ns, "noaddr0");
      const idx = Number((await nsExec(ns, ["ip", "-o", "link", "show", "wan0"])).split(":")[0]);
      assert(idx > 0);
      const iface = (id: string) => `[[interfaces]]\n${id}\nnat44 = true\nprefer_tcx = false\n`;
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      try {
        await Deno.writeTextFile(conf, iface(`if_name = "wan0"`) + iface(`if_index = ${idx}`));
        const a = await startEinat(ns, ["-c", conf]);
        const other = await startEinat(ns, ["-i", "noaddr0"]);
        try {
          assert(/wan0: configured twice/.test(a.stderrText()), a.stderrText());
          const f = await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
          assertEquals(f.match(/direct-action/g)?.length, 1, `one filter: ${f}`);
          const before = progFdsOf(a.pid);
          // noaddr0 is the other einat's: this start is refused.
          await Deno.writeTextFile(conf, iface(`if_name = "wan0"`) + iface(`if_name = "noaddr0"`));
          a.kill("SIGHUP");
          const end = Date.now() + 5000;
          while (!/configuration reloaded/.test(a.stderrText()) && Date.now() < end) {
            await new Promise((r) => setTimeout(r, 50));
          }
          assert(
            /interface not served.*noaddr0.*already served/.test(a.stderrText()),
            a.stderrText(),
          );
          assertEquals(progFdsOf(a.pid), before, "the refused start's programs are closed");
        } finally {
          assertEquals(await stopEinat(other), 0, other.stderrText());
          assertEquals(await stopEinat(a), 0, a.stderrText());
        }
        assertEquals(
          await tcState(ns, "wan0") + await tcState(ns, "noaddr0"),
          tcBefore,
          "nothing left",
        );
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test("preflight: capability and BTF checks name the cause", () => {
  assertThrows(
    () => checkPrivileges(0n),
    /missing privileges: einat needs CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON/,
  );
  assertThrows(() => checkPrivileges((1n << 12n) | (1n << 39n)), /needs CAP_PERFMON/);
  checkPrivileges((1n << 12n) | (1n << 39n) | (1n << 38n));
  checkPrivileges((1n << 12n) | (1n << 21n));
  assertThrows(() => checkKernel("/nonexistent/vmlinux"), /kernel without BTF/);
});

Deno.test({
  name:
    "daemon: a program the kernel refuses gives one line (verifier log in the log), exit 2, nothing left",
  ...sanitize,
  fn: async () => {
    await withVariant("EINAT_TEST_REJECT", async (obj) => {
      await withNs(async (ns) => {
        const before = await tcState(ns, "wan0");
        const r = await einatOnce(ns, ["-i", "wan0"], ["env", `EINAT_BPF_OBJECT=${obj}`]);
        assertEquals(r.code, 2, r.stderr);
        assert(/wan0: .*\(verifier log above\)/.test(oneLine(r.stderr)), r.stderr);
        assert(/the kernel refused the BPF programs.*verifier_log=.*R\d/.test(r.stderr), r.stderr);
        assertEquals(await tcState(ns, "wan0"), before, "nothing attached");
      });
    });
  },
});

Deno.test({
  name:
    "daemon: a SIGTERM while it starts is taken once it runs: exit 0, the network as it was before",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const before = await tcState(ns, "wan0");
      // The signal goes as soon as the BPF object is loaded, before the filters are attached
      // and "einat running" is logged; a run where the poll saw that line too late tries again.
      let inside = 0;
      for (let attempt = 0; attempt < 5 && inside === 0; attempt++) {
        const p = spawnInNs(ns, einatCmd(["-i", "wan0"]), { killAfterMs: 30_000 });
        const end = Date.now() + 15000;
        while (!/loaded BPF object/.test(p.stderrText())) {
          assert(p.running() && Date.now() < end, `einat did not load:\n${p.stderrText()}`);
          await new Promise((r) => setTimeout(r, 1));
        }
        const early = !/einat running/.test(p.stderrText());
        p.kill("SIGTERM");
        const r = await p.output(10000);
        assertEquals(r.code, 0, `exit ${r.code} after a SIGTERM while starting:\n${r.stderr}`);
        assertEquals(await tcState(ns, "wan0"), before, "filters and qdisc gone");
        const last = r.stderr.trim().split("\n").at(-1) ?? "";
        assert(/ INFO {2}einat stopped code=0$/.test(last), `last line: ${last}\n${r.stderr}`);
        if (early) {
          inside++;
          assert(/stopping signal=SIGTERM/.test(r.stderr), r.stderr);
        }
      }
      assert(inside > 0, "no SIGTERM landed before einat ran (5 tries)");
    }),
});

Deno.test({
  name: "daemon: a tiny RLIMIT_MEMLOCK does not matter (maps are charged to the memory cgroup)",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const p = spawnInNs(ns, ["prlimit", "--memlock=65536:65536", ...einatCmd(["-i", "wan0"])]);
      try {
        const end = Date.now() + 15000;
        while (!/einat running/.test(p.stderrText())) {
          assert(p.running() && Date.now() < end, `einat did not start:\n${p.stderrText()}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      } finally {
        p.kill("SIGTERM");
        const r = await p.output(5000);
        assertEquals(r.code, 0, r.stderr);
      }
    }),
});

Deno.test({
  name:
    "daemon: tells systemd (NOTIFY_SOCKET) it is ready once serving, reloading and ready again on SIGHUP, stopping on SIGTERM",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const sock = notifySocket();
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      try {
        await Deno.writeTextFile(conf, `[[interfaces]]\nif_name = "wan0"\nnat44 = true\n`);
        const einat = await startEinat(ns, ["-c", conf], 15000, { NOTIFY_SOCKET: sock.path });
        try {
          assertEquals(await sock.waitFor(/READY=1/), "READY=1\nSTATUS=serving wan0");
          assertEquals(sock.messages.length, 1, "nothing before ready");
          einat.kill("SIGHUP");
          assert(/^RELOADING=1\nMONOTONIC_USEC=\d+$/.test(await sock.waitFor(/RELOADING=1/)));
          assertEquals(await sock.waitFor(/READY=1/), "READY=1\nSTATUS=serving wan0");
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        assertEquals(await sock.waitFor(/STOPPING=1/), "STOPPING=1\nSTATUS=stopping");
      } finally {
        sock.close();
        await Deno.remove(conf);
      }
    }),
});
