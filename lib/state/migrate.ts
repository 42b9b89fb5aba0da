/**
 * Carrying pinned bindings and sessions over a layout change (an einat upgrade that moved,
 * added or dropped fields of their structs), from the BTF each map was created with to the BTF
 * of this einat's object: fields are matched by name, recursively, so a field keeps its meaning
 * by keeping its name (a change of meaning renames the field, or bumps the map's meaning version
 * in lib/state/pin.ts, which refuses the migration). A field new in this layout starts as zeros;
 * one the old layout had and this one has not is dropped.
 *
 * Refused, with the field named: a field whose size or kind changed (a number that grew, a
 * number that became a struct), an array of another length, a union of another size, bitfields.
 *
 * ```ts
 * const c = planConversion(oldBtf, oldValueId, newBtf, newValueId);
 * convert(c, oldValue, newValue); // newValue: c.newSize zeroed bytes
 * ```
 * @module
 */

import {
  type Btf,
  BTF_KIND,
  type BtfType,
  namedStruct,
  parseBtf,
  resolveType,
  typeName,
  typeSize,
} from "../btf.ts";
import * as bpf from "../ffi/libbpf.ts";

/** Bytes `[from, from + len)` of an old value go to `[to, to + len)` of the new one. */
export interface Copy {
  from: number;
  to: number;
  len: number;
}

/** How values of one type are rewritten as another ({@link planConversion}). */
export interface Conversion {
  oldSize: number;
  newSize: number;
  /** In order of `to`, adjacent ones merged. */
  copies: Copy[];
  /** Fields of the new layout without an old one (zeroed), as `struct.field` paths. */
  added: string[];
  /** Fields of the old layout without a new one (their content goes). */
  dropped: string[];
}

/** A layout change that cannot be carried over, naming the field. */
export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MigrationError";
  }
}

const NUMBERS: ReadonlySet<number> = new Set([
  BTF_KIND.INT,
  BTF_KIND.ENUM,
  BTF_KIND.ENUM64,
  BTF_KIND.FLOAT,
]);

/**
 * How to rewrite a value of type `oldId` (in `oldBtf`) as one of type `newId` (in `newBtf`).
 * Throws {@link MigrationError} when a field cannot be carried over.
 */
export function planConversion(
  oldBtf: Btf,
  oldId: number,
  newBtf: Btf,
  newId: number,
): Conversion {
  const oldSize = typeSize(oldBtf, oldId), newSize = typeSize(newBtf, newId);
  const root = resolveType(newBtf, newId).name || typeName(newBtf, newId);
  const oldRoot = resolveType(oldBtf, oldId).name || typeName(oldBtf, oldId);
  if (oldSize === undefined || newSize === undefined) {
    throw new MigrationError(`${root}: a type without a size`);
  }
  const out: Conversion = { oldSize, newSize, copies: [], added: [], dropped: [] };
  plan(oldBtf, oldId, newBtf, newId, 0, 0, [oldRoot, root], out, 0);
  out.copies = merged(out.copies);
  return out;
}

function plan(
  ob: Btf,
  oid: number,
  nb: Btf,
  nid: number,
  from: number,
  to: number,
  paths: [old: string, now: string],
  out: Conversion,
  depth: number,
): void {
  const [oldPath, path] = paths;
  if (depth > 16) throw new MigrationError(`${path}: nested too deep`);
  const o = resolveType(ob, oid), n = resolveType(nb, nid);
  const os = typeSize(ob, oid), ns = typeSize(nb, nid);
  if (os === undefined || ns === undefined) {
    throw new MigrationError(`${path}: a type without a size`);
  }
  const kinds = `a ${kindOf(o)}, now a ${kindOf(n)}`;
  if (NUMBERS.has(o.kind) && NUMBERS.has(n.kind)) {
    if (os !== ns) throw new MigrationError(`${path}: ${bytes(os)}, now ${ns}`);
    if (partial(o) || partial(n)) throw new MigrationError(`${path}: a bitfield`);
    out.copies.push({ from, to, len: ns });
    return;
  }
  if (o.kind !== n.kind) throw new MigrationError(`${path}: ${kinds}`);
  switch (n.kind) {
    case BTF_KIND.UNION:
      // Its members share the bytes: carried over whole, when it kept its size.
      if (os !== ns) throw new MigrationError(`${path}: a union of ${os} bytes, now ${ns}`);
      out.copies.push({ from, to, len: ns });
      return;
    case BTF_KIND.ARRAY: {
      if (o.nelems !== n.nelems) {
        throw new MigrationError(`${path}: ${o.nelems} elements, now ${n.nelems}`);
      }
      const oe = typeSize(ob, o.elemTypeId ?? 0) ?? 0, ne = typeSize(nb, n.elemTypeId ?? 0) ?? 0;
      for (let i = 0; i < (n.nelems ?? 0); i++) {
        plan(
          ob,
          o.elemTypeId ?? 0,
          nb,
          n.elemTypeId ?? 0,
          from + i * oe,
          to + i * ne,
          [`${oldPath}[${i}]`, `${path}[${i}]`],
          out,
          depth + 1,
        );
      }
      return;
    }
    case BTF_KIND.STRUCT: {
      const olds = new Map((o.members ?? []).map((m) => [m.name, m]));
      for (const m of [...(o.members ?? []), ...(n.members ?? [])]) {
        if (m.bitfieldBits !== 0 || m.offsetBits % 8 !== 0) {
          throw new MigrationError(`${path}.${m.name}: a bitfield`);
        }
        if (m.name === "") throw new MigrationError(`${path}: an anonymous member`);
      }
      const news = new Set((n.members ?? []).map((m) => m.name));
      for (const m of n.members ?? []) {
        const was = olds.get(m.name);
        if (!was) {
          out.added.push(`${path}.${m.name}`);
          continue;
        }
        plan(
          ob,
          was.typeId,
          nb,
          m.typeId,
          from + was.offsetBits / 8,
          to + m.offsetBits / 8,
          [`${oldPath}.${m.name}`, `${path}.${m.name}`],
          out,
          depth + 1,
        );
      }
      for (const m of o.members ?? []) {
        if (!news.has(m.name)) out.dropped.push(`${oldPath}.${m.name}`);
      }
      return;
    }
    default:
      throw new MigrationError(`${path}: a ${kindOf(n)} cannot be carried over`);
  }
}

