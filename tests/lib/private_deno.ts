/**
 * A private copy of the running deno binary: no other process maps its pages, as none maps the
 * compiled einat's, so what a process running from it pages out (lib/memory.ts) can leave.
 * @module
 */

/** The copy's path, and a function that removes it with its directory. */
export interface PrivateDeno {
  path: string;
  remove: () => void;
}

/** Copies the running deno binary into a new temporary directory, written out to the disk. */
export function privateDeno(): PrivateDeno {
  const dir = Deno.makeTempDirSync({ prefix: "einat-deno-" });
  const path = `${dir}/deno`;
  try {
    Deno.copyFileSync(Deno.execPath(), path);
    Deno.chmodSync(path, 0o755);
    using f = Deno.openSync(path, { read: true });
    f.syncSync();
  } catch (e) {
    Deno.removeSync(dir, { recursive: true });
    throw e;
  }
  return { path, remove: () => Deno.removeSync(dir, { recursive: true }) };
}
