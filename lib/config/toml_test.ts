import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { ConfigError, type ExternalMatch } from "./types.ts";
import {
  defaultFibLookup,
  DEFAULTS,
  editDistance,
  noticeLevel,
  parseConfigToml,
  suggest,
} from "./toml.ts";
import { formatAddr, formatCidr } from "./cidr.ts";

const K = { kernelRelease: "6.8.0-1-amd64" };
const parse = (text: string) => parseConfigToml(text, "test.toml", K);
const MIN = `[[interfaces]]\nif_name = "eth0"\nnat44 = true\n`;

function expectError(text: string, path: string, message?: RegExp): ConfigError {
  try {
    parse(text);
  } catch (e) {
    ok(e instanceof ConfigError, String(e));
    equal(e.path, path, e.message);
    equal(e.file, "test.toml");
    if (message) ok(message.test(e.message), e.message);
    return e;
  }
  throw new Error(`expected an error at ${path}`);
}

function fmtMatch(m: ExternalMatch): string {
  switch (m.kind) {
    case "address":
      return `address ${formatCidr(m.addr)}`;
    case "network":
      return `network ${formatCidr(m.net)}`;
    case "staticNetwork":
      return `static ${formatCidr(m.net)} via ${formatAddr(m.address)}`;
    case "range":
      return `range ${formatAddr(m.start)}-${formatAddr(m.end)}`;
  }
}

Deno.test("empty file: einat-ebpf defaults, no interfaces", () => {
  const { config, notices } = parse("");
  deepStrictEqual(config.interfaces, []);
  deepStrictEqual(notices, []);
  const d = config.defaults;
  equal(d.ipv4LocalRulePref, 200);
  equal(d.ipv6LocalRulePref, 200);
  equal(d.ipv4HairpinRulePref, 100);
  equal(d.ipv6HairpinRulePref, 100);
  equal(d.ipv4HairpinTableId, 4787);
  equal(d.ipv6HairpinTableId, 4787);
  deepStrictEqual(d.ranges, {
    tcp: [{ start: 20000, end: 29999 }],
    udp: [{ start: 20000, end: 29999 }],
    icmp: [{ start: 0, end: 65535 }],
    icmpIn: [{ start: 0, end: 9999 }],
    icmpOut: [{ start: 1000, end: 65535 }],
  });
});

Deno.test("minimal interface: every default applied", () => {
  const { config, notices } = parse(`[[interfaces]]\nif_name = "eth0"\nnat44 = true\n`);
  deepStrictEqual(notices, []);
  const i = config.interfaces[0];
  equal(i.ifName, "eth0");
  equal(i.ifIndex, undefined);
  equal(i.nat44, true);
  equal(i.nat66, false);
  equal(i.bpfLogLevel, 0);
  equal(i.bpfFibLookupExternal, true); // kernel 6.8
  equal(i.allowInboundIcmpx, true);
  equal(i.snatOtherProtocols, true);
  deepStrictEqual(i.timeouts, {
    fragment: 2_000,
    icmpDefault: 60_000,
    udpMin: 120_000,
    udpDefault: 300_000,
    tcpTrans: 240_000,
    tcpEst: 7_440_000,
    tcpClosing: 240_000,
    other: 600_000,
  });
  equal(i.fragTrackMaxRecords, 65536);
  equal(i.otherMaxRecords, 4096);
  equal(i.bindingMaxRecords, 196608);
  equal(i.ctMaxRecords, 393216);
  equal(i.preferTcx, true);
  equal(i.preallocateMaps, false);
  deepStrictEqual(i.noSnatDests, []);
  equal(i.defaultExternals, true);
  deepStrictEqual(i.snatInternals, []);
  for (const r of [i.ipv4HairpinRoute, i.ipv6HairpinRoute]) {
    deepStrictEqual(r, {
      enable: false,
      internalIfNames: [],
      ipProtocols: ["tcp", "udp", "icmp"],
      ipRulePref: 100,
      tableId: 4787,
    });
  }
  deepStrictEqual(i.externals, []);
  deepStrictEqual(i.defaultRanges, config.defaults.ranges);
});

