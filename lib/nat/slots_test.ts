import { assertEquals } from "../../tests/lib/assert.ts";
import { loadTestNat, TC_ACT_OK, testInterfaceConfig } from "../../tests/lib/natfixture.ts";
import { udpSpec } from "../../tests/lib/packet.ts";
import { withPrivateBpffs } from "../../tests/lib/bpffs.ts";
import { parseAddr, parseCidr } from "../config/cidr.ts";
import { applyPlan, defaultsWithSlots, purgeStale } from "./apply.ts";
import { planInterface } from "./plan.ts";
import { readSlots } from "./records.ts";
import { assignSlots, departedSlots } from "./slots.ts";

const a = (s: string) => ({ family: 4 as const, addr: parseAddr(s), prefixLen: 24 });
const ic = testInterfaceConfig();
const addrs = (e: { slot: number; addr: Uint8Array }[]) => e.map((x) => [x.slot, x.addr.join(".")]);

Deno.test("slots: the default external first, kept while present, freed only once purged", () => {
  const plan = planInterface(ic, [a("198.51.100.7"), a("203.0.113.1")]);
  const d = plan.defaultExt[4]!.addr.join(".");
  const first = assignSlots([], plan, 2);
  assertEquals(first.table[0].addr.join("."), d, "the default external gets slot 0");
  assertEquals(first.table.length, 2);
  assertEquals(first.unplaced, []);
  // the same plan again: nothing moves
  assertEquals(addrs(assignSlots(first.table, plan, 2).table), addrs(first.table));
  // one address goes, another comes: the departed keeps its slot until purged
  const next = planInterface(ic, [a("198.51.100.7"), a("203.0.113.9")]);
  const kept = assignSlots(first.table, next, 2);
  assertEquals(kept.table.length, 2);
  assertEquals(kept.unplaced.map((u) => u.addr.join(".")), ["203.0.113.9"]);
  assertEquals(departedSlots(kept.table, next).map((s) => s.addr.join(".")), ["203.0.113.1"]);
});

Deno.test("slots: an address beyond the slots is reported unplaced; purging gives it the freed slot", async () => {
  const n = await loadTestNat(ic, ["203.0.113.1/24", "198.51.100.7/24"], { extSlots: 1 });
  try {
    assertEquals(readSlots(n.nat.maps.slots).length, 1, "one slot, for the default external");
    const both = planInterface(ic, [a("203.0.113.1"), a("198.51.100.7")]);
    assertEquals(purgeStale(n.nat, both).unplaced.map((u) => u.addr.join(".")), [
      "198.51.100.7",
    ]);
    // the other address alone: the first is purged and its slot given away
    const other = planInterface(ic, [a("198.51.100.7")]);
    applyPlan(n.nat.maps, other);
    assertEquals(purgeStale(n.nat, other).unplaced, []);
    assertEquals(readSlots(n.nat.maps.slots).map((s) => s.addr.join(".")), ["198.51.100.7"]);
  } finally {
    n.close();
  }
});

Deno.test("slots: a default external left without a slot gives way to an address that has one (new flows are not refused)", async () => {
  const n = await loadTestNat(ic, ["203.0.113.1/24"], { extSlots: 1 });
  try {
    // A new address comes first in the interface's list: the plan makes it the default, and the
    // one slot is the other's.
    const plan = planInterface(ic, [a("198.51.100.7"), a("203.0.113.1")]);
    assertEquals(plan.defaultExt[4]!.addr.join("."), "198.51.100.7");
    applyPlan(n.nat.maps, plan);
    const { unplaced } = purgeStale(n.nat, plan);
    assertEquals(unplaced.map((u) => u.addr.join(".")), ["198.51.100.7"]);
    const moved = defaultsWithSlots(n.nat.maps, plan);
    assertEquals(moved.map((m) => [m.addr.join("."), m.instead.join(".")]), [
      ["203.0.113.1", "198.51.100.7"],
    ]);
    assertEquals(plan.defaultExt[4]!.addr.join("."), "203.0.113.1");
    const out = n.egress(udpSpec(4, "192.0.2.10", 40000, "198.51.100.1", 53, new Uint8Array(4)));
    assertEquals([out.retval, out.out.src], [TC_ACT_OK, "203.0.113.1"], "translated, not refused");
    // Nothing to move when the default has its slot.
    assertEquals(defaultsWithSlots(n.nat.maps, plan), []);
  } finally {
    n.close();
  }
});

Deno.test("slots: only addresses mappings are made on take one: the NATed families', not no_snat nor internal entries", () => {
  const v6 = (s: string) => ({ family: 6 as const, addr: parseAddr(s), prefixLen: 64 });
  const spec = (address: string, o: { noSnat?: boolean; isInternal?: boolean }) => ({
    match: { kind: "address" as const, addr: parseCidr(address) },
    isInternal: o.isInternal ?? false,
    noSnat: o.noSnat ?? false,
    noHairpin: false,
    ranges: ic.defaultRanges,
  });
  const show = (t: { addr: Uint8Array; family: number }[]) =>
    t.map((x) => x.family === 4 ? x.addr.join(".") : x.addr.slice(-2).join(":"));
  // NAT66 only: the IPv4 address takes no slot; both IPv6 addresses get one.
  const six = planInterface(
    testInterfaceConfig({ nat44: false, nat66: true }),
    [a("203.0.113.1"), v6("2001:db8:2::1"), v6("2001:db8:2::2")],
  );
  const s6 = assignSlots([], six, 2);
  assertEquals(show(s6.table), ["0:1", "0:2"]);
  assertEquals(s6.unplaced, []);
  // NAT44 only: IPv6 addresses are neither placed nor reported unplaced.
  const four = assignSlots([], planInterface(ic, [a("203.0.113.1"), v6("2001:db8:2::1")]), 2);
  assertEquals(show(four.table), ["203.0.113.1"]);
  assertEquals(four.unplaced, []);
  // no_snat and is_internal entries take none.
  const marked = planInterface(
    testInterfaceConfig({
      externals: [
        spec("203.0.113.9/32", { noSnat: true }),
        spec("192.0.2.10/32", { isInternal: true }),
      ],
    }),
    [a("203.0.113.1")],
  );
  assertEquals(show(assignSlots([], marked, 3).table), ["203.0.113.1"]);
});

Deno.test("slots: a start with fewer external_slots than the pinned records still purges an address in a higher slot", async () => {
  await withPrivateBpffs("slots", async (bpffs) => {
    const pin = { dir: `${bpffs}/einat/wan0`, ifname: "wan0" };
    const three = ["203.0.113.1/24", "203.0.113.2/24", "203.0.113.3/24"];
    const first = await loadTestNat(ic, three, { extSlots: 3, pin });
    try {
      const plan = planInterface(ic, three.map((x) => a(x.split("/")[0])));
      applyPlan(first.nat.maps, plan);
      purgeStale(first.nat, plan);
      assertEquals(readSlots(first.nat.maps.slots).length, 3);
    } finally {
      first.close();
    }
    // Two slots configured now; the records keep their pinned three, and .3 (slot 2) is gone.
    const n = await loadTestNat(ic, three.slice(0, 2), { extSlots: 2, pin });
    try {
      const plan = planInterface(ic, [a("203.0.113.1"), a("203.0.113.2")]);
      applyPlan(n.nat.maps, plan);
      purgeStale(n.nat, plan);
      assertEquals(
        readSlots(n.nat.maps.slots).map((s) => s.addr.join(".")),
        ["203.0.113.1", "203.0.113.2"],
      );
    } finally {
      n.close();
    }
  });
});
