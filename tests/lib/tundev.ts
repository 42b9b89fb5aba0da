/**
 * TUN/TAP devices for the device-side test helpers (tun_echo.ts, tap_frags.ts): the libc calls
 * they need and the device's creation.
 * @module
 */

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
