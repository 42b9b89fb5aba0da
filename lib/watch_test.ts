import { assertEquals } from "../tests/lib/assert.ts";
import { changeFilter, describeEvent, networkNews, serialized } from "./watch.ts";
import type { Served } from "./daemon.ts";
import { type AddrMsg, ARPHRD, IFA_F, type LinkMsg } from "./netlink/msg.ts";
import { parseAddr } from "./config/cidr.ts";

Deno.test("serialized: calls run one at a time, in order, and a throw does not stop the next", async () => {
  const log: string[] = [];
  let n = 0;
  const s = serialized(async () => {
    const i = ++n;
    log.push(`start ${i}`);
    await new Promise((r) => setTimeout(r, 5));
    log.push(`end ${i}`);
    if (i === 2) throw new Error("the second call fails");
  });
  const calls = [s.run(), s.run(), s.run()];
  // None rejects, the failed one included.
  await Promise.all(calls);
  await s.settled();
  assertEquals(log, ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]);
  // After a failure the next call still runs.
  await s.run();
  assertEquals(log.slice(-2), ["start 4", "end 4"]);
});

Deno.test("serialized: an exclusive call waits for the runs queued before it, and runs queued meanwhile wait for it", async () => {
  const log: string[] = [];
  const s = serialized(async () => {
    log.push("run start");
    await new Promise((r) => setTimeout(r, 5));
    log.push("run end");
  });
  const first = s.run();
  const ex = s.exclusive(async () => {
    log.push("reload start");
    // A network event during the reload queues a run: it must not start before the reload ends.
    const during = s.run();
    await new Promise((r) => setTimeout(r, 10));
    log.push("reload end");
    return { during };
  });
  await first;
  const { during } = await ex;
  await during;
  assertEquals(log, ["run start", "run end", "reload start", "reload end", "run start", "run end"]);
  // A failing exclusive call rejects its caller and does not stop the line.
  let rejected = false;
  await s.exclusive(() => Promise.reject(new Error("bad"))).catch(() => (rejected = true));
  assertEquals(rejected, true);
  await s.run();
  assertEquals(log.slice(-2), ["run start", "run end"]);
});

Deno.test("describeEvent: an address event names the interface as it is called now", () => {
  const ev = (ifindex: number) => ({
    type: "addr" as const,
    op: "new" as const,
    family: 4 as const,
    ifindex,
    prefixLen: 24,
    addr: new Uint8Array([203, 0, 113, 1]),
    flags: 0,
    scope: 0,
  });
  // ifindex 1 is the loopback, whatever name einat serves it by.
  assertEquals(describeEvent(ev(1), "wan0"), "addr+ 203.0.113.1/24 lo");
  // gone meanwhile: the served name
  assertEquals(describeEvent(ev(0x7ffffff0), "wan0"), "addr+ 203.0.113.1/24 wan0");
});

Deno.test("changeFilter: a lifetime renewal (each IPv6 Router Advertisement) or an MTU change is no network change; flags einat acts on, a new address or a removal are", () => {
  const addr = (a: string, flags: number, op: "new" | "del" = "new"): AddrMsg => ({
    type: "addr",
    op,
    family: a.includes(":") ? 6 : 4,
    ifindex: 3,
    prefixLen: a.includes(":") ? 64 : 24,
    addr: parseAddr(a),
    flags,
    scope: 0,
  });
  const link = (mtu: number, up = true): LinkMsg => ({
    type: "link",
    op: "new",
    family: 0,
    ifindex: 3,
    ifname: "wan0",
    flags: 0,
    up,
    running: up,
    linkType: ARPHRD.ETHER,
    mtu,
    operstate: 0,
  });
  const f = changeFilter();
  f.know([link(1500)], [addr("2001:db8:2::1", IFA_F.PERMANENT)]);
  const told = (ev: AddrMsg | LinkMsg) => f.changed(ev);
  assertEquals(told(addr("2001:db8:2::1", IFA_F.PERMANENT)), false, "as dumped");
  // `ip addr change ... preferred_lft 100 valid_lft 200`: PERMANENT goes, nothing einat uses.
  assertEquals(told(addr("2001:db8:2::1", 0)), false, "lifetimes renewed");
  assertEquals(told(addr("2001:db8:2::1", IFA_F.MANAGETEMPADDR)), false);
  assertEquals(told(addr("2001:db8:2::1", IFA_F.DEPRECATED)), true, "deprecated");
  assertEquals(told(addr("2001:db8:2::1", IFA_F.DEPRECATED)), false, "still deprecated");
  assertEquals(told(addr("2001:db8:2::1", 0)), true, "preferred again");
  assertEquals(told(addr("203.0.113.5", 0)), true, "a new address");
  assertEquals(told(addr("203.0.113.5", IFA_F.SECONDARY)), true, "secondary now");
  assertEquals(told(addr("203.0.113.5", IFA_F.SECONDARY, "del")), true, "removed");
  assertEquals(told(addr("203.0.113.5", IFA_F.SECONDARY)), true, "back");
  assertEquals(told(link(1400)), false, "MTU");
  assertEquals(told(link(1400, false)), true, "down");
});

Deno.test("networkNews: an address that left while its interface was not served, and came back once it is, is news", () => {
  const f = changeFilter();
  const a: AddrMsg = {
    type: "addr",
    op: "new",
    family: 4,
    ifindex: 1, // lo: an index this process resolves by name
    prefixLen: 24,
    addr: parseAddr("203.0.113.1"),
    flags: 0,
    scope: 0,
  };
  f.know([], [a]);
  const lo = [{ ifname: "lo" } as unknown as Served];
  assertEquals(networkNews([{ ...a, op: "del" }], [], f.changed), [], "not served: no news");
  assertEquals(networkNews([a], lo, f.changed), ["addr+ 203.0.113.1/24 lo"]);
  assertEquals(networkNews([a], lo, f.changed), [], "the same again");
});
