/**
 * Where `sk_buff.ip_summed` lies in the running kernel, which the inline checksum update reads
 * (bpf/lib/skb.h), from its BTF (`/sys/kernel/btf/vmlinux`) without holding it. The kfunc's
 * BTF id the kernel answers itself (btf_find, bpf/btf_query.bpf.c).
 *
 * libbpf could resolve the field (a CO-RE relocation), but it parses the whole 5.5 MB file for
 * it at every object load, holding two copies while it does: ~12 ms and ~13 MiB of peak RSS per
 * load. This reads the types in chunks only as far as sk_buff's field (some 3,000 of ~150,000),
 * keeping the strings and a table of where each type starts.
 * @module
 */

import { BTF_KIND } from "../btf.ts";
import { closeFd, openReadOnly, preadFull } from "../ffi/libc.ts";

const BTF_MAGIC = 0xeb9f;
const HDR_MIN = 24;
const CHUNK = 64 << 10;
const KIND = BTF_KIND;

/** Bytes a type record takes after its 12-byte head: fixed, and per `vlen` entry. */
const EXTRA_FIXED = new Uint8Array(32);
const EXTRA_PER_VLEN = new Uint8Array(32);
EXTRA_FIXED[KIND.INT] = EXTRA_FIXED[KIND.VAR] = EXTRA_FIXED[KIND.DECL_TAG] = 4;
EXTRA_FIXED[KIND.ARRAY] = 12;
EXTRA_PER_VLEN[KIND.STRUCT] = EXTRA_PER_VLEN[KIND.UNION] = 12;
EXTRA_PER_VLEN[KIND.DATASEC] = EXTRA_PER_VLEN[KIND.ENUM64] = 12;
EXTRA_PER_VLEN[KIND.ENUM] = EXTRA_PER_VLEN[KIND.FUNC_PROTO] = 8;

function extraBytes(kind: number, vlen: number): number {
  return EXTRA_FIXED[kind] + EXTRA_PER_VLEN[kind] * vlen;
}

function readAt(fd: number, pos: number, len: number): Uint8Array {
  return preadFull(fd, new Uint8Array(len), pos);
}

/** Whether the NUL-terminated string at `off` of `strs` is `name` (ASCII bytes). */
function nameIs(strs: Uint8Array, off: number, name: Uint8Array): boolean {
  if (off + name.length >= strs.length) return false;
  for (let i = 0; i < name.length; i++) if (strs[off + i] !== name[i]) return false;
  return strs[off + name.length] === 0;
}

/**
 * The bit offset of the 2-bit `ip_summed` field from the start of `struct sk_buff`, read from
 * `path` (the kernel's BTF). Throws an Error naming what is missing: the file, BTF, sk_buff or
 * the field.
 */