Deno.test("bpf_fib_lookup_external defaults by kernel version", () => {
  equal(
    parseConfigToml(MIN, "t", { kernelRelease: "6.6.30" }).config.interfaces[0]
      .bpfFibLookupExternal,
    false,
  );
  equal(
    parseConfigToml(MIN, "t", { kernelRelease: "6.7.0" }).config.interfaces[0].bpfFibLookupExternal,
    true,
  );
  equal(
    parseConfigToml(MIN, "t", { kernelRelease: "7.0.1" }).config.interfaces[0].bpfFibLookupExternal,
    true,
  );
  equal(defaultFibLookup("5.15.0-100-generic"), false);
  equal(defaultFibLookup("garbage"), false);
});

Deno.test("every key reaches the Config", () => {
  const { config, notices } = parse(`
version = 1

[defaults]
ipv4_local_rule_pref = 300
ipv6_local_rule_pref = 301
ipv4_hairpin_rule_pref = 150
ipv6_hairpin_rule_pref = 151
ipv4_hairpin_table_id = 100
ipv6_hairpin_table_id = 101
tcp_ranges = ["10000-19999", "30000-39999"]
udp_ranges = ["40000-49999"]
icmp_ranges = ["0-30000"]
icmp_in_ranges = ["0-999"]
icmp_out_ranges = ["1000-30000"]

[[interfaces]]
if_name = "wan0"
nat44 = true
nat66 = true
bpf_log_level = 3
bpf_fib_lookup_external = false
allow_inbound_icmpx = false
snat_other_protocols = false
timeout_other = "3m"
timeout_fragment = "3s"
timeout_icmp_default = "90s"
timeout_udp_min = "1m"
timeout_udp_default = "10m"
timeout_tcp_trans = "5m"
timeout_tcp_est = "1h30m"
frag_track_max_records = 1024
other_max_records = 512
binding_max_records = 2048
ct_max_records = 8192
preallocate_maps = true
prefer_tcx = false
default_externals = false
no_snat_dests = ["192.168.0.0/16", "fd00::/8"]
snat_internals = ["10.1.2.3/24", "fd01::/64"]

[interfaces.ipv4_hairpin_route]
enable = true
internal_if_names = ["lo", "lan0"]
ip_protocols = ["TCP", "udp", "icmp"]
ip_rule_pref = 90
table_id = 200

[interfaces.ipv6_hairpin_route]
enable = false
internal_if_names = ["lan0"]
ip_protocols = ["udp"]
ip_rule_pref = 91
table_id = 201

[[interfaces.externals]]
address = "203.0.113.7"
is_internal = true
no_snat = true
no_hairpin = true
tcp_ranges = []
udp_ranges = ["45000-45999"]
icmp_ranges = ["0-20000"]
icmp_in_ranges = ["0-10"]
icmp_out_ranges = ["11-20000"]

[[interfaces.externals]]
network = "10.0.0.5/24"

[[interfaces.externals]]
match_address = "198.51.100.9/24"

[[interfaces.externals]]
match_address = { network = "2001:db8::/32" }

[[interfaces.externals]]
match_address = { start = "198.51.100.10", end = "198.51.100.20" }

[[interfaces]]
if_name = "wan1"
nat44 = true
`);
  deepStrictEqual(notices, []);
  const d = config.defaults;
  deepStrictEqual(
    [d.ipv4LocalRulePref, d.ipv6LocalRulePref, d.ipv4HairpinRulePref, d.ipv6HairpinRulePref],
    [300, 301, 150, 151],
  );
  deepStrictEqual([d.ipv4HairpinTableId, d.ipv6HairpinTableId], [100, 101]);
  deepStrictEqual(d.ranges, {
    tcp: [{ start: 10000, end: 19999 }, { start: 30000, end: 39999 }],
    udp: [{ start: 40000, end: 49999 }],
    icmp: [{ start: 0, end: 30000 }],
    icmpIn: [{ start: 0, end: 999 }],
    icmpOut: [{ start: 1000, end: 30000 }],
  });

  const i = config.interfaces[0];
  equal(i.ifName, "wan0");
  equal(i.nat44, true);
  equal(i.nat66, true);
  equal(i.bpfLogLevel, 3);
  equal(i.bpfFibLookupExternal, false);
  equal(i.allowInboundIcmpx, false);
  equal(i.snatOtherProtocols, false);
  deepStrictEqual(i.timeouts, {
    fragment: 3_000,
    icmpDefault: 90_000,
    udpMin: 60_000,
    udpDefault: 600_000,
    tcpTrans: 300_000,
    tcpEst: 5_400_000,
    tcpClosing: 300_000,
    other: 180_000,
  });
  equal(i.fragTrackMaxRecords, 1024);
  equal(i.otherMaxRecords, 512);
  equal(i.bindingMaxRecords, 2048);
  equal(i.ctMaxRecords, 8192);
  equal(i.preallocateMaps, true);
  equal(i.preferTcx, false);
  equal(i.defaultExternals, false);
  deepStrictEqual(i.noSnatDests.map(formatCidr), ["192.168.0.0/16", "fd00::/8"]);
  deepStrictEqual(i.snatInternals.map(formatCidr), ["10.1.2.0/24", "fd01::/64"]);
  deepStrictEqual(i.ipv4HairpinRoute, {
    enable: true,
    internalIfNames: ["lo", "lan0"],
    ipProtocols: ["tcp", "udp", "icmp"],
    ipRulePref: 90,
    tableId: 200,
  });
  deepStrictEqual(i.ipv6HairpinRoute, {
    enable: false,
    internalIfNames: ["lan0"],
    ipProtocols: ["udp"],
    ipRulePref: 91,
    tableId: 201,
  });
  deepStrictEqual(i.defaultRanges, d.ranges);

  const [e0, e1, e2, e3, e4] = i.externals;
  equal(fmtMatch(e0.match), "address 203.0.113.7/32");
  deepStrictEqual([e0.isInternal, e0.noSnat, e0.noHairpin], [true, true, true]);
  deepStrictEqual(e0.ranges, {
    tcp: [],
    udp: [{ start: 45000, end: 45999 }],
    icmp: [{ start: 0, end: 20000 }],
    icmpIn: [{ start: 0, end: 10 }],
    icmpOut: [{ start: 11, end: 20000 }],
  });
  equal(fmtMatch(e1.match), "static 10.0.0.0/24 via 10.0.0.5");
  deepStrictEqual([e1.isInternal, e1.noSnat, e1.noHairpin], [false, false, false]);
  deepStrictEqual(e1.ranges, d.ranges, "externals inherit [defaults] ranges");
  equal(fmtMatch(e2.match), "network 198.51.100.0/24");
  equal(fmtMatch(e3.match), "network 2001:db8::/32");
  equal(fmtMatch(e4.match), "range 198.51.100.10-198.51.100.20");

  // The second interface still gets [defaults].
  deepStrictEqual(config.interfaces[1].defaultRanges, d.ranges);
  equal(config.interfaces[1].ipv4HairpinRoute.tableId, 100);
  equal(config.interfaces[1].ipv6HairpinRoute.ipRulePref, 151);
});

