/**
 * Pinned state: the maps that hold bindings, sessions, fragment tracking and
 * counters live in a directory on a bpf filesystem (`<root>/<ifname>/`), so a
 * new einat picks them up where the previous one stopped.
 *
 * The directory carries a version stamp: a one-element array map
 * `einat_meta` holding a JSON document with, per map, a hash of its key and
 * value layout (from the BTF of the embedded object) and a hand-bumped
 * meaning version. The stamp is created and pinned before any state map, so
 * a directory with maps but no stamp was not written by this scheme. On a
 * mismatch:
 * - bindings or sessions (connections depend on them): carried over to this
 *   einat's layout field by field (lib/state/migrate.ts; the old layout from
 *   the BTF the writer left beside the state, `einat_btf`, else from the
 *   kernel's copy of each map's) when their meaning version is the same and
 *   every field can be; otherwise the start is refused with a message naming
 *   `einat --flush`, and nothing is changed. During the copy the old maps are
 *   pinned aside (`<map>_migrating_<pid>`), so a start that fails, or a
 *   process killed meanwhile, leaves them to the next start, which puts them
 *   back (refused while the folder `migrating_<pid>` is locked: the copy is
 *   going on, whatever PID namespace its process is in). The stamp holds two hashes per map: its structs' own members, and
 *   (`deep`) everything down to the numbers, nested structs included;
 * - fragment tracking and counters (transient): the old map is unpinned and a
 *   fresh one created, with a log line.
 * A changed `binding_max_records`/`ct_max_records` keeps the pinned size (a
 * map cannot be resized) and says so; `--flush` applies the new size.
 *
 * The stamp also records the running configuration (timeouts), which
 * `einat show` needs to compute how long a session has left, and the network
 * namespace that wrote it (inode and cookie, lib/state/netns.ts): a folder
 * written by a deleted namespace whose inode this one got is that namespace's
 * stale state, removed (with a log line) and started afresh, never reused.
 *
 * An einat holds a shared `flock` on the folder from before it reads the
 * state until it lets the object go (the kernel drops it when the process
 * ends): `--flush` takes it exclusively, so it never removes state a live
 * einat holds, whatever namespace either runs in and whether the interface
 * exists (a lock by interface index would need both).
 * @module
 */

import denoJson from "../../deno.json" with { type: "json" };
import { type Btf, elfSection, parseBtf, readBtf, type StructInfo, structsOf } from "../btf.ts";
import * as bpf from "../ffi/libbpf.ts";
import {
  closeFd,
  flock,
  ifNameToIndex,
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
  openReadOnly,
} from "../ffi/libc.ts";
import { ensureBpffs, exists, onBpffs } from "./bpffs.ts";
import * as log from "../log.ts";
import { BusyError, ownerOf } from "../nat/attach.ts";
import {
  MAPPING_RECORD_LAYOUT,
  OUTBOUND_LINE_LAYOUT,
  REC,
  type RoConfig,
  STATS,
  TRAFFIC,
} from "../nat/codec.ts";
import { deletedNamespace, netnsFolder, type NetnsIdentity, netnsIdentity } from "./netns.ts";
import { DEFAULT_PIN_ROOT, pinFolderName, pinRootOf, stateOptions } from "./options.ts";
import {
  copyConverted,
  deepLayout,
  type MapConversion,
  MigrationError,
  planMapConversion,
} from "./migrate.ts";

/** The maps kept across restarts, by their name in the object (also the pin name). */
export const STATE_MAPS = [
  "map_records",
  "map_outbound",
  "map_slots",
  "map_binding_count",
  "map_ct",
  "map_frag",
  "map_stats",
  "map_traffic",
  "map_epoch", // shared, so a --replace's two einats see each other's deletions (epoch.h)
  "map_sess_counters",
  "map_addr_nat",
  // The IPv4 ID counters and the IDs given to datagrams whose later fragments are to come
  // (bpf/lib/ipid.h), kept with the key that spreads flows over the counters (the stamp's
  // `ipIdKey`): a restart or a --replace goes on with each flow's sequence.
  "map_ip_id",
  "map_ipid_frag",
  // The counts per internal address (bpf/lib/hosts.h), shared by a --replace's two einats like
  // the binding count, and taken as they are by a start with the same limits on (the stamp's
  // `hostCounts`); counted afresh otherwise.
  "map_hosts",
] as const;
/** Name of one pinned state map. */
export type StateMap = typeof STATE_MAPS[number];

/** Pin name of the version stamp. */
export const META_NAME = "einat_meta";
/** Value size of the stamp map: a NUL-terminated JSON document. */
export const META_VALUE_SIZE = 4096;
/** Identifies the stamp format. */
export const META_FORMAT = "einat-state";
/** Version of the stamp document itself. */
export const META_VERSION = 1;

/**
 * What each map's content means, bumped by hand when the meaning changes
 * without a layout change (e.g. a flag bit reused): state of another meaning
 * version is never carried over.
 */
export const SEMANTICS: Record<StateMap, number> = {
  map_records: 1,
  map_outbound: 1,
  map_slots: 1,
  // 2: kept exact by the programs alone; 1 was stored by a walk at every start, which missed the
  // bindings made during it, so a count of 1 is recounted once.
  map_binding_count: 2,
  map_ct: 1,
  map_frag: 1,
  map_stats: 1,
  map_traffic: 1,
  map_epoch: 1,
  map_sess_counters: 1,
  map_addr_nat: 1,
  map_ip_id: 1,
  map_ipid_frag: 1,
  map_hosts: 1,
};

