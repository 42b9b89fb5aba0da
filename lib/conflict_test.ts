import { deepStrictEqual, equal } from "node:assert/strict";
import { parseCidr, parseCidrHost } from "./config/cidr.ts";
import { describeConflict, findConflicts, overlaps } from "./conflict.ts";

const net = (s: string) => parseCidr(s);
/** An interface address with its prefix length (host bits kept). */
const host = (s: string) => {
  const { addr, net } = parseCidrHost(s);
  return { ...net, addr };
};

Deno.test("conflict: overlapping networks, either containing the other", () => {
  equal(overlaps(net("192.0.2.0/24"), net("192.0.2.128/25")), true);
  equal(overlaps(net("192.0.2.128/25"), net("192.0.2.0/24")), true);
  equal(overlaps(net("192.0.2.0/25"), net("192.0.2.128/25")), false);
  equal(overlaps(net("0.0.0.0/0"), net("198.51.100.0/24")), true);
  equal(overlaps(net("2001:db8:1::/64"), net("2001:db8::/32")), true);
  equal(overlaps(net("2001:db8:1::/64"), net("2001:db8:2::/64")), false);
  equal(overlaps(net("192.0.2.0/24"), net("2001:db8::/32")), false, "families never overlap");
});

Deno.test("conflict: interface addresses are compared as their networks and named", () => {
  const found = findConflicts(
    [{ net: host("192.0.2.200/25"), source: "wan0" }, {
      net: host("203.0.113.1/24"),
      source: "wan0",
    }],
    [{ net: host("192.0.2.1/24"), source: "lan0" }, {
      net: net("198.51.100.0/24"),
      source: "snat_internals",
    }],
  );
  deepStrictEqual(found.map(describeConflict), [
    "external network 192.0.2.128/25 (wan0) overlaps internal network 192.0.2.0/24 (lan0)",
  ]);
});
