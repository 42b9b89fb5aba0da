/**
 * The live-binding count (`map_binding_count`, held to `binding_max_records`) across a start:
 * a count carried over in pinned maps is kept, exact, even while another einat's programs make
 * bindings during the start (`--replace` under traffic); a count that is new starts at the
 * bindings found.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { withPrivateBpffs } from "./lib/bpffs.ts";
import { pinThread, restoreAffinity } from "./lib/cpu.ts";
import { type Flood, newFlowFrames, startFlood } from "./lib/flood.ts";
import {
  hostCounts,
  loadTestNat,
  type Nat,
  TC_ACT_OK,
  testInterfaceConfig,
} from "./lib/natfixture.ts";
import { buildPacket, udpSpec } from "./lib/packet.ts";
import { tamperStamp } from "./lib/stamp.ts";
import { bindingCountAt, countBindings, setBindingCount } from "../lib/nat/records.ts";
import { syncBindings, syncBindingsAtStart } from "../lib/state/serve.ts";
import { closeNat, loadNat, MAP_NAMES } from "../lib/nat/loader.ts";
import { roConfigOf } from "../lib/daemon.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import type { InterfaceConfig } from "../lib/config/types.ts";

const NEW_BINDINGS = 8_000; // of the 10,000 ports of the test range
/** Bindings the flood makes before the walk, and the ones it keeps until the walk is over. */
const BEFORE = 500;
const AFTER = 1_000;

const live = (n: Nat) => BigInt(countBindings(n.nat.maps.records));
const counted = (n: Nat) => bindingCountAt(n.nat.maps.bindingCount, 0);

/**
 * A private bpffs with one interface's state folder; `load` loads the test NAT pinned there
 * (with `o` over the test configuration).
 */
function withPinnedState(
  fn: (load: (o?: Partial<InterfaceConfig>) => Promise<Nat>, dir: string) => Promise<void>,
): Promise<void> {
  const id = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  return withPrivateBpffs(`count-${id}`, (bpffs) => {
    const pin = { dir: `${bpffs}/einat/zzcount0`, ifname: "zzcount0" };
    return fn(
      (o = {}) => loadTestNat(testInterfaceConfig(o), ["203.0.113.1/24"], { pin }),
      pin.dir,
    );
  });
}

Deno.test("binding count: a start under --replace keeps the carried-over count exact while the running einat makes bindings during its walk", async () => {
  await withPinnedState(async (load) => {
    const running = await load();
    let next: Nat | null = null;
    const affinity = pinThread(0);
    let flood: Flood | null = null;
    try {
      // The replacing einat, loaded on the pinned maps, syncs while the bindings keep coming
      // from the running einat's programs (every frame a new internal endpoint, a new binding).
      next = await load();
      assert(next.nat.pins?.reused.includes("map_binding_count"), "the count is carried over");
      // The flood spans the walk by construction, however the threads are scheduled: it makes
      // BEFORE bindings and waits; released, it floods on while the walk runs, but keeps its
      // last AFTER frames until the walk has returned.
      flood = startFlood(
        running.nat.egressFd,
        newFlowFrames(NEW_BINDINGS),
        NEW_BINDINGS,
        1,
        [BEFORE, NEW_BINDINGS - AFTER],
      );
      for (let i = 0; i < 10_000 && flood.held() < 1; i++) {
        await new Promise((r) => setTimeout(r, 1));
      }
      assertEquals(counted(running), BigInt(BEFORE), "bindings before the walk");
      flood.release();
      const found = syncBindings(next.nat);
      flood.release();
      assertEquals(await flood.runs, NEW_BINDINGS);
      const made = live(next);
      assertEquals(made, BigInt(NEW_BINDINGS), "every frame made a binding");
      assert(BigInt(found) < made, `bindings made after the walk began (${found} found)`);
      assertEquals(counted(next), made, `the count after the start (walk found ${found})`);
    } finally {
      await flood?.stop();
      restoreAffinity(affinity);
      next?.close();
      running.close();
    }
  });
});

Deno.test("binding count: a count that is not carried over starts at the bindings found", async () => {
  const n = await loadTestNat(testInterfaceConfig());
  try {
    for (let i = 0; i < 3; i++) {
      assertEquals(
        n.egress(udpSpec(4, "192.0.2.10", 40000 + i, "198.51.100.1", 53, new Uint8Array(8))).retval,
        TC_ACT_OK,
      );
    }
    setBindingCount(n.nat.maps.bindingCount, 99n); // whatever a new map would start from
    assertEquals(syncBindings(n.nat), 3);
    assertEquals(counted(n), 3n);
  } finally {
    n.close();
  }
});

