/**
 * Reproducer (fails until fixed; not part of the suite): the ICMP checksum of a hairpinned
 * echo request is wrong.
 *
 * Found by tests/fuzz_test.ts (default seed; `hairpin-icmp-checksum` in KNOWN_BUGS). An echo
 * request has one identifier field that is both its "source port" and its "destination port"
 * (parse.h sets sport_off == dport_off). einat_hairpin (bpf/einat.bpf.c) calls rewrite() for the
 * source (identifier: original -> sender's mapping) and then for the destination (identifier:
 * original -> target's internal id). The second call takes its checksum delta from the
 * original identifier although the field already holds the sender's mapped one, so the
 * checksum is off by (original -> sender's mapping) whenever those differ. Whether ICMP should
 * be hairpinned at all is open (docs/rfc-compliance.md: RFC 5508 REQ-2 "not yet").
 *
 * Steps: lan A and lan B ping with id 100 (B gets another external id Y); lan C pings the
 * external address with id Y: hairpinned to B, checksum invalid.
 *
 * Run: deno test -A tests/fuzz_repro_hairpin_icmp.ts
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { EXT_CIDRS, fuzzConfig } from "./lib/fuzz.ts";
import { loadTestNat } from "./lib/natfixture.ts";
import { type PacketSpec, parsePacket } from "./lib/packet.ts";
import { hex } from "./lib/fuzz.ts";
import { buildPacket } from "./lib/packet.ts";

const echo = (src: string, dst: string, id: number): PacketSpec => ({
  family: 4,
  src,
  dst,
  proto: "icmp",
  icmpType: 8,
  icmpId: id,
  icmpSeq: 1,
  payload: new Uint8Array(8),
});

Deno.test("repro: a hairpinned echo request keeps a valid ICMP checksum", async () => {
  const n = await loadTestNat(fuzzConfig(), EXT_CIDRS);
  try {
    n.egress(echo("192.0.2.10", "198.51.100.1", 100)); // A: external id 100
    const b = n.egress(echo("192.0.2.20", "198.51.100.1", 100)); // B: another id Y
    const y = b.out.icmpId!;
    assert(y !== 100);
    const input = buildPacket(echo("192.0.2.30", "203.0.113.1", y)); // C -> external:Y
    const r = n.runRaw("egress", input);
    const out = parsePacket(r.bytes);
    console.log(`verdict ${r.retval}\n in  ${hex(input)}\n out ${hex(r.bytes)}`);
    assertEquals([out.src, out.dst], ["203.0.113.1", "192.0.2.20"], "hairpinned to B");
    assert(out.l4ChecksumOk, "ICMP checksum of the hairpinned request");
  } finally {
    n.close();
  }
});
