import { assert, assertEquals } from "../../tests/lib/assert.ts";
import { elfSection, parseBtf, type StructMember, structsOf } from "../btf.ts";
import { embeddedObject } from "./loader.ts";
import { findSummedBit } from "./kbtf.ts";
import { KERN_CTX_PLACEHOLDER, patchKernCtxCalls, placeholderCalls } from "./kfunc.ts";

const VMLINUX = "/sys/kernel/btf/vmlinux";

function throwsWith(fn: () => unknown, text: string) {
  try {
    fn();
  } catch (e) {
    assert((e as Error).message.includes(text), (e as Error).message);
    return;
  }
  throw new Error(`did not throw (${text})`);
}

Deno.test("kernel BTF: sk_buff.ip_summed agrees with a full parse of the BTF", () => {
  const got = findSummedBit(VMLINUX);
  // The project's other BTF reader, over the whole file at once.
  const btf = parseBtf(Deno.readFileSync(VMLINUX));
  const skb = structsOf(btf).get("sk_buff");
  assert(skb, "struct sk_buff");
  const find = (ms: StructMember[]): StructMember | undefined => {
    for (const m of ms) {
      if (m.name === "ip_summed") return m;
      const inner = m.name === "" && m.fields ? find(m.fields) : undefined;
      if (inner) return inner;
    }
  };
  const summed = find(skb.members);
  assert(summed, "ip_summed");
  assertEquals(summed.bitfieldBits, 2);
  assertEquals(got, summed.offsetBits);
});

Deno.test("kernel BTF: a missing file, one that is not BTF, or BTF without sk_buff, is refused by name", () => {
  const dir = Deno.makeTempDirSync({ prefix: "einat-kbtf-" });
  try {
    Deno.writeTextFileSync(`${dir}/text`, "not btf at all, just text padding it out");
    throwsWith(() => findSummedBit(`${dir}/none`), `no kernel BTF at ${dir}/none`);
    throwsWith(() => findSummedBit(`${dir}/text`), "not BTF");
    // The object's own BTF: well formed, but no kernel structs in it.
    Deno.writeFileSync(`${dir}/obj`, elfSection(embeddedObject("inline"), ".BTF")!);
    throwsWith(() => findSummedBit(`${dir}/obj`), "no struct sk_buff");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("kfunc placeholder: only the inline object has it, and patching rewrites exactly those calls", () => {
  const inline = embeddedObject("inline");
  assertEquals(placeholderCalls(embeddedObject("helpers")), []);
  const calls = placeholderCalls(inline);
  assert(calls.length >= 2, `${calls.length} placeholder calls`);
  const out = patchKernCtxCalls(inline, 4242);
  assertEquals(placeholderCalls(out), []);
  const v = new DataView(out.buffer);
  for (const p of calls) {
    assertEquals(out[p], 0x85); // call
    assertEquals(out[p + 1], 0x20); // src_reg BPF_PSEUDO_KFUNC_CALL
    assertEquals(v.getUint32(p + 4, true), 4242);
  }
  const changed = out.reduce((n, b, i) => n + (b !== inline[i] ? 1 : 0), 0);
  assert(changed > 0 && changed <= calls.length * 5, `${changed} bytes changed`);
  assertEquals(
    new DataView(inline.buffer, inline.byteOffset).getUint32(calls[0] + 4, true),
    KERN_CTX_PLACEHOLDER,
  );
  throwsWith(
    () => patchKernCtxCalls(embeddedObject("helpers"), 1),
    "no bpf_cast_to_kern_ctx placeholder",
  );
});
