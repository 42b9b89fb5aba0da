/**
 * Facts fixed at build time. `scripts/compile.sh` rewrites this file in its staging copy
 * (never in the checkout) before `deno compile`; a checkout run (`deno run main.ts`) sees the
 * defaults below.
 * @module
 */

/** What the build knew about itself. */
export interface BuildInfo {
  /** `git describe --tags --always --dirty` of the source, or "" when unknown. */
  describe: string;
  /** The `deno compile --target` triple, or "" for `deno run`. */
  target: string;
  /** True in a `deno compile` executable. */
  compiled: boolean;
}

/** This build's facts. */
export const BUILD_INFO: BuildInfo = { describe: "", target: "", compiled: false };
