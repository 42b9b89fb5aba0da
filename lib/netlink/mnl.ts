/**
 * Thin bindings to libmnl (`libmnl.so.0`, or the path in `EINAT_LIBMNL`) plus the few libc
 * socket calls libmnl does not wrap (`setsockopt`/`getsockopt` at `SOL_SOCKET`, `strerror`).
 * Both libraries are opened lazily on first use. No policy lives here.
 *
 * Conventions: every failing synchronous call becomes a {@link NetlinkError} carrying the
 * `errno` read right after the call. {@link socketRecvfromAsync} runs on a worker thread
 * (`nonblocking: true`), so its `errno` is lost: it returns -1 and the caller must infer the
 * cause (e.g. the receive timeout, or {@link socketDrops} for a receive-queue overrun).
 * @module
 */

import { libPath } from "../deps.ts";
import { closeFd, errno, errnoMessage, libc } from "../ffi/libc.ts";
import { encodeMessage, NLMSG_NOOP } from "./msg.ts";

// ---------------------------------------------------------------------------------------------
// Constants

/** Netlink bus of the routing subsystem (`NETLINK_ROUTE`). */
export const NETLINK_ROUTE = 0;
/** Lets the kernel choose the port id in {@link socketBind}. */
export const MNL_SOCKET_AUTOPID = 0;
/** `SOL_SOCKET` level for {@link setsockoptInt} / {@link setRecvTimeout}. */
export const SOL_SOCKET = 1;
/** `SOL_NETLINK` level. */
export const SOL_NETLINK = 270;
/** Netlink socket options (`SOL_NETLINK` level, set through {@link socketSetsockoptInt}). */
export const NetlinkOpt = {
  ADD_MEMBERSHIP: 1,
  DROP_MEMBERSHIP: 2,
  PKTINFO: 3,
  BROADCAST_ERROR: 4,
  NO_ENOBUFS: 5,
  LISTEN_ALL_NSID: 8,
  CAP_ACK: 10,
  EXT_ACK: 11,
  GET_STRICT_CHK: 12,
} as const;
/** Socket options at `SOL_SOCKET` level used by this package (x86_64/aarch64 values). */
export const SockOpt = {
  SO_RCVBUF: 8,
  SO_RCVTIMEO: 20,
  SO_RCVBUFFORCE: 33,
  SO_MEMINFO: 55,
} as const;
/** errno values this package tests for. */
export const Errno = {
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  ENOBUFS: 105,
} as const;
/** Receive buffer big enough for any rtnetlink dump datagram (the kernel caps them at 32 KiB). */
export const RECV_BUFFER_SIZE = 65536;

/** Netlink and socket options use host byte order. */
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const SK_MEMINFO_DROPS = 8;
const SK_MEMINFO_VARS = 9;

// ---------------------------------------------------------------------------------------------
// Library loading

const DEFAULT_LIBMNL = "libmnl.so.0";

const RECVFROM = { parameters: ["pointer", "buffer", "usize"], result: "isize" } as const;