/** Maps whose loss breaks connections: an incompatible layout refuses to start. */
const PRECIOUS: ReadonlySet<StateMap> = new Set([
  "map_records",
  "map_outbound",
  "map_slots",
  "map_ct",
]);

/** Maps recreated empty, not kept at their pinned size, when the configuration resizes them. */
const RESIZED: Partial<Record<StateMap, string>> = {
  map_frag: "fragment table",
  map_sess_counters: "session counters",
  map_hosts: "per-host counts (binding_max_per_host, session_max_per_host)",
};

/** Bindings of einat builds before the mapping records (two hash entries per binding). */
const LEGACY_BINDING_MAP = "map_binding";

/** Key and value types of each state map (structs looked up in BTF, or fixed text). */
const TYPES: Record<StateMap, [string, string]> = {
  map_records: ["u32", "mapping_record"],
  map_outbound: ["u32", "outbound_line"],
  map_slots: ["u32", "slot_table"],
  map_binding_count: ["u32", "u64 live bindings"],
  map_ct: ["ct_key", "ct_value"],
  map_frag: ["frag_key", "frag_value"],
  map_stats: ["u32", `u64 per cpu: ${STATS.join(",")}`],
  map_traffic: [
    "u32",
    `traffic_counter per cpu: ${TRAFFIC.map((t) => `${t.direction}${t.family}`).join(",")}`,
  ],
  map_epoch: ["u32", "u64 mapping epoch"],
  map_sess_counters: ["ct_key", "sess_counter"],
  map_addr_nat: ["addr_key", "addr_value"],
  map_ip_id: ["u32", "ipid_counter"],
  map_ipid_frag: ["ipid_frag_key", "ipid_frag"],
  map_hosts: ["host_key", "host_counts"],
};

/** A pinned state that cannot be used, with what to do about it. */
export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateError";
  }
}

/** The stamp document. */
export interface MetaDoc {
  format: string;
  version: number;
  /** einat version that wrote it last. */
  einat: string;
  ifname: string;
  /**
   * Per map: layout hash, deep layout hash (absent before stop 31: not compared), capacity and
   * meaning version ({@link SEMANTICS}; absent: 1).
   */
  maps: Record<
    string,
    { layout: string; deep?: string; maxEntries?: number; semantics?: number }
  >;
  /** Timeouts of the writer's configuration, in nanoseconds (decimal strings). */
  timeoutsNs?: Record<string, string>;
  /** Process that wrote it last. */
  pid?: number;
  /** Network namespace of that process (absent before einat kept it). */
  netns?: NetnsIdentity;
  /**
   * The key of its IPv4 ID counters (`ip_id_key`): taken again with `map_ip_id`, so each
   * flow's counter and offset stay what they were (absent before stop 38).
   */
  ipIdKey?: number;
  /** Which counts per internal address its programs kept ({@link hostCountsOf}; absent before stop 38). */
  hostCounts?: string;
  updated?: string;
}

/**
 * The counts per internal address that programs of configuration `ro` keep in `map_hosts`
 * (bpf/lib/hosts.h): "bindings", "sessions", both ("bindings,sessions") or none (""). A pinned
 * map_hosts is taken as it is only by an einat that keeps the same ones.
 */
export function hostCountsOf(ro: Pick<RoConfig, "hostMax" | "hostSessMax">): string {
  return [ro.hostMax ? "bindings" : "", ro.hostSessMax ? "sessions" : ""].filter(Boolean).join(",");
}

function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

function describeStruct(name: string, s: StructInfo | undefined): string {
  if (!s) return name;
  const members = s.members.map((m) =>
    `${m.name}@${m.offsetBits / 8}:${m.sizeBytes ?? "?"}:${m.typeName}`
  );
  return `${name}{${s.size};${members.join(",")}}`;
}

/** Layout hash of every state map, from the BTF of the object `bytes`. */
export function layoutStamps(bytes: Uint8Array): Record<StateMap, string> {
  return stampsOf(readBtf(bytes)).layout;
}

/** Deep layout hash of every state map (nested structs included), from the object `bytes`. */
export function deepStamps(bytes: Uint8Array): Record<StateMap, string> {
  return stampsOf(readBtf(bytes)).deep;
}

/** Each state map's stamps: what `layout` and `deep` say in the stamp document. */
interface Stamps {
  /** Its structs' own members, and its meaning version ({@link layoutStamp}). */
  layout: Record<StateMap, string>;
  /** Its structs down to the numbers, nested structs included ({@link deepStamp}). */
  deep: Record<StateMap, string>;
}

/**
 * Whether the stamp document `meta` says map `m` is of the layout `stamps` give: its structs' own
 * members and meaning version, and (where the document has it, from stop 31 on) all the way down.
 */
function stamped(meta: MetaDoc | null, m: StateMap, stamps: Stamps): boolean {
  const was = meta?.maps[m];
  return was?.layout === stamps.layout[m] && (was.deep ?? stamps.deep[m]) === stamps.deep[m];
}

function stampsOf(btf: Btf): Stamps {
  const structs = structsOf(btf);
  const out: Stamps = {
    layout: {} as Record<StateMap, string>,
    deep: {} as Record<StateMap, string>,
  };
  for (const m of STATE_MAPS) {
    out.layout[m] = layoutStamp(m, structs);
    out.deep[m] = deepStamp(btf, m);
  }
  return out;
}

/**
 * The hash of map `m`'s structs in `btf` down to the numbers: a change inside a nested struct
 * (the ct_value of a mapping_record), which {@link layoutStamp} does not see, changes it.
 */
function deepStamp(btf: Btf, m: StateMap): string {
  return fnv1a64(TYPES[m].map((name) => deepLayout(btf, name) ?? name).join("/"));
}

