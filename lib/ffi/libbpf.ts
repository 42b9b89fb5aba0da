/**
 * Thin typed bindings to libbpf (`libbpf.so.1`, opened lazily on first use): objects, maps,
 * programs, map element operations, TC (clsact) attachment, BPF_PROG_TEST_RUN and the
 * libbpf print hook. No policy lives here.
 *
 * Conventions: libbpf 1.x int-returning calls give `-errno`; pointer-returning calls give
 * null and set `errno`. Every failure becomes a {@link BpfError}. Every buffer whose address
 * is stored in a C struct is allocated off the V8 heap and kept referenced while C may use it.
 * libbpf is not thread-safe per object: do not use an object while `loadObject` runs.
 * @module
 */

import * as log from "../log.ts";
import { libPath } from "../deps.ts";
import { cString, decodeCString, errno, errnoMessage, libc } from "./libc.ts";

// ---------------------------------------------------------------------------------------------
// Library loading

const LIBBPF = "libbpf.so.1";

const TEST_RUN = { parameters: ["i32", "buffer"], result: "i32" } as const;

const SYMBOLS = {
  libbpf_major_version: { parameters: [], result: "u32" },
  libbpf_minor_version: { parameters: [], result: "u32" },
  libbpf_strerror: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  libbpf_set_print: { parameters: ["function"], result: "pointer" },

  bpf_object__open_mem: { parameters: ["buffer", "usize", "buffer"], result: "pointer" },
  bpf_object__load: { parameters: ["pointer"], result: "i32", nonblocking: true },
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__find_program_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__next_map: { parameters: ["pointer", "pointer"], result: "pointer" },
  bpf_object__next_program: { parameters: ["pointer", "pointer"], result: "pointer" },

  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_map__max_entries: { parameters: ["pointer"], result: "u32" },
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__map_flags: { parameters: ["pointer"], result: "u32" },
  bpf_map__set_map_flags: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__set_map_extra: { parameters: ["pointer", "u64"], result: "i32" },
  bpf_map__key_size: { parameters: ["pointer"], result: "u32" },
  bpf_map__value_size: { parameters: ["pointer"], result: "u32" },
  bpf_map__initial_value: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_map__set_initial_value: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  bpf_map__set_pin_path: { parameters: ["pointer", "buffer"], result: "i32" },
  bpf_map__reuse_fd: { parameters: ["pointer", "i32"], result: "i32" },
  bpf_map__name: { parameters: ["pointer"], result: "pointer" },
  bpf_map__is_internal: { parameters: ["pointer"], result: "bool" },
  bpf_map__type: { parameters: ["pointer"], result: "u32" },
  bpf_map__btf_key_type_id: { parameters: ["pointer"], result: "u32" },
  bpf_map__btf_value_type_id: { parameters: ["pointer"], result: "u32" },

  bpf_program__fd: { parameters: ["pointer"], result: "i32" },
  bpf_program__set_log_level: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_program__set_autoload: { parameters: ["pointer", "bool"], result: "i32" },
  bpf_program__name: { parameters: ["pointer"], result: "pointer" },

  bpf_map_update_elem: { parameters: ["i32", "buffer", "buffer", "u64"], result: "i32" },
  bpf_map_lookup_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_map_delete_elem: { parameters: ["i32", "buffer"], result: "i32" },
  bpf_map_get_next_key: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_map_lookup_batch: {
    parameters: ["i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  bpf_obj_get: { parameters: ["buffer"], result: "i32" },
  bpf_obj_get_opts: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_obj_get_info_by_fd: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_btf_get_fd_by_id: { parameters: ["u32"], result: "i32" },
  bpf_prog_get_fd_by_id: { parameters: ["u32"], result: "i32" },
  bpf_map_create: {
    parameters: ["u32", "buffer", "u32", "u32", "u32", "pointer"],
    result: "i32",
  },
  libbpf_num_possible_cpus: { parameters: [], result: "i32" },
  bpf_enable_stats: { parameters: ["i32"], result: "i32" },
  bpf_obj_pin: { parameters: ["i32", "buffer"], result: "i32" },
  bpf_link_create: { parameters: ["i32", "i32", "u32", "pointer"], result: "i32" },
  bpf_link_update: { parameters: ["i32", "i32", "pointer"], result: "i32" },
  bpf_link_detach: { parameters: ["i32"], result: "i32" },

  bpf_tc_hook_create: { parameters: ["buffer"], result: "i32" },
  bpf_tc_hook_destroy: { parameters: ["buffer"], result: "i32" },
  bpf_tc_attach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_detach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_query: { parameters: ["buffer", "buffer"], result: "i32" },

  bpf_prog_test_run_opts: TEST_RUN,
  bpf_prog_test_run_opts_async: { ...TEST_RUN, name: "bpf_prog_test_run_opts", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

type LibBpf = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

function bpf(): LibBpf {
  if (lib !== null) return lib.symbols;
  // Open libc first: errno must not be clobbered by a lazy dlopen after a failing call.
  libc();
  try {
    lib = Deno.dlopen(libPath(LIBBPF), SYMBOLS);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/cannot open shared object file/.test(msg)) {
      throw new Error(`${LIBBPF} not found: install the libbpf1 package (apt install libbpf1)`);
    }
    throw e;
  }
  return lib.symbols;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** errno values this module reports or tests for. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  EOPNOTSUPP: 95,
  ENOTSUPP: 524,
} as const;

const LOG_TAIL_LINES = 30;

/** Text for an error code (positive or negative; libbpf's own codes are >= 4000). */
export function strerror(err: number): string {
  const buf = new Uint8Array(256);
  bpf().libbpf_strerror(Math.abs(err) | 0, buf, BigInt(buf.length));
  return decodeCString(buf) || `error ${Math.abs(err)}`;
}

/** A failed libbpf call: `op` is the C function, `errno` the positive error code. */
export class BpfError extends Error {
  /** The libbpf function that failed. */
  readonly op: string;
  /** Positive error code (libbpf's own codes are >= 4000). */
  readonly errno: number;
  /** Full verifier/kernel log of a failed load, when one was produced. */
  readonly log?: string;

  /** Builds `${op}: ${strerror} (errno N)`, followed by the last lines of `log` if given. */
  constructor(op: string, err: number, log?: string) {
    const code = Math.abs(err);
    let message = errnoMessage(op, code, strerror);
    if (log) {
      const lines = log.trimEnd().split("\n");
      const tail = lines.slice(-LOG_TAIL_LINES);
      const skipped = lines.length - tail.length;
      message += `\n--- verifier log${skipped > 0 ? ` (last ${tail.length} lines)` : ""} ---\n` +
        tail.join("\n");
    }
    super(message);
    this.name = "BpfError";
    this.op = op;
    this.errno = code;
    if (log) this.log = log;
  }
}

function check(op: string, ret: number): number {
  if (ret < 0) throw new BpfError(op, -ret);
  return ret;
}

// ---------------------------------------------------------------------------------------------
// Memory helpers

/** A zeroed buffer backed by its own (off-heap, never moving) ArrayBuffer. */
function stable(size: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(size));
}

function stableCopy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = stable(bytes.length);
  out.set(bytes);
  return out;
}

function addr(buf: Uint8Array | null): bigint {
  if (buf === null || buf.length === 0) return 0n;
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)));
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Objects, maps, programs

