/**
 * Full tables through BPF_PROG_TEST_RUN: `binding_max_records` and `ct_max_records` set small.
 * A new flow that does not fit is refused (dropped, or answered with ICMP 3/13 when the port
 * search is what failed), counted, and leaves nothing behind; the flows that exist keep
 * working in both directions.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { checkMaps, EXT_CIDRS, fuzzConfig, PER_HOST_COUNTED, statOf } from "./lib/fuzz.ts";
import { syncPortHint } from "../lib/nat/loader.ts";
import { HOST_COUNTS_LAYOUT, HOST_KEY_LAYOUT } from "../lib/nat/codec.ts";
import { applyPlan, purgeStale } from "../lib/nat/apply.ts";
import { planInterface } from "../lib/nat/plan.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import { expireSessions } from "../lib/nat/expire.ts";
import {
  hostCounts,
  loadTestNat,
  type Nat,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
} from "./lib/natfixture.ts";
import { buildPacket, type PacketSpec, parsePacket } from "./lib/packet.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import type { InterfaceConfig } from "../lib/config/types.ts";

const EXT = "203.0.113.1";
const SRV = "198.51.100.1";
const udp = (src: string, sport: number, dst: string, dport: number): PacketSpec => ({
  family: 4,
  src,
  dst,
  proto: "udp",
  sport,
  dport,
  payload: new TextEncoder().encode("x"),
});

function invariants(n: Nat, ic: InterfaceConfig): { bindings: number; sessions: number } {
  const m = checkMaps(
    n,
    { bindings: ic.bindingMaxRecords, ctEntries: ic.ctMaxRecords },
    ic,
  );
  assertEquals(m.violations, [], m.violations.join("\n"));
  return { bindings: m.bindings, sessions: m.sessions };
}

/** A refused packet: dropped as is, or turned into ICMP 3/13 to its sender. */
function assertRefused(n: Nat, spec: PacketSpec, what: string): number {
  const input = buildPacket(spec);
  const r = bpf.testRun(n.nat.egressFd, input, { dataOutSize: input.length + 256 });
  assert([TC_ACT_SHOT, TC_ACT_REDIRECT].includes(r.retval), `${what}: verdict ${r.retval}`);
  const out = parsePacket(r.dataOut);
  const icmp = out.proto === "icmp" && out.icmpType === 3 && out.icmpCode === 13;
  assert(icmp || (r.retval === TC_ACT_SHOT && out.src === spec.src), `${what}: not leaked`);
  return r.durationNs;
}

/** Deletes every entry of `map_hosts` (as a new object starts without them); returns how many. */
function forgetHosts(n: Nat): number {
  const fd = n.nat.maps.hosts;
  const keys = [...bpf.mapEntries(fd, HOST_KEY_LAYOUT.size, HOST_COUNTS_LAYOUT.size)].map((e) =>
    e.key
  );
  for (const k of keys) bpf.mapDelete(fd, k);
  return keys.length;
}

Deno.test("binding_max_records full: new flows refused and counted, old ones keep working", async () => {
  const ic = fuzzConfig({ bindingMaxRecords: 8 });
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    const ext: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = n.egress(udp(`192.0.2.${10 + i}`, 40000, SRV, 53));
      assertEquals(r.retval, TC_ACT_OK, `flow ${i}`);
      ext.push(r.out.sport!);
    }
    assertEquals(invariants(n, ic).bindings, 8);
    const before = statOf(n, "drop_no_port") + statOf(n, "drop_binding_full");
    const ns = assertRefused(n, udp("192.0.2.30", 40000, SRV, 53), "9th binding");
    assertRefused(n, { ...udp("192.0.2.31", 40000, SRV, 80), proto: "tcp" }, "TCP");
    assertRefused(n, { family: 4, src: "192.0.2.32", dst: SRV, proto: "icmp", icmpId: 9 }, "ping");
    const after = statOf(n, "drop_no_port") + statOf(n, "drop_binding_full");
    assertEquals(after - before, 3n, "every refusal counted");
    console.log(
      `refusal with a full binding table costs ${Math.round(ns / 1000)} µs ` +
        `(drop_no_port ${statOf(n, "drop_no_port")}, drop_binding_full ${
          statOf(n, "drop_binding_full")
        })`,
    );
    // the old flows: out to a new remote (new session), and back in
    for (let i = 0; i < 8; i++) {
      const out = n.egress(udp(`192.0.2.${10 + i}`, 40000, "198.51.100.2", 123));
      assertEquals([out.retval, out.out.sport], [TC_ACT_OK, ext[i]]);
      const back = n.ingress(udp(SRV, 53, EXT, ext[i]));
      assertEquals([back.retval, back.out.dst, back.out.dport], [
        TC_ACT_OK,
        `192.0.2.${10 + i}`,
        40000,
      ]);
    }
    assertEquals(invariants(n, ic), { bindings: 8, sessions: 16 });
  } finally {
    n.close();
  }
});

