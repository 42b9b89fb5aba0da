/**
 * Loading the NAT object: open the embedded bytes, set the read-only
 * configuration and map sizes, load, and hand out program and map fds.
 * @module
 */

import objectBytes from "../../bpf/einat.bpf.o" with { type: "bytes" };
import compatBytes from "../../bpf/einat_compat.bpf.o" with { type: "bytes" };
import queryBytes from "../../bpf/btf_query.bpf.o" with { type: "bytes" };
import * as bpf from "../ffi/libbpf.ts";
import { closeFd, dupFd, mallocTrim } from "../ffi/libc.ts";
import { findSummedBit } from "./kbtf.ts";
import { patchKernCtxCalls, placeholderCalls } from "./kfunc.ts";
import {
  BTF_QUERY_LAYOUT,
  EINAT_CONFIG_LAYOUT,
  encodeRoConfig,
  outboundLines,
  PROTO_COUNT,
  type RoConfig,
  shortestTimeoutNs,
} from "./codec.ts";
import { RECORDS_PER_SLOT } from "./records.ts";
import { FLOW_CACHE_SLOTS } from "../config/types.ts";
import {
  abortPins,
  finishPins,
  hostCountsOf,
  type PinSession,
  preparePins,
  releasePins,
} from "../state/pin.ts";

/** Names of the maps the daemon uses. */
export const MAP_NAMES = {
  records: "map_records",
  outbound: "map_outbound",
  slots: "map_slots",
  bindingCount: "map_binding_count",
  ct: "map_ct",
  externals: "map_externals",
  destConfig: "map_dest_config",
  prefixSets: "map_prefix_sets",
  defaultExt: "map_default_ext",
  stats: "map_stats",
  frag: "map_frag",
  traffic: "map_traffic",
  portBits: "map_port_bits",
  flowCache: "map_flow_cache",
  sweep: "map_sweep",
  sessCounters: "map_sess_counters",
  addrNat: "map_addr_nat",
  hosts: "map_hosts",
} as const;

/** File descriptors of the maps, by role. */
export type NatMaps = { [K in keyof typeof MAP_NAMES]: number };

/**
 * How the object updates L4 checksums: `inline` reads the skb's ip_summed through the
 * kernel's BTF (bpf/lib/skb.h; Linux 6.2+ with BTF), `helpers` asks the kernel's
 * checksum helpers (the compatibility object, ~35 ns a packet slower).
 */
export type CsumMode = "inline" | "helpers";

/** A loaded NAT object. Close it to release programs and maps. */
export interface NatObject {
  /** The object holding the maps (and the programs, when loaded as one object). */
  obj: bpf.BpfObject;
  /** Program fds loaded beside `obj` on its maps, closed by {@link closeNat} (empty: all in `obj`). */
  progFds: number[];
  /** Checksum update of the loaded object. */
  csum: CsumMode;
  /** Why the compatibility object was loaded instead of the inline one, when it was. */
  csumFallback?: string;
  /** The BTF id of `bpf_cast_to_kern_ctx` the inline object calls. */
  kfuncId?: number;
  egressFd: number;
  ingressFd: number;
  maps: NatMaps;
  loadMs: number;
  /** Program that deletes expired sessions (lib/nat/expire.ts). */
  expireFd: number;
  /** The shortest session timeout the programs apply, ns: no session idle for less expires. */
  shortestTimeoutNs: bigint;
  /** The address-only mappings' timeout (`timeout_other`), ns; 0: off. */
  timeoutOtherNs: bigint;
  /** Program that marks bound ports in the free-port hint ({@link syncPortHint}). */
  syncHintFd: number;
  /** Program that moves the mapping epoch ({@link bumpEpoch}). */
  bumpEpochFd: number;
  /** Program that frees the records of an address that left (records.ts, releaseSlotRecords). */
  releaseFd: number;
  /**
   * Pinned state: where, which maps were reused, and the folder held (lib/state/pin.ts) until
   * {@link closeNat}. Absent without `pinDir`.
   */
  pins?: { dir: string; reused: string[]; reset: string[]; migrated: string[]; lockFd: number };
  /**
   * Every map was created empty by this load: none reused (pinned, or shared with another
   * object) or carried over. Until the programs first run, there is nothing to count or sweep.
   */
  fresh: boolean;
  /**
   * Sweeps in progress (lib/nat/expire.ts): their runs use the descriptors between awaits, so
   * {@link closeNat} leaves the closing to the last of them.
   */
  sweeps?: number;
  /** Set by {@link closeNat}: closed, or closed when the sweeps in progress end. */
  closing?: boolean;
}

