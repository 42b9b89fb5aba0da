/**
 * Unit tests of the pure netlink codec on real kernel datagrams captured once inside a
 * namespace (tests/fixtures/netlink/*.hex, made by capture.ts) — no kernel needed.
 * Run: `deno test -A lib/netlink/msg_test.ts`.
 */

import assert from "node:assert/strict";
import {
  AF_INET,
  align4,
  ARPHRD,
  attrMap,
  bytesAttr,
  decode,
  decodeAddr,
  decodeDone,
  decodeError,
  decodeLink,
  decodeRoute,
  decodeRule,
  dumpRequest,
  encodeAttr,
  encodeMessage,
  FIB_RULE,
  FR_ACT,
  IF_OPER,
  IFA_F,
  IFF,
  type LinkMsg,
  NetlinkParseError,
  NLM_F,
  type NlMsg,
  NLMSG_DONE,
  NLMSG_ERROR,
  ownAddr,
  parseAttrs,
  parseMessages,
  routeRequest,
  type RouteSpec,
  RT_SCOPE,
  RT_TABLE,
  RTM,
  RTN,
  RTPROT,
  ruleRequest,
  type RuleSpec,
  setSeq,
  strAttr,
  u32Attr,
  u8Attr,
} from "./msg.ts";

const FIXTURES = new URL("../../tests/fixtures/netlink/", import.meta.url);

/** Datagrams of a fixture file: one hex line each, `#` lines are comments. */
function fixture(name: string): Uint8Array[] {
  return Deno.readTextFileSync(new URL(name, FIXTURES))
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("#"))
    .map((l) => Uint8Array.from(l.trim().match(/../g)!, (h) => parseInt(h, 16)));
}

function messages(name: string): NlMsg[] {
  return fixture(name).flatMap((d) => parseMessages(d));
}

const ip4 = (s: string) => Uint8Array.from(s.split(".").map(Number));
function ip6(s: string): Uint8Array {
  const [head, tail] = s.split("::");
  const parse = (p: string | undefined) => (p ? p.split(":").map((g) => parseInt(g, 16)) : []);
  const h = parse(head), t = tail === undefined ? [] : parse(tail);
  const groups = [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  return Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff]));
}