/** An opened `struct bpf_object`, with every buffer libbpf may still read. */
export interface BpfObject {
  readonly kind: "bpf_object";
  /** Object name given to `openObjectMem`. */
  readonly name: string;
  /** `struct bpf_object *`; null once closed. */
  ptr: Deno.PointerObject | null;
  /** Verifier log buffer (`kernel_log_buf`), filled by a failed load. */
  readonly logBuf: Uint8Array<ArrayBuffer>;
  /** Buffers C may still read (ELF image, open options, strings). */
  readonly keep: unknown[];
}

/** A `struct bpf_map` inside a {@link BpfObject}. */
export interface BpfMap {
  readonly kind: "bpf_map";
  readonly name: string;
  readonly obj: BpfObject;
  readonly ptr: Deno.PointerObject;
}

/** A `struct bpf_program` inside a {@link BpfObject}. */
export interface BpfProgram {
  readonly kind: "bpf_program";
  readonly name: string;
  readonly obj: BpfObject;
  readonly ptr: Deno.PointerObject;
}

/** Options of {@link openObjectMem}. */
export interface OpenOptions {
  /** Size of the verifier log buffer in bytes (default 4 MiB). */
  logSize?: number;
  /** Folder for maps declared with `LIBBPF_PIN_BY_NAME` (libbpf default /sys/fs/bpf). */
  pinRootPath?: string;
}

const OPEN_OPTS_SIZE = 80;
const DEFAULT_LOG_SIZE = 4 << 20;

function live(obj: BpfObject): Deno.PointerObject {
  if (obj.ptr === null) throw new Error(`bpf object ${obj.name} is closed`);
  return obj.ptr;
}

function mapPtr(map: BpfMap): Deno.PointerObject {
  live(map.obj);
  return map.ptr;
}

function progPtr(prog: BpfProgram): Deno.PointerObject {
  live(prog.obj);
  return prog.ptr;
}

/**
 * Opens a BPF ELF object from memory (`bpf_object__open_mem`). The bytes are copied and kept,
 * and a verifier log buffer is attached so a failed {@link loadObject} can report it.
 */
export function openObjectMem(bytes: Uint8Array, name: string, opts: OpenOptions = {}): BpfObject {
  const b = bpf();
  const image = stableCopy(bytes);
  const nameC = cString(name);
  const pinRoot = opts.pinRootPath === undefined ? null : cString(opts.pinRootPath);
  const logBuf = stable(opts.logSize ?? DEFAULT_LOG_SIZE);
  const o = stable(OPEN_OPTS_SIZE);
  const v = view(o);
  v.setBigUint64(0, BigInt(OPEN_OPTS_SIZE), true); // sz
  v.setBigUint64(8, addr(nameC), true); // object_name
  v.setBigUint64(24, addr(pinRoot), true); // pin_root_path
  v.setBigUint64(56, addr(logBuf), true); // kernel_log_buf
  v.setBigUint64(64, BigInt(logBuf.length), true); // kernel_log_size
  v.setUint32(72, 0, true); // kernel_log_level: 0 = libbpf retries a failed load with level 1
  const ptr = b.bpf_object__open_mem(image, BigInt(image.length), o);
  if (ptr === null) throw new BpfError("bpf_object__open_mem", errno() || Errno.EINVAL);
  return { kind: "bpf_object", name, ptr, logBuf, keep: [image, nameC, pinRoot, o] };
}

/**
 * Loads every map and program of `obj` into the kernel (`bpf_object__load`, run off the JS
 * thread). On failure throws a {@link BpfError} carrying the verifier log.
 */
export async function loadObject(obj: BpfObject): Promise<void> {
  const ptr = live(obj);
  obj.logBuf[0] = 0;
  const ret = await bpf().bpf_object__load(ptr);
  if (ret < 0) {
    const text = decodeCString(obj.logBuf).trimEnd();
    throw new BpfError("bpf_object__load", -ret, text || undefined);
  }
}

/** Closes `obj` (`bpf_object__close`): unloads what no one else holds. Safe to call twice. */
export function closeObject(obj: BpfObject): void {
  if (obj.ptr === null) return;
  bpf().bpf_object__close(obj.ptr);
  obj.ptr = null;
  // The image copy and the log buffer are ours alone: released now, not at the next GC.
  for (const b of [...obj.keep, obj.logBuf]) {
    if (b instanceof Uint8Array && b.buffer instanceof ArrayBuffer) b.buffer.transfer(0);
  }
  obj.keep.length = 0;
}

/** Finds map `name` (also ".rodata", ".data", ".bss") in `obj`; throws when absent. */
export function findMap(obj: BpfObject, name: string): BpfMap {
  const ptr = bpf().bpf_object__find_map_by_name(live(obj), cString(name));
  if (ptr === null) throw new BpfError(`bpf_object__find_map_by_name(${name})`, Errno.ENOENT);
  return { kind: "bpf_map", name, obj, ptr };
}

/** The BTF type ids of a map's key and value in its object's BTF (0: none). */
export function mapBtfTypeIds(map: BpfMap): { key: number; value: number } {
  const b = bpf(), p = mapPtr(map);
  return { key: b.bpf_map__btf_key_type_id(p), value: b.bpf_map__btf_value_type_id(p) };
}

/** File descriptor of a loaded map (throws before load). */
export function mapFd(map: BpfMap): number {
  return check(`bpf_map__fd(${map.name})`, bpf().bpf_map__fd(mapPtr(map)));
}

/** Sets `max_entries` before load. */
export function mapSetMaxEntries(map: BpfMap, n: number): void {
  check(`bpf_map__set_max_entries(${map.name})`, bpf().bpf_map__set_max_entries(mapPtr(map), n));
}

/**
 * Sets a map's `map_extra` before load (an arena's user-space address, a bloom filter's hash
 * count): libbpf 1.1 cannot read a 64-bit value from a map definition.
 */
