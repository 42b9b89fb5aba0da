/**
 * TUN/TAP devices for the device-side test helpers (tun_echo.ts, tap_frags.ts): the libc calls
 * they need and the device's creation.
 * @module
 */
import { buildPacket, parsePacket } from "./packet.ts";

const TUNSETIFF = 0x400454ca;
/** `ifr_flags` bits of TUNSETIFF. */
export const IFF = { TUN: 0x0001, TAP: 0x0002, NAPI: 0x0010, NAPI_FRAGS: 0x0020, NO_PI: 0x1000 };
const O_RDWR = 2;

/** The libc calls of the helpers; `read` runs off the JS thread. */
export const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
});

/** Creates the TUN/TAP device `name` with `flags` (IFF); returns its file descriptor. */
export function openTunDevice(name: string, flags: number): number {
  const fd = libc.symbols.open(new TextEncoder().encode("/dev/net/tun\0"), O_RDWR);
  if (fd < 0) throw new Error("open /dev/net/tun failed");
  const ifr = new Uint8Array(40);
  ifr.set(new TextEncoder().encode(name));
  new DataView(ifr.buffer).setUint16(16, flags, true);
  if (libc.symbols.ioctl(fd, BigInt(TUNSETIFF), ifr) < 0) throw new Error("TUNSETIFF failed");
  return fd;
}

/** The value after `--name` in the command line, or `def`. */
export function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}

/** Options of {@link serveUdpSeen}. */
export interface SeenServer {
  /** Frames carry an Ethernet header (TAP); answers come from this MAC. None: IP packets (TUN). */
  mac?: string;
  /** Writes an answer to the device. */
  send: (frame: Uint8Array) => void;
}

/**
 * Answers every IPv4 UDP datagram read from the device `fd` with `seen SRC:PORT` from its
 * destination, as a server out there would, printing `got SRC:PORT -> DST:PORT checksum ok|bad`
 * for each. Runs until the process exits.
 */
export async function serveUdpSeen(fd: number, o: SeenServer): Promise<never> {
  const noEth = o.mac === undefined;
  const buf = new Uint8Array(65536);
  while (true) {
    const n = Number(await libc.symbols.read(fd, buf, BigInt(buf.length)));
    if (n <= 0) continue;
    let p;
    try {
      p = parsePacket(buf.slice(0, n), { noEth });
    } catch {
      continue;
    }
    if (p.family !== 4 || p.proto !== "udp") continue;
    console.log(
      `got ${p.src}:${p.sport} -> ${p.dst}:${p.dport} checksum ${p.l4ChecksumOk ? "ok" : "bad"}`,
    );
    o.send(buildPacket({
      family: 4,
      src: p.dst,
      dst: p.src,
      proto: "udp",
      sport: p.dport,
      dport: p.sport,
      payload: new TextEncoder().encode(`seen ${p.src}:${p.sport}\n`),
      noEth,
      ...(noEth ? {} : { ethSrc: o.mac, ethDst: p.eth?.src }),
    }));
  }
}
