/**
 * A small packet builder and parser for tests: Ethernet + IPv4/IPv6 + TCP/UDP/ICMP(v6), with
 * checksums computed and verified independently in TypeScript.
 *
 * ```ts
 * const bytes = buildPacket({ family: 4, src: "192.0.2.10", dst: "203.0.113.11", proto: "udp",
 *   sport: 4000, dport: 53, payload: new TextEncoder().encode("hi") });
 * const p = parsePacket(bytes);
 * // p.sport === 4000, p.ipChecksumOk && p.l4ChecksumOk
 * ```
 * @module
 */

/** Ethernet type of IPv4. */
export const ETH_P_IP = 0x0800;
/** Ethernet type of IPv6. */
export const ETH_P_IPV6 = 0x86dd;
/** IP protocol numbers used here. */
export const IPPROTO = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, fragment: 44 } as const;

/** Transport protocols the builder knows; "icmp" means ICMPv6 for `family: 6`. */
export type L4Proto = "tcp" | "udp" | "icmp";

/** TCP flag set; missing flags are false. */
export interface TcpFlags {
  syn?: boolean;
  ack?: boolean;
  fin?: boolean;
  rst?: boolean;
  psh?: boolean;
  urg?: boolean;
}

/** What `buildPacket` builds. Ports, ids and numbers default to 0 unless stated. */
export interface PacketSpec {
  family: 4 | 6;
  /** Source address, dotted quad or IPv6 text. */
  src: string;
  /** Destination address. */
  dst: string;
  proto: L4Proto;
  sport?: number;
  dport?: number;
  /** TCP flags; default `{ syn: true }`. */
  tcpFlags?: TcpFlags;
  seq?: number;
  ackNum?: number;
  /** TCP window, default 65535. */
  window?: number;
  /** ICMP type; default echo request (8, or 128 for ICMPv6). */
  icmpType?: number;
  icmpCode?: number;
  /** Echo identifier (bytes 4-5 of the ICMP header). */
  icmpId?: number;
  /** Echo sequence number (bytes 6-7 of the ICMP header). */
  icmpSeq?: number;
  /** Raw 32-bit "rest of header" of ICMP; overrides icmpId/icmpSeq when set. */
  icmpRest?: number;
  payload?: Uint8Array;
  /** TTL (IPv4) or hop limit (IPv6); default 64. */
  ttl?: number;
  /** IPv4 identification, or the IPv6 fragment header identification. */
  ipId?: number;
  /** IPv4 DF bit. */
  dontFragment?: boolean;
  /** Send a UDP checksum of 0 ("no checksum"; only legal over IPv4). */
  udpZeroChecksum?: boolean;
  /**
   * Fragment offset in bytes (multiple of 8). A non-zero offset makes the IP payload just
   * `payload` (no L4 header). For IPv6 a fragment header is added when this or
   * `moreFragments` is set.
   */
  fragOffset?: number;
  moreFragments?: boolean;
  /** Omit the Ethernet header. */
  noEth?: boolean;
  /** Ethernet source MAC, default 02:00:00:00:00:01. */
  ethSrc?: string;
  /** Ethernet destination MAC, default 02:00:00:00:00:02. */
  ethDst?: string;
}

/** Extra fields of an ICMP error's outer packet; the protocol is always ICMP. */
export type IcmpErrorSpec = Omit<PacketSpec, "proto" | "payload" | "icmpId" | "icmpSeq"> & {
  /** Next-hop MTU for "fragmentation needed" (v4 3/4) and "packet too big" (v6 2/0). */
  mtu?: number;
};