Deno.test("ct_max_records full: sessions past each binding's first are refused and counted; a new binding's first needs no room", async () => {
  const ic = fuzzConfig({ ctMaxRecords: 8 });
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    // Four bindings of three sessions: each binding's first in its record, the other eight fill
    // the session table.
    const ext: number[] = [];
    for (let i = 0; i < 4; i++) {
      const verdicts = [SRV, "198.51.100.2", "198.51.100.4"].map((r) => {
        const out = n.egress(udp(`192.0.2.${10 + i}`, 40000, r, 53));
        if (r === SRV) ext.push(out.out.sport!);
        return out.retval;
      });
      assertEquals(verdicts, [TC_ACT_OK, TC_ACT_OK, TC_ACT_OK]);
    }
    assertEquals(invariants(n, ic), { bindings: 4, sessions: 12 });
    const full0 = statOf(n, "drop_ct_full");
    assertRefused(n, udp("192.0.2.10", 40000, "198.51.100.3", 53), "old binding, new remote");
    // Inbound from a new remote (EIF) needs no session: it reaches the host all the same.
    const eif = n.ingress(udp("198.51.100.9", 7, EXT, ext[0]));
    assertEquals([eif.retval, eif.out.dst], [TC_ACT_OK, "192.0.2.10"]);
    assertEquals(statOf(n, "drop_ct_full") - full0, 1n);
    assertEquals(invariants(n, ic), { bindings: 4, sessions: 12 });
    // Its answer does, and is refused.
    assertRefused(n, udp("192.0.2.10", 40000, "198.51.100.9", 7), "the answer to it");
    assertEquals(statOf(n, "drop_ct_full") - full0, 2n);
    // a new binding's first session lives in its record: no room needed
    const fresh = n.egress(udp("192.0.2.30", 40000, SRV, 53));
    assertEquals(fresh.retval, TC_ACT_OK, "new binding");
    assertEquals(invariants(n, ic), { bindings: 5, sessions: 13 });
    assertEquals(statOf(n, "drop_ct_full") - full0, 2n);
    for (let i = 0; i < 4; i++) {
      assertEquals(n.egress(udp(`192.0.2.${10 + i}`, 40000, SRV, 53)).retval, TC_ACT_OK);
      const back = n.ingress(udp("198.51.100.2", 53, EXT, ext[i]));
      assertEquals([back.retval, back.out.dst], [TC_ACT_OK, `192.0.2.${10 + i}`]);
    }
  } finally {
    n.close();
  }
});

Deno.test("binding_max_per_host: an internal address holds that many bindings at most (ICMP 3/13, drop_host_full); other hosts go on; a binding freed lets the next in; the start's walk counts the bindings there", async () => {
  const ic = fuzzConfig({ bindingMaxPerHost: 5 });
  ic.timeouts = { ...ic.timeouts, udpMin: 300, udpDefault: 300 };
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    const host = "192.0.2.10";
    for (let i = 0; i < 5; i++) {
      assertEquals(n.egress(udp(host, 40000 + i, SRV, 53)).retval, TC_ACT_OK, `binding ${i}`);
    }
    assertRefused(n, udp(host, 40005, SRV, 53), "a sixth binding of one host");
    assertEquals(statOf(n, "drop_host_full"), 1n);
    // Another remote on a binding it holds is no new binding; another host is not counted.
    assertEquals(n.egress(udp(host, 40000, "198.51.100.2", 53)).retval, TC_ACT_OK);
    assertEquals(n.egress(udp("192.0.2.11", 40000, SRV, 53)).retval, TC_ACT_OK, "another host");
    // The start's walk (sync_port_hint) counts the bindings there: with the counts gone (a
    // new object's map), the walk gives them back.
    assertEquals(forgetHosts(n), 2, "two hosts counted");
    assertEquals(n.egress(udp(host, 40006, SRV, 53)).retval, TC_ACT_OK, "no count: let in");
    forgetHosts(n);
    syncPortHint(n.nat);
    assertRefused(n, udp(host, 40007, SRV, 53), "counted again by the walk: refused");
    // Expired and swept: the host's bindings are free again (counted down with them).
    await new Promise((r) => setTimeout(r, 400));
    expireSessions(n.nat);
    for (let i = 0; i < 5; i++) {
      assertEquals(n.egress(udp(host, 41000 + i, SRV, 53)).retval, TC_ACT_OK, `again ${i}`);
    }
    assertRefused(n, udp(host, 41005, SRV, 53), "and again the sixth");
  } finally {
    n.close();
  }
});

