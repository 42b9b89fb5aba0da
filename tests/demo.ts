/**
 * The demo (README's first command): builds namespaces, runs einat in the
 * router, sends real UDP/TCP/ICMP traffic, prints what the servers saw and a
 * verdict, measures a short TCP throughput, and tears everything down (also
 * on Ctrl-C).
 * @module
 */
import { startEinat, stopEinat } from "./lib/einat.ts";
import { startUdpEchoes, udpToEach } from "./lib/traffic.ts";
import { nsExecResult, peerCmd, type Topology, withTopology } from "./lib/netns.ts";
import { parseSeen, parseUdpReplies } from "./lib/peer.ts";
import { natDiscovery, startStunServer } from "./lib/stun.ts";

const ok = (b: boolean) => (b ? "PASS" : "FAIL");

async function demo(t: Topology): Promise<boolean> {
  const a = t.addrs.v4;
  console.log(
    `topology: lan1 ${a.lan1}, lan2 ${a.lan2} -> router (einat on wan0 ${a.routerWan}) -> ` +
      `srv1 ${a.srv1.join(",")}, srv2 ${a.srv2.join(",")}`,
  );
  const einat = await startEinat(t.ns.router, ["-i", "wan0"]);
  console.log("einat started in the router namespace:");
  for (const l of einat.stderrText().trim().split("\n")) console.log(`  | ${l}`);
  const verdicts: [string, boolean][] = [];
  try {
    await startUdpEchoes(t, 3478, 30000);
    const { replies: r } = await udpToEach(
      t,
      t.ns.lan1,
      [
        `${a.srv1[0]}:3478`,
        `${a.srv2[0]}:3478`,
      ],
      40000,
      5000,
    );
    console.log("\nUDP from lan1 port 40000:");
    for (const x of r) console.log(`  server ${x.from} saw the flow from ${x.seen}`);
    const eim = r.length === 2 && r[0].seen === r[1].seen &&
      r[0].seen.startsWith(a.routerWan + ":");
    verdicts.push([
      "endpoint-independent mapping (same external address:port to both servers)",
      eim,
    ]);

    const extPort = r[0]?.seen.split(":")[1];
    const third = await nsExecResult(
      t.ns.srv1,
      peerCmd("udp-send", [
        "--bind",
        a.srv1[1],
        "--to",
        `${a.routerWan}:${extPort}`,
        "--timeout-ms",
        "4000",
      ]),
    );
    const got = parseUdpReplies(third.stdout);
    console.log(
      `  unsolicited ${a.srv1[1]} -> ${a.routerWan}:${extPort}: ${
        got.length ? "lan1 answered" : "no answer"
      }`,
    );
    verdicts.push([
      "endpoint-independent filtering (a never-contacted host reaches lan1)",
      third.code === 0,
    ]);

    const lan2 = await nsExecResult(
      t.ns.lan2,
      peerCmd("udp-send", [
        "--to",
        `${a.srv1[0]}:3478`,
        "--from-port",
        "40000",
        "--timeout-ms",
        "4000",
      ]),
    );
    const l2 = parseUdpReplies(lan2.stdout)[0]?.seen ?? "none";
    console.log(`  lan2 port 40000 seen as ${l2}`);
    verdicts.push([
      "no port overloading (lan2, same source port, gets another port)",
      l2 !== "none" && l2 !== r[0]?.seen,
    ]);

    // The same question put by a third-party tool: coturn's RFC 5780 behaviour discovery (the
    // server answers from its second address and alternate port when asked to).
    await startStunServer(t.ns.srv2, a.srv2, 3490);
    const stun = await natDiscovery(t.ns.lan2, a.srv2[0], { hairpin: false, port: 3490 });
    console.log(
      `\nRFC 5780 discovery (coturn's turnutils_natdiscovery, lan2 -> ${a.srv2[0]}): ` +
        `mapping ${stun.mapping ?? "no verdict"}, filtering ${stun.filtering ?? "no verdict"}`,
    );
    verdicts.push([
      "RFC 5780 discovery by coturn: Endpoint Independent Mapping and Filtering",
      stun.mapping === "Endpoint Independent" && stun.filtering === "Endpoint Independent",
    ]);

    const tcpEcho = t.spawn(
      t.ns.srv2,
      peerCmd("tcp-echo", ["--port", "8080", "--count", "1", "--timeout-ms", "10000"]),
    );
    await tcpEcho.waitForStdout(/listening/);
    const tcp = await nsExecResult(
      t.ns.lan1,
      peerCmd("tcp-send", [
        "--to",
        `${a.srv2[1]}:8080`,
        "--data",
        "hello-tcp",
        "--timeout-ms",
        "5000",
      ]),
    );
    const tcpSeen = parseSeen(tcp.stdout)[0] ?? "none";
    console.log(
      `\nTCP lan1 -> ${a.srv2[1]}:8080: server saw ${tcpSeen}, echo ${
        tcp.stdout.includes("hello-tcp") ? "received" : "missing"
      }`,
    );
    verdicts.push(["TCP through the NAT", tcp.code === 0 && tcpSeen.startsWith(a.routerWan + ":")]);

    const ping = await nsExecResult(t.ns.lan1, [
      "ping",
      "-c",
      "3",
      "-i",
      "0.2",
      "-W",
      "2",
      a.srv1[0],
    ]);
    console.log(
      `\nping lan1 -> ${a.srv1[0]}: ${
        ping.stdout.match(/\d+ packets transmitted.*/)?.[0] ?? ping.stderr
      }`,
    );
    verdicts.push(["ICMP echo through the NAT", ping.code === 0]);

    // Another IP protocol (47, GRE's number; raw sockets, no tunnel module needed): address-only
    // NAT, as masquerade does it.
    const rawEcho = t.spawn(t.ns.srv1, peerCmd("raw-echo", ["--proto", "47", "--count", "1"]));
    await rawEcho.waitForStdout(/listening/);
    const raw = await nsExecResult(
      t.ns.lan1,
      peerCmd("raw-ping", ["--proto", "47", "--to", a.srv1[0]]),
    );
    const rawSeen = rawEcho.stdoutText().match(/seen (\S+)/)?.[1] ?? "nothing";
    console.log(
      `\nIP protocol 47 lan1 -> ${a.srv1[0]}: server saw ${rawSeen}, ${
        raw.code === 0 ? "reply received" : "no reply"
      }`,
    );
    verdicts.push([
      "other IP protocols: address-only NAT (source is the external address, reply comes back)",
      raw.code === 0 && rawSeen === a.routerWan,
    ]);

    const iperfSrv = t.spawn(t.ns.srv1, ["iperf3", "-s", "-1", "-B", a.srv1[0]]);
    await new Promise((res) => setTimeout(res, 300));
    const iperf = await nsExecResult(t.ns.lan1, ["iperf3", "-c", a.srv1[0], "-t", "2", "-J"]);
    iperfSrv.kill();
    if (iperf.code === 0) {
      const bps = JSON.parse(iperf.stdout).end.sum_received.bits_per_second as number;
      console.log(
        `\nTCP throughput lan1 -> srv1 through einat (iperf3, 2 s): ${
          (bps / 1e9).toFixed(2)
        } Gbit/s`,
      );
    } else {
      console.log(`\niperf3 failed: ${iperf.stderr.trim()}`);
    }
  } finally {
    const code = await stopEinat(einat);
    console.log(`\neinat stopped (exit ${code})`);
    const f = await nsExecResult(t.ns.router, ["tc", "filter", "show", "dev", "wan0", "ingress"]);
    verdicts.push(["clean exit (no filter left on wan0)", code === 0 && f.stdout.trim() === ""]);
  }
  console.log("\nverdict:");
  for (const [what, pass] of verdicts) console.log(`  ${ok(pass)}  ${what}`);
  return verdicts.every(([, p]) => p);
}

if (import.meta.main) {
  const pass = await withTopology(demo);
  console.log(pass ? "\nDEMO PASSED" : "\nDEMO FAILED");
  Deno.exit(pass ? 0 : 1);
}