Deno.test("hairpin route: enable follows internal_if_names unless set", () => {
  const get = (body: string) => parse(MIN + body).config.interfaces[0].ipv4HairpinRoute;
  equal(get(`ipv4_hairpin_route.internal_if_names = ["lo"]\n`).enable, true);
  equal(get(`ipv4_hairpin_route.internal_if_names = []\n`).enable, false);
  equal(
    get(`[interfaces.ipv4_hairpin_route]\nenable = false\ninternal_if_names = ["lo"]\n`).enable,
    false,
  );
  const { notices } = parse(MIN + `ipv4_hairpin_route.enable = true\n`);
  ok(notices.some((n) => /internal_if_names is empty/.test(n)), notices.join("\n"));
});

Deno.test("hairpin rule preference not below the local rule gives a notice", () => {
  const { notices } = parse(
    MIN + `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["lo"]\nip_rule_pref = 250\n`,
  );
  ok(notices.some((n) => n.includes("interfaces[0].ipv4_hairpin_route.ip_rule_pref")));
});

Deno.test("icmp: empty icmp_ranges clears in/out ranges", () => {
  const { config } = parse(`[defaults]\nicmp_ranges = []\n` + MIN);
  deepStrictEqual(config.defaults.ranges.icmpIn, []);
  deepStrictEqual(config.defaults.ranges.icmpOut, []);
});