/** What a load needs. */
export interface LoadOptions {
  ro: RoConfig;
  bindingMaxRecords: number;
  ctMaxRecords: number;
  /**
   * External addresses that bindings can be made on at once (slots of map_records, 12 MiB each);
   * {@link defaultSlots} when absent.
   */
  extSlots?: number;
  /** Object bytes; the embedded object when absent. */
  bytes?: Uint8Array;
  /**
   * Which embedded object: `inline` where the kernel has BTF (falling back to `helpers`
   * when it cannot be loaded), unless given.
   */
  csum?: CsumMode;
  /** Where the kernel's BTF is looked for (tests); `/sys/kernel/btf/vmlinux` when absent. */
  kernelBtf?: string;
  /** Replaces the embedded inline-checksum object (tests: one the kernel refuses). */
  inlineObject?: Uint8Array;
  /**
   * Create the binding and session maps preallocated (`preallocate_maps`) instead of
   * allocating their records on demand. Pinned maps keep the mode they were created with.
   */
  preallocate?: boolean;
  /** Fragment tracking records (`frag_track_max_records`); the object's default when absent. */
  fragMaxRecords?: number;
  /** Address-only mappings (`other_max_records`); the object's default (4,096) when absent. */
  otherMaxRecords?: number;
  /**
   * Pin the state maps in this bpffs folder and reuse what is pinned there
   * (lib/state/pin.ts); `ifname` names the interface in messages and the stamp.
   */
  pin?: { dir: string; ifname: string };
  /** Maps (by name) to share with another loaded object instead of creating them. */
  reuse?: Record<string, number>;
}

/**
 * Entries of the flow cache: one block of `flow_cache_slots` per possible CPU
 * (bpf/lib/flowcache.h). Throws, naming the key, when that exceeds what a map holds.
 */
export function flowCacheEntries(ro: RoConfig, cpus = bpf.numPossibleCpus()): number {
  const slots = ro.flowCacheSlots ?? FLOW_CACHE_SLOTS.default;
  const entries = cpus * slots;
  if (entries > 2 ** 31) {
    throw new RangeError(
      `flow_cache_slots ${slots} x ${cpus} possible CPUs = ${entries} slots: more than a map ` +
        `holds (2^31); use fewer slots`,
    );
  }
  return entries;
}

/**
 * Slots of external addresses by default: one per family NATed, and one more, so that an
 * address that replaces another gets a slot before the old one's bindings are purged.
 */
export function defaultSlots(ro: RoConfig): number {
  return (ro.nat44 ? 1 : 0) + (ro.nat66 ? 1 : 0) + 1;
}

/** The embedded BPF object: the inline-checksum one, or the compatibility one. */
export function embeddedObject(csum: CsumMode = "inline"): Uint8Array {
  return csum === "inline" ? objectBytes : compatBytes;
}

/** The checksum mode of an object file: whether it holds bpf/lib/skb.h's kfunc placeholder. */
export function csumModeOf(bytes: Uint8Array): CsumMode {
  return placeholderCalls(bytes).length > 0 ? "inline" : "helpers";
}

const VMLINUX_BTF = "/sys/kernel/btf/vmlinux";

/** The kernel cannot run the inline-checksum object (its BTF lacks what it needs). */
class InlineUnavailable extends Error {}

/**
 * The inline-checksum object made ready for this kernel: its placeholder calls turned into
 * the `bpf_cast_to_kern_ctx` kfunc call (the id the kernel gives), and where
 * `sk_buff.ip_summed` lies (from its BTF).
 */
async function prepareInline(bytes: Uint8Array, btfPath: string) {
  const kfuncId = await askKernCtxFuncId();
  let summedBit;
  try {
    summedBit = findSummedBit(btfPath);
  } catch (e) {
    throw new InlineUnavailable((e as Error).message);
  }
  return { bytes: patchKernCtxCalls(bytes, kfuncId), summedBit, kfuncId };
}

