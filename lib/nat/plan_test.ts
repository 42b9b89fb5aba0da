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