Deno.test("icmp in/out containment is checked per external", () => {
  expectError(
    MIN +
      `[[interfaces.externals]]\naddress = "192.0.2.1"\nicmp_in_ranges = ["0-9999"]\nicmp_ranges = ["20000-30000"]\nicmp_out_ranges = ["20000-20001"]\n`,
    "interfaces[0].externals[0].icmp_in_ranges",
    /not inside icmp_ranges 20000-30000/,
  );
  expectError(
    MIN +
      `[[interfaces.externals]]\naddress = "192.0.2.1"\nicmp_ranges = ["0-500"]\nicmp_in_ranges = ["0-10"]\n`,
    "interfaces[0].externals[0].icmp_ranges",
    /icmp_out_ranges 1000-65535 \(inherited from \[defaults\]\)/,
  );
});

Deno.test("ranges: single string and number forms are accepted", () => {
  const { config } = parse(`[defaults]\ntcp_ranges = "20000-29999"\nudp_ranges = [53, "5353"]\n`);
  deepStrictEqual(config.defaults.ranges.tcp, [{ start: 20000, end: 29999 }]);
  deepStrictEqual(config.defaults.ranges.udp, [{ start: 53, end: 53 }, { start: 5353, end: 5353 }]);
});

Deno.test("timeouts: numbers are seconds; einat-ebpf's timeout_pkt_* set UDP's (and ICMP's default), ours win", () => {
  let r = parse(MIN + `timeout_udp_default = 600\ntimeout_pkt_min = "3m"\n`);
  equal(r.config.interfaces[0].timeouts.udpDefault, 600_000);
  equal(r.config.interfaces[0].timeouts.udpMin, 180_000);
  deepStrictEqual(r.notices, [], "einat-ebpf's names are not deprecated");
  r = parse(MIN + `timeout_pkt_default = "9m"\ntimeout_udp_default = "8m"\n`);
  equal(r.config.interfaces[0].timeouts.udpDefault, 480_000);
  equal(r.config.interfaces[0].timeouts.icmpDefault, 540_000, "ICMP as einat-ebpf times it");
  ok(r.notices.some((n) => /overridden by timeout_udp_default/.test(n)));
  r = parse(MIN + `timeout_pkt_default = "10m"\ntimeout_icmp_default = "1m"\n`);
  equal(r.config.interfaces[0].timeouts.icmpDefault, 60_000);
  // A minimum above the default is taken, as einat-ebpf takes it, with a warning naming the
  // keys the file set.
  r = parse(MIN + `timeout_pkt_default = "1m"\n`);
  equal(r.config.interfaces[0].timeouts.udpDefault, 60_000);
  equal(r.config.interfaces[0].timeouts.udpMin, 120_000);
  deepStrictEqual(r.notices, [
    "warning: test.toml: interfaces[0].timeout_pkt_default: timeout_udp_min (built-in) (2m) is " +
    "longer than timeout_pkt_default (1m): a UDP session nobody answered is kept longer than one " +
    "that was answered",
  ]);
  r = parse(MIN + `timeout_pkt_min = "10m"\n`);
  equal(r.config.interfaces[0].timeouts.udpMin, 600_000);
  equal(r.notices.length, 1);
  ok(
    /warning: .*interfaces\[0\]\.timeout_pkt_min: timeout_pkt_min \(10m\) is longer than timeout_udp_default \(built-in\) \(5m\)/
      .test(r.notices[0]),
    r.notices[0],
  );
  ok(noticeLevel(r.notices[0]) === "warn");
  // An established TCP timeout below the transitory one: taken, with a warning.
  r = parse(MIN + `timeout_tcp_est = "10s"\n`);
  equal(r.config.interfaces[0].timeouts.tcpEst, 10_000);
  ok(
    /warning: .*interfaces\[0\]\.timeout_tcp_est: timeout_tcp_est \(10s\) is shorter than timeout_tcp_trans \(4m\)/
      .test(r.notices[0]),
    r.notices.join("\n"),
  );
  // TCP's opening and closing timeouts apart (RFC 7857 2.1): timeout_tcp_trans sets both,
  // timeout_tcp_opening / timeout_tcp_closing each override it.
  const tcp = (text: string) => {
    const t = parse(MIN + text).config.interfaces[0].timeouts;
    return [t.tcpTrans, t.tcpClosing];
  };
  deepStrictEqual(tcp(""), [240_000, 240_000]);
  deepStrictEqual(tcp(`timeout_tcp_trans = "5m"\n`), [300_000, 300_000]);
  deepStrictEqual(tcp(`timeout_tcp_trans = "5m"\ntimeout_tcp_opening = "30s"\n`), [
    30_000,
    300_000,
  ]);
  deepStrictEqual(tcp(`timeout_tcp_closing = "1m"\n`), [240_000, 60_000]);
  deepStrictEqual(tcp(`timeout_tcp_opening = "20s"\ntimeout_tcp_closing = "1m"\n`), [
    20_000,
    60_000,
  ]);
  r = parse(MIN + `timeout_tcp_est = 270\ntimeout_tcp_closing = "5m"\n`);
  ok(
    /interfaces\[0\]\.timeout_tcp_est: timeout_tcp_est \(4m30s\) is shorter than timeout_tcp_closing \(5m\): an established connection is kept less long than one closing/
      .test(r.notices.join("\n")),
    r.notices.join("\n"),
  );
  expectError(MIN + `timeout_tcp_opening = "0s"\n`, "interfaces[0].timeout_tcp_opening", /zero/);
  // Below a millisecond: said so, not "longer than zero".
  expectError(
    MIN + `timeout_udp_min = "1ns"\n`,
    "interfaces[0].timeout_udp_min",
    /shorter than 1ms/,
  );
  expectError(
    MIN + `timeout_udp_min = "0s"\n`,
    "interfaces[0].timeout_udp_min",
    /longer than zero/,
  );
});