Deno.test("binding count: a pinned count of another layout (an older einat's) is recreated and starts at the bindings found", async () => {
  await withPinnedState(async (load, dir) => {
    const first = await load();
    try {
      for (let i = 0; i < 3; i++) {
        const r = first.egress(
          udpSpec(4, "192.0.2.10", 40000 + i, "198.51.100.1", 53, new Uint8Array(8)),
        );
        assertEquals(r.retval, TC_ACT_OK);
      }
      setBindingCount(first.nat.maps.bindingCount, 99n); // as a walk of the old kind left it
    } finally {
      first.close();
    }
    tamperStamp(dir, (m) => m.map_binding_count.layout = "0000000000000000");
    const next = await load();
    try {
      assertEquals(next.nat.pins?.reset, ["map_binding_count"]);
      assert(next.nat.pins?.reused.includes("map_records"), "the bindings are carried over");
      assertEquals(syncBindings(next.nat), 3);
      assertEquals(counted(next), 3n);
    } finally {
      next.close();
    }
  });
});

Deno.test("per-host counts: the einat replacing another shares them, so a host's bindings made by either count against its limit; a start with other limits counts them afresh", async () => {
  await withPinnedState(async (load) => {
    const limits = { bindingMaxPerHost: 4, sessionMaxPerHost: 100 };
    const H1 = "192.0.2.10", H2 = "192.0.2.20";
    const flow = (n: Nat, host: string, port: number) =>
      bpf.testRun(
        n.nat.egressFd,
        buildPacket(udpSpec(4, host, port, "198.51.100.1", 53, new Uint8Array(8))),
      ).retval;
    const running = await load(limits);
    let next: Nat | null = null;
    try {
      for (let i = 0; i < 3; i++) assertEquals(flow(running, H1, 40000 + i), TC_ACT_OK);
      assertEquals(flow(running, H2, 40000), TC_ACT_OK);
      // The replacing einat takes the pinned counts as they are: its walk adds none.
      next = await load(limits);
      assert(next.nat.pins?.reused.includes("map_hosts"), "the counts are carried over");
      syncBindings(next.nat);
      const kept = { [H1]: { bindings: 3, sessions: 3 }, [H2]: { bindings: 1, sessions: 1 } };
      assertEquals(hostCounts(next), kept, "not counted twice");
      // The running einat's programs still make bindings: they count where the next one sees
      // them, so H1's fifth binding is refused by the next einat's programs.
      assertEquals(flow(running, H1, 40003), TC_ACT_OK, "the fourth, made by the running einat");
      assertEquals(hostCounts(next)[H1], { bindings: 4, sessions: 4 });
      assert(flow(next, H1, 40004) !== TC_ACT_OK, "a fifth binding of H1 refused");
      assertEquals(flow(next, H2, 40001), TC_ACT_OK, "H2 may make more");
    } finally {
      next?.close();
      running.close();
    }
    // Another einat keeps other counts (no binding limit): the pinned ones are not its; its
    // walk makes them from the bindings.
    const other = await load({ sessionMaxPerHost: 100 });
    try {
      assert(other.nat.pins?.reset.includes("map_hosts"), "recreated");
      syncBindings(other.nat);
      assertEquals(hostCounts(other), {
        [H1]: { bindings: 0, sessions: 4 },
        [H2]: { bindings: 0, sessions: 2 },
      });
    } finally {
      other.close();
    }
  });
});

Deno.test("fresh maps: a load that made every map is fresh (the start neither walks nor sweeps them); one on pinned or shared maps is not, and its walk finds their bindings", async () => {
  await withPinnedState(async (load) => {
    const first = await load();
    try {
      assert(first.nat.fresh, "the first load made its maps");
      assertEquals(syncBindings(first.nat), 0, "which hold nothing before traffic");
      for (let i = 0; i < 3; i++) {
        const r = first.egress(
          udpSpec(4, "192.0.2.10", 40000 + i, "198.51.100.1", 53, new Uint8Array(8)),
        );
        assertEquals(r.retval, TC_ACT_OK);
      }
      // The start's sync runs before any traffic: on a fresh object it does not walk at all.
      assertEquals(syncBindingsAtStart(first.nat), 0, "no walk of maps the load made");
      const shared = await loadNat({
        ro: roConfigOf(testInterfaceConfig()),
        bindingMaxRecords: testInterfaceConfig().bindingMaxRecords,
        ctMaxRecords: testInterfaceConfig().ctMaxRecords,
        reuse: { [MAP_NAMES.records]: first.nat.maps.records },
      });
      try {
        assert(!shared.fresh, "a map shared with another object");
        assertEquals(syncBindingsAtStart(shared), 3);
      } finally {
        closeNat(shared);
      }
    } finally {
      first.close();
    }
    const next = await load();
    try {
      assert(!next.nat.fresh, "pinned maps reused");
      assertEquals(syncBindingsAtStart(next.nat), 3);
    } finally {
      next.close();
    }
  });
});
