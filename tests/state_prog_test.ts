/**
 * Counters and session expiry through BPF_PROG_TEST_RUN (no namespace):
 * counters move by exactly the expected amounts for a known packet sequence;
 * sessions created by one object expire under another object's timeouts
 * (what a restart over pinned maps does), through the sweep or when traffic
 * finds them expired first.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { monotonicNs } from "../lib/ffi/libc.ts";
import { parseAddr } from "../lib/config/cidr.ts";
import { roConfigOf } from "../lib/daemon.ts";
import { applyPlan } from "../lib/nat/apply.ts";
import { CT_VALUE_LAYOUT, encodeCtKey, IPPROTO, STATS } from "../lib/nat/codec.ts";
import { closeNat, loadNat, type NatObject } from "../lib/nat/loader.ts";
import { expireSessions, expireSessionsAsync, RECORDS_PER_RUN } from "../lib/nat/expire.ts";
import { startSweeper, type Sweeper } from "../lib/nat/sweep.ts";
import { countBindings, findBinding, writeBinding } from "../lib/nat/records.ts";
import { planInterface } from "../lib/nat/plan.ts";
import { readCounters, readSessions } from "../lib/state/read.ts";
import { buildPacket, type PacketSpec } from "./lib/packet.ts";
import { pinThread, restoreAffinity } from "./lib/cpu.ts";
import {
  loadTestNat,
  sessionsOf,
  stateView,
  TC_ACT_OK,
  TC_ACT_SHOT,
  testInterfaceConfig,
} from "./lib/natfixture.ts";

const EXT = "203.0.113.1";
const EXT6 = "2001:db8:2::1";
const LAN1 = "192.0.2.10";
const LAN6 = "2001:db8:1::10";
const SRV1 = "198.51.100.1";
const SRV2 = "198.51.100.2";
const SRV6 = "2001:db8:3::1";

function udp(family: 4 | 6, src: string, sport: number, dst: string, dport: number, n: number) {
  return { family, src, dst, proto: "udp", sport, dport, payload: new Uint8Array(n) } as PacketSpec;
}

/** A read view over a loaded object's maps, as `show` reads pinned ones. */
const viewOf = stateView;

Deno.test("counters: packets and bytes per direction and family, events and drops move by exact amounts", async () => {
  const ic = testInterfaceConfig({ nat66: true });
  const n = await loadTestNat(ic, ["203.0.113.1/24", "2001:db8:2::1/64"]);
  // On one CPU: the flow cache is per CPU, and the second packet to SRV1 must find the slot
  // the first filled (in one CI run the thread moved between them and it missed).
  const affinity = pinThread(0);
  try {
    const ok = (r: { retval: number }) => assertEquals(r.retval, TC_ACT_OK);
    ok(n.egress(udp(4, LAN1, 40000, SRV1, 53, 10))); // 20 + 8 + 10 = 38 bytes
    ok(n.egress(udp(4, LAN1, 40000, SRV1, 53, 20))); // 48
    const out = n.egress(udp(4, LAN1, 40000, SRV2, 53, 0)); // 28, second session
    ok(out);
    const port = out.out.sport!;
    ok(n.ingress(udp(4, SRV1, 53, EXT, port, 5))); // 33
    ok(n.ingress(udp(4, SRV2, 53, EXT, port, 7))); // 35
    const out6 = n.egress(udp(6, LAN6, 40000, SRV6, 53, 10)); // 40 + 8 + 10 = 58
    ok(out6);
    ok(n.ingress(udp(6, SRV6, 53, EXT6, out6.out.sport!, 1))); // 49
    ok(n.egress(udp(4, EXT, 5353, SRV1, 53, 3))); // the router's own: passes
    const syn = n.ingress({
      family: 4,
      src: SRV1,
      dst: EXT,
      proto: "tcp",
      sport: 443,
      dport: 20001,
      tcpFlags: { syn: true },
    });
    assertEquals(syn.retval, TC_ACT_SHOT); // unsolicited SYN to a NAT port

    const c = readCounters(viewOf(n.nat));
    assertEquals(c.traffic, [
      { direction: "egress", family: 4, packets: 3, bytes: 38 + 48 + 28 },
      { direction: "egress", family: 6, packets: 1, bytes: 58 },
      { direction: "ingress", family: 4, packets: 2, bytes: 33 + 35 },
      { direction: "ingress", family: 6, packets: 1, bytes: 49 },
    ]);
    const want: Record<string, number> = Object.fromEntries(STATS.map((s) => [s, 0]));
    Object.assign(want, {
      egress_nat: 4,
      ingress_nat: 3,
      pass: 1,
      new_binding: 2,
      new_session: 3,
      drop_unsolicited: 1,
      // Every packet but the second to SRV1 (its new mapping filled the slot) and the SYN (it
      // does not look in the cache): first packets of flows, the session to SRV2 (made on an
      // existing binding), the router's own.
      flow_cache_miss: 7,
    });
    assertEquals(c.events, want);
  } finally {
    restoreAffinity(affinity);
    n.close();
  }
});