Deno.test("warnings: default_externals = false with no externals to use; hairpin with no ip_protocols; an internal interface twice", () => {
  let r = parse(MIN + `default_externals = false\n`);
  ok(
    r.notices.some((n) =>
      /warning: .*interfaces\[0\]\.default_externals: .*no address can be an external one/.test(n)
    ),
    r.notices.join("\n"),
  );
  r = parse(MIN + `default_externals = false\n[[interfaces.externals]]\naddress = "192.0.2.1"\n`);
  ok(!r.notices.some((n) => /default_externals/.test(n)), r.notices.join("\n"));
  r = parse(
    MIN +
      `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["lan0", "lan0"]\nip_protocols = []\n`,
  );
  ok(r.notices.some((n) => /warning: .*ip_protocols: .*no rule sends anything/.test(n)));
  ok(r.notices.some((n) => /internal_if_names: an interface listed twice is used once/.test(n)));
  deepStrictEqual(r.config.interfaces[0].ipv4HairpinRoute.internalIfNames, ["lan0"]);
});

Deno.test("hairpin: the external interface among internal_if_names is an error; a rule preference not below the local rule's is a warning", () => {
  expectError(
    MIN + `[interfaces.ipv6_hairpin_route]\ninternal_if_names = ["lan0", "eth0"]\n`,
    "interfaces[0].ipv6_hairpin_route.internal_if_names[1]",
    /"eth0" is this external interface; list the internal \(LAN\) interfaces/,
  );
  const r = parse(
    `[defaults]\nipv4_local_rule_pref = 200\n` + MIN +
      `[interfaces.ipv4_hairpin_route]\ninternal_if_names = ["lan0"]\nip_rule_pref = 300\n`,
  );
  deepStrictEqual(r.notices, [
    "warning: test.toml: interfaces[0].ipv4_hairpin_route.ip_rule_pref: hairpin rule preference " +
    "300 is not lower than the local rule preference 200 (defaults.ipv4_local_rule_pref), so " +
    "hairpin routes may never match",
  ]);
});

