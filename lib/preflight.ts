/**
 * Checks made before touching the network: privileges, BPF and BTF support,
 * required libraries. Each failure is one line naming the cause.
 * @module
 */

/** A start-up problem that is the environment's, not the config's. */
export class EnvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EnvError";
  }
}

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_PERFMON = 38n;
const CAP_BPF = 39n;

/** Effective capability mask of this process. */
export function effectiveCaps(status = Deno.readTextFileSync("/proc/self/status")): bigint {
  const m = status.match(/^CapEff:\s*([0-9a-f]+)$/m);
  return m ? BigInt("0x" + m[1]) : 0n;
}

/** Throws EnvError unless the process may load BPF and change qdiscs. */
export function checkPrivileges(caps = effectiveCaps()): void {
  const has = (c: bigint) => (caps >> c & 1n) === 1n;
  const missing: string[] = [];
  if (!has(CAP_NET_ADMIN)) missing.push("CAP_NET_ADMIN");
  if (!has(CAP_BPF) && !has(CAP_SYS_ADMIN)) missing.push("CAP_BPF");
  // The verifier refuses pointer arithmetic on packets without CAP_PERFMON.
  if (!has(CAP_PERFMON) && !has(CAP_SYS_ADMIN)) missing.push("CAP_PERFMON");
  if (missing.length) {
    throw new EnvError(`missing privileges: einat needs ${missing.join(", ")} (run as root)`);
  }
}

/** Throws EnvError when the kernel lacks BTF or the BPF syscall. */
export function checkKernel(btfPath = "/sys/kernel/btf/vmlinux"): void {
  try {
    Deno.statSync(btfPath);
  } catch {
    throw new EnvError(`kernel without BTF: ${btfPath} is missing (needs CONFIG_DEBUG_INFO_BTF)`);
  }
}
