import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import {
  cidrContains,
  compareAddr,
  formatAddr,
  formatCidr,
  isLinkLocal6,
  parseAddr,
  parseCidr,
  parseCidrHost,
} from "./cidr.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("parseAddr: IPv4", () => {
  deepStrictEqual(parseAddr("192.0.2.1"), bytes(192, 0, 2, 1));
  deepStrictEqual(parseAddr("0.0.0.0"), bytes(0, 0, 0, 0));
  deepStrictEqual(parseAddr("255.255.255.255"), bytes(255, 255, 255, 255));
});

Deno.test("parseAddr: rejects malformed IPv4", () => {
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3.-4",
      "a.b.c.d",
      "1..2.3",
      " 1.2.3.4",
    ]
  ) {
    throws(() => parseAddr(bad), SyntaxError, bad);
  }
});

Deno.test("parseAddr: IPv6 forms", () => {
  const full = parseAddr("2001:0db8:0000:0000:0000:0000:0000:0001");
  deepStrictEqual(parseAddr("2001:db8::1"), full);
  deepStrictEqual(parseAddr("::"), new Uint8Array(16));
  deepStrictEqual(parseAddr("::1"), bytes(...new Array(15).fill(0), 1));
  deepStrictEqual(parseAddr("1::"), bytes(0, 1, ...new Array(14).fill(0)));
  deepStrictEqual(parseAddr("1:2:3:4:5:6:7::"), parseAddr("1:2:3:4:5:6:7:0"));
  deepStrictEqual(parseAddr("::2:3:4:5:6:7:8"), parseAddr("0:2:3:4:5:6:7:8"));
  deepStrictEqual(parseAddr("FE80::ABCD"), parseAddr("fe80::abcd"));
  deepStrictEqual(
    parseAddr("::ffff:192.0.2.1"),
    bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1),
  );
  deepStrictEqual(parseAddr("64:ff9b::192.0.2.1"), parseAddr("64:ff9b::c000:201"));
  deepStrictEqual(parseAddr("1:2:3:4:5:6:1.2.3.4"), parseAddr("1:2:3:4:5:6:102:304"));
});

Deno.test("parseAddr: rejects malformed IPv6", () => {
  for (
    const bad of [
      ":::",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "12345::",
      "g::1",
      ":1::",
      "1:",
      "fe80::1%eth0",
      "[::1]",
      "1.2.3.4::",
      "::1.2.3",
      "::1.2.3.4:5",
    ]
  ) {
    throws(() => parseAddr(bad), SyntaxError, bad);
  }
});

Deno.test("formatAddr: RFC 5952", () => {
  equal(formatAddr(parseAddr("2001:0db8:0:0:0:0:0:1")), "2001:db8::1");
  equal(formatAddr(parseAddr("::")), "::");
  equal(formatAddr(parseAddr("::1")), "::1");
  equal(formatAddr(parseAddr("1::")), "1::");
  // A single zero group is not compressed.
  equal(formatAddr(parseAddr("2001:db8:0:1:1:1:1:1")), "2001:db8:0:1:1:1:1:1");
  // The longest run wins; the first of equal runs wins.
  equal(formatAddr(parseAddr("1:0:0:2:0:0:0:3")), "1:0:0:2::3");
  equal(formatAddr(parseAddr("1:0:0:2:0:0:3:4")), "1::2:0:0:3:4");
  equal(formatAddr(parseAddr("::ffff:c000:201")), "::ffff:192.0.2.1");
  equal(formatAddr(parseAddr("10.1.2.3")), "10.1.2.3");
  throws(() => formatAddr(new Uint8Array(5)), RangeError);
});

Deno.test("formatAddr/parseAddr round trip", () => {
  for (
    const text of [
      "fe80::1",
      "2001:db8:1:2:3:4:5:6",
      "ff02::1:ff00:1",
      "::ffff:10.0.0.1",
      "1.2.3.4",
    ]
  ) {
    equal(formatAddr(parseAddr(text)), text);
  }
});

