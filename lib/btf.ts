/**
 * A pure TypeScript reader of the `.BTF` section of a little-endian ELF64 BPF object, used to
 * check the TypeScript codecs of map keys and values against the C structs.
 *
 * ```ts
 * const structs = readStructs(await Deno.readFile("bpf/einat.bpf.o"));
 * const key = structs.get("binding_key"); // { size, members: [{ name, offsetBits, ... }] }
 * ```
 * @module
 */

/** BTF kinds (`BTF_KIND_*`). */
export const BTF_KIND = {
  UNKN: 0,
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

const KIND_NAMES = Object.fromEntries(Object.entries(BTF_KIND).map(([k, v]) => [v, k]));

/** A member of a struct or union type as stored in BTF. */
export interface BtfRawMember {
  name: string;
  typeId: number;
  offsetBits: number;
  /** Bitfield width in bits when the member is a bitfield, else 0. */
  bitfieldBits: number;
}

/** One BTF type. Kind-specific fields are set only for their kinds. */
export interface BtfType {
  id: number;
  kind: number;
  /** Kind name, e.g. "STRUCT". */
  kindName: string;
  name: string;
  /** Byte size for INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC. */
  size?: number;
  /** Referenced type for PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, VAR, TYPE_TAG, ... */
  typeId?: number;
  /** INT: bit width, bit offset and encoding (1 signed, 2 char, 4 bool). */
  intBits?: number;
  intOffset?: number;
  intEncoding?: number;
  /** ARRAY. */
  elemTypeId?: number;
  nelems?: number;
  /** STRUCT / UNION. */
  members?: BtfRawMember[];
  /** DATASEC: its variables (VAR type ids) with byte offset and size. */
  vars?: { typeId: number; offset: number; size: number }[];
  /** ENUM / ENUM64 values. */
  enumValues?: { name: string; value: bigint }[];
}

/** A member resolved by `readStructs`. */
export interface StructMember {
  name: string;
  /** Offset from the start of the struct, in bits. */
  offsetBits: number;
  /** Size in bytes, when the type has one (undefined for e.g. a flexible array of unknown). */
  sizeBytes?: number;
  /** Bitfield width in bits, or 0. */
  bitfieldBits: number;
  /** Readable type, e.g. "__u32", "struct inner", "__u8[16]", "union (anon)". */
  typeName: string;
  /** Kind name of the member's type after stripping typedef/const/volatile/restrict. */
  kind: string;
  /** Element count for arrays (outermost dimension). */
  nelems?: number;
  /**
   * For a member of anonymous struct/union type: its members, with offsets relative to the
   * outer struct.
   */
  fields?: StructMember[];
}

/** A struct or union resolved by `readStructs`. */
export interface StructInfo {
  kind: "struct" | "union";
  size: number;
  members: StructMember[];
}

/** A parsed BTF blob. `types[0]` is void. */
export interface Btf {
  types: BtfType[];
  /** Looks up a string by offset. */
  str(off: number): string;
}

interface ElfSectionHeader {
  name: string;
  offset: number;
  size: number;
  link: number;
  type: number;
}

/** The section headers of a little-endian ELF64 file, with their names. */
function elfSections(elf: Uint8Array): ElfSectionHeader[] {
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || v.getUint32(0) !== 0x7f454c46) throw new Error("not an ELF file");
  if (elf[4] !== 2) throw new Error("not ELF64");
  if (elf[5] !== 1) throw new Error("not little-endian ELF");
  const shoff = Number(v.getBigUint64(0x28, true));
  const shentsize = v.getUint16(0x3a, true);
  let shnum = v.getUint16(0x3c, true);
  let shstrndx = v.getUint16(0x3e, true);
  if (shoff === 0) return [];
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    if (o + 64 > elf.length) throw new Error("section header out of range");
    return {
      nameOff: v.getUint32(o, true),
      offset: Number(v.getBigUint64(o + 24, true)),
      size: Number(v.getBigUint64(o + 32, true)),
      link: v.getUint32(o + 40, true),
      type: v.getUint32(o + 4, true),
    };
  };
  // Extended numbering: real counts live in section 0.
  if (shnum === 0) shnum = Number(v.getBigUint64(shoff + 32, true));
  if (shstrndx === 0xffff) shstrndx = sh(0).link;
  const strs = sh(shstrndx);
  const out: ElfSectionHeader[] = [];
  for (let i = 0; i < shnum; i++) {
    const { nameOff, ...rest } = sh(i);
    out.push({ name: cString(elf, strs.offset + nameOff), ...rest });
  }
  return out;
}

