/**
 * Loading the NAT object: open the embedded bytes, set the read-only
 * configuration and map sizes, load, and hand out program and map fds.
 * @module
 */

import objectBytes from "../../bpf/einat.bpf.o" with { type: "bytes" };
import * as bpf from "../ffi/libbpf.ts";
import { encodeRoConfig, type RoConfig } from "./codec.ts";
import { abortPins, finishPins, type PinSession, preparePins } from "../state/pin.ts";

/** Names of the maps the daemon uses. */
export const MAP_NAMES = {
  binding: "map_binding",
  ct: "map_ct",
  externals: "map_externals",
  destConfig: "map_dest_config",
  defaultExt: "map_default_ext",
  stats: "map_stats",
  frag: "map_frag",
  traffic: "map_traffic",
  portBits: "map_port_bits",
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
  /** Program that deletes expired sessions ({@link expireSessions}). */
  expireFd: number;
  /** Program that marks bound ports in the free-port hint ({@link syncPortHint}). */
  syncHintFd: number;
  /** Program that moves the mapping epoch ({@link bumpEpoch}). */
  bumpEpochFd: number;
  /** Pinned state: where, and which maps were reused. Absent without `pinDir`. */
  pins?: { dir: string; reused: string[]; reset: string[] };
}

/** What a load needs. */
export interface LoadOptions {
  ro: RoConfig;
  bindingMaxRecords: number;
  ctMaxRecords: number;
  /** Object bytes; the embedded object when absent. */
  bytes?: Uint8Array;
  /**
   * Create the binding and session maps preallocated (`preallocate_maps`) instead of
   * allocating their records on demand. Pinned maps keep the mode they were created with.
   */
  preallocate?: boolean;
  /** Fragment tracking records (`frag_track_max_records`); the object's default when absent. */
  fragMaxRecords?: number;
  /**
   * Pin the state maps in this bpffs folder and reuse what is pinned there
   * (lib/state/pin.ts); `ifname` names the interface in messages and the stamp.
   */
  pin?: { dir: string; ifname: string };
  /** Maps (by name) to share with another loaded object instead of creating them. */
  reuse?: Record<string, number>;
}

/** The embedded BPF object. */
export function embeddedObject(): Uint8Array {
  return objectBytes;
}

/** Opens, configures and loads the NAT object. */
export async function loadNat(opts: LoadOptions): Promise<NatObject> {
  const t0 = performance.now();
  // EINAT_BPF_OBJECT: load this object file instead of the embedded one (debugging, tests).
  const override = Deno.env.get("EINAT_BPF_OBJECT");
  const bytes = opts.bytes ?? (override ? Deno.readFileSync(override) : objectBytes);
  const obj = bpf.openObjectMem(bytes, "einat");
  let pins: PinSession | null = null;
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
    if (opts.preallocate) {
      for (const name of [MAP_NAMES.binding, MAP_NAMES.ct]) {
        const m = bpf.findMap(obj, name);
        bpf.mapSetFlags(m, bpf.mapFlags(m) & ~bpf.BPF_F_NO_PREALLOC);
      }
    }
    if (opts.fragMaxRecords) {
      bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.frag), opts.fragMaxRecords);
    }
    for (const [name, fd] of Object.entries(opts.reuse ?? {})) {
      bpf.mapReuseFd(bpf.findMap(obj, name), fd);
    }
    if (opts.pin) pins = preparePins(obj, bytes, opts.pin.dir, opts.pin.ifname);
    await bpf.loadObject(obj);
    if (pins) finishPins(pins, obj, opts.ro);
    const maps = Object.fromEntries(
      Object.entries(MAP_NAMES).map(([k, name]) => [k, bpf.mapFd(bpf.findMap(obj, name))]),
    ) as NatMaps;
    return {
      obj,
      egressFd: bpf.programFd(bpf.findProgram(obj, "egress_snat")),
      ingressFd: bpf.programFd(bpf.findProgram(obj, "ingress_dnat")),
      maps,
      loadMs: performance.now() - t0,
      expireFd: bpf.programFd(bpf.findProgram(obj, "expire_sessions")),
      syncHintFd: bpf.programFd(bpf.findProgram(obj, "sync_port_hint")),
      bumpEpochFd: bpf.programFd(bpf.findProgram(obj, "bump_epoch")),
      pins: pins ? { dir: pins.dir, reused: pins.reused, reset: pins.reset } : undefined,
    };
  } catch (e) {
    if (pins && pins.metaFd >= 0) abortPins(pins);
    bpf.closeObject(obj);
    throw e;
  }
}

/**
 * The session sweep (bpf/lib/state.h): deletes every session past its
 * timeout, and each binding with its last session. The daemon runs it once
 * at start and then paced by lib/nat/sweep.ts. Returns the number of
 * sessions expired.
 */
export function expireSessions(n: NatObject): number {
  return bpf.testRun(n.expireFd, new Uint8Array(64)).retval;
}

/** {@link expireSessions} off the JS thread (a table of a million sessions takes ~0.1 s). */
export async function expireSessionsAsync(n: NatObject): Promise<number> {
  return (await bpf.testRunAsync(n.expireFd, new Uint8Array(64))).retval;
}

/**
 * Marks every bound external port in this object's free-port hint, which
 * starts empty (bpf/lib/binding.h): run once with bindings carried over from
 * pinned maps, so new mappings do not probe for each of them. Returns the
 * number of bindings marked.
 */
export function syncPortHint(n: NatObject): number {
  return bpf.testRun(n.syncHintFd, new Uint8Array(64)).retval;
}

/**
 * Moves the mapping epoch (bpf/lib/epoch.h), so no flow cache serves a
 * mapping any more: call it after deleting sessions or bindings from user
 * space (the datapath and the sweep move it themselves).
 */
export function bumpEpoch(n: NatObject): void {
  bpf.testRun(n.bumpEpochFd, new Uint8Array(64));
}

/** Releases the object (programs stay alive while attached). */
export function closeNat(n: NatObject): void {
  bpf.closeObject(n.obj);
}