/** An INT that uses only some bits of its bytes (a bitfield in the old BTF encoding). */
function partial(t: BtfType): boolean {
  const bits = (t.size ?? 0) * 8;
  return t.kind === BTF_KIND.INT && ((t.intOffset ?? 0) !== 0 || (t.intBits ?? bits) !== bits);
}

function bytes(n: number): string {
  return n === 1 ? "1 byte" : `${n} bytes`;
}

function kindOf(t: BtfType): string {
  return NUMBERS.has(t.kind) ? "number" : t.kindName.toLowerCase();
}

function merged(copies: Copy[]): Copy[] {
  const sorted = [...copies].sort((a, b) => a.to - b.to);
  const out: Copy[] = [];
  for (const c of sorted) {
    const last = out[out.length - 1];
    if (last && last.from + last.len === c.from && last.to + last.len === c.to) last.len += c.len;
    else out.push({ ...c });
  }
  return out;
}

/** True when `c` leaves values as they are (same size, every byte in place). */
export function isIdentity(c: Conversion): boolean {
  return c.oldSize === c.newSize && c.copies.length === 1 && c.copies[0].from === 0 &&
    c.copies[0].to === 0 && c.copies[0].len === c.newSize;
}

/**
 * Writes the old value at `src[srcOff..]` as the new one at `dst[dstOff..]`: the fields it
 * carries over are copied, the rest of the new value is zeroed.
 */
export function convert(c: Conversion, src: Uint8Array, dst: Uint8Array, srcOff = 0, dstOff = 0) {
  dst.fill(0, dstOff, dstOff + c.newSize);
  for (const k of c.copies) {
    dst.set(src.subarray(srcOff + k.from, srcOff + k.from + k.len), dstOff + k.to);
  }
}

// ---------------------------------------------------------------------------------------------
// Maps

/** How the entries of one pinned map become entries of this einat's layout. */
export interface MapConversion {
  key: Conversion;
  value: Conversion;
}

/** The identity of an array's index (a u32): indexes keep their places. */
const INDEX: Conversion = {
  oldSize: 4,
  newSize: 4,
  copies: [{ from: 0, to: 0, len: 4 }],
  added: [],
  dropped: [],
};

/** A named struct or union of `btf`, by id; throws {@link MigrationError} when absent. */
export function structId(btf: Btf, name: string): number {
  const t = namedStruct(btf, name);
  if (!t) throw new MigrationError(`no struct ${name} in the layout it was written with`);
  return t.id;
}

/** What the conversion of one map goes from and to. */
export interface MapTypes {
  /** The map's key struct, by name; null for an array's index. */
  key: string | null;
  /** The map's value struct, by name. */
  value: string;
  /** This einat's map type (`BPF_MAP_TYPE_*`) and key and value type ids in `btf`. */
  mapType: number;
  ids: { key: number; value: number };
  btf: Btf;
}

/**
 * Plans the conversion of the pinned map `fd` to this einat's layout `to`. The old layout comes
 * from `written` (the BTF the einat that wrote the state left beside it, structs found by
 * name; not used when they are not of the map's key and value sizes), else from the BTF the
 * kernel keeps for the map (by the ids in its info; reading it needs
 * CAP_SYS_ADMIN). Throws {@link MigrationError} when it cannot be carried over: a map of another
 * type or per-CPU, a layout unknown, a field that changed, a hash key that gained or lost a field
 * (its entries would not be found again).
 */
