/**
 * A UDP "server" behind a TUN device, for testing einat on an L3 interface
 * (no Ethernet header). Run inside a namespace:
 * `deno run -A tests/lib/tun_echo.ts --name tun0 --timeout-ms 10000`.
 * It creates the TUN device, prints `ready`, and answers every IPv4 UDP
 * datagram written to the device with `seen SRC:PORT` from the datagram's
 * destination, as a server out there would. Exits at the timeout.
 * @module
 */
import { buildPacket, parsePacket } from "./packet.ts";
import { arg, IFF, libc, openTunDevice } from "./tundev.ts";

const name = arg("name", "tun0");
const timeoutMs = Number(arg("timeout-ms", "10000"));
const fd = openTunDevice(name, IFF.TUN | IFF.NO_PI);
console.log("ready");

setTimeout(() => Deno.exit(0), timeoutMs);
const buf = new Uint8Array(65536);
while (true) {
  const n = Number(await libc.symbols.read(fd, buf, BigInt(buf.length)));
  if (n <= 0) continue;
  const bytes = buf.slice(0, n);
  if ((bytes[0] >> 4) !== 4) continue;
  let p;
  try {
    p = parsePacket(bytes, { noEth: true });
  } catch {
    continue;
  }
  if (p.proto !== "udp") continue;
  console.log(
    `got ${p.src}:${p.sport} -> ${p.dst}:${p.dport} checksum ${p.l4ChecksumOk ? "ok" : "bad"}`,
  );
  const reply = buildPacket({
    family: 4,
    src: p.dst,
    dst: p.src,
    proto: "udp",
    sport: p.dport,
    dport: p.sport,
    payload: new TextEncoder().encode(`seen ${p.src}:${p.sport}\n`),
    noEth: true,
  });
  libc.symbols.write(fd, reply, BigInt(reply.length));
}
