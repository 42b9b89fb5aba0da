/**
 * A UDP "server" behind a TAP device whose frames reach the stack with their IP and UDP headers
 * outside the skb's linear area, as drivers that build skbs from page fragments
 * (`napi_gro_frags`) hand them over. Run inside a namespace:
 * `deno run -A tests/lib/tap_frags.ts --name tap0 --mac 02:00:00:00:00:50 --timeout-ms 10000`.
 * It creates the device with IFF_NAPI | IFF_NAPI_FRAGS, prints `ready`, and answers every IPv4
 * UDP datagram it is sent with `seen SRC:PORT` from the datagram's destination, written with
 * `writev` as two pieces: the Ethernet header (the skb's linear part) and the rest (a page
 * fragment).
 * @module
 */
import { arg, IFF, libc, openTunDevice, serveUdpSeen } from "./tundev.ts";

const name = arg("name", "tap0");
const mac = arg("mac", "02:00:00:00:00:50");
const timeoutMs = Number(arg("timeout-ms", "10000"));
const fd = openTunDevice(name, IFF.TAP | IFF.NO_PI | IFF.NAPI | IFF.NAPI_FRAGS);
console.log("ready");

/** Writes `frame` as two iovecs: the first (linear) `head` bytes, then the rest. */
function writeSplit(frame: Uint8Array, head: number): void {
  const pieces = [frame.slice(0, head), frame.slice(head)];
  const iov = new BigUint64Array(4);
  pieces.forEach((p, i) => {
    iov[i * 2] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(p)));
    iov[i * 2 + 1] = BigInt(p.length);
  });
  const n = libc.symbols.writev(fd, new Uint8Array(iov.buffer), 2);
  if (Number(n) !== frame.length) throw new Error(`writev wrote ${n} of ${frame.length}`);
}

setTimeout(() => Deno.exit(0), timeoutMs);
await serveUdpSeen(fd, { mac, send: (frame) => writeSplit(frame, 14) });