Deno.test("session_max_per_host: the sessions of one internal address's bindings, first ones included, are held to it (ICMP 3/13, drop_host_ct_full); other hosts and the sessions there go on; the counts follow every session's end and the start's walk", async () => {
  const ic = fuzzConfig({ sessionMaxPerHost: 6 });
  ic.timeouts = { ...ic.timeouts, udpMin: 300, udpDefault: 300 };
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    const host = "192.0.2.10";
    const remote = (i: number) => `198.51.100.${1 + i}`;
    // One binding to five remotes, then a second binding: six sessions.
    for (let i = 0; i < 5; i++) {
      assertEquals(n.egress(udp(host, 40000, remote(i), 53)).retval, TC_ACT_OK, `session ${i}`);
    }
    assertEquals(n.egress(udp(host, 40001, SRV, 53)).retval, TC_ACT_OK, "a second binding");
    invariants(n, ic);
    // A seventh: another remote on a binding it holds, or a new binding; neither leaves a trace.
    assertRefused(n, udp(host, 40000, remote(5), 53), "a seventh session on a binding");
    assertRefused(n, udp(host, 40002, SRV, 53), "a seventh session with a new binding");
    assertEquals(statOf(n, "drop_host_ct_full"), 2n);
    assertEquals(invariants(n, ic), { bindings: 2, sessions: 6 });
    // Its sessions go on both ways, another host is not counted.
    const { out } = n.egress(udp(host, 40000, remote(2), 53));
    assertEquals(out.src, EXT);
    const back = n.ingress(udp(remote(2), 53, EXT, out.sport!));
    assertEquals([back.retval, back.out.dst], [TC_ACT_OK, host]);
    assertEquals(n.egress(udp("192.0.2.11", 40000, SRV, 53)).retval, TC_ACT_OK, "another host");
    // The start's walk (sync_port_hint) counts the references there.
    assertEquals(forgetHosts(n), 2, "two hosts counted");
    assertEquals(n.egress(udp(host, 40000, remote(5), 53)).retval, TC_ACT_OK, "no count: let in");
    forgetHosts(n);
    syncPortHint(n.nat);
    invariants(n, ic);
    assertRefused(n, udp(host, 40000, remote(6), 53), "counted again by the walk: refused");
    // Expired and swept: counted down with every session, the host may make six again.
    await new Promise((r) => setTimeout(r, 400));
    expireSessions(n.nat);
    assertEquals(invariants(n, ic), { bindings: 0, sessions: 0 });
    for (let i = 0; i < 6; i++) {
      assertEquals(n.egress(udp(host, 41000 + i, SRV, 53)).retval, TC_ACT_OK, `again ${i}`);
    }
    assertRefused(n, udp(host, 41000, remote(1), 53), "and again the seventh");
    invariants(n, ic);
  } finally {
    n.close();
  }
});

Deno.test("the per-host counts of addresses that hold nothing go with the sweep: addresses that come and go never fill their table", async () => {
  // map_hosts has room for as many addresses as there can be bindings (8 here)
  const ic = fuzzConfig({ bindingMaxRecords: 8, bindingMaxPerHost: 2, sessionMaxPerHost: 3 });
  ic.timeouts = { ...ic.timeouts, udpMin: 200, udpDefault: 200 };
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    for (let round = 0; round < 3; round++) {
      for (let h = 0; h < 8; h++) {
        const host = `192.0.2.${10 + round * 8 + h}`;
        assertEquals(n.egress(udp(host, 40000, SRV, 53)).retval, TC_ACT_OK, `${round}: ${host}`);
      }
      invariants(n, ic);
      await new Promise((r) => setTimeout(r, 300));
      expireSessions(n.nat);
      assertEquals(invariants(n, ic), { bindings: 0, sessions: 0 });
      assertEquals(bpf.mapCount(n.nat.maps.hosts, HOST_KEY_LAYOUT.size), 0, `${round}: left`);
    }
    assertEquals(statOf(n, "drop_host_full"), 0n);
  } finally {
    n.close();
  }
});

Deno.test("session_max_per_host: bindings retired with their external address take their sessions' count along; on the address that replaced it the host may make as many again", async () => {
  const ic = fuzzConfig({ ...PER_HOST_COUNTED, sessionMaxPerHost: 4 });
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    const host = "192.0.2.10";
    for (let i = 0; i < 3; i++) {
      assertEquals(n.egress(udp(host, 40000, `198.51.100.${1 + i}`, 53)).retval, TC_ACT_OK);
    }
    assertEquals(n.egress(udp(host, 40001, SRV, 53)).retval, TC_ACT_OK);
    assertRefused(n, udp(host, 40002, SRV, 53), "a fifth session");
    assertEquals(hostCounts(n)[host], { bindings: 2, sessions: 4 });
    // The address leaves (another takes over): the programs retire its bindings.
    const v4 = [{ family: 4 as const, addr: parseAddr("203.0.113.2"), prefixLen: 24 }];
    const other = planInterface(ic, v4);
    applyPlan(n.nat.maps, other);
    assertEquals(purgeStale(n.nat, other).bindings, 2);
    assertEquals(hostCounts(n)[host], { bindings: 0, sessions: 0 });
    for (let i = 0; i < 4; i++) {
      const r = n.egress(udp(host, 41000 + i, SRV, 53));
      assertEquals([r.retval, r.out.src], [TC_ACT_OK, "203.0.113.2"], `again ${i}`);
    }
    assertRefused(n, udp(host, 41004, SRV, 53), "and again the fifth");
  } finally {
    n.close();
  }
});
