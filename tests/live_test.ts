/**
 * The live network in namespaces: address changes, an interface deleted and
 * recreated (PPP-style) or missing at start-up, and SIGHUP reloads, all
 * followed over netlink without a restart.
 */
import { assert, assertEquals, assertNotEquals } from "./lib/assert.ts";
import { startEinat, stopEinat, waitLog } from "./lib/einat.ts";
import { nsExec, nsExecResult, peerCmd, type Topology, withTopology } from "./lib/netns.ts";
import { parseProm } from "./lib/prom.ts";
import { parseUdpReplies } from "./lib/peer.ts";
import type { NsProcess } from "./lib/netns.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

/** UDP from lan1:port to srv1; returns the external endpoint srv1 saw. */
async function seenFrom(t: Topology, port: number, ns = t.ns.lan1): Promise<string> {
  const r = await nsExecResult(
    ns,
    peerCmd("udp-send", [
      "--to",
      `${t.addrs.v4.srv1[0]}:3478`,
      "--from-port",
      String(port),
      "--timeout-ms",
      "3000",
    ]),
  );
  assertEquals(r.code, 0, `no reply through the NAT: ${r.stdout}${r.stderr}`);
  return parseUdpReplies(r.stdout)[0].seen;
}

async function ip(ns: string, args: string): Promise<void> {
  const r = await nsExecResult(ns, ["ip", ...args.split(" ")]);
  assertEquals(r.code, 0, `ip ${args}: ${r.stderr}`);
}

/** Deletes wan0 (and its switch-side peer) like a PPP link going away. */
async function deleteWan(t: Topology) {
  await ip(t.ns.router, "link del wan0");
}

/** Recreates wan0 with `addr` (new ifindex), plugged into the WAN switch. */
async function createWan(t: Topology, addr: string) {
  await ip(t.ns.router, `link add wan0 type veth peer name r netns ${t.ns.wan}`);
  await ip(t.ns.wan, "link set r master br0");
  await ip(t.ns.wan, "link set r up");
  await ip(t.ns.router, `addr add ${addr}/24 dev wan0`);
  await ip(t.ns.router, "link set wan0 up");
}

/** The router's IPv4 rules, as `ip rule show` prints them. */
async function rules(t: Topology): Promise<string> {
  return (await nsExecResult(t.ns.router, ["ip", "rule", "show"])).stdout;
}

/** The router's hairpin table (4787), as `ip route show table 4787` prints it. */
async function hairpinTable(t: Topology): Promise<string> {
  return (await nsExecResult(t.ns.router, ["ip", "route", "show", "table", "4787"])).stdout;
}

/** A second external interface in the router, wan1 (198.51.100.1/24), up. */
async function addWan1(t: Topology): Promise<void> {
  await ip(t.ns.router, "link add wan1 type veth peer name wan1p");
  await ip(t.ns.router, "link set wan1p up");
  await ip(t.ns.router, "addr add 198.51.100.1/24 dev wan1");
  await ip(t.ns.router, "link set wan1 up");
}

/** einat's traces on `dev` in the router: a clsact qdisc and the filters of both hooks. */
async function tcState(t: Topology, dev: string): Promise<string> {
  const tc = async (...args: string[]) =>
    (await nsExecResult(t.ns.router, ["tc", ...args])).stdout.trim();
  return [
    (await tc("qdisc", "show", "dev", dev)).split("\n").filter((l) => /clsact/.test(l)).join(""),
    await tc("filter", "show", "dev", dev, "egress"),
    await tc("filter", "show", "dev", dev, "ingress"),
  ].filter((l) => l).join("\n");
}

function echo(t: Topology): NsProcess {
  return t.spawn(t.ns.srv1, peerCmd("udp-echo", ["--port", "3478", "--timeout-ms", "60000"]));
}

