/**
 * What the running kernel offers, for tests whose expectations depend on it (einat falls back
 * on older kernels, as designed; these machines run 6.18, Debian 12's own kernel is 6.1).
 * @module
 */
import { kernelAtLeast } from "../../lib/config/toml.ts";

/** TCX (Linux 6.6+): with prefer_tcx einat attaches TCX links, else clsact filters. */
export const HAS_TCX = kernelAtLeast(Deno.osRelease(), 6, 6);

/** bpf_cast_to_kern_ctx (Linux 6.2+): the inline-checksum object loads, else the helpers one. */
export const HAS_KERN_CTX = kernelAtLeast(Deno.osRelease(), 6, 2);
