/**
 * Thin bindings to a few libc symbols (errno, string helpers, interface names).
 * `libc.so.6` is opened lazily on first use.
 * @module
 */

const IF_NAMESIZE = 16;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  vsnprintf: { parameters: ["buffer", "usize", "pointer", "pointer"], result: "i32" },
  strlen: { parameters: ["pointer"], result: "usize" },
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  if_indextoname: { parameters: ["u32", "buffer"], result: "pointer" },
  getpid: { parameters: [], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "pointer"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened libc with its typed symbols. */
export type LibC = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** Returns the libc symbols, opening `libc.so.6` on the first call. */
export function libc(): LibC {
  if (lib === null) lib = Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** Reads the calling thread's `errno`. Call it right after the failing foreign call. */
export function errno(): number {
  const p = libc().__errno_location();
  if (p === null) return 0;
  return new Deno.UnsafePointerView(p).getInt32(0);
}

/**
 * `${op}: ${text} (errno N)` for a failed call: `err` positive or negative, `text` from
 * `describe` (a strerror), or `error N` when that yields nothing or throws.
 */
export function errnoMessage(op: string, err: number, describe: (code: number) => string): string {
  const code = Math.abs(err);
  let text = "";
  try {
    text = describe(code);
  } catch { /* the library could not be opened: the number alone */ }
  return `${op}: ${text || `error ${code}`} (errno ${code})`;
}

/** Encodes `s` as a NUL-terminated UTF-8 C string. Keep the result referenced while C uses it. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  if (bytes.includes(0)) throw new TypeError(`string contains a NUL byte: ${JSON.stringify(s)}`);
  const out = new Uint8Array(new ArrayBuffer(bytes.length + 1));
  out.set(bytes);
  return out;
}

/**
 * Reads a NUL-terminated C string at `ptr` (null for a null pointer). With `max`, at most
 * `max` bytes are read and the string stops at the first NUL among them.
 */
export function readCString(ptr: Deno.PointerValue, max?: number): string | null {
  if (ptr === null) return null;
  if (max === undefined) return Deno.UnsafePointerView.getCString(ptr);
  const buf = new Uint8Array(max);
  new Deno.UnsafePointerView(ptr).copyInto(buf);
  const end = buf.indexOf(0);
  return decoder.decode(end < 0 ? buf : buf.subarray(0, end));
}

/** Decodes a NUL-terminated string held in `buf` (the whole buffer when it has no NUL). */
export function decodeCString(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return decoder.decode(end < 0 ? buf : buf.subarray(0, end));
}

/** Returns the index of interface `name` in the current network namespace, or 0 if absent. */
export function ifNameToIndex(name: string): number {
  if (encoder.encode(name).length >= IF_NAMESIZE) return 0;
  return libc().if_nametoindex(cString(name));
}

/** Returns the name of interface `index` in the current network namespace, or null if absent. */
export function ifIndexToName(index: number): string | null {
  const buf = new Uint8Array(IF_NAMESIZE);
  const p = libc().if_indextoname(index >>> 0, buf);
  if (p === null) return null;
  return decodeCString(buf);
}

/** Returns the process id. */
export function getpid(): number {
  return libc().getpid();
}

/** Closes a file descriptor (e.g. one from `objGetPinned`); returns false when close failed. */
export function closeFd(fd: number): boolean {
  return libc().close(fd) === 0;
}

/** `f_type` of the bpf filesystem (`BPF_FS_MAGIC`). */
export const BPF_FS_MAGIC = 0xcafe4a11;

/** `open(path, O_RDONLY | O_CLOEXEC)`: the fd, or -errno. */
export function openReadOnly(path: string): number {
  const O_CLOEXEC = 0o2000000;
  const fd = libc().open(cString(path), O_CLOEXEC);
  return fd < 0 ? -errno() : fd;
}

/** `flock` operations: shared, exclusive, unlock, and the flag not to wait. */
export const LOCK_SH = 1, LOCK_EX = 2, LOCK_UN = 8, LOCK_NB = 4;

/** `flock(fd, op)`: 0, or -errno (`-EWOULDBLOCK`, 11, when held and `LOCK_NB` is set). */
export function flock(fd: number, op: number): number {
  return libc().flock(fd, op) === 0 ? 0 : -errno();
}

/**
 * The cookie of this process's network namespace (`SO_NETNS_COOKIE`, Linux 5.14): a number the
 * kernel never gives another namespace while the system runs, where inode numbers are reused
 * once a namespace is gone. -errno when it cannot be read (`-ENOPROTOOPT` on older kernels).
 */
export function netnsCookie(): bigint | number {
  const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
  const SOL_SOCKET = 1, SO_NETNS_COOKIE = 71;
  const fd = libc().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno();
  try {
    const v = new BigUint64Array(1);
    const len = new Uint32Array([8]);
    const r = libc().getsockopt(
      fd,
      SOL_SOCKET,
      SO_NETNS_COOKIE,
      new Uint8Array(v.buffer),
      new Uint8Array(len.buffer),
    );
    if (r !== 0) return -errno();
    return len[0] === 8 ? v[0] : -22; // EINVAL: not the 64-bit value expected
  } finally {
    libc().close(fd);
  }
}

/** Fills `into` from offset `pos` of `fd` (`pread` until full); throws on an error or EOF. */
export function preadFull(fd: number, into: Uint8Array, pos: number): Uint8Array {
  let got = 0;
  while (got < into.length) {
    const n = Number(
      libc().pread(fd, into.subarray(got), BigInt(into.length - got), BigInt(pos + got)),
    );
    if (n < 0) throw new Error(`pread at ${pos + got}: errno ${errno()}`);
    if (n === 0) throw new Error(`pread at ${pos + got}: end of file`);
    got += n;
  }
  return into;
}

/** A duplicate of `fd` (close-on-exec), or throws with errno. */
export function dupFd(fd: number): number {
  const F_DUPFD_CLOEXEC = 1030;
  const r = libc().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) throw new Error(`fcntl(F_DUPFD_CLOEXEC, ${fd}): errno ${errno()}`);
  return r;
}

/**
 * Maps `length` bytes of `fd` from `offset` (a multiple of the page size) read-only and shared,
 * as a BPF_F_MMAPABLE map's values are mapped, calls `fn` with a view of them (live: the kernel's
 * writes show), and unmaps. The view must not be used after `fn` returns.
 */
export function withMapping<T>(
  fd: number,
  offset: number,
  length: number,
  fn: (view: Uint8Array) => T,
): T {
  const PROT_READ = 1, MAP_SHARED = 1;
  const p = libc().mmap(null, BigInt(length), PROT_READ, MAP_SHARED, fd, BigInt(offset));
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new Error(`mmap(fd ${fd}, ${length} bytes at ${offset}): errno ${errno()}`);
  }
  try {
    return fn(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length)));
  } finally {
    libc().munmap(p, BigInt(length));
  }
}