const utf8 = new TextDecoder();

/** The NUL-terminated string at `start` of `b`. */
function cString(b: Uint8Array, start: number): string {
  let end = start;
  while (end < b.length && b[end] !== 0) end++;
  return utf8.decode(b.subarray(start, end));
}

/** Returns the bytes of the ELF section named `name`, or undefined. */
export function elfSection(elf: Uint8Array, name: string): Uint8Array | undefined {
  const s = elfSections(elf).find((x) => x.name === name);
  if (!s) return undefined;
  if (s.type === 8) return new Uint8Array(0); // SHT_NOBITS
  if (s.offset + s.size > elf.length) throw new Error(`section ${name} out of range`);
  return elf.subarray(s.offset, s.offset + s.size);
}

/**
 * The symbols of ELF section `name` (from `.symtab`): name, offset in the section (st_value) and
 * size. A BPF object's BTF leaves its data sections' variable offsets to the loader (libbpf
 * takes them from here).
 */
export function elfSectionSymbols(
  elf: Uint8Array,
  name: string,
): Map<string, { offset: number; size: number }> {
  const secs = elfSections(elf);
  const idx = secs.findIndex((x) => x.name === name);
  const out = new Map<string, { offset: number; size: number }>();
  const symtab = secs.find((x) => x.type === 2); // SHT_SYMTAB
  if (idx < 0 || !symtab) return out;
  const strtab = secs[symtab.link];
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  for (let o = symtab.offset; o + 24 <= symtab.offset + symtab.size; o += 24) {
    if (v.getUint16(o + 6, true) !== idx) continue;
    const sym = cString(elf, strtab.offset + v.getUint32(o, true));
    if (sym === "") continue;
    out.set(sym, {
      offset: Number(v.getBigUint64(o + 8, true)),
      size: Number(v.getBigUint64(o + 16, true)),
    });
  }
  return out;
}

