/**
 * Regression test (fixed; part of the suite), first written as the reproducer: ICMP errors from an
 * internal host that einat cannot translate leave with the internal source address.
 *
 * Found by tests/fuzz_test.ts (leak classes `icmp-error-untranslatable` and
 * `icmp-error-fragment`, counted in every run). parse_l4/parse_inner (bpf/lib/parse.h) return
 * PARSE_PASS for an ICMP error that is itself a fragment, or whose embedded packet is a
 * non-first fragment, another protocol, an ICMP error, or ICMP of the other family; egress
 * passes PARSE_PASS untouched, so the error leaves the WAN side with source 192.0.2.10.
 * Malformed errors (PARSE_BAD) from inside are dropped; these should be too (they cannot be
 * about anything the NAT translated). Example frame (error about an error):
 *   see the `nested` packet below; the fuzzer prints more in leakExample.
 *
 * Run: deno test -A tests/regress_icmp_error_leak_test.ts
 */
import { assertEquals } from "./lib/assert.ts";
import { EXT_CIDRS, fuzzConfig, hex } from "./lib/fuzz.ts";
import { loadTestNat, TC_ACT_SHOT } from "./lib/natfixture.ts";
import { buildIcmpError, buildPacket } from "./lib/packet.ts";

Deno.test("repro: untranslatable ICMP errors from inside are dropped, not leaked", async () => {
  const n = await loadTestNat(fuzzConfig(), EXT_CIDRS);
  try {
    const lan = "192.0.2.10", srv = "198.51.100.1";
    const innerErr = buildIcmpError(
      { family: 4, src: "198.51.100.9", dst: lan, noEth: true },
      buildPacket({ family: 4, src: lan, dst: srv, proto: "udp", sport: 1, dport: 2, noEth: true }),
    );
    const cases: [string, Uint8Array][] = [
      ["error about an error", buildIcmpError({ family: 4, src: lan, dst: srv }, innerErr)],
      [
        "error about GRE",
        (() => {
          const g = buildPacket({ family: 4, src: srv, dst: lan, proto: "udp", noEth: true });
          g[9] = 47;
          return buildIcmpError({ family: 4, src: lan, dst: srv }, g);
        })(),
      ],
      [
        "error that is a fragment",
        buildIcmpError(
          { family: 4, src: lan, dst: srv, moreFragments: true },
          buildPacket({
            family: 4,
            src: srv,
            dst: lan,
            proto: "udp",
            sport: 53,
            dport: 40000,
            noEth: true,
          }),
        ),
      ],
    ];
    const leaked: string[] = [];
    for (const [name, frame] of cases) {
      const r = n.runRaw("egress", frame);
      if (r.retval !== TC_ACT_SHOT) leaked.push(`${name}: verdict ${r.retval}, ${hex(r.bytes)}`);
    }
    assertEquals(leaked, [], "errors with source 192.0.2.10 left untranslated");
  } finally {
    n.close();
  }
});
