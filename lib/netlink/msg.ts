/**
 * Pure netlink (rtnetlink) message building and parsing: `nlmsghdr`, attributes (4-byte
 * aligned), addresses (`ifaddrmsg`), links (`ifinfomsg`), FIB rules (`fib_rule_hdr`), routes
 * (`rtmsg`) and `NLMSG_ERROR`/`NLMSG_DONE`. No FFI. Integers are in host byte order, addresses
 * are raw network-order bytes (4 or 16).
 *
 * Parsers reject malformed or truncated input by throwing {@link NetlinkParseError} (and only
 * that); they never read past the given bytes.
 * @module
 */

// ---------------------------------------------------------------------------------------------
// Constants

/** Address families (`AF_*`). */
export const AF_UNSPEC = 0;
/** `AF_INET`. */
export const AF_INET = 2;
/** `AF_BRIDGE`: bridge port link messages use it. */
export const AF_BRIDGE = 7;
/** `AF_INET6`. */
export const AF_INET6 = 10;

/** Netlink control message types. */
export const NLMSG_NOOP = 1;
/** Error or ACK (`error` 0). */
export const NLMSG_ERROR = 2;
/** End of a multipart (dump) reply. */
export const NLMSG_DONE = 3;
/** Data lost (unused by the kernel). */
export const NLMSG_OVERRUN = 4;

/** `nlmsghdr.nlmsg_flags` bits. */
export const NLM_F = {
  REQUEST: 0x1,
  MULTI: 0x2,
  ACK: 0x4,
  ECHO: 0x8,
  DUMP_INTR: 0x10,
  DUMP_FILTERED: 0x20,
  // GET requests
  ROOT: 0x100,
  MATCH: 0x200,
  DUMP: 0x300,
  // NEW requests
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
  APPEND: 0x800,
  // ACK replies
  CAPPED: 0x100,
  ACK_TLVS: 0x200,
} as const;

/** rtnetlink message types. */
export const RTM = {
  NEWLINK: 16,
  DELLINK: 17,
  GETLINK: 18,
  NEWADDR: 20,
  DELADDR: 21,
  GETADDR: 22,
  NEWROUTE: 24,
  DELROUTE: 25,
  GETROUTE: 26,
  NEWRULE: 32,
  DELRULE: 33,
  GETRULE: 34,
  NEWTFILTER: 44,
  GETTFILTER: 46,
} as const;

/** rtnetlink multicast groups (for `NETLINK_ADD_MEMBERSHIP`). */
export const RTNLGRP = {
  LINK: 1,
  IPV4_IFADDR: 5,
  IPV4_ROUTE: 7,
  IPV4_RULE: 8,
  IPV6_IFADDR: 9,
  IPV6_ROUTE: 11,
  IPV6_RULE: 19,
} as const;

/** Interface flags (`ifinfomsg.ifi_flags`). */
export const IFF = {
  UP: 0x1,
  BROADCAST: 0x2,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  NOARP: 0x80,
  RUNNING: 0x40,
  MULTICAST: 0x1000,
  LOWER_UP: 0x10000,
  DORMANT: 0x20000,
} as const;

/** Link types (`ifinfomsg.ifi_type`, `ARPHRD_*`). */
export const ARPHRD = {
  NETROM: 0,
  ETHER: 1,
  PPP: 512,
  RAWIP: 519,
  TUNNEL: 768,
  TUNNEL6: 769,
  LOOPBACK: 772,
  SIT: 776,
  IPGRE: 778,
  IP6GRE: 823,
  NONE: 0xfffe,
  VOID: 0xffff,
} as const;

/** RFC 2863 operational states (`IFLA_OPERSTATE`). */
export const IF_OPER = {
  UNKNOWN: 0,
  NOTPRESENT: 1,
  DOWN: 2,
  LOWERLAYERDOWN: 3,
  TESTING: 4,
  DORMANT: 5,
  UP: 6,
} as const;

/** Link attributes. */
export const IFLA = {
  ADDRESS: 1,
  BROADCAST: 2,
  IFNAME: 3,
  MTU: 4,
  LINK: 5,
  MASTER: 10,
  OPERSTATE: 16,
} as const;

/** Address attributes. */
export const IFA = {
  ADDRESS: 1,
  LOCAL: 2,
  LABEL: 3,
  BROADCAST: 4,
  ANYCAST: 5,
  CACHEINFO: 6,
  MULTICAST: 7,
  FLAGS: 8,
} as const;

/** Address flags (`ifa_flags`, extended by `IFA_FLAGS`). */
export const IFA_F = {
  SECONDARY: 0x01,
  NODAD: 0x02,
  OPTIMISTIC: 0x04,
  DADFAILED: 0x08,
  HOMEADDRESS: 0x10,
  DEPRECATED: 0x20,
  TENTATIVE: 0x40,
  PERMANENT: 0x80,
  MANAGETEMPADDR: 0x100,
  NOPREFIXROUTE: 0x200,
  MCAUTOJOIN: 0x400,
  STABLE_PRIVACY: 0x800,
} as const;

/** Scopes (`RT_SCOPE_*`). */
export const RT_SCOPE = { UNIVERSE: 0, SITE: 200, LINK: 253, HOST: 254, NOWHERE: 255 } as const;

/** Reserved routing table ids (`RT_TABLE_*`). */
export const RT_TABLE = { UNSPEC: 0, DEFAULT: 253, MAIN: 254, LOCAL: 255 } as const;