export function planMapConversion(fd: number, written: Btf | null, to: MapTypes): MapConversion {
  const info = bpf.mapInfo(fd);
  if (info.type !== to.mapType) {
    throw new MigrationError(`a map of type ${info.type}, now ${to.mapType}`);
  }
  if (bpf.isPerCpu(info.type)) throw new MigrationError("a per-CPU map");
  let btf: Btf, keyId: number, valueId: number;
  if (written && !sized(written, to, info.keySize, info.valueSize)) written = null;
  if (written) {
    btf = written;
    keyId = to.key === null ? 0 : structId(btf, to.key);
    valueId = structId(btf, to.value);
  } else {
    if (info.btfId === 0 || info.btfValueTypeId === 0) {
      throw new MigrationError("created without BTF: its layout is unknown");
    }
    try {
      btf = parseBtf(bpf.btfRawById(info.btfId));
    } catch (e) {
      const denied = e instanceof bpf.BpfError &&
        (e.errno === bpf.Errno.EPERM || e.errno === bpf.Errno.EACCES);
      if (!denied) throw e;
      throw new MigrationError(
        "its layout is unknown: no einat_btf beside it, and reading its BTF from the kernel " +
          "needs CAP_SYS_ADMIN (run this einat once with it, e.g. as root)",
      );
    }
    keyId = info.btfKeyTypeId;
    valueId = info.btfValueTypeId;
  }
  let key = INDEX;
  if (to.key === null) {
    if (info.keySize !== 4) throw new MigrationError(`an index of ${info.keySize} bytes`);
  } else {
    key = planConversion(btf, keyId, to.btf, to.ids.key);
    if (key.added.length || key.dropped.length) {
      throw new MigrationError(
        `its key gained or lost fields (${[...key.added, ...key.dropped].join(", ")}): ` +
          "its entries could not be found again",
      );
    }
  }
  return { key, value: planConversion(btf, valueId, to.btf, to.ids.value) };
}

/** Whether the structs `to` names in `btf` have the map's key and value sizes. */
function sized(btf: Btf, to: MapTypes, keySize: number, valueSize: number): boolean {
  const size = (name: string) => namedStruct(btf, name)?.size;
  return size(to.value) === valueSize && (to.key === null ? 4 : size(to.key)) === keySize;
}

/**
 * The whole layout of the struct or union `name` of `btf`, nested types included (every member's
 * name, offset and type down to the numbers), as text to compare; null when `btf` has no such
 * struct. The stamp (lib/state/pin.ts) describes a struct's own members only.
 */
export function deepLayout(btf: Btf, name: string): string | null {
  const t = namedStruct(btf, name);
  return t ? describe(btf, t.id, 0) : null;
}

function describe(btf: Btf, id: number, depth: number): string {
  const t = resolveType(btf, id);
  if (depth > 16) return "...";
  switch (t.kind) {
    case BTF_KIND.STRUCT:
    case BTF_KIND.UNION: {
      const members = (t.members ?? []).map((m) =>
        `${m.name}@${m.offsetBits}${m.bitfieldBits ? `:${m.bitfieldBits}` : ""}=${
          describe(btf, m.typeId, depth + 1)
        }`
      );
      return `${t.kind === BTF_KIND.STRUCT ? "s" : "u"}${t.size}{${members.join(",")}}`;
    }
    case BTF_KIND.ARRAY:
      return `[${t.nelems}]${describe(btf, t.elemTypeId ?? 0, depth + 1)}`;
    default:
      return partial(t)
        ? `${kindOf(t)}${t.size}/${t.intOffset}:${t.intBits}`
        : `${kindOf(t)}${typeSize(btf, id) ?? "?"}`;
  }
}

function allZero(b: Uint8Array, off: number, len: number): boolean {
  for (let i = off; i < off + len; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Writes every entry of the map `oldFd` into `newFd` as `c` converts it, read in batches; an
 * array's all-zero values (its free entries) are passed over, and so are those `keep` (given the
 * new value, which it may amend) refuses. Returns the entries written.
 */
export function copyConverted(
  oldFd: number,
  newFd: number,
  c: MapConversion,
  keep: (value: Uint8Array) => boolean = () => true,
): number {
  const info = bpf.mapInfo(oldFd);
  const array = info.type === bpf.MapType.ARRAY;
  const key = new Uint8Array(c.key.newSize), value = new Uint8Array(c.value.newSize);
  let n = 0;
  bpf.forEachEntry(oldFd, info.keySize, info.valueSize, (e) => {
    if (array && allZero(e.values, e.vo, info.valueSize)) return;
    convert(c.key, e.keys, key, e.ko);
    convert(c.value, e.values, value, e.vo);
    if (!keep(value)) return;
    bpf.mapUpdate(newFd, key, value);
    n++;
  }, 1024);
  return n;
}