Deno.test({
  name:
    "live: mappings survive an unrelated address change; a replaced address takes over new flows",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--metrics", "127.0.0.1:9482"]);
      try {
        const before = await seenFrom(t, 40000);
        await ip(t.ns.router, "addr add 203.0.113.99/24 dev wan0");
        await waitLog(einat, /network changed.*addr\+ 203\.0\.113\.99/);
        await ip(t.ns.router, "addr del 203.0.113.99/24 dev wan0");
        await waitLog(einat, /network changed.*addr- 203\.0\.113\.99/);
        assertEquals(
          await seenFrom(t, 40000),
          before,
          "same external endpoint after unrelated changes",
        );

        // The external address itself is replaced: new flows use the new one,
        // nothing keeps pointing at the old address.
        await ip(t.ns.router, "addr flush dev wan0");
        await ip(t.ns.router, "addr add 203.0.113.5/24 dev wan0");
        await waitLog(einat, /external addresses changed.*to="?203\.0\.113\.5/);
        const after = await seenFrom(t, 40000);
        assert(after.startsWith("203.0.113.5:"), `new address used: ${after}`);
        assert(
          /dropped_bindings=[1-9]/.test(einat.stderrText()),
          "bindings of the old address dropped",
        );
        // ... and counted where the datapath's counters cannot see them.
        const m = parseProm(
          await nsExec(t.ns.router, ["curl", "-sS", "http://127.0.0.1:9482/metrics"]),
        );
        const dropped = [...einat.stderrText().matchAll(/dropped_bindings=(\d+)/g)]
          .reduce((n, x) => n + Number(x[1]), 0); // every purge's, as the counter sums them
        assertEquals(m.get('einat_purged_total{interface="wan0",what="binding"}'), dropped);
        assert((m.get('einat_purged_total{interface="wan0",what="session"}') ?? 0) >= dropped);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "live: a secondary address replaced within one burst is applied, and hairpin routes follow every external address",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      await ip(t.ns.router, "addr add 203.0.113.99/24 dev wan0");
      const rulesBefore = await rules(t);
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0"]);
      /** What srv1 sees of the router's own UDP from `bind`:5555. */
      const routerSeen = async (bind: string) => {
        const r = await nsExecResult(
          t.ns.router,
          peerCmd("udp-send", [
            "--to",
            `${t.addrs.v4.srv1[0]}:3478`,
            "--bind",
            bind,
            "--from-port",
            "5555",
            "--timeout-ms",
            "3000",
          ]),
        );
        assertEquals(r.code, 0, `no reply: ${r.stdout}${r.stderr}`);
        return parseUdpReplies(r.stdout)[0].seen;
      };
      const table = () => hairpinTable(t);
      try {
        await waitLog(einat, /hairpin routing installed.*203\.0\.113\.99/);
        assertEquals(await routerSeen("203.0.113.99"), "203.0.113.99:5555", "own traffic passes");
        // Delete and add in one netlink burst: the count of externals stays the same.
        const b = await nsExecResult(t.ns.router, ["ip", "-batch", "-"], {
          stdin: "addr del 203.0.113.99/24 dev wan0\naddr add 203.0.113.98/24 dev wan0\n",
        });
        assertEquals(b.code, 0, b.stderr);
        await waitLog(einat, /external addresses changed.*203\.0\.113\.98/);
        assertEquals(await routerSeen("203.0.113.98"), "203.0.113.98:5555", "the new address too");
        await waitLog(einat, /hairpin routing installed.*203\.0\.113\.98/);
        const routes = await table();
        assert(/203\.0\.113\.98/.test(routes) && !/203\.0\.113\.99/.test(routes), routes);

        // The primary address replaced: its hairpin route is replaced too.
        await ip(t.ns.router, "addr flush dev wan0");
        await ip(t.ns.router, "addr add 203.0.113.5/24 dev wan0");
        await waitLog(einat, /hairpin routing installed.*dests="?203\.0\.113\.5"?( |$)/m);
        assert(/^203\.0\.113\.5 dev wan0/m.test(await table()), await table());
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      assertEquals((await table()).trim(), "", "hairpin table emptied at exit");
      assertEquals(await rules(t), rulesBefore, "rules restored (the local rule back at 0)");
    }),
});

Deno.test({
  name:
    "live: an IPv6 address whose DAD failed (another host's) or that is deprecated does not become the default external",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const a = t.addrs.v6;
      // srv1 owns 2001:db8:2::66; the router adds it too, with DAD: it fails.
      await ip(t.ns.srv1, "-6 addr add 2001:db8:2::66/64 dev eth0 nodad");
      const dad = await nsExecResult(t.ns.router, [
        "sysctl",
        "-qw",
        "net.ipv6.conf.wan0.accept_dad=1",
      ]);
      assertEquals(dad.code, 0, dad.stderr);
      await ip(t.ns.router, "-6 addr add 2001:db8:2::66/64 dev wan0");
      const end = Date.now() + 8000;
      while (true) {
        const r = await nsExecResult(t.ns.router, ["ip", "-6", "addr", "show", "dev", "wan0"]);
        if (/2001:db8:2::66\/64 .*dadfailed/.test(r.stdout)) break;
        assert(Date.now() < end, `DAD did not fail:\n${r.stdout}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await ip(t.ns.router, "-6 addr add 2001:db8:2::99/64 dev wan0 preferred_lft 0 nodad");
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--nat66"]);
      try {
        const ext = /external address ifname=wan0 addr=(\S+)/g;
        const chosen = [...einat.stderrText().matchAll(ext)].map((m) => m[1].replace(/"/g, ""));
        assert(chosen.includes(a.routerWan), `the preferred address: ${einat.stderrText()}`);
        assert(!/2001:db8:2::(66|99) /.test(chosen.join(" ") + " "), einat.stderrText());
        // The DAD-failed address is no external at all (another host's); the deprecated one is,
        // after the others.
        const others = /external address ifname=wan0 addr=\S+ .*others=(\S+)/.exec(
          einat.stderrText(),
        )?.[1].replace(/"/g, "").split(",") ?? [];
        assertEquals(others, ["2001:db8:2::99"], einat.stderrText());
        // Two external slots by default: the deprecated address, last, may get none; not ::1.
        assert(!/no slot .*addr=2001:db8:2::1 /.test(einat.stderrText()), einat.stderrText());
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }, { ipv6: true }),
});

Deno.test({
  name:
    "live: interface deleted and recreated (new ifindex, new address) is re-attached; a missing interface is waited for",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      await deleteWan(t);
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        assert(/waiting for it/.test(einat.stderrText()), einat.stderrText());
        assert(/session sweep idle: no interface served yet/.test(einat.stderrText()));
        await createWan(t, "203.0.113.7");
        await waitLog(einat, /attached filter.*hook=ingress/);
        assert((await seenFrom(t, 41000)).startsWith("203.0.113.7:"));

        await deleteWan(t);
        await waitLog(einat, /interface gone/);
        await createWan(t, "203.0.113.8");
        await waitLog(einat, /external addresses changed.*203\.0\.113\.8/);
        await waitLog(
          einat,
          /attached filter.*hook=ingress.*\n(.|\n)*attached filter.*hook=ingress/,
        );
        const seen = await seenFrom(t, 41000);
        assert(seen.startsWith("203.0.113.8:"), `after re-creation: ${seen}`);
        // The state's summary once (its counts at load would be stale), then "attached again".
        await waitLog(einat, /attached again ifname=wan0/);
        assertEquals(einat.stderrText().match(/pinned state (created|reused)/g)?.length, 1);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      const f = await nsExecResult(t.ns.router, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
      assertEquals(f.stdout.trim(), "", "nothing left on the recreated interface");
    }),
});

Deno.test({
  name:
    "live: an interface renamed away loses einat's filters; back under its name, it is served again",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        const before = await seenFrom(t, 44000);
        await ip(t.ns.router, "link set wan0 down");
        await ip(t.ns.router, "link set wan0 name wan1");
        await waitLog(einat, /interface renamed.*renamed_to="?wan1/);
        assertEquals(await tcState(t, "wan1"), "", "nothing of einat's left on the renamed link");
        await ip(t.ns.router, "link set wan1 name wan0");
        await ip(t.ns.router, "link set wan0 up");
        await waitLog(einat, /attached filter.*hook=ingress(.|\n)*attached filter.*hook=ingress/);
        assertEquals(await seenFrom(t, 44000), before, "the mapping kept (same object, same maps)");

        // Swapped within one burst: another link takes the name as wan0 leaves it.
        await ip(t.ns.router, "link add wannew type veth peer name wannewp");
        const swap = await nsExecResult(t.ns.router, ["ip", "-batch", "-"], {
          stdin: "link set wan0 name wanold\nlink set wannew name wan0\n",
        });
        assertEquals(swap.code, 0, swap.stderr);
        await waitLog(einat, /interface renamed.*renamed_to="?wanold/);
        assertEquals(await tcState(t, "wanold"), "", "nothing of einat's left on the old link");
        await ip(t.ns.router, "link set wanold name wan0x");
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      assertEquals(await tcState(t, "wan0"), "", "nothing left at exit");
      assertEquals(await tcState(t, "wan0x"), "", "nothing left on the old link at exit");
    }),
});

Deno.test({
  name:
    "live: the external interface named by index and listed as an internal one gets no hairpin rules (they would take the router's own inbound traffic)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const link = await nsExecResult(t.ns.router, ["ip", "-o", "link", "show", "wan0"]);
      const index = link.stdout.split(":")[0];
      const einat = await startEinat(t.ns.router, [
        "--ifindex",
        index,
        "--hairpin-if",
        "wan0",
        "br0",
      ]);
      try {
        await waitLog(einat, /WARN .*external interface is listed as internal.*ifname=wan0/);
        await waitLog(einat, /hairpin routing installed.*internal=br0 /);
        const r = await rules(t);
        assert(/iif br0/.test(r) && !/iif wan0/.test(r), r);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "live: two served interfaces whose names are swapped are both served again and keep their locks (a second einat is refused)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await addWan1(t);
      const index = async (dev: string) =>
        Number(
          (await nsExecResult(t.ns.router, ["ip", "-o", "link", "show", dev])).stdout.split(":")[0],
        );
      const [i0, i1] = [await index("wan0"), await index("wan1")];
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const iface = (n: string) =>
        `[[interfaces]]\nif_name = "${n}"\nnat44 = true\nprefer_tcx = false\n`;
      await Deno.writeTextFile(conf, iface("wan0") + iface("wan1"));
      const einat = await startEinat(t.ns.router, ["-c", conf]);
      try {
        const swap = await nsExecResult(t.ns.router, ["ip", "-batch", "-"], {
          stdin: "link set wan0 name wanx\nlink set wan1 name wan0\nlink set wanx name wan1\n",
        });
        assertEquals(swap.code, 0, swap.stderr);
        await waitLog(einat, /(attached again(.|\n)*){2}/, 8000);
        await new Promise((r) => setTimeout(r, 500));
        const ns = (await nsExec(t.ns.router, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]))
          .trim();
        for (const i of [i0, i1]) {
          const lock = `/run/einat/${ns}-${i}.pid`;
          assert(
            await Deno.stat(lock).then(() => true, () => false),
            `${lock}:\n${einat.stderrText()}`,
          );
        }
        assert(!/another einat's program now/.test(einat.stderrText()), einat.stderrText());
        // So a second einat is refused on the interface, not let in over the first's program.
        const second = await startEinat(t.ns.router, ["-i", "wan0"]).then(
          async (p) => `it ran:\n${p.stderrText()}${(p.kill("SIGKILL"), await p.output(5000), "")}`,
          (e) => (e as Error).message,
        );
        assert(/already served by einat/.test(second), second);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "live: the interface made again as a link of another kind (Ethernet, then TUN, then Ethernet) gets its object loaded again for it, and translates",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        const before = await seenFrom(t, 44300);
        await deleteWan(t);
        await ip(t.ns.router, "tuntap add dev wan0 mode tun");
        await ip(t.ns.router, `addr add ${t.addrs.v4.routerWan}/24 dev wan0`);
        await ip(t.ns.router, "link set wan0 up");
        await waitLog(einat, /link type changed; loading its BPF object again.*l2=none/);
        await waitLog(einat, /loaded BPF object.*l2=none/);
        // The new object counts what it carries over (and marks it in its free-port hint).
        await waitLog(einat, /loaded BPF object.*l2=none(.|\n)*pinned state reused.*bindings=1/);
        await ip(t.ns.router, "link del wan0");
        await createWan(t, t.addrs.v4.routerWan);
        await waitLog(einat, /link type changed(.|\n)*link type changed.*l2=ethernet/);
        await waitLog(
          einat,
          /loaded BPF object.*l2=none(.|\n)*loaded BPF object.*l2=ethernet(.|\n)*attached/,
        );
        assertEquals(await seenFrom(t, 44300), before, "translating, the mapping carried over");
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
      assertEquals(await tcState(t, "wan0"), "", "nothing left at exit");
    }),
});

Deno.test({
  name:
    "live: a name another einat held a moment before is served once that einat lets go (tried again, not left unserved until some other event)",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const a = await startEinat(t.ns.router, ["-i", "wan0"]);
      let b: NsProcess | null = null;
      try {
        await ip(t.ns.router, "link set wan0 name wanb");
        await waitLog(a, /interface renamed.*renamed_to="?wanb/);
        b = await startEinat(t.ns.router, ["-i", "wanb"]);
        b.kill("SIGSTOP"); // it lets go of the name only after einat A has met its lock
        await ip(t.ns.router, "link set wanb name wan0");
        await waitLog(a, /reconfiguration failed.*already served by einat/);
        b.kill("SIGCONT");
        await waitLog(b, /interface renamed.*renamed_to="?wan0/);
        const attached = () =>
          a.stderrText().match(/attached (filter|TCX links).*ingress/g)?.length;
        const end = Date.now() + 8000;
        while ((attached() ?? 0) < 2 && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assertEquals(attached(), 2, a.stderrText());
        assertNotEquals(await seenFrom(t, 44100), "", "served again");
      } finally {
        if (b) {
          b.kill("SIGCONT");
          assertEquals(await stopEinat(b), 0, b.stderrText());
        }
        assertEquals(await stopEinat(a), 0, a.stderrText());
      }
      assertEquals(await tcState(t, "wan0"), "", "nothing left at exit");
    }),
});

Deno.test({
  name:
    "live: SIGHUP leaves an unchanged interface configured by index alone; two external interfaces share hairpin rules until the last lets go",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      // A second external interface, its hairpin rules the same as wan0's (iif br0, table 4787).
      await addWan1(t);
      const link = await nsExecResult(t.ns.router, ["ip", "-o", "link", "show", "wan0"]);
      const wan0Index = Number(link.stdout.split(":")[0]);
      assert(wan0Index > 0, link.stdout);
      const iface = (id: string) =>
        `[[interfaces]]\n${id}\nnat44 = true\nprefer_tcx = false\n` +
        `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["br0"]\n`;
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const rulesBefore = await rules(t);
      try {
        await Deno.writeTextFile(
          conf,
          iface(`if_index = ${wan0Index}`) + iface(`if_name = "wan1"`),
        );
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        try {
          await waitLog(einat, /hairpin routing installed(.|\n)*hairpin routing installed/);
          const rulesServing = await rules(t);
          assert(/iif br0 .*lookup 4787/.test(rulesServing), rulesServing);
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration reloaded interfaces=wan0,wan1 unchanged=wan0,wan1/);
          assert(
            !/SIGHUP: (new interface|interface removed|configuration changed)/.test(
              einat.stderrText(),
            ),
            einat.stderrText(),
          );
          assertEquals(await rules(t), rulesServing, "an unchanged reload touches no rule");

          // A new local rule preference restarts both and moves the local rule there.
          await Deno.writeTextFile(
            conf,
            "[defaults]\nipv4_local_rule_pref = 300\n" + iface(`if_index = ${wan0Index}`) +
              iface(`if_name = "wan1"`),
          );
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration reloaded(.|\n)*configuration reloaded/);
          const moved = await rules(t);
          assert(/^300:\s+from all lookup local/m.test(moved), moved);
          assert(!/^200:\s+from all lookup local/m.test(moved), moved);

          // wan0 leaves the configuration: wan1 still holds the shared rules.
          await Deno.writeTextFile(conf, iface(`if_name = "wan1"`));
          einat.kill("SIGHUP");
          await waitLog(einat, /(configuration reloaded(.|\n)*){3}/);
          assert(/interface removed from the configuration/.test(einat.stderrText()));
          const left = await rules(t);
          assert(/iif br0 .*lookup 4787/.test(left), `wan1's hairpin rules gone:\n${left}`);
          assertEquals(await tcState(t, "wan0"), "", "wan0 released");
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        assertEquals(await rules(t), rulesBefore, "rules restored (the local rule back at 0)");
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "live: two einats on two WANs share the hairpin rules and the moved local rule; the last to stop puts them back",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await addWan1(t);
      const rulesBefore = await rules(t);
      const table = () => hairpinTable(t);
      // --replace with nothing to replace must not make A take every rule ahead as its own.
      const a = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0", "--replace"]);
      let b: NsProcess | null = null;
      try {
        await waitLog(a, /hairpin routing installed/);
        b = await startEinat(t.ns.router, ["-i", "wan1", "--hairpin-if", "br0"]);
        await waitLog(b, /hairpin routing installed/);
        assert(/^200:\s+from all lookup local/m.test(await rules(t)), await rules(t));
        assertEquals(await stopEinat(a), 0, a.stderrText());
        const left = await rules(t);
        assert(/iif br0 .*lookup 4787/.test(left), `B's hairpin rules gone with A:\n${left}`);
        assert(/^200:\s+from all lookup local/m.test(left), `local rule moved back:\n${left}`);
        assert(/^198\.51\.100\.1 dev wan1/m.test(await table()), await table());
        assertEquals(await stopEinat(b), 0, b.stderrText());
        b = null;
      } finally {
        if (a.running()) await stopEinat(a);
        if (b) await stopEinat(b);
      }
      assertEquals(await rules(t), rulesBefore, "rules as before (the local rule back at 0)");
      assertEquals((await table()).trim(), "", "table 4787 emptied");
    }),
});

Deno.test({
  name: "live: SIGHUP reloads amid address churn: one object per restart, nothing left at exit",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (icmp: string) =>
        Deno.writeTextFile(
          conf,
          `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nprefer_tcx = false\ntimeout_icmp_default = "${icmp}"\n`,
        );
      try {
        await write("60s");
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        const reloads = 8;
        try {
          for (let i = 0; i < reloads; i++) {
            // An address event and a reload close together: the reload must not run beside
            // the reconciliation the event starts.
            await ip(t.ns.router, `addr ${i % 2 ? "del" : "add"} 203.0.113.77/24 dev wan0`);
            await write(i % 2 ? "60s" : "61s");
            // The reconciliation starts ~100 ms after the event (events are coalesced): the
            // SIGHUP lands at varied points around it.
            await new Promise((r) => setTimeout(r, 40 + 15 * i));
            einat.kill("SIGHUP");
            const done = new RegExp(`(configuration reloaded(.|\\n)*){${i + 1}}`);
            await waitLog(einat, done);
          }
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        const loads = einat.stderrText().match(/loaded BPF object/g)?.length ?? 0;
        assertEquals(
          loads,
          1 + reloads,
          `one object at start and one per changed reload:\n${einat.stderrText()}`,
        );
        assertEquals(await tcState(t, "wan0"), "", `nothing left at exit:\n${einat.stderrText()}`);
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "live: SIGHUP reloads the configuration file and applies the new port range to new mappings; an existing one keeps its port",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (range: string) =>
        Deno.writeTextFile(
          conf,
          `[defaults]\ntcp_ranges = ["${range}"]\nudp_ranges = ["${range}"]\n[[interfaces]]\nif_name = "wan0"\nnat44 = true\n`,
        );
      try {
        await write("20000-20099");
        const einat = await startEinat(t.ns.router, ["-c", conf]);
        try {
          const a = Number((await seenFrom(t, 42000)).split(":")[1]);
          assert(a >= 20000 && a <= 20099, `first range: ${a}`);
          // Overlapping ranges are merged, and the reload says so, as a start does.
          await write('30000-30099", "30050-30099');
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration reloaded/);
          assert(
            /WARN .*SIGHUP: warning: .*tcp_ranges\[1\]: range "30050-30099" overlaps "30000-30099"/
              .test(einat.stderrText()),
            einat.stderrText(),
          );
          const b = Number((await seenFrom(t, 42001)).split(":")[1]);
          assert(b >= 30000 && b <= 30099, `reloaded range: ${b}`);
          // An existing mapping keeps its port (as a conntrack entry outlives a rule change).
          const a2 = Number((await seenFrom(t, 42000)).split(":")[1]);
          assertEquals(a2, a, "the mapping made before the reload keeps its port");
          await Deno.writeTextFile(conf, "[[interfaces]]\nif_nme = 1\n");
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration not reloaded.*if_nme/);
          assertNotEquals(await seenFrom(t, 42002), "", "still serving after a bad reload");
          // A file gone: said in a line, the running configuration kept.
          const kept = await Deno.readTextFile(conf);
          await Deno.remove(conf);
          einat.kill("SIGHUP");
          await waitLog(
            einat,
            /configuration not reloaded.*: --config: cannot read the config file: no such file/,
          );
          // A file left without interfaces (an editor's truncation): refused, NAT kept on.
          await Deno.writeTextFile(conf, "# nothing\n");
          einat.kill("SIGHUP");
          await waitLog(einat, /configuration not reloaded.*no \[\[interfaces\]\] entry/);
          assertNotEquals(await seenFrom(t, 42003), "", "still serving after an empty file");
          assert(!/interface removed from the configuration/.test(einat.stderrText()));
          await Deno.writeTextFile(conf, kept);
          // A new local rule preference does not restart an interface without hairpin routing.
          await write("30000-30099");
          await Deno.writeTextFile(
            conf,
            (await Deno.readTextFile(conf)).replace(
              "[defaults]\n",
              "[defaults]\nipv4_local_rule_pref = 300\n",
            ),
          );
          const restarts = () => einat.stderrText().match(/restarting interface/g)?.length ?? 0;
          const before = restarts();
          einat.kill("SIGHUP");
          await waitLog(einat, /(configuration reloaded(.|\n)*){2}/);
          assertEquals(restarts(), before, "not restarted for a preference it does not use");
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "live: a reload refused for want of an address (NAT66 alone, no IPv6 address) is applied when the address comes",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const v4 = t.addrs.v4, v6 = t.addrs.v6;
      const srv = t.spawn(
        t.ns.srv1,
        peerCmd("udp-echo", [
          "--port",
          "3478",
          "--bind",
          v4.srv1[0],
          "--bind",
          v6.srv1[0],
          "--timeout-ms",
          "60000",
        ]),
      );
      await srv.waitForStdout(/listening/);
      await ip(t.ns.router, `-6 addr del ${v6.routerWan}/64 dev wan0`);
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (nat44: boolean) =>
        Deno.writeTextFile(
          conf,
          `[[interfaces]]\nif_name = "wan0"\nnat44 = ${nat44}\nnat66 = ${!nat44}\n`,
        );
      try {
        await write(true);
        const einat = await startEinat(t.ns.router, ["-c", conf, "--metrics", "127.0.0.1:9482"]);
        const pending = async () => {
          const body = await nsExec(t.ns.router, ["curl", "-sS", "http://127.0.0.1:9482/metrics"]);
          return parseProm(body).get('einat_reload_pending{interface="wan0"}');
        };
        try {
          const mapped = await seenFrom(t, 44100);
          assertEquals(await pending(), 0);
          assert(mapped.startsWith(`${v4.routerWan}:`), mapped);
          await write(false);
          einat.kill("SIGHUP");
          await waitLog(einat, /pending="until the address comes"(.|\n)*configuration reloaded/);
          assert(
            /WARN .*the new configuration waits for an address/.test(einat.stderrText()) &&
              !/ERROR/.test(einat.stderrText()),
            einat.stderrText(),
          );
          assertEquals(await seenFrom(t, 44100), mapped, "the running configuration serves");
          assertEquals(await pending(), 1, "the metrics say a reload waits");
          // The interface goes and comes back (PPP-style) without the address: still waiting.
          await deleteWan(t);
          await waitLog(einat, /network changed.*link- wan0/);
          await createWan(t, v4.routerWan);
          await waitLog(einat, /attached again/);
          const again = await seenFrom(t, 44101);
          assert(again.startsWith(`${v4.routerWan}:`), `NAT44 still serves: ${again}`);
          assert(!/applied, its address came/.test(einat.stderrText()), einat.stderrText());
          await ip(t.ns.router, `-6 addr add ${v6.routerWan}/64 dev wan0 nodad`);
          await waitLog(einat, /pending configuration: applied, its address came/);
          assertEquals(await pending(), 0);
          // The new configuration serves: NAT66 on, NAT44 off (IPv4 leaves untranslated).
          const r = await nsExecResult(
            t.ns.lan1,
            peerCmd("udp-send", ["--to", `[${v6.srv1[0]}]:3478`, "--timeout-ms", "3000"]),
          );
          assertEquals(r.code, 0, `no IPv6 reply through the NAT: ${r.stdout}${r.stderr}`);
          const seen6 = parseUdpReplies(r.stdout)[0].seen;
          assert(seen6.startsWith(`[${v6.routerWan}]:`), seen6);
          await nsExecResult(
            t.ns.lan1,
            peerCmd("udp-send", ["--to", `${v4.srv1[0]}:3478`, "--timeout-ms", "500"]),
          );
          assert(
            srv.stdoutText().includes(`seen ${v4.lan1}:`),
            `IPv4 untranslated: ${srv.stdoutText()}`,
          );
        } finally {
          assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
        assertEquals(await tcState(t, "wan0"), "", "nothing left at exit");
      } finally {
        srv.kill("SIGKILL");
        await srv.output(3000).catch(() => {});
        await Deno.remove(conf);
      }
    }, { ipv6: true }),
});

Deno.test({
  name:
    "live: an einat without --hairpin-if removes the hairpin routing a SIGKILLed einat left on its interface, not another WAN's",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await addWan1(t);
      const wanAddr = t.addrs.v4.routerWan;
      const table = () => hairpinTable(t);
      const neigh = async () =>
        (await nsExecResult(t.ns.router, ["ip", "neigh", "show", "dev", "wan0"])).stdout;
      const own = new RegExp(`^${wanAddr.replaceAll(".", "\\.")} `, "m");
      /** einat on wan0 with hairpin routing, killed once it is installed. */
      const killHairpinned = async () => {
        const k = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0"]);
        await waitLog(k, /hairpin routing installed/);
        k.kill("SIGKILL");
        await k.output(5000).catch(() => {});
        assert(own.test(await table()), `left by the killed einat:\n${await table()}`);
        assert(own.test(await neigh()), `its neighbour entry:\n${await neigh()}`);
      };
      const next = async (check: (log: string) => Promise<void>) => {
        const n = await startEinat(t.ns.router, ["-i", "wan0"]);
        try {
          await waitLog(n, /removed the hairpin routing an earlier einat left/);
          assert(!/dev wan0/.test(await table()), `wan0's routes gone:\n${await table()}`);
          assert(!own.test(await neigh()), `its neighbour entry gone:\n${await neigh()}`);
          assertNotEquals(await seenFrom(t, 44200), "", "translating");
          await check(n.stderrText());
        } finally {
          assertEquals(await stopEinat(n), 0, n.stderrText());
        }
      };
      await echo(t).waitForStdout(/listening/);
      // Another WAN's einat shares the table and the rules: they stay.
      const b = await startEinat(t.ns.router, ["-i", "wan1", "--hairpin-if", "br0"]);
      try {
        await waitLog(b, /hairpin routing installed/);
        await killHairpinned();
        await next(async () => {
          assert(/^198\.51\.100\.1 dev wan1/m.test(await table()), await table());
          assert(/iif br0 .*lookup 4787/.test(await rules(t)), await rules(t));
        });
      } finally {
        assertEquals(await stopEinat(b), 0, b.stderrText());
      }
      // Alone: the rules go with the table's last route; the moved local rule is reported.
      await killHairpinned();
      await next(async (log) => {
        assertEquals((await table()).trim(), "");
        assert(!/iif br0/.test(await rules(t)), await rules(t));
        assert(/local_rule_left_at=200/.test(log), log);
      });
      // The link taken down and up meanwhile (the kernel drops the routes, not the rules): the
      // rules of the empty table go all the same.
      await killHairpinned();
      await ip(t.ns.router, "link set wan0 down");
      await ip(t.ns.router, "link set wan0 up");
      assert(!own.test(await table()), `the routes went with the link:\n${await table()}`);
      const n2 = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        await waitLog(
          n2,
          /removed the hairpin rules an earlier einat left \(their table is empty\)/,
        );
        assert(!/iif br0/.test(await rules(t)), await rules(t));
      } finally {
        assertEquals(await stopEinat(n2), 0, n2.stderrText());
      }
      // ... but not while another einat runs: its link down took its routes too, not its rules.
      const w1 = await startEinat(t.ns.router, ["-i", "wan1", "--hairpin-if", "br0"]);
      try {
        await waitLog(w1, /hairpin routing installed/);
        await ip(t.ns.router, "link set wan1 down");
        assertEquals((await table()).trim(), "", "the table empty with wan1 down");
        const n3 = await startEinat(t.ns.router, ["-i", "wan0"]);
        assertEquals(await stopEinat(n3), 0, n3.stderrText());
        assert(!/removed the hairpin rules/.test(n3.stderrText()), n3.stderrText());
        assert(/iif br0 .*lookup 4787/.test(await rules(t)), await rules(t));
        await ip(t.ns.router, "link set wan1 up");
      } finally {
        assertEquals(await stopEinat(w1), 0, w1.stderrText());
      }
      // A reload that turns hairpin routing off: the running instance removes its own, and
      // nothing is reported as an earlier einat's.
      const conf = await Deno.makeTempFile({ suffix: ".toml" });
      const write = (hairpin: boolean) =>
        Deno.writeTextFile(
          conf,
          `[[interfaces]]\nif_name = "wan0"\nnat44 = true\n` +
            (hairpin ? `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["br0"]\n` : ""),
        );
      try {
        await write(true);
        const r = await startEinat(t.ns.router, ["-c", conf]);
        try {
          await waitLog(r, /hairpin routing installed/);
          await write(false);
          r.kill("SIGHUP");
          await waitLog(r, /configuration reloaded/);
          assertEquals((await table()).trim(), "", "its routes removed");
          assert(!/iif br0/.test(await rules(t)), await rules(t));
          assert(!/earlier einat left/.test(r.stderrText()), r.stderrText());
        } finally {
          assertEquals(await stopEinat(r), 0, r.stderrText());
        }
      } finally {
        await Deno.remove(conf);
      }
    }),
});