/** The layout hash of map `m` whose structs are `structs`, with its meaning version ({@link SEMANTICS}). */
function layoutStamp(m: StateMap, structs: Map<string, StructInfo>): string {
  const [k, v] = TYPES[m];
  return fnv1a64(
    `${m}/${SEMANTICS[m]}/${describeStruct(k, structs.get(k))}/${
      describeStruct(v, structs.get(v))
    }`,
  );
}

/** Key and value sizes of a map, in bytes (per-CPU maps: of one CPU's value). */
export interface MapSizes {
  key: number;
  value: number;
}

/** This einat's state maps: their layout stamps and their key and value sizes. */
export interface StateLayout {
  stamps: Record<StateMap, string>;
  sizes: Record<StateMap, MapSizes>;
}

/**
 * The layout of every state map in the object `bytes`: its stamp ({@link layoutStamps}) and its
 * key and value sizes (the object is opened, not loaded).
 */
export function stateLayout(bytes: Uint8Array): StateLayout {
  const sizes = {} as Record<StateMap, MapSizes>;
  const obj = bpf.openObjectMem(bytes, "einat", { logSize: 64 }); // never loaded: no log
  try {
    for (const m of STATE_MAPS) {
      const map = bpf.findMap(obj, m);
      sizes[m] = { key: bpf.mapKeySize(map), value: bpf.mapValueSize(map) };
    }
  } finally {
    bpf.closeObject(obj);
  }
  return { stamps: layoutStamps(bytes), sizes };
}

/**
 * Why the pinned maps `fds` (of a folder whose stamp is `meta`) cannot be read as `layout`
 * says: a missing or unknown stamp, a map of another layout by the stamp, or a map whose key or
 * value size is not the one of `layout` (whatever the stamp says). Empty when they can.
 */
export function layoutProblems(
  meta: MetaDoc | null,
  fds: Partial<Record<StateMap, number>>,
  layout: StateLayout,
): string[] {
  if (!meta) return ["its maps have no readable einat version stamp"];
  if (meta.version !== META_VERSION) {
    return [`state stamp version ${meta.version} (this einat: ${META_VERSION})`];
  }
  const out: string[] = [];
  const other: string[] = [];
  for (const m of STATE_MAPS) {
    const fd = fds[m];
    if (fd === undefined) continue;
    if (meta.maps?.[m]?.layout !== layout.stamps[m]) other.push(m);
    const info = bpf.mapInfo(fd), want = layout.sizes[m];
    if (info.keySize !== want.key) {
      out.push(`${m} has key size ${info.keySize} (this einat: ${want.key})`);
    }
    if (info.valueSize !== want.value) {
      out.push(`${m} has value size ${info.valueSize} (this einat: ${want.value})`);
    }
  }
  if (other.length > 0) {
    out.unshift(`${other.join(", ")} ${other.length > 1 ? "have" : "has"} another layout`);
  }
  return out;
}

/** Encodes the stamp document as the map value. */
export function encodeMeta(doc: MetaDoc): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(doc));
  if (text.length >= META_VALUE_SIZE) throw new Error("state stamp too large");
  const b = new Uint8Array(META_VALUE_SIZE);
  b.set(text);
  return b;
}

/** Decodes the stamp map value; null when it is not a stamp. */
export function decodeMeta(b: Uint8Array): MetaDoc | null {
  const end = b.indexOf(0);
  try {
    const doc = JSON.parse(new TextDecoder().decode(end < 0 ? b : b.subarray(0, end)));
    return doc && doc.format === META_FORMAT ? doc as MetaDoc : null;
  } catch {
    return null;
  }
}

const ZERO_KEY = new Uint8Array(4);

/** Reads the stamp pinned in `dir`; null when absent or unreadable. */
export function readMeta(dir: string): MetaDoc | null {
  const v = readPinnedValue(`${dir}/${META_NAME}`);
  return v ? decodeMeta(v) : null;
}

/**
 * The one value of the one-element array map pinned at `path`, sized as pinned (the kernel
 * writes the map's value size: another einat's may be longer); null when absent or unreadable.
 */
function readPinnedValue(path: string): Uint8Array | null {
  let fd: number;
  try {
    fd = bpf.objGetPinnedOpts(path, { readOnly: true });
  } catch {
    return null;
  }
  try {
    const info = bpf.mapInfo(fd);
    if (info.type !== bpf.MapType.ARRAY || info.keySize !== ZERO_KEY.length) return null;
    return bpf.mapLookup(fd, ZERO_KEY, info.valueSize);
  } catch {
    return null;
  } finally {
    closeFd(fd);
  }
}

/** Timeouts of a configuration as stored in the stamp. */
export function timeoutsOf(ro: RoConfig): Record<string, string> {
  return {
    fragment: String(ro.timeoutFragment),
    icmp: String(ro.timeoutIcmp),
    udpMin: String(ro.timeoutUdpMin),
    udp: String(ro.timeoutUdp),
    tcpTrans: String(ro.timeoutTcpTrans),
    tcpEst: String(ro.timeoutTcpEst),
    tcpClosing: String(ro.timeoutTcpClosing ?? ro.timeoutTcpTrans),
    other: String(ro.timeoutOther ?? 0n),
  };
}

// ---------------------------------------------------------------------------------------------
// Preparing a load