export function mapSetMapExtra(map: BpfMap, extra: bigint): void {
  check(`bpf_map__set_map_extra(${map.name})`, bpf().bpf_map__set_map_extra(mapPtr(map), extra));
}

/** Map flag: hash map records are allocated on demand, not when the map is created. */
export const BPF_F_NO_PREALLOC = 1;

/** `map_flags` the map will be created with (e.g. `BPF_F_NO_PREALLOC`). */
export function mapFlags(map: BpfMap): number {
  return bpf().bpf_map__map_flags(mapPtr(map));
}

/** Sets `map_flags` before load. */
export function mapSetFlags(map: BpfMap, flags: number): void {
  check(`bpf_map__set_map_flags(${map.name})`, bpf().bpf_map__set_map_flags(mapPtr(map), flags));
}

/** Current `max_entries`. */
export function mapMaxEntries(map: BpfMap): number {
  return bpf().bpf_map__max_entries(mapPtr(map));
}

/** Key size in bytes. */
export function mapKeySize(map: BpfMap): number {
  return bpf().bpf_map__key_size(mapPtr(map));
}

/** Value size in bytes. */
export function mapValueSize(map: BpfMap): number {
  return bpf().bpf_map__value_size(mapPtr(map));
}

/** A copy of the initial contents of a global-data map (".rodata", ".data", ".bss"). */
export function mapInitialValue(map: BpfMap): Uint8Array {
  const size = new BigUint64Array(1);
  const p = bpf().bpf_map__initial_value(mapPtr(map), size);
  if (p === null) throw new BpfError(`bpf_map__initial_value(${map.name})`, Errno.EINVAL);
  const out = new Uint8Array(Number(size[0]));
  if (out.length > 0) new Deno.UnsafePointerView(p).copyInto(out);
  return out;
}

/** Replaces the initial contents of a global-data map before load (size must match). */
export function mapSetInitialValue(map: BpfMap, bytes: Uint8Array): void {
  const data = stableCopy(bytes);
  check(
    `bpf_map__set_initial_value(${map.name})`,
    bpf().bpf_map__set_initial_value(mapPtr(map), data, BigInt(data.length)),
  );
}

/** Sets (or with null clears) the bpffs path the map is pinned at / reused from on load. */
export function mapSetPinPath(map: BpfMap, path: string | null): void {
  const p = path === null ? null : cString(path);
  check(`bpf_map__set_pin_path(${map.name})`, bpf().bpf_map__set_pin_path(mapPtr(map), p));
}

/** Makes `map` use the existing map behind `fd` at load instead of creating one. */
export function mapReuseFd(map: BpfMap, fd: number): void {
  check(`bpf_map__reuse_fd(${map.name})`, bpf().bpf_map__reuse_fd(mapPtr(map), fd));
}

/** Finds program `name` (the C function name) in `obj`; throws when absent. */
export function findProgram(obj: BpfObject, name: string): BpfProgram {
  const ptr = bpf().bpf_object__find_program_by_name(live(obj), cString(name));
  if (ptr === null) {
    throw new BpfError(`bpf_object__find_program_by_name(${name})`, errno() || Errno.ENOENT);
  }
  return { kind: "bpf_program", name, obj, ptr };
}

/** File descriptor of a loaded program (throws before load). */
export function programFd(prog: BpfProgram): number {
  return check(`bpf_program__fd(${prog.name})`, bpf().bpf_program__fd(progPtr(prog)));
}

/** Whether {@link loadObject} loads `prog` (`bpf_program__set_autoload`; all do by default). */
export function programSetAutoload(prog: BpfProgram, on: boolean): void {
  check(
    `bpf_program__set_autoload(${prog.name})`,
    bpf().bpf_program__set_autoload(progPtr(prog), on),
  );
}

/** Names of the programs of `obj`, in section order. */
export function programNames(obj: BpfObject): string[] {
  const out: string[] = [];
  const b = bpf();
  for (
    let p = b.bpf_object__next_program(live(obj), null);
    p;
    p = b.bpf_object__next_program(obj.ptr, p)
  ) {
    out.push(Deno.UnsafePointerView.getCString(b.bpf_program__name(p)!));
  }
  return out;
}

/** The map's type (`bpf_map__type`, a `BPF_MAP_TYPE_*` value). */
export function mapType(map: BpfMap): number {
  return bpf().bpf_map__type(mapPtr(map));
}

/** Names of the maps `obj` declares (`.maps`), without libbpf's internal ones (`.rodata`...). */
export function mapNames(obj: BpfObject): string[] {
  const out: string[] = [];
  const b = bpf();
  for (let m = b.bpf_object__next_map(live(obj), null); m; m = b.bpf_object__next_map(obj.ptr, m)) {
    if (!b.bpf_map__is_internal(m)) {
      out.push(Deno.UnsafePointerView.getCString(b.bpf_map__name(m)!));
    }
  }
  return out;
}

/** Sets the verifier log level used at load (1 = verbose, 2 = very verbose, 4 = stats). */
export function programSetLogLevel(prog: BpfProgram, level: number): void {
  check(
    `bpf_program__set_log_level(${prog.name})`,
    bpf().bpf_program__set_log_level(progPtr(prog), level),
  );
}

// ---------------------------------------------------------------------------------------------
// Map elements (by fd)

/** Create a new element or update an existing one. */
export const BPF_ANY = 0;
/** Create a new element only if it does not exist. */
export const BPF_NOEXIST = 1;
/** Update an existing element only. */
export const BPF_EXIST = 2;

/** Writes `key` → `value` (`bpf_map_update_elem`). */
export function mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags = BPF_ANY): void {
  check("bpf_map_update_elem", bpf().bpf_map_update_elem(fd, key, value, BigInt(flags)));
}

/**
 * Reads the value at `key`, or null when absent. `valueSize` must be what the kernel writes
 * ({@link valueBytes}); not checked here (a syscall more per lookup): for a map made elsewhere,
 * such as a pinned one, check its {@link mapInfo} first.
 */
export function mapLookup(fd: number, key: Uint8Array, valueSize: number): Uint8Array | null {
  const value = new Uint8Array(valueSize);
  const ret = bpf().bpf_map_lookup_elem(fd, key, value);
  if (ret === -Errno.ENOENT) return null;
  check("bpf_map_lookup_elem", ret);
  return value;
}

/** Deletes `key`; false when it was absent. */
export function mapDelete(fd: number, key: Uint8Array): boolean {
  const ret = bpf().bpf_map_delete_elem(fd, key);
  if (ret === -Errno.ENOENT) return false;
  check("bpf_map_delete_elem", ret);
  return true;
}

