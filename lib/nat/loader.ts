/**
 * Loading the NAT object: open the embedded bytes, set the read-only
 * configuration and map sizes, load, and hand out program and map fds.
 * @module
 */

import objectBytes from "../../bpf/einat.bpf.o" with { type: "bytes" };
import * as bpf from "../ffi/libbpf.ts";
import { encodeRoConfig, type RoConfig } from "./codec.ts";

/** Names of the maps the daemon uses. */
export const MAP_NAMES = {
  binding: "map_binding",
  ct: "map_ct",
  externals: "map_externals",
  destConfig: "map_dest_config",
  defaultExt: "map_default_ext",
  stats: "map_stats",
} as const;

/** File descriptors of the maps, by role. */
export type NatMaps = { [K in keyof typeof MAP_NAMES]: number };

/** A loaded NAT object. Close it to release programs and maps. */
export interface NatObject {
  obj: bpf.BpfObject;
  egressFd: number;
  ingressFd: number;
  maps: NatMaps;
  loadMs: number;
}

/** What a load needs. */
export interface LoadOptions {
  ro: RoConfig;
  bindingMaxRecords: number;
  ctMaxRecords: number;
  /** Object bytes; the embedded object when absent. */
  bytes?: Uint8Array;
}

/** The embedded BPF object. */
export function embeddedObject(): Uint8Array {
  return objectBytes;
}

/** Opens, configures and loads the NAT object. */
export async function loadNat(opts: LoadOptions): Promise<NatObject> {
  const t0 = performance.now();
  const obj = bpf.openObjectMem(opts.bytes ?? objectBytes, "einat");
  try {
    const rodata = bpf.findMap(obj, ".rodata");
    const init = bpf.mapInitialValue(rodata);
    const cfg = encodeRoConfig(opts.ro);
    if (init.length < cfg.length) {
      throw new Error(`.rodata is ${init.length} bytes, expected ${cfg.length}`);
    }
    init.set(cfg, 0); // CFG sits at offset 0 (checked against BTF in tests)
    bpf.mapSetInitialValue(rodata, init);
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.binding), opts.bindingMaxRecords * 2);
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.ct), opts.ctMaxRecords);
    await bpf.loadObject(obj);
    const maps = Object.fromEntries(
      Object.entries(MAP_NAMES).map(([k, name]) => [k, bpf.mapFd(bpf.findMap(obj, name))]),
    ) as NatMaps;
    return {
      obj,
      egressFd: bpf.programFd(bpf.findProgram(obj, "egress_snat")),
      ingressFd: bpf.programFd(bpf.findProgram(obj, "ingress_dnat")),
      maps,
      loadMs: performance.now() - t0,
    };
  } catch (e) {
    bpf.closeObject(obj);
    throw e;
  }
}

/** Releases the object (programs stay alive while attached). */
export function closeNat(n: NatObject): void {
  bpf.closeObject(n.obj);
}