/** What {@link preparePins} found and did; finish with {@link finishPins}. */
export interface PinSession {
  dir: string;
  ifname: string;
  /** State maps that were already pinned and are reused. */
  reused: StateMap[];
  /** Maps recreated because their layout changed. */
  reset: StateMap[];
  /** Maps of another layout carried over: copied into the new maps by {@link finishPins}. */
  migrating: Migrating[];
  /** Maps carried over from another layout, once copied. */
  migrated: StateMap[];
  stamps: Stamps;
  metaFd: number;
  /** The folder, held with a shared `flock` while the state is in use ({@link releasePins}). */
  lockFd: number;
  /** The object's BTF (its `.BTF` section), left beside the state by {@link finishPins}. */
  btf: Uint8Array;
  /** Whether the BTF pinned beside the state is that one already (then not written again). */
  btfPinned: boolean;
  /** The stamp's IPv4 ID key when `map_ip_id` is reused (the counters it goes with). */
  ipIdKey?: number;
}

/** A pinned map of another layout on its way into this einat's. */
export interface Migrating {
  map: StateMap;
  /** The old map, pinned aside ({@link asidePin}) until the copy is done. */
  fd: number;
  conversion: MapConversion;
}

/** Where an old map is pinned while process `pid` copies its entries into the new one. */
export function asidePin(dir: string, map: StateMap, pid = Deno.pid): string {
  return `${dir}/${map}_migrating_${pid}`;
}

const ASIDE = /^(map_[a-z_]+)_migrating_(\d+)$/;

/**
 * The folder a process holds locked while old maps are pinned aside for it: their copy is going
 * on. A lock, not the pid in the names, tells another einat so, since it may run in another PID
 * namespace, where that pid is another process's or none.
 */
export function migratingMark(dir: string, pid = Deno.pid): string {
  return `${dir}/migrating_${pid}`;
}

const MARK = /^migrating_(\d+)$/;

/** The lock on {@link migratingMark} each folder's pinned-aside maps are held by, by folder. */
const marks = new Map<string, number>();

/** Makes and locks this process's {@link migratingMark} in `dir`. */
function markMigrating(dir: string): void {
  if (marks.has(dir)) return;
  const path = migratingMark(dir);
  Deno.mkdirSync(path, { recursive: true });
  const fd = lockFolder(path, LOCK_EX);
  if (fd === null) throw new StateError(`${path}: held by another process`);
  marks.set(dir, fd);
}

/** Removes this process's {@link migratingMark} in `dir` (its old maps are no longer aside). */
function unmarkMigrating(dir: string): void {
  const fd = marks.get(dir);
  if (fd === undefined) return;
  marks.delete(dir);
  try {
    Deno.removeSync(migratingMark(dir));
  } catch { /* gone */ }
  closeFd(fd);
}

function pinnedNames(dir: string): Set<string> {
  const out = new Set<string>();
  try {
    for (const e of Deno.readDirSync(dir)) out.add(e.name);
  } catch { /* no folder yet */ }
  return out;
}

/** The `einat --flush` command line that removes the pinned state of `ifname` under `root`. */
export function flushHint(ifname: string, root = stateOptions.pinRoot): string {
  return `einat --flush -i ${ifname}${root === DEFAULT_PIN_ROOT ? "" : ` --pin-dir ${root}`}`;
}

/**
 * Before `bpf_object__load`: checks the stamp in `dir`, sets every state
 * map's pin path (libbpf then reuses a pinned map or creates and pins a new
 * one) and sizes reused maps as pinned. Creates the stamp first in a fresh
 * folder. Throws {@link StateError} or {@link BusyError} without changing
 * anything when the state cannot be used.
 */
export function preparePins(
  obj: bpf.BpfObject,
  bytes: Uint8Array,
  dir: string,
  ifname: string,
  hostCounts = "",
): PinSession {
  const ifindex = ifNameToIndex(ifname);
  const owner = ifindex ? ownerOf(ifindex) : null;
  if (owner !== null && !stateOptions.replace) throw new BusyError(ifname, owner);

  try {
    ensureBpffs(pinRootOf(dir));
  } catch (e) {
    throw new StateError((e as Error).message);
  }
  Deno.mkdirSync(dir, { recursive: true });
  const lockFd = holdState(dir);
  try {
    return checkPins(obj, bytes, dir, ifname, owner, lockFd, hostCounts);
  } catch (e) {
    closeFd(lockFd);
    throw e;
  }
}

/** The folder `dir` opened and locked (`flock` op, non-blocking); null while another holds it. */
function lockFolder(dir: string, op: number): number | null {
  const fd = openReadOnly(dir);
  if (fd < 0) throw new StateError(`${dir}: cannot open (errno ${-fd})`);
  if (flock(fd, op | LOCK_NB) !== 0) {
    closeFd(fd);
    return null;
  }
  return fd;
}

/** Removes everything in `dir` (held exclusively by the caller). */
function emptyFolder(dir: string): void {
  for (const e of Deno.readDirSync(dir)) Deno.removeSync(`${dir}/${e.name}`, { recursive: true });
}

/** The folder `dir` opened and held with a shared `flock` (refused while a flush holds it). */
function holdState(dir: string): number {
  const fd = lockFolder(dir, LOCK_SH);
  if (fd === null) throw new StateError(`${dir} is being removed (einat --flush); try again`);
  return fd;
}

