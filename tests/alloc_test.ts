/**
 * External port choice through BPF_PROG_TEST_RUN: the free-port hint
 * (map_port_bits) speeds the search up but never decides alone. Bindings
 * it does not know about (inserted from user space, as after a restart) are
 * never handed out twice, and ports it still marks taken after their
 * bindings were deleted from user space are found again.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { loadTestNat, ranges, TC_ACT_OK, testInterfaceConfig } from "./lib/natfixture.ts";
import { buildPacket, type PacketSpec } from "./lib/packet.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { encodeBindingKey, encodeBindingValue, encodePortBitsKey } from "../lib/nat/codec.ts";
import { syncPortHint } from "../lib/nat/loader.ts";

const EXT = [203, 0, 113, 1];
const udp = (src: string, sport: number): PacketSpec => ({
  family: 4,
  proto: "udp",
  src,
  dst: "198.51.100.1",
  sport,
  dport: 53,
  payload: new TextEncoder().encode("x"),
});

/** Both entries of a binding 192.0.2.200:<lanPort> <-> EXT:<port>, written from user space. */
function bindFromUserSpace(fd: number, port: number, lanPort: number): void {
  const ext = new Uint8Array(EXT), lan = new Uint8Array([192, 0, 2, 200]);
  bpf.mapUpdate(
    fd,
    encodeBindingKey({ orig: true, l4proto: 17, family: 4, port: lanPort, addr: lan }),
    encodeBindingValue({ addr: ext, port, flags: 0, ref: 1 }),
  );
  bpf.mapUpdate(
    fd,
    encodeBindingKey({ orig: false, l4proto: 17, family: 4, port, addr: ext }),
    encodeBindingValue({ addr: lan, port: lanPort, flags: 0, ref: 1 }),
  );
}

function unbindFromUserSpace(fd: number, port: number, lanAddr: Uint8Array, lanPort: number) {
  bpf.mapDelete(
    fd,
    encodeBindingKey({ orig: true, l4proto: 17, family: 4, port: lanPort, addr: lanAddr }),
  );
  bpf.mapDelete(
    fd,
    encodeBindingKey({ orig: false, l4proto: 17, family: 4, port, addr: new Uint8Array(EXT) }),
  );
}

Deno.test("port choice: bindings the hint does not know are never handed out; the last free port is found", async () => {
  const START = 20000, N = 1000;
  const n = await loadTestNat(
    testInterfaceConfig({ defaultRanges: ranges([{ start: START, end: START + N - 1 }]) }),
  );
  try {
    // All but three ports taken behind the hint's back, scattered.
    const free = [START + 7, START + 500, START + 998];
    for (let p = START; p < START + N; p++) {
      if (!free.includes(p)) bindFromUserSpace(n.nat.maps.binding, p, 50000 + (p - START));
    }
    const got: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = n.egress(udp("192.0.2.10", 1000 + 2 * i));
      assertEquals(r.retval, TC_ACT_OK, `flow ${i} refused while ports were free`);
      got.push(r.out.sport!);
    }
    assertEquals(got.sort(), free, "exactly the free ports, each once");
    const full = n.runRaw("egress", buildPacket(udp("192.0.2.11", 1000)));
    assert(full.retval !== TC_ACT_OK, "range full: refused");
  } finally {
    n.close();
  }
});

Deno.test("port choice: ports freed from user space (hint still says taken) are handed out again", async () => {
  const START = 20000, N = 128;
  const n = await loadTestNat(
    testInterfaceConfig({ defaultRanges: ranges([{ start: START, end: START + N - 1 }]) }),
  );
  try {
    const lan = "192.0.2.10";
    const ports: number[] = [];
    for (let i = 0; i < N; i++) {
      const r = n.egress(udp(lan, 1000 + i));
      assertEquals(r.retval, TC_ACT_OK);
      ports.push(r.out.sport!);
    }
    assertEquals(new Set(ports).size, N, "no port twice");
    // Free two of them behind the program's back: their bits stay set.
    const lanAddr = new Uint8Array([192, 0, 2, 10]);
    for (const i of [5, 77]) {
      unbindFromUserSpace(n.nat.maps.binding, ports[i], lanAddr, 1000 + i);
    }
    const again: number[] = [];
    for (let i = 0; i < 2; i++) {
      const r = n.egress(udp("192.0.2.11", 3000 + i));
      assertEquals(r.retval, TC_ACT_OK, "a freed port is found");
      again.push(r.out.sport!);
    }
    assertEquals(again.sort((a, b) => a - b), [ports[5], ports[77]].sort((a, b) => a - b));
  } finally {
    n.close();
  }
});

Deno.test("port choice: sync_port_hint marks every bound port (bindings carried over at start)", async () => {
  const n = await loadTestNat(
    testInterfaceConfig({ defaultRanges: ranges([{ start: 20000, end: 20999 }]) }),
  );
  try {
    const taken = [20000, 20063, 20064, 20999];
    taken.forEach((p, i) => bindFromUserSpace(n.nat.maps.binding, p, 50000 + i));
    assertEquals(syncPortHint(n.nat), taken.length, "one per binding (reply entries only)");
    const fd = bpf.mapFd(bpf.findMap(n.nat.obj, "map_port_bits"));
    const bits = bpf.mapLookup(fd, encodePortBitsKey(4, 17, new Uint8Array(EXT)), 8192)!;
    const dv = new DataView(bits.buffer, bits.byteOffset, bits.byteLength);
    const set: number[] = [];
    for (let w = 0; w < 1024; w++) {
      const x = dv.getBigUint64(w * 8, true);
      for (let b = 0; b < 64; b++) if ((x >> BigInt(b)) & 1n) set.push(w * 64 + b);
    }
    assertEquals(set, taken);
  } finally {
    n.close();
  }
});
