import assert from "node:assert/strict";
import {
  listNamespaces,
  nsExecResult,
  peerCmd,
  runResult,
  spawnInNs,
  testPrefix,
  type Topology,
  withTopology,
} from "./netns.ts";
import { parseSeen, parseUdpReplies } from "./peer.ts";

const isRoot = Deno.uid() === 0;
const hasPing = (await runResult(["sh", "-c", "command -v ping"])).code === 0;
if (!isRoot) console.log("netns_test: skipped, needs root");

Deno.test({
  name: "netns: topology connectivity and teardown",
  ignore: !isRoot,
  // One topology for all steps keeps the test fast; steps run in order.
  fn: async (t) => {
    let prefix = "";
    let leftover: ReturnType<typeof spawnInNs> | undefined;
    await withTopology(async (topo: Topology) => {
      prefix = topo.prefix;
      assert.match(prefix, new RegExp(`^${testPrefix()}-t[0-9a-f]{6}-$`));
      const names = await listNamespaces(prefix);
      assert.deepEqual(names.sort(), Object.values(topo.ns).sort());

      await t.step({
        name: "lan1 pings the router (v4 and v6)",
        ignore: !hasPing,
        fn: async () => {
          if (!hasPing) return;
          await topo.exec(topo.ns.lan1, ["ping", "-c", "1", "-W", "2", topo.addrs.v4.routerLan]);
          await topo.exec(topo.ns.lan1, ["ping", "-c", "1", "-W", "2", topo.addrs.v6.routerLan]);
          // Router reaches both servers' addresses over the WAN switch.
          await topo.exec(topo.ns.router, ["ping", "-c", "1", "-W", "2", topo.addrs.v4.srv2[1]]);
          await topo.exec(topo.ns.router, ["ping", "-c", "1", "-W", "2", topo.addrs.v6.srv1[1]]);
        },
      });
      if (!hasPing) console.log("netns_test: ping not installed, ping step skipped");

      await t.step("srv1 has no route to the LAN", async () => {
        const r4 = await nsExecResult(topo.ns.srv1, ["ip", "route", "get", topo.addrs.v4.lan1]);
        assert.notEqual(r4.code, 0, r4.stdout);
        const r6 = await nsExecResult(topo.ns.srv1, [
          "ip",
          "-6",
          "route",
          "get",
          topo.addrs.v6.lan1,
        ]);
        assert.notEqual(r6.code, 0, r6.stdout);
      });

      await t.step("UDP between srv1 and srv2 via peer.ts (v4 and v6)", async () => {
        const echo = topo.spawn(
          topo.ns.srv2,
          peerCmd("udp-echo", ["--port", "7000", "--count", "3"]),
        );
        await echo.waitForStdout("listening udp");
        const send = topo.spawn(
          topo.ns.srv1,
          peerCmd("udp-send", [
            "--to",
            `${topo.addrs.v4.srv2[1]}:7000`,
            "--to",
            `[${topo.addrs.v6.srv2[0]}]:7000`,
            "--from-port",
            "4444",
            "--count",
            "1",
            "--bind",
            "::",
          ]),
        );
        const out = await send.output();
        assert.equal(out.code, 0, out.stdout + out.stderr);
        const replies = parseUdpReplies(out.stdout);
        assert.deepEqual(replies.map((r) => r.from), [
          `${topo.addrs.v4.srv2[1]}:7000`,
          `[${topo.addrs.v6.srv2[0]}]:7000`,
        ]);
        // Which srv1 address is the source is up to the kernel; the port is the bound one.
        assert.match(replies[0].seen, /^203\.0\.113\.1[12]:4444$/);
        assert.match(replies[1].seen, /^\[2001:db8:2::1[12]\]:4444$/);
        // The v6 socket can also talk to a plain v4 socket.
        const send4 = topo.spawn(
          topo.ns.srv1,
          peerCmd("udp-send", ["--to", `${topo.addrs.v4.srv2[0]}:7000`, "--from-port", "4445"]),
        );
        const out4 = await send4.output();
        assert.equal(out4.code, 0, out4.stdout + out4.stderr);
        const r4 = parseUdpReplies(out4.stdout);
        assert.equal(r4.length, 1);
        assert.match(r4[0].seen, /^203\.0\.113\.1[12]:4445$/);
        const echoOut = await echo.output();
        assert.equal(echoOut.code, 0);
        assert.deepEqual(parseSeen(echoOut.stdout), [...replies, ...r4].map((r) => r.seen));
      });

      await t.step("TCP between srv2 and srv1 via peer.ts", async () => {
        const echo = topo.spawn(
          topo.ns.srv1,
          peerCmd("tcp-echo", ["--port", "7001", "--count", "1"]),
        );
        await echo.waitForStdout("listening tcp");
        const send = topo.spawn(
          topo.ns.srv2,
          peerCmd("tcp-send", [
            "--to",
            `${topo.addrs.v4.srv1[0]}:7001`,
            "--from-port",
            "5555",
            "--bind",
            topo.addrs.v4.srv2[0],
            "--data",
            "abc\n",
          ]),
        );
        const out = await send.output();
        assert.equal(out.code, 0, out.stdout + out.stderr);
        assert.deepEqual(parseSeen(out.stdout), [`${topo.addrs.v4.srv2[0]}:5555`]);
        assert.ok(out.stdout.includes("\nabc\n"), out.stdout);
        assert.equal((await echo.output()).code, 0);
      });

      await t.step("lan1 cannot reach srv1 without NAT", async () => {
        const send = topo.spawn(
          topo.ns.lan1,
          peerCmd("udp-send", [
            "--to",
            `${topo.addrs.v4.srv1[0]}:7002`,
            "--reply-timeout-ms",
            "300",
          ]),
        );
        const echo = topo.spawn(
          topo.ns.srv1,
          peerCmd("udp-echo", ["--port", "7002", "--timeout-ms", "1500"]),
        );
        await echo.waitForStdout("listening udp");
        const out = await send.output();
        // The datagram may or may not arrive (depending on start order), the reply cannot.
        assert.equal(out.code, 3, out.stdout);
        assert.equal(parseUdpReplies(out.stdout).length, 0);
      });

      // A long-running child that destroy() must kill.
      leftover = spawnInNs(topo.ns.lan2, ["sleep", "30"]);
      assert.ok(leftover.running());
    });
    assert.deepEqual(await listNamespaces(prefix), []);
    const st = await leftover!.status;
    assert.equal(st.success, false);
  },
});