export function findSummedBit(path = "/sys/kernel/btf/vmlinux"): number {
  // libc, not Deno.FsFile: the daemon has these code paths warm already (RSS).
  const f = openReadOnly(path);
  if (f === -2) throw new Error(`no kernel BTF at ${path}`); // ENOENT
  if (f < 0) throw new Error(`${path}: open failed (errno ${-f})`);
  try {
    const h = readAt(f, 0, HDR_MIN);
    const hv = new DataView(h.buffer);
    if (hv.getUint16(0, true) !== BTF_MAGIC) throw new Error(`${path}: not BTF`);
    const hdrLen = hv.getUint32(4, true);
    const typeOff = hdrLen + hv.getUint32(8, true);
    const typeLen = hv.getUint32(12, true);
    const strOff = hdrLen + hv.getUint32(16, true);
    const strLen = hv.getUint32(20, true);

    const enc = new TextEncoder();
    const [nameSkb, nameSummed] = ["sk_buff", "ip_summed"].map((n) => enc.encode(n));
    const strs = preadFull(f, new Uint8Array(strLen), strOff);
    // One buffer for the types (a type record is far smaller than the slack kept).
    const buf = new Uint8Array(CHUNK + (64 << 10));
    const words = new Uint32Array(buf.buffer); // records are 4-byte aligned; the host is LE

    // Over the types, chunk by chunk until sk_buff's field is found: where each type starts
    // (by id), and sk_buff's id (it comes early: ~900 of ~150,000).
    let starts = new Uint32Array(1 << 17);
    let id = 1;
    let skbId = 0;
    let have = 0; // bytes of buf holding unparsed types, from type-section offset `base`
    let base = 0;
    let pos = 0;
    const walkChunk = () => {
      const n = Math.min(CHUNK, typeLen - pos);
      preadFull(f, buf.subarray(have, have + n), typeOff + pos);
      pos += n;
      have += n;
      let o = 0;
      while (o + 12 <= have) {
        const info = words[(o >> 2) + 1];
        const kind = (info >>> 24) & 0x1f;
        const size = 12 + EXTRA_FIXED[kind] + EXTRA_PER_VLEN[kind] * (info & 0xffff);
        if (o + size > have) break;
        if (id >= starts.length) {
          const grown = new Uint32Array(starts.length * 2);
          grown.set(starts);
          starts = grown;
        }
        starts[id] = base + o;
        if (kind === KIND.STRUCT && !skbId) {
          const n = words[o >> 2];
          if (strs[n] === nameSkb[0] && nameIs(strs, n, nameSkb)) skbId = id;
        }
        id++;
        o += size;
      }
      buf.copyWithin(0, o, have);
      have -= o;
      base += o;
    };
    const notWalked = new Error("not walked yet");
    const typeAt = (tid: number) => {
      if (tid <= 0) throw new Error(`${path}: type ${tid} out of range`);
      if (tid >= id) throw notWalked;
      const head = readAt(f, typeOff + starts[tid], 12);
      const hv2 = new DataView(head.buffer);
      const info = hv2.getUint32(4, true);
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      const rest = extraBytes(kind, vlen);
      const body = rest ? readAt(f, typeOff + starts[tid] + 12, rest) : new Uint8Array(0);
      return { kind, vlen, kflag: info >>> 31, ref: hv2.getUint32(8, true), body };
    };
    // Members, anonymous structs and unions followed down (sk_buff's struct_group()s).
    const search = (tid: number, baseBits: number, depth: number): number | null => {
      let t = typeAt(tid);
      while (
        t.kind === KIND.TYPEDEF || t.kind === KIND.CONST || t.kind === KIND.VOLATILE ||
        t.kind === KIND.RESTRICT || t.kind === KIND.TYPE_TAG
      ) t = typeAt(t.ref);
      if ((t.kind !== KIND.STRUCT && t.kind !== KIND.UNION) || depth > 4) return null;
      const bv = new DataView(t.body.buffer);
      for (let m = 0; m < t.vlen; m++) {
        const nameOff = bv.getUint32(m * 12, true);
        const type = bv.getUint32(m * 12 + 4, true);
        const raw = bv.getUint32(m * 12 + 8, true);
        const bits = baseBits + (t.kflag ? raw & 0xffffff : raw);
        if (nameOff && nameIs(strs, nameOff, nameSummed)) {
          if (t.kflag && raw >>> 24 !== 2) throw new Error(`${path}: ip_summed is not 2 bits wide`);
          return bits;
        }
        if (nameOff === 0) {
          const r = search(type, bits, depth + 1);
          if (r !== null) return r;
        }
      }
      return null;
    };
    let summedBit: number | null | undefined;
    while (summedBit === undefined && pos < typeLen) {
      walkChunk();
      if (!skbId) continue;
      try {
        summedBit = search(skbId, 0, 0);
      } catch (e) {
        if (e !== notWalked) throw e;
      }
    }
    if (!skbId) throw new Error(`${path}: no struct sk_buff`);
    if (summedBit === undefined) throw new Error(`${path}: a type of sk_buff out of range`);
    // Released now rather than at the next GC (an idle daemon may not see one for long).
    for (const b of [strs.buffer, buf.buffer, starts.buffer]) (b as ArrayBuffer).transfer(0);
    if (summedBit === null) throw new Error(`${path}: no ip_summed in struct sk_buff`);
    if (summedBit > 0xffff) throw new Error(`${path}: sk_buff.ip_summed at bit ${summedBit}`);
    return summedBit;
  } finally {
    closeFd(f);
  }
}