Deno.test("ranges: overlapping ones are merged, as einat-ebpf merges them, with a warning naming both", () => {
  const r = parse(
    MIN + `[[interfaces.externals]]\nmatch_address = "192.0.2.0/24"\n` +
      `udp_ranges = ["20000-29999", "25000-35000", "40000-40999"]\n`,
  );
  deepStrictEqual(r.config.interfaces[0].externals[0].ranges?.udp, [
    { start: 20000, end: 35000 },
    { start: 40000, end: 40999 },
  ]);
  deepStrictEqual(r.notices, [
    'warning: test.toml: interfaces[0].externals[0].udp_ranges[1]: range "25000-35000" overlaps ' +
    '"20000-29999" (element 0); taken as "20000-35000, 40000-40999", as einat-ebpf does',
  ]);
});

Deno.test("flow_cache_slots: 16384 by default, a power of two when set", () => {
  equal(parse(MIN).config.interfaces[0].flowCacheSlots, 16384);
  equal(parse(MIN + `flow_cache_slots = 1024\n`).config.interfaces[0].flowCacheSlots, 1024);
  throws(() => parse(MIN + `flow_cache_slots = 10000\n`), /not a power of two \(e\.g\. 8192\)/);
});

Deno.test("ct_max_records follows binding_max_records by default", () => {
  const i = parse(MIN + `binding_max_records = 1000\n`).config.interfaces[0];
  equal(i.ctMaxRecords, 2000);
  const { notices } = parse(MIN + `binding_max_records = 1000\nct_max_records = 10\n`);
  ok(notices.some((n) => n.includes("ct_max_records")));
});

Deno.test("bpf_loader and hairpin_dests are accepted and ignored with a notice", () => {
  const { config, notices } = parse(
    MIN + `bpf_loader = "libbpf-skel"\nhairpin_dests = ["10.0.0.0/8"]\n`,
  );
  equal(config.interfaces.length, 1);
  ok(
    notices.some((n) => n.startsWith("test.toml: interfaces[0].bpf_loader: ignored")),
    notices.join("\n"),
  );
  ok(notices.some((n) => n.startsWith("test.toml: interfaces[0].hairpin_dests: ignored")));
});

Deno.test("if_index: extension, ignored when if_name is set", () => {
  let r = parse(`[[interfaces]]\nif_index = 3\nnat44 = true\n`);
  equal(r.config.interfaces[0].ifIndex, 3);
  equal(r.config.interfaces[0].ifName, undefined);
  r = parse(`[[interfaces]]\nif_name = "eth0"\nif_index = 3\nnat44 = true\n`);
  equal(r.config.interfaces[0].ifIndex, undefined);
  ok(r.notices.some((n) => n.includes("if_index: ignored")));
});

Deno.test("warning when neither nat44 nor nat66 is on", () => {
  const { notices } = parse(MIN + `[[interfaces]]\nif_name = "eth1"\nnat66 = false\n`);
  const n = notices.filter((n) => /neither nat44 nor nat66/.test(n));
  equal(n.length, 1, notices.join("\n"));
  ok(n[0].startsWith("warning: test.toml: interfaces[1].nat44: "), n[0]);
  ok(/interface eth1 is not translated; set nat44 = true/.test(n[0]), n[0]);
  equal(noticeLevel(n[0]), "warn");
  equal(noticeLevel("test.toml: interfaces[0].bpf_loader: ignored"), "info");
});