Deno.test("parseCidr: clears host bits by default", () => {
  const c = parseCidr("192.0.2.77/24");
  deepStrictEqual(c, { family: 4, addr: bytes(192, 0, 2, 0), prefixLen: 24 });
  equal(formatCidr(parseCidr("10.1.2.3/9")), "10.0.0.0/9");
  equal(formatCidr(parseCidr("2001:db8:ffff::1/33")), "2001:db8:8000::/33");
  equal(formatCidr(parseCidr("0.0.0.0/0")), "0.0.0.0/0");
  equal(formatCidr(parseCidr("::/0")), "::/0");
  equal(formatCidr(parseCidr("192.0.2.1/32")), "192.0.2.1/32");
  equal(formatCidr(parseCidr("fe80::1/128")), "fe80::1/128");
});

Deno.test("parseCidr: strict rejects host bits", () => {
  throws(() => parseCidr("192.0.2.1/24", { strict: true }), /host bits.*192\.0\.2\.0\/24/);
  equal(formatCidr(parseCidr("192.0.2.0/24", { strict: true })), "192.0.2.0/24");
});

Deno.test("parseCidr: errors", () => {
  throws(() => parseCidr("192.0.2.0"), /prefix length is missing.*192\.0\.2\.0\/32/);
  throws(() => parseCidr("2001:db8::"), /2001:db8::\/128/);
  throws(() => parseCidr("192.0.2.0/33"), /0 to 32/);
  throws(() => parseCidr("2001:db8::/129"), /0 to 128/);
  throws(() => parseCidr("192.0.2.0/"), RangeError);
  throws(() => parseCidr("192.0.2.0/024"), RangeError);
  throws(() => parseCidr("192.0.2.0/-1"), RangeError);
  throws(() => parseCidr("300.0.2.0/24"), /not an IP address/);
  throws(() => parseCidr("192.0.2.0/24/1"), RangeError);
});

Deno.test("parseCidrHost keeps the address part", () => {
  const { addr, net } = parseCidrHost("10.0.0.5/24");
  equal(formatAddr(addr), "10.0.0.5");
  equal(formatCidr(net), "10.0.0.0/24");
});

Deno.test("cidrContains", () => {
  const net = parseCidr("192.168.0.0/16");
  ok(cidrContains(net, parseAddr("192.168.4.2")));
  ok(!cidrContains(net, parseAddr("192.169.0.1")));
  ok(cidrContains(net, parseCidr("192.168.4.0/24")));
  ok(cidrContains(net, net));
  ok(!cidrContains(parseCidr("192.168.4.0/24"), net));
  ok(cidrContains(parseCidr("0.0.0.0/0"), parseAddr("8.8.8.8")));
  ok(!cidrContains(parseCidr("0.0.0.0/0"), parseAddr("::1")));
  ok(cidrContains(parseCidr("fe80::/10"), parseAddr("fe80::1")));
  ok(!cidrContains(parseCidr("fe80::/10"), parseAddr("fec0::1")));
});

Deno.test("compareAddr", () => {
  equal(compareAddr(parseAddr("10.0.0.1"), parseAddr("10.0.0.2")), -1);
  equal(compareAddr(parseAddr("10.0.0.2"), parseAddr("10.0.0.2")), 0);
  equal(compareAddr(parseAddr("10.0.1.0"), parseAddr("10.0.0.255")), 1);
});

Deno.test("isLinkLocal6: fe80::/10 only, IPv6 only", () => {
  const ll = (s: string) => isLinkLocal6(parseAddr(s));
  deepStrictEqual([ll("fe80::1"), ll("febf::1"), ll("fec0::1"), ll("2001:db8::1")], [
    true,
    true,
    false,
    false,
  ]);
  equal(isLinkLocal6(parseAddr("192.0.2.1")), false);
});