function checkPins(
  obj: bpf.BpfObject,
  bytes: Uint8Array,
  dir: string,
  ifname: string,
  owner: number | null,
  lockFd: number,
  hostCounts: string,
): PinSession {
  const own = readBtf(bytes), stamps = stampsOf(own);
  let names = pinnedNames(dir);
  if (restoreInterrupted(dir, ifname, names)) names = pinnedNames(dir);
  let meta = names.has(META_NAME) ? readMeta(dir) : null;
  if (meta && deletedNamespace(meta.netns)) {
    // No einat of that namespace runs (it would keep it alive); no other may hold it either.
    if (flock(lockFd, LOCK_EX | LOCK_NB) !== 0) throw heldError(dir, ifname, meta);
    // Whatever it holds (bindings, sessions, links of its interface) was that namespace's.
    emptyFolder(dir);
    flock(lockFd, LOCK_SH | LOCK_NB); // from exclusive: nobody else holds it
    log.warn(
      "pinned state of a deleted network namespace that had this one's inode; removed, " +
        "starting afresh",
      { ifname, dir, stale_cookie: meta.netns?.cookie, cookie: netnsIdentity().cookie },
    );
    names = new Set();
    meta = null;
  }
  const pinned = STATE_MAPS.filter((m) => names.has(m));

  if (pinned.length > 0 && !meta) {
    throw new StateError(
      `${dir} holds pinned maps without a readable einat version stamp; ` +
        `remove them with \`${
          flushHint(ifname)
        }\` (drops every mapping) or choose another --pin-dir`,
    );
  }
  if (names.has(LEGACY_BINDING_MAP)) {
    throw new StateError(
      `${dir}: pinned bindings of an einat before mapping records (${LEGACY_BINDING_MAP}); ` +
        `keeping them untouched. \`${
          flushHint(ifname)
        }\` discards them (drops every mapping), or run the einat that wrote them`,
    );
  }
  if (meta && meta.version !== META_VERSION) {
    throw new StateError(
      `${dir}: state stamp version ${meta.version} (written by einat ${meta.einat}) is not ` +
        `understood by this einat (version ${META_VERSION}); \`${flushHint(ifname)}\` discards it`,
    );
  }

  const initialDir = `${pinRootOf(dir)}/${pinFolderName(ifname)}`;
  if (pinned.length === 0 && dir !== initialDir && exists(`${initialDir}/${META_NAME}`)) {
    log.warn(
      "pinned state of this interface name in the initial network namespace (or of an einat " +
        "before state was kept per namespace) is not used here: this namespace's is kept apart",
      { ifname, dir, not_used: initialDir },
    );
  }
  if (owner !== null && pinned.length === 0) {
    log.warn(
      "--replace: no pinned state here, so the running einat's mappings are not carried over " +
        "(was it started with another --pin-dir?)",
      { ifname, dir, pid: owner },
    );
  }
  const reused: StateMap[] = [];
  const reset: StateMap[] = [];
  const incompatible: StateMap[] = [];
  const writtenRaw = pinned.length ? readPinnedValue(`${dir}/${BTF_NAME}`) : null;
  const written = parsedBtf(writtenRaw), ownRaw = elfSection(bytes, ".BTF") ?? new Uint8Array();
  for (const m of pinned) {
    if (stamped(meta, m, stamps)) {
      reused.push(m);
      continue;
    }
    if (PRECIOUS.has(m)) incompatible.push(m);
    else reset.push(m);
  }
  const migrating = planMigrations(obj, own, written, dir, ifname, meta, incompatible);
  // The binding count is shared with programs that may still run (--replace) on the old
  // records: recreated, and counted afresh from the new ones (lib/state/serve.ts, syncBindings).
  const recordsMigrate = migrating.some((x) => x.map === "map_records");
  const recount = recordsMigrate && reused.includes("map_binding_count");
  if (recount) reset.push(...reused.splice(reused.indexOf("map_binding_count"), 1));
  // The counts per internal address likewise, and when the other einat kept other counts
  // (other limits on): both made anew by this start's walk of the records.
  const hostsRecount = reused.includes("map_hosts") &&
    (recordsMigrate || (meta?.hostCounts ?? null) !== hostCounts);
  if (hostsRecount) reset.push(...reused.splice(reused.indexOf("map_hosts"), 1));

  try {
    for (const m of reset) {
      Deno.removeSync(`${dir}/${m}`);
      if (recount && m === "map_binding_count") {
        log.info("binding count recounted: the bindings are carried over", { ifname });
      } else if (hostsRecount && m === "map_hosts") {
        log.info("per-host counts recounted from the bindings", {
          ifname,
          counts: hostCounts || "none",
          pinned: meta?.hostCounts ?? "unknown",
        });
      } else log.warn("pinned map has another layout; recreated empty", { ifname, map: m });
    }
    pinAside(obj, dir, migrating);
    setPinPaths(obj, dir, ifname, reused, reset);
    const metaFd = stampFd(dir, ifname, meta, names.has(META_NAME), stamps);
    const btfPinned = writtenRaw !== null && sameBytes(writtenRaw, ownRaw);
    return {
      dir,
      ifname,
      reused,
      reset,
      migrating,
      migrated: [],
      stamps,
      metaFd,
      lockFd,
      btf: ownRaw,
      btfPinned,
      ipIdKey: reused.includes("map_ip_id") ? meta?.ipIdKey : undefined,
    };
  } catch (e) {
    putBack(dir, migrating); // the old maps back in place, as found
    throw e;
  }
}

/**
 * Pins the old maps of `migrating` aside (`<map>_migrating`) for libbpf to create this einat's
 * in their place, each the old one's size, as a reused map keeps its size: record and index
 * positions depend on it.
 */
function pinAside(obj: bpf.BpfObject, dir: string, migrating: Migrating[]): void {
  if (migrating.length > 0) markMigrating(dir);
  for (const { map: m, fd } of migrating) {
    const info = bpf.mapInfo(fd), map = bpf.findMap(obj, m);
    if (info.maxEntries !== bpf.mapMaxEntries(map)) bpf.mapSetMaxEntries(map, info.maxEntries);
    Deno.renameSync(`${dir}/${m}`, asidePin(dir, m));
  }
}