/** The key after `key` (the first key for null), or null at the end. */
export function mapNextKey(fd: number, key: Uint8Array | null, keySize: number): Uint8Array | null {
  const next = new Uint8Array(keySize);
  const ret = bpf().bpf_map_get_next_key(fd, key, next);
  if (ret === -Errno.ENOENT) return null;
  check("bpf_map_get_next_key", ret);
  return next;
}

/** One key/value pair of a map. */
export interface MapEntry {
  key: Uint8Array;
  value: Uint8Array;
}

/**
 * Iterates a map's keys lazily with `get_next_key`; concurrent deletes in a hash map may
 * restart the walk (kernel semantics).
 */
export function* mapKeys(fd: number, keySize: number): Generator<Uint8Array> {
  for (let key = mapNextKey(fd, null, keySize); key !== null; key = mapNextKey(fd, key, keySize)) {
    yield key;
  }
}

/**
 * Number of entries of a map, read in batches ({@link mapBatches}; a walk of its keys where
 * the map has no batch reads): one call per 256 entries instead of one per entry.
 */
export function mapCount(fd: number, keySize: number): number {
  let n = 0;
  for (const b of mapBatches(fd, keySize, valueBytes(mapInfo(fd)))) n += b.count;
  return n;
}

/** `BPF_MAP_TYPE_*` whose values hold one slot per possible CPU. */
const PERCPU_TYPES: ReadonlySet<number> = new Set([
  5, // PERCPU_HASH
  6, // PERCPU_ARRAY
  10, // LRU_PERCPU_HASH
  21, // PERCPU_CGROUP_STORAGE
]);

/** Whether maps of type `type` (`BPF_MAP_TYPE_*`) hold one value per possible CPU. */
export function isPerCpu(type: number): boolean {
  return PERCPU_TYPES.has(type);
}

/**
 * Bytes the kernel writes for one value of the map `info` describes: its value size, or for a
 * per-CPU map one slot of it, rounded up to 8 bytes, per possible CPU.
 */
export function valueBytes(info: MapInfo): number {
  if (!isPerCpu(info.type)) return info.valueSize;
  return Math.ceil(info.valueSize / 8) * 8 * numPossibleCpus();
}

/**
 * Throws unless map `fd` has keys of `keySize` bytes and values of `valueSize` ({@link
 * valueBytes}): the kernel writes the map's own sizes, so a smaller buffer would be overrun and
 * another size misread (e.g. a pinned map of another program version).
 */
function checkEntrySizes(op: string, fd: number, keySize: number, valueSize: number): void {
  const info = mapInfo(fd), value = valueBytes(info);
  if (info.keySize === keySize && value === valueSize) return;
  throw new Error(
    `${op}(${info.name}): the map's keys are ${info.keySize} bytes and its values ${value}, ` +
      `not the ${keySize} and ${valueSize} asked for; not read`,
  );
}

/**
 * Iterates a map lazily with `get_next_key` + `lookup`. Keys deleted meanwhile are skipped;
 * concurrent deletes in a hash map may restart the walk (kernel semantics). Throws when the
 * map's key or value size is not the one given.
 */
export function* mapEntries(fd: number, keySize: number, valueSize: number): Generator<MapEntry> {
  checkEntrySizes("map entries", fd, keySize, valueSize);
  for (const key of mapKeys(fd, keySize)) {
    const value = mapLookup(fd, key, valueSize);
    if (value !== null) yield { key, value };
  }
}

const BATCH_OPTS_SIZE = 24;

/**
 * Batch buffers kept for reuse, by size: the daemon reads its maps in batches at every address
 * change, and fresh buffers each time left glibc's heap ~2 MB larger after a hundred changes.
 */
const bufferPool = new Map<number, Uint8Array[]>();

function takeBuffer(size: number): Uint8Array {
  return bufferPool.get(size)?.pop() ?? new Uint8Array(size);
}

function giveBuffer(b: Uint8Array): void {
  let free = bufferPool.get(b.length);
  if (!free) bufferPool.set(b.length, free = []);
  if (free.length < 2) free.push(b);
}

/** One batch of {@link mapBatches}: `count` keys and values packed back to back. */
export interface MapBatch {
  keys: Uint8Array;
  values: Uint8Array;
  count: number;
}

/**
 * Reads a whole map with `bpf_map_lookup_batch`, `batchCount` elements per call (grown when a
 * hash bucket does not fit), yielding each batch in buffers that the next batch (and later reads)
 * overwrite: memory stays constant however large the map. Falls back to {@link mapEntries}, one
 * entry per batch, when the map type has no batch support. For per-CPU maps `valueSize` must be
 * `roundup(value_size, 8) * nr_cpus` ({@link valueBytes}). Throws, before any read, when the
 * map's key or value size is not the one given (the kernel writes its own). With `after` (a key),
 * the read starts at the key that follows it (an array's: the next index).
 */
export function* mapBatches(
  fd: number,
  keySize: number,
  valueSize: number,
  batchCount = 256,
  after: Uint8Array | null = null,
): Generator<MapBatch> {
  checkEntrySizes("bpf_map_lookup_batch", fd, keySize, valueSize);
  const b = bpf();
  let count = Math.max(1, batchCount | 0);
  let keys = takeBuffer(keySize * count);
  let values = takeBuffer(valueSize * count);
  try {
    yield* batchesInto();
  } finally {
    giveBuffer(keys);
    giveBuffer(values);
  }

  function* batchesInto(): Generator<MapBatch> {
    const tokenSize = Math.max(8, Math.ceil(keySize / 8) * 8);
    let inBatch: Uint8Array | null = null;
    if (after) {
      inBatch = new Uint8Array(tokenSize);
      inBatch.set(after.subarray(0, tokenSize));
    }
    const outBatch = new Uint8Array(tokenSize);
    const n = new Uint32Array(1);
    const opts = new Uint8Array(BATCH_OPTS_SIZE);
    view(opts).setBigUint64(0, BigInt(BATCH_OPTS_SIZE), true);
    for (;;) {
      n[0] = count;
      const ret = b.bpf_map_lookup_batch(fd, inBatch, outBatch, keys, values, n, opts);
      if (ret < 0 && ret !== -Errno.ENOENT) {
        const unsupported = ret === -Errno.EINVAL || ret === -Errno.ENOTSUPP ||
          ret === -Errno.EOPNOTSUPP;
        if (unsupported && inBatch === null) {
          for (const e of mapEntries(fd, keySize, valueSize)) {
            yield { keys: e.key, values: e.value, count: 1 };
          }
          return;
        }
        if (ret === -Errno.ENOSPC && n[0] === 0) {
          count *= 2;
          giveBuffer(keys);
          giveBuffer(values);
          keys = takeBuffer(keySize * count);
          values = takeBuffer(valueSize * count);
          continue;
        }
        check("bpf_map_lookup_batch", ret);
      }
      if (n[0] > 0) yield { keys, values, count: n[0] };
      if (ret === -Errno.ENOENT) return;
      inBatch = outBatch.slice();
    }
  }
}

