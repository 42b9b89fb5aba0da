/**
 * RFC 4787 REQ-7: a NAT whose external address is configured dynamically must keep its
 * internal network from conflicting with the external one. einat does not own the LAN's
 * addressing, so it detects the conflict and says so: an external network (from the external
 * interface's addresses) that overlaps an internal one (`snat_internals`, and the addresses of
 * the hairpin `internal_if_names`) makes hosts at those addresses outside unreachable from
 * inside, because the router delivers such traffic to the LAN.
 * @module
 */

import type { Cidr } from "./config/types.ts";
import { formatCidr, maskInPlace } from "./config/cidr.ts";

/** A network and where it came from (an interface name or a config key). */
export interface NamedNet {
  net: Cidr;
  source: string;
}

/** One overlap of an external network with an internal one. */
export interface Conflict {
  external: NamedNet;
  internal: NamedNet;
}

/** The network of an address with its prefix length (host bits cleared). */
export function networkOf(c: Cidr): Cidr {
  const addr = c.addr.slice();
  maskInPlace(addr, c.prefixLen);
  return { family: c.family, addr, prefixLen: c.prefixLen };
}

/** True when two networks share an address: the shorter prefix contains the other. */
export function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const len = Math.min(a.prefixLen, b.prefixLen);
  const x = a.addr.slice(), y = b.addr.slice();
  maskInPlace(x, len);
  maskInPlace(y, len);
  return x.every((v, i) => v === y[i]);
}

/** Every external network that overlaps an internal one. */
export function findConflicts(externals: NamedNet[], internals: NamedNet[]): Conflict[] {
  const out: Conflict[] = [];
  for (const e of externals) {
    for (const i of internals) {
      if (overlaps(e.net, i.net)) {
        out.push({
          external: { ...e, net: networkOf(e.net) },
          internal: { ...i, net: networkOf(i.net) },
        });
      }
    }
  }
  return out;
}

/** One line per conflict, for the log. */
export function describeConflict(c: Conflict): string {
  return `external network ${formatCidr(c.external.net)} (${c.external.source}) overlaps ` +
    `internal network ${formatCidr(c.internal.net)} (${c.internal.source})`;
}