/** Returns the allocator's free memory to the kernel (glibc `malloc_trim(0)`). */
export function mallocTrim(): void {
  libc().malloc_trim(0n);
}

/** `madvise(addr, length, advice)`; returns 0 or -errno. */
export function madvise(addr: bigint, length: bigint, advice: number): number {
  const r = libc().madvise(Deno.UnsafePointer.create(addr), length, advice);
  return r === 0 ? 0 : -errno();
}

/**
 * Fixes glibc's mmap threshold (`mallopt(M_MMAP_THRESHOLD)`): allocations of `bytes` or more
 * get pages of their own, returned to the kernel when freed. (Left dynamic, the threshold
 * rises to the largest block freed, and later large blocks stay in the heap once freed.)
 */
export function fixMmapThreshold(bytes: number): void {
  const M_MMAP_THRESHOLD = -3;
  libc().mallopt(M_MMAP_THRESHOLD, bytes);
}

/** The filesystem type (`statfs` `f_type`) holding `path`, or null when it cannot be read. */
export function fsType(path: string): number | null {
  const buf = new Uint8Array(120); // struct statfs is 120 bytes on 64-bit Linux; f_type first
  if (libc().statfs(cString(path), buf) !== 0) return null;
  return Number(new DataView(buf.buffer).getBigInt64(0, true));
}

/** Mounts a fresh bpf filesystem at `target`; throws with errno on failure. */
export function mountBpffs(target: string): void {
  const c = libc();
  if (c.mount(cString("bpf"), cString(target), cString("bpf"), 0n, null) !== 0) {
    throw new Error(`mount -t bpf bpf ${target}: errno ${errno()}`);
  }
}

const CLOCK_MONOTONIC = 1;

/** `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the clock of `bpf_ktime_get_ns`. */
export function monotonicNs(): bigint {
  const ts = new BigInt64Array(2);
  if (libc().clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) {
    throw new Error(`clock_gettime: errno ${errno()}`);
  }
  return ts[0] * 1_000_000_000n + ts[1];
}

/** `struct sockaddr_un` for `path` (`@name`: the abstract namespace), and its length. */
export function sockaddrUn(path: string): { addr: Uint8Array<ArrayBuffer>; len: number } {
  const name = encoder.encode(path);
  const addr = new Uint8Array(110); // sun_family + sun_path[108]
  if (name.length === 0 || name.length > 107) throw new RangeError(`socket path ${path}: length`);
  new DataView(addr.buffer).setUint16(0, 1, /* AF_UNIX */ true);
  addr.set(name, 2);
  const abstract = name[0] === 0x40; // "@": no file, and no NUL at the end
  if (abstract) addr[2] = 0;
  return { addr, len: 2 + name.length + (abstract ? 0 : 1) };
}

/**
 * Sends one datagram to the unix socket `path` (`@name`: abstract) from a fresh socket.
 * Returns 0, or the errno of the failed call.
 */
export function sendUnixDatagram(path: string, data: Uint8Array<ArrayBuffer>): number {
  const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000, MSG_NOSIGNAL = 0x4000;
  const { addr, len } = sockaddrUn(path);
  const fd = libc().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno();
  try {
    const n = libc().sendto(fd, data, BigInt(data.length), MSG_NOSIGNAL, addr, len);
    return Number(n) === data.length ? 0 : errno();
  } finally {
    closeFd(fd);
  }
}
