/**
 * Regression test (fixed; part of the suite), first written as the reproducer: an ICMP echo request
 * with identifier 0 when the ICMP range holds 0 (e.g. `icmp_out_ranges = ["0-65535"]`).
 *
 * Found by tests/fuzz_test.ts (default seed; `icmp-id0` in KNOWN_BUGS). Input frame:
 *   020000000002020000000001080045000026991b40004001b579c000020dc63364010800271c0000839b6de8
 *   64045cdd32b0ebcd   (192.0.2.13 -> 198.51.100.1, echo request, id 0)
 *
 * einat_binding_create (bpf/lib/binding.h) keeps the internal identifier when it is free and in
 * range (`c.found = want`), then tests `if (!c.found) return STAT_DROP_NO_PORT`: found == 0
 * means "none", so the claimed identifier 0 is taken for failure. The request is answered with
 * ICMP 3/13 although every identifier is free, and the reply entry claimed for 0 stays in
 * map_binding without its orig entry (never released; an inbound echo reply with id 0 is then
 * translated to the host that was refused).
 *
 * Run: deno test -A tests/regress_icmp_id0_test.ts
 */
import { assertEquals } from "./lib/assert.ts";
import { checkMaps, EXT_CIDRS, fuzzConfig } from "./lib/fuzz.ts";
import { loadTestNat, TC_ACT_OK } from "./lib/natfixture.ts";

Deno.test("repro: echo request with identifier 0 is translated and leaves no orphan entry", async () => {
  const ic = fuzzConfig(); // icmp range 0-65535, like icmp_out_ranges = ["0-65535"]
  const n = await loadTestNat(ic, EXT_CIDRS);
  try {
    const r = n.egress({
      family: 4,
      src: "192.0.2.13",
      dst: "198.51.100.1",
      proto: "icmp",
      icmpType: 8,
      icmpId: 0,
      icmpSeq: 1,
    });
    const m = checkMaps(n, { bindings: 1 << 20, ctEntries: 1 << 20 }, ic);
    assertEquals(
      [r.retval, r.out.src, r.out.icmpType],
      [TC_ACT_OK, "203.0.113.1", 8],
      "translated (today: ICMP 3/13 to the sender)",
    );
    assertEquals(m.violations, [], "map invariants (today: reply entry .../1/203.0.113.1/0 alone)");
  } finally {
    n.close();
  }
});
