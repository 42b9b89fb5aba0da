/**
 * Packet fuzzing of the NAT datapath through BPF_PROG_TEST_RUN: a seeded generator and mutator
 * of Ethernet frames (IPv4 and IPv6, egress and ingress), an independent dissector that mirrors
 * what the datapath promises, a per-packet oracle and map invariants.
 *
 * The oracle (see `checkPacket`) decides from the input alone which outcomes are allowed:
 * - verdict TC_ACT_OK (0), TC_ACT_SHOT (2) or, on egress only, TC_ACT_REDIRECT (7);
 * - egress from a source that is not the router's external address: translated (source becomes
 *   the external address), dropped, turned into ICMP 3/13 (ICMPv6 1/1), or redirected to the
 *   router itself when it is addressed to the external address; it passes untouched only when
 *   it is not NAT's business (non-IP, another IP protocol, ICMP types that are neither echo
 *   nor errors) or in the known leak classes `LEAK_CLASSES`;
 * - egress from the external address passes, with only the packet embedded in an ICMP error
 *   translated; ingress is translated only towards a binding, otherwise passes or is dropped;
 * - a translated packet differs from its input only in addresses, ports/identifiers and
 *   checksums (and, when its source is translated, a non-atomic IPv4 datagram's ID); every
 *   checksum keeps its residual (a valid one stays valid, an invalid one stays exactly as
 *   wrong), so this holds for fragments and truncated packets too; the new endpoint is the one
 *   its binding (mapping record) holds.
 *
 * `checkMaps` checks the tables: every binding's record found again from its internal endpoint
 * through the outbound index, one binding per internal endpoint, no index entry without its
 * live record, the binding count equal to the live records, `ref` of each binding equal to the
 * number of its sessions, no session without its binding, external ports inside the ranges,
 * sizes within the limits.
 * @module
 */

import * as bpf from "../../lib/ffi/libbpf.ts";
import {
  ADDR_VALUE_LAYOUT,
  CT_KEY_LAYOUT,
  decodeAddrMapping,
  decodeHostCounts,
  encodeAddrKey,
  encodeCtKey,
  encodeFragKey,
  FRAG_VALUE_LAYOUT,
  HOST_COUNTS_LAYOUT,
  HOST_KEY_LAYOUT,
  OUTBOUND_LINE_LAYOUT,
  STATS,
} from "../../lib/nat/codec.ts";
import {
  type Binding,
  bindingCountAt,
  bindings,
  findBinding,
  findBindingOf,
  findOutbound,
  findSession,
  OB_EMPTY,
  OB_IDX_BITS,
  OB_TOMB,
} from "../../lib/nat/records.ts";
import {
  buildIcmpError,
  buildPacket,
  formatIp,
  internetChecksum,
  ipBytes,
  type L4Proto,
  onesComplementSum,
  type PacketSpec,
} from "./packet.ts";
import {
  loadTestNat,
  type Nat,
  ranges,
  sessionsOf,
  stat,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  testInterfaceConfig,
} from "./natfixture.ts";
import { ADDRS } from "./netns.ts";
import type { InterfaceConfig } from "../../lib/config/types.ts";
import type { CsumMode } from "../../lib/nat/loader.ts";

// ---------------------------------------------------------------------------------------------
// PRNG