/**
 * Sets every state map's pin path (libbpf reuses a pinned map or creates and pins a new one),
 * reused ones with their pinned flags and size (a resized fragment table is recreated instead:
 * moved from `reused` to `reset`).
 */
function setPinPaths(
  obj: bpf.BpfObject,
  dir: string,
  ifname: string,
  reused: StateMap[],
  reset: StateMap[],
): void {
  for (const m of STATE_MAPS) {
    const map = bpf.findMap(obj, m);
    if (reused.includes(m)) {
      const fd = bpf.objGetPinnedOpts(`${dir}/${m}`, { readOnly: true });
      try {
        const info = bpf.mapInfo(fd);
        const flags = bpf.mapFlags(map);
        if (info.flags !== flags) {
          // e.g. preallocated by an older einat: same entries, other allocation mode
          log.info("pinned map keeps its creation flags", {
            ifname,
            map: m,
            pinned: `0x${info.flags.toString(16)}`,
            object: `0x${flags.toString(16)}`,
          });
          bpf.mapSetFlags(map, info.flags);
        }
        const want = bpf.mapMaxEntries(map);
        if (info.maxEntries !== want) {
          if (RESIZED[m]) {
            Deno.removeSync(`${dir}/${m}`);
            reused.splice(reused.indexOf(m), 1);
            reset.push(m);
            log.info(`${RESIZED[m]} resized; recreated empty`, {
              ifname,
              from: info.maxEntries,
              to: want,
            });
          } else {
            bpf.mapSetMaxEntries(map, info.maxEntries);
            log.warn("pinned map keeps its size; --flush applies the configured one", {
              ifname,
              map: m,
              pinned: info.maxEntries,
              configured: want,
            });
          }
        }
      } finally {
        closeFd(fd);
      }
    }
    bpf.mapSetPinPath(map, `${dir}/${m}`);
  }
}

/** The stamp map of `dir`: the pinned one (`meta` read from it), or a new one pinned. */
function stampFd(
  dir: string,
  ifname: string,
  meta: MetaDoc | null,
  pinned: boolean,
  stamps: Stamps,
): number {
  let metaFd: number;
  if (meta) {
    metaFd = bpf.objGetPinned(`${dir}/${META_NAME}`);
  } else {
    if (pinned) Deno.removeSync(`${dir}/${META_NAME}`);
    metaFd = bpf.mapCreate(bpf.MapType.ARRAY, META_NAME, 4, META_VALUE_SIZE, 1);
    try {
      bpf.mapUpdate(metaFd, ZERO_KEY, encodeMeta(stampDoc(ifname, stamps, {})));
      bpf.objPin(metaFd, `${dir}/${META_NAME}`);
    } catch (e) {
      closeFd(metaFd);
      throw e;
    }
  }
  return metaFd;
}

/**
 * Puts back the maps a start stopped in the middle of carrying over (pinned aside by
 * {@link asidePin}): the stamp still describes them, not the half-filled new ones. Refused while
 * the process that pinned them aside still holds its {@link migratingMark} (it is copying them
 * now); for aside pins without one (an einat before the mark), while it holds the folder. True
 * when there were any.
 */
function restoreInterrupted(dir: string, ifname: string, names: Set<string>): boolean {
  const found: { map: StateMap; pid: number; name: string }[] = [];
  const held: number[] = []; // locks on the marks of the processes that are gone
  for (const name of names) {
    const m = ASIDE.exec(name);
    if (m && (STATE_MAPS as readonly string[]).includes(m[1])) {
      found.push({ map: m[1] as StateMap, pid: Number(m[2]), name });
    }
  }
  try {
    // Every mark is another process's (this one's exists only from pinAside on), even one of
    // this pid: a process of another PID namespace can have it.
    for (const name of names) {
      const pid = Number(MARK.exec(name)?.[1] ?? -1);
      if (pid < 0) continue;
      const fd = lockFolder(`${dir}/${name}`, LOCK_EX);
      if (fd === null) throw new BusyError(ifname, pid); // carrying this state over now
      held.push(fd);
    }
    const holders = found.length ? lockHolders(dir) : [];
    for (const { pid } of found) {
      if (pid !== Deno.pid && !names.has(`migrating_${pid}`) && holders.includes(pid)) {
        throw new BusyError(ifname, pid); // an einat before the mark, carrying it over now
      }
    }
    for (const { map, name } of found) {
      if (names.has(map)) Deno.removeSync(`${dir}/${map}`);
      Deno.renameSync(`${dir}/${name}`, `${dir}/${map}`);
    }
    for (const name of names) if (MARK.test(name)) Deno.removeSync(`${dir}/${name}`);
  } finally {
    held.forEach(closeFd);
  }
  if (found.length > 0) {
    log.warn("pinned state of a start interrupted while carrying it over; put back", {
      ifname,
      maps: found.map((f) => f.map).join(","),
    });
  }
  return found.length > 0;
}

/**
 * How the pinned maps `incompatible` (of another layout) become this einat's: each of the same
 * meaning version and convertible field by field (lib/state/migrate.ts), or the start is refused
 * ({@link StateError}) with every reason, nothing changed.
 */