/** Route types (`RTN_*`). */
export const RTN = {
  UNSPEC: 0,
  UNICAST: 1,
  LOCAL: 2,
  BROADCAST: 3,
  ANYCAST: 4,
  MULTICAST: 5,
  BLACKHOLE: 6,
  UNREACHABLE: 7,
  PROHIBIT: 8,
  THROW: 9,
  NAT: 10,
} as const;

/** Route originators (`RTPROT_*`). */
export const RTPROT = { UNSPEC: 0, REDIRECT: 1, KERNEL: 2, BOOT: 3, STATIC: 4 } as const;

/** Route attributes. */
export const RTA = {
  DST: 1,
  SRC: 2,
  IIF: 3,
  OIF: 4,
  GATEWAY: 5,
  PRIORITY: 6,
  PREFSRC: 7,
  TABLE: 15,
} as const;

/** FIB rule attributes. */
export const FRA = {
  DST: 1,
  SRC: 2,
  IIFNAME: 3,
  GOTO: 4,
  PRIORITY: 6,
  FWMARK: 10,
  FLOW: 11,
  SUPPRESS_IFGROUP: 13,
  SUPPRESS_PREFIXLEN: 14,
  TABLE: 15,
  FWMASK: 16,
  OIFNAME: 17,
  PROTOCOL: 21,
  IP_PROTO: 22,
  SPORT_RANGE: 23,
  DPORT_RANGE: 24,
} as const;

/** FIB rule actions (`FR_ACT_*`). */
export const FR_ACT = {
  UNSPEC: 0,
  TO_TBL: 1,
  GOTO: 2,
  NOP: 3,
  BLACKHOLE: 6,
  UNREACHABLE: 7,
  PROHIBIT: 8,
} as const;

/** FIB rule flags (`fib_rule_hdr.flags`). */
export const FIB_RULE = {
  PERMANENT: 0x1,
  INVERT: 0x2,
  IIF_DETACHED: 0x8,
  OIF_DETACHED: 0x10,
} as const;

/** Extended ACK attributes after an `nlmsgerr`. */
export const NLMSGERR_ATTR = { MSG: 1, OFFS: 2 } as const;

/** Size of `struct nlmsghdr`. */
export const NLMSG_HDRLEN = 16;
/** Size of `struct nlattr` / `struct rtattr`. */
export const NLA_HDRLEN = 4;
const NLA_F_NESTED = 0x8000;
const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = 0x3fff;

const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;
const RTMSG_LEN = 12;
const FIB_RULE_HDR_LEN = 12;
const NLMSGERR_LEN = 4 + NLMSG_HDRLEN;

/** Netlink integers use host byte order. */
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

// ---------------------------------------------------------------------------------------------
// Types

/** IP version of an address, route or rule. */
export type Family = 4 | 6;
/** Whether a message announces (or asks for) a new object or a deletion. */
export type Op = "new" | "del";

/** One netlink message: header fields and the payload after the 16-byte header. */
export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** The bytes after `nlmsghdr`, up to `nlmsg_len` (a view, not a copy). */
  payload: Uint8Array;
}

/** One attribute: type without the NESTED/NET_BYTEORDER bits, data without padding. */
export interface NlAttr {
  type: number;
  nested: boolean;
  netByteOrder: boolean;
  /** A view into the parsed buffer. */
  data: Uint8Array;
}

/** An attribute to encode. */
export interface AttrInput {
  type: number;
  data: Uint8Array;
}

/** An inclusive port range (FRA_SPORT_RANGE / FRA_DPORT_RANGE). */
export interface PortRange {
  start: number;
  end: number;
}

/** An interface address (RTM_NEWADDR / RTM_DELADDR). */
export interface AddrMsg {
  type: "addr";
  op: Op;
  family: Family;
  ifindex: number;
  prefixLen: number;
  /**
   * IFA_ADDRESS, or IFA_LOCAL when absent. On point-to-point links IFA_ADDRESS is the peer:
   * the interface's own address is `local ?? addr` ({@link ownAddr}).
   */
  addr: Uint8Array;
  /** IFA_LOCAL, when present. */
  local?: Uint8Array;
  /** IFA_LABEL (IPv4 only), when present. */
  label?: string;
  /** IFA_F_* bits (IFA_FLAGS when present, else `ifa_flags`). */
  flags: number;
  /** RT_SCOPE_* value. */
  scope: number;
}

/** A network interface (RTM_NEWLINK / RTM_DELLINK). */
export interface LinkMsg {
  type: "link";
  op: Op;
  /** `ifi_family`: AF_UNSPEC for plain links, AF_BRIDGE for bridge port information. */
  family: number;
  ifindex: number;
  ifname: string;
  /** IFF_* bits. */
  flags: number;
  /** IFF_UP (administratively up). */
  up: boolean;
  /** IFF_RUNNING (operationally up). */
  running: boolean;
  /** ARPHRD_* value. */
  linkType: number;
  /** IFLA_MTU, 0 when absent. */
  mtu: number;
  /** IF_OPER_* value (IFLA_OPERSTATE), IF_OPER.UNKNOWN when absent. */
  operstate: number;
  /** IFLA_ADDRESS (link-layer address), when present. */
  address?: Uint8Array;
  /** IFLA_MASTER (ifindex of the bridge/bond), when present. */
  master?: number;
}

