/**
 * Turns the inline-checksum object's placeholder helper calls into calls of the
 * `bpf_cast_to_kern_ctx` kfunc (bpf/lib/skb.h), in a copy of the ELF bytes before libbpf
 * opens them: a BPF call instruction with `src_reg` BPF_PSEUDO_KFUNC_CALL names the kfunc by
 * its BTF id in the running kernel (lib/nat/kbtf.ts finds it), which libbpf passes through
 * untouched. Instructions are 8 bytes: opcode, registers (src << 4 | dst), offset, imm.
 * @module
 */

/** `EINAT_KERN_CTX_PLACEHOLDER` in bpf/lib/skb.h: the helper number standing for the kfunc. */
export const KERN_CTX_PLACEHOLDER = 0x7ffffff0;

const BPF_CALL = 0x85; // BPF_JMP | BPF_CALL
const BPF_PSEUDO_KFUNC_CALL = 2;
const SHF_EXECINSTR = 0x4;
const SHT_PROGBITS = 1;

/** Offsets (in `elf`) of every placeholder call in the object's code sections. */
export function placeholderCalls(elf: Uint8Array): number[] {
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || v.getUint32(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    throw new Error("not a little-endian ELF64 object");
  }
  const shoff = Number(v.getBigUint64(0x28, true));
  const shentsize = v.getUint16(0x3a, true);
  const shnum = v.getUint16(0x3c, true);
  const out: number[] = [];
  for (let i = 0; i < shnum; i++) {
    const h = shoff + i * shentsize;
    if (h + 64 > elf.length) throw new Error("ELF section header out of range");
    const type = v.getUint32(h + 4, true);
    const flags = Number(v.getBigUint64(h + 8, true));
    if (type !== SHT_PROGBITS || !(flags & SHF_EXECINSTR)) continue;
    const off = Number(v.getBigUint64(h + 24, true));
    const size = Number(v.getBigUint64(h + 32, true));
    if (off + size > elf.length) throw new Error("ELF section out of range");
    for (let p = off; p + 8 <= off + size; p += 8) {
      if (
        elf[p] === BPF_CALL && elf[p + 1] === 0 && v.getInt16(p + 2, true) === 0 &&
        v.getUint32(p + 4, true) === KERN_CTX_PLACEHOLDER
      ) out.push(p);
    }
  }
  return out;
}

/**
 * A copy of `elf` with each placeholder call made a call of the kfunc with BTF id `funcId`
 * (in vmlinux: offset 0). Throws when there is none (not the inline-checksum object).
 */
export function patchKernCtxCalls(elf: Uint8Array, funcId: number): Uint8Array {
  const calls = placeholderCalls(elf);
  if (calls.length === 0) throw new Error("no bpf_cast_to_kern_ctx placeholder in the object");
  const out = elf.slice();
  const v = new DataView(out.buffer);
  for (const p of calls) {
    out[p + 1] = BPF_PSEUDO_KFUNC_CALL << 4;
    v.setUint32(p + 4, funcId, true);
  }
  return out;
}
