import { deepStrictEqual } from "node:assert/strict";
import { planInterface } from "./plan.ts";
import { EXT_FLAGS } from "./codec.ts";
import { formatAddr, parseCidr } from "../config/cidr.ts";
import type { ExternalSpec } from "../config/types.ts";
import { testInterfaceConfig } from "../../tests/lib/natfixture.ts";

const { EXTERNAL, NO_SNAT, NO_HAIRPIN } = EXT_FLAGS;

function staticExternal(address: string, o: Partial<ExternalSpec> = {}): ExternalSpec {
  return {
    match: { kind: "address", addr: parseCidr(address) },
    isInternal: false,
    noSnat: false,
    noHairpin: false,
    ranges: testInterfaceConfig().defaultRanges,
    ...o,
  };
}

Deno.test("plan: the destination map holds the no-SNAT networks and the externals, one entry per prefix", () => {
  const ic = testInterfaceConfig({
    nat66: true,
    defaultExternals: false,
    externals: [
      staticExternal("203.0.113.1/32"),
      staticExternal("203.0.113.2/32", { noHairpin: true }),
      staticExternal("198.51.100.7/32"), // inside a no_snat_dests network
      staticExternal("2001:db8:2::1/128"), // also a no_snat_dests entry of its own
      staticExternal("203.0.113.9/32", { noSnat: true }), // not an external destination
    ],
    noSnatDests: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:2::1/128")],
  });
  const dst = planInterface(ic, []).destConfig.map((d) =>
    `${formatAddr(d.addr)}/${d.prefixLen}=${d.flags}`
  );
  deepStrictEqual(
    dst.sort(),
    [
      `198.51.100.0/24=${NO_SNAT}`,
      `198.51.100.7/32=${EXTERNAL | NO_SNAT}`,
      `2001:db8:2::1/128=${NO_SNAT | EXTERNAL}`,
      `203.0.113.1/32=${EXTERNAL}`,
      `203.0.113.2/32=${EXTERNAL | NO_HAIRPIN}`,
    ].sort(),
  );
});

Deno.test("plan: the default external is marked the only one when no other address of its family can be SNATed to (no FIB lookup needed)", () => {
  const plan = (externals: ExternalSpec[]) =>
    planInterface(testInterfaceConfig({ nat66: true, defaultExternals: false, externals }), []);
  const one = plan([
    staticExternal("203.0.113.1/32"),
    staticExternal("203.0.113.9/32", { noSnat: true }), // never a source of mappings
    staticExternal("2001:db8:2::1/128"),
    staticExternal("2001:db8:2::2/128", { noHairpin: true }), // a source all the same
  ]);
  deepStrictEqual([one.defaultExt[4]?.only, one.defaultExt[6]?.only], [true, false]);
  const two = plan([staticExternal("203.0.113.1/32"), staticExternal("203.0.113.2/32")]);
  deepStrictEqual(two.defaultExt[4]?.only, false);
});

Deno.test("plan: a match-all internal network (--internal 0.0.0.0/0) translates every source of its family, as in einat-ebpf", () => {
  const ic = testInterfaceConfig({
    nat66: true,
    snatInternals: [
      parseCidr("0.0.0.0/0"),
      parseCidr("192.0.2.0/24"),
      parseCidr("2001:db8:1::/64"),
    ],
  });
  const ext = planInterface(ic, []).externals.map((e) =>
    `${formatAddr(e.addr)}/${e.prefixLen}=${e.cfg.flags}`
  );
  // No IPv4 entry at all (its /0 no-SNAT catch-all would pass every source untranslated);
  // IPv6 keeps its internal and its catch-all.
  deepStrictEqual(ext.filter((x) => !x.includes(":")), []);
  deepStrictEqual(ext.filter((x) => x.includes(":")).sort(), [
    `2001:db8:1::/64=0`,
    `::/0=${NO_SNAT}`,
  ]);
});

Deno.test('plan: `network = "a/n"` is its address as an external, and its network\'s other sources pass untranslated (NO_SNAT, not EXTERNAL), as einat-ebpf installs the prefix', () => {
  const net = parseCidr("203.0.113.0/24");
  const spec = (cidr: string, address: string): ExternalSpec => ({
    ...staticExternal("0.0.0.0/32"),
    match: { kind: "staticNetwork", net: parseCidr(cidr), address: parseCidr(address).addr },
  });
  const ic = testInterfaceConfig({
    nat66: false,
    defaultExternals: false,
    externals: [
      spec("203.0.113.5/24", "203.0.113.5/32"),
      spec("203.0.113.9/24", "203.0.113.9/32"), // the same network: its address only
      spec("198.51.100.7/32", "198.51.100.7/32"), // a /32 network is the address alone
      spec("2001:db8::5/64", "2001:db8::5/128"), // NAT66 off: nothing
    ],
  });
  const plan = planInterface(ic, []);
  const ext = plan.externals.map((e) => `${formatAddr(e.addr)}/${e.prefixLen}=${e.cfg.flags}`);
  deepStrictEqual(ext, [
    `203.0.113.5/32=${EXTERNAL}`,
    `203.0.113.9/32=${EXTERNAL}`,
    `198.51.100.7/32=${EXTERNAL}`,
    `${formatAddr(net.addr)}/24=${NO_SNAT}`,
  ]);
  deepStrictEqual(formatAddr(plan.defaultExt[4]!.addr), "203.0.113.5");
  deepStrictEqual(plan.defaultExt[4]!.only, false);
  // the network is no destination of ours: its hosts are not hairpinned to the router
  deepStrictEqual(plan.destConfig.some((d) => d.prefixLen === 24), false);
});

Deno.test('plan: an external `address = "0.0.0.0"` (or ::) has no effect: never the default external nor a source', () => {
  const ic = testInterfaceConfig({
    nat66: true,
    externals: [staticExternal("0.0.0.0/32"), staticExternal("::/128")],
  });
  const p = planInterface(ic, [
    { family: 4, addr: parseCidr("203.0.113.1/32").addr, prefixLen: 24 },
    { family: 6, addr: parseCidr("2001:db8:2::1/128").addr, prefixLen: 64 },
  ]);
  deepStrictEqual(
    [formatAddr(p.defaultExt[4]!.addr), formatAddr(p.defaultExt[6]!.addr)],
    ["203.0.113.1", "2001:db8:2::1"],
  );
  deepStrictEqual(p.resolved.map((r) => formatAddr(r.addr)), ["203.0.113.1", "2001:db8:2::1"]);
});