/**
 * Where one entry of {@link forEachEntry} is: at `ko` of `keys` and `vo` of `values`, the batch
 * buffers (overwritten by the next batch), with DataViews `kv` and `vv` over them.
 */
export interface EntryAt {
  keys: Uint8Array;
  values: Uint8Array;
  kv: DataView;
  vv: DataView;
  ko: number;
  vo: number;
}

/**
 * Calls `fn` for every entry of a map, read in batches ({@link mapBatches}), in place: nothing is
 * copied or allocated per entry (`fn` gets one {@link EntryAt}, moved along). `fn` may delete the
 * entry it is given (a hash map's batch position is a bucket already read).
 */
export function forEachEntry(
  fd: number,
  keySize: number,
  valueSize: number,
  fn: (e: EntryAt) => void,
  batchCount = 256,
): void {
  for (const { keys, values, count } of mapBatches(fd, keySize, valueSize, batchCount)) {
    const e: EntryAt = { keys, values, kv: view(keys), vv: view(values), ko: 0, vo: 0 };
    for (let i = 0; i < count; i++, e.ko += keySize, e.vo += valueSize) fn(e);
  }
}

/** {@link mapBatches} as a list of entries, each copied out. */
export function mapLookupBatch(
  fd: number,
  keySize: number,
  valueSize: number,
  batchCount = 256,
): MapEntry[] {
  const out: MapEntry[] = [];
  for (const { keys, values, count } of mapBatches(fd, keySize, valueSize, batchCount)) {
    for (let i = 0; i < count; i++) {
      out.push({
        key: keys.slice(i * keySize, (i + 1) * keySize),
        value: values.slice(i * valueSize, (i + 1) * valueSize),
      });
    }
  }
  return out;
}

/** Opens a pinned BPF object (map, program, link) at a bpffs `path`; returns its fd. */
export function objGetPinned(path: string): number {
  return check(`bpf_obj_get(${path})`, bpf().bpf_obj_get(cString(path)));
}

/** `BPF_F_RDONLY`: an fd that can read a map but not change it. */
const BPF_F_RDONLY = 1 << 3;

/**
 * Opens a pinned object like {@link objGetPinned}; with `readOnly` the fd can only read
 * (`BPF_F_RDONLY`), so a reader cannot change the map by mistake.
 */
export function objGetPinnedOpts(path: string, opts: { readOnly?: boolean } = {}): number {
  const o = new Uint8Array(16);
  view(o).setBigUint64(0, 16n, true);
  view(o).setUint32(8, opts.readOnly ? BPF_F_RDONLY : 0, true);
  return check(`bpf_obj_get(${path})`, bpf().bpf_obj_get_opts(cString(path), o));
}

/** What the kernel says about a map (`struct bpf_map_info`, the stable head of it). */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
  /** The BTF the map was created with (0: none), and its key and value types in it. */
  btfId: number;
  btfKeyTypeId: number;
  btfValueTypeId: number;
}

/** `bpf_obj_get_info_by_fd` for a map fd. */
export function mapInfo(fd: number): MapInfo {
  const info = new Uint8Array(88);
  const len = new Uint32Array([info.length]);
  check("bpf_obj_get_info_by_fd", bpf().bpf_obj_get_info_by_fd(fd, info, len));
  const v = view(info);
  return {
    type: v.getUint32(0, true),
    id: v.getUint32(4, true),
    keySize: v.getUint32(8, true),
    valueSize: v.getUint32(12, true),
    maxEntries: v.getUint32(16, true),
    flags: v.getUint32(20, true),
    name: decodeCString(info.subarray(24, 40)),
    btfId: v.getUint32(64, true),
    btfKeyTypeId: v.getUint32(68, true),
    btfValueTypeId: v.getUint32(72, true),
  };
}

/** `bpf_obj_get_info_by_fd` into `info` (of its whole length); `what` names the object in errors. */
function objInfo(fd: number, info: Uint8Array, what: string): void {
  const len = new Uint32Array([info.length]);
  check(`bpf_obj_get_info_by_fd(${what})`, bpf().bpf_obj_get_info_by_fd(fd, info, len));
}

/**
 * The raw BTF (header, types, strings: the `.BTF` section's format) of the kernel's BTF object
 * `id`, e.g. the one a map was created with ({@link MapInfo.btfId}).
 */
export function btfRawById(id: number): Uint8Array {
  const fd = check(`bpf_btf_get_fd_by_id(${id})`, bpf().bpf_btf_get_fd_by_id(id));
  try {
    // struct bpf_btf_info: btf (u64 address) @0, btf_size @8, id @12, name @16, ...
    const info = stable(32);
    objInfo(fd, info, "btf");
    const size = view(info).getUint32(8, true);
    const raw = stable(size);
    info.fill(0);
    view(info).setBigUint64(0, addr(raw), true);
    view(info).setUint32(8, size, true);
    objInfo(fd, info, "btf");
    return raw;
  } finally {
    libc().close(fd);
  }
}

/** Where a loaded program's JITed code lies and which source lines it came from. */
export interface ProgJitInfo {
  /** Kernel addresses of its functions' code, main program first (`jited_ksyms`). */
  ksyms: bigint[];
  /** Their code lengths in bytes (`jited_func_lens`). */
  funcLens: number[];
  /** Tags of its functions (`prog_tags`), hex. */
  funcTags: string[];
  /** The xlated instruction each line-info record starts at (`bpf_line_info.insn_off`). */
  lineInsn: number[];
  /** The kernel address where each line-info record's JITed code starts (`jited_line_info`). */
  lineAddr: bigint[];
}

/**
 * The JIT layout and line info of program `id` (struct bpf_prog_info: nr_jited_ksyms @104,
 * nr_jited_func_lens @108, jited_ksyms @112, jited_func_lens @120, nr_line_info @148,
 * line_info @152, jited_line_info @160, nr_jited_line_info @168, line_info_rec_size @172,
 * jited_line_info_rec_size @176, nr_prog_tags @180, prog_tags @184). For profiles
 * (bench/jitprof.ts): a sampled address maps to the line whose code starts last before it.
 */
