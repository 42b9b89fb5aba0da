/**
 * Addresses of the packet tests through BPF_PROG_TEST_RUN (tests/lib/natfixture.ts loads the NAT
 * with EXT as its external address): the external address, two LAN hosts, two servers.
 * @module
 */

/** The NAT's external address (`loadTestNat`'s default, 203.0.113.1/24). */
export const EXT = "203.0.113.1";
/** A LAN host. */
export const LAN1 = "192.0.2.10";
/** Another LAN host. */
export const LAN2 = "192.0.2.20";
/** A server on the WAN side. */
export const SRV1 = "198.51.100.1";
/** Another server. */
export const SRV2 = "198.51.100.2";
