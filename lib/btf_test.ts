import assert from "node:assert/strict";
import { BTF_KIND, elfSection, parseBtf, readBtf, readStructs, type StructMember } from "./btf.ts";

const CLANG = "clang-19";

const SOURCE = `
#include <linux/types.h>

typedef __u32 my_u32;
enum color { RED, GREEN = 7, BLUE = -1 };

struct inner {
  __u16 a;
  __u8 b[3];
};

union addr {
  __u32 v4;
  __u8 v6[16];
};

struct outer {
  __u8 flag;
  union addr addr;
  struct inner in;
  __u64 ts;
  const volatile my_u32 cv;
  __u32 arr[2][3];
  enum color c;
  union {
    __u16 x;
    __u32 y;
  };
  __u32 bf1 : 3, bf2 : 5;
  struct inner *ptr;
};

struct outer g_outer;
union addr g_addr;
`;

async function have(cmd: string): Promise<boolean> {
  try {
    const r = await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return r.success;
  } catch {
    return false;
  }
}

const hasClang = await have(CLANG);
if (!hasClang) console.log(`btf_test: skipped compile tests, ${CLANG} not found`);
const hasBpftool = await have("bpftool");

async function compile(src: string): Promise<{ obj: Uint8Array; path: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "einat-btf-" });
  await Deno.writeTextFile(`${dir}/t.c`, src);
  const out = await new Deno.Command(CLANG, {
    args: [
      "-O2",
      "-g",
      "-target",
      "bpf",
      "-I/usr/include/x86_64-linux-gnu",
      "-c",
      `${dir}/t.c`,
      "-o",
      `${dir}/t.o`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(`clang failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return { obj: await Deno.readFile(`${dir}/t.o`), path: `${dir}/t.o`, dir };
}

function member(ms: StructMember[], name: string): StructMember {
  const m = ms.find((x) => x.name === name);
  assert.ok(m, `member ${name} missing`);
  return m;
}

Deno.test({
  name: "btf: struct layout of a compiled object",
  ignore: !hasClang,
  fn: async () => {
    const { obj, dir } = await compile(SOURCE);
    try {
      const structs = readStructs(obj);
      const outer = structs.get("outer");
      assert.ok(outer);
      assert.equal(outer.kind, "struct");
      assert.equal(outer.size, 88);
      const ms = outer.members;
      assert.deepEqual(ms.map((m) => m.name), [
        "flag",
        "addr",
        "in",
        "ts",
        "cv",
        "arr",
        "c",
        "",
        "bf1",
        "bf2",
        "ptr",
      ]);
      const expect: [string, number, number | undefined][] = [
        ["flag", 0, 1],
        ["addr", 4, 16],
        ["in", 20, 6],
        ["ts", 32, 8],
        ["cv", 40, 4],
        ["arr", 44, 24],
        ["c", 68, 4],
        ["", 72, 4],
        ["ptr", 80, 8],
      ];
      for (const [name, off, size] of expect) {
        const m = member(ms, name);
        assert.equal(m.offsetBits, off * 8, `${name} offset`);
        assert.equal(m.sizeBytes, size, `${name} size`);
        assert.equal(m.bitfieldBits, 0);
      }
      assert.equal(member(ms, "addr").typeName, "union addr");
      assert.equal(member(ms, "addr").kind, "UNION");
      assert.equal(member(ms, "in").typeName, "struct inner");
      assert.equal(member(ms, "cv").typeName, "const volatile my_u32");
      assert.equal(member(ms, "cv").kind, "INT");
      assert.equal(member(ms, "arr").typeName, "__u32[2][3]");
      assert.equal(member(ms, "arr").nelems, 2);
      assert.equal(member(ms, "c").kind, "ENUM");
      assert.equal(member(ms, "ptr").kind, "PTR");
      // Bitfields.
      assert.deepEqual(
        [member(ms, "bf1").offsetBits, member(ms, "bf1").bitfieldBits],
        [76 * 8, 3],
      );
      assert.deepEqual(
        [member(ms, "bf2").offsetBits, member(ms, "bf2").bitfieldBits],
        [76 * 8 + 3, 5],
      );
      // Anonymous union: fields with offsets relative to the outer struct.
      const anon = member(ms, "");
      assert.equal(anon.typeName, "union (anon)");
      assert.deepEqual(
        anon.fields?.map((f) => [f.name, f.offsetBits, f.sizeBytes]),
        [["x", 576, 2], ["y", 576, 4]],
      );

      const inner = structs.get("inner");
      assert.equal(inner?.size, 6);
      assert.deepEqual(
        inner?.members.map((m) => [m.name, m.offsetBits, m.sizeBytes, m.typeName]),
        [["a", 0, 2, "__u16"], ["b", 16, 3, "__u8[3]"]],
      );
      const addr = structs.get("addr");
      assert.equal(addr?.kind, "union");
      assert.equal(addr?.size, 16);
      assert.deepEqual(
        addr?.members.map((m) => [m.name, m.offsetBits, m.sizeBytes]),
        [["v4", 0, 4], ["v6", 0, 16]],
      );

      // Enum values, including the signed one.
      const btf = readBtf(obj);
      const color = btf.types.find((t) => t.kind === BTF_KIND.ENUM && t.name === "color");
      assert.deepEqual(
        color?.enumValues?.map((e) => [e.name, e.value]),
        [["RED", 0n], ["GREEN", 7n], ["BLUE", -1n]],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

interface BpftoolType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  members?: { name: string; type_id: number; bits_offset: number; bitfield_size?: number }[];
}

/** Compares every type's kind/name/size and struct members with `bpftool btf dump`. */
async function crossCheck(path: string): Promise<number> {
  const out = await new Deno.Command("bpftool", {
    args: ["-j", "btf", "dump", "file", path, "format", "raw"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const ref = JSON.parse(new TextDecoder().decode(out.stdout)).types as BpftoolType[];
  const btf = readBtf(await Deno.readFile(path));
  assert.equal(btf.types.length - 1, ref.length);
  for (const r of ref) {
    const t = btf.types[r.id];
    const what = `type ${r.id} ${r.kind} ${r.name}`;
    assert.equal(t.kindName, r.kind, what);
    assert.equal(t.name || "(anon)", r.name, what);
    if (r.size !== undefined && t.size !== undefined) assert.equal(t.size, r.size, what);
    if (r.members) {
      assert.deepEqual(
        t.members?.map((m) => [m.name || "(anon)", m.typeId, m.offsetBits, m.bitfieldBits]),
        r.members.map((m) => [m.name, m.type_id, m.bits_offset, m.bitfield_size ?? 0]),
        what,
      );
    }
  }
  return ref.length;
}

Deno.test({
  name: "btf: raw types agree with bpftool",
  ignore: !hasClang || !hasBpftool,
  fn: async () => {
    const { path, dir } = await compile(SOURCE);
    try {
      assert.ok(await crossCheck(path) > 20);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    // The project's own objects, when built.
    for (const obj of ["einat.bpf.o", "noop.bpf.o"]) {
      const p = new URL(`../bpf/${obj}`, import.meta.url).pathname;
      try {
        await Deno.stat(p);
      } catch {
        continue;
      }
      await crossCheck(p);
    }
  },
});

Deno.test("btf: rejects non-ELF, non-64-bit and missing .BTF", () => {
  assert.throws(() => readStructs(new Uint8Array(100)), /not an ELF/);
  const elf = new Uint8Array(64);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 1, 1]);
  assert.throws(() => readStructs(elf), /not ELF64/);
  elf[4] = 2;
  // No section headers at all.
  assert.equal(elfSection(elf, ".BTF"), undefined);
  assert.throws(() => readStructs(elf), /no .BTF/);
  assert.throws(() => parseBtf(new Uint8Array(24)), /bad BTF magic/);
});