function assertParseError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof NetlinkParseError, `expected NetlinkParseError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Kernel fixtures

Deno.test("msg: address dump from the kernel", () => {
  const msgs = messages("addr_dump.hex");
  assert.equal(msgs.at(-1)!.type, NLMSG_DONE);
  assert.equal(decodeDone(msgs.at(-1)!).errno, 0);
  const addrs = msgs.filter((m) => m.type === RTM.NEWADDR).map(decodeAddr);
  assert.equal(addrs.length, 7);
  assert.ok(msgs.slice(0, -1).every((m) => (m.flags & NLM_F.MULTI) !== 0));

  const a = addrs.find((x) => x.label === "nl0:a")!;
  assert.deepEqual(a, {
    type: "addr",
    op: "new",
    family: 4,
    ifindex: 3,
    prefixLen: 24,
    addr: ip4("192.0.2.1"),
    local: ip4("192.0.2.1"),
    label: "nl0:a",
    flags: IFA_F.PERMANENT,
    scope: RT_SCOPE.UNIVERSE,
  });

  // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL our own address.
  const ptp = addrs.find((x) => x.prefixLen === 32 && x.family === 4)!;
  assert.deepEqual(ptp.addr, ip4("198.51.100.8"));
  assert.deepEqual(ptp.local, ip4("198.51.100.7"));
  assert.deepEqual(ownAddr(ptp), ip4("198.51.100.7"));

  const v6 = addrs.find((x) => x.family === 6 && x.addr[0] === 0x20)!;
  assert.deepEqual(v6.addr, ip6("2001:db8::1"));
  assert.equal(v6.local, undefined);
  assert.equal(v6.label, undefined);
  assert.equal(v6.prefixLen, 64);
  assert.equal(v6.flags, IFA_F.PERMANENT | IFA_F.NODAD);

  const lo = addrs.filter((x) => x.ifindex === 1);
  assert.deepEqual(lo.map((x) => [x.family, x.prefixLen, x.scope]), [
    [4, 8, RT_SCOPE.HOST],
    [6, 128, RT_SCOPE.HOST],
  ]);
  // Link-local addresses of the veth pair carry the scope link.
  assert.equal(addrs.filter((x) => x.scope === RT_SCOPE.LINK).length, 2);
});

Deno.test("msg: link dump from the kernel", () => {
  const msgs = messages("link_dump.hex");
  const links = msgs.filter((m) => m.type === RTM.NEWLINK).map(decodeLink);
  assert.deepEqual(links.map((l) => l.ifname), ["lo", "nl1", "nl0"]);
  const [lo, , nl0] = links;
  assert.equal(lo.linkType, ARPHRD.LOOPBACK);
  assert.ok(lo.flags & IFF.LOOPBACK);
  assert.equal(lo.mtu, 65536);
  const { address, ...rest } = nl0;
  assert.equal(address?.length, 6);
  assert.deepEqual(
    rest,
    {
      type: "link",
      op: "new",
      family: 0,
      ifindex: 3,
      ifname: "nl0",
      flags: nl0.flags,
      up: true,
      running: true,
      linkType: ARPHRD.ETHER,
      mtu: 1400,
      operstate: IF_OPER.UP,
    } satisfies Omit<LinkMsg, "address">,
  );
  assert.ok(nl0.flags & IFF.LOWER_UP);
  // veth peers name each other through IFLA_LINK, not IFLA_MASTER.
  assert.equal(nl0.master, undefined);
  assert.deepEqual(decode(msgs[0]), links[0]);
});

Deno.test("msg: rule dump from the kernel", () => {
  const msgs = messages("rule_dump.hex").filter((m) => m.type === RTM.NEWRULE);
  const decoded = msgs.map(decode);
  // AF_UNSPEC dumps include ipmr/ip6mr rules (families 128, 129): not modelled.
  assert.equal(decoded.filter((d) => d === null).length, 2);
  assertParseError(
    () => decodeRule(msgs[decoded.indexOf(null)]),
    /unsupported address family 12[89]/,
  );
  const rules = decoded.filter((d) => d !== null).map((d) => d!);
  assert.deepEqual(rules.map((r) => r.type === "rule" && [r.family, r.priority, r.table]), [
    [4, 0, RT_TABLE.LOCAL],
    [4, 1000, 4787],
    [4, 32766, RT_TABLE.MAIN],
    [4, 32767, RT_TABLE.DEFAULT],
    [6, 0, RT_TABLE.LOCAL],
    [6, 1001, 100],
    [6, 32766, RT_TABLE.MAIN],
  ]);
  assert.deepEqual(rules[1], {
    type: "rule",
    op: "new",
    family: 4,
    priority: 1000,
    table: 4787,
    action: FR_ACT.TO_TBL,
    dstLen: 0,
    srcLen: 0,
    tos: 0,
    invert: false,
    flags: 0,
    iifname: "nl0",
    ipProto: 6,
    protocol: RTPROT.UNSPEC,
  });
  const r6 = rules[5];
  assert.ok(r6.type === "rule");
  assert.deepEqual([r6.src, r6.srcLen, r6.dst], [ip6("2001:db8::"), 32, undefined]);
  assert.equal(r6.protocol, RTPROT.UNSPEC);
  assert.equal(rules[0].type === "rule" && rules[0].protocol, RTPROT.KERNEL);
});

Deno.test("msg: filtered route dumps from the kernel", () => {
  const msgs = messages("route_dump.hex");
  assert.deepEqual(msgs.map((m) => m.type), [
    RTM.NEWROUTE,
    NLMSG_DONE,
    RTM.NEWROUTE,
    NLMSG_DONE,
  ]);
  // Strict dumps with RTA_TABLE are filtered by the kernel, which says so.
  assert.ok(msgs.every((m) => (m.flags & NLM_F.DUMP_FILTERED) !== 0));
  assert.deepEqual(decodeRoute(msgs[0]), {
    type: "route",
    op: "new",
    family: 4,
    dstLen: 32,
    srcLen: 0,
    tos: 0,
    table: 4787,
    protocol: RTPROT.BOOT,
    scope: RT_SCOPE.HOST,
    routeType: RTN.LOCAL,
    flags: 0,
    dst: ip4("203.0.113.5"),
    oif: 1,
  });
  assert.deepEqual(decodeRoute(msgs[2]), {
    type: "route",
    op: "new",
    family: 6,
    dstLen: 48,
    srcLen: 0,
    tos: 0,
    table: 100,
    protocol: RTPROT.BOOT,
    scope: RT_SCOPE.UNIVERSE,
    routeType: RTN.UNICAST,
    flags: 0,
    dst: ip6("2001:db8:5::"),
    oif: 3,
    priority: 42,
  });
});

Deno.test("msg: error replies from the kernel", () => {
  const msgs = messages("errors.hex");
  assert.deepEqual(msgs.map((m) => m.type), [
    NLMSG_ERROR,
    NLMSG_ERROR,
    NLMSG_ERROR,
    NLMSG_ERROR,
    NLMSG_DONE,
  ]);
  // NETLINK_CAP_ACK: the echoed request is capped to its header.
  assert.ok(msgs.slice(0, 4).every((m) => (m.flags & NLM_F.CAPPED) !== 0));
  assert.deepEqual(msgs.slice(0, 4).map((m) => decodeError(m).errno), [17, 3, 19, 0]);
  // A strict dump rejected part-way reports its error in NLMSG_DONE, with an extended ACK.
  assert.deepEqual(decodeDone(msgs[4]), {
    errno: 22,
    seq: 0,
    extack: "Invalid values in header for FIB dump request",
  });
  assert.equal(decode(msgs[0]), null);
  assertParseError(() => decodeError(msgs[4]), /expected NLMSG_ERROR/);
});

Deno.test("msg: multicast notifications from the kernel", () => {
  const evs = messages("events.hex").map(decode);
  const brief = evs.map((e) =>
    e === null
      ? null
      : e.type === "addr"
      ? `addr ${e.op} v${e.family} ${e.ifindex}/${e.prefixLen}`
      : e.type === "link"
      ? `link ${e.op} ${e.ifname} ${e.up ? "up" : "down"}${e.running ? " running" : ""}`
      : e.type
  );
  assert.deepEqual(brief, [
    "addr new v4 3/24",
    "addr del v4 3/24",
    "link new nl0 down",
    "addr del v6 3/64", // IPv6 drops its addresses when the link goes down
    "addr del v6 3/64",
    "link new nl1 up",
    "link new nl0 up",
    "link new nl0 up running",
    "link new nl1 up running",
  ]);
  const first = evs[0];
  assert.ok(first?.type === "addr");
  assert.deepEqual(first.addr, ip4("203.0.113.9"));
  assert.equal(first.label, "nl0");
  // Notifications echo the seq/port of the request that caused them (here `ip`'s), but are
  // never multipart.
  const raw = messages("events.hex");
  assert.ok(raw.every((m) => m.flags === 0));
  assert.ok(raw.some((m) => m.seq !== 0 && m.pid !== 0));
});

// ---------------------------------------------------------------------------------------------
// Builders

Deno.test("msg: attributes are padded to 4 bytes and walk back", () => {
  for (let n = 0; n <= 9; n++) {
    const a = encodeAttr(7, new Uint8Array(n).fill(0xaa));
    assert.equal(a.length, align4(4 + n));
    assert.equal(a.length % 4, 0);
    assert.equal(new DataView(a.buffer).getUint16(0, true), 4 + n); // nla_len excludes padding
    assert.ok(a.subarray(4 + n).every((b) => b === 0));
  }
  const inputs = [
    u8Attr(22, 17),
    strAttr(3, "eth10"),
    u32Attr(6, 1000),
    bytesAttr(2, ip6("2001:db8::")),
  ];
  const buf = new Uint8Array(inputs.flatMap((i) => Array.from(encodeAttr(i.type, i.data))));
  assert.equal(buf.length, 8 + 12 + 8 + 20);
  const parsed = parseAttrs(buf);
  assert.deepEqual(parsed.map((p) => [p.type, p.data.length]), [[22, 1], [3, 6], [6, 4], [2, 16]]);
  assert.deepEqual(attrMap(parsed).get(3), new TextEncoder().encode("eth10\0"));

  // Flag bits are split off the type.
  const nested = encodeAttr(0x8000 | 5, encodeAttr(1, Uint8Array.of(1)));
  const [n] = parseAttrs(nested);
  assert.deepEqual([n.type, n.nested, n.netByteOrder], [5, true, false]);
  assert.deepEqual(parseAttrs(n.data).map((a) => a.type), [1]);
  assert.equal(parseAttrs(encodeAttr(0x4000 | 9, new Uint8Array(2)))[0].netByteOrder, true);

  assert.throws(() => strAttr(3, "a\0b"), TypeError);
  assert.throws(() => encodeAttr(1, new Uint8Array(0x10000)), RangeError);
});

Deno.test("msg: encodeMessage pads the family header and setSeq patches in place", () => {
  const m = encodeMessage({ type: 99, flags: 5, seq: 7, pid: 9 }, Uint8Array.of(1), [u8Attr(1, 2)]);
  assert.equal(m.length, 16 + 4 + 8);
  const [p] = parseMessages(m);
  assert.deepEqual([p.type, p.flags, p.seq, p.pid, p.payload.length], [99, 5, 7, 9, 12]);
  setSeq(m, 0xfffffffe, 42);
  assert.deepEqual([parseMessages(m)[0].seq, parseMessages(m)[0].pid], [0xfffffffe, 42]);
  // Two messages in one datagram.
  assert.equal(parseMessages(new Uint8Array([...m, ...m])).length, 2);
});

Deno.test("msg: dump requests", () => {
  const cases = [
    ["addr", RTM.GETADDR, 8],
    ["link", RTM.GETLINK, 16],
    ["rule", RTM.GETRULE, 12],
    ["route", RTM.GETROUTE, 12],
  ] as const;
  for (const [kind, type, hdr] of cases) {
    const [m] = parseMessages(dumpRequest(kind, 4, 123));
    assert.equal(m.type, type);
    assert.equal(m.flags, NLM_F.REQUEST | NLM_F.DUMP);
    assert.equal(m.seq, 123);
    assert.equal(m.payload.length, hdr);
    assert.equal(m.payload[0], AF_INET);
    assert.equal(parseMessages(dumpRequest(kind))[0].payload[0], 0);
  }
  const [r] = parseMessages(dumpRequest("route", 6, 0, { table: 4787 }));
  const attrs = parseAttrs(r.payload.subarray(12));
  assert.deepEqual(
    attrs.map((a) => [a.type, new DataView(a.data.buffer, a.data.byteOffset).getUint32(0, true)]),
    [
      [15, 4787],
    ],
  );
  // A clsact hook's filters: struct tcmsg with the interface and the parent, as `tc filter
  // show dev X ingress` sends it.
  const [f] = parseMessages(
    dumpRequest("tfilter", undefined, 7, { ifindex: 9, parent: 0xfffffff2 }),
  );
  assert.equal(f.type, RTM.GETTFILTER);
  assert.equal(f.flags, NLM_F.REQUEST | NLM_F.DUMP);
  assert.deepEqual([...f.payload], [
    0,
    0,
    0,
    0,
    9,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0xf2,
    0xff,
    0xff,
    0xff,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("msg: rule requests round-trip through the decoder", () => {
  const specs: RuleSpec[] = [
    { family: 4, priority: 1000, iifname: "lan0", ipProto: 6, table: 4787 },
    { family: 4, priority: 5, table: 100, src: ip4("192.0.2.0"), srcLen: 24, tos: 0 },
    {
      family: 6,
      priority: 1001,
      table: 200,
      dst: ip6("2001:db8::"),
      dstLen: 32,
      oifname: "wan0",
      sportRange: { start: 1000, end: 2000 },
      dportRange: { start: 53, end: 53 },
      fwmark: 0x10,
      fwmask: 0xff,
      invert: true,
      protocol: RTPROT.STATIC,
    },
    { family: 4, priority: 7, action: FR_ACT.GOTO, gotoPriority: 9 },
    { family: 6, priority: 8, table: RT_TABLE.MAIN, suppressPrefixLen: 0 },
  ];
  for (const spec of specs) {
    const bytes = ruleRequest("new", spec, 77);
    const [m] = parseMessages(bytes);
    assert.equal(m.flags, NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.EXCL);
    assert.equal(m.seq, 77);
    const d = decodeRule(m);
    assert.equal(d.op, "new");
    const { type: _t, op: _o, ...got } = d;
    const want = {
      action: FR_ACT.TO_TBL,
      srcLen: 0,
      dstLen: 0,
      tos: 0,
      invert: false,
      flags: spec.invert ? FIB_RULE.INVERT : 0,
      table: spec.action === FR_ACT.GOTO ? 0 : RT_TABLE.MAIN,
      ...spec,
    };
    assert.deepEqual(got, want);
    // Ids above 255 live only in FRA_TABLE; the header byte holds RT_TABLE_UNSPEC.
    assert.equal(m.payload[4], (spec.table ?? 0) < 256 ? (spec.table ?? 0) : 0);
  }
  const [del] = parseMessages(ruleRequest("del", { family: 4, priority: 1000 }));
  assert.equal(del.type, RTM.DELRULE);
  assert.equal(del.flags, NLM_F.REQUEST | NLM_F.ACK);
  // A delete matches any table and action unless given.
  assert.deepEqual([decodeRule(del).table, decodeRule(del).action], [0, FR_ACT.UNSPEC]);
  assert.throws(() => ruleRequest("new", { family: 4, src: ip6("::1") }), /needs 4 bytes/);
  assert.throws(
    () => ruleRequest("new", { family: 6, dst: ip6("::"), dstLen: 129 }),
    /prefix length/,
  );
  assert.throws(() => ruleRequest("new", { family: 5 as 4 }), /bad family/);
});

Deno.test("msg: route requests round-trip through the decoder", () => {
  const cases: [RouteSpec, Partial<ReturnType<typeof decodeRoute>>][] = [
    [
      { family: 4, dst: ip4("203.0.113.5"), routeType: RTN.LOCAL, oif: 1, table: 4787 },
      { dstLen: 32, scope: RT_SCOPE.HOST, protocol: RTPROT.BOOT, table: 4787 },
    ],
    [
      { family: 6, dst: ip6("2001:db8:5::"), dstLen: 48, oif: 3, table: 100, priority: 42 },
      { scope: RT_SCOPE.LINK, routeType: RTN.UNICAST },
    ],
    [
      { family: 4, gateway: ip4("192.0.2.254"), prefsrc: ip4("192.0.2.1") },
      { dstLen: 0, scope: RT_SCOPE.UNIVERSE, table: RT_TABLE.MAIN },
    ],
  ];
  for (const [spec, extra] of cases) {
    const [m] = parseMessages(routeRequest("new", spec, 5));
    assert.equal(m.type, RTM.NEWROUTE);
    assert.equal(m.flags, NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.EXCL);
    const d = decodeRoute(m);
    for (const [k, v] of Object.entries({ ...spec, ...extra })) {
      assert.deepEqual(d[k as keyof typeof d], v, k);
    }
  }
  const [del] = parseMessages(
    routeRequest("del", { family: 4, dst: ip4("203.0.113.5"), table: 4787 }),
  );
  const d = decodeRoute(del);
  assert.equal(del.flags, NLM_F.REQUEST | NLM_F.ACK);
  assert.deepEqual([d.op, d.routeType, d.scope, d.protocol], [
    "del",
    RTN.UNSPEC,
    RT_SCOPE.NOWHERE,
    0,
  ]);
  const [delLocal] = parseMessages(
    routeRequest("del", { family: 4, dst: ip4("203.0.113.5"), routeType: RTN.LOCAL }),
  );
  assert.equal(decodeRoute(delLocal).scope, RT_SCOPE.HOST);
  assert.throws(() => routeRequest("new", { family: 4, dstLen: 8 }), /dstLen without dst/);
  assert.throws(() => routeRequest("new", { family: 6, gateway: ip4("192.0.2.1") }), /needs 16/);
});

// ---------------------------------------------------------------------------------------------
// Malformed input

Deno.test("msg: malformed datagrams are rejected with NetlinkParseError", () => {
  const good = fixture("addr_dump.hex")[0];
  const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

  assertParseError(() => parseMessages(good.subarray(0, 10)), /truncated message header/);
  const short = good.slice(0, 32);
  dv(short).setUint32(0, 8, true);
  assertParseError(() => parseMessages(short), /below header size/);
  const long = good.slice();
  dv(long).setUint32(0, good.length + 4, true);
  assertParseError(() => parseMessages(long), /truncated message: length/);
  assertParseError(
    () => parseMessages(new Uint8Array([...good, 1, 2, 3])),
    /truncated message header/,
  );

  assertParseError(() => parseAttrs(Uint8Array.of(8, 0, 1, 0, 0, 0)), /truncated attribute 1/);
  assertParseError(() => parseAttrs(Uint8Array.of(2, 0, 1, 0)), /below header size/);
  assertParseError(
    () => parseAttrs(Uint8Array.of(5, 0, 1, 0, 9, 0, 0, 0, 1, 2)),
    /2 trailing bytes/,
  );
});

Deno.test("msg: malformed messages are rejected with NetlinkParseError", () => {
  const addr = (attrs: Uint8Array[], hdr = Uint8Array.of(AF_INET, 24, 0, 0, 3, 0, 0, 0)) => ({
    type: RTM.NEWADDR,
    flags: 0,
    seq: 0,
    pid: 0,
    payload: new Uint8Array([...hdr, ...attrs.flatMap((a) => Array.from(a))]),
  });
  assertParseError(
    () => decodeAddr(addr([], Uint8Array.of(AF_INET, 24))),
    /shorter than its 8-byte header/,
  );
  assertParseError(() => decodeAddr(addr([])), /no IFA_ADDRESS nor IFA_LOCAL/);
  assertParseError(
    () => decodeAddr(addr([encodeAttr(1, ip6("::1"))])),
    /IFA_ADDRESS: expected 4 bytes, got 16/,
  );
  assertParseError(
    () => decodeAddr(addr([encodeAttr(1, ip4("192.0.2.1")), encodeAttr(8, Uint8Array.of(1))])),
    /IFA_FLAGS/,
  );
  assert.equal(decodeAddr(addr([encodeAttr(2, ip4("192.0.2.1"))])).addr.join("."), "192.0.2.1");
  assertParseError(
    () => decodeAddr({ ...addr([]), type: RTM.NEWLINK }),
    /unexpected message type 16/,
  );

  const link = (attrs: Uint8Array[]) => ({
    type: RTM.DELLINK,
    flags: 0,
    seq: 0,
    pid: 0,
    payload: new Uint8Array([...new Uint8Array(16), ...attrs.flatMap((a) => Array.from(a))]),
  });
  assertParseError(() => decodeLink(link([])), /RTM_DELLINK: no IFLA_IFNAME/);
  assertParseError(
    () =>
      decodeLink(
        link([strAttr(3, "x").data, encodeAttr(4, Uint8Array.of(1, 2))].map((d, i) =>
          i === 0 ? encodeAttr(3, d) : d
        )),
      ),
    /IFLA_MTU: expected 4 bytes, got 2/,
  );
  assert.equal(decodeLink(link([encodeAttr(3, strAttr(3, "x").data)])).op, "del");

  assertParseError(
    () =>
      decodeRoute({ type: RTM.NEWROUTE, flags: 0, seq: 0, pid: 0, payload: new Uint8Array(11) }),
    /12-byte header/,
  );
  assertParseError(
    () => decodeError({ type: NLMSG_ERROR, flags: 0, seq: 0, pid: 0, payload: new Uint8Array(8) }),
    /NLMSG_ERROR/,
  );
  // An extended ACK claiming a longer echoed request than the payload holds.
  const err = new Uint8Array(20);
  new DataView(err.buffer).setUint32(4, 400, true);
  assertParseError(
    () => decodeError({ type: NLMSG_ERROR, flags: NLM_F.ACK_TLVS, seq: 0, pid: 0, payload: err }),
    /echoed request of 400 bytes is truncated/,
  );
  // decode() returns null for what it does not model, but still rejects broken modelled ones.
  assert.equal(
    decode({ type: RTM.NEWADDR, flags: 0, seq: 0, pid: 0, payload: Uint8Array.of(AF_INET + 1) }),
    null,
  );
  assert.equal(decode({ type: 999, flags: 0, seq: 0, pid: 0, payload: new Uint8Array(0) }), null);
  assertParseError(
    () => decode({ type: RTM.DELLINK, flags: 0, seq: 0, pid: 0, payload: new Uint8Array(0) }),
    /RTM_DELLINK: empty payload/,
  );
  assertParseError(
    () => decode({ type: RTM.NEWROUTE, flags: 0, seq: 0, pid: 0, payload: Uint8Array.of(AF_INET) }),
    /header/,
  );
});

Deno.test("msg: truncated and corrupted fixtures never throw anything but NetlinkParseError", () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
  const names = [
    "addr_dump.hex",
    "link_dump.hex",
    "rule_dump.hex",
    "route_dump.hex",
    "errors.hex",
    "events.hex",
  ];
  let rejected = 0, accepted = 0;
  const attempt = (d: Uint8Array) => {
    try {
      for (const m of parseMessages(d)) {
        if (m.type === NLMSG_ERROR) decodeError(m);
        else if (m.type === NLMSG_DONE) decodeDone(m);
        else decode(m);
      }
      accepted++;
    } catch (e) {
      if (!(e instanceof NetlinkParseError)) throw e;
      assert.match(e.message, /^netlink: /);
      rejected++;
    }
  };
  for (const name of names) {
    for (const d of fixture(name)) {
      for (let n = 0; n < d.length; n += n < 64 ? 1 : 7) attempt(d.subarray(0, n));
      for (let i = 0; i < 200; i++) {
        const c = d.slice();
        for (let k = 0; k < 3; k++) c[Math.floor(rand() * c.length)] = Math.floor(rand() * 256);
        attempt(c);
      }
    }
  }
  assert.ok(rejected > 1000, `rejected ${rejected}`);
  assert.ok(accepted > 100, `accepted ${accepted}`);
});