/** A parsed packet. L4 fields are undefined when absent (e.g. non-first fragments). */
export interface ParsedPacket {
  eth?: { src: string; dst: string; type: number };
  family: 4 | 6;
  src: string;
  dst: string;
  /** "other" for protocols the parser does not decode; see `protoNum`. */
  proto: L4Proto | "other";
  protoNum: number;
  ttl: number;
  /** IPv4 identification, or the IPv6 fragment identification (0 without fragment header). */
  ipId: number;
  dontFragment: boolean;
  /** Fragment offset in bytes. */
  fragOffset: number;
  moreFragments: boolean;
  /** True for any fragment (offset > 0 or MF set). */
  isFragment: boolean;
  sport?: number;
  dport?: number;
  tcpFlags?: Required<TcpFlags>;
  seq?: number;
  ackNum?: number;
  window?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  icmpSeq?: number;
  /** Raw 32-bit ICMP "rest of header" (for errors: unused / MTU / pointer). */
  icmpRest?: number;
  /** The L4 checksum field as found in the packet. */
  l4Checksum?: number;
  /** L4 payload, or the IP payload of a non-first fragment. */
  payload: Uint8Array;
  /** IPv4 header checksum verifies (always true for IPv6, which has none). */
  ipChecksumOk: boolean;
  /**
   * L4 checksum verifies over the bytes present. False when the L4 header is missing, the
   * packet is truncated, or for a UDP zero checksum over IPv6; true for a UDP zero checksum
   * over IPv4. For a first fragment it is checked over the bytes present only.
   */
  l4ChecksumOk: boolean;
  /** The IP total/payload length says more bytes than are present. */
  truncated: boolean;
  /** For ICMP errors (v4 types 3,4,5,11,12; v6 types 1-4): the embedded packet. */
  inner?: ParsedPacket;
  /** The IP packet bytes (from the IP header on, up to the stated length). */
  ipBytes: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses a dotted-quad IPv4 address into 4 bytes. */
export function ipv4(addr: string): Uint8Array {
  const parts = addr.split(".");
  if (parts.length !== 4) throw new Error(`bad IPv4 address: ${addr}`);
  return Uint8Array.from(parts.map((p) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new Error(`bad IPv4 address: ${addr}`);
    return n;
  }));
}