/** What a FIB rule matches and does; input of {@link ruleRequest}. */
export interface RuleSpec {
  family: Family;
  /** FRA_PRIORITY (the `pref`); omitted lets the kernel choose on add. */
  priority?: number;
  /** Routing table (FRA_TABLE); default RT_TABLE.MAIN for FR_ACT.TO_TBL on add. */
  table?: number;
  /** FR_ACT_* value; default FR_ACT.TO_TBL on add, FR_ACT.UNSPEC (any) on delete. */
  action?: number;
  /** Input interface name (FRA_IIFNAME). */
  iifname?: string;
  /** Output interface name (FRA_OIFNAME). */
  oifname?: string;
  /** Source prefix (FRA_SRC) and its length (default: full length). */
  src?: Uint8Array;
  srcLen?: number;
  /** Destination prefix (FRA_DST) and its length (default: full length). */
  dst?: Uint8Array;
  dstLen?: number;
  /** IP protocol number (FRA_IP_PROTO), e.g. 6 for TCP. */
  ipProto?: number;
  sportRange?: PortRange;
  dportRange?: PortRange;
  fwmark?: number;
  fwmask?: number;
  tos?: number;
  /** Negate the match (`ip rule add not ...`). */
  invert?: boolean;
  /** Originator (FRA_PROTOCOL, an RTPROT_* value). */
  protocol?: number;
  /** Target priority of FR_ACT.GOTO (FRA_GOTO). */
  gotoPriority?: number;
  /** FRA_SUPPRESS_PREFIXLEN (the kernel's "unset", -1, decodes as absent). */
  suppressPrefixLen?: number;
}

/** A FIB rule (RTM_NEWRULE / RTM_DELRULE). */
export interface RuleMsg extends RuleSpec {
  type: "rule";
  op: Op;
  priority: number;
  table: number;
  action: number;
  srcLen: number;
  dstLen: number;
  tos: number;
  invert: boolean;
  /** FIB_RULE_* bits. */
  flags: number;
}

/** A route; input of {@link routeRequest}. */
export interface RouteSpec {
  family: Family;
  /** Destination prefix (RTA_DST); absent means the default route. */
  dst?: Uint8Array;
  /** Default: full length with `dst`, 0 without. */
  dstLen?: number;
  src?: Uint8Array;
  srcLen?: number;
  /** Routing table; default RT_TABLE.MAIN. */
  table?: number;
  /** RTN_* value; default RTN.UNICAST on add, RTN.UNSPEC (any) on delete. */
  routeType?: number;
  /** RT_SCOPE_* value; default derived like iproute2 does. */
  scope?: number;
  /** RTPROT_* value; default RTPROT.BOOT on add, RTPROT.UNSPEC (any) on delete. */
  protocol?: number;
  tos?: number;
  /** Output interface index (RTA_OIF). */
  oif?: number;
  gateway?: Uint8Array;
  /** Metric (RTA_PRIORITY). */
  priority?: number;
  /** Preferred source address (RTA_PREFSRC). */
  prefsrc?: Uint8Array;
}

/** A route (RTM_NEWROUTE / RTM_DELROUTE). */
export interface RouteMsg extends RouteSpec {
  type: "route";
  op: Op;
  dstLen: number;
  srcLen: number;
  table: number;
  routeType: number;
  scope: number;
  protocol: number;
  tos: number;
  /** RTM_F_* bits. */
  flags: number;
  /** Input interface index (RTA_IIF), when present. */
  iif?: number;
}

/** Any decoded rtnetlink object. */
export type RtnlMsg = AddrMsg | LinkMsg | RuleMsg | RouteMsg;

/** Decoded NLMSG_ERROR: `errno` 0 is an ACK. */
export interface ErrorMsg {
  /** Positive error code, 0 for an ACK. */
  errno: number;
  /** NLMSGERR_ATTR_MSG text, when the kernel sent one. */
  extack?: string;
  /** Sequence number of the request it answers. */
  seq: number;
}

/** Malformed or truncated netlink data. */
export class NetlinkParseError extends Error {
  /** Builds the error with `netlink: ` prefixed to `message`. */
  constructor(message: string) {
    super(`netlink: ${message}`);
    this.name = "NetlinkParseError";
  }
}

// ---------------------------------------------------------------------------------------------
// Low-level parsing

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Rounds `n` up to a multiple of 4 (NLMSG_ALIGN / NLA_ALIGN). */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Splits a datagram into messages.
 * @throws {NetlinkParseError} on a length field that is too small or runs past the buffer.
 */
