/**
 * IPv4/IPv6 address and CIDR parsing and formatting.
 *
 * Addresses are plain byte arrays: 4 bytes for IPv4, 16 for IPv6. Parsing is
 * strict in the way Rust's `std::net` and `ipnet` are (which is what einat-ebpf
 * uses): IPv4 needs exactly four decimal octets without leading zeros, IPv6
 * allows one `::` and an embedded dotted IPv4 tail, zone ids (`%eth0`) and
 * brackets are rejected, and a CIDR must carry an explicit `/prefix`.
 *
 * Host bits: einat-ebpf accepts `192.0.2.1/24` wherever it takes a network and
 * treats it as `192.0.2.0/24` (it truncates before use). {@link parseCidr} does
 * the same by default and clears the host bits; pass `{ strict: true }` to
 * reject them instead. {@link parseCidrHost} keeps the address part too, for
 * the `network = "10.0.0.5/24"` external form where it matters.
 * @module
 */

import type { Cidr } from "./types.ts";

/** Options for {@link parseCidr}. */
export interface ParseCidrOptions {
  /** Reject a CIDR whose host bits are set (default: clear them silently). */
  strict?: boolean;
}

const V4_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseV4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!V4_OCTET.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseV6Groups(text: string): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (i === parts.length - 1 && p.includes(".")) {
      const v4 = parseV4(p);
      if (!v4) return undefined;
      groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (V6_GROUP.test(p)) {
      groups.push(parseInt(p, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

function parseV6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const head = parseV6Groups(halves[0]);
    const tail = parseV6Groups(halves[1]);
    if (!head || !tail) return undefined;
    // An embedded IPv4 tail is only allowed at the very end.
    if (halves[0].includes(".")) return undefined;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    const all = parseV6Groups(text);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * Parses an IPv4 or IPv6 address into 4 or 16 bytes.
 * @throws {SyntaxError} when `text` is not a valid address.
 */
export function parseAddr(text: string): Uint8Array {
  const bytes = text.includes(":") ? parseV6(text) : parseV4(text);
  if (!bytes) {
    throw new SyntaxError(
      `"${text}" is not a valid IP address; expected e.g. "192.0.2.1" or "2001:db8::1"`,
    );
  }
  return bytes;
}

/** Returns 4 or 6 depending on the address length. */
export function addrFamily(addr: Uint8Array): 4 | 6 {
  return addr.length === 4 ? 4 : 6;
}

/** Formats 4 or 16 bytes; IPv6 follows RFC 5952 (`2001:db8::1`, `::ffff:192.0.2.1`). */
export function formatAddr(addr: Uint8Array): string {
  if (addr.length === 4) return Array.from(addr).join(".");
  if (addr.length !== 16) throw new RangeError(`address must be 4 or 16 bytes, got ${addr.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((addr[2 * i] << 8) | addr[2 * i + 1]);
  // IPv4-mapped addresses keep their dotted tail, like Rust's Display does.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  }
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(":");
  const head = hex.slice(0, bestStart).join(":");
  const tail = hex.slice(bestStart + bestLen).join(":");
  return `${head}::${tail}`;
}

/** Clears the host bits of `addr` beyond `prefixLen`. */
export function maskInPlace(addr: Uint8Array, prefixLen: number): void {
  for (let i = 0; i < addr.length; i++) {
    const bits = Math.max(0, Math.min(8, prefixLen - 8 * i));
    addr[i] &= bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
}

function hasHostBits(addr: Uint8Array, prefixLen: number): boolean {
  const masked = addr.slice();
  maskInPlace(masked, prefixLen);
  return masked.some((b, i) => b !== addr[i]);
}

/**
 * Parses `"addr/prefix"` and returns both the address as written and the
 * network (host bits cleared).
 * @throws {SyntaxError} for malformed text, {RangeError} for a bad prefix.
 */
export function parseCidrHost(text: string): { addr: Uint8Array; net: Cidr } {
  const slash = text.indexOf("/");
  if (slash < 0) {
    throw new SyntaxError(
      `"${text}" is not a CIDR: the prefix length is missing; expected e.g. "192.0.2.0/24", ` +
        `or "${text}/${text.includes(":") ? 128 : 32}" for a single address`,
    );
  }
  const addrText = text.slice(0, slash);
  const lenText = text.slice(slash + 1);
  let addr: Uint8Array;
  try {
    addr = parseAddr(addrText);
  } catch {
    throw new SyntaxError(
      `"${text}" is not a valid CIDR: "${addrText}" is not an IP address; ` +
        `expected e.g. "192.0.2.0/24" or "2001:db8::/32"`,
    );
  }
  const max = addr.length * 8;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) {
    throw new RangeError(
      `"${text}" has an invalid prefix length "${lenText}"; expected an integer from 0 to ${max}`,
    );
  }
  const prefixLen = Number(lenText);
  const netAddr = addr.slice();
  maskInPlace(netAddr, prefixLen);
  return { addr, net: { family: addrFamily(addr), addr: netAddr, prefixLen } };
}

/**
 * Parses a CIDR such as `"192.0.2.0/24"` or `"2001:db8::/32"`. Host bits are
 * cleared unless `options.strict` is set, in which case they are an error.
 * @throws {SyntaxError} or {RangeError} with a message naming the problem.
 */
export function parseCidr(text: string, options: ParseCidrOptions = {}): Cidr {
  const { addr, net } = parseCidrHost(text);
  if (options.strict && hasHostBits(addr, net.prefixLen)) {
    throw new RangeError(
      `"${text}" has host bits set; did you mean "${formatCidr(net)}"?`,
    );
  }
  return net;
}

/** Formats a CIDR as `addr/prefix`. */
export function formatCidr(cidr: Cidr): string {
  return `${formatAddr(cidr.addr)}/${cidr.prefixLen}`;
}

/** Orders two addresses of the same length numerically (-1, 0 or 1). */
export function compareAddr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}

/**
 * True when `inner` (an address or a network) lies entirely inside `outer`.
 * Addresses and networks of different families are never contained.
 */
export function cidrContains(outer: Cidr, inner: Cidr | Uint8Array): boolean {
  const innerAddr = inner instanceof Uint8Array ? inner : inner.addr;
  const innerLen = inner instanceof Uint8Array ? inner.length * 8 : inner.prefixLen;
  if (innerAddr.length !== outer.addr.length || innerLen < outer.prefixLen) return false;
  const masked = innerAddr.slice();
  maskInPlace(masked, outer.prefixLen);
  return compareAddr(masked, outer.addr) === 0;
}

/** True for an IPv6 link-local address (fe80::/10), given as 16 bytes. */
export function isLinkLocal6(a: Uint8Array): boolean {
  return a.length === 16 && a[0] === 0xfe && (a[1] & 0xc0) === 0x80;
}
