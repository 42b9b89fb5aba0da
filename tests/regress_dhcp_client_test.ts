/**
 * Regression test (fixed; part of the suite), first written as the reproducer: the router's own
 * DHCP client traffic on the WAN is treated as internal traffic.
 *
 * Found while fuzzing with unspecified and link-local sources (tests/lib/fuzz.ts ODD_SRC4/6).
 * egress_family (bpf/einat.bpf.c) passes only sources that map_externals marks as external or
 * no-SNAT; everything else is SNATed. A DHCPv4 DISCOVER (0.0.0.0:68 -> 255.255.255.255:67,
 * sent by dhclient / systemd-networkd through a packet socket, which runs TC egress) and a
 * DHCPv6 SOLICIT (fe80::x:546 -> ff02::1:2:547) are therefore:
 * - dropped (STAT_DROP_UNTRANSLATABLE) while the WAN has no address of that family yet, i.e.
 *   exactly when the client needs them: a router whose WAN address comes from DHCP cannot get
 *   (or get back, after the lease is lost) an address while einat runs;
 * - otherwise SNATed to the external address and a random port (source 0.0.0.0:68 becomes
 *   203.0.113.1:2xxxx), and a binding is made for 0.0.0.0:68.
 * Unspecified, link-local and multicast-scoped traffic is the router's own: it should pass.
 *
 * Run: deno test -A tests/regress_dhcp_client_test.ts
 */
import { assertEquals } from "./lib/assert.ts";
import { fuzzConfig } from "./lib/fuzz.ts";
import { loadTestNat, TC_ACT_OK } from "./lib/natfixture.ts";
import { buildPacket, type PacketSpec } from "./lib/packet.ts";

const discover: PacketSpec = {
  family: 4,
  src: "0.0.0.0",
  dst: "255.255.255.255",
  proto: "udp",
  sport: 68,
  dport: 67,
  payload: new Uint8Array(240),
};
const solicit: PacketSpec = {
  family: 6,
  src: "fe80::1",
  dst: "ff02::1:2",
  proto: "udp",
  sport: 546,
  dport: 547,
  payload: new Uint8Array(40),
};

for (
  const [name, exts] of [
    ["with addresses on the WAN", ["203.0.113.1/24", "2001:db8:2::1/64"]],
    ["before the WAN has addresses", []],
  ] as const
) {
  Deno.test(`repro: DHCP client packets pass untouched ${name}`, async () => {
    const n = await loadTestNat(fuzzConfig(), [...exts]);
    try {
      for (const spec of [discover, solicit]) {
        const input = buildPacket(spec);
        const r = n.runRaw("egress", input);
        assertEquals([r.retval, r.bytes], [TC_ACT_OK, input], `${spec.src}:${spec.sport}`);
      }
    } finally {
      n.close();
    }
  });
}