Deno.test("unspecified static address gives a notice", () => {
  const { notices } = parse(MIN + `[[interfaces.externals]]\naddress = "0.0.0.0"\n`);
  ok(notices.some((n) => /never matches/.test(n)));
});

Deno.test("unknown keys suggest the closest valid key", () => {
  expectError(MIN + `nat_44 = true\n`, "interfaces[0].nat_44", /did you mean `nat44`\?/);
  expectError(MIN + `timeout_tcp_established = "2h"\n`, "interfaces[0].timeout_tcp_established");
  expectError(
    `[defaults]\nicmp_ranges_in = []\n`,
    "defaults.icmp_ranges_in",
    /did you mean `icmp_in_ranges`/,
  );
  expectError(MIN + `zzzzzz = 1\n`, "interfaces[0].zzzzzz", /valid keys here: `if_name`/);
});

Deno.test("error messages name the file, the key and what is valid", () => {
  const e = expectError(MIN + `bpf_log_level = 9\n`, "interfaces[0].bpf_log_level");
  equal(
    e.message,
    "test.toml: interfaces[0].bpf_log_level: 9 is out of range; expected a log level " +
      "(0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace) from 0 to 5",
  );
});

Deno.test("editDistance and suggest", () => {
  equal(editDistance("kitten", "sitting"), 3);
  equal(editDistance("", "abc"), 3);
  equal(suggest("nat4", ["nat44", "nat66"]), "nat44");
  equal(suggest("qqqqqqq", ["nat44", "nat66"]), undefined);
});

Deno.test("DEFAULTS matches einat-ebpf", () => {
  equal(DEFAULTS.bindingMaxRecords, 65536 * 3);
  equal(DEFAULTS.timeouts.tcpEst, (2 * 60 + 4) * 60 * 1000);
});

Deno.test("config.sample.toml is valid and equals the defaults", () => {
  const text = Deno.readTextFileSync(new URL("../../config.sample.toml", import.meta.url));
  const { config, notices } = parseConfigToml(text, "config.sample.toml", K);
  deepStrictEqual(notices, []);
  equal(config.interfaces.length, 1);
  equal(config.interfaces[0].ifName, "eth0");
  equal(config.interfaces[0].nat44, true);
  deepStrictEqual(config, parse(MIN).config);
});