function planMigrations(
  obj: bpf.BpfObject,
  btf: Btf,
  written: Btf | null,
  dir: string,
  ifname: string,
  meta: MetaDoc | null,
  incompatible: StateMap[],
): Migrating[] {
  if (incompatible.length === 0) return [];
  const writtenStamps = written ? stampsOf(written) : null;
  const out: Migrating[] = [];
  const why: string[] = [];
  for (const m of incompatible) {
    const semantics = meta?.maps[m]?.semantics ?? 1;
    if (semantics !== SEMANTICS[m]) {
      why.push(`${m}: what its entries mean changed (version ${semantics}, now ${SEMANTICS[m]})`);
      continue;
    }
    const fd = bpf.objGetPinnedOpts(`${dir}/${m}`, { readOnly: true });
    try {
      const map = bpf.findMap(obj, m), [key, value] = TYPES[m];
      // The BTF left beside the state describes this map when it gives the map's stamp (an
      // einat that reused the map wrote its own, of the same layout); else the kernel's copy.
      const describes = writtenStamps !== null && stamped(meta, m, writtenStamps);
      const conversion = planMapConversion(fd, describes ? written : null, {
        key: key === "u32" ? null : key,
        value,
        mapType: bpf.mapType(map),
        ids: bpf.mapBtfTypeIds(map),
        btf,
      });
      out.push({ map: m, fd, conversion });
    } catch (e) {
      closeFd(fd);
      if (!(e instanceof MigrationError)) {
        for (const x of out) closeFd(x.fd);
        throw e;
      }
      why.push(`${m}: ${e.message}`);
    }
  }
  if (why.length > 0) {
    for (const x of out) closeFd(x.fd);
    throw new StateError(
      `${dir}: pinned ${incompatible.join(", ")} written by einat ${meta?.einat} ` +
        `have another layout than this einat uses, which cannot be carried over ` +
        `(${why.join("; ")}); keeping them untouched. \`${
          flushHint(ifname)
        }\` discards them (drops every mapping), or run the einat that wrote them`,
    );
  }
  for (const x of out) {
    const added = [...x.conversion.key.added, ...x.conversion.value.added];
    const dropped = [...x.conversion.key.dropped, ...x.conversion.value.dropped];
    log.info("pinned map of another layout: carrying it over", {
      ifname,
      map: x.map,
      written_by: meta?.einat,
      ...(added.length ? { added: added.join(",") } : {}),
      ...(dropped.length ? { dropped: dropped.join(",") } : {}),
    });
  }
  return out;
}

/** Undoes the pinning aside of `migrating` (a start that fails): the old maps back in place. */
function putBack(dir: string, migrating: Migrating[]): void {
  for (const x of migrating.splice(0)) {
    const aside = asidePin(dir, x.map);
    try {
      if (exists(aside)) {
        try {
          Deno.removeSync(`${dir}/${x.map}`); // the new one, when libbpf had pinned it
        } catch { /* not pinned */ }
        Deno.renameSync(aside, `${dir}/${x.map}`);
      }
    } catch (e) {
      log.warn("could not put a pinned map back", { map: x.map, error: (e as Error).message });
    }
    closeFd(x.fd);
  }
  unmarkMigrating(dir);
}

function stampDoc(
  ifname: string,
  stamps: Stamps,
  sizes: Partial<Record<StateMap, number>>,
  ro?: RoConfig,
): MetaDoc {
  return {
    format: META_FORMAT,
    version: META_VERSION,
    einat: denoJson.version,
    ifname,
    maps: Object.fromEntries(
      STATE_MAPS.map((m) => [
        m,
        {
          layout: stamps.layout[m],
          deep: stamps.deep[m],
          maxEntries: sizes[m],
          semantics: SEMANTICS[m],
        },
      ]),
    ),
    timeoutsNs: ro ? timeoutsOf(ro) : undefined,
    pid: Deno.pid,
    netns: netnsIdentity(),
    ipIdKey: ro?.ipIdKey,
    hostCounts: ro ? hostCountsOf(ro) : undefined,
    updated: new Date().toISOString(),
  };
}

/**
 * After a successful load: records layouts, sizes and timeouts in the stamp. The folder stays
 * held until {@link releasePins}.
 */
export function finishPins(p: PinSession, obj: bpf.BpfObject, ro: RoConfig): void {
  const sizes: Partial<Record<StateMap, number>> = {};
  for (const m of STATE_MAPS) sizes[m] = bpf.mapMaxEntries(bpf.findMap(obj, m));
  for (const x of p.migrating) {
    const t0 = performance.now();
    const entries = copyConverted(
      x.fd,
      bpf.mapFd(bpf.findMap(obj, x.map)),
      x.conversion,
      KEEP[x.map],
    );
    log.info("pinned map carried over to this einat's layout", {
      ifname: p.ifname,
      map: x.map,
      entries,
      ms: Number((performance.now() - t0).toFixed(1)),
    });
  }
  // The old maps go before the stamp is rewritten: a process killed in between leaves new maps
  // under the old stamp, which the next start carries over as they are (from the kernel's copy
  // of their BTF). The BTF left beside the old ones goes first: with the old stamp it would
  // still seem to describe them.
  if (p.migrating.length > 0) {
    try {
      Deno.removeSync(`${p.dir}/${BTF_NAME}`);
    } catch { /* none */ }
  }
  for (const x of p.migrating.splice(0)) {
    p.migrated.push(x.map);
    closeFd(x.fd);
    Deno.removeSync(asidePin(p.dir, x.map));
  }
  unmarkMigrating(p.dir);
  try {
    bpf.mapUpdate(p.metaFd, ZERO_KEY, encodeMeta(stampDoc(p.ifname, p.stamps, sizes, ro)));
  } finally {
    closeFd(p.metaFd);
    p.metaFd = -1;
  }
  if (p.migrated.length > 0 || !p.btfPinned) writeBtf(p.dir, p.ifname, p.btf);
}

