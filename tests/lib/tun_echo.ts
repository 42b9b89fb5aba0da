/**
 * A UDP "server" behind a TUN device, for testing einat on an L3 interface
 * (no Ethernet header). Run inside a namespace:
 * `deno run -A tests/lib/tun_echo.ts --name tun0 --timeout-ms 10000`.
 * It creates the TUN device, prints `ready`, and answers every IPv4 UDP
 * datagram written to the device with `seen SRC:PORT` from the datagram's
 * destination, as a server out there would. Exits at the timeout.
 * @module
 */
import { arg, IFF, libc, openTunDevice, serveUdpSeen } from "./tundev.ts";

const name = arg("name", "tun0");
const timeoutMs = Number(arg("timeout-ms", "10000"));
const fd = openTunDevice(name, IFF.TUN | IFF.NO_PI);
console.log("ready");

setTimeout(() => Deno.exit(0), timeoutMs);
await serveUdpSeen(fd, { send: (frame) => libc.symbols.write(fd, frame, BigInt(frame.length)) });