/**
 * Opens, configures and loads the NAT object: the inline-checksum object where the kernel
 * has BTF, else (or when the kernel refuses it) the compatibility object, which says why in
 * `csumFallback`.
 */
export async function loadNat(opts: LoadOptions): Promise<NatObject> {
  const t0 = performance.now();
  // EINAT_BPF_OBJECT: load this object file instead of the embedded one (debugging, tests).
  const override = Deno.env.get("EINAT_BPF_OBJECT");
  const given = opts.bytes ?? (override ? Deno.readFileSync(override) : undefined);
  if (given) return await loadNatBytes(opts, given, csumModeOf(given), t0, false);
  const embedded = (csum: CsumMode) =>
    loadNatBytes(
      opts,
      (csum === "inline" && opts.inlineObject) || embeddedObject(csum),
      csum,
      t0,
      true,
    );
  if (opts.csum) return await embedded(opts.csum);
  try {
    return await embedded("inline");
  } catch (e) {
    // Only what the kernel lacks falls back; state errors do not.
    const refused = e instanceof bpf.BpfError && e.op === "bpf_object__load";
    if (!refused && !(e instanceof InlineUnavailable)) throw e;
    let n: NatObject;
    try {
      n = await embedded("helpers");
    } catch {
      throw e; // refused as well: the first error says more
    }
    n.csumFallback = e.message.split("\n")[0];
    return n;
  }
}

/**
 * The BTF id of `bpf_cast_to_kern_ctx` in the running kernel, asked of the kernel by the
 * `btf_find` program (bpf/btf_query.bpf.o: no maps, so it loads in a moment).
 */
async function askKernCtxFuncId(): Promise<number> {
  const obj = bpf.openObjectMem(queryBytes, "einat_btf");
  try {
    await bpf.loadObject(obj);
    const L = BTF_QUERY_LAYOUT.fields;
    const name = "bpf_cast_to_kern_ctx";
    const q = new Uint8Array(BTF_QUERY_LAYOUT.size);
    q.set(new TextEncoder().encode(name), L.name.offset);
    const v = new DataView(q.buffer);
    v.setUint32(L.name_sz.offset, name.length + 1, true);
    v.setUint32(L.kind.offset, 12, true); // BTF_KIND_FUNC
    const out = bpf.testRunSyscall(bpf.programFd(bpf.findProgram(obj, "btf_find")), q).ctx;
    const id = new DataView(out.buffer).getBigInt64(L.id.offset, true);
    if (id <= 0n) throw new InlineUnavailable(`the kernel has no bpf_cast_to_kern_ctx (${id})`);
    if (id >> 32n) {
      closeFd(Number(id >> 32n)); // found in a module's BTF: not the kfunc this object calls
      throw new InlineUnavailable("bpf_cast_to_kern_ctx is a module's");
    }
    return Number(id);
  } finally {
    bpf.closeObject(obj);
  }
}

/**
 * The programs of each datapath object, loaded on the maps of the state object (which loads
 * none): egress verification takes longest, so the small state programs go with ingress.
 */
const PARTS = [
  ["egress_snat"],
  ["ingress_dnat", "expire_sessions", "sync_port_hint", "bump_epoch", "release_records"],
] as const;

function setRoConfig(obj: bpf.BpfObject, ro: RoConfig, summedBit = 0): void {
  const rodata = bpf.findMap(obj, ".rodata");
  const init = bpf.mapInitialValue(rodata);
  const cfg = encodeRoConfig(ro);
  if (init.length < cfg.length) {
    throw new Error(`.rodata is ${init.length} bytes, expected ${cfg.length}`);
  }
  // From the kernel's BTF, not the configuration (bpf/lib/skb.h).
  new DataView(cfg.buffer).setUint16(
    EINAT_CONFIG_LAYOUT.fields.skb_summed_bit.offset,
    summedBit,
    true,
  );
  init.set(cfg, 0); // CFG sits at offset 0 (checked against BTF in tests)
  bpf.mapSetInitialValue(rodata, init);
}

function onlyPrograms(obj: bpf.BpfObject, names: readonly string[]): void {
  for (const p of bpf.programNames(obj)) {
    bpf.programSetAutoload(bpf.findProgram(obj, p), names.includes(p));
  }
}

