import { assertEquals } from "../../tests/lib/assert.ts";
import { parseAddr } from "../config/cidr.ts";
import type { AddrRow, BindingRow, SessionRow } from "./read.ts";
import { endpoint } from "./read.ts";
import { hostsOf, type ShowResult } from "./show.ts";

const ep = (a: string, port: number) => endpoint(a.includes(":") ? 6 : 4, parseAddr(a), port);

function binding(iface: string, protocol: BindingRow["protocol"], a: string, port: number) {
  return { interface: iface, protocol, internal: ep(a, port) } as BindingRow;
}

function session(iface: string, a: string, port: number) {
  return { interface: iface, protocol: "udp", internal: ep(a, port) } as SessionRow;
}

Deno.test("hostsOf: rows summed per (interface, internal address) as read.ts writes them, IPv4 and IPv6 and address-only; most sessions first, then address order", () => {
  const r: ShowResult = {
    bindings: [
      binding("wan0", "udp", "192.0.2.9", 5000),
      binding("wan0", "tcp", "192.0.2.10", 5000),
      binding("wan0", "icmp", "192.0.2.10", 77),
      binding("wan0", "udp", "2001:db8:1::10", 5000),
      binding("wan1", "udp", "192.0.2.10", 5000),
    ],
    sessions: [
      session("wan0", "192.0.2.9", 5000),
      session("wan0", "2001:db8:1::10", 5000),
      session("wan0", "2001:db8:1::10", 5000),
      session("wan0", "192.0.2.10", 5000),
      session("wan1", "192.0.2.10", 5000),
    ],
    addressOnly: [{ interface: "wan0", internal: "192.0.2.9" } as AddrRow],
    counters: [],
    missing: [],
    served: [],
  };
  const row = (iface: string, address: string, t: number[], sessions: number, other = 0) => ({
    interface: iface,
    address,
    bindings: t[0] + t[1] + t[2],
    tcp: t[0],
    udp: t[1],
    icmp: t[2],
    sessions,
    addressOnly: other,
  });
  assertEquals(hostsOf(r), [
    row("wan0", "2001:db8:1::10", [0, 1, 0], 2),
    // one session each: more bindings first, then wan0 before wan1, then 192.0.2.9 before .10
    row("wan0", "192.0.2.10", [1, 0, 1], 1),
    row("wan0", "192.0.2.9", [0, 1, 0], 1, 1),
    row("wan1", "192.0.2.10", [0, 1, 0], 1),
  ]);
  assertEquals(hostsOf({ ...r, bindings: [], addressOnly: [] }).map((h) => h.address), [
    "2001:db8:1::10",
    "192.0.2.9", // address order, not text order (".10" < ".9")
    "192.0.2.10",
    "192.0.2.10",
  ]);
});