/** sfc32 seeded through splitmix32: fast, 32-bit, reproducible. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const sm = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = sm();
    this.b = sm();
    this.c = sm();
    this.d = sm();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 4294967296) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** An index chosen by weight. */
  weighted(weights: readonly number[]): number {
    const total = weights.reduce((s, w) => s + w, 0);
    let x = this.u32() / 4294967296 * total;
    for (let i = 0; i < weights.length; i++) {
      x -= weights[i];
      if (x < 0) return i;
    }
    return weights.length - 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Addresses of the fuzz set-up

/** External addresses (the NAT is loaded with these, /24 and /64). */
export const EXT4 = "203.0.113.1";
/** The IPv6 external address. */
export const EXT6 = "2001:db8:2::1";
/** External address arguments of `loadTestNat`. */
export const EXT_CIDRS = ["203.0.113.1/24", "2001:db8:2::1/64"];
const EXT4B = ipBytes(EXT4);
const EXT6B = ipBytes(EXT6);

/** Internal hosts (LAN) and remote hosts (WAN), all from documentation ranges. */
const INT4 = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.20", "192.0.2.21"];
const INT6 = ["2001:db8:1::10", "2001:db8:1::11", "2001:db8:1::12", "2001:db8:1::20"];
const ODD_SRC4 = ["0.0.0.0", "192.0.2.255", "203.0.113.2", "198.18.0.1"];
const ODD_SRC6 = ["fe80::1", "::", "2001:db8:2::2", "2001:db8:1::ffff"];
const REM4 = [
  "198.51.100.1",
  "198.51.100.2",
  "198.51.100.77",
  "198.18.0.10",
  "198.19.255.254",
  "203.0.113.11",
];
const REM6 = ["2001:db8:3::1", "2001:db8:3::2", "2001:db8:4::99", "2001:db8:2::11"];
const ODD_DST4 = ["255.255.255.255", "224.0.0.251", "203.0.113.255", "0.0.0.0"];
const ODD_DST6 = ["ff02::1", "ff02::1:2", "fe80::2", "::1"];
const INT_PORTS = [
  0,
  1,
  7,
  53,
  80,
  443,
  1023,
  1024,
  19999,
  20000,
  20001,
  24999,
  29999,
  30000,
  40000,
  40001,
  50000,
  65534,
  65535,
];
const REM_PORTS = [53, 80, 443, 3478, 5060, 8080, 1, 65535, 20000, 25000];

/** True when `a` (4 or 16 bytes) is in 192.0.2.0/24 or 2001:db8:1::/64. */
export function isInternal(a: Uint8Array): boolean {
  if (a.length === 4) return a[0] === 192 && a[1] === 0 && a[2] === 2;
  return a[0] === 0x20 && a[1] === 0x01 && a[2] === 0x0d && a[3] === 0xb8 && a[4] === 0 &&
    a[5] === 1 && a[6] === 0 && a[7] === 0;
}

function extOf(family: 4 | 6): Uint8Array {
  return family === 4 ? EXT4B : EXT6B;
}

/** The router's own address on the LAN (tests/lib/netns.ts, ADDRS): local, never forwarded to. */
const ROUTER_LAN = { 4: ipBytes(ADDRS.v4.routerLan), 6: ipBytes(ADDRS.v6.routerLan) } as const;

function routerLanOf(family: 4 | 6): Uint8Array {
  return ROUTER_LAN[family];
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Hex of bytes, for reports and reproducers. */
export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Bytes of a hex string. */
export function unhex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dissection mirroring bpf/lib/parse.h

const L3 = 14;
const L4_OFF_MAX = 512;
const IPV6_EXT_MAX = 6;
const P_TCP = 6, P_UDP = 17, P_ICMP = 1, P_ICMP6 = 58, P_DCCP = 33, P_UDPLITE = 136;

/** A protocol bpf/lib/addrnat.h translates by address only (snat_other_protocols, the default). */
function addrOnly(family: 4 | 6, proto: number): boolean {
  if (proto === P_TCP || proto === P_UDP) return false;
  if (family === 4) return proto !== P_ICMP;
  return proto !== P_ICMP6 && ![0, 43, 60, 44].includes(proto);
}

/** DCCP and UDP-Lite: a pseudo-header checksum at offset 6 (addrnat.h). */
const csumAt6 = (proto: number) => proto === P_DCCP || proto === P_UDPLITE;

/** Outcome of the datapath's parser for a packet. */
export type ParseStatus = "ok" | "pass" | "bad" | "bad0" | "nonip";

/** The packet embedded in an ICMP error. */
export interface Inner {
  l3: number;
  ihl: number;
  proto: number;
  l4: number;
  srcOff: number;
  dstOff: number;
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  /** A quoted echo reply: only the router's own leave through a mapping. */
  echoReply?: boolean;
}

/** What the datapath (and the oracle) sees of one frame. */
export interface Dissected {
  len: number;
  family: 0 | 4 | 6;
  status: ParseStatus;
  /** Why a "pass" is a pass. */
  passReason?: string;
  /** Another IP protocol, translated by address only (bpf/lib/addrnat.h). */
  addrOnly?: boolean;
  /** An ICMP error's quoted packet of such a protocol. */
  otherInner?: Inner;
  ihl: number;
  src: Uint8Array;
  dst: Uint8Array;
  srcOff: number;
  dstOff: number;
  /** Real L4 protocol number (58 for ICMPv6). */
  proto: number;
  l4: number;
  frag: 0 | 1 | 2;
  fragId: Uint8Array;
  /** IPv6: the next header its Fragment header names (the protocol of its fragment key). */
  fragProto: number;
  sport: number;
  dport: number;
  tcpFlags: number;
  icmpType: number;
  inner?: Inner;
  /** An ICMPv6 error quoting a later fragment: what its way-back record is keyed by (frag.h). */
  quotedLater?: QuotedLater;
}

/** A quoted IPv6 later fragment (parse.h parse_inner, PARSE_LATER). */
export interface QuotedLater {
  /** The next header its Fragment header names. */
  proto: number;
  id: Uint8Array;
  src: Uint8Array;
  dst: Uint8Array;
  srcOff: number;
  dstOff: number;
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
/** ICMP query requests and replies: echo, and IPv4's timestamp (bpf/lib/parse.h). */
const isRequest = (family: number, t: number) => family === 4 ? t === 8 || t === 13 : t === 128;
const isReply = (family: number, t: number) => family === 4 ? t === 0 || t === 14 : t === 129;
const isQuery = (family: number, t: number) => isRequest(family, t) || isReply(family, t);
const isErr = (family: number, t: number) =>
  family === 4 ? t === 3 || t === 11 || t === 12 || t === 4 : t >= 1 && t <= 4;

function parseInner(
  b: Uint8Array,
  family: 4 | 6,
  off: number,
): { st: ParseStatus; in?: Inner; later?: QuotedLater; other?: Inner } {
  let ihl: number, proto: number, l4: number, srcOff: number, dstOff: number, alen: number;
  if (family === 4) {
    if (off + 20 > b.length) return { st: "bad" };
    if (b[off] >> 4 !== 4 || (b[off] & 15) < 5) return { st: "bad" };
    if (u16(b, off + 6) & 0x1fff) return { st: "pass" };
    ihl = (b[off] & 15) * 4;
    proto = b[off + 9];
    l4 = off + ihl;
    srcOff = off + 12;
    dstOff = off + 16;
    alen = 4;
  } else {
    if (off + 40 > b.length) return { st: "bad" };
    if (b[off] >> 4 !== 6) return { st: "bad" };
    ihl = 40;
    proto = b[off + 6];
    l4 = off + 40;
    srcOff = off + 8;
    dstOff = off + 24;
    alen = 16;
    // parse.h parse_inner: a quoted chain is walked as einat_ipv6_walk does; a quoted later
    // fragment has no L4 header to map: its datagram's way-back record does (frag.h).
    if (proto !== P_TCP && proto !== P_UDP && proto !== P_ICMP6) {
      let found = false;
      for (let i = 0; i <= IPV6_EXT_MAX && !found; i++) {
        if (proto === 0 || proto === 43 || proto === 60) {
          if (l4 + 2 > b.length) return { st: "bad" };
          const next = b[l4];
          l4 += (b[l4 + 1] + 1) * 8;
          proto = next;
        } else if (proto === 44) {
          if (l4 + 8 > b.length) return { st: "bad" };
          const fo = u16(b, l4 + 2);
          proto = b[l4];
          l4 += 8;
          if (fo & 0xfff8) {
            if (l4 > L4_OFF_MAX) return { st: "bad" };
            const later: QuotedLater = {
              proto,
              id: b.slice(l4 - 4, l4),
              src: b.slice(srcOff, srcOff + alen),
              dst: b.slice(dstOff, dstOff + alen),
              srcOff,
              dstOff,
            };
            return { st: "pass", later };
          }
        } else {
          found = true;
          break;
        }
        if (l4 > L4_OFF_MAX) return { st: "bad" };
      }
      if (!found) return { st: "bad" };
    }
  }
  if (l4 + 8 > b.length) return { st: "bad" };
  const inner: Inner = {
    l3: off,
    ihl,
    proto,
    l4,
    srcOff,
    dstOff,
    src: b.slice(srcOff, srcOff + alen),
    dst: b.slice(dstOff, dstOff + alen),
    sport: u16(b, l4),
    dport: u16(b, l4 + 2),
  };
  if (proto === P_TCP || proto === P_UDP) return { st: "ok", in: inner };
  // another protocol: translated by address only (bpf/lib/addrnat.h) when a mapping holds it
  if (addrOnly(family, proto)) return { st: "pass", other: inner };
  if (proto === P_ICMP || proto === P_ICMP6) {
    if ((proto === P_ICMP) !== (family === 4)) return { st: "pass" };
    if (!isQuery(family, b[l4])) return { st: "pass" };
    inner.sport = inner.dport = u16(b, l4 + 4);
    inner.echoReply = isReply(family, b[l4]);
    return { st: "ok", in: inner };
  }
  return { st: "pass" };
}

/** Dissects a frame the way bpf/lib/parse.h does (NAT44 and NAT66 enabled, Ethernet). */
export function dissect(b: Uint8Array): Dissected {
  const d: Dissected = {
    len: b.length,
    family: 0,
    status: "nonip",
    ihl: 0,
    src: new Uint8Array(0),
    dst: new Uint8Array(0),
    srcOff: 0,
    dstOff: 0,
    proto: -1,
    l4: 0,
    frag: 0,
    fragId: new Uint8Array(4),
    fragProto: 0,
    sport: 0,
    dport: 0,
    tcpFlags: 0,
    icmpType: -1,
  };
  if (b.length < L3) return d;
  const et = u16(b, 12);
  if (et === 0x0800) {
    if (b.length < L3 + 20 || b[L3] >> 4 !== 4 || (b[L3] & 15) < 5) {
      d.status = "bad0";
      return d;
    }
    d.family = 4;
    d.ihl = (b[L3] & 15) * 4;
    d.proto = b[L3 + 9];
    d.l4 = L3 + d.ihl;
    d.srcOff = L3 + 12;
    d.dstOff = L3 + 16;
    d.src = b.slice(d.srcOff, d.srcOff + 4);
    d.dst = b.slice(d.dstOff, d.dstOff + 4);
    d.fragId = new Uint8Array([b[L3 + 4], b[L3 + 5], 0, 0]);
    const fo = u16(b, L3 + 6);
    d.frag = fo & 0x1fff ? 2 : fo & 0x2000 ? 1 : 0;
    if (d.proto !== P_TCP && d.proto !== P_UDP && d.proto !== P_ICMP) {
      d.status = "pass";
      d.passReason = "other-proto";
      d.addrOnly = addrOnly(4, d.proto);
      return d;
    }
  } else if (et === 0x86dd) {
    if (b.length < L3 + 40 || b[L3] >> 4 !== 6) {
      d.status = "bad0";
      return d;
    }
    d.family = 6;
    d.ihl = 40;
    d.srcOff = L3 + 8;
    d.dstOff = L3 + 24;
    d.src = b.slice(d.srcOff, d.srcOff + 16);
    d.dst = b.slice(d.dstOff, d.dstOff + 16);
    let nh = b[L3 + 6];
    let off = L3 + 40;
    let l4 = -1;
    for (let i = 0; i <= IPV6_EXT_MAX; i++) {
      if (nh === 0 || nh === 43 || nh === 60) {
        if (off + 2 > b.length) break;
        const next = b[off];
        off += (b[off + 1] + 1) * 8;
        nh = next;
      } else if (nh === 44) {
        if (off + 8 > b.length) break;
        const fo = u16(b, off + 2);
        d.fragId = b.slice(off + 4, off + 8);
        nh = d.fragProto = b[off];
        off += 8;
        if (fo & 0xfff8) {
          // a later fragment: the rest is payload, its protocol the one the header names
          d.frag = 2;
          if (off <= L4_OFF_MAX) l4 = off;
          break;
        }
        if (fo & 1) d.frag = 1;
      } else {
        l4 = off;
        break;
      }
      if (off > L4_OFF_MAX) break;
    }
    if (l4 < 0 || l4 > L4_OFF_MAX) {
      d.status = "bad";
      return d;
    }
    d.proto = nh;
    d.l4 = l4;
    // a later fragment whose first carries more extension headers: its record decides
    const opaque = d.frag === 2 && (nh === 0 || nh === 43 || nh === 60);
    if (nh !== P_TCP && nh !== P_UDP && nh !== P_ICMP6 && !opaque) {
      d.status = "pass";
      d.passReason = "other-proto";
      d.addrOnly = addrOnly(6, nh);
      return d;
    }
  } else {
    return d;
  }
  if (d.frag === 2) {
    d.status = "ok";
    return d;
  }
  if (d.l4 > L4_OFF_MAX) {
    d.status = "bad";
    return d;
  }
  const need = d.proto === P_TCP ? 20 : 8;
  if (d.l4 + need > b.length) {
    d.status = "bad";
    return d;
  }
  if (d.proto === P_TCP || d.proto === P_UDP) {
    d.sport = u16(b, d.l4);
    d.dport = u16(b, d.l4 + 2);
    if (d.proto === P_TCP) d.tcpFlags = b[d.l4 + 13];
    d.status = "ok";
    return d;
  }
  d.icmpType = b[d.l4];
  if (isQuery(d.family, d.icmpType)) {
    d.sport = d.dport = u16(b, d.l4 + 4);
    d.status = "ok";
    return d;
  }
  if (isErr(d.family, d.icmpType) && d.frag === 0) {
    const r = parseInner(b, d.family, d.l4 + 8);
    d.status = r.st;
    if (r.st === "pass") d.passReason = "icmp-error-untranslatable";
    d.inner = r.in;
    d.otherInner = r.other;
    d.quotedLater = r.later;
    return d;
  }
  d.status = "pass";
  d.passReason = isErr(d.family, d.icmpType) ? "icmp-error-fragment" : "icmp-other";
  return d;
}

// ---------------------------------------------------------------------------------------------
// Checksum residuals

/** One's complement sum over [start, min(end, len)), 0 and 0xffff being the same number. */
function sumOf(b: Uint8Array, start: number, end: number, init = 0): number {
  const s = onesComplementSum(b.subarray(Math.min(start, b.length), Math.min(end, b.length)), init);
  return s === 0xffff ? 0 : s;
}

function pseudoAddrSum(src: Uint8Array, dst: Uint8Array): number {
  return onesComplementSum(dst, onesComplementSum(src));
}

/**
 * The residual of an L4 checksum over the bytes present: incremental updates keep it, so a
 * valid checksum stays valid and an invalid one stays as wrong. The pseudo-header's length and
 * protocol are constants of a packet and left out.
 */
function l4Residual(b: Uint8Array, l4: number, pseudo: [Uint8Array, Uint8Array] | null): number {
  return sumOf(b, l4, b.length, pseudo ? pseudoAddrSum(pseudo[0], pseudo[1]) : 0);
}

// ---------------------------------------------------------------------------------------------
// Oracle

/** Classes where an internal source is known to leave untranslated (see docs/reliability.md). */
export const LEAK_CLASSES = [] as const;

/** Binding lookups the oracle needs. */
export interface BindingView {
  /** The other side of a binding: orig (internal endpoint → external) or reply. */
  get(
    orig: boolean,
    family: 4 | 6,
    l4proto: number,
    addr: Uint8Array,
    port: number,
  ): { addr: Uint8Array; port: number } | null;
  /**
   * The address recorded for the later fragments of a datagram (bpf/lib/frag.h): 0, ingress, the
   * new destination; 1, egress, the new source; 2, egress to the external address, the new
   * destination (its own when delivered to the router).
   */
  frag(d: Dissected, which: 0 | 1 | 2): Uint8Array | null;
  /** Whether a session of external endpoint (extAddr, extPort) with the remote exists. */
  session(
    family: 4 | 6,
    l4proto: number,
    ext: { addr: Uint8Array; port: number },
    remote: { addr: Uint8Array; port: number },
  ): boolean;
  /**
   * The way back for a quoted IPv6 later fragment (frag.h): 3, keyed by (remote, internal), the
   * external destination its datagram came to; 4, keyed by (external, remote), its internal source.
   */
  back?(q: QuotedLater, which: 3 | 4): Uint8Array | null;
  /** Whether the packet just run was refused for want of a port (drop_no_port grew). */
  refusedNoPort?(): boolean;
  /** The internal host of an address-only mapping (protocol, external, remote), if any. */
  addr?(family: 4 | 6, proto: number, ext: Uint8Array, remote: Uint8Array): Uint8Array | null;
}

/** The result of checking one packet. */
export interface PacketCheck {
  violations: string[];
  /** What happened: "pass", "drop", "translated", "redirect-own", "hairpin", "prohibited". */
  outcome: string;
  /** A known leak class the packet fell in, if any. */
  leak?: string;
}

/**
 * The protocol a binding or fragment record of an L4 protocol is keyed by: ICMPv6's are ICMP's in
 * IPv6; in IPv4, protocol 58 is another protocol like any (seed 6105: an IPv4 protocol-58 later
 * fragment was checked against an ICMP datagram's record).
 */
const keyProto = (fam: 4 | 6, p: number) => (fam === 6 && p === P_ICMP6 ? P_ICMP : p);

function allowedOffsets(d: Dissected): Set<number> {
  const s = new Set<number>();
  const add = (from: number, n: number) => {
    for (let i = 0; i < n; i++) s.add(from + i);
  };
  if (d.family === 4) {
    add(L3 + 10, 2);
    add(L3 + 12, 8);
  } else add(L3 + 8, 32);
  if (d.frag === 2) return s;
  const l4 = d.l4;
  if (d.addrOnly) {
    if (csumAt6(d.proto)) add(l4 + 6, 2);
    return s;
  }
  if (d.proto === P_TCP) add(l4, 4), add(l4 + 16, 2);
  else if (d.proto === P_UDP) add(l4, 4), add(l4 + 6, 2);
  else {
    add(l4 + 2, 2);
    const n = d.inner ?? d.otherInner;
    if (!n) add(l4 + 4, 2);
    else {
      if (d.family === 4) add(n.l3 + 10, 2), add(n.l3 + 12, 8);
      else add(n.l3 + 8, 32);
      if (!d.inner) return s; // another protocol's quote: its addresses only
      if (n.proto === P_TCP) add(n.l4, 4), add(n.l4 + 16, 2);
      else if (n.proto === P_UDP) add(n.l4, 4), add(n.l4 + 6, 2);
      else add(n.l4 + 2, 4);
    }
  }
  return s;
}

/**
 * Flags the first byte the program changed outside addresses, ports and checksums; and the
 * IPv4 identification of a non-atomic datagram (not DF alone) whose source it translated
 * (bpf/lib/ipid.h).
 */
function checkChangedBytes(input: Uint8Array, out: Uint8Array, d: Dissected, v: string[]): void {
  const allowed = allowedOffsets(d);
  if (d.family === 4 && (u16(input, L3 + 6) & 0x7fff) !== 0x4000) {
    let newSource = false;
    for (let i = 12; i < 16; i++) newSource ||= input[L3 + i] !== out[L3 + i];
    if (newSource) allowed.add(L3 + 4).add(L3 + 5);
  }
  for (let i = 0; i < input.length; i++) {
    if (input[i] !== out[i] && !allowed.has(i)) {
      v.push(`byte ${i} changed outside addresses/ports/checksums`);
      return;
    }
  }
}

function checkResiduals(input: Uint8Array, out: Uint8Array, d: Dissected, v: string[]): void {
  if (d.family === 4) {
    const a = sumOf(input, L3, L3 + d.ihl), b = sumOf(out, L3, L3 + d.ihl);
    if (a !== b) v.push(`IPv4 header checksum residual ${a.toString(16)} -> ${b.toString(16)}`);
  }
  if (d.frag === 2) return;
  const od = dissect(out);
  if (d.addrOnly) {
    if (csumAt6(d.proto) && d.l4 + 8 <= input.length) {
      const a = l4Residual(input, d.l4, [d.src, d.dst]),
        b = l4Residual(out, d.l4, [od.src, od.dst]);
      if (a !== b) v.push(`${d.proto} checksum residual ${a.toString(16)} -> ${b.toString(16)}`);
    }
    return;
  }
  const pseudo = (x: Dissected): [Uint8Array, Uint8Array] | null =>
    x.proto === P_ICMP ? null : [x.src, x.dst];
  const csumOff = d.proto === P_TCP ? d.l4 + 16 : d.proto === P_UDP ? d.l4 + 6 : d.l4 + 2;
  if (d.proto === P_UDP && u16(input, csumOff) === 0) {
    if (u16(out, csumOff) !== 0) v.push("UDP zero checksum became non-zero");
  } else {
    const a = l4Residual(input, d.l4, pseudo(d)), b = l4Residual(out, d.l4, pseudo(od));
    if (a !== b) v.push(`L4 checksum residual ${a.toString(16)} -> ${b.toString(16)}`);
  }
  const n = d.inner ?? d.otherInner, on = od.inner ?? od.otherInner;
  if (!n) return;
  if (!on) {
    v.push("embedded packet no longer parses");
    return;
  }
  if (d.family === 4) {
    const a = sumOf(input, n.l3, n.l3 + n.ihl), b = sumOf(out, n.l3, n.l3 + n.ihl);
    if (a !== b) v.push(`embedded IPv4 header checksum residual ${a} -> ${b}`);
  }
  if (!d.inner) return;
  if (n.proto === P_UDP && u16(input, n.l4 + 6) === 0) {
    if (u16(out, n.l4 + 6) !== 0) v.push("embedded UDP zero checksum became non-zero");
  } else if (n.proto === P_UDP || n.proto === P_TCP) {
    // TCP's is translated when the error quotes the whole TCP header (the frame reaches past it).
    if (n.proto === P_UDP || input.length >= n.l4 + 20) {
      const a = l4Residual(input, n.l4, [n.src, n.dst]);
      const b = l4Residual(out, n.l4, [on.src, on.dst]);
      const name = n.proto === P_UDP ? "UDP" : "TCP";
      if (a !== b) v.push(`embedded ${name} checksum residual ${a} -> ${b}`);
    }
  } else if (n.proto === P_ICMP || n.proto === P_ICMP6) {
    const p = n.proto === P_ICMP6;
    const a = l4Residual(input, n.l4, p ? [n.src, n.dst] : null);
    const b = l4Residual(out, n.l4, p ? [on.src, on.dst] : null);
    if (a !== b) v.push(`embedded ICMP checksum residual ${a} -> ${b}`);
  }
}

/** A generated ICMP 3/13 (ICMPv6 1/1) to the sender of `input`, checked in full. */
function checkProhibited(input: Uint8Array, out: Uint8Array, d: Dissected, v: string[]): boolean {
  const v4 = d.family === 4;
  const hdr = v4 ? 20 : 40, q = v4 ? 28 : 48;
  if (out.length !== L3 + hdr + 8 + q) return false;
  const type = out[L3 + hdr], code = out[L3 + hdr + 1];
  if (v4 ? type !== 3 || code !== 13 : type !== 1 || code !== 1) return false;
  const dst = out.slice(L3 + (v4 ? 16 : 24), L3 + (v4 ? 20 : 40));
  if (!eq(dst, d.src)) return false;
  if (v4) {
    if (internetChecksum(out.subarray(L3, L3 + 20)) !== 0) v.push("ICMP 3/13: bad IP checksum");
    if (out[L3 + 9] !== P_ICMP || u16(out, L3 + 2) !== 56) v.push("ICMP 3/13: bad IP header");
    if (internetChecksum(out.subarray(L3 + 20)) !== 0) v.push("ICMP 3/13: bad ICMP checksum");
  } else {
    if (out[L3 + 6] !== P_ICMP6 || u16(out, L3 + 4) !== 56) v.push("ICMPv6 1/1: bad header");
    const ph = new Uint8Array(40);
    ph.set(out.subarray(L3 + 8, L3 + 40));
    ph[35] = 56;
    ph[39] = P_ICMP6;
    if (internetChecksum(out.subarray(L3 + 40), onesComplementSum(ph)) !== 0) {
      v.push("ICMPv6 1/1: bad checksum");
    }
  }
  if (!eq(out.subarray(L3 + hdr + 8), input.subarray(L3, L3 + q))) v.push("quote differs");
  return true;
}

function sameEndpoint(
  got: { addr: Uint8Array; port: number },
  want: { addr: Uint8Array; port: number } | null,
): boolean {
  return want !== null && eq(got.addr, want.addr) && got.port === want.port;
}

/**
 * Checks one packet's verdict and output against what the datapath promises. `view` is read
 * after the run (bindings are only ever created by egress packets and never expire during a
 * fuzz run, whose timeouts are long).
 */
export function checkPacket(
  dir: "egress" | "ingress",
  input: Uint8Array,
  verdict: number,
  out: Uint8Array,
  view: BindingView,
): PacketCheck {
  const v: string[] = [];
  const d = dissect(input);
  const changed = !eq(input, out);
  const fam = d.family as 4 | 6;
  const res = (outcome: string, leak?: string): PacketCheck => ({ violations: v, outcome, leak });
  const allowedVerdicts = dir === "egress"
    ? [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT]
    : [TC_ACT_OK, TC_ACT_SHOT];
  if (!allowedVerdicts.includes(verdict)) {
    v.push(`verdict ${verdict}`);
    return res("bad-verdict");
  }
  const mustPass = (why: string) => {
    if (verdict !== TC_ACT_OK || changed) {
      v.push(`${why}: expected to pass untouched, got verdict ${verdict} changed=${changed}`);
    }
  };
  const mustDrop = (why: string) => {
    if (verdict !== TC_ACT_SHOT) v.push(`${why}: expected a drop, got verdict ${verdict}`);
  };

  // An ICMPv6 error quoting a later fragment of a datagram einat translated: the way back maps it.
  const back = d.quotedLater && view.back?.(d.quotedLater, dir === "ingress" ? 4 : 3);
  // (Egress from inside to the external address is a hairpinned error: its own path, below.)
  if (d.quotedLater && back && !(dir === "egress" && eq(d.dst, extOf(6)) && !ownSource6(d))) {
    const q = d.quotedLater;
    // Inbound, an error to another address than the quoted source is not about our packet
    // (RFC 5508 REQ-4): it passes as it is, damaged or not (einat_ingress_icmp_error).
    if (dir === "ingress" && !eq(d.dst, q.src)) {
      mustPass("error quoting a later fragment, to another address than its source");
      return res("pass");
    }
    return checkLaterQuote(dir, d, q, back, input, verdict, out, v, res);
  }
  if (dir === "ingress") {
    if (d.addrOnly || d.otherInner) return res(checkOtherIngress(d, input, verdict, out, view, v));
    if (d.status !== "ok") {
      mustPass(`ingress ${d.status}${d.passReason ? ` (${d.passReason})` : ""}`);
      return res("pass");
    }
    if (eq(d.src, extOf(fam)) && !d.inner && d.frag !== 2) {
      // From our own external address (spoofed, or looped back): never translated, and no
      // session is made with it as the remote (it would catch LAN traffic to that address).
      mustPass("ingress from the external address itself");
      return res("pass");
    }
    if (verdict === TC_ACT_SHOT && d.frag === 2 && heldable(d, input) && !view.frag(d, 0)) {
      return res("held"); // a later fragment before its first, kept for it (frag.h)
    }
    if (verdict === TC_ACT_SHOT) {
      // Only an ICMP error or a later fragment towards a binding, or an unsolicited SYN to a
      // NAT port of the external address, is dropped. A TCP or UDP packet to a binding needs
      // no session (a remote's first packet makes none), so nothing refuses it.
      const n = d.inner;
      const bound = n
        ? view.get(false, fam, keyProto(fam, n.proto), n.src, n.sport)
        : d.frag === 2
        ? view.frag(d, 0)
        : view.get(false, fam, keyProto(fam, d.proto), d.dst, d.dport);
      const syn = !n && d.frag !== 2 && d.proto === P_TCP && (d.tcpFlags & 0x12) === 0x02 &&
        eq(d.dst, extOf(fam)) && d.dport >= 20000 && d.dport <= 29999;
      if (!bound && !syn) v.push("ingress packet dropped although it has no binding to go to");
      if (bound && !n && d.frag !== 2 && (d.proto === P_TCP || d.proto === P_UDP) && !syn) {
        v.push("ingress TCP/UDP packet to a binding dropped");
      }
      return res("drop");
    }
    if (!changed) {
      // Passing is right only when there was nothing to translate to.
      if (d.inner) {
        const n = d.inner;
        const to = view.get(false, fam, keyProto(fam, n.proto), n.src, n.sport);
        // a binding of the NAT host's own (an inbound ping's identifier) maps to itself; an
        // echo reply is the router's whoever holds its identifier, and so is an echo request no
        // session sent (einat_ingress_icmp_error); an error to another address than the
        // quoted source is not about our packet
        const routers = n.echoReply ||
          (n.proto !== P_TCP && n.proto !== P_UDP &&
            !view.session(fam, keyProto(fam, n.proto), { addr: n.src, port: n.sport }, {
              addr: n.dst,
              port: 0,
            }));
        if (
          to && !routers && eq(d.dst, n.src) &&
          !sameEndpoint({ addr: n.src, port: n.sport }, to)
        ) {
          v.push("ICMP error about a mapped endpoint passed untranslated");
        }
      } else if (d.frag === 2) {
        const to = view.frag(d, 0);
        // a first fragment the router kept (no binding) records the datagram as staying put
        if (to && !eq(to, d.dst)) {
          v.push("later fragment with a recorded first passed untranslated");
        }
      } else if (
        !(d.proto !== P_TCP && d.proto !== P_UDP && !isReply(fam, d.icmpType))
      ) {
        const to = view.get(false, fam, keyProto(fam, d.proto), d.dst, d.dport);
        // a binding of the NAT host's own (an inbound ping's identifier) maps to itself; an echo
        // reply no session asked for is the router's (ingress_l4)
        const routers = d.proto !== P_TCP && d.proto !== P_UDP &&
          !view.session(fam, keyProto(fam, d.proto), { addr: d.dst, port: d.dport }, {
            addr: d.src,
            port: 0,
          });
        if (to && !routers && !sameEndpoint({ addr: d.dst, port: d.dport }, to)) {
          v.push("packet to a mapped endpoint passed untranslated");
        }
      }
      return res("pass");
    }
    const od = dissect(out);
    checkChangedBytes(input, out, d, v);
    if (out.length !== input.length) v.push("length changed");
    checkResiduals(input, out, d, v);
    if (!eq(od.src, d.src)) v.push("ingress changed the source");
    if (d.inner) {
      const n = d.inner, on = od.inner!;
      const want = view.get(false, fam, keyProto(fam, n.proto), n.src, n.sport);
      if (!errorIntact(d, input)) v.push("ICMP error with a bad checksum translated (REQ-3)");
      if (n.echoReply) v.push("ICMP error about an echo reply (the router's) sent inside");
      if (!eq(d.dst, n.src)) {
        v.push("ICMP error to another address than its quoted source translated");
      }
      if (
        !n.echoReply && n.proto !== P_TCP && n.proto !== P_UDP &&
        !view.session(fam, keyProto(fam, n.proto), { addr: n.src, port: n.sport }, {
          addr: n.dst,
          port: 0,
        })
      ) v.push("ICMP error about an echo request no session sent (the router's) sent inside");
      if (!want) v.push("ICMP error translated without a binding");
      else if (!on || !sameEndpoint({ addr: on.src, port: on.sport }, want)) {
        v.push("embedded source is not the binding's internal endpoint");
      } else if (!eq(od.dst, want.addr)) v.push("outer destination is not the internal host");
    } else if (d.frag === 2) {
      const want = view.frag(d, 0);
      if (!want || !eq(od.dst, want)) v.push("later fragment translated to an unrecorded address");
    } else {
      const want = view.get(false, fam, keyProto(fam, d.proto), d.dst, d.dport);
      if (!sameEndpoint({ addr: od.dst, port: od.dport }, want)) {
        v.push("destination is not the binding's internal endpoint");
      }
    }
    return res("translated");
  }

  // --- egress ---
  if (d.status === "nonip") {
    mustPass("non-IP");
    return res("pass");
  }
  if (d.status === "bad0") {
    mustDrop("unparseable IP header");
    return res("drop");
  }
  // The router's own: its external address, and sources that are never
  // forwarded (0.0.0.0 / :: for DHCP, fe80::/10 link-local).
  const localOnly = d.src.every((x) => x === 0) ||
    (fam === 6 && d.src[0] === 0xfe && (d.src[1] & 0xc0) === 0x80);
  const own = eq(d.src, extOf(fam)) || localOnly;
  // From inside to our external address (the hairpin rules route it here): ICMP naming no
  // internal host goes to the router untouched; an error about a hairpinned packet is turned
  // around to the host that sent that packet (RFC 5508 REQ-7).
  if (
    !own && eq(d.dst, extOf(fam)) && (d.proto === P_ICMP || d.proto === P_ICMP6) &&
    d.frag !== 2 && (isQuery(fam, d.icmpType) || (isErr(fam, d.icmpType) && d.frag === 0))
  ) {
    return checkIcmpToExternal(d, verdict, input, out, view, v);
  }
  if (d.otherInner && d.status === "pass") {
    return res(checkOtherEgressError(d, own, input, verdict, out, view, v));
  }
  if (
    d.status === "pass" &&
    ["icmp-error-untranslatable", "icmp-error-fragment", "icmp-other"].includes(d.passReason ?? "")
  ) {
    // ICMP that cannot be mapped: only the router's own may leave.
    if (own) mustPass(`router's own ${d.passReason}`);
    else mustDrop(`${d.passReason} from inside`);
    return res(own ? "pass" : "drop");
  }
  if (d.addrOnly) return res(checkOtherEgress(d, own, input, verdict, out, view, v));
  if (d.status === "pass") {
    const leaky = !own && LEAK_CLASSES.includes(d.passReason as typeof LEAK_CLASSES[number]);
    // A leak class may also be dropped (what it should be); anything else passes untouched.
    if (leaky && verdict === TC_ACT_SHOT) return res("drop");
    mustPass(`egress pass class ${d.passReason}`);
    return res("pass", leaky ? d.passReason : undefined);
  }
  if (d.status === "bad") {
    if (own) mustPass("router's own malformed packet");
    else mustDrop("malformed packet from inside");
    return res(own ? "pass" : "drop");
  }
  if (own && !d.inner) {
    if (localOnly || d.frag !== 0 || !changed) {
      mustPass("router's own traffic");
      return res("pass");
    }
    // From the external address with a port of the NAT's ranges: mapped as an internal host's
    // is (einat_egress_own), on that same address, to its mapping's port.
    if (verdict !== TC_ACT_OK) v.push(`router's own packet translated with verdict ${verdict}`);
    if (out.length !== input.length) v.push(`length changed ${input.length} -> ${out.length}`);
    else {
      checkChangedBytes(input, out, d, v);
      checkResiduals(input, out, d, v);
    }
    const od = dissect(out);
    const mine = view.get(true, fam, keyProto(fam, d.proto), d.src, d.sport);
    if (!mine || !eq(mine.addr, d.src) || !eq(od.src, d.src) || od.sport !== mine.port) {
      v.push("router's own packet not translated to its mapping on its own address");
    }
    const icmp = d.proto === P_ICMP || d.proto === P_ICMP6;
    if (!eq(od.dst, d.dst) || (!icmp && od.dport !== d.dport)) {
      v.push("router's own: destination changed");
    }
    return res("own-mapped");
  }
  if (verdict === TC_ACT_SHOT) {
    // A translatable packet from inside is dropped only when it cannot be given a mapping.
    const plain = !d.inner && d.frag !== 2 && !eq(d.dst, extOf(fam)) &&
      (d.proto === P_UDP || (d.proto === P_TCP && !(d.tcpFlags & 0x04)) ||
        ((d.proto === P_ICMP || d.proto === P_ICMP6) && isRequest(fam, d.icmpType)));
    if (!own && plain && !(view.refusedNoPort?.() ?? true)) {
      v.push("translatable packet from inside dropped");
    }
    if (
      !own && !d.inner && d.frag !== 2 && d.proto === P_TCP && d.tcpFlags & 0x04 &&
      !eq(d.dst, extOf(fam))
    ) {
      if (view.get(true, fam, keyProto(fam, d.proto), d.src, d.sport)) {
        v.push("RST of a mapped endpoint dropped");
      }
    }
    return res("drop");
  }
  if (
    !own && (d.proto === P_ICMP || d.proto === P_ICMP6) && !d.inner && d.frag !== 2 &&
    !isRequest(fam, d.icmpType)
  ) {
    v.push(`ICMPv${fam} query reply from inside not dropped`);
  }
  const toExt = eq(d.dst, extOf(fam)) && !d.inner && d.frag !== 2 && !own;
  // a later fragment to the external address goes where its first went: the router, or hairpinned
  const turnLater = eq(d.dst, extOf(fam)) && !d.inner && d.frag === 2 && !own;
  if (!changed) {
    if (verdict === TC_ACT_REDIRECT && turnLater) {
      const to = view.frag(d, 2);
      if (to && !eq(to, d.dst)) {
        v.push("later fragment of a hairpinned datagram kept by the router");
      }
      return res("redirect-own");
    }
    if (verdict === TC_ACT_REDIRECT && toExt) {
      // a port the router's own mapping holds (its external address as the internal endpoint)
      // is the router's: reached as it is
      const target = view.get(false, fam, keyProto(fam, d.proto), d.dst, d.dport);
      if (target && !eq(target.addr, extOf(fam))) {
        v.push("redirected untouched to the router although a host's mapping holds the port");
      }
      return res("redirect-own");
    }
    if (own && verdict === TC_ACT_OK) {
      // the router's own error about something no binding covers
      const n = d.inner!;
      if (view.get(true, fam, keyProto(fam, n.proto), n.dst, n.dport)) {
        v.push("router's own ICMP error about a mapped endpoint passed untranslated");
      }
      return res("pass");
    }
    v.push(
      own
        ? `router's own ICMP error: verdict ${verdict}`
        : `internal source left untranslated (verdict ${verdict})`,
    );
    return res("pass");
  }
  if (!own && checkProhibited(input, out, d, v)) return res("prohibited");
  if (out.length !== input.length) {
    v.push(`length changed ${input.length} -> ${out.length}`);
    return res("translated");
  }
  checkChangedBytes(input, out, d, v);
  checkResiduals(input, out, d, v);
  const od = dissect(out);
  if (own) {
    if (!eq(od.src, d.src) || !eq(od.dst, d.dst)) v.push("router's own error: outer changed");
  } else {
    if (!eq(od.src, extOf(fam))) v.push(`source ${formatIp(od.src)} is not the external address`);
  }
  if (isInternal(od.src)) v.push("internal source leaves translated packet");
  if (d.inner) {
    const n = d.inner, on = od.inner;
    const want = view.get(true, fam, keyProto(fam, n.proto), n.dst, n.dport);
    if (!want) v.push("ICMP error translated without a binding");
    if (!errorIntact(d, input)) v.push("ICMP error with a bad checksum translated (REQ-3)");
    else if (!on || !sameEndpoint({ addr: on.dst, port: on.dport }, want)) {
      v.push("embedded destination is not the binding's external endpoint");
    }
    if (!own && !eq(od.dst, d.dst)) v.push("outer destination changed");
    return res("translated");
  }
  if (d.frag === 2) {
    const src = view.frag(d, 1), to = turnLater ? view.frag(d, 2) : null;
    if (src && !eq(od.src, src)) v.push("later fragment: not its first's source");
    if (turnLater) {
      if (verdict !== TC_ACT_REDIRECT) v.push(`hairpinned later fragment: verdict ${verdict}`);
      if (!src || !to || !eq(od.dst, to)) v.push("later fragment hairpinned without its first");
      return res("hairpin");
    }
    if (verdict !== TC_ACT_OK) v.push(`translated with verdict ${verdict}`);
    if (!eq(od.dst, d.dst)) v.push("later fragment: destination changed");
    return res("translated");
  }
  const snat = view.get(true, fam, keyProto(fam, d.proto), d.src, d.sport);
  const icmp = d.proto === P_ICMP || d.proto === P_ICMP6;
  if (!snat || !eq(od.src, snat.addr) || (!icmp && od.sport !== snat.port)) {
    v.push("new source is not the binding's external endpoint");
  } else {
    const back = view.get(false, fam, keyProto(fam, d.proto), snat.addr, snat.port);
    if (!sameEndpoint({ addr: d.src, port: d.sport }, back)) v.push("reply entry disagrees");
  }
  if (toExt) {
    if (verdict !== TC_ACT_REDIRECT) v.push(`hairpin verdict ${verdict}`);
    const target = view.get(false, fam, keyProto(fam, d.proto), d.dst, d.dport);
    if (!target || !eq(od.dst, target.addr) || (!icmp && od.dport !== target.port)) {
      v.push("hairpin destination is not the target binding's internal endpoint");
    }
    return res("hairpin");
  }
  if (verdict !== TC_ACT_OK) v.push(`translated with verdict ${verdict}`);
  if (!eq(od.dst, d.dst) || (!icmp && od.dport !== d.dport)) v.push("destination changed");
  if (icmp && od.sport !== snat?.port) v.push("echo identifier is not the binding's");
  return res("translated");
}

/** The router's own IPv6 source: the external address, or one never forwarded. */
function ownSource6(d: Dissected): boolean {
  return eq(d.src, extOf(6)) || d.src.every((x) => x === 0) ||
    (d.src[0] === 0xfe && (d.src[1] & 0xc0) === 0x80);
}

/**
 * An ICMPv6 error quoting a later fragment with a way-back record (bpf/einat.bpf.c,
 * einat_egress_error_later and einat_ingress_icmp_error): intact, it is translated (egress: the
 * quoted destination to the external address, and the outer source unless it is the router's;
 * ingress: the quoted source and the outer destination to the internal host), else dropped.
 */
function checkLaterQuote(
  dir: "egress" | "ingress",
  d: Dissected,
  q: QuotedLater,
  back: Uint8Array,
  input: Uint8Array,
  verdict: number,
  out: Uint8Array,
  v: string[],
  res: (outcome: string) => PacketCheck,
): PacketCheck {
  if (!errorIntact(d, input)) {
    if (verdict !== TC_ACT_SHOT) {
      v.push(`damaged error quoting a later fragment: verdict ${verdict}`);
    }
    return res("drop");
  }
  if (verdict !== TC_ACT_OK) {
    v.push(`error quoting a later fragment of a translated datagram: verdict ${verdict}`);
    return res("bad-verdict");
  }
  const own = ownSource6(d);
  const want = input.slice();
  if (dir === "egress") {
    want.set(back, q.dstOff);
    if (!own) want.set(back, L3 + 8);
  } else {
    want.set(back, q.srcOff);
    want.set(back, L3 + 24);
  }
  want.set(out.subarray(d.l4 + 2, d.l4 + 4), d.l4 + 2); // the checksum: checked below
  if (!eq(want, out)) v.push(`error quoting a later fragment: bytes other than the mapped ones`);
  const od = dissect(out);
  if (!errorIntact(od, out)) v.push("error quoting a later fragment: ICMPv6 checksum broken");
  return res("translated");
}

/**
 * Whether an ICMP error is intact (RFC 5508 REQ-3): its ICMP checksum (with the pseudo-header for
 * ICMPv6) and an embedded IPv4 header checksum are valid. Errors einat does not check (longer
 * than 1536 bytes of ICMP) count as intact.
 */
function errorIntact(d: Dissected, input: Uint8Array): boolean {
  const fam = d.family as 4 | 6;
  const end = L3 + (fam === 4 ? u16(input, L3 + 2) : 40 + u16(input, L3 + 4));
  if (end > input.length || end < d.l4 + 8) return false;
  const msg = input.slice(d.l4, end);
  if (msg.length > 1536) return true;
  let sum = 0;
  const add = (b: Uint8Array) => {
    for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) | (b[i + 1] ?? 0);
  };
  add(msg);
  if (fam === 6) {
    add(d.src);
    add(d.dst);
    sum += msg.length + 58;
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  if (sum !== 0xffff) return false;
  if (fam === 4) {
    const ihl = (msg[8] & 15) * 4;
    if (ihl < 20 || 8 + ihl > msg.length) return false;
    let h = 0;
    for (let i = 8; i < 8 + ihl; i += 2) h += (msg[i] << 8) | msg[i + 1];
    while (h > 0xffff) h = (h & 0xffff) + Math.floor(h / 0x10000);
    // only without options (icmp_check.h: a router quotes a header whose option it wrote into)
    if (ihl === 20 && h !== 0xffff) return false;
  }
  return true;
}

/**
 * Whether an ingress later fragment may be held for its first (bpf/lib/frag.h): to the external
 * address, its IP length within the frame and at most FRAG_HOLD_BYTES.
 */
function heldable(d: Dissected, input: Uint8Array): boolean {
  const fam = d.family as 4 | 6;
  if (!eq(d.dst, extOf(fam))) return false;
  const ipLen = fam === 4 ? u16(input, L3 + 2) : 40 + u16(input, L3 + 4);
  return ipLen >= 20 && ipLen <= 1600 && ipLen <= input.length - L3;
}

/** A packet translated to `want` (its source on egress, destination on ingress), and only that. */
function checkAddrOnly(
  input: Uint8Array,
  out: Uint8Array,
  d: Dissected,
  v: string[],
  egress: boolean,
  want: Uint8Array,
): void {
  checkChangedBytes(input, out, d, v);
  if (out.length !== input.length) v.push("length changed");
  checkResiduals(input, out, d, v);
  const od = dissect(out);
  const [moved, kept] = egress ? [od.src, od.dst] : [od.dst, od.src];
  if (!eq(moved, want)) v.push(`${egress ? "source" : "destination"} is not the mapping's`);
  if (!eq(kept, egress ? d.dst : d.src)) v.push("the other address changed");
}

/**
 * Another IP protocol leaving (bpf/lib/addrnat.h): the router's own as it is; to the external
 * address, handed to the router as it is; from inside, the external address as its source and
 * (protocol, external, remote) its mapping, or refused while another host's mapping holds it; a
 * later fragment gets what its first got (the default external address before it).
 */
function checkOtherEgress(
  d: Dissected,
  own: boolean,
  input: Uint8Array,
  verdict: number,
  out: Uint8Array,
  view: BindingView,
  v: string[],
): string {
  const fam = d.family as 4 | 6, ext = extOf(fam);
  const changed = !eq(input, out);
  const untouched = (why: string, want = TC_ACT_OK) => {
    if (verdict !== want || changed) {
      v.push(`other protocol ${why}: expected verdict ${want} untouched, got ${verdict}`);
    }
  };
  if (own) return untouched("from the router"), "pass";
  if (eq(d.dst, ext)) return untouched("to the external address", TC_ACT_REDIRECT), "redirect-own";
  if (d.frag === 2) {
    const rec = view.frag(d, 1);
    if (rec && rec.every((b) => b === 0)) { // its first was refused (frag.h FRAG_REFUSED)
      if (verdict !== TC_ACT_SHOT) v.push("later fragment of a refused datagram not dropped");
      return "drop";
    }
    const want = rec ?? ext;
    if (eq(want, d.src)) return untouched("later fragment whose first passed"), "pass";
    if (verdict !== TC_ACT_OK) v.push(`other protocol later fragment: verdict ${verdict}`);
    else checkAddrOnly(input, out, d, v, true, want);
    return "translated";
  }
  const holder = view.addr?.(fam, d.proto, ext, d.dst) ?? null;
  if (verdict !== TC_ACT_OK) {
    // refused while another host holds (protocol, remote); a DCCP/UDP-Lite header cut short
    // cannot take its checksum's change
    const short = csumAt6(d.proto) && d.l4 + 8 > input.length;
    if (!short && (!holder || eq(holder, d.src))) {
      v.push("other protocol refused although its (protocol, remote) is free or its own");
    }
    if (verdict !== TC_ACT_SHOT && !checkProhibited(input, out, d, v)) {
      v.push(`other protocol refused with verdict ${verdict} and no ICMP 3/13`);
    }
    return "prohibited";
  }
  if (!holder || !eq(holder, d.src)) {
    v.push("other protocol translated without a mapping of its own");
  }
  checkAddrOnly(input, out, d, v, true, ext);
  return "translated";
}

/**
 * An ICMP error leaving about another IP protocol's inbound packet: when an address-only mapping
 * of (protocol, external, the quoted source) holds the quoted destination, that destination
 * becomes the external address, and so does the outer source of an internal host's error (an
 * intact one: a bad checksum is dropped); otherwise only the router's own leaves, as it is.
 */
function checkOtherEgressError(
  d: Dissected,
  own: boolean,
  input: Uint8Array,
  verdict: number,
  out: Uint8Array,
  view: BindingView,
  v: string[],
): string {
  const fam = d.family as 4 | 6, ext = extOf(fam), n = d.otherInner!;
  const holder = view.addr?.(fam, n.proto, ext, n.src) ?? null;
  // A mapping held by the external address itself is the router's own (its tunnel, say).
  if (!holder || !eq(holder, n.dst) || eq(holder, ext)) {
    if (own && (verdict !== TC_ACT_OK || !eq(input, out))) {
      v.push(`the router's own error about another protocol: verdict ${verdict}, changed`);
    }
    if (!own && verdict !== TC_ACT_SHOT) {
      v.push(`an internal host's error about no mapping of another protocol: verdict ${verdict}`);
    }
    return own ? "pass" : "drop";
  }
  if (!errorIntact(d, input)) {
    if (verdict !== TC_ACT_SHOT) v.push("error about another protocol, bad checksum, not dropped");
    return "drop";
  }
  if (verdict !== TC_ACT_OK) {
    v.push(`error about another protocol's mapping: verdict ${verdict}`);
    return "drop";
  }
  checkChangedBytes(input, out, d, v);
  checkResiduals(input, out, d, v);
  const od = dissect(out), on = od.otherInner;
  if (!on || !eq(on.dst, ext)) v.push("the quoted destination is not the external address");
  if (!eq(od.src, own ? d.src : ext)) v.push("the outer source is not the external address");
  return "translated";
}

/**
 * Another IP protocol arriving, or an ICMP error quoting one: to the host of the mapping
 * (protocol, external, remote) when there is one (an error: about a packet from the external
 * address, intact), otherwise the router's as it is. Later fragments follow their first's record
 * (held when they come before it).
 */
function checkOtherIngress(
  d: Dissected,
  input: Uint8Array,
  verdict: number,
  out: Uint8Array,
  view: BindingView,
  v: string[],
): string {
  const fam = d.family as 4 | 6;
  const changed = !eq(input, out);
  const untouched = (why: string) => {
    if (verdict !== TC_ACT_OK || changed) {
      v.push(
        `other protocol ${why}: expected to pass untouched, got ${verdict} changed=${changed}`,
      );
    }
    return "pass";
  };
  const translated = (want: Uint8Array) => {
    if (verdict !== TC_ACT_OK) v.push(`other protocol to a mapping: verdict ${verdict}`);
    else checkAddrOnly(input, out, d, v, false, want);
    return "translated";
  };
  const n = d.otherInner;
  if (n) {
    const holder = eq(d.dst, n.src) ? view.addr?.(fam, n.proto, n.src, n.dst) ?? null : null;
    if (!holder) return untouched("error about no mapping");
    // the router's own claim (its tunnel): the error is the router's, checked or not
    if (eq(holder, n.src)) return untouched("error about the router's own");
    if (!errorIntact(d, input)) {
      if (verdict !== TC_ACT_SHOT) v.push("other protocol error with a bad checksum not dropped");
      return "drop";
    }
    const r = translated(holder);
    const on = dissect(out).otherInner;
    if (verdict === TC_ACT_OK && (!on || !eq(on.src, holder))) {
      v.push("quoted source is not the mapping's internal host");
    }
    return r;
  }
  if (d.frag === 2) {
    const rec = view.frag(d, 0);
    if (!rec) {
      if (verdict === TC_ACT_SHOT && heldable(d, input)) return "held";
      return untouched("later fragment without a record");
    }
    return eq(rec, d.dst) ? untouched("later fragment of the router's") : translated(rec);
  }
  const holder = view.addr?.(fam, d.proto, d.dst, d.src) ?? null;
  if (!holder) return untouched("without a mapping");
  if (verdict === TC_ACT_SHOT && csumAt6(d.proto) && d.l4 + 8 > input.length) return "drop";
  return translated(holder);
}

/** ICMP from inside to the external address: the router's, or a hairpinned error. */
function checkIcmpToExternal(
  d: Dissected,
  verdict: number,
  input: Uint8Array,
  out: Uint8Array,
  view: BindingView,
  v: string[],
): PacketCheck {
  const fam = d.family as 4 | 6;
  const res = (outcome: string): PacketCheck => ({ violations: v, outcome });
  const n = d.status === "ok" ? d.inner : undefined;
  const echoInner = n && (n.proto === P_ICMP || n.proto === P_ICMP6);
  const peer = n && !echoInner
    ? view.get(false, fam, keyProto(fam, n.proto), n.src, n.sport)
    : null;
  const snat = n && !echoInner ? view.get(true, fam, keyProto(fam, n.proto), n.dst, n.dport) : null;
  // A packet from a port the router's own mapping holds (its external address as the internal
  // endpoint) came from the router: the error about it is the router's to read, as it is.
  if (!peer || !snat || eq(peer.addr, extOf(fam))) {
    if (verdict !== TC_ACT_REDIRECT || !eq(input, out)) {
      v.push(
        `ICMP to the external address naming no internal host: expected to reach the router ` +
          `untouched, got verdict ${verdict} changed=${!eq(input, out)}`,
      );
    }
    return res("redirect-own");
  }
  if (!errorIntact(d, input)) {
    if (verdict !== TC_ACT_SHOT) v.push("hairpinned error with a bad checksum not dropped (REQ-3)");
    return res("drop");
  }
  // A (mutated) sender outside the LAN networks, or at its broadcast address, has no unicast
  // route, and the router's own LAN address a local one, as has the LAN's IPv6 Subnet-Router
  // anycast address (the prefix with a zero interface ID, RFC 4291 2.6.1), which Linux gives a
  // forwarding router: the FIB lookup forwards none of them, a drop.
  const a = peer.addr;
  const unicast = isInternal(a) && !(a.length === 4 && (a[3] === 0 || a[3] === 255)) &&
    !(a.length === 16 && a.subarray(8).every((b) => b === 0)) && !eq(a, routerLanOf(fam));
  if (verdict === TC_ACT_SHOT && !unicast) return res("drop");
  if (verdict !== TC_ACT_REDIRECT) v.push(`hairpinned ICMP error: verdict ${verdict}`);
  checkChangedBytes(input, out, d, v);
  checkResiduals(input, out, d, v);
  const od = dissect(out), on = od.inner;
  if (!eq(od.src, snat.addr)) {
    v.push("hairpinned error: outer source is not the reporter's mapping");
  }
  if (!eq(od.dst, peer.addr)) {
    v.push("hairpinned error: outer destination is not the embedded source (REQ-7a)");
  }
  if (!on || !sameEndpoint({ addr: on.src, port: on.sport }, peer)) {
    v.push("hairpinned error: embedded source is not the sender's internal endpoint");
  }
  if (!on || !sameEndpoint({ addr: on.dst, port: on.dport }, snat)) {
    v.push("hairpinned error: embedded destination is not the reporter's mapping");
  }
  return res("hairpin-error");
}

// ---------------------------------------------------------------------------------------------
// Map invariants

/** Sizes of the NAT's tables, for the checks. */
export interface Limits {
  bindings: number;
  ctEntries: number;
}

/** Summary of one map check. */
export interface MapCheck {
  bindings: number;
  sessions: number;
  violations: string[];
}

/** Checks the binding and session tables' invariants (see the module doc). */
export function checkMaps(nat: Nat, limits: Limits, ic: InterfaceConfig): MapCheck {
  const v: string[] = [];
  const maps = nat.nat.maps;
  const live = [...bindings(maps)];
  const ce = sessionsOf(maps); // map_ct entries and the first ones inline in the records
  const hashed = bpf.mapCount(maps.ct, CT_KEY_LAYOUT.size);
  if (live.length > limits.bindings) v.push(`${live.length} bindings`);
  if (hashed > limits.ctEntries) v.push(`map_ct has ${hashed} entries`);
  const ep = (f: number, p: number, a: Uint8Array, port: number) =>
    `${f}/${p}/${formatIp(a)}/${port}`;
  const rangesOf = (p: number) =>
    p === P_TCP ? ic.defaultRanges.tcp : p === P_UDP ? ic.defaultRanges.udp : ic.defaultRanges.icmp;
  const reply = new Map<string, Binding>();
  const internal = new Set<string>();
  const byIdx = new Set<number>();
  for (const b of live) {
    const k = ep(b.family, b.l4proto, b.extAddr, b.extPort);
    const ik = ep(b.family, b.l4proto, b.intAddr, b.intPort);
    reply.set(k, b);
    byIdx.add(b.idx);
    if (internal.has(ik)) v.push(`internal endpoint ${ik} has two bindings`);
    internal.add(ik);
    const back = findOutbound(maps, b.family, b.l4proto, b.intAddr, b.intPort);
    if (back !== b.idx) v.push(`binding ${k}: ${ik} finds record ${back}, not ${b.idx}`);
    if (formatIp(b.extAddr) !== formatIp(extOf(b.family))) {
      v.push(`binding ${k}: not an external address`);
    }
    if (!rangesOf(b.l4proto).some((r) => b.extPort >= r.start && b.extPort <= r.end)) {
      v.push(`binding ${k}: port outside the ranges`);
    }
  }
  let entries = 0;
  const mask = (1 << OB_IDX_BITS) - 1;
  const lines = bpf.mapLookupBatch(maps.outbound, 4, OUTBOUND_LINE_LAYOUT.size, 1024);
  for (const { value } of lines) {
    const w = new Uint32Array(value.slice().buffer);
    for (let i = 1; i < w.length; i++) {
      if (w[i] === OB_EMPTY || w[i] === OB_TOMB) continue;
      entries++;
      if (!byIdx.has(w[i] & mask)) v.push(`outbound entry for record ${w[i] & mask}, not live`);
    }
  }
  if (entries !== live.length) v.push(`${entries} outbound entries for ${live.length} bindings`);
  const count = bindingCountAt(maps.bindingCount, 0);
  const counted = count === null ? -1 : Number(count);
  if (counted !== live.length) v.push(`binding count ${counted}, ${live.length} live`);
  const refs = new Map<string, number>();
  const keys = new Set<string>();
  for (const { key: k, value: val } of ce) {
    const rk = ep(k.family, k.l4proto, k.extAddr, k.extPort);
    const sk = `${rk} ${formatIp(k.remoteAddr)}/${k.remotePort}`;
    if (keys.has(sk)) v.push(`session ${sk} twice (inline and in map_ct)`);
    keys.add(sk);
    const b = reply.get(rk);
    if (!b) v.push(`session ${rk} -> ${formatIp(k.remoteAddr)}:${k.remotePort} without binding`);
    else if (!eq(b.intAddr, val.intAddr) || b.intPort !== val.intPort) {
      v.push(`session ${rk}: internal endpoint differs from the binding's`);
    }
    refs.set(rk, (refs.get(rk) ?? 0) + 1);
  }
  for (const [k, b] of reply) {
    const n = refs.get(k) ?? 0;
    if (b.ref !== n) v.push(`binding ${k}: ref ${b.ref} but ${n} sessions`);
  }
  v.push(...checkHostCounts(maps.hosts, live, ic));
  return { bindings: live.length, sessions: ce.length, violations: v };
}

/**
 * `map_hosts` against the bindings: while `session_max_per_host` is on, an address's session
 * count is the sum of its bindings' references; while `binding_max_per_host` is, its binding
 * count is its bindings, the router's own aside (pings from outside bind identifiers to an
 * external address without counting them).
 */
function checkHostCounts(fd: number, live: Binding[], ic: InterfaceConfig): string[] {
  if (!ic.bindingMaxPerHost && !ic.sessionMaxPerHost) return [];
  const v: string[] = [];
  const want = new Map<string, { bindings: number; sessions: number }>();
  for (const b of live) {
    const k = `${b.family}/${formatIp(b.intAddr)}`;
    const w = want.get(k) ?? { bindings: 0, sessions: 0 };
    if (!eq(b.intAddr, extOf(b.family))) w.bindings++;
    w.sessions += b.ref;
    want.set(k, w);
  }
  const seen = new Set<string>();
  for (const { key, value } of bpf.mapEntries(fd, HOST_KEY_LAYOUT.size, HOST_COUNTS_LAYOUT.size)) {
    const h = decodeHostCounts(key, value);
    const k = `${h.family}/${formatIp(h.addr)}`;
    seen.add(k);
    const w = want.get(k) ?? { bindings: 0, sessions: 0 };
    if (ic.sessionMaxPerHost && h.sessions !== BigInt(w.sessions)) {
      v.push(`host ${k}: ${h.sessions} sessions counted, its bindings hold ${w.sessions}`);
    }
    const ext = eq(h.addr, extOf(h.family));
    if (ic.bindingMaxPerHost && !ext && h.bindings !== BigInt(w.bindings)) {
      v.push(`host ${k}: ${h.bindings} bindings counted, ${w.bindings} live`);
    }
  }
  for (const [k, w] of want) {
    if (!seen.has(k) && (ic.sessionMaxPerHost ? w.sessions : w.bindings) > 0) {
      v.push(`host ${k}: not counted, ${w.bindings} bindings with ${w.sessions} sessions`);
    }
  }
  return v;
}

/** Bindings (external ports in use) of one family and protocol. */
export function usedPorts(nat: Nat, family: 4 | 6, l4proto: number): number {
  let n = 0;
  for (const b of bindings(nat.nat.maps)) if (b.family === family && b.l4proto === l4proto) n++;
  return n;
}

/** Sum of one counter of `map_stats`. */
export function statOf(nat: Nat, name: typeof STATS[number]): bigint {
  return stat(nat.nat.maps.stats, name);
}

/** A `BindingView` reading the NAT's maps. */
export function bindingView(nat: Nat): BindingView {
  return {
    get(orig, family, l4proto, addr, port) {
      if (orig) {
        const b = findBindingOf(nat.nat.maps, family, l4proto, addr, port);
        return b ? { addr: b.extAddr, port: b.extPort } : null;
      }
      const b = findBinding(nat.nat.maps, family, l4proto, addr, port);
      return b ? { addr: b.intAddr, port: b.intPort } : null;
    },
    session(family, l4proto, ext, remote) {
      const key = encodeCtKey({
        family,
        l4proto,
        extAddr: ext.addr,
        extPort: ext.port,
        remoteAddr: remote.addr,
        remotePort: remote.port,
      });
      return findSession(nat.nat.maps, key) !== null;
    },
    frag(d, which) {
      const k = encodeFragKey({
        family: d.family,
        l4proto: d.family === 6 ? d.fragProto : d.proto,
        kind: which,
        id: d.fragId,
        src: d.src,
        dst: d.dst,
      });
      const val = bpf.mapLookup(nat.nat.maps.frag, k, FRAG_VALUE_LAYOUT.size);
      return val ? val.slice(0, d.family === 4 ? 4 : 16) : null;
    },
    addr(family, l4proto, extAddr, remoteAddr) {
      const k = encodeAddrKey({ family, l4proto, extAddr, remoteAddr });
      const val = bpf.mapLookup(nat.nat.maps.addrNat, k, ADDR_VALUE_LAYOUT.size);
      return val ? decodeAddrMapping(k, val).intAddr : null;
    },
    back(q, which) {
      const k = encodeFragKey({
        family: 6,
        l4proto: q.proto,
        kind: which,
        id: q.id,
        src: q.src,
        dst: q.dst,
      });
      const val = bpf.mapLookup(nat.nat.maps.frag, k, FRAG_VALUE_LAYOUT.size);
      return val ? val.slice(0, 16) : null;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Generation

/** One generated packet. */
export interface Gen {
  dir: "egress" | "ingress";
  kind: string;
  bytes: Uint8Array;
}

interface Learned {
  family: 4 | 6;
  proto: L4Proto;
  extPort: number;
  remote: string;
  rport: number;
}

const RING = 256;

function ring<T>(a: T[], x: T): void {
  a.push(x);
  if (a.length > RING) a.shift();
}

/** The generator's memory of what the NAT did, so ingress packets hit live mappings. */
export class FuzzState {
  learned: Learned[] = [];
  /** Egress packets as translated (IP bytes), for ICMP errors coming back. */
  egressOut: Uint8Array[] = [];
  /** Ingress packets as translated (IP bytes), for errors from internal hosts. */
  ingressOut: Uint8Array[] = [];
  /** Egress packets' IP bytes as sent, to build fragments and truncations from. */
  recent: Uint8Array[] = [];
  /** Hairpinned packets as delivered (IP bytes), for errors about them (RFC 5508 REQ-7). */
  hairpinOut: Uint8Array[] = [];

  /** Records what a run did. */
  observe(g: Gen, verdict: number, out: Uint8Array, c: PacketCheck): void {
    if (c.outcome === "hairpin" && !dissect(out).inner) ring(this.hairpinOut, out.slice(L3));
    if (c.outcome !== "translated" || verdict !== TC_ACT_OK) return;
    const d = dissect(out);
    if (d.family === 0 || d.frag === 2) return;
    const ip = out.slice(L3);
    if (g.dir === "egress") {
      ring(this.egressOut, ip);
      if (d.inner) return;
      const proto: L4Proto = d.proto === P_TCP ? "tcp" : d.proto === P_UDP ? "udp" : "icmp";
      ring(this.learned, {
        family: d.family,
        proto,
        extPort: d.sport,
        remote: formatIp(d.dst),
        rport: d.dport,
      });
    } else ring(this.ingressOut, ip);
  }
}

const TCP_FLAG_SETS = [
  0x02,
  0x12,
  0x10,
  0x18,
  0x11,
  0x19,
  0x04,
  0x14,
  0x01,
  0x03,
  0x06,
  0x07,
  0x00,
  0x3f,
  0xff,
  0xc2,
  0x29,
];

function tcpFlagsOf(x: number): PacketSpec["tcpFlags"] {
  return {
    fin: !!(x & 1),
    syn: !!(x & 2),
    rst: !!(x & 4),
    psh: !!(x & 8),
    ack: !!(x & 16),
    urg: !!(x & 32),
  };
}

function setTcpFlagsByte(frame: Uint8Array, x: number): void {
  const d = dissect(frame);
  if (d.proto === P_TCP && d.l4 + 14 <= frame.length) frame[d.l4 + 13] = x;
}

/** Recomputes the IPv4 header checksum and the L4 checksum over the bytes present. */
export function fixChecksums(b: Uint8Array): Uint8Array {
  const d = dissect(b);
  if (d.family === 4 && L3 + d.ihl <= b.length) {
    b[L3 + 10] = b[L3 + 11] = 0;
    const c = internetChecksum(b.subarray(L3, L3 + d.ihl));
    b[L3 + 10] = c >> 8;
    b[L3 + 11] = c & 0xff;
  }
  if (d.family === 0 || d.frag !== 0 || d.l4 >= b.length || d.proto < 0) return b;
  const off = d.proto === P_TCP ? 16 : d.proto === P_UDP ? 6 : d.proto === P_ICMP ||
      d.proto === P_ICMP6
    ? 2
    : -1;
  if (off < 0 || d.l4 + off + 2 > b.length) return b;
  if (d.proto === P_UDP && u16(b, d.l4 + 6) === 0) return b;
  b[d.l4 + off] = b[d.l4 + off + 1] = 0;
  const seg = b.subarray(d.l4);
  let init = 0;
  if (d.proto !== P_ICMP) {
    const ph = d.family === 4 ? new Uint8Array(12) : new Uint8Array(40);
    if (d.family === 4) {
      ph.set(d.src, 0), ph.set(d.dst, 4), ph[9] = d.proto;
      ph[10] = seg.length >> 8, ph[11] = seg.length & 0xff;
    } else {
      ph.set(d.src, 0), ph.set(d.dst, 16);
      new DataView(ph.buffer).setUint32(32, seg.length);
      ph[39] = d.proto;
    }
    init = onesComplementSum(ph);
  }
  let c = internetChecksum(seg, init);
  if (d.proto === P_UDP && c === 0) c = 0xffff;
  b[d.l4 + off] = c >> 8;
  b[d.l4 + off + 1] = c & 0xff;
  return b;
}

/** Adds IPv4 options (IHL grows; `bytes` padded to a multiple of 4, at most 40). */
export function withIpv4Options(frame: Uint8Array, opts: Uint8Array): Uint8Array {
  const n = Math.min(40, Math.ceil(opts.length / 4) * 4);
  const out = new Uint8Array(frame.length + n);
  out.set(frame.subarray(0, L3 + 20));
  out.set(opts.subarray(0, n), L3 + 20);
  out.set(frame.subarray(L3 + 20), L3 + 20 + n);
  out[L3] = 0x40 | (5 + n / 4);
  const tot = u16(frame, L3 + 2) + n;
  out[L3 + 2] = tot >> 8;
  out[L3 + 3] = tot & 0xff;
  return out;
}

/** One IPv6 extension header to insert: type (0, 43, 60, 44) and body length in 8-byte units. */
export interface ExtHdr {
  type: number;
  len8?: number;
  /** Fragment header: offset field (8-byte units) and M bit. */
  fragOff?: number;
  more?: boolean;
  /** Override the next-header byte (loops, lies). */
  next?: number;
}

/** Inserts IPv6 extension headers after the fixed header, before the existing payload. */
export function withIpv6Ext(frame: Uint8Array, exts: ExtHdr[], fragId = 0x1234): Uint8Array {
  let next = frame[L3 + 6];
  const hdrs: Uint8Array[] = [];
  for (let i = exts.length - 1; i >= 0; i--) {
    const e = exts[i];
    let h: Uint8Array;
    if (e.type === 44) {
      h = new Uint8Array(8);
      const v = new DataView(h.buffer);
      v.setUint16(2, ((e.fragOff ?? 0) << 3) | (e.more ? 1 : 0));
      v.setUint32(4, fragId);
    } else {
      const len8 = e.len8 ?? 0;
      h = new Uint8Array((len8 + 1) * 8);
      h[1] = len8;
      h[2] = 1; // PadN filling the header
      h[3] = h.length - 4;
    }
    h[0] = e.next ?? next;
    hdrs.unshift(h);
    next = e.type;
  }
  const extLen = hdrs.reduce((s, h) => s + h.length, 0);
  const out = new Uint8Array(frame.length + extLen);
  out.set(frame.subarray(0, L3 + 40));
  out[L3 + 6] = next;
  const plen = u16(frame, L3 + 4) + extLen;
  out[L3 + 4] = (plen >> 8) & 0xff;
  out[L3 + 5] = plen & 0xff;
  let o = L3 + 40;
  for (const h of hdrs) out.set(h, o), o += h.length;
  out.set(frame.subarray(L3 + 40), o);
  return out;
}

/** The generator: `next()` returns the next packet to run. */
export class Generator {
  constructor(readonly rng: Rng, readonly st: FuzzState) {}

  private fam(): 4 | 6 {
    return this.rng.chance(0.55) ? 4 : 6;
  }

  private intHost(f: 4 | 6): string {
    if (this.rng.chance(0.04)) return this.rng.pick(f === 4 ? ODD_SRC4 : ODD_SRC6);
    return this.rng.pick(f === 4 ? INT4 : INT6);
  }

  private remote(f: 4 | 6): string {
    if (this.rng.chance(0.03)) return this.rng.pick(f === 4 ? ODD_DST4 : ODD_DST6);
    return this.rng.pick(f === 4 ? REM4 : REM6);
  }

  private payload(): Uint8Array {
    const r = this.rng;
    return r.bytes(r.chance(0.7) ? r.int(48) : r.int(600));
  }

  private proto(): L4Proto {
    return this.rng.pick(["tcp", "udp", "udp", "icmp"] as const);
  }

  /** A valid packet of `proto` between the endpoints. */
  private flow(
    f: 4 | 6,
    proto: L4Proto,
    src: string,
    sport: number,
    dst: string,
    dport: number,
    ingress: boolean,
  ): PacketSpec {
    const r = this.rng;
    const spec: PacketSpec = {
      family: f,
      src,
      dst,
      proto,
      sport,
      dport,
      payload: this.payload(),
      ipId: r.int(65536),
      ttl: r.pick([64, 1, 255, 0]),
      dontFragment: r.chance(0.5),
      seq: r.u32(),
      ackNum: r.u32(),
    };
    if (proto === "tcp") spec.tcpFlags = tcpFlagsOf(r.pick(TCP_FLAG_SETS));
    if (proto === "udp" && r.chance(0.08)) spec.udpZeroChecksum = true;
    if (proto === "icmp") {
      const echo = ingress ? (f === 4 ? 0 : 129) : (f === 4 ? 8 : 128);
      // timestamp queries (13/14) are among the others, translated as echo's
      spec.icmpType = r.chance(0.9) ? echo : r.pick(
        f === 4 ? [0, 8, 13, 14, 17, 5, 9, 10, 30, 255] : [128, 129, 130, 133, 135, 136, 143, 200],
      );
      spec.icmpId = ingress ? dport : sport;
      spec.icmpSeq = r.int(65536);
    }
    return spec;
  }

  private egressFlow(): Uint8Array {
    const r = this.rng, f = this.fam();
    const proto = this.proto();
    return buildPacket(
      this.flow(
        f,
        proto,
        this.intHost(f),
        r.pick(INT_PORTS),
        this.remote(f),
        r.pick(REM_PORTS),
        false,
      ),
    );
  }

  private learnedOf(f?: 4 | 6): Learned | undefined {
    const l = this.st.learned.filter((x) => f === undefined || x.family === f);
    return l.length ? this.rng.pick(l) : undefined;
  }

  private ingressReply(): Uint8Array {
    const r = this.rng;
    const l = this.learnedOf();
    if (!l) return this.ingressRandom();
    const eif = r.chance(0.3);
    const src = eif ? this.remote(l.family) : l.remote;
    const spec = this.flow(
      l.family,
      l.proto,
      src,
      eif ? r.pick(REM_PORTS) : l.rport,
      l.family === 4 ? EXT4 : EXT6,
      l.extPort,
      true,
    );
    return buildPacket(spec);
  }

  private ingressRandom(): Uint8Array {
    const r = this.rng, f = this.fam();
    const port = r.chance(0.6)
      ? r.range(20000, 29999)
      : r.pick([22, 53, 2222, 19999, 30000, 65535]);
    const dst = r.chance(0.9) ? (f === 4 ? EXT4 : EXT6) : this.remote(f);
    return buildPacket(
      this.flow(f, this.proto(), this.remote(f), r.pick(REM_PORTS), dst, port, true),
    );
  }

  private hairpin(): Uint8Array {
    const r = this.rng;
    const l = this.learnedOf();
    const f = l?.family ?? this.fam();
    const proto = l?.proto ?? this.proto();
    const port = l && r.chance(0.8) ? l.extPort : r.pick([22, 2222, 25000]);
    const spec = this.flow(
      f,
      proto,
      this.intHost(f),
      r.pick(INT_PORTS),
      f === 4 ? EXT4 : EXT6,
      port,
      false,
    );
    if (proto === "icmp") spec.icmpId = port;
    return buildPacket(spec);
  }

  private own(): Uint8Array {
    const r = this.rng, f = this.fam();
    if (r.chance(0.3) && this.st.ingressOut.length) {
      // the router's own error about an inbound translated packet
      const inner = r.pick(this.st.ingressOut).slice();
      const innerF = (inner[0] >> 4) as 4 | 6;
      if (innerF === 4 || innerF === 6) {
        return buildIcmpError(
          {
            family: innerF,
            src: innerF === 4 ? EXT4 : EXT6,
            dst: formatIp(innerF === 4 ? inner.slice(12, 16) : inner.slice(8, 24)),
          },
          inner.slice(
            0,
            r.chance(0.5) ? inner.length : r.range(innerF === 4 ? 28 : 48, inner.length),
          ),
        );
      }
    }
    return buildPacket(
      this.flow(
        f,
        this.proto(),
        f === 4 ? EXT4 : EXT6,
        r.pick(INT_PORTS),
        this.remote(f),
        r.pick(REM_PORTS),
        false,
      ),
    );
  }

  /** An ICMP error: egress from an internal host, or ingress from a remote router. */
  private icmpError(dir: "egress" | "ingress"): Uint8Array {
    const r = this.rng;
    // from inside to the external address: about a hairpinned packet (or anything else)
    const toExt = dir === "egress" && r.chance(0.2);
    const pool = toExt && this.st.hairpinOut.length && r.chance(0.8)
      ? this.st.hairpinOut
      : dir === "egress"
      ? this.st.ingressOut
      : this.st.egressOut;
    let inner: Uint8Array;
    let f: 4 | 6;
    if (pool.length && r.chance(0.85)) {
      inner = r.pick(pool).slice();
      f = (inner[0] >> 4) === 6 ? 6 : 4;
    } else {
      f = this.fam();
      const spec = dir === "egress"
        ? this.flow(
          f,
          this.proto(),
          this.remote(f),
          r.pick(REM_PORTS),
          this.intHost(f),
          r.pick(INT_PORTS),
          true,
        )
        : this.flow(
          f,
          this.proto(),
          f === 4 ? EXT4 : EXT6,
          r.range(20000, 29999),
          this.remote(f),
          r.pick(REM_PORTS),
          false,
        );
      inner = buildPacket({ ...spec, noEth: true });
    }
    let src: string;
    if (dir === "egress") {
      const off = f === 4 ? 16 : 24, n = f === 4 ? 4 : 16;
      src = inner.length >= off + n && inner[0] >> 4 === f
        ? formatIp(inner.slice(off, off + n))
        : this.intHost(f);
    } else src = this.remote(f);
    // nested: an error about an error
    if (r.chance(0.08)) {
      inner = buildIcmpError(
        { family: f, src: this.remote(f), dst: f === 4 ? EXT4 : EXT6, noEth: true },
        inner,
      );
    }
    // truncated, or a fragment embedded
    const min = f === 4 ? 28 : 48;
    if (r.chance(0.3)) inner = inner.slice(0, r.int(inner.length + 1));
    else if (inner.length > min && r.chance(0.5)) {
      inner = inner.slice(0, r.range(min, inner.length));
    }
    if (r.chance(0.06) && f === 4 && inner.length >= 20) {
      inner[6] |= r.chance(0.5) ? 0x20 : 0x00;
      inner[7] = r.int(256);
    }
    const types = f === 4
      ? [[3, 3], [3, 4], [3, 1], [3, 13], [11, 0], [12, 0], [4, 0], [5, 1]]
      : [[1, 4], [1, 0], [2, 0], [3, 0], [4, 0], [4, 1]];
    const [type, code] = r.pick(types);
    const dst = dir === "egress" && !toExt ? this.remote(f) : (f === 4 ? EXT4 : EXT6);
    return buildIcmpError({
      family: f,
      src,
      dst,
      icmpType: type,
      icmpCode: code,
      mtu: 1280,
      moreFragments: r.chance(0.03),
    }, inner);
  }

  private fragment(dir: "egress" | "ingress"): Uint8Array {
    const r = this.rng, f = this.fam();
    let spec: PacketSpec;
    const l = this.learnedOf(f);
    if (dir === "egress" && r.chance(0.2)) {
      // to the external address: hairpinned to a mapping, or the router's own (frag.h FRAG_TURN)
      spec = this.flow(
        f,
        l?.proto ?? this.proto(),
        this.intHost(f),
        r.pick(INT_PORTS),
        f === 4 ? EXT4 : EXT6,
        l && r.chance(0.7) ? l.extPort : 9999,
        false,
      );
    } else if (dir === "egress") {
      spec = this.flow(
        f,
        this.proto(),
        this.intHost(f),
        r.pick(INT_PORTS),
        this.remote(f),
        r.pick(REM_PORTS),
        false,
      );
    } else {
      spec = this.flow(
        f,
        l?.proto ?? this.proto(),
        l?.remote ?? this.remote(f),
        l?.rport ?? 53,
        f === 4 ? EXT4 : EXT6,
        l?.extPort ?? 25000,
        true,
      );
    }
    spec.ipId = r.pick([0x1234, 0x4321, r.int(65536)]);
    const first = r.chance(0.5);
    spec.moreFragments = first ? true : r.chance(0.5);
    spec.fragOffset = first ? 0 : 8 * r.pick([1, 2, 3, 185, 8191, r.range(1, 8191)]);
    if (f === 6 && !first) spec.fragOffset = Math.min(spec.fragOffset, 8 * 8191);
    const b = buildPacket(spec);
    if (f === 6 && r.chance(0.2)) b[L3 + 40 + 3] |= 0x06; // reserved bits
    return b;
  }

  private other(dir: "egress" | "ingress"): Uint8Array {
    const r = this.rng, f = this.fam();
    const src = dir === "egress" ? this.intHost(f) : this.remote(f);
    const dst = dir === "egress" ? this.remote(f) : (f === 4 ? EXT4 : EXT6);
    const b = buildPacket(this.flow(f, "udp", src, 1000, dst, 2000, dir === "ingress"));
    const k = r.int(4);
    if (k === 0) {
      b[12] = r.pick([0x08, 0x81, 0x88, 0x00]);
      b[13] = r.pick([0x06, 0x00, 0xa8, 0x64, 0x35]);
    } else if (k === 1) {
      b[f === 4 ? L3 + 9 : L3 + 6] = r.pick([
        0,
        2,
        4,
        41,
        47,
        50,
        51,
        59,
        103,
        132,
        136,
        253,
        255,
        43,
        44,
        60,
      ]);
    } else if (k === 2) {
      b[12] = f === 4 ? 0x86 : 0x08; // ethertype of the other family
      b[13] = f === 4 ? 0xdd : 0x00;
    } else {
      b[L3] = (r.int(16) << 4) | (b[L3] & 15);
    }
    return r.chance(0.5) ? fixChecksums(b) : b;
  }

  private v6ext(dir: "egress" | "ingress"): Uint8Array {
    const r = this.rng;
    const l = this.learnedOf(6);
    const spec = dir === "egress"
      ? this.flow(
        6,
        this.proto(),
        this.intHost(6),
        r.pick(INT_PORTS),
        this.remote(6),
        r.pick(REM_PORTS),
        false,
      )
      : this.flow(
        6,
        l?.proto ?? "udp",
        l?.remote ?? this.remote(6),
        l?.rport ?? 53,
        EXT6,
        l?.extPort ?? 25000,
        true,
      );
    const n = r.pick([1, 2, 3, 4, 5, 6, 7, 10, 30]);
    const exts: ExtHdr[] = [];
    for (let i = 0; i < n; i++) {
      const type = r.pick([0, 43, 60, 60, 44]);
      exts.push({
        type,
        len8: r.chance(0.8) ? r.int(3) : r.pick([31, 63, 255]),
        fragOff: r.chance(0.7) ? 0 : r.int(8192),
        more: r.chance(0.3),
      });
    }
    if (r.chance(0.15)) exts[r.int(n)].next = r.pick([0, 43, 60, 44, 59]); // loop or lie
    let b = withIpv6Ext(buildPacket(spec), exts, r.u32());
    if (r.chance(0.2)) b = b.slice(0, r.range(L3 + 40, b.length));
    return b;
  }

  private v4opt(dir: "egress" | "ingress"): Uint8Array {
    const r = this.rng;
    const l = this.learnedOf(4);
    const spec = dir === "egress"
      ? this.flow(
        4,
        this.proto(),
        this.intHost(4),
        r.pick(INT_PORTS),
        this.remote(4),
        r.pick(REM_PORTS),
        false,
      )
      : this.flow(
        4,
        l?.proto ?? "udp",
        l?.remote ?? this.remote(4),
        l?.rport ?? 53,
        EXT4,
        l?.extPort ?? 25000,
        true,
      );
    const opts = r.chance(0.5)
      ? r.bytes(r.range(1, 40))
      : new Uint8Array([7, 11, 4, ...new Uint8Array(8), 1]);
    const b = withIpv4Options(buildPacket(spec), opts);
    return r.chance(0.8) ? fixChecksums(b) : b;
  }

  /** Applies 1-3 random mutations; checksums fixed afterwards half of the time. */
  mutate(b: Uint8Array): Uint8Array {
    const r = this.rng;
    let x = b.slice();
    const n = r.range(1, 3);
    for (let i = 0; i < n; i++) {
      const k = r.weighted([3, 4, 1, 1, 1, 1, 1, 1]);
      if (k === 0) x = x.slice(0, r.range(L3, Math.max(L3, x.length - 1)));
      else if (k === 1) {
        const flips = r.range(1, 3);
        for (let j = 0; j < flips; j++) {
          const at = r.chance(0.8) ? r.int(Math.min(x.length, 100)) : r.int(x.length);
          x[at] ^= r.range(1, 255);
        }
      } else if (k === 2 && x.length > L3) x[L3] = (x[L3] & 0xf0) | r.int(16);
      else if (k === 3 && x.length > L3 + 4) {
        const t = r.pick([0, 1, 20, 40, 0xffff, r.int(65536)]);
        x[L3 + 2 + ((x[L3] >> 4) === 6 ? 2 : 0)] = t >> 8;
        x[L3 + 3 + ((x[L3] >> 4) === 6 ? 2 : 0)] = t & 0xff;
      } else if (k === 4) x = new Uint8Array([...x, ...r.bytes(r.range(1, 32))]);
      else if (k === 5) setTcpFlagsByte(x, r.int(256));
      else if (k === 6 && x.length > L3 + 20) {
        const d = dissect(x);
        if (d.family === 4) x[L3 + 6] = r.int(256), x[L3 + 7] = r.int(256);
      } else if (k === 7 && x.length > L3 + 10) {
        const d = dissect(x);
        if (d.proto === P_UDP && d.l4 + 8 <= x.length) x[d.l4 + 6] = x[d.l4 + 7] = 0;
      }
    }
    return r.chance(0.5) ? fixChecksums(x) : x;
  }

  /** The next packet. */
  next(): Gen {
    const r = this.rng;
    const kinds = [
      ["egress", "flow", 22],
      ["egress", "hairpin", 3],
      ["egress", "own", 3],
      ["egress", "icmp-error", 5],
      ["egress", "fragment", 3],
      ["egress", "other", 2],
      ["egress", "v6ext", 3],
      ["egress", "v4opt", 2],
      ["ingress", "reply", 20],
      ["ingress", "random", 6],
      ["ingress", "icmp-error", 6],
      ["ingress", "fragment", 3],
      ["ingress", "other", 2],
      ["ingress", "v6ext", 3],
      ["ingress", "v4opt", 2],
    ] as const;
    const [dir, kind] = kinds[r.weighted(kinds.map((k) => k[2]))];
    let b: Uint8Array;
    switch (kind) {
      case "flow":
        b = this.egressFlow();
        break;
      case "hairpin":
        b = this.hairpin();
        break;
      case "own":
        b = this.own();
        break;
      case "icmp-error":
        b = this.icmpError(dir);
        break;
      case "fragment":
        b = this.fragment(dir);
        break;
      case "other":
        b = this.other(dir);
        break;
      case "v6ext":
        b = this.v6ext(dir);
        break;
      case "v4opt":
        b = this.v4opt(dir);
        break;
      case "reply":
        b = this.ingressReply();
        break;
      default:
        b = this.ingressRandom();
    }
    const mutated = r.chance(0.3);
    if (mutated) b = this.mutate(b);
    return { dir, kind: mutated ? `${kind}+mut` : kind, bytes: b };
  }
}

// ---------------------------------------------------------------------------------------------
// Running

/**
 * The per-host limits on but never reached: the programs keep the counts per internal address,
 * and checkMaps checks them against the bindings (odd fuzz seeds, the race tests).
 */
export const PER_HOST_COUNTED: Partial<InterfaceConfig> = {
  bindingMaxPerHost: 1 << 20,
  sessionMaxPerHost: 2 ** 31,
};

/** The NAT configuration of fuzz runs: NAT44 + NAT66, long timeouts (nothing expires). */
export function fuzzConfig(o: Partial<InterfaceConfig> = {}): InterfaceConfig {
  const day = 86_400_000;
  return testInterfaceConfig({
    nat66: true,
    allowInboundIcmpx: true, // pings from outside may bind identifiers too
    timeouts: {
      fragment: day,
      icmpDefault: day,
      udpMin: day,
      udpDefault: day,
      tcpTrans: day,
      tcpEst: day,
      tcpClosing: day,
      other: day,
    },
    defaultRanges: ranges([{ start: 20000, end: 29999 }], [{ start: 20000, end: 29999 }], [{
      start: 0,
      end: 65535,
    }]),
    ...o,
  });
}

/**
 * Datapath bugs found by this fuzzer and not fixed yet, each with a failing reproducer
 * (`tests/fuzz_repro_*.ts`, not part of the suite). Their violations are counted apart so the
 * suite stays green; `EINAT_FUZZ_STRICT=1` (or `strict`) turns them into failures. Remove an
 * entry when its bug is fixed.
 */
export const KNOWN_BUGS: {
  id: string;
  repro: string;
  what: string;
  match(v: Violation): boolean;
}[] = [
  // Empty: every bug the fuzzer found is fixed and has a regression test
  // (tests/regress_*_test.ts).
];

function knownBug(v: Violation): string | undefined {
  return KNOWN_BUGS.find((b) => b.match(v))?.id;
}

/** One violation with what is needed to replay it. */
export interface Violation {
  index: number;
  dir: "egress" | "ingress";
  kind: string;
  outcome: string;
  verdict: number;
  messages: string[];
  input: string;
  output: string;
}

/** What a run found. */
export interface FuzzReport {
  seed: number;
  packets: number;
  kernelRejected: number;
  outcomes: Record<string, number>;
  leaks: Record<string, number>;
  leakExample: Record<string, string>;
  violations: Violation[];
  /** Violations matching a known bug (`KNOWN_BUGS`), by bug id, with one example each. */
  known: Record<string, number>;
  knownExample: Record<string, Violation>;
  mapChecks: number;
  maxBindings: number;
  maxSessions: number;
  stats: Record<string, string>;
  /** Packets run through each embedded object (epochs alternate between them). */
  objects: Record<string, number>;
  ms: number;
}

/**
 * Frames BPF_PROG_TEST_RUN refuses (EINVAL) before the program runs: shorter than Ethernet,
 * IPv4 ethertype with less than an IPv4 header, IPv6 ethertype with less than an IPv6 header,
 * or longer than what fits a page with its head- and tailroom.
 */
export function kernelRefuses(b: Uint8Array): boolean {
  if (b.length < L3 || b.length > 3500) return true;
  const et = u16(b, 12);
  return (et === 0x0800 && b.length < L3 + 20) || (et === 0x86dd && b.length < L3 + 40);
}

/** Options of `runFuzz`. */
export interface FuzzOptions {
  seed: number;
  count: number;
  /** Check the map invariants every this many packets (and at the end). */
  checkEvery?: number;
  /** Start from a fresh NAT every this many packets (keeps tables and dumps small). */
  epoch?: number;
  /** Count known bugs (`KNOWN_BUGS`) as violations too. */
  strict?: boolean;
  /** Stop after this many violations. */
  maxViolations?: number;
  /** Progress lines. */
  log?: (line: string) => void;
  /** `session_counters` of the NAT (0 or absent: off): the counting paths run too. */
  sessionCounters?: number;
}

/** errno of a test run that left a CHECKSUM_COMPLETE skb->csum wrong. */
const EBADMSG = 74;

/**
 * A refusal's ICMP 3/13 is built over the packet (bpf/lib/icmp_reply.h); when that changes the
 * length, the kernel turns the skb to CHECKSUM_NONE (bpf_skb_change_tail), which is right, but a
 * test run checks skb->csum whatever ip_summed says. The packet is run again without the flag
 * (a refusal changes no state): the run, when it gave a resized ICMP 3/13 (1/1 for IPv6).
 */
function resizedRefusal(
  fd: number,
  input: Uint8Array,
): { retval: number; bytes: Uint8Array } | null {
  const t = bpf.testRun(fd, input, { dataOutSize: input.length + 256 });
  const b = t.dataOut;
  if (b.length === input.length || b.length < L3 + 48) return null;
  const v4 = b[L3] >> 4 === 4;
  const icmp = v4
    ? b[L3 + 9] === P_ICMP && b[L3 + 20] === 3 && b[L3 + 21] === 13
    : b[L3 + 6] === P_ICMP6 && b[L3 + 40] === 1 && b[L3 + 41] === 1;
  return icmp ? { retval: t.retval, bytes: b } : null;
}

/**
 * What a violating packet does when run once more, right after (a rare one that does not repeat
 * is the environment's, a FIB lookup say): its verdict and the counters that moved (the drop
 * reason among them).
 */
export function replayNote(
  nat: Nat,
  fd: number,
  input: Uint8Array,
  checksumComplete: boolean,
): string {
  const before = STATS.map((s) => statOf(nat, s));
  let verdict: string;
  try {
    verdict = String(
      bpf.testRun(fd, input, { dataOutSize: input.length + 256, checksumComplete }).retval,
    );
  } catch (e) {
    verdict = `failed (${e})`;
  }
  const moved = STATS.flatMap((s, k) => {
    const d = statOf(nat, s) - before[k];
    return d ? [`${s} +${d}`] : [];
  });
  return `replayed: verdict ${verdict}, counters ${moved.join(", ") || "none"}`;
}

/**
 * The new IDs the datapath gave translated IPv4 fragments (bpf/lib/ipid.h), by their
 * datagram's (source, destination, protocol, ID) as they left the LAN: every fragment of one
 * datagram must leave with one ID. Records younger than the datapath keeps them (30 s), of one
 * loaded object (the maps are its own), fewer than its LRU holds.
 */
class FragmentIds {
  #ids = new Map<string, { id: number; at: number }>();

  /** A violation when `out`, translated from the fragment `input`, has another ID than its kin. */
  check(input: Uint8Array, out: Uint8Array, outcome: string): string | null {
    if (outcome !== "translated" && outcome !== "hairpin") return null;
    const d = dissect(input);
    if (d.family !== 4 || d.frag === 0 || out.length < L3 + 20) return null;
    const key = `${hex(d.src)} ${hex(d.dst)} ${d.proto} ${hex(d.fragId)}`;
    const id = u16(out, L3 + 4), now = performance.now(), was = this.#ids.get(key);
    if (was && now - was.at < 25_000) {
      return was.id === id
        ? null
        : `fragment left with ID ${id}, its datagram's others with ${was.id}`;
    }
    if (this.#ids.size >= 12_000) this.#ids.clear(); // the LRU (16,384) may forget them
    this.#ids.set(key, { id, at: now });
    return null;
  }
}

/** Runs `count` generated packets through a fresh NAT and checks every one. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  // the per-host counts on with odd seeds: the objects without them (the default) with even ones
  const ic = fuzzConfig({
    sessionCounters: o.sessionCounters ?? 0,
    ...(o.seed % 2 ? PER_HOST_COUNTED : {}),
  });
  const limits: Limits = { bindings: ic.bindingMaxRecords, ctEntries: ic.ctMaxRecords };
  const checkEvery = o.checkEvery ?? 2500;
  const epoch = o.epoch ?? 100_000;
  const maxV = o.maxViolations ?? 20;
  const rng = new Rng(o.seed);
  const rep: FuzzReport = {
    seed: o.seed,
    packets: 0,
    kernelRejected: 0,
    outcomes: {},
    leaks: {},
    leakExample: {},
    violations: [],
    known: {},
    knownExample: {},
    mapChecks: 0,
    maxBindings: 0,
    maxSessions: 0,
    stats: {},
    objects: {},
    ms: 0,
  };
  const statTotals = new Map<string, bigint>();
  const record = (v: Violation) => {
    const bug = o.strict ? undefined : knownBug(v);
    if (!bug) {
      rep.violations.push(v);
      return;
    }
    rep.known[bug] = (rep.known[bug] ?? 0) + 1;
    rep.knownExample[bug] ??= v;
  };
  let nat: Nat | null = null;
  let csum: CsumMode = "inline";
  let lastNoPort = 0n;
  let st = new FuzzState();
  let gen = new Generator(rng, st);
  let fragIds = new FragmentIds();
  const finishEpoch = (n: Nat) => {
    const m = checkMaps(n, limits, ic);
    rep.mapChecks++;
    rep.maxBindings = Math.max(rep.maxBindings, m.bindings);
    rep.maxSessions = Math.max(rep.maxSessions, m.sessions);
    for (
      const s of [
        "drop_binding_full",
        "drop_ct_full",
        "drop_host_full",
        "drop_host_ct_full",
      ] as const
    ) {
      const x = statOf(n, s);
      if (x) m.violations.push(`${s} = ${x} with tables far from full`);
    }
    for (const msg of m.violations.slice(0, 10)) {
      record({
        index: rep.packets,
        dir: "egress",
        kind: "map-invariant",
        outcome: "map",
        verdict: -1,
        messages: [msg],
        input: "",
        output: "",
      });
    }
  };
  try {
    for (let i = 0; i < o.count && rep.violations.length < maxV; i++) {
      if (!nat || (i > 0 && i % epoch === 0)) {
        if (nat) {
          finishEpoch(nat);
          for (const s of STATS) statTotals.set(s, (statTotals.get(s) ?? 0n) + statOf(nat, s));
          nat.close();
          nat = null;
        }
        // Epochs alternate between the inline-checksum object and the helpers one.
        csum = Math.floor(i / epoch) % 2 ? "helpers" : "inline";
        nat = await loadTestNat(ic, EXT_CIDRS, { csum });
        lastNoPort = 0n;
        st = new FuzzState();
        gen = new Generator(rng, st);
        fragIds = new FragmentIds();
      }
      const view = bindingView(nat);
      const g = gen.next();
      rep.packets++;
      rep.objects[csum] = (rep.objects[csum] ?? 0) + 1;
      let r: { retval: number; bytes: Uint8Array };
      // Every other packet comes as a CHECKSUM_COMPLETE skb, as from many NICs: the kernel
      // then fails the run with EBADMSG if the program left skb->csum out of step.
      const checksumComplete = (i & 1) === 1;
      const fd = g.dir === "egress" ? nat.nat.egressFd : nat.nat.ingressFd;
      try {
        const t = bpf.testRun(fd, g.bytes, { dataOutSize: g.bytes.length + 256, checksumComplete });
        r = { retval: t.retval, bytes: t.dataOut };
      } catch (e) {
        const badSum = e instanceof bpf.BpfError && e.errno === EBADMSG;
        const resized = badSum ? resizedRefusal(fd, g.bytes) : null;
        if (resized) {
          r = resized;
        } else if (badSum) {
          record({
            index: i,
            dir: g.dir,
            kind: g.kind,
            outcome: "csum",
            verdict: -1,
            messages: ["CHECKSUM_COMPLETE skb->csum left out of step with the bytes (EBADMSG)"],
            input: hex(g.bytes),
            output: "",
          });
          continue;
        } else if (kernelRefuses(g.bytes)) {
          rep.kernelRejected++;
          continue;
        } else {
          throw new Error(
            `test run failed for ${g.dir} ${g.kind} len ${g.bytes.length}: ${hex(g.bytes)}: ${e}`,
          );
        }
      }
      const noPortBefore = lastNoPort;
      view.refusedNoPort = () => {
        lastNoPort = statOf(nat!, "drop_no_port");
        return lastNoPort > noPortBefore;
      };
      const c = checkPacket(g.dir, g.bytes, r.retval, r.bytes, view);
      if (g.dir === "egress") {
        const v = fragIds.check(g.bytes, r.bytes, c.outcome);
        if (v) c.violations.push(v);
      }
      const key = `${g.dir}:${c.outcome}`;
      rep.outcomes[key] = (rep.outcomes[key] ?? 0) + 1;
      if (c.leak) {
        rep.leaks[c.leak] = (rep.leaks[c.leak] ?? 0) + 1;
        rep.leakExample[c.leak] ??= hex(g.bytes);
      }
      if (g.dir === "egress" && (c.outcome === "prohibited" || c.outcome === "drop")) {
        const np = statOf(nat, "drop_no_port");
        if (np > noPortBefore) {
          lastNoPort = np;
          const d = dissect(g.bytes);
          const proto = keyProto(d.family as 4 | 6, d.proto);
          const used = usedPorts(nat, d.family as 4 | 6, proto);
          const rs = proto === P_TCP
            ? ic.defaultRanges.tcp
            : proto === P_UDP
            ? ic.defaultRanges.udp
            : ic.defaultRanges.icmp;
          const size = rs.reduce((n, x) => n + x.end - x.start + 1, 0);
          if (used < size) {
            c.violations.push(
              `refused for want of a port (drop_no_port) with ${used} of ${size} ports in use`,
            );
          }
        }
      }
      if (c.violations.length) {
        record({
          index: i,
          dir: g.dir,
          kind: g.kind,
          outcome: c.outcome,
          verdict: r.retval,
          messages: [...c.violations, replayNote(nat, fd, g.bytes, checksumComplete)],
          input: hex(g.bytes),
          output: hex(r.bytes),
        });
      }
      st.observe(g, r.retval, r.bytes, c);
      if ((i + 1) % checkEvery === 0) {
        finishEpoch(nat);
        o.log?.(
          `seed ${o.seed}: ${i + 1} packets, ${rep.violations.length} violations, ` +
            `${Math.round(performance.now() - t0)} ms`,
        );
      }
    }
    if (nat) {
      finishEpoch(nat);
      for (const s of STATS) statTotals.set(s, (statTotals.get(s) ?? 0n) + statOf(nat, s));
    }
  } finally {
    nat?.close();
  }
  for (const [k, v] of statTotals) if (v) rep.stats[k] = v.toString();
  rep.ms = Math.round(performance.now() - t0);
  return rep;
}

/**
 * Environment knobs: `EINAT_FUZZ_SEED` (a number, or "random"), `EINAT_FUZZ_COUNT` (packets),
 * `EINAT_FUZZ_STRICT=1` (known bugs and leak classes fail too).
 */
export function fuzzEnv(
  defaultSeed: number,
  defaultCount: number,
): { seed: number; count: number; strict: boolean } {
  const s = Deno.env.get("EINAT_FUZZ_SEED");
  const c = Deno.env.get("EINAT_FUZZ_COUNT");
  const seed = s === undefined || s === ""
    ? defaultSeed
    : s === "random"
    ? crypto.getRandomValues(new Uint32Array(1))[0]
    : Number(s) >>> 0;
  return {
    seed,
    count: c ? Math.max(1, Number(c) | 0) : defaultCount,
    strict: Deno.env.get("EINAT_FUZZ_STRICT") === "1",
  };
}