async function loadWith(udpMinMs: number, reuse?: NatObject): Promise<NatObject> {
  const ic = testInterfaceConfig();
  ic.timeouts = { ...ic.timeouts, udpMin: udpMinMs };
  const nat = await loadNat({
    ro: roConfigOf(ic),
    bindingMaxRecords: ic.bindingMaxRecords,
    ctMaxRecords: ic.ctMaxRecords,
    reuse: reuse
      ? {
        map_records: reuse.maps.records,
        map_outbound: reuse.maps.outbound,
        map_slots: reuse.maps.slots,
        map_binding_count: reuse.maps.bindingCount,
        map_ct: reuse.maps.ct,
        map_stats: reuse.maps.stats,
        map_traffic: reuse.maps.traffic,
      }
      : undefined,
  });
  applyPlan(nat.maps, planInterface(ic, [{ family: 4, addr: parseAddr(EXT), prefixLen: 24 }]));
  return nat;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sessions = (n: NatObject) => sessionsOf(n.maps).length;
const entries = (n: NatObject) => sessions(n) + countBindings(n.maps.records);

Deno.test("sweep: sessions of a closed object stay in the maps and expire under the next object's timeouts", async () => {
  const first = await loadWith(60_000);
  let second: NatObject | null = null;
  try {
    const r = bpf.testRun(first.egressFd, buildPacket(udp(4, LAN1, 40000, SRV1, 53, 4)));
    assertEquals(r.retval, TC_ACT_OK);
    second = await loadWith(300, first);
    closeNat(first);
    await sleep(600);
    assertEquals(sessions(second), 1, "no timer: the session stays until a sweep");
    const row = readSessions(viewOf(second, {
      format: "einat-state",
      version: 1,
      einat: "",
      ifname: "test",
      maps: {},
      timeoutsNs: { udpMin: String(300_000_000) },
    }))[0];
    assertEquals([row.secondsLeft, row.expired], [0, true], "overdue under the new timeout");
    assertEquals(expireSessions(second).expired, 1);
    assertEquals(entries(second), 0, "the session and its binding are gone");
    assertEquals(readCounters(viewOf(second)).events.expired_session, 1);
    assertEquals(expireSessions(second).expired, 0, "nothing left to sweep");
  } finally {
    closeNat(first);
    if (second) closeNat(second);
  }
});

Deno.test("sweep: a live session survives it; an overdue one copied in goes and its binding keeps the live one's reference", async () => {
  // Timeouts of seconds, so that "idle past it" is in the past even on a machine up for less
  // than a minute (a stamp before boot would wrap around to the far future).
  const nat = await loadWith(5_000);
  try {
    const ext = parseAddr(EXT), lan = parseAddr(LAN1);
    const put = (remotePort: number, lastSeenNs: bigint) => {
      const v = new Uint8Array(CT_VALUE_LAYOUT.size);
      const dv = new DataView(v.buffer);
      v.set(lan, CT_VALUE_LAYOUT.fields.int_addr.offset);
      dv.setUint16(CT_VALUE_LAYOUT.fields.int_port.offset, 40000, false);
      dv.setBigUint64(CT_VALUE_LAYOUT.fields.last_seen_ns.offset, lastSeenNs, true);
      bpf.mapUpdate(
        nat.maps.ct,
        encodeCtKey({
          l4proto: IPPROTO.UDP,
          family: 4,
          extPort: 20000,
          remotePort,
          extAddr: ext,
          remoteAddr: parseAddr(SRV1),
        }),
        v,
      );
    };
    const now = monotonicNs();
    put(53, now - 10_000_000_000n); // ten seconds ago: overdue
    put(54, now); // fresh: 5 s left
    writeBinding(nat.maps, {
      family: 4,
      l4proto: IPPROTO.UDP,
      intAddr: lan,
      intPort: 40000,
      extAddr: ext,
      extPort: 20000,
      ref: 2,
    });
    assertEquals(expireSessions(nat).expired, 1);
    assertEquals(sessions(nat), 1, "the live session stays");
    const b = findBinding(nat.maps, 4, IPPROTO.UDP, ext, 20000);
    assert(b !== null, "the binding stays for the live session");
    assertEquals([b.intAddr, b.intPort], [lan, 40000]);
    assertEquals(b.ref, 1, "one reference left");
  } finally {
    closeNat(nat);
  }
});

Deno.test("sweep: in short runs; 2,500 further sessions over three batch reads: exactly those past their own timeout go", async () => {
  const nat = await loadWith(5_000); // UDP before both ways 5 s (the shortest), after 300 s
  try {
    const ext = parseAddr(EXT), lan = parseAddr(LAN1);
    const now = monotonicNs();
    const v = new Uint8Array(CT_VALUE_LAYOUT.size);
    const dv = new DataView(v.buffer);
    v.set(lan, CT_VALUE_LAYOUT.fields.int_addr.offset);
    const PORTS = 50, REMOTES = 50;
    for (let p = 0; p < PORTS; p++) {
      dv.setUint16(CT_VALUE_LAYOUT.fields.int_port.offset, 40000 + p, false);
      for (let r = 0; r < REMOTES; r++) {
        // r % 3: 0 one-way and idle 6 s (just past its 5 s), 1 both ways and idle 10 s (past
        // the shortest timeout, not its own 300 s), 2 fresh. Seconds, not minutes: a fresh
        // machine may have been up for less.
        const idle = [6_000_000_000n, 10_000_000_000n, 0n][r % 3];
        dv.setUint8(CT_VALUE_LAYOUT.fields.state.offset, r % 3 === 1 ? 1 : 0);
        dv.setBigUint64(CT_VALUE_LAYOUT.fields.last_seen_ns.offset, now - idle, true);
        const key = encodeCtKey({
          l4proto: IPPROTO.UDP,
          family: 4,
          extPort: 20000 + p,
          remotePort: 1000 + r,
          extAddr: ext,
          remoteAddr: parseAddr(SRV1),
        });
        bpf.mapUpdate(nat.maps.ct, key, v);
      }
      writeBinding(nat.maps, {
        family: 4,
        l4proto: IPPROTO.UDP,
        intAddr: lan,
        intPort: 40000 + p,
        extAddr: ext,
        extPort: 20000 + p,
        ref: REMOTES,
      });
    }
    const overdue = PORTS * Math.ceil(REMOTES / 3); // r % 3 === 0: 17 of 50
    const res = expireSessions(nat);
    assertEquals(res.ctEntries, PORTS * REMOTES, "every further session read");
    assertEquals(res.expired, overdue);
    const left = sessionsOf(nat.maps);
    assertEquals(left.length, PORTS * REMOTES - overdue);
    assert(left.every((s) => (s.key.remotePort - 1000) % 3 !== 0), "only the overdue ones went");
    // The records in runs of RECORDS_PER_RUN, then the 1,700 keys idle past 5 s in runs of 1,024.
    const recordRuns = Math.ceil(bpf.mapInfo(nat.maps.records).maxEntries / RECORDS_PER_RUN);
    assertEquals(res.runs, recordRuns + 2);
    for (let p = 0; p < PORTS; p++) {
      const b = findBinding(nat.maps, 4, IPPROTO.UDP, ext, 20000 + p);
      assertEquals(b?.ref, REMOTES - Math.ceil(REMOTES / 3), `binding ${20000 + p}'s references`);
    }
    assertEquals(expireSessions(nat).expired, 0, "nothing left to sweep");
  } finally {
    closeNat(nat);
  }
});

Deno.test("sweep: an object closed while a sweep awaits a run closes after that run; the sweep stops there", async () => {
  const nat = await loadWith(60_000);
  const sweeping = expireSessionsAsync(nat); // now awaiting its first run
  closeNat(nat);
  assertEquals(bpf.mapInfo(nat.maps.sweep).name, "map_sweep", "still open during the run");
  const r = await sweeping;
  assertEquals(r.runs, 1, "no run after the close");
  let closed = false;
  try {
    bpf.mapInfo(nat.maps.sweep);
  } catch {
    closed = true;
  }
  assert(closed, "closed once the sweep ended");
  closeNat(nat); // a second close does nothing
  assertEquals((await expireSessionsAsync(nat)).runs, 0, "a closed object is not swept");
});

Deno.test("sweeper: the daemon's loop sweeps in pieces and reports the longest", async () => {
  const nat = await loadWith(300); // the shortest timeout 300 ms: a sweep every second
  let sweeper: Sweeper | null = null;
  try {
    assertEquals(
      bpf.testRun(nat.egressFd, buildPacket(udp(4, LAN1, 40000, SRV1, 53, 4))).retval,
      0,
    );
    assertEquals(sessions(nat), 1);
    await sleep(400);
    sweeper = startSweeper(
      () => [{ ifname: "test", nat }],
    );
    for (let i = 0; i < 40 && sweeper.stats().sweeps === 0; i++) await sleep(100);
    const st = sweeper.stats();
    assert(st.sweeps >= 1, "a sweep ran within 4 s");
    assertEquals(sessions(nat), 0, "the overdue session went");
    assert(
      st.longestPieceMs > 0 && st.longestPieceMs <= st.lastMs,
      `longest piece ${st.longestPieceMs} ms of ${st.lastMs} ms`,
    );
  } finally {
    await sweeper?.stop();
    closeNat(nat);
  }
});

Deno.test("sweeper: a sweep's cost is its own work, not the time other work holds the event loop across its awaits", async () => {
  const nat = await loadWith(300);
  let sweeper: Sweeper | null = null;
  try {
    sweeper = startSweeper(() => [{ ifname: "test", nat }]);
    // The loop held 250 ms at a time (as a slow metrics scrape would), let go in between.
    const hold = () => {
      const until = performance.now() + 250;
      while (performance.now() < until) { /* busy */ }
    };
    for (let i = 0; i < 40 && sweeper.stats().sweeps === 0; i++) {
      hold();
      await sleep(1);
    }
    const st = sweeper.stats();
    assert(st.sweeps >= 1, "a sweep ran");
    assert(st.lastMs < 100, `a sweep of an empty table cost ${st.lastMs} ms`);
  } finally {
    await sweeper?.stop();
    closeNat(nat);
  }
});

Deno.test("expiry before the sweep: outbound traffic restarts an expired session on its binding; inbound finds it gone", async () => {
  const nat = await loadWith(300);
  try {
    const out = buildPacket(udp(4, LAN1, 40000, SRV1, 53, 4));
    assertEquals(bpf.testRun(nat.egressFd, out).retval, TC_ACT_OK);
    const port = readSessions(viewOf(nat))[0].external;
    await sleep(600);
    // Outbound: the same session and mapping start over (no new binding).
    assertEquals(bpf.testRun(nat.egressFd, out).retval, TC_ACT_OK);
    let c = readCounters(viewOf(nat)).events;
    assertEquals([c.session_restarted, c.new_binding, c.new_session], [1, 1, 1]);
    assertEquals(readSessions(viewOf(nat))[0].external, port, "the mapping is kept");
    await sleep(600);
    // Inbound: its only session expired, so the binding went with it: not translated
    // (it passes to the router itself, like any packet to an unbound port).
    const extPort = Number(port.split(":").at(-1));
    const back = buildPacket(udp(4, SRV1, 53, EXT, extPort, 4));
    const r = bpf.testRun(nat.ingressFd, back);
    assertEquals(r.retval, TC_ACT_OK);
    assertEquals(r.dataOut, back, "untouched");
    c = readCounters(viewOf(nat)).events;
    assertEquals([c.expired_session, c.ingress_nat, c.session_restarted], [1, 0, 1]);
    assertEquals(entries(nat), 0, "the session and the binding are gone");
  } finally {
    closeNat(nat);
  }
});

Deno.test("expiry before the sweep: inbound on an expired session passes while another session holds the binding (EIF)", async () => {
  const nat = await loadWith(300);
  try {
    assertEquals(
      bpf.testRun(nat.egressFd, buildPacket(udp(4, LAN1, 40000, SRV1, 53, 4))).retval,
      TC_ACT_OK,
    );
    await sleep(600);
    // A second session on the same binding, fresh.
    assertEquals(
      bpf.testRun(nat.egressFd, buildPacket(udp(4, LAN1, 40000, SRV2, 53, 4))).retval,
      TC_ACT_OK,
    );
    const port = Number(readSessions(viewOf(nat))[0].external.split(":").at(-1));
    const back = buildPacket(udp(4, SRV1, 53, EXT, port, 4));
    assertEquals(bpf.testRun(nat.ingressFd, back).retval, TC_ACT_OK);
    const c = readCounters(viewOf(nat)).events;
    assertEquals([c.expired_session, c.new_session, c.new_binding], [1, 2, 1]);
    assertEquals(c.inbound_unanswered, 1, "passed without making a session");
    assertEquals(sessions(nat), 1, "SRV1's expired session gone, SRV2's kept");
  } finally {
    closeNat(nat);
  }
});
