// Experiment: fill N sessions into a pinned map_ct (run inside the daemon's mount+net ns).
import * as bpf from "../lib/ffi/libbpf.ts";
import { CT_KEY_LAYOUT, encodeCtKey, IPPROTO } from "../lib/nat/codec.ts";
import { encodeCtValue } from "./lib/bpfbench.ts";
import { monotonicNs } from "../lib/ffi/libc.ts";
const n = Number(Deno.args[0]);
const fd = bpf.objGetPinned("/sys/fs/bpf/einat/wan0/map_ct");
const value = encodeCtValue({ intAddr: new Uint8Array([192, 0, 2, 99]), intPort: 50000, state: 1, flags: 3, nowNs: monotonicNs() });
const key = encodeCtKey({ l4proto: IPPROTO.UDP, family: 4, extPort: 0, remotePort: 443, extAddr: new Uint8Array([192, 0, 2, 1]), remoteAddr: new Uint8Array(4) });
const kv = new DataView(key.buffer);
for (let i = 0; i < n; i++) {
  kv.setUint16(CT_KEY_LAYOUT.fields.ext_port.offset, 1024 + (i % 60000), false);
  kv.setUint32(CT_KEY_LAYOUT.fields.remote_addr.offset, 0xc6120000 + Math.floor(i / 60000), false);
  bpf.mapUpdate(fd, key, value, bpf.BPF_NOEXIST);
}
console.log("filled", n);