const MNL_SYMBOLS = {
  mnl_socket_open: { parameters: ["i32"], result: "pointer" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
  mnl_socket_get_fd: { parameters: ["pointer"], result: "i32" },
  mnl_socket_get_portid: { parameters: ["pointer"], result: "u32" },
  mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  mnl_socket_recvfrom: RECVFROM,
  mnl_socket_recvfrom_async: { ...RECVFROM, name: "mnl_socket_recvfrom", nonblocking: true },
  mnl_socket_setsockopt: { parameters: ["pointer", "i32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

const LIBC_SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened libmnl with its typed symbols. */
export type LibMnl = Deno.DynamicLibrary<typeof MNL_SYMBOLS>["symbols"];
type SockLibC = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

let mnlLib: Deno.DynamicLibrary<typeof MNL_SYMBOLS> | null = null;
let cLib: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | null = null;

function sockLibc(): SockLibC {
  if (cLib === null) cLib = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  return cLib.symbols;
}

/**
 * Returns the libmnl symbols, opening the library on the first call (path from
 * `EINAT_LIBMNL`, default `libmnl.so.0`).
 * @throws {Error} `libmnl.so.0 not found: install the libmnl0 package` when it cannot be opened.
 */
export function mnl(): LibMnl {
  if (mnlLib !== null) return mnlLib.symbols;
  // Open the libc pieces first: errno must not be clobbered by a lazy dlopen after a failure.
  libc();
  sockLibc();
  const path = libPath(DEFAULT_LIBMNL);
  try {
    mnlLib = Deno.dlopen(path, MNL_SYMBOLS);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/cannot open shared object file|No such file/.test(msg)) {
      throw new Error(`${path} not found: install the libmnl0 package`);
    }
    throw e;
  }
  return mnlLib.symbols;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** Text of a (positive or negative) errno value, from libc `strerror`. */
export function strerror(err: number): string {
  const p = sockLibc().strerror(Math.abs(err) | 0);
  return (p === null ? "" : Deno.UnsafePointerView.getCString(p)) || `error ${Math.abs(err)}`;
}

/** A failed netlink call: `op` names the call or request, `errno` is the positive error code. */
export class NetlinkError extends Error {
  /** The failed call (`mnl_socket_bind`) or request (`RTM_NEWRULE`). */
  readonly op: string;
  /** Positive error code. */
  readonly errno: number;
  /** The kernel's extended-ACK message, when it sent one. */
  readonly extack?: string;

  /** Builds `${op}: ${strerror} (errno N)`, followed by `: ${extack}` when given. */
  constructor(op: string, err: number, extack?: string) {
    const code = Math.abs(err);
    super(`${errnoMessage(op, code, strerror)}${extack ? `: ${extack}` : ""}`);
    this.name = "NetlinkError";
    this.op = op;
    this.errno = code;
    if (extack) this.extack = extack;
  }
}

function fail(op: string): never {
  throw new NetlinkError(op, errno() || Errno.EINVAL);
}

// ---------------------------------------------------------------------------------------------
// Sockets

/** An open `struct mnl_socket *`. */
export type MnlSocket = Deno.PointerObject;

/** `mnl_socket_open(bus)`. */
export function socketOpen(bus: number = NETLINK_ROUTE): MnlSocket {
  const nl = mnl().mnl_socket_open(bus);
  if (nl === null) fail("mnl_socket_open");
  return nl;
}

/** `mnl_socket_bind(nl, groups, pid)`: `groups` is the legacy multicast bitmask. */
export function socketBind(nl: MnlSocket, groups = 0, pid: number = MNL_SOCKET_AUTOPID): void {
  if (mnl().mnl_socket_bind(nl, groups >>> 0, pid | 0) < 0) fail("mnl_socket_bind");
}

/** `mnl_socket_get_portid(nl)`: the port id the kernel assigned at bind. */
export function socketGetPortid(nl: MnlSocket): number {
  return mnl().mnl_socket_get_portid(nl);
}

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;

/**
 * Sends one empty `NLMSG_NOOP` message to the netlink socket bound to `portid` in this network
 * namespace, from a socket of its own (libc `sendto`: libmnl only sends to the kernel), so that a
 * receive waiting on that socket returns. Needs CAP_NET_ADMIN (user-to-user netlink). Returns
 * false when the message could not be sent.
 */
export function wakeSocket(portid: number, bus: number = NETLINK_ROUTE): boolean {
  const c = sockLibc();
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, bus);
  if (fd < 0) return false;
  try {
    const msg = encodeMessage({ type: NLMSG_NOOP, flags: 0 }, new Uint8Array(0)); // nlmsghdr alone
    const to = new Uint8Array(12); // struct sockaddr_nl: family, pad, pid, groups
    const a = new DataView(to.buffer);
    a.setUint16(0, AF_NETLINK, LE);
    a.setUint32(4, portid >>> 0, LE);
    return Number(c.sendto(fd, msg, BigInt(msg.length), 0, to, to.length)) === msg.length;
  } finally {
    closeFd(fd);
  }
}

/** `mnl_socket_get_fd(nl)`. */
export function socketGetFd(nl: MnlSocket): number {
  return mnl().mnl_socket_get_fd(nl);
}

/** `mnl_socket_sendto(nl, buf, len)`; returns the bytes sent. */
export function socketSendto(nl: MnlSocket, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(mnl().mnl_socket_sendto(nl, buf, BigInt(buf.byteLength)));
  if (n < 0) fail("mnl_socket_sendto");
  return n;
}

/**
 * `mnl_socket_recvfrom(nl, buf, len)` on the calling (JS) thread: blocks the event loop until a
 * datagram arrives or `SO_RCVTIMEO` expires (then throws a {@link NetlinkError} with EAGAIN).
 * A datagram larger than `buf` throws ENOSPC. Returns the datagram length.
 */
export function socketRecvfrom(nl: MnlSocket, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(mnl().mnl_socket_recvfrom(nl, buf, BigInt(buf.byteLength)));
  if (n < 0) fail("mnl_socket_recvfrom");
  return n;
}

/**
 * `mnl_socket_recvfrom` on a worker thread: resolves with the datagram length, or -1 on any
 * failure (timeout, overrun, truncation; `errno` is not observable from JS). Do not touch `buf`
 * or close `nl` before the promise settles. A pending call keeps the process alive, so give the
 * socket a `SO_RCVTIMEO` ({@link setRecvTimeout}) and loop on a stop flag.
 */
export async function socketRecvfromAsync(
  nl: MnlSocket,
  buf: Uint8Array<ArrayBuffer>,
): Promise<number> {
  return Number(await mnl().mnl_socket_recvfrom_async(nl, buf, BigInt(buf.byteLength)));
}

/** `mnl_socket_setsockopt(nl, type, &value, 4)` for an int-valued `SOL_NETLINK` option. */
export function socketSetsockoptInt(nl: MnlSocket, type: number, value: number): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value | 0, LE);
  if (mnl().mnl_socket_setsockopt(nl, type, v, 4) < 0) fail(`mnl_socket_setsockopt(${type})`);
}

/** `mnl_socket_close(nl)`. The pointer is invalid afterwards. */
export function socketClose(nl: MnlSocket): void {
  if (mnl().mnl_socket_close(nl) < 0) fail("mnl_socket_close");
}

/** libc `setsockopt(fd, level, name, &value, 4)` for an int-valued option. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value | 0, LE);
  if (sockLibc().setsockopt(fd, level, name, v, 4) < 0) fail(`setsockopt(${level}, ${name})`);
}

/** Sets `SO_RCVTIMEO` on `fd` (0 disables the timeout). */
export function setRecvTimeout(fd: number, ms: number): void {
  const tv = new Uint8Array(16); // struct timeval { time_t tv_sec; suseconds_t tv_usec; }
  const dv = new DataView(tv.buffer);
  const whole = Math.max(0, Math.floor(ms));
  dv.setBigInt64(0, BigInt(Math.floor(whole / 1000)), LE);
  dv.setBigInt64(8, BigInt((whole % 1000) * 1000), LE);
  if (sockLibc().setsockopt(fd, SOL_SOCKET, SockOpt.SO_RCVTIMEO, tv, tv.length) < 0) {
    fail("setsockopt(SO_RCVTIMEO)");
  }
}

/**
 * Packets the kernel dropped for `fd` because its receive queue was full (`SO_MEMINFO`,
 * `SK_MEMINFO_DROPS`). A netlink multicast overrun increments it.
 */
export function socketDrops(fd: number): number {
  const buf = new Uint8Array(SK_MEMINFO_VARS * 4);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, buf.length, LE);
  if (sockLibc().getsockopt(fd, SOL_SOCKET, SockOpt.SO_MEMINFO, buf, len) < 0) {
    fail("getsockopt(SO_MEMINFO)");
  }
  return new DataView(buf.buffer).getUint32(SK_MEMINFO_DROPS * 4, LE);
}
