/**
 * NAT behaviour as third-party STUN tools classify it (RFC 5780 with coturn, RFC 3489 with the
 * classic client), through a router namespace: einat must come out endpoint-independent in
 * mapping and filtering, for NAT44 and NAT66, and hairpin when asked to. The same tools on the
 * same path through nftables masquerade first, so that the test shows they tell the cases apart.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { startEinat, stopEinat } from "./lib/einat.ts";
import { nsExec, withTopology } from "./lib/netns.ts";
import { classicStun, natDiscovery, parseDiscovery, startStunServer } from "./lib/stun.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

Deno.test("stun: parseDiscovery reads the tool's verdicts", () => {
  const d = parseDiscovery(
    "NAT with Endpoint Independent Mapping!\n===\nNAT with Address and Port Dependent Filtering!\n",
  );
  assertEquals([d.mapping, d.filtering, d.hairpin], [
    "Endpoint Independent",
    "Address and Port Dependent",
    false,
  ]);
  assertEquals(parseDiscovery("STUN receive timeout..\n").mapping, undefined);
  assert(parseDiscovery("Received a request (maybe a successful hairpinning)\n").hairpin);
});

Deno.test({
  name:
    "stun: coturn's RFC 5780 discovery and the classic stun client find einat endpoint-independent (mapping and filtering, NAT44 and NAT66) and hairpinning; masquerade address-and-port-dependent",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      const [a4, a6] = [t.addrs.v4, t.addrs.v6];
      await startStunServer(t.ns.srv1, [...a4.srv1, ...a6.srv1]);

      // Baseline: masquerade maps endpoint-independently but filters by address and port.
      await nsExec(t.ns.router, ["nft", "-f", "-"], {
        stdin: "table ip stunmasq { chain post { type nat hook postrouting priority 100; " +
          'oifname "wan0" masquerade; }; }\n',
      });
      const masq = await natDiscovery(t.ns.lan1, a4.srv1[0]);
      await nsExec(t.ns.router, ["nft", "delete", "table", "ip", "stunmasq"]);
      assertEquals(masq.mapping, "Endpoint Independent", masq.out);
      assertEquals(masq.filtering, "Address and Port Dependent", masq.out);
      assert(!masq.hairpin, masq.out);

      const einat = await startEinat(t.ns.router, [
        "-i",
        "wan0",
        "--nat44",
        "--nat66",
        "--hairpin-if",
        "br0",
      ]);
      try {
        const d4 = await natDiscovery(t.ns.lan1, a4.srv1[0]);
        assertEquals(d4.mapping, "Endpoint Independent", d4.out);
        assertEquals(d4.filtering, "Endpoint Independent", d4.out);
        assert(d4.hairpin, `no hairpinning:\n${d4.out}`);

        const d6 = await natDiscovery(t.ns.lan1, a6.srv1[0]);
        assertEquals(d6.mapping, "Endpoint Independent", d6.out);
        assertEquals(d6.filtering, "Endpoint Independent", d6.out);
        assert(d6.hairpin, `no IPv6 hairpinning:\n${d6.out}`);

        const classic = await classicStun(t.ns.lan2, a4.srv1[0]);
        assert(
          /^Independent Mapping, Independent Filter, .*will hairpin/.test(classic),
          classic,
        );
      } finally {
        assertEquals(await stopEinat(einat), 0, einat.stderrText());
      }
    }),
});