Deno.test("config.sample.toml: uncommenting the documented defaults changes nothing", () => {
  const text = Deno.readTextFileSync(new URL("../../config.sample.toml", import.meta.url));
  // Uncomment every `#key = value` line (not prose) and drop the active example.
  const body = text.split("\n").filter((l) => /^#(\[|[a-z_0-9]+ = )/.test(l))
    .map((l) => l.slice(1).replace(/\s+#.*$/, ""))
    // Keep only the first of the alternative forms in each externals entry.
    .filter((l, i, all) => {
      const key = l.split(" = ")[0];
      if (!["match_address", "network", "address"].includes(key)) return true;
      for (let j = i - 1; j >= 0 && !all[j].startsWith("["); j--) {
        if (["match_address", "network", "address"].includes(all[j].split(" = ")[0])) return false;
      }
      return true;
    });
  const { config } = parseConfigToml(body.join("\n"), "uncommented.toml", K);
  const i = config.interfaces[0];
  const base = parse(`[[interfaces]]\nif_name = "wan0"\n`).config.interfaces[0];
  deepStrictEqual(config.defaults, parse("").config.defaults);
  deepStrictEqual(
    { ...i, externals: [] },
    { ...base, externals: [] },
  );
  equal(i.externals.length, 4);
});

Deno.test("bad-config corpus: every file fails at its declared key path", async (t) => {
  const dir = new URL("../../tests/fixtures/bad-configs/", import.meta.url);
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".toml"))
    .sort();
  ok(files.length >= 30, `only ${files.length} bad configs`);
  for (const name of files) {
    await t.step(name, () => checkBadConfig(dir, name));
  }
});

function checkBadConfig(dir: URL, name: string): void {
  {
    ok(/^\d\d-[a-z0-9-]+\.toml$/.test(name), `bad fixture name ${name}`);
    const text = Deno.readTextFileSync(new URL(name, dir));
    const m = /^# error: (\S+)\n/.exec(text);
    ok(m, `${name}: first line must be "# error: <path>"`);
    const expected = m[1];
    throws(
      () => parseConfigToml(text, name, K),
      (e: unknown) => {
        ok(e instanceof ConfigError, `${name}: ${e}`);
        equal(e.path, expected, `${name}: ${e.message}`);
        equal(e.file, name);
        ok(e.message.startsWith(`${name}: ${expected}: `), e.message);
        ok(
          e.message.length > name.length + expected.length + 20,
          `${name}: message too short: ${e.message}`,
        );
        return true;
      },
      name,
    );
  }
}

Deno.test("external_slots: the loader's default unless set, from 1 to 16", () => {
  equal(parse(MIN).config.interfaces[0].externalSlots, 0);
  equal(parse(MIN + `external_slots = 4\n`).config.interfaces[0].externalSlots, 4);
  throws(() => parse(MIN + `external_slots = 0\n`), /external_slots/);
  throws(() => parse(MIN + `external_slots = 17\n`), /external_slots/);
});

Deno.test("icmp: an external that sets icmp_ranges inherits [defaults]' in/out ranges even when [defaults] turned ICMP off (einat-ebpf)", () => {
  const { config } = parse(
    `[defaults]\nicmp_ranges = []\n` + MIN +
      `[[interfaces.externals]]\nmatch_address = "0.0.0.0/0"\nicmp_ranges = ["0-65535"]\n`,
  );
  const r = config.interfaces[0].externals[0].ranges;
  deepStrictEqual([r.icmpIn, r.icmpOut], [[{ start: 0, end: 9999 }], [{
    start: 1000,
    end: 65535,
  }]]);
});

Deno.test("snat_internals: a match-all network is noticed (every source of its family translated)", () => {
  const { notices } = parse(MIN + `snat_internals = ["0.0.0.0/0", "192.0.2.0/24"]\n`);
  ok(
    notices.some((n) => /snat_internals: 0\.0\.0\.0\/0 matches every source/.test(n)),
    notices.join("\n"),
  );
});

Deno.test("a TOML syntax error names the line it is on (a key given twice: the parser's message names none)", () => {
  const e = expectError(
    `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nnat44 = false\n`,
    "(syntax)",
    /invalid TOML at line 4 \("nat44 = false"\), column \d+: .*redefine/,
  );
  ok(e.message.includes("test.toml"));
});

Deno.test("unknown keys: the nearer spelling wins a tie; a key of another table says where it goes", () => {
  expectError(
    MIN + `[[interfaces.external]]\naddress = "192.0.2.1"\n`,
    "interfaces[0].external",
    /did you mean `externals`\?/,
  );
  expectError(
    MIN + `tcp_ranges = ["20000-20099"]\n`,
    "interfaces[0].tcp_ranges",
    /not a key here; it goes in \[defaults\] or \[\[interfaces\.externals\]\]/,
  );
});

Deno.test("session_max_per_host: off (0) by default, a count of sessions when set", () => {
  equal(parse(MIN).config.interfaces[0].sessionMaxPerHost, 0);
  equal(parse(MIN + `session_max_per_host = 4000\n`).config.interfaces[0].sessionMaxPerHost, 4000);
  throws(
    () => parse(MIN + `session_max_per_host = -1\n`),
    /interfaces\[0\]\.session_max_per_host.*a number of sessions \(0: no limit\)/,
  );
  const { notices } = parse(MIN + `binding_max_per_host = 100\nsession_max_per_host = 50\n`);
  ok(notices.some((n) => n.includes("session_max_per_host: 50 is below binding_max_per_host")));
  const fine = parse(MIN + `binding_max_per_host = 100\nsession_max_per_host = 500\n`).notices;
  ok(!fine.some((n) => n.includes("session_max_per_host")), fine.join("\n"));
});