/**
 * Loads `bytes` (whose checksum update is `csum`; an inline-checksum object is first made
 * ready for this kernel, prepareInline, in both ways). `staged` (the embedded objects) loads in two steps:
 * the compatibility object creates or reuses every map (and loads no program); then two
 * objects of `bytes` reuse those maps and load at once, egress in one, ingress and the state
 * programs in the other, so their verification (most of the start-up time) runs on two
 * cores. Otherwise `bytes` loads as one object.
 */
async function loadNatBytes(
  opts: LoadOptions,
  bytes: Uint8Array,
  csum: CsumMode,
  t0: number,
  staged: boolean,
): Promise<NatObject> {
  const btfPath = opts.kernelBtf ?? VMLINUX_BTF;
  const single = !staged && csum === "inline" ? await prepareInline(bytes, btfPath) : null;
  const stateBytes = staged ? compatBytes : single?.bytes ?? bytes;
  const obj = bpf.openObjectMem(stateBytes, "einat");
  const parts: bpf.BpfObject[] = [];
  const progFds: number[] = [];
  let pins: PinSession | null = null;
  try {
    const slots = opts.extSlots ?? defaultSlots(opts.ro);
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.records), slots * RECORDS_PER_SLOT);
    const outbound = bpf.findMap(obj, MAP_NAMES.outbound);
    bpf.mapSetMaxEntries(outbound, outboundLines(opts.bindingMaxRecords));
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.ct), opts.ctMaxRecords);
    // Room for as many internal addresses as there can be bindings; one entry when off.
    bpf.mapSetMaxEntries(
      bpf.findMap(obj, MAP_NAMES.hosts),
      opts.ro.hostMax || opts.ro.hostSessMax ? opts.bindingMaxRecords : 1,
    );
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.flowCache), flowCacheEntries(opts.ro));
    // One entry when off (a map is never empty), at least two when on (counters.ts, countingOn).
    const counted = opts.ro.sessionCounters ?? 0;
    bpf.mapSetMaxEntries(
      bpf.findMap(obj, MAP_NAMES.sessCounters),
      counted > 0 ? Math.max(2, counted) : 1,
    );
    if (opts.preallocate) {
      const m = bpf.findMap(obj, MAP_NAMES.ct);
      bpf.mapSetFlags(m, bpf.mapFlags(m) & ~bpf.BPF_F_NO_PREALLOC);
    }
    if (opts.fragMaxRecords) {
      bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.frag), opts.fragMaxRecords);
    }
    if (opts.otherMaxRecords) {
      bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.addrNat), opts.otherMaxRecords);
    }
    for (const [name, fd] of Object.entries(opts.reuse ?? {})) {
      bpf.mapReuseFd(bpf.findMap(obj, name), fd);
    }
    if (opts.pin) {
      pins = preparePins(obj, stateBytes, opts.pin.dir, opts.pin.ifname, hostCountsOf(opts.ro));
    }
    // The free-port hint covers every slot of the records, as created or as pinned (which
    // keeps its size: a start with fewer external_slots still purges the slots beyond them).
    const recSlots = bpf.mapMaxEntries(bpf.findMap(obj, MAP_NAMES.records)) / RECORDS_PER_SLOT;
    bpf.mapSetMaxEntries(bpf.findMap(obj, MAP_NAMES.portBits), recSlots * PROTO_COUNT);
    // the index as created, or as pinned (which keeps its size)
    const ro: RoConfig = {
      ...opts.ro,
      bindingMax: opts.bindingMaxRecords,
      outboundLines: bpf.mapMaxEntries(outbound),
      // The pinned counters' key when they are reused (lib/state/pin.ts); else a new one.
      ipIdKey: opts.ro.ipIdKey ?? pins?.ipIdKey ?? crypto.getRandomValues(new Uint32Array(1))[0],
    };
    setRoConfig(obj, ro, single?.summedBit);
    const inline = staged && csum === "inline";
    if (staged) onlyPrograms(obj, []);
    const loading = bpf.loadObject(obj);
    let kfuncId = single?.kfuncId;
    if (staged) {
      // While the maps are created (off the JS thread): for the inline object, the kfunc's id
      // from the kernel and the field's place from the BTF; the datapath objects opened.
      try {
        const dp = inline ? await prepareInline(bytes, btfPath) : null;
        kfuncId = dp?.kfuncId;
        for (const progs of PARTS) {
          const part = bpf.openObjectMem(dp?.bytes ?? bytes, "einat");
          parts.push(part);
          setRoConfig(part, ro, dp?.summedBit);
          onlyPrograms(part, progs);
        }
      } catch (e) {
        await loading.catch(() => {}); // obj may not close while it loads
        throw e;
      }
    }
    await loading;
    let progFd = (name: string) => bpf.programFd(bpf.findProgram(obj, name));
    if (staged) {
      for (const part of parts) {
        for (const name of bpf.mapNames(obj)) {
          bpf.mapReuseFd(bpf.findMap(part, name), bpf.mapFd(bpf.findMap(obj, name)));
        }
      }
      // Both at once (off the JS thread); neither object may close while the other loads.
      const done = await Promise.allSettled(parts.map((p) => bpf.loadObject(p)));
      const failed = done.find((d) => d.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      // Programs outlive their objects through duplicated fds; what libbpf keeps per object
      // (ELF, BTF, instructions) goes.
      const fds: Record<string, number> = {};
      PARTS.forEach((progs, i) => {
        for (const prog of progs) {
          fds[prog] = dupFd(bpf.programFd(bpf.findProgram(parts[i], prog)));
          progFds.push(fds[prog]);
        }
      });
      for (const p of parts.splice(0)) bpf.closeObject(p);
      mallocTrim();
      progFd = (name) => fds[name];
    }
    if (pins) finishPins(pins, obj, ro);
    const maps = Object.fromEntries(
      Object.entries(MAP_NAMES).map(([k, name]) => [k, bpf.mapFd(bpf.findMap(obj, name))]),
    ) as NatMaps;
    return {
      obj,
      progFds,
      csum,
      kfuncId,
      egressFd: progFd("egress_snat"),
      ingressFd: progFd("ingress_dnat"),
      maps,
      loadMs: performance.now() - t0,
      expireFd: progFd("expire_sessions"),
      shortestTimeoutNs: shortestTimeoutNs(opts.ro),
      timeoutOtherNs: opts.ro.timeoutOther ?? 0n,
      syncHintFd: progFd("sync_port_hint"),
      bumpEpochFd: progFd("bump_epoch"),
      releaseFd: progFd("release_records"),
      fresh: Object.keys(opts.reuse ?? {}).length === 0 &&
        (!pins || pins.reused.length + pins.migrated.length === 0),
      pins: pins
        ? {
          dir: pins.dir,
          reused: pins.reused,
          reset: pins.reset,
          migrated: pins.migrated,
          lockFd: pins.lockFd,
        }
        : undefined,
    };
  } catch (e) {
    if (pins) abortPins(pins);
    for (const fd of progFds) closeFd(fd);
    for (const p of parts) bpf.closeObject(p);
    bpf.closeObject(obj);
    throw e;
  }
}