Deno.test({
  name: "netns: withTopology destroys on failure",
  ignore: !isRoot,
  fn: async () => {
    let prefix = "";
    await assert.rejects(
      withTopology((topo) => {
        prefix = topo.prefix;
        topo.spawn(topo.ns.srv1, ["sleep", "30"]);
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.notEqual(prefix, "");
    assert.deepEqual(await listNamespaces(prefix), []);
  },
});

Deno.test({
  name: "netns: SIGINT tears the topology down",
  ignore: !isRoot,
  fn: async () => {
    const script = `
      import { createTopology } from ${JSON.stringify(new URL("./netns.ts", import.meta.url).href)};
      const t = await createTopology({ ipv6: false });
      console.log("ready " + t.prefix);
      await new Promise((r) => setTimeout(r, 20000));
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", "--no-lock", script],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    for (let i = 0; i < 100 && !text.includes("\n"); i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const prefix = /ready (\S+)/.exec(text)?.[1];
    try {
      assert.ok(prefix, text);
      assert.equal((await listNamespaces(prefix)).length, 6);
      Deno.kill(child.pid, "SIGINT");
      const st = await child.status;
      assert.equal(st.code, 130);
      assert.deepEqual(await listNamespaces(prefix), []);
    } finally {
      try {
        Deno.kill(child.pid, "SIGKILL");
      } catch { /* exited */ }
      await child.status;
      reader.releaseLock();
      await child.stdout.cancel();
      await child.stderr.cancel();
      if (prefix) {
        for (const n of await listNamespaces(prefix)) await runResult(["ip", "netns", "del", n]);
      }
    }
  },
});