/** Parses an IPv6 address (with `::` and an optional trailing dotted quad) into 16 bytes. */
export function ipv6(addr: string): Uint8Array {
  const bad = () => new Error(`bad IPv6 address: ${addr}`);
  let text = addr;
  const pct = text.indexOf("%");
  if (pct >= 0) text = text.slice(0, pct);
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    const v4 = ipv4(text.slice(lastColon + 1));
    const hi = ((v4[0] << 8) | v4[1]).toString(16);
    const lo = ((v4[2] << 8) | v4[3]).toString(16);
    text = `${text.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) throw bad();
  const parse = (s: string): number[] =>
    s === "" ? [] : s.split(":").map((g) => {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
      return parseInt(g, 16);
    });
  let groups = parse(halves[0]);
  if (halves.length === 2) {
    const rest = parse(halves[1]);
    const fill = 8 - groups.length - rest.length;
    if (fill < 1) throw bad();
    groups = [...groups, ...new Array<number>(fill).fill(0), ...rest];
  }
  if (groups.length !== 8) throw bad();
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Parses either address family; IPv6 when the text contains a colon. */
export function ipBytes(addr: string): Uint8Array {
  return addr.includes(":") ? ipv6(addr) : ipv4(addr);
}

/** Formats 4 or 16 bytes as canonical text (RFC 5952 for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw new Error(`bad address length ${bytes.length}`);
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((bytes[2 * i] << 8) | bytes[2 * i + 1]);
  // Longest run of >= 2 zero groups, first one on ties.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Returns the canonical text form of an address string. */
export function canonicalIp(addr: string): string {
  return formatIp(ipBytes(addr));
}

/** Parses "aa:bb:cc:dd:ee:ff" into 6 bytes. */
export function mac(addr: string): Uint8Array {
  const parts = addr.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new Error(`bad MAC address: ${addr}`);
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

// ---------------------------------------------------------------------------------------------
// Checksums

/**
 * One's complement sum of 16-bit big-endian words (odd trailing byte padded with zero), folded
 * to 16 bits, without the final complement. `initial` chains partial sums.
 */
export function onesComplementSum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  const n = bytes.length & ~1;
  for (let i = 0; i < n; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (bytes.length & 1) sum += bytes[bytes.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * RFC 1071 Internet checksum: the one's complement of the one's complement sum. Over data that
 * includes a correct checksum field it returns 0.
 */
export function internetChecksum(bytes: Uint8Array, initial = 0): number {
  return ~onesComplementSum(bytes, initial) & 0xffff;
}

function pseudoHeaderSum(
  family: 4 | 6,
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
  len: number,
) {
  if (family === 4) {
    const ph = new Uint8Array(12);
    ph.set(src, 0);
    ph.set(dst, 4);
    ph[9] = proto;
    ph[10] = len >> 8;
    ph[11] = len & 0xff;
    return onesComplementSum(ph);
  }
  const ph = new Uint8Array(40);
  ph.set(src, 0);
  ph.set(dst, 16);
  new DataView(ph.buffer).setUint32(32, len);
  ph[39] = proto;
  return onesComplementSum(ph);
}

// ---------------------------------------------------------------------------------------------
// Building

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Builds a 14-byte Ethernet header. */
export function buildEth(opts: { src?: string; dst?: string; type: number }): Uint8Array {
  const h = new Uint8Array(14);
  h.set(mac(opts.dst ?? "02:00:00:00:00:02"), 0);
  h.set(mac(opts.src ?? "02:00:00:00:00:01"), 6);
  h[12] = opts.type >> 8;
  h[13] = opts.type & 0xff;
  return h;
}

function tcpFlagsByte(f: TcpFlags): number {
  return (f.fin ? 0x01 : 0) | (f.syn ? 0x02 : 0) | (f.rst ? 0x04 : 0) | (f.psh ? 0x08 : 0) |
    (f.ack ? 0x10 : 0) | (f.urg ? 0x20 : 0);
}

function buildL4(spec: PacketSpec, src: Uint8Array, dst: Uint8Array): Uint8Array {
  const payload = spec.payload ?? new Uint8Array(0);
  let hdr: Uint8Array;
  let protoNum: number;
  let csumOff: number;
  let pseudo = true;
  switch (spec.proto) {
    case "tcp": {
      protoNum = IPPROTO.tcp;
      hdr = new Uint8Array(20);
      const v = new DataView(hdr.buffer);
      v.setUint16(0, spec.sport ?? 0);
      v.setUint16(2, spec.dport ?? 0);
      v.setUint32(4, (spec.seq ?? 0) >>> 0);
      v.setUint32(8, (spec.ackNum ?? 0) >>> 0);
      hdr[12] = 5 << 4;
      hdr[13] = tcpFlagsByte(spec.tcpFlags ?? { syn: true });
      v.setUint16(14, spec.window ?? 65535);
      csumOff = 16;
      break;
    }
    case "udp": {
      protoNum = IPPROTO.udp;
      hdr = new Uint8Array(8);
      const v = new DataView(hdr.buffer);
      v.setUint16(0, spec.sport ?? 0);
      v.setUint16(2, spec.dport ?? 0);
      v.setUint16(4, 8 + payload.length);
      csumOff = 6;
      break;
    }
    case "icmp": {
      protoNum = spec.family === 4 ? IPPROTO.icmp : IPPROTO.icmpv6;
      pseudo = spec.family === 6;
      hdr = new Uint8Array(8);
      const v = new DataView(hdr.buffer);
      hdr[0] = spec.icmpType ?? (spec.family === 4 ? 8 : 128);
      hdr[1] = spec.icmpCode ?? 0;
      if (spec.icmpRest !== undefined) v.setUint32(4, spec.icmpRest >>> 0);
      else {
        v.setUint16(4, spec.icmpId ?? 0);
        v.setUint16(6, spec.icmpSeq ?? 0);
      }
      csumOff = 2;
      break;
    }
    default:
      throw new Error(`unknown protocol ${spec.proto}`);
  }
  const seg = concat(hdr, payload);
  if (spec.proto === "udp" && spec.udpZeroChecksum) return seg;
  const init = pseudo ? pseudoHeaderSum(spec.family, src, dst, protoNum, seg.length) : 0;
  let c = internetChecksum(seg, init);
  if (spec.proto === "udp" && c === 0) c = 0xffff;
  seg[csumOff] = c >> 8;
  seg[csumOff + 1] = c & 0xff;
  return seg;
}

function protoNumber(spec: PacketSpec): number {
  if (spec.proto === "tcp") return IPPROTO.tcp;
  if (spec.proto === "udp") return IPPROTO.udp;
  return spec.family === 4 ? IPPROTO.icmp : IPPROTO.icmpv6;
}

/** A UDP packet spec between two endpoints of `family`, carrying `payload`. */
export function udpSpec(
  family: 4 | 6,
  src: string,
  sport: number,
  dst: string,
  dport: number,
  payload: Uint8Array,
): PacketSpec {
  return { family, src, dst, proto: "udp", sport, dport, payload };
}

/** A TCP segment spec (no payload) between two endpoints of `family`, with `flags`. */
export function tcpSpec(
  family: 4 | 6,
  src: string,
  sport: number,
  dst: string,
  dport: number,
  flags: PacketSpec["tcpFlags"],
): PacketSpec {
  return { family, src, dst, proto: "tcp", sport, dport, tcpFlags: flags };
}

/** An ICMP (ICMPv6 for `family: 6`) query spec of type `icmpType`, identifier `icmpId`, seq 1. */
export function pingSpec(
  family: 4 | 6,
  src: string,
  dst: string,
  icmpType: number,
  icmpId: number,
): PacketSpec {
  return { family, src, dst, proto: "icmp", icmpType, icmpId, icmpSeq: 1 };
}

/**
 * Builds Ethernet (unless `noEth`) + IP + L4 with correct checksums. See `PacketSpec` for
 * fragments.
 */
export function buildPacket(spec: PacketSpec): Uint8Array {
  const src = spec.family === 4 ? ipv4(spec.src) : ipv6(spec.src);
  const dst = spec.family === 4 ? ipv4(spec.dst) : ipv6(spec.dst);
  const fragOff = spec.fragOffset ?? 0;
  if (fragOff % 8 !== 0) throw new Error("fragOffset must be a multiple of 8");
  const body = fragOff > 0 ? (spec.payload ?? new Uint8Array(0)) : buildL4(spec, src, dst);
  let ip: Uint8Array;
  if (spec.family === 4) {
    const h = new Uint8Array(20);
    const v = new DataView(h.buffer);
    h[0] = 0x45;
    v.setUint16(2, 20 + body.length);
    v.setUint16(4, spec.ipId ?? 0);
    v.setUint16(
      6,
      (spec.dontFragment ? 0x4000 : 0) | (spec.moreFragments ? 0x2000 : 0) | (fragOff >> 3),
    );
    h[8] = spec.ttl ?? 64;
    h[9] = protoNumber(spec);
    h.set(src, 12);
    h.set(dst, 16);
    v.setUint16(10, internetChecksum(h));
    ip = concat(h, body);
  } else {
    const frag = fragOff > 0 || spec.moreFragments;
    const h = new Uint8Array(40);
    const v = new DataView(h.buffer);
    v.setUint32(0, 6 << 28);
    v.setUint16(4, body.length + (frag ? 8 : 0));
    h[6] = frag ? IPPROTO.fragment : protoNumber(spec);
    h[7] = spec.ttl ?? 64;
    h.set(src, 8);
    h.set(dst, 24);
    if (frag) {
      const fh = new Uint8Array(8);
      const fv = new DataView(fh.buffer);
      fh[0] = protoNumber(spec);
      fv.setUint16(2, fragOff | (spec.moreFragments ? 1 : 0));
      fv.setUint32(4, (spec.ipId ?? 0) >>> 0);
      ip = concat(h, fh, body);
    } else {
      ip = concat(h, body);
    }
  }
  if (spec.noEth) return ip;
  return concat(
    buildEth({
      src: spec.ethSrc,
      dst: spec.ethDst,
      type: spec.family === 4 ? ETH_P_IP : ETH_P_IPV6,
    }),
    ip,
  );
}

/**
 * Builds an ICMP error whose body is `inner` (an IP packet; a leading Ethernet header is not
 * stripped, so pass packets built with `noEth`). Defaults to port unreachable (v4 3/3, v6 1/4).
 */
export function buildIcmpError(outer: IcmpErrorSpec, inner: Uint8Array): Uint8Array {
  const v4 = outer.family === 4;
  const type = outer.icmpType ?? (v4 ? 3 : 1);
  const code = outer.icmpCode ?? (v4 ? 3 : 4);
  let rest = outer.icmpRest ?? 0;
  if (outer.mtu !== undefined && outer.icmpRest === undefined) {
    rest = v4 ? outer.mtu & 0xffff : outer.mtu >>> 0;
  }
  return buildPacket({
    ...outer,
    proto: "icmp",
    icmpType: type,
    icmpCode: code,
    icmpRest: rest,
    payload: inner,
  });
}

/**
 * Splits an unfragmented frame (Ethernet + IP) into two fragments at `cut` bytes of IP payload
 * (a multiple of 8), keeping the Ethernet header.
 */
export function fragment(
  frame: Uint8Array,
  family: 4 | 6,
  id: number,
  cut: number,
): [Uint8Array, Uint8Array] {
  const hl = family === 4 ? 20 : 40;
  const ip = frame.slice(14);
  const body = ip.slice(hl);
  const eth = frame.slice(0, 14);
  const mk = (part: Uint8Array, off: number, more: boolean) => {
    if (family === 4) {
      const h = ip.slice(0, hl);
      const v = new DataView(h.buffer);
      v.setUint16(2, hl + part.length);
      v.setUint16(4, id);
      v.setUint16(6, (more ? 0x2000 : 0) | (off >> 3));
      v.setUint16(10, 0);
      v.setUint16(10, internetChecksum(h));
      return new Uint8Array([...eth, ...h, ...part]);
    }
    const h = ip.slice(0, hl);
    const next = h[6];
    h[6] = 44;
    new DataView(h.buffer).setUint16(4, 8 + part.length);
    const fh = new Uint8Array(8);
    fh[0] = next;
    new DataView(fh.buffer).setUint16(2, off | (more ? 1 : 0));
    new DataView(fh.buffer).setUint32(4, id);
    return new Uint8Array([...eth, ...h, ...fh, ...part]);
  };
  return [mk(body.slice(0, cut), 0, true), mk(body.slice(cut), cut, false)];
}

// ---------------------------------------------------------------------------------------------
// Parsing

function isIcmpError(family: 4 | 6, type: number): boolean {
  return family === 4 ? [3, 4, 5, 11, 12].includes(type) : type >= 1 && type <= 4;
}

/**
 * Parses a packet. With `noEth` the bytes start at the IP header. Throws on a packet too short
 * for its IP header or with an unknown Ethernet type / IP version.
 */
export function parsePacket(bytes: Uint8Array, opts: { noEth?: boolean } = {}): ParsedPacket {
  let off = 0;
  let eth: ParsedPacket["eth"];
  if (!opts.noEth) {
    if (bytes.length < 14) throw new Error("short Ethernet frame");
    const type = (bytes[12] << 8) | bytes[13];
    eth = { dst: formatMac(bytes.subarray(0, 6)), src: formatMac(bytes.subarray(6, 12)), type };
    if (type !== ETH_P_IP && type !== ETH_P_IPV6) {
      throw new Error(`unsupported ethertype 0x${type.toString(16)}`);
    }
    off = 14;
  }
  const b = bytes.subarray(off);
  if (b.length < 1) throw new Error("empty IP packet");
  const version = b[0] >> 4;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let family: 4 | 6;
  let src: Uint8Array, dst: Uint8Array;
  let protoNum: number, ttl: number, ipId = 0, fragOffset = 0, moreFragments = false;
  let dontFragment = false;
  let ipChecksumOk = true;
  let l4Start: number, ipEnd: number;
  let truncated = false;
  if (version === 4) {
    family = 4;
    const ihl = (b[0] & 0x0f) * 4;
    if (b.length < 20 || ihl < 20 || b.length < ihl) throw new Error("short IPv4 header");
    const total = dv.getUint16(2);
    ipEnd = Math.min(total, b.length);
    truncated = total > b.length;
    ipId = dv.getUint16(4);
    const ff = dv.getUint16(6);
    dontFragment = (ff & 0x4000) !== 0;
    moreFragments = (ff & 0x2000) !== 0;
    fragOffset = (ff & 0x1fff) * 8;
    ttl = b[8];
    protoNum = b[9];
    src = b.slice(12, 16);
    dst = b.slice(16, 20);
    ipChecksumOk = internetChecksum(b.subarray(0, ihl)) === 0;
    l4Start = ihl;
  } else if (version === 6) {
    family = 6;
    if (b.length < 40) throw new Error("short IPv6 header");
    const plen = dv.getUint16(4);
    ipEnd = Math.min(40 + plen, b.length);
    truncated = 40 + plen > b.length;
    ttl = b[7];
    src = b.slice(8, 24);
    dst = b.slice(24, 40);
    let nh = b[6];
    let p = 40;
    // Skip extension headers (bounded: at most 8).
    for (let i = 0; i < 8 && p + 8 <= ipEnd; i++) {
      if (nh === 0 || nh === 43 || nh === 60) {
        const len = (b[p + 1] + 1) * 8;
        nh = b[p];
        p += len;
      } else if (nh === IPPROTO.fragment) {
        const fo = dv.getUint16(p + 2);
        fragOffset = fo & 0xfff8;
        moreFragments = (fo & 1) !== 0;
        ipId = dv.getUint32(p + 4);
        nh = b[p];
        p += 8;
      } else break;
    }
    protoNum = nh;
    l4Start = p;
  } else {
    throw new Error(`unsupported IP version ${version}`);
  }
  const proto: ParsedPacket["proto"] = protoNum === IPPROTO.tcp
    ? "tcp"
    : protoNum === IPPROTO.udp
    ? "udp"
    : protoNum === (family === 4 ? IPPROTO.icmp : IPPROTO.icmpv6)
    ? "icmp"
    : "other";
  const out: ParsedPacket = {
    eth,
    family,
    src: formatIp(src),
    dst: formatIp(dst),
    proto,
    protoNum,
    ttl,
    ipId,
    dontFragment,
    fragOffset,
    moreFragments,
    isFragment: fragOffset > 0 || moreFragments,
    payload: new Uint8Array(0),
    ipChecksumOk,
    l4ChecksumOk: false,
    truncated,
    ipBytes: b.slice(0, ipEnd),
  };
  if (!eth) delete out.eth;
  const seg = b.subarray(Math.min(l4Start, ipEnd), ipEnd);
  if (fragOffset > 0 || proto === "other") {
    out.payload = seg.slice();
    return out;
  }
  const sv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
  const pseudo = () => pseudoHeaderSum(family, src, dst, protoNum, seg.length);
  const verify = (needPseudo: boolean) =>
    !truncated && internetChecksum(seg, needPseudo ? pseudo() : 0) === 0;
  if (proto === "tcp") {
    if (seg.length < 20) {
      out.payload = seg.slice();
      return out;
    }
    out.sport = sv.getUint16(0);
    out.dport = sv.getUint16(2);
    out.seq = sv.getUint32(4);
    out.ackNum = sv.getUint32(8);
    const f = seg[13];
    out.tcpFlags = {
      fin: (f & 0x01) !== 0,
      syn: (f & 0x02) !== 0,
      rst: (f & 0x04) !== 0,
      psh: (f & 0x08) !== 0,
      ack: (f & 0x10) !== 0,
      urg: (f & 0x20) !== 0,
    };
    out.window = sv.getUint16(14);
    out.l4Checksum = sv.getUint16(16);
    const doff = (seg[12] >> 4) * 4;
    out.payload = seg.slice(Math.min(doff, seg.length));
    out.l4ChecksumOk = verify(true);
  } else if (proto === "udp") {
    if (seg.length < 8) {
      out.payload = seg.slice();
      return out;
    }
    out.sport = sv.getUint16(0);
    out.dport = sv.getUint16(2);
    out.l4Checksum = sv.getUint16(6);
    out.payload = seg.slice(8);
    out.l4ChecksumOk = out.l4Checksum === 0 ? family === 4 : verify(true);
  } else {
    if (seg.length < 8) {
      out.payload = seg.slice();
      return out;
    }
    out.icmpType = seg[0];
    out.icmpCode = seg[1];
    out.l4Checksum = sv.getUint16(2);
    out.icmpRest = sv.getUint32(4);
    out.icmpId = sv.getUint16(4);
    out.icmpSeq = sv.getUint16(6);
    out.payload = seg.slice(8);
    out.l4ChecksumOk = verify(family === 6);
    if (isIcmpError(family, out.icmpType) && out.payload.length > 0) {
      try {
        out.inner = parsePacket(out.payload, { noEth: true });
      } catch {
        // Embedded packet too short to parse: leave `inner` undefined.
      }
    }
  }
  return out;
}