/**
 * Marks every bound external port in this object's free-port hint, which
 * starts empty (bpf/lib/binding.h): run once with bindings carried over from
 * pinned maps, so new mappings do not probe for each of them. Returns the
 * number of bindings marked. The same walk makes the counts per internal
 * address (bpf/lib/hosts.h), unless `hostsKept` says map_hosts was carried
 * over with them (lib/state/serve.ts, syncBindings).
 */
export function syncPortHint(n: NatObject, o: { hostsKept?: boolean } = {}): number {
  const data = new Uint8Array(64);
  data[0] = o.hostsKept ? 1 : 0; // map_hosts carried over: its counts are not made again
  return bpf.testRun(n.syncHintFd, data).retval;
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
  if (n.closing) return;
  n.closing = true;
  if (!n.sweeps) release(n);
}

/** Ends a sweep of `n` (lib/nat/expire.ts); closes `n` if {@link closeNat} was called meanwhile. */
export function endSweep(n: NatObject): void {
  n.sweeps = Math.max(0, (n.sweeps ?? 1) - 1);
  if (n.sweeps === 0 && n.closing) release(n);
}

function release(n: NatObject): void {
  for (const fd of n.progFds.splice(0)) closeFd(fd);
  bpf.closeObject(n.obj);
  if (n.pins) releasePins(n.pins);
}