/** Parses a raw BTF blob (header, type and string sections). */
export function parseBtf(btf: Uint8Array): Btf {
  const v = new DataView(btf.buffer, btf.byteOffset, btf.byteLength);
  if (btf.length < 24) throw new Error("BTF too short");
  const magic = v.getUint16(0, true);
  if (magic !== 0xeb9f) throw new Error(`bad BTF magic 0x${magic.toString(16)}`);
  const hdrLen = v.getUint32(4, true);
  const typeOff = hdrLen + v.getUint32(8, true);
  const typeLen = v.getUint32(12, true);
  const strOff = hdrLen + v.getUint32(16, true);
  const strLen = v.getUint32(20, true);
  if (typeOff + typeLen > btf.length || strOff + strLen > btf.length) {
    throw new Error("BTF sections out of range");
  }
  const dec = new TextDecoder();
  const str = (off: number): string => {
    if (off >= strLen) throw new Error(`BTF string offset ${off} out of range`);
    const start = strOff + off;
    let end = start;
    while (end < strOff + strLen && btf[end] !== 0) end++;
    return dec.decode(btf.subarray(start, end));
  };
  const types: BtfType[] = [{ id: 0, kind: 0, kindName: "VOID", name: "" }];
  let p = typeOff;
  const end = typeOff + typeLen;
  const u32 = (o: number) => v.getUint32(o, true);
  while (p < end) {
    if (p + 12 > end) throw new Error("truncated BTF type");
    const nameOff = u32(p);
    const info = u32(p + 4);
    const sizeOrType = u32(p + 8);
    const vlen = info & 0xffff;
    const kind = (info >>> 24) & 0x1f;
    const kflag = (info >>> 31) !== 0;
    p += 12;
    const t: BtfType = {
      id: types.length,
      kind,
      kindName: KIND_NAMES[kind] ?? `KIND${kind}`,
      name: str(nameOff),
    };
    switch (kind) {
      case BTF_KIND.INT: {
        const x = u32(p);
        p += 4;
        t.size = sizeOrType;
        t.intBits = x & 0xff;
        t.intOffset = (x >>> 16) & 0xff;
        t.intEncoding = (x >>> 24) & 0x0f;
        break;
      }
      case BTF_KIND.ARRAY:
        t.elemTypeId = u32(p);
        t.nelems = u32(p + 8);
        p += 12;
        break;
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION:
        t.size = sizeOrType;
        t.members = [];
        for (let i = 0; i < vlen; i++, p += 12) {
          const off = u32(p + 8);
          t.members.push({
            name: str(u32(p)),
            typeId: u32(p + 4),
            offsetBits: kflag ? off & 0xffffff : off,
            bitfieldBits: kflag ? off >>> 24 : 0,
          });
        }
        break;
      case BTF_KIND.ENUM:
        t.size = sizeOrType;
        t.enumValues = [];
        for (let i = 0; i < vlen; i++, p += 8) {
          const val = kflag ? BigInt(v.getInt32(p + 4, true)) : BigInt(u32(p + 4));
          t.enumValues.push({ name: str(u32(p)), value: val });
        }
        break;
      case BTF_KIND.ENUM64:
        t.size = sizeOrType;
        t.enumValues = [];
        for (let i = 0; i < vlen; i++, p += 12) {
          let val = (BigInt(u32(p + 8)) << 32n) | BigInt(u32(p + 4));
          if (kflag) val = BigInt.asIntN(64, val);
          t.enumValues.push({ name: str(u32(p)), value: val });
        }
        break;
      case BTF_KIND.FUNC_PROTO:
        t.typeId = sizeOrType;
        p += 8 * vlen;
        break;
      case BTF_KIND.VAR:
        t.typeId = sizeOrType;
        p += 4;
        break;
      case BTF_KIND.DATASEC:
        t.size = sizeOrType;
        t.vars = [];
        for (let i = 0; i < vlen; i++, p += 12) {
          t.vars.push({ typeId: u32(p), offset: u32(p + 4), size: u32(p + 8) });
        }
        break;
      case BTF_KIND.DECL_TAG:
        t.typeId = sizeOrType;
        p += 4;
        break;
      case BTF_KIND.FLOAT:
        t.size = sizeOrType;
        break;
      case BTF_KIND.PTR:
      case BTF_KIND.FWD:
      case BTF_KIND.TYPEDEF:
      case BTF_KIND.VOLATILE:
      case BTF_KIND.CONST:
      case BTF_KIND.RESTRICT:
      case BTF_KIND.FUNC:
      case BTF_KIND.TYPE_TAG:
        t.typeId = sizeOrType;
        break;
      default:
        throw new Error(`unknown BTF kind ${kind} at type ${t.id}`);
    }
    types.push(t);
  }
  return { types, str };
}

const MODIFIERS: number[] = [
  BTF_KIND.TYPEDEF,
  BTF_KIND.VOLATILE,
  BTF_KIND.CONST,
  BTF_KIND.RESTRICT,
  BTF_KIND.TYPE_TAG,
];

function typeAt(btf: Btf, id: number): BtfType {
  const t = btf.types[id];
  if (!t) throw new Error(`BTF type id ${id} out of range`);
  return t;
}

/** Follows typedef/const/volatile/restrict/type_tag to the underlying type. */
export function resolveType(btf: Btf, id: number): BtfType {
  let t = typeAt(btf, id);
  for (let i = 0; i < 64 && MODIFIERS.includes(t.kind); i++) t = typeAt(btf, t.typeId ?? 0);
  return t;
}

/** Byte size of a type, or undefined when it has none (void, func, fwd). */
export function typeSize(btf: Btf, id: number): number | undefined {
  const t = resolveType(btf, id);
  switch (t.kind) {
    case BTF_KIND.INT:
    case BTF_KIND.STRUCT:
    case BTF_KIND.UNION:
    case BTF_KIND.ENUM:
    case BTF_KIND.ENUM64:
    case BTF_KIND.FLOAT:
      return t.size;
    case BTF_KIND.PTR:
      return 8;
    case BTF_KIND.ARRAY: {
      const e = typeSize(btf, t.elemTypeId ?? 0);
      return e === undefined ? undefined : e * (t.nelems ?? 0);
    }
    default:
      return undefined;
  }
}