export function progJitInfo(id: number): ProgJitInfo {
  const fd = check(`bpf_prog_get_fd_by_id(${id})`, bpf().bpf_prog_get_fd_by_id(id));
  try {
    const info = stable(232);
    objInfo(fd, info, "prog");
    const v = view(info);
    const nKsyms = v.getUint32(104, true), nLens = v.getUint32(108, true);
    const nLines = v.getUint32(148, true), nJitLines = v.getUint32(168, true);
    const lineRec = v.getUint32(172, true), jitLineRec = v.getUint32(176, true);
    const nTags = v.getUint32(180, true);
    const ksyms = stable(8 * nKsyms), lens = stable(4 * nLens), tags = stable(8 * nTags);
    const lines = stable(lineRec * nLines), jitLines = stable(jitLineRec * nJitLines);
    info.fill(0);
    v.setUint32(104, nKsyms, true);
    v.setUint32(108, nLens, true);
    v.setBigUint64(112, addr(ksyms), true);
    v.setBigUint64(120, addr(lens), true);
    v.setUint32(148, nLines, true);
    v.setBigUint64(152, addr(lines), true);
    v.setBigUint64(160, addr(jitLines), true);
    v.setUint32(168, nJitLines, true);
    v.setUint32(172, lineRec, true);
    v.setUint32(176, jitLineRec, true);
    v.setUint32(180, nTags, true);
    v.setBigUint64(184, addr(tags), true);
    objInfo(fd, info, "prog");
    const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return {
      ksyms: Array.from({ length: nKsyms }, (_, i) => view(ksyms).getBigUint64(8 * i, true)),
      funcLens: Array.from({ length: nLens }, (_, i) => view(lens).getUint32(4 * i, true)),
      funcTags: Array.from({ length: nTags }, (_, i) => hex(tags.subarray(8 * i, 8 * i + 8))),
      lineInsn: Array.from({ length: nLines }, (_, i) => view(lines).getUint32(lineRec * i, true)),
      lineAddr: Array.from(
        { length: nJitLines },
        (_, i) => view(jitLines).getBigUint64(jitLineRec * i, true),
      ),
    };
  } finally {
    libc().close(fd);
  }
}

/** Map types this module creates. */
export const MapType = { HASH: 1, ARRAY: 2, PERCPU_ARRAY: 6, LRU_HASH: 9 } as const;

/** Creates a map from user space (`bpf_map_create`); returns its fd. */
export function mapCreate(
  type: number,
  name: string,
  keySize: number,
  valueSize: number,
  maxEntries: number,
): number {
  return check(
    `bpf_map_create(${name})`,
    bpf().bpf_map_create(type, cString(name), keySize, valueSize, maxEntries, null),
  );
}

/** Number of possible CPUs: per-CPU map values hold one slot (8-byte aligned) per CPU. */
export function numPossibleCpus(): number {
  return check("libbpf_num_possible_cpus", bpf().libbpf_num_possible_cpus());
}

/**
 * BPF_ENABLE_STATS for run time: while the returned fd is open (close it with `closeFd`), every
 * program counts its runs and run time (`run_cnt`, `run_time_ns` in its info). The kernel turns
 * the accounting off again when the last such fd closes, also at process exit.
 */
export function enableRunTimeStats(): number {
  return check("bpf_enable_stats", bpf().bpf_enable_stats(0 /* BPF_STATS_RUN_TIME */));
}

/** Pins the BPF object behind `fd` at a bpffs `path`. */
export function objPin(fd: number, path: string): void {
  check(`bpf_obj_pin(${path})`, bpf().bpf_obj_pin(fd, cString(path)));
}

// ---------------------------------------------------------------------------------------------
// TC (clsact) attachment

/** Which clsact hook. */
export type TcAttachPoint = "ingress" | "egress";

/** A filter attached with {@link tcAttach}. */
export interface TcFilter {
  handle: number;
  priority: number;
  progId: number;
}

/** Options of {@link tcAttach}: 0 lets the kernel choose handle/priority. */
export interface TcAttachOptions {
  handle?: number;
  priority?: number;
  /** Atomically replace the program of an existing filter with the same handle/priority. */
  replace?: boolean;
}

const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;

function tcHook(ifindex: number, attachPoint: number): Uint8Array {
  const h = new Uint8Array(TC_HOOK_SIZE);
  const v = view(h);
  v.setBigUint64(0, BigInt(TC_HOOK_SIZE), true);
  v.setInt32(8, ifindex, true);
  v.setUint32(12, attachPoint, true);
  return h;
}

function tcPoint(p: TcAttachPoint): number {
  if (p === "ingress") return BPF_TC_INGRESS;
  if (p === "egress") return BPF_TC_EGRESS;
  throw new TypeError(`bad TC attach point: ${p}`);
}

function tcOpts(
  f: { progFd?: number; flags?: number; handle?: number; priority?: number },
): Uint8Array {
  const o = new Uint8Array(TC_OPTS_SIZE);
  const v = view(o);
  v.setBigUint64(0, BigInt(TC_OPTS_SIZE), true);
  v.setInt32(8, f.progFd ?? 0, true);
  v.setUint32(12, f.flags ?? 0, true);
  v.setUint32(20, f.handle ?? 0, true);
  v.setUint32(24, f.priority ?? 0, true);
  return o;
}

function checkFilterId(handle: number, priority: number): void {
  if (!(handle > 0 && handle <= 0xffffffff) || !(priority > 0 && priority <= 0xffff)) {
    throw new RangeError(`TC filter needs handle and priority > 0 (got ${handle}, ${priority})`);
  }
}

/**
 * The kernel answers ENOENT for an unknown handle, EINVAL when the priority's filter chain or
 * the clsact qdisc is missing (handle/priority were validated before, so EINVAL means absent).
 */
function noSuchFilter(ret: number): boolean {
  return ret === -Errno.ENOENT || ret === -Errno.EINVAL;
}

/**
 * Creates the clsact qdisc on `ifindex` (`bpf_tc_hook_create`). "exists" means it was already
 * there (possibly someone else's).
 */
export function tcHookCreate(ifindex: number, attachPoint: TcAttachPoint): "created" | "exists" {
  const ret = bpf().bpf_tc_hook_create(tcHook(ifindex, tcPoint(attachPoint)));
  if (ret === -Errno.EEXIST) return "exists";
  check("bpf_tc_hook_create", ret);
  return "created";
}

/**
 * Destroys the whole clsact qdisc on `ifindex`, every filter on it included (anyone's).
 * Returns false when there was none.
 */
export function tcHookDestroy(ifindex: number): boolean {
  const ret = bpf().bpf_tc_hook_destroy(tcHook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS));
  if (ret === -Errno.ENOENT || ret === -Errno.EINVAL) return false;
  check("bpf_tc_hook_destroy", ret);
  return true;
}