Deno.test({
  name:
    "live: a link flap (down, up) keeps the mappings and the translation; an MTU or promiscuity change, or addresses' lifetimes renewed, is no network change",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await echo(t).waitForStdout(/listening/);
      const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
      try {
        const before = await seenFrom(t, 43000);
        for (const c of ["mtu 1400", "promisc on", "promisc off", "mtu 1500"]) {
          await ip(t.ns.router, `link set wan0 ${c}`);
        }
        // Lifetimes renewed, as a Router Advertisement renews a SLAAC address's every few
        // minutes: the same address with the same flags einat acts on.
        for (const lft of ["100 valid_lft 200", "90 valid_lft 200", "forever valid_lft forever"]) {
          await ip(
            t.ns.router,
            `-6 addr change ${t.addrs.v6.routerWan}/64 dev wan0 nodad preferred_lft ${lft}`,
          );
          await ip(
            t.ns.router,
            `addr change ${t.addrs.v4.routerWan}/24 dev wan0 preferred_lft ${lft}`,
          );
        }
        await new Promise((r) => setTimeout(r, 400)); // past the watch's coalescing (100 ms)
        assert(!/network changed/.test(einat.stderrText()), einat.stderrText());
        await ip(t.ns.router, "link set wan0 down");
        await waitLog(einat, /network changed.*link\+ wan0 down/);
        await ip(t.ns.router, "link set wan0 up");
        await waitLog(einat, /network changed.*link\+ wan0 up/);
        await new Promise((r) => setTimeout(r, 300));
        assertEquals(await seenFrom(t, 43000), before, "same external endpoint after the flap");
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});

Deno.test({
  name:
    "live: an external network that overlaps an internal one is reported (RFC 4787 REQ-7), and its end too",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const einat = await startEinat(t.ns.router, ["-i", "wan0", "--hairpin-if", "br0"]);
      try {
        await waitLog(einat, /hairpin routing installed/);
        assert(!/overlaps internal network/.test(einat.stderrText()), "no conflict at start");
        // The WAN gets an address in a network that overlaps the LAN's 192.0.2.0/24.
        await ip(t.ns.router, "addr add 192.0.2.200/25 dev wan0");
        await waitLog(
          einat,
          /external network 192\.0\.2\.128\/25 \(wan0\) overlaps internal network 192\.0\.2\.0\/24 \(br0\)/,
        );
        await ip(t.ns.router, "addr del 192.0.2.200/25 dev wan0");
        await waitLog(einat, /no longer overlap/);
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});