/** Pin name of the BTF of the object that wrote the state last (for a later carry-over). */
export const BTF_NAME = "einat_btf";

/**
 * Leaves `raw` (an object's BTF) beside the state: a later einat of another layout finds the
 * structs this one wrote there by name, where reading each map's BTF from the kernel needs
 * CAP_SYS_ADMIN. Written by a start whose object's BTF is not the one pinned; a failure is
 * logged (that later einat then needs the kernel's copy).
 */
export function writeBtf(dir: string, ifname: string, raw: Uint8Array): void {
  if (raw.length === 0) return;
  let fd = -1;
  try {
    fd = bpf.mapCreate(bpf.MapType.ARRAY, BTF_NAME, 4, raw.length, 1);
    bpf.mapUpdate(fd, ZERO_KEY, raw);
    try {
      Deno.removeSync(`${dir}/${BTF_NAME}`);
    } catch { /* none yet */ }
    bpf.objPin(fd, `${dir}/${BTF_NAME}`);
  } catch (e) {
    log.warn("could not leave the object's BTF beside the state", {
      ifname,
      error: (e as Error).message,
    });
  } finally {
    if (fd >= 0) closeFd(fd);
  }
}

/** `raw` parsed as BTF (as {@link writeBtf} leaves it beside the state); null when it is not. */
function parsedBtf(raw: Uint8Array | null): Btf | null {
  try {
    return raw ? parseBtf(raw) : null;
  } catch {
    return null;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * What of a carried-over entry is kept, given its new value (amended in place): what the old
 * programs left in the middle of an operation (under `--replace` they may still run while the
 * entries are copied) is not carried as it stands.
 */
export const KEEP: Partial<Record<StateMap, (value: Uint8Array) => boolean>> = {
  // A line's insert lock: never held by the new programs, which have not run yet.
  map_outbound: (v) => {
    v.fill(0, OUTBOUND_LINE_LAYOUT.fields.lock.offset, OUTBOUND_LINE_LAYOUT.fields.lock.offset + 4);
    return true;
  },
  // A record being claimed: its port is free again (the claim was not published).
  map_records: (v) => (v[MAPPING_RECORD_LAYOUT.fields.state.offset] & REC.STATE_MASK) !== REC.BUSY,
};

/** Releases a {@link PinSession} after a failed load. */
export function abortPins(p: PinSession): void {
  putBack(p.dir, p.migrating);
  if (p.metaFd >= 0) closeFd(p.metaFd);
  p.metaFd = -1;
  releasePins(p);
}

/** Lets go of the folder (once the object that uses the state is closed): a flush may take it. */
export function releasePins(p: { lockFd: number }): void {
  if (p.lockFd >= 0) closeFd(p.lockFd);
  p.lockFd = -1;
}

// ---------------------------------------------------------------------------------------------
// Flushing

/**
 * Removes the pinned state of an interface (`--flush`): every pin and the
 * folder. Refused while a live einat holds the folder (its `flock`), or, for
 * this namespace's folder, serves the interface (the lock by interface index,
 * which einats before the folder's lock held alone). Returns false when there
 * was nothing to remove.
 */
export function flushPins(dir: string, ifname: string): boolean {
  const ifindex = ownFolder(dir) ? ifNameToIndex(ifname) : 0;
  const owner = ifindex ? ownerOf(ifindex) : null;
  if (owner !== null) throw new BusyError(ifname, owner);
  if (!exists(dir)) return false;
  if (!onBpffs(dir)) throw new StateError(`${dir} is not on a bpf filesystem; not touching it`);
  const fd = lockFolder(dir, LOCK_EX);
  if (fd === null) throw heldError(dir, ifname, readMeta(dir));
  try {
    emptyFolder(dir);
    Deno.removeSync(dir);
  } finally {
    closeFd(fd);
  }
  return true;
}

/** True for a pin folder of this namespace's (`<root>/<ifname>` here, `netns:<inode>` else). */
function ownFolder(dir: string): boolean {
  return (/\/(netns:\d+)\/[^/]+\/*$/.exec(dir)?.[1] ?? "") === netnsFolder();
}

/** The refusal for a folder a live einat holds, naming it by /proc/locks (or the stamp). */
function heldError(dir: string, ifname: string, meta: MetaDoc | null): Error {
  const pid = lockHolder(dir) ?? meta?.pid;
  return pid
    ? new BusyError(ifname, pid)
    : new StateError(`${dir} is held by a running einat; stop it first`);
}

/** A process holding a `flock` on `path` (from /proc/locks), other than this one. */
function lockHolder(path: string): number | null {
  return lockHolders(path).find((pid) => pid !== Deno.pid) ?? null;
}

/** The processes holding a `flock` on `path`, by /proc/locks. */
function lockHolders(path: string): number[] {
  let dev: number, ino: number;
  let text: string;
  try {
    const st = Deno.statSync(path);
    dev = st.dev;
    ino = st.ino ?? -1;
    text = Deno.readTextFileSync("/proc/locks");
  } catch {
    return [];
  }
  // st_dev as glibc encodes it; /proc/locks prints major:minor in hex.
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  const out: number[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    const at = f.findIndex((x) => /^[0-9a-f]+:[0-9a-f]+:\d+$/i.test(x));
    if (at < 1 || !f.includes("FLOCK")) continue;
    const [ma, mi, i] = f[at].split(":");
    const pid = Number(f[at - 1]);
    if (parseInt(ma, 16) === major && parseInt(mi, 16) === minor && Number(i) === ino) {
      if (pid > 0) out.push(pid);
    }
  }
  return out;
}
