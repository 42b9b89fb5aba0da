/**
 * The shared libraries einat opens at run time (besides glibc): libbpf.so.1 (>= 1.0) and
 * libmnl.so.0. {@link checkRuntimeLibraries} opens each once at start so that a missing one
 * becomes a single line naming the distribution package, instead of a failure in the middle of
 * setting up an interface.
 *
 * Each library can be given by absolute path through an environment variable
 * (`EINAT_LIBBPF`, `EINAT_LIBMNL`); the Nix package sets them to store paths. Without the
 * variable the bare soname is used and the dynamic loader searches as usual
 * (`LD_LIBRARY_PATH`, ld.so.cache, default paths).
 * @module
 */

/** A shared library einat needs at run time. */
export interface RuntimeLibrary {
  /** The soname einat opens by default. */
  soname: string;
  /** Environment variable holding an overriding path. */
  env: string;
  /** Where to get it, for the error message. */
  packages: string;
  /** A symbol the library must export (proves it is the right library). */
  probe: string;
}

/** libbpf, for loading and attaching the BPF programs. */
export const LIBBPF: RuntimeLibrary = {
  soname: "libbpf.so.1",
  env: "EINAT_LIBBPF",
  packages: "libbpf1 (Debian/Ubuntu), libbpf (Fedora/Arch/Nix)",
  probe: "libbpf_major_version",
};

/** libmnl, for netlink (addresses, routes, rules). */
export const LIBMNL: RuntimeLibrary = {
  soname: "libmnl.so.0",
  env: "EINAT_LIBMNL",
  packages: "libmnl0 (Debian/Ubuntu), libmnl (Fedora/Arch/Nix)",
  probe: "mnl_socket_open",
};

/** Every library {@link checkRuntimeLibraries} checks, in order. */
export const RUNTIME_LIBRARIES: readonly RuntimeLibrary[] = [LIBBPF, LIBMNL];

/** Oldest libbpf major version einat works with. */
export const MIN_LIBBPF_MAJOR = 1;

/** Reads an environment variable; undefined when unset or not permitted. */
export type EnvLookup = (name: string) => string | undefined;

function denoEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env for it: same as unset
  }
}

function bySoname(name: string): RuntimeLibrary | undefined {
  return RUNTIME_LIBRARIES.find((l) => l.soname === name || l.env === name);
}

/**
 * The path to hand to `Deno.dlopen` for a library: its override variable when set and not
 * empty, else `name` itself. `name` is a soname of {@link RUNTIME_LIBRARIES} (or any other
 * soname, returned unchanged).
 */
export function libPath(name: string, env: EnvLookup = denoEnv): string {
  const lib = bySoname(name);
  if (!lib) return name;
  return env(lib.env) || lib.soname;
}

/** A runtime library is missing or unusable. The message is one line. */
export class MissingLibraryError extends Error {
  constructor(readonly library: RuntimeLibrary, message: string) {
    super(message);
    this.name = "MissingLibraryError";
  }
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

/** Opens one library and checks it; throws {@link MissingLibraryError}. */
export function checkLibrary(lib: RuntimeLibrary, env: EnvLookup = denoEnv): void {
  const path = libPath(lib.soname, env);
  const where = path === lib.soname ? "" : ` at ${path} (from ${lib.env})`;
  let handle: Deno.DynamicLibrary<Record<string, Deno.ForeignFunction>>;
  try {
    handle = Deno.dlopen(path, { [lib.probe]: { parameters: [], result: "u32" } });
  } catch (e) {
    // Deno says "Could not open library: " twice over the loader's own words.
    const msg = (e instanceof Error ? e.message : String(e)).replace(
      /^(Could not open library: )+/,
      "",
    );
    if (/cannot open shared object file|No such file/.test(msg)) {
      throw new MissingLibraryError(
        lib,
        `${lib.soname} not found${where}: install ${lib.packages}`,
      );
    }
    if (/undefined symbol|Failed to register symbol/.test(msg)) {
      throw new MissingLibraryError(lib, `${path} is not ${lib.soname}: it lacks ${lib.probe}`);
    }
    throw new MissingLibraryError(lib, oneLine(`cannot load ${lib.soname}${where}: ${msg}`));
  }
  try {
    if (lib === LIBBPF) {
      const major = handle.symbols[lib.probe]() as number;
      if (major < MIN_LIBBPF_MAJOR) {
        throw new MissingLibraryError(
          lib,
          `libbpf ${major}.x${where} is too old: einat needs libbpf >= ${MIN_LIBBPF_MAJOR}.0`,
        );
      }
    }
  } finally {
    handle.close();
  }
}

/**
 * Opens every runtime library once and closes it again. Throws a
 * {@link MissingLibraryError} whose one-line message names each missing library and the
 * package that provides it (several are joined with "; ").
 */
export function checkRuntimeLibraries(
  libs: readonly RuntimeLibrary[] = RUNTIME_LIBRARIES,
  env: EnvLookup = denoEnv,
): void {
  const errors: MissingLibraryError[] = [];
  for (const lib of libs) {
    try {
      checkLibrary(lib, env);
    } catch (e) {
      if (!(e instanceof MissingLibraryError)) throw e;
      errors.push(e);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) {
    throw new MissingLibraryError(errors[0].library, errors.map((e) => e.message).join("; "));
  }
}