/** A readable C-like name of a type, e.g. "const __u32", "struct foo", "__u8[6]". */
export function typeName(btf: Btf, id: number, depth = 0): string {
  const t = typeAt(btf, id);
  if (depth > 32) return "...";
  const anon = (w: string) => `${w} ${t.name || "(anon)"}`;
  switch (t.kind) {
    case BTF_KIND.UNKN:
      return "void";
    case BTF_KIND.STRUCT:
      return anon("struct");
    case BTF_KIND.UNION:
      return anon("union");
    case BTF_KIND.ENUM:
    case BTF_KIND.ENUM64:
      return anon("enum");
    case BTF_KIND.FWD:
      return anon("fwd");
    case BTF_KIND.PTR:
      return `${typeName(btf, t.typeId ?? 0, depth + 1)} *`;
    case BTF_KIND.ARRAY: {
      // C order: the outermost dimension first, e.g. __u32[2][3].
      let dims = "";
      let cur = t;
      for (let i = 0; i < 32 && cur.kind === BTF_KIND.ARRAY; i++) {
        dims += `[${cur.nelems}]`;
        cur = typeAt(btf, cur.elemTypeId ?? 0);
      }
      return `${typeName(btf, cur.id, depth + 1)}${dims}`;
    }
    case BTF_KIND.CONST:
      return `const ${typeName(btf, t.typeId ?? 0, depth + 1)}`;
    case BTF_KIND.VOLATILE:
      return `volatile ${typeName(btf, t.typeId ?? 0, depth + 1)}`;
    case BTF_KIND.RESTRICT:
      return `restrict ${typeName(btf, t.typeId ?? 0, depth + 1)}`;
    default:
      return t.name || t.kindName.toLowerCase();
  }
}

function resolveMembers(btf: Btf, t: BtfType, base: number, depth: number): StructMember[] {
  return (t.members ?? []).map((m) => {
    const r = resolveType(btf, m.typeId);
    const out: StructMember = {
      name: m.name,
      offsetBits: base + m.offsetBits,
      sizeBytes: typeSize(btf, m.typeId),
      bitfieldBits: m.bitfieldBits,
      typeName: typeName(btf, m.typeId),
      kind: r.kindName,
    };
    if (out.sizeBytes === undefined) delete out.sizeBytes;
    if (r.kind === BTF_KIND.ARRAY) out.nelems = r.nelems;
    if (
      m.name === "" && (r.kind === BTF_KIND.STRUCT || r.kind === BTF_KIND.UNION) && depth < 16
    ) {
      out.fields = resolveMembers(btf, r, base + m.offsetBits, depth + 1);
    }
    return out;
  });
}

/** The struct or union named `name` in `btf` (the first of that name), or undefined. */
export function namedStruct(btf: Btf, name: string): BtfType | undefined {
  return btf.types.find((t) =>
    (t.kind === BTF_KIND.STRUCT || t.kind === BTF_KIND.UNION) && t.name === name
  );
}

/** Named structs and unions of a parsed BTF, with member sizes resolved. */
export function structsOf(btf: Btf): Map<string, StructInfo> {
  const out = new Map<string, StructInfo>();
  for (const t of btf.types) {
    if (t.kind !== BTF_KIND.STRUCT && t.kind !== BTF_KIND.UNION) continue;
    if (!t.name || out.has(t.name)) continue;
    out.set(t.name, {
      kind: t.kind === BTF_KIND.STRUCT ? "struct" : "union",
      size: t.size ?? 0,
      members: resolveMembers(btf, t, 0, 0),
    });
  }
  return out;
}

/** Reads the `.BTF` section of an ELF object. Throws when there is none. */
export function readBtf(elfBytes: Uint8Array): Btf {
  const sec = elfSection(elfBytes, ".BTF");
  if (!sec) throw new Error("no .BTF section (compile with -g)");
  return parseBtf(sec);
}

/**
 * Named structs and unions of the `.BTF` section of a BPF ELF object, by name (C tag
 * namespace: the first definition of a name wins).
 */
export function readStructs(elfBytes: Uint8Array): Map<string, StructInfo> {
  return structsOf(readBtf(elfBytes));
}

/**
 * Variables of a data section (e.g. ".rodata"): name, byte offset and size. The offsets come
 * from the ELF symbols, as libbpf takes them: an object's BTF leaves them 0.
 */
export function datasecVars(
  elfBytes: Uint8Array,
  section: string,
): { name: string; offset: number; size: number }[] {
  const btf = readBtf(elfBytes);
  const sec = btf.types.find((t) => t.kind === BTF_KIND.DATASEC && t.name === section);
  const syms = elfSectionSymbols(elfBytes, section);
  return (sec?.vars ?? []).map((x) => {
    const name = btf.types[x.typeId].name;
    return { name, offset: syms.get(name)?.offset ?? x.offset, size: x.size };
  });
}
