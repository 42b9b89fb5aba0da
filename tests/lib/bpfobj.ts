/**
 * Variants of the BPF object for tests: the same source built with a
 * preprocessor define (e.g. a program the verifier rejects, or maps made
 * the way an earlier build made them).
 * @module
 */
import { runResult } from "./netns.ts";

const BPF_DIR = new URL("../../bpf/", import.meta.url).pathname;

/** Builds bpf/einat.bpf.c with `-D<define>` into `out`; throws with clang's output on failure. */
export async function buildVariant(define: string, out: string): Promise<void> {
  const cc = await runResult([
    "clang-19",
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-mcpu=v3",
    `-D${define}`,
    "-I/usr/include/x86_64-linux-gnu",
    `-I${BPF_DIR}`,
    "-c",
    `${BPF_DIR}einat.bpf.c`,
    "-o",
    out,
  ]);
  if (cc.code !== 0) throw new Error(`clang -D${define} failed:\n${cc.stderr}`);
}

/** Builds the `-D<define>` variant into a temporary directory, runs `fn` with its path, cleans up. */
export async function withVariant<T>(define: string, fn: (obj: string) => Promise<T>): Promise<T> {
  const tmp = await Deno.makeTempDir();
  try {
    const obj = `${tmp}/einat-${define.toLowerCase()}.bpf.o`;
    await buildVariant(define, obj);
    return await fn(obj);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/**
 * Adds a filter of others (the no-op program, `bpf/noop.bpf.o`) at `prio` on a clsact hook of
 * `dev` in namespace `ns`, as another tool would.
 */
export async function addForeignFilter(
  ns: string,
  dev: string,
  hook: "ingress" | "egress",
  prio: number,
): Promise<void> {
  const noop = new URL("../../bpf/noop.bpf.o", import.meta.url).pathname;
  const tc = ["tc", "filter", "add", "dev", dev, hook, "prio", String(prio), "bpf", "da"];
  const r = await runResult(["ip", "netns", "exec", ns, ...tc, "obj", noop, "sec", "tc"]);
  if (r.code !== 0) throw new Error(`tc filter add: ${r.stderr}`);
}
