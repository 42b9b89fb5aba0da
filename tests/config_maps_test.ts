/**
 * Configuration keys reach the BPF side: a TOML file is parsed, planned,
 * loaded and applied, then the read-only config and the maps are read back.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { parseConfigToml } from "../lib/config/toml.ts";
import { formatAddr, parseAddr } from "../lib/config/cidr.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { applyPlan } from "../lib/nat/apply.ts";
import {
  decodeDefaultExt,
  decodeExternalConfig,
  decodeLpmKey,
  decodeRoConfig,
  DEFAULT_EXT_LAYOUT,
  EINAT_CONFIG_LAYOUT,
  EXT_FLAGS,
  EXTERNAL_CONFIG_LAYOUT,
  flowFreshNs,
  LPM_KEY_LAYOUT,
  outboundLines,
  type RoConfig,
  weakOrderHere,
} from "../lib/nat/codec.ts";
import { closeNat, defaultSlots, loadNat } from "../lib/nat/loader.ts";
import { RECORDS_PER_SLOT } from "../lib/nat/records.ts";
import { planInterface } from "../lib/nat/plan.ts";
import { roConfigOf } from "../lib/daemon.ts";
import { loadTestNat, testInterfaceConfig } from "./lib/natfixture.ts";

const TOML = `
[defaults]
tcp_ranges = ["21000-21999", "23000-23099"]
udp_ranges = ["22000-22999"]
icmp_ranges = ["100-5000"]
icmp_in_ranges = ["100-199"]
icmp_out_ranges = ["200-5000"]

[[interfaces]]
if_name = "wan0"
nat44 = true
nat66 = true
bpf_log_level = 3
bpf_fib_lookup_external = true
allow_inbound_icmpx = false
other_max_records = 777
timeout_other = "7m"
timeout_fragment = "3s"
timeout_icmp_default = "45s"
timeout_udp_min = "90s"
timeout_udp_default = "4m"
timeout_tcp_trans = "5m"
timeout_tcp_closing = "6m"
timeout_tcp_est = "3h"
binding_max_records = 4096
binding_max_per_host = 300
session_max_per_host = 5000
ct_max_records = 9000
flow_cache_slots = 4096
session_counters = 2048
no_snat_dests = ["198.51.100.0/24"]
snat_internals = ["192.0.2.0/25"]

[[interfaces.externals]]
address = "203.0.113.50"
udp_ranges = []

[[interfaces.externals]]
match_address = "203.0.113.0/24"
no_snat = true
`;

const addr = (s: string) => parseAddr(s);

Deno.test("config keys reach the loaded BPF config and maps", async () => {
  const ic = parseConfigToml(TOML, "test.toml").config.interfaces[0];
  const plan = planInterface(ic, [
    { family: 4, addr: addr("203.0.113.1"), prefixLen: 24 },
    { family: 6, addr: addr("2001:db8:2::1"), prefixLen: 64 },
  ]);
  const nat = await loadNat({
    ro: roConfigOf(ic, false),
    bindingMaxRecords: ic.bindingMaxRecords,
    ctMaxRecords: ic.ctMaxRecords,
    otherMaxRecords: ic.otherMaxRecords,
  });
  try {
    applyPlan(nat.maps, plan);
    // read-only config, as the kernel holds it
    const ro = bpf.mapLookup(
      bpf.mapFd(bpf.findMap(nat.obj, ".rodata")),
      new Uint8Array(4),
      bpf.mapValueSize(bpf.findMap(nat.obj, ".rodata")),
    )!;
    const { ipIdKey, ...cfg } = decodeRoConfig(ro.slice(0, EINAT_CONFIG_LAYOUT.size));
    // drawn at random by the loader (bpf/lib/ipid.h); zero only once in 2^32 loads
    assert(ipIdKey !== undefined && ipIdKey !== 0, `ip_id_key ${ipIdKey}`);
    const s = 1_000_000_000n;
    assertEquals(cfg, {
      timeoutFragment: 3n * s,
      timeoutIcmp: 45n * s,
      timeoutUdpMin: 90n * s,
      timeoutUdp: 240n * s,
      timeoutTcpTrans: 300n * s,
      timeoutTcpEst: 3n * 3600n * s,
      timeoutTcpClosing: 360n * s,
      logLevel: 3,
      hasEth: false,
      nat44: true,
      nat66: true,
      fibExternal: true,
      inboundIcmpx: false,
      flowCacheSlots: 4096,
      // binding_max_records: the bindings at most, and the outbound index sized for them
      outboundLines: 1024,
      bindingMax: 4096,
      // binding_max_per_host, and room for as many hosts as there can be bindings
      hostMax: 300,
      // session_max_per_host
      hostSessMax: 5000,
      timeoutOther: 420n * s,
      // from the machine, not the configuration: x86 keeps loads in order, arm64 does not
      weakOrder: weakOrderHere(),
    });
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_hosts")), 4096);
    // other_max_records: the address-only mappings' table
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_addr_nat")), 777);
    // session_counters: the knob on, the counters' map sized to it
    assertEquals(ro[EINAT_CONFIG_LAYOUT.fields.session_counters.offset], 1);
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_sess_counters")), 2048);
    // the flow cache: one block of flow_cache_slots per possible CPU
    assertEquals(
      bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_flow_cache")),
      4096 * bpf.numPossibleCpus(),
    );
    // the flow cache's freshness: a quarter of 45 s is past the one-second cap
    const fresh = EINAT_CONFIG_LAYOUT.fields.flow_fresh_ns.offset;
    assertEquals(new DataView(ro.buffer, ro.byteOffset).getBigUint64(fresh, true), s);
    // record limits: binding_max_records sizes the outbound index (four entries per binding,
    // 15 to a line, a power of two of lines); the records are a slot per family NATed and one
    // more, 3 protocols x 65,536 ports each
    assertEquals(outboundLines(4096), 1024);
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_outbound")), 1024);
    assertEquals(defaultSlots(roConfigOf(ic, false)), 3);
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_records")), 3 * RECORDS_PER_SLOT);
    assertEquals(RECORDS_PER_SLOT, 3 * 65536);
    assertEquals(bpf.mapMaxEntries(bpf.findMap(nat.obj, "map_ct")), 9000);

    // default external: the static address wins (first static or matching)
    const key0 = new Uint8Array(4);
    const d4 = decodeDefaultExt(bpf.mapLookup(nat.maps.defaultExt, key0, DEFAULT_EXT_LAYOUT.size)!);
    assertEquals(formatAddr(d4.addr.slice(0, 4)), "203.0.113.50");
    assert(d4.valid);
    assertEquals(d4.cfg.tcp, [{ start: 21000, end: 21999 }, { start: 23000, end: 23099 }]);
    assertEquals(d4.cfg.udp, [], "udp_ranges = [] on the external disables UDP NAT");
    assertEquals(d4.cfg.icmp, [{ start: 200, end: 5000 }], "echo ids from icmp_out_ranges");
    assertEquals(d4.cfg.icmpIn, [{ start: 100, end: 199 }], "inbound ids from icmp_in_ranges");
    const key1 = new Uint8Array([1, 0, 0, 0]);
    const d6 = decodeDefaultExt(bpf.mapLookup(nat.maps.defaultExt, key1, DEFAULT_EXT_LAYOUT.size)!);
    assertEquals(formatAddr(d6.addr), "2001:db8:2::1", "IPv6 through default_externals");

    const ext = new Map(
      [...bpf.mapEntries(nat.maps.externals, LPM_KEY_LAYOUT.size, EXTERNAL_CONFIG_LAYOUT.size)].map(
        (e) => {
          const k = decodeLpmKey(e.key);
          return [`${formatAddr(k.addr)}/${k.prefixLen}`, decodeExternalConfig(e.value)];
        },
      ),
    );
    assertEquals(ext.get("203.0.113.50/32")?.flags, EXT_FLAGS.EXTERNAL);
    assertEquals(
      ext.get("203.0.113.1/32")?.flags,
      EXT_FLAGS.NO_SNAT,
      "matched by the no_snat network",
    );
    assertEquals(ext.get("192.0.2.0/25")?.flags, 0, "snat_internals: translated");
    assertEquals(ext.get("0.0.0.0/0")?.flags, EXT_FLAGS.NO_SNAT, "everything else: not translated");

    const dst = [...bpf.mapEntries(nat.maps.destConfig, LPM_KEY_LAYOUT.size, 4)].map((e) => {
      const k = decodeLpmKey(e.key);
      return `${formatAddr(k.addr)}/${k.prefixLen}=${
        new DataView(e.value.buffer).getUint32(0, true)
      }`;
    });
    assertEquals(
      dst.sort(),
      [
        `198.51.100.0/24=${EXT_FLAGS.NO_SNAT}`,
        `2001:db8:2::1/128=${EXT_FLAGS.EXTERNAL}`,
        `203.0.113.50/32=${EXT_FLAGS.EXTERNAL}`,
      ].sort(),
      "no_snat_dests, and the externals as hairpin destinations",
    );
  } finally {
    closeNat(nat);
  }
});

Deno.test("flowFreshNs: a quarter of the shortest timeout, at most one second", () => {
  const s = 1_000_000_000n;
  const ro: RoConfig = {
    timeoutFragment: 1n * s, // not a session timeout: ignored
    timeoutIcmp: 30n * s,
    timeoutUdpMin: 120n * s,
    timeoutUdp: 300n * s,
    timeoutTcpTrans: 240n * s,
    timeoutTcpEst: 7440n * s,
    logLevel: 0,
    hasEth: true,
    nat44: true,
    nat66: false,
  };
  assertEquals(flowFreshNs(ro), s);
  assertEquals(flowFreshNs({ ...ro, timeoutUdpMin: 2n * s }), s / 2n);
  assertEquals(flowFreshNs({ ...ro, timeoutTcpEst: 3n * s }), 750_000_000n);
});

Deno.test("preallocate_maps: the session map is created preallocated (the binding maps are arrays, always are), and translate", async () => {
  for (const preallocate of [false, true]) {
    const ic = testInterfaceConfig();
    ic.preallocateMaps = preallocate;
    ic.bindingMaxRecords = 1024;
    ic.ctMaxRecords = 2048;
    const n = await loadTestNat(ic);
    try {
      assertEquals(
        bpf.mapInfo(n.nat.maps.ct).flags & bpf.BPF_F_NO_PREALLOC,
        preallocate ? 0 : bpf.BPF_F_NO_PREALLOC,
      );
      for (const fd of [n.nat.maps.records, n.nat.maps.outbound]) {
        const info = bpf.mapInfo(fd);
        assertEquals(info.type, bpf.MapType.ARRAY, `${info.name}: an array`);
        assertEquals(info.flags & bpf.BPF_F_NO_PREALLOC, 0, `${info.name}: preallocated`);
      }
      const r = n.egress({
        family: 4,
        src: "192.0.2.10",
        dst: "198.51.100.1",
        proto: "udp",
        sport: 40000,
        dport: 53,
        payload: new Uint8Array(4),
      });
      assertEquals(r.out.src, "203.0.113.1", "translated");
    } finally {
      n.close();
    }
  }
});
