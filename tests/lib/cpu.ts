/**
 * CPU affinity of the calling thread, for tests whose outcome depends on the CPU a program runs
 * on (per-CPU state such as the flow cache, or races between CPUs). `BPF_PROG_TEST_RUN` runs the
 * program on the thread that makes the call.
 * @module
 */

let lib:
  | Deno.DynamicLibrary<{
    sched_getaffinity: { parameters: ["i32", "usize", "buffer"]; result: "i32" };
    sched_setaffinity: { parameters: ["i32", "usize", "buffer"]; result: "i32" };
  }>
  | undefined;

function libc() {
  lib ??= Deno.dlopen("libc.so.6", {
    sched_getaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
    sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  });
  return lib.symbols;
}

const MASK_BYTES = 128;

/** Pins the calling thread to `cpu`; returns the mask it had, for {@link restoreAffinity}. */
export function pinThread(cpu: number): Uint8Array {
  const old = new Uint8Array(MASK_BYTES);
  if (libc().sched_getaffinity(0, BigInt(MASK_BYTES), old) < 0) {
    throw new Error("sched_getaffinity failed");
  }
  const mask = new Uint8Array(MASK_BYTES);
  mask[cpu >> 3] = 1 << (cpu & 7);
  if (libc().sched_setaffinity(0, BigInt(MASK_BYTES), mask) !== 0) {
    throw new Error(`sched_setaffinity(${cpu}) failed`);
  }
  return old;
}

/** Gives the calling thread back a mask {@link pinThread} returned. */
export function restoreAffinity(mask: Uint8Array): void {
  if (libc().sched_setaffinity(0, BigInt(MASK_BYTES), mask) !== 0) {
    throw new Error("sched_setaffinity (restore) failed");
  }
}