/** Attaches program `progFd` as a direct-action clsact filter; returns its identity. */
export function tcAttach(
  ifindex: number,
  attachPoint: TcAttachPoint,
  progFd: number,
  opts: TcAttachOptions = {},
): TcFilter {
  const o = tcOpts({
    progFd,
    flags: opts.replace ? BPF_TC_F_REPLACE : 0,
    handle: opts.handle,
    priority: opts.priority,
  });
  check("bpf_tc_attach", bpf().bpf_tc_attach(tcHook(ifindex, tcPoint(attachPoint)), o));
  const v = view(o);
  return {
    progId: v.getUint32(16, true),
    handle: v.getUint32(20, true),
    priority: v.getUint32(24, true),
  };
}

/**
 * Removes the filter `handle`/`priority` (both > 0); false when there was no such filter
 * (including no filter chain or no clsact qdisc).
 */
export function tcDetach(
  ifindex: number,
  attachPoint: TcAttachPoint,
  handle: number,
  priority: number,
): boolean {
  checkFilterId(handle, priority);
  const ret = bpf().bpf_tc_detach(
    tcHook(ifindex, tcPoint(attachPoint)),
    tcOpts({ handle, priority }),
  );
  if (noSuchFilter(ret)) return false;
  check("bpf_tc_detach", ret);
  return true;
}

/**
 * Program id of filter `handle`/`priority` (both > 0), or null when there is no such filter
 * (including no filter chain or no clsact qdisc).
 */
export function tcQuery(
  ifindex: number,
  attachPoint: TcAttachPoint,
  handle: number,
  priority: number,
): number | null {
  checkFilterId(handle, priority);
  const o = tcOpts({ handle, priority });
  const ret = bpf().bpf_tc_query(tcHook(ifindex, tcPoint(attachPoint)), o);
  if (noSuchFilter(ret)) return null;
  check("bpf_tc_query", ret);
  return view(o).getUint32(16, true);
}

// ---------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN

/** Options of {@link testRun}. */
export interface TestRunOptions {
  /** Run the program this many times (duration is the per-run average). */
  repeat?: number;
  /** Capacity for the output packet (default: input length + 4096). */
  dataOutSize?: number;
  /** Context in (e.g. a `struct __sk_buff` to set `ifindex`, `mark`, ...). */
  ctxIn?: Uint8Array;
  /** Capacity for the output context (default: `ctxIn` length, 0 without `ctxIn`). */
  ctxOutSize?: number;
  /**
   * Hand the program a CHECKSUM_COMPLETE skb (`BPF_F_TEST_SKB_CHECKSUM_COMPLETE`, Linux 6.16+):
   * the kernel then fails the run with EBADMSG when the program left `skb->csum` wrong.
   */
  checksumComplete?: boolean;
}

/** Result of {@link testRun}. */
export interface TestRunResult {
  /** Program return value (the TC verdict). */
  retval: number;
  /** Packet after the program ran, sized as the kernel reported. */
  dataOut: Uint8Array;
  /** Average duration of one run in nanoseconds. */
  durationNs: number;
  /** Context after the run, when `ctxIn`/`ctxOutSize` was given. */
  ctxOut?: Uint8Array;
}

const TEST_RUN_OPTS_SIZE = 80;
const BPF_F_TEST_SKB_CHECKSUM_COMPLETE = 1 << 2;

interface PreparedRun {
  opts: Uint8Array<ArrayBuffer>;
  keep: Uint8Array[];
  dataOut: Uint8Array;
  ctxOut: Uint8Array | null;
}

function prepareRun(data: Uint8Array, o: TestRunOptions): PreparedRun {
  const dataIn = stableCopy(data);
  const dataOut = stable(o.dataOutSize ?? data.length + 4096);
  const ctxIn = o.ctxIn ? stableCopy(o.ctxIn) : null;
  const ctxOutSize = o.ctxOutSize ?? ctxIn?.length ?? 0;
  const ctxOut = ctxOutSize > 0 ? stable(ctxOutSize) : null;
  const opts = stable(TEST_RUN_OPTS_SIZE);
  const v = view(opts);
  v.setBigUint64(0, BigInt(TEST_RUN_OPTS_SIZE), true);
  v.setBigUint64(8, addr(dataIn), true);
  v.setBigUint64(16, addr(dataOut), true);
  v.setUint32(24, dataIn.length, true);
  v.setUint32(28, dataOut.length, true);
  v.setBigUint64(32, addr(ctxIn), true);
  v.setBigUint64(40, addr(ctxOut), true);
  v.setUint32(48, ctxIn?.length ?? 0, true);
  v.setUint32(52, ctxOut?.length ?? 0, true);
  v.setInt32(60, o.repeat ?? 0, true);
  v.setUint32(68, o.checksumComplete ? BPF_F_TEST_SKB_CHECKSUM_COMPLETE : 0, true);
  return { opts, keep: [dataIn, ctxIn ?? dataIn], dataOut, ctxOut };
}

function finishRun(ret: number, p: PreparedRun): TestRunResult {
  const v = view(p.opts);
  if (ret === -Errno.ENOSPC) {
    const need = v.getUint32(28, true);
    throw new BpfError(`bpf_prog_test_run_opts (output needs ${need} bytes)`, Errno.ENOSPC);
  }
  check("bpf_prog_test_run_opts", ret);
  const res: TestRunResult = {
    retval: v.getUint32(56, true),
    dataOut: p.dataOut.slice(0, v.getUint32(28, true)),
    durationNs: v.getUint32(64, true),
  };
  if (p.ctxOut) res.ctxOut = p.ctxOut.slice(0, v.getUint32(52, true));
  return res;
}

/** Runs a program once (or `repeat` times) on `data` with `BPF_PROG_TEST_RUN`, blocking. */
export function testRun(
  progFd: number,
  data: Uint8Array,
  opts: TestRunOptions = {},
): TestRunResult {
  const p = prepareRun(data, opts);
  return finishRun(bpf().bpf_prog_test_run_opts(progFd, p.opts), p);
}

/**
 * Runs a `BPF_PROG_TYPE_SYSCALL` program once with context `ctx` (no packet; the kernel
 * writes the context back into the same buffer). Returns the return value and the context.
 */