export function parseMessages(buf: Uint8Array): NlMsg[] {
  const out: NlMsg[] = [];
  const dv = view(buf);
  let off = 0;
  while (off < buf.length) {
    const rest = buf.length - off;
    if (rest < NLMSG_HDRLEN) {
      throw new NetlinkParseError(`truncated message header: ${rest} bytes at offset ${off}`);
    }
    const len = dv.getUint32(off, LE);
    if (len < NLMSG_HDRLEN) {
      throw new NetlinkParseError(`message length ${len} below header size at offset ${off}`);
    }
    if (len > rest) {
      throw new NetlinkParseError(
        `truncated message: length ${len} but ${rest} bytes left at offset ${off}`,
      );
    }
    out.push({
      type: dv.getUint16(off + 4, LE),
      flags: dv.getUint16(off + 6, LE),
      seq: dv.getUint32(off + 8, LE),
      pid: dv.getUint32(off + 12, LE),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/**
 * Walks a sequence of attributes (4-byte aligned).
 * @throws {NetlinkParseError} on a bad length or trailing bytes.
 */
export function parseAttrs(buf: Uint8Array): NlAttr[] {
  const out: NlAttr[] = [];
  const dv = view(buf);
  let off = 0;
  while (off < buf.length) {
    const rest = buf.length - off;
    if (rest < NLA_HDRLEN) {
      throw new NetlinkParseError(`${rest} trailing bytes after attributes at offset ${off}`);
    }
    const len = dv.getUint16(off, LE);
    const rawType = dv.getUint16(off + 2, LE);
    if (len < NLA_HDRLEN) {
      throw new NetlinkParseError(`attribute ${rawType} length ${len} below header size`);
    }
    if (len > rest) {
      throw new NetlinkParseError(
        `truncated attribute ${rawType & NLA_TYPE_MASK}: length ${len} but ${rest} bytes left`,
      );
    }
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      netByteOrder: (rawType & NLA_F_NET_BYTEORDER) !== 0,
      data: buf.subarray(off + NLA_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Indexes attributes by type; for repeated types the last one wins. */
export function attrMap(attrs: NlAttr[]): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  for (const a of attrs) m.set(a.type, a.data);
  return m;
}

function needLen(what: string, data: Uint8Array, len: number): void {
  if (data.length !== len) {
    throw new NetlinkParseError(`${what}: expected ${len} bytes, got ${data.length}`);
  }
}

function getU8(m: Map<number, Uint8Array>, t: number, what: string): number | undefined {
  const d = m.get(t);
  if (d === undefined) return undefined;
  needLen(what, d, 1);
  return d[0];
}

function getU32(m: Map<number, Uint8Array>, t: number, what: string): number | undefined {
  const d = m.get(t);
  if (d === undefined) return undefined;
  needLen(what, d, 4);
  return view(d).getUint32(0, LE);
}

function getStr(m: Map<number, Uint8Array>, t: number): string | undefined {
  const d = m.get(t);
  if (d === undefined) return undefined;
  const end = d.indexOf(0);
  return decoder.decode(end < 0 ? d : d.subarray(0, end));
}

function getAddr(
  m: Map<number, Uint8Array>,
  t: number,
  family: Family,
  what: string,
): Uint8Array | undefined {
  const d = m.get(t);
  if (d === undefined) return undefined;
  needLen(what, d, family === 4 ? 4 : 16);
  return d.slice();
}

function getRange(m: Map<number, Uint8Array>, t: number, what: string): PortRange | undefined {
  const d = m.get(t);
  if (d === undefined) return undefined;
  needLen(what, d, 4);
  const dv = view(d);
  return { start: dv.getUint16(0, LE), end: dv.getUint16(2, LE) };
}

function familyOf(af: number, what: string): Family {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  throw new NetlinkParseError(`${what}: unsupported address family ${af}`);
}

function opOf(type: number, newType: number, delType: number, what: string): Op {
  if (type === newType) return "new";
  if (type === delType) return "del";
  throw new NetlinkParseError(`${what}: unexpected message type ${type}`);
}

function fixedHeader(msg: NlMsg, len: number, what: string): DataView {
  if (msg.payload.length < len) {
    throw new NetlinkParseError(
      `${what}: payload of ${msg.payload.length} bytes shorter than its ${len}-byte header`,
    );
  }
  return view(msg.payload);
}

function attrsAfter(msg: NlMsg, len: number): Map<number, Uint8Array> {
  return attrMap(parseAttrs(msg.payload.subarray(align4(len))));
}

// ---------------------------------------------------------------------------------------------
// Decoders

/** Decodes RTM_NEWADDR / RTM_DELADDR (AF_INET or AF_INET6). */
export function decodeAddr(msg: NlMsg): AddrMsg {
  const op = opOf(msg.type, RTM.NEWADDR, RTM.DELADDR, "address message");
  const what = op === "new" ? "RTM_NEWADDR" : "RTM_DELADDR";
  const dv = fixedHeader(msg, IFADDRMSG_LEN, what);
  const family = familyOf(dv.getUint8(0), what);
  const m = attrsAfter(msg, IFADDRMSG_LEN);
  const address = getAddr(m, IFA.ADDRESS, family, "IFA_ADDRESS");
  const local = getAddr(m, IFA.LOCAL, family, "IFA_LOCAL");
  const addr = address ?? local;
  if (addr === undefined) throw new NetlinkParseError(`${what}: no IFA_ADDRESS nor IFA_LOCAL`);
  const out: AddrMsg = {
    type: "addr",
    op,
    family,
    ifindex: dv.getUint32(4, LE),
    prefixLen: dv.getUint8(1),
    addr,
    flags: getU32(m, IFA.FLAGS, "IFA_FLAGS") ?? dv.getUint8(2),
    scope: dv.getUint8(3),
  };
  if (local !== undefined) out.local = local;
  const label = getStr(m, IFA.LABEL);
  if (label !== undefined) out.label = label;
  return out;
}

/** The interface's own address of an {@link AddrMsg}: IFA_LOCAL when present, else IFA_ADDRESS. */
export function ownAddr(a: AddrMsg): Uint8Array {
  return a.local ?? a.addr;
}

/** Decodes RTM_NEWLINK / RTM_DELLINK. */
export function decodeLink(msg: NlMsg): LinkMsg {
  const op = opOf(msg.type, RTM.NEWLINK, RTM.DELLINK, "link message");
  const what = op === "new" ? "RTM_NEWLINK" : "RTM_DELLINK";
  const dv = fixedHeader(msg, IFINFOMSG_LEN, what);
  const m = attrsAfter(msg, IFINFOMSG_LEN);
  const ifname = getStr(m, IFLA.IFNAME);
  if (ifname === undefined) throw new NetlinkParseError(`${what}: no IFLA_IFNAME`);
  const flags = dv.getUint32(8, LE);
  const out: LinkMsg = {
    type: "link",
    op,
    family: dv.getUint8(0),
    ifindex: dv.getInt32(4, LE),
    ifname,
    flags,
    up: (flags & IFF.UP) !== 0,
    running: (flags & IFF.RUNNING) !== 0,
    linkType: dv.getUint16(2, LE),
    mtu: getU32(m, IFLA.MTU, "IFLA_MTU") ?? 0,
    operstate: getU8(m, IFLA.OPERSTATE, "IFLA_OPERSTATE") ?? IF_OPER.UNKNOWN,
  };
  const address = m.get(IFLA.ADDRESS);
  if (address !== undefined) out.address = address.slice();
  const master = getU32(m, IFLA.MASTER, "IFLA_MASTER");
  if (master !== undefined) out.master = master;
  return out;
}

/** Decodes RTM_NEWRULE / RTM_DELRULE (AF_INET or AF_INET6). */
export function decodeRule(msg: NlMsg): RuleMsg {
  const op = opOf(msg.type, RTM.NEWRULE, RTM.DELRULE, "rule message");
  const what = op === "new" ? "RTM_NEWRULE" : "RTM_DELRULE";
  const dv = fixedHeader(msg, FIB_RULE_HDR_LEN, what);
  const family = familyOf(dv.getUint8(0), what);
  const m = attrsAfter(msg, FIB_RULE_HDR_LEN);
  const flags = dv.getUint32(8, LE);
  const out: RuleMsg = {
    type: "rule",
    op,
    family,
    priority: getU32(m, FRA.PRIORITY, "FRA_PRIORITY") ?? 0,
    table: getU32(m, FRA.TABLE, "FRA_TABLE") ?? dv.getUint8(4),
    action: dv.getUint8(7),
    dstLen: dv.getUint8(1),
    srcLen: dv.getUint8(2),
    tos: dv.getUint8(3),
    invert: (flags & FIB_RULE.INVERT) !== 0,
    flags,
  };
  const opt = {
    src: getAddr(m, FRA.SRC, family, "FRA_SRC"),
    dst: getAddr(m, FRA.DST, family, "FRA_DST"),
    iifname: getStr(m, FRA.IIFNAME),
    oifname: getStr(m, FRA.OIFNAME),
    ipProto: getU8(m, FRA.IP_PROTO, "FRA_IP_PROTO"),
    sportRange: getRange(m, FRA.SPORT_RANGE, "FRA_SPORT_RANGE"),
    dportRange: getRange(m, FRA.DPORT_RANGE, "FRA_DPORT_RANGE"),
    fwmark: getU32(m, FRA.FWMARK, "FRA_FWMARK"),
    fwmask: getU32(m, FRA.FWMASK, "FRA_FWMASK"),
    protocol: getU8(m, FRA.PROTOCOL, "FRA_PROTOCOL"),
    gotoPriority: getU32(m, FRA.GOTO, "FRA_GOTO"),
    suppressPrefixLen: getU32(m, FRA.SUPPRESS_PREFIXLEN, "FRA_SUPPRESS_PREFIXLEN"),
  };
  if (opt.suppressPrefixLen === 0xffffffff) opt.suppressPrefixLen = undefined; // -1: not set
  return Object.assign(out, dropUndefined(opt));
}

/** Decodes RTM_NEWROUTE / RTM_DELROUTE (AF_INET or AF_INET6). */
export function decodeRoute(msg: NlMsg): RouteMsg {
  const op = opOf(msg.type, RTM.NEWROUTE, RTM.DELROUTE, "route message");
  const what = op === "new" ? "RTM_NEWROUTE" : "RTM_DELROUTE";
  const dv = fixedHeader(msg, RTMSG_LEN, what);
  const family = familyOf(dv.getUint8(0), what);
  const m = attrsAfter(msg, RTMSG_LEN);
  const out: RouteMsg = {
    type: "route",
    op,
    family,
    dstLen: dv.getUint8(1),
    srcLen: dv.getUint8(2),
    tos: dv.getUint8(3),
    table: getU32(m, RTA.TABLE, "RTA_TABLE") ?? dv.getUint8(4),
    protocol: dv.getUint8(5),
    scope: dv.getUint8(6),
    routeType: dv.getUint8(7),
    flags: dv.getUint32(8, LE),
  };
  const opt = {
    dst: getAddr(m, RTA.DST, family, "RTA_DST"),
    src: getAddr(m, RTA.SRC, family, "RTA_SRC"),
    gateway: getAddr(m, RTA.GATEWAY, family, "RTA_GATEWAY"),
    prefsrc: getAddr(m, RTA.PREFSRC, family, "RTA_PREFSRC"),
    oif: getU32(m, RTA.OIF, "RTA_OIF"),
    iif: getU32(m, RTA.IIF, "RTA_IIF"),
    priority: getU32(m, RTA.PRIORITY, "RTA_PRIORITY"),
  };
  return Object.assign(out, dropUndefined(opt));
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k as keyof T] = v;
  return out;
}

/**
 * Decodes NLMSG_ERROR (also an ACK, `errno` 0), including the extended-ACK message when the
 * kernel attached one (NLM_F_ACK_TLVS).
 */
export function decodeError(msg: NlMsg): ErrorMsg {
  if (msg.type !== NLMSG_ERROR) {
    throw new NetlinkParseError(`expected NLMSG_ERROR, got message type ${msg.type}`);
  }
  const dv = fixedHeader(msg, NLMSGERR_LEN, "NLMSG_ERROR");
  const err = dv.getInt32(0, LE);
  const out: ErrorMsg = { errno: err < 0 ? -err : err, seq: dv.getUint32(4 + 8, LE) };
  if ((msg.flags & NLM_F.ACK_TLVS) === 0) return out;
  // The echoed request follows the error code: its header only when capped, else all of it.
  const echoed = (msg.flags & NLM_F.CAPPED) !== 0 ? NLMSG_HDRLEN : dv.getUint32(4, LE);
  const tlvAt = 4 + align4(Math.max(echoed, NLMSG_HDRLEN));
  if (tlvAt > msg.payload.length) {
    throw new NetlinkParseError(`NLMSG_ERROR: echoed request of ${echoed} bytes is truncated`);
  }
  const text = getStr(attrMap(parseAttrs(msg.payload.subarray(tlvAt))), NLMSGERR_ATTR.MSG);
  if (text) out.extack = text;
  return out;
}

/**
 * Decodes NLMSG_DONE: a dump that failed part-way carries a negative errno (and possibly an
 * extended-ACK message) in its payload; `errno` 0 is a normal end.
 */
export function decodeDone(msg: NlMsg): ErrorMsg {
  if (msg.type !== NLMSG_DONE) {
    throw new NetlinkParseError(`expected NLMSG_DONE, got message type ${msg.type}`);
  }
  if (msg.payload.length < 4) return { errno: 0, seq: msg.seq }; // very old kernels: empty
  const err = view(msg.payload).getInt32(0, LE);
  const out: ErrorMsg = { errno: err < 0 ? -err : err, seq: msg.seq };
  if ((msg.flags & NLM_F.ACK_TLVS) !== 0) {
    const text = getStr(attrMap(parseAttrs(msg.payload.subarray(4))), NLMSGERR_ATTR.MSG);
    if (text) out.extack = text;
  }
  return out;
}

const MODELLED = new Set<number>([
  RTM.NEWADDR,
  RTM.DELADDR,
  RTM.NEWLINK,
  RTM.DELLINK,
  RTM.NEWRULE,
  RTM.DELRULE,
  RTM.NEWROUTE,
  RTM.DELROUTE,
]);
const RTM_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(RTM).map(([k, v]) => [v, `RTM_${k}`]),
);

/** The `RTM_*` name of a message type (`"RTM_NEWRULE"`), or `message type N`. */
export function messageTypeName(type: number): string {
  return RTM_NAME[type] ?? `message type ${type}`;
}

/**
 * Decodes an rtnetlink message into a typed object. Returns null for what this module does not
 * model: control messages, other message types, link messages of a family other than
 * AF_UNSPEC (bridge port information), addresses/rules/routes of families other than IPv4/IPv6.
 * @throws {NetlinkParseError} when a modelled message is malformed.
 */
export function decode(msg: NlMsg): RtnlMsg | null {
  if (!MODELLED.has(msg.type)) return null;
  if (msg.payload.length === 0) {
    throw new NetlinkParseError(`${RTM_NAME[msg.type]}: empty payload`);
  }
  const af = msg.payload[0];
  const ip = af === AF_INET || af === AF_INET6;
  switch (msg.type) {
    case RTM.NEWADDR:
    case RTM.DELADDR:
      return ip ? decodeAddr(msg) : null;
    case RTM.NEWLINK:
    case RTM.DELLINK:
      return af === AF_UNSPEC ? decodeLink(msg) : null;
    case RTM.NEWRULE:
    case RTM.DELRULE:
      return ip ? decodeRule(msg) : null;
    case RTM.NEWROUTE:
    case RTM.DELROUTE:
      return ip ? decodeRoute(msg) : null;
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoders

/** Encodes one attribute, padded to 4 bytes. */
export function encodeAttr(type: number, data: Uint8Array): Uint8Array {
  const len = NLA_HDRLEN + data.length;
  if (len > 0xffff) throw new RangeError(`attribute ${type} too long: ${data.length} bytes`);
  const out = new Uint8Array(align4(len));
  const dv = view(out);
  dv.setUint16(0, len, LE);
  dv.setUint16(2, type, LE);
  out.set(data, NLA_HDRLEN);
  return out;
}

/** An attribute holding one byte. */
export function u8Attr(type: number, v: number): AttrInput {
  return { type, data: Uint8Array.of(v & 0xff) };
}

/** An attribute holding a host-order u32. */
export function u32Attr(type: number, v: number): AttrInput {
  const data = new Uint8Array(4);
  view(data).setUint32(0, v >>> 0, LE);
  return { type, data };
}

/** An attribute holding a NUL-terminated string. */
export function strAttr(type: number, s: string): AttrInput {
  const b = encoder.encode(s);
  if (b.includes(0)) throw new TypeError(`string contains a NUL byte: ${JSON.stringify(s)}`);
  const data = new Uint8Array(b.length + 1);
  data.set(b);
  return { type, data };
}

/** An attribute holding raw bytes (e.g. an address). */
export function bytesAttr(type: number, data: Uint8Array): AttrInput {
  return { type, data };
}

function rangeAttr(type: number, r: PortRange): AttrInput {
  const data = new Uint8Array(4);
  const dv = view(data);
  dv.setUint16(0, r.start, LE);
  dv.setUint16(2, r.end, LE);
  return { type, data };
}

/** Header fields of a message to encode. */
export interface MsgHeader {
  type: number;
  flags: number;
  seq?: number;
  pid?: number;
}

/**
 * Encodes a message: `nlmsghdr`, the fixed family header (padded to 4) and the attributes.
 */
export function encodeMessage(
  h: MsgHeader,
  fixed: Uint8Array,
  attrs: AttrInput[] = [],
): Uint8Array<ArrayBuffer> {
  const parts = [fixed, ...attrs.map((a) => encodeAttr(a.type, a.data))];
  let len = NLMSG_HDRLEN + align4(fixed.length);
  for (const p of parts.slice(1)) len += p.length;
  const out = new Uint8Array(len);
  const dv = view(out);
  dv.setUint32(0, len, LE);
  dv.setUint16(4, h.type, LE);
  dv.setUint16(6, h.flags, LE);
  dv.setUint32(8, (h.seq ?? 0) >>> 0, LE);
  dv.setUint32(12, (h.pid ?? 0) >>> 0, LE);
  let off = NLMSG_HDRLEN;
  out.set(fixed, off);
  off += align4(fixed.length);
  for (const p of parts.slice(1)) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Overwrites the sequence number (and port id) of an encoded message in place. */
export function setSeq(buf: Uint8Array, seq: number, pid = 0): void {
  if (buf.length < NLMSG_HDRLEN) throw new NetlinkParseError("message shorter than its header");
  const dv = view(buf);
  dv.setUint32(8, seq >>> 0, LE);
  dv.setUint32(12, pid >>> 0, LE);
}

/** ORs `flags` into the `nlmsg_flags` of an encoded message, in place. */
export function addFlags(buf: Uint8Array, flags: number): void {
  if (buf.length < NLMSG_HDRLEN) throw new NetlinkParseError("message shorter than its header");
  const dv = view(buf);
  dv.setUint16(6, dv.getUint16(6, LE) | flags, LE);
}

function afOf(family: Family | undefined): number {
  return family === 4 ? AF_INET : family === 6 ? AF_INET6 : AF_UNSPEC;
}

function addrLen(family: Family): number {
  return family === 4 ? 4 : 16;
}

function checkAddr(what: string, family: Family, a: Uint8Array | undefined): void {
  if (a !== undefined && a.length !== addrLen(family)) {
    throw new RangeError(`${what}: IPv${family} address needs ${addrLen(family)} bytes`);
  }
}

function checkPrefix(what: string, family: Family, len: number): void {
  if (!Number.isInteger(len) || len < 0 || len > addrLen(family) * 8) {
    throw new RangeError(`${what}: prefix length ${len} out of range for IPv${family}`);
  }
}

/** What a dump request asks for. */
export type DumpKind = "addr" | "link" | "rule" | "route" | "tfilter";

/** Options of {@link dumpRequest}. */
export interface DumpOptions {
  /** Routes only: ask for one table (RTA_TABLE; honoured with NETLINK_GET_STRICT_CHK). */
  table?: number;
  /** TC filters only: the interface and the parent (`tcmsg.tcm_ifindex`, `tcm_parent`). */
  ifindex?: number;
  parent?: number;
}

/** `sizeof(struct tcmsg)`. */
const TCMSG_LEN = 20;

/**
 * Builds a dump request (NLM_F_REQUEST|NLM_F_DUMP) for all objects of `kind`; `family`
 * undefined means both IPv4 and IPv6 (AF_UNSPEC).
 */
export function dumpRequest(
  kind: DumpKind,
  family?: Family,
  seq = 0,
  opts: DumpOptions = {},
): Uint8Array<ArrayBuffer> {
  const flags = NLM_F.REQUEST | NLM_F.DUMP;
  const af = afOf(family);
  switch (kind) {
    case "addr": {
      const h = new Uint8Array(IFADDRMSG_LEN);
      h[0] = af;
      return encodeMessage({ type: RTM.GETADDR, flags, seq }, h);
    }
    case "link": {
      const h = new Uint8Array(IFINFOMSG_LEN);
      h[0] = af;
      return encodeMessage({ type: RTM.GETLINK, flags, seq }, h);
    }
    case "rule": {
      const h = new Uint8Array(FIB_RULE_HDR_LEN);
      h[0] = af;
      return encodeMessage({ type: RTM.GETRULE, flags, seq }, h);
    }
    case "route": {
      const h = new Uint8Array(RTMSG_LEN);
      h[0] = af;
      const attrs = opts.table !== undefined ? [u32Attr(RTA.TABLE, opts.table)] : [];
      return encodeMessage({ type: RTM.GETROUTE, flags, seq }, h, attrs);
    }
    case "tfilter": {
      const h = new Uint8Array(TCMSG_LEN);
      const v = new DataView(h.buffer);
      v.setInt32(4, opts.ifindex ?? 0, true);
      v.setUint32(12, (opts.parent ?? 0) >>> 0, true);
      return encodeMessage({ type: RTM.GETTFILTER, flags, seq }, h);
    }
  }
}

/** Flags of an add request: REQUEST|ACK|CREATE|EXCL. */
export const ADD_FLAGS: number = NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.EXCL;
/** Flags of a delete request: REQUEST|ACK. */
export const DEL_FLAGS: number = NLM_F.REQUEST | NLM_F.ACK;

/**
 * Builds RTM_NEWRULE (`op` "new", flags {@link ADD_FLAGS}) or RTM_DELRULE (`op` "del",
 * {@link DEL_FLAGS}). A table id above 255 goes in FRA_TABLE only, like iproute2 does.
 */
export function ruleRequest(op: Op, r: RuleSpec, seq = 0): Uint8Array<ArrayBuffer> {
  const { family } = r;
  if (family !== 4 && family !== 6) throw new RangeError(`rule: bad family ${family}`);
  checkAddr("rule src", family, r.src);
  checkAddr("rule dst", family, r.dst);
  const srcLen = r.src !== undefined ? (r.srcLen ?? addrLen(family) * 8) : 0;
  const dstLen = r.dst !== undefined ? (r.dstLen ?? addrLen(family) * 8) : 0;
  checkPrefix("rule src", family, srcLen);
  checkPrefix("rule dst", family, dstLen);
  const action = r.action ?? (op === "new" ? FR_ACT.TO_TBL : FR_ACT.UNSPEC);
  const table = r.table ?? (op === "new" && action === FR_ACT.TO_TBL ? RT_TABLE.MAIN : undefined);
  const h = new Uint8Array(FIB_RULE_HDR_LEN);
  const dv = view(h);
  h[0] = afOf(family);
  h[1] = dstLen;
  h[2] = srcLen;
  h[3] = r.tos ?? 0;
  h[4] = table !== undefined && table < 256 ? table : RT_TABLE.UNSPEC;
  h[7] = action;
  dv.setUint32(8, r.invert ? FIB_RULE.INVERT : 0, LE);
  const attrs: AttrInput[] = [];
  if (r.priority !== undefined) attrs.push(u32Attr(FRA.PRIORITY, r.priority));
  if (table !== undefined) attrs.push(u32Attr(FRA.TABLE, table));
  if (r.src !== undefined) attrs.push(bytesAttr(FRA.SRC, r.src));
  if (r.dst !== undefined) attrs.push(bytesAttr(FRA.DST, r.dst));
  if (r.iifname !== undefined) attrs.push(strAttr(FRA.IIFNAME, r.iifname));
  if (r.oifname !== undefined) attrs.push(strAttr(FRA.OIFNAME, r.oifname));
  if (r.ipProto !== undefined) attrs.push(u8Attr(FRA.IP_PROTO, r.ipProto));
  if (r.sportRange !== undefined) attrs.push(rangeAttr(FRA.SPORT_RANGE, r.sportRange));
  if (r.dportRange !== undefined) attrs.push(rangeAttr(FRA.DPORT_RANGE, r.dportRange));
  if (r.fwmark !== undefined) attrs.push(u32Attr(FRA.FWMARK, r.fwmark));
  if (r.fwmask !== undefined) attrs.push(u32Attr(FRA.FWMASK, r.fwmask));
  if (r.protocol !== undefined) attrs.push(u8Attr(FRA.PROTOCOL, r.protocol));
  if (r.gotoPriority !== undefined) attrs.push(u32Attr(FRA.GOTO, r.gotoPriority));
  if (r.suppressPrefixLen !== undefined) {
    attrs.push(u32Attr(FRA.SUPPRESS_PREFIXLEN, r.suppressPrefixLen));
  }
  const type = op === "new" ? RTM.NEWRULE : RTM.DELRULE;
  return encodeMessage({ type, flags: op === "new" ? ADD_FLAGS : DEL_FLAGS, seq }, h, attrs);
}

/**
 * Builds RTM_NEWROUTE (`op` "new", flags {@link ADD_FLAGS}) or RTM_DELROUTE (`op` "del",
 * {@link DEL_FLAGS}). Defaults follow iproute2: type unicast and protocol boot on add; scope
 * host for local/nat routes, link for gateway-less unicast on add, nowhere (any) on delete.
 */
export function routeRequest(op: Op, r: RouteSpec, seq = 0): Uint8Array<ArrayBuffer> {
  const { family } = r;
  if (family !== 4 && family !== 6) throw new RangeError(`route: bad family ${family}`);
  for (const k of ["dst", "src", "gateway", "prefsrc"] as const) {
    checkAddr(`route ${k}`, family, r[k]);
  }
  const dstLen = r.dst !== undefined ? (r.dstLen ?? addrLen(family) * 8) : (r.dstLen ?? 0);
  const srcLen = r.src !== undefined ? (r.srcLen ?? addrLen(family) * 8) : 0;
  checkPrefix("route dst", family, dstLen);
  checkPrefix("route src", family, srcLen);
  if (dstLen > 0 && r.dst === undefined) throw new RangeError("route: dstLen without dst");
  const table = r.table ?? RT_TABLE.MAIN;
  const routeType = r.routeType ?? (op === "new" ? RTN.UNICAST : RTN.UNSPEC);
  let scope = r.scope;
  if (scope === undefined) {
    if (routeType === RTN.LOCAL || routeType === RTN.NAT) scope = RT_SCOPE.HOST;
    else if (
      routeType === RTN.BROADCAST || routeType === RTN.MULTICAST || routeType === RTN.ANYCAST
    ) scope = RT_SCOPE.LINK;
    else if (op === "del") scope = RT_SCOPE.NOWHERE;
    else if (routeType === RTN.UNICAST && r.gateway === undefined) scope = RT_SCOPE.LINK;
    else scope = RT_SCOPE.UNIVERSE;
  }
  const h = new Uint8Array(RTMSG_LEN);
  h[0] = afOf(family);
  h[1] = dstLen;
  h[2] = srcLen;
  h[3] = r.tos ?? 0;
  h[4] = table < 256 ? table : RT_TABLE.UNSPEC;
  h[5] = r.protocol ?? (op === "new" ? RTPROT.BOOT : RTPROT.UNSPEC);
  h[6] = scope;
  h[7] = routeType;
  const attrs: AttrInput[] = [u32Attr(RTA.TABLE, table)];
  if (r.dst !== undefined) attrs.push(bytesAttr(RTA.DST, r.dst));
  if (r.src !== undefined) attrs.push(bytesAttr(RTA.SRC, r.src));
  if (r.gateway !== undefined) attrs.push(bytesAttr(RTA.GATEWAY, r.gateway));
  if (r.prefsrc !== undefined) attrs.push(bytesAttr(RTA.PREFSRC, r.prefsrc));
  if (r.oif !== undefined) attrs.push(u32Attr(RTA.OIF, r.oif));
  if (r.priority !== undefined) attrs.push(u32Attr(RTA.PRIORITY, r.priority));
  const type = op === "new" ? RTM.NEWROUTE : RTM.DELROUTE;
  return encodeMessage({ type, flags: op === "new" ? ADD_FLAGS : DEL_FLAGS, seq }, h, attrs);
}
