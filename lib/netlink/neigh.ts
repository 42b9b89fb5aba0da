/**
 * Neighbour entries (RTM_NEWNEIGH / RTM_DELNEIGH): what hairpin routing
 * needs to make the router's own external address resolvable on the
 * external link, so packets routed to it reach TC egress.
 * @module
 */

import { bytesAttr, encodeMessage, type Family, NLM_F } from "./msg.ts";

/** RTM_NEWNEIGH. */
export const RTM_NEWNEIGH = 28;
/** RTM_DELNEIGH. */
export const RTM_DELNEIGH = 29;
/** NUD_PERMANENT. */
export const NUD_PERMANENT = 0x80;
const NDA_DST = 1;
const NDA_LLADDR = 2;

/** A neighbour entry. */
export interface NeighSpec {
  family: Family;
  ifindex: number;
  dst: Uint8Array;
  /** Link-layer address (required to add). */
  lladdr?: Uint8Array;
}

/** Builds an add-or-replace (permanent) or delete request. */
export function neighRequest(op: "new" | "del", n: NeighSpec): Uint8Array<ArrayBuffer> {
  if (n.dst.length !== (n.family === 4 ? 4 : 16)) throw new RangeError("neigh: bad dst length");
  const fixed = new Uint8Array(12);
  const dv = new DataView(fixed.buffer);
  fixed[0] = n.family === 4 ? 2 : 10;
  dv.setInt32(4, n.ifindex, true);
  dv.setUint16(8, op === "new" ? NUD_PERMANENT : 0, true);
  const attrs = [bytesAttr(NDA_DST, n.dst)];
  if (op === "new") {
    if (!n.lladdr) throw new RangeError("neigh: lladdr required");
    attrs.push(bytesAttr(NDA_LLADDR, n.lladdr));
  }
  const flags = op === "new"
    ? NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.REPLACE
    : NLM_F.REQUEST | NLM_F.ACK;
  return encodeMessage({ type: op === "new" ? RTM_NEWNEIGH : RTM_DELNEIGH, flags }, fixed, attrs);
}