export function testRunSyscall(
  progFd: number,
  ctx: Uint8Array,
): { retval: number; ctx: Uint8Array } {
  const ctxIn = stableCopy(ctx);
  const opts = stable(TEST_RUN_OPTS_SIZE);
  const v = view(opts);
  v.setBigUint64(0, BigInt(TEST_RUN_OPTS_SIZE), true);
  v.setBigUint64(32, addr(ctxIn), true);
  v.setUint32(48, ctxIn.length, true);
  check("bpf_prog_test_run_opts", bpf().bpf_prog_test_run_opts(progFd, opts));
  return { retval: v.getUint32(56, true), ctx: ctxIn.slice() };
}

/** Like {@link testRun} but off the JS thread, for large `repeat` counts. */
export async function testRunAsync(
  progFd: number,
  data: Uint8Array,
  opts: TestRunOptions = {},
): Promise<TestRunResult> {
  const p = prepareRun(data, opts);
  const ret = await bpf().bpf_prog_test_run_opts_async(progFd, p.opts);
  return finishRun(ret, p); // p (and its buffers) stayed referenced across the await
}

// ---------------------------------------------------------------------------------------------
// Version and printing

/** The libbpf version, e.g. "1.1". */
export function libbpfVersion(): string {
  const b = bpf();
  return `${b.libbpf_major_version()}.${b.libbpf_minor_version()}`;
}

/** libbpf message level. */
export type PrintLevel = "warn" | "info" | "debug";

/** Receives one libbpf message, trailing newline removed (may hold several lines). */
export type PrintHandler = (level: PrintLevel, line: string) => void;

const PRINT_LEVELS: readonly PrintLevel[] = ["warn", "info", "debug"];
/** Size of `va_list` (for a va_copy-by-memcpy retry of long messages); 0 = no retry. */
const VA_LIST_SIZE = Deno.build.arch === "x86_64" ? 24 : Deno.build.arch === "aarch64" ? 32 : 0;
const PRINT_CB_DEF = { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const;

let printHandler: PrintHandler | null = null;
let printCallback: Deno.UnsafeCallback<typeof PRINT_CB_DEF> | null = null;
let defaultPrint: Deno.PointerValue = null;
let defaultSaved = false;
const printBuf = stable(8192);
const vaCopy = stable(Math.max(VA_LIST_SIZE, 8));
const textDecoder = new TextDecoder();

function printTrampoline(level: number, fmt: Deno.PointerValue, ap: Deno.PointerValue): number {
  const handler = printHandler;
  if (handler === null || fmt === null || ap === null) return 0;
  try {
    const c = libc();
    if (VA_LIST_SIZE > 0) new Deno.UnsafePointerView(ap).copyInto(vaCopy.subarray(0, VA_LIST_SIZE));
    const n = c.vsnprintf(printBuf, BigInt(printBuf.length), fmt, ap);
    if (n < 0) return 0;
    let text: string;
    if (n < printBuf.length) {
      text = textDecoder.decode(printBuf.subarray(0, n));
    } else if (VA_LIST_SIZE > 0) {
      const big = new Uint8Array(n + 1);
      c.vsnprintf(big, BigInt(big.length), fmt, Deno.UnsafePointer.of(vaCopy));
      text = textDecoder.decode(big.subarray(0, n));
    } else {
      text = textDecoder.decode(printBuf.subarray(0, printBuf.length - 1)) + "…";
    }
    handler(PRINT_LEVELS[level] ?? "debug", text.replace(/\n+$/, ""));
    return n;
  } catch {
    return 0; // never throw into C
  }
}

/**
 * Routes libbpf's messages to `fn` (`libbpf_set_print` with a callback formatting through
 * libc `vsnprintf`). `null` restores libbpf's default printer (stderr); `"silent"` drops every
 * message in C, so none crosses into JS.
 */
export function setPrintHandler(fn: PrintHandler | null | "silent"): void {
  const b = bpf();
  let prev: Deno.PointerValue;
  if (fn === null || fn === "silent") {
    printHandler = null;
    prev = b.libbpf_set_print(fn === null && defaultSaved ? defaultPrint : null);
  } else {
    printHandler = fn;
    printCallback ??= new Deno.UnsafeCallback(PRINT_CB_DEF, printTrampoline);
    prev = b.libbpf_set_print(printCallback.pointer);
  }
  if (!defaultSaved) {
    defaultPrint = prev;
    defaultSaved = true;
  }
}

/**
 * Sends every libbpf message line to `lib/log.ts` at debug level, prefixed "libbpf:". With
 * debug logging off libbpf is silenced in C instead: its messages would be dropped anyway, and
 * each would stop a load running off the JS thread until the JS thread took it.
 */
export function routeLibbpfPrintToLog(): void {
  if (!log.enabled("debug")) return setPrintHandler("silent");
  setPrintHandler((level, text) => {
    if (!log.enabled("debug")) return;
    for (const line of text.split("\n")) {
      log.debug(
        `libbpf: ${line.replace(/^libbpf: /, "")}`,
        level === "warn" ? { level } : undefined,
      );
    }
  });
}

// ---------------------------------------------------------------------------------------------
// BPF links (TCX). libbpf 1.1.2 has no TCX helpers, but passes unknown attach types of
// bpf_link_create straight to the kernel.

/** Attach types of TCX links (kernel >= 6.6). */
export const BPF_TCX_INGRESS = 46;
/** Attach type of a TCX egress link. */
export const BPF_TCX_EGRESS = 47;

/** Creates a BPF link (e.g. TCX on an ifindex); returns the link fd. Closing it detaches. */
export function linkCreate(progFd: number, targetFd: number, attachType: number): number {
  const fd = bpf().bpf_link_create(progFd, targetFd, attachType, null);
  check(`bpf_link_create(type ${attachType})`, fd);
  return fd;
}

/** Id of a link and of the program it runs (`bpf_link_info.id`, `.prog_id`). */
export function linkInfo(linkFd: number): { id: number; progId: number } {
  const info = new Uint8Array(64);
  const len = new Uint32Array([info.length]);
  check("bpf_obj_get_info_by_fd(link)", bpf().bpf_obj_get_info_by_fd(linkFd, info, len));
  return { id: view(info).getUint32(4, true), progId: view(info).getUint32(8, true) };
}

/** Id of the program a link runs. */
export function linkProgId(linkFd: number): number {
  return linkInfo(linkFd).progId;
}

/**
 * Detaches a link from its hook (`BPF_LINK_DETACH`), pinned or not: it stays, defunct, until its
 * last reference goes.
 */
export function linkDetach(linkFd: number): void {
  check("bpf_link_detach", bpf().bpf_link_detach(linkFd));
}

/** Atomically replaces the program of a link. */
export function linkUpdate(linkFd: number, newProgFd: number): void {
  check("bpf_link_update", bpf().bpf_link_update(linkFd, newProgFd, null));
}
