/**
 * Parses and validates an einat-ebpf compatible TOML configuration file into a
 * normalised {@link Config}.
 *
 * Every key of einat-ebpf's `config.sample.toml` (v0.1.10) is understood with
 * the same default and meaning; see `config.sample.toml` in this repository
 * for the documented list. Differences, all on the strict side except the
 * extensions:
 *
 * - Unknown keys are errors everywhere (einat-ebpf only rejects them at the top
 *   level), with a "did you mean" hint. `hairpin_dests`, a key from old einat
 *   samples that einat-ebpf ignores, is accepted and ignored with a notice.
 * - `bpf_loader` only selects one of einat-ebpf's Rust BPF loaders; it is
 *   validated, then ignored with a notice.
 * - einat-ebpf's `timeout_pkt_min` / `timeout_pkt_default` set UDP's minimum and default, and
 *   the default ICMP's too (einat-ebpf times ICMP queries as UDP); our own `timeout_udp_*` /
 *   `timeout_icmp_default` win where both are given, with a notice. A minimum longer than the
 *   default is taken, as einat-ebpf does, with a warning.
 * - Overlapping port ranges are merged as in einat-ebpf, with a warning naming them. More than
 *   one of `address`/`network`/`match_address`, duplicate interfaces (einat-ebpf lets the last
 *   block win), zero or huge record limits and zero or huge timeouts are errors.
 * - Extensions: `if_index` (einat-ebpf ignores it since 0.1.2) may name an
 *   interface instead of `if_name`; timeouts may be TOML numbers (seconds) and
 *   compound (`"1h30m"`); range elements may be single ports (`"53"`, `53`).
 *
 * Errors are {@link ConfigError}s naming the file and the key path, such as
 * `interfaces[1].externals[0].match_address`.
 * @module
 */

import { parse, TomlError } from "smol-toml";
import { MAX_SLOTS } from "../nat/codec.ts";
import {
  type Cidr,
  type Config,
  ConfigError,
  type Defaults,
  type ExternalMatch,
  type ExternalSpec,
  FLOW_CACHE_SLOTS,
  type HairpinRoute,
  type InterfaceConfig,
  isFlowCacheSize,
  type PortRange,
  type ProtoRanges,
  SESSION_COUNTERS_MAX,
  type Timeouts,
} from "./types.ts";
import {
  compareAddr,
  formatAddr,
  formatCidr,
  parseAddr,
  parseCidr,
  parseCidrHost,
} from "./cidr.ts";
import { formatRanges, parseRanges, type RangeKind, rangesContain } from "./ranges.ts";
import { formatDuration, parseDuration } from "./duration.ts";

/** Result of {@link parseConfigToml}. */
export interface ParsedConfig {
  config: Config;
  /**
   * Human-readable remarks that are not errors: ignored keys (`bpf_loader`),
   * deprecated aliases, suspicious but valid settings. Each starts with
   * `file: key.path: `.
   */
  notices: string[];
}

/** Options for {@link parseConfigToml}. */
export interface ParseConfigOptions {
  /**
   * Kernel release (as in `uname -r`) used for kernel-dependent defaults:
   * `bpf_fib_lookup_external` defaults to true on Linux >= 6.7, as in
   * einat-ebpf. Defaults to `Deno.osRelease()`; if that is unavailable the
   * option defaults to false.
   */
  kernelRelease?: string;
}

/** Largest accepted `*_max_records` value (16Mi records). */
export const MAX_RECORDS = 16 * 1024 * 1024;
/** Longest accepted timeout: 30 days, in milliseconds. */
export const MAX_TIMEOUT_MS = 30 * 86_400_000;
/** Highest BPF log level (5 = trace). */
export const MAX_BPF_LOG_LEVEL = 5;
/** Valid values of `ip_protocols`. */
export const IP_PROTOCOLS = ["tcp", "udp", "icmp"] as const;
/** Valid values of `bpf_loader` (accepted and ignored). */
export const BPF_LOADERS = ["aya", "libbpf", "libbpf-skel"] as const;

/** einat-ebpf's defaults, in normalised form. */
export const DEFAULTS = {
  ipv4LocalRulePref: 200,
  ipv6LocalRulePref: 200,
  ipv4HairpinRulePref: 100,
  ipv6HairpinRulePref: 100,
  ipv4HairpinTableId: 4787,
  ipv6HairpinTableId: 4787,
  tcpRanges: [{ start: 20000, end: 29999 }],
  udpRanges: [{ start: 20000, end: 29999 }],
  icmpRanges: [{ start: 0, end: 65535 }],
  icmpInRanges: [{ start: 0, end: 9999 }],
  icmpOutRanges: [{ start: 1000, end: 65535 }],
  bpfLogLevel: 0,
  allowInboundIcmpx: true,
  snatOtherProtocols: true,
  /** TOML default; an interface built from CLI flags gets false (see cli.ts). */
  preferTcx: true,
  preallocateMaps: false,
  flowCacheSlots: FLOW_CACHE_SLOTS.default as number,
  sessionCounters: 0,
  externalSlots: 0,
  defaultExternals: true,
  /**
   * einat-ebpf leaves ICMP out. We route it too: errors from internal hosts about hairpinned
   * packets must be turned around (RFC 5508 REQ-7, a MUST), and echoes to the external
   * address are still answered by the router.
   */
  ipProtocols: ["tcp", "udp", "icmp"],
  fragTrackMaxRecords: 65536,
  otherMaxRecords: 4096,
  bindingMaxRecords: 65536 * 3,
  /** Bindings one internal address may hold; 0: no limit (einat-ts). */
  bindingMaxPerHost: 0,
  /** Sessions one internal address's bindings may hold; 0: no limit (einat-ts). */
  sessionMaxPerHost: 0,
  /** Timeouts in milliseconds. */
  timeouts: {
    fragment: 2_000,
    icmpDefault: 60_000,
    udpMin: 120_000,
    udpDefault: 300_000,
    tcpTrans: 240_000,
    tcpEst: 7_440_000, // 2h4m: RFC 5382 REQ-5, as einat-ebpf
    tcpClosing: 240_000,
    other: 600_000, // 10m: masquerade's generic timeout (nf_conntrack_generic_timeout)
  },
} as const;

const TOP_KEYS = ["version", "defaults", "interfaces"];
const DEFAULTS_KEYS = [
  "ipv4_local_rule_pref",
  "ipv6_local_rule_pref",
  "ipv4_hairpin_rule_pref",
  "ipv6_hairpin_rule_pref",
  "ipv4_hairpin_table_id",
  "ipv6_hairpin_table_id",
  "tcp_ranges",
  "udp_ranges",
  "icmp_ranges",
  "icmp_in_ranges",
  "icmp_out_ranges",
];
const TIMEOUT_KEYS: Record<keyof Timeouts, string> = {
  fragment: "timeout_fragment",
  icmpDefault: "timeout_icmp_default",
  udpMin: "timeout_udp_min",
  udpDefault: "timeout_udp_default",
  tcpTrans: "timeout_tcp_trans",
  tcpEst: "timeout_tcp_est",
  tcpClosing: "timeout_tcp_closing",
  other: "timeout_other",
};
/**
 * einat-ebpf's names for the timeouts of connectionless sessions, UDP and ICMP alike: here
 * `timeout_pkt_min` is UDP's minimum and `timeout_pkt_default` UDP's default and ICMP's (one
 * timeout here); the keys of our own names win where both are given.
 */
const EINAT_EBPF_TIMEOUTS: Record<string, (keyof Timeouts)[]> = {
  timeout_pkt_min: ["udpMin"],
  timeout_pkt_default: ["udpDefault", "icmpDefault"],
};
const INTERFACE_KEYS = [
  "if_name",
  "if_index",
  "nat44",
  "nat66",
  "bpf_log_level",
  "bpf_fib_lookup_external",
  "allow_inbound_icmpx",
  "snat_other_protocols",
  ...Object.values(TIMEOUT_KEYS),
  "timeout_tcp_opening",
  ...Object.keys(EINAT_EBPF_TIMEOUTS),
  "frag_track_max_records",
  "other_max_records",
  "binding_max_records",
  "binding_max_per_host",
  "session_max_per_host",
  "ct_max_records",
  "preallocate_maps",
  "flow_cache_slots",
  "session_counters",
  "external_slots",
  "default_externals",
  "snat_internals",
  "no_snat_dests",
  "externals",
  "ipv4_hairpin_route",
  "ipv6_hairpin_route",
  "bpf_loader",
  "prefer_tcx",
  "hairpin_dests",
];
const HAIRPIN_KEYS = ["enable", "internal_if_names", "ip_protocols", "ip_rule_pref", "table_id"];
const RANGE_KEYS: Record<keyof ProtoRanges, [string, RangeKind]> = {
  tcp: ["tcp_ranges", "port"],
  udp: ["udp_ranges", "port"],
  icmp: ["icmp_ranges", "icmp"],
  icmpIn: ["icmp_in_ranges", "icmp"],
  icmpOut: ["icmp_out_ranges", "icmp"],
};
const EXTERNAL_KEYS = [
  "address",
  "network",
  "match_address",
  "is_internal",
  "no_snat",
  "no_hairpin",
  ...Object.values(RANGE_KEYS).map(([k]) => k),
];

type Table = Record<string, unknown>;

interface Ctx {
  file: string;
  notices: string[];
  /** Resolved kernel release (may be undefined when unknown). */
  kernelRelease?: string;
}

function fail(ctx: Ctx, path: string, message: string): never {
  throw new ConfigError(path, message, ctx.file);
}

function notice(ctx: Ctx, path: string, message: string): void {
  ctx.notices.push(`${ctx.file}: ${path}: ${message}`);
}

/** Notices that start with this are warnings (a setting that likely defeats its purpose). */
export const WARNING_PREFIX = "warning: ";

function warning(ctx: Ctx, path: string, message: string): void {
  ctx.notices.push(`${WARNING_PREFIX}${ctx.file}: ${path}: ${message}`);
}

/** The level to log a notice at: `warn` for warnings, `info` for the rest. */
export function noticeLevel(notice: string): "info" | "warn" {
  return notice.startsWith(WARNING_PREFIX) ? "warn" : "info";
}

function join(base: string, key: string): string {
  return base === "" ? key : `${base}.${key}`;
}

/** Describes a raw TOML value for error messages: `string "x"`, `integer 5`, `a table`, … */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return `string ${JSON.stringify(value)}`;
  if (typeof value === "boolean") return `boolean ${value}`;
  if (typeof value === "bigint") return `integer ${value}`;
  if (typeof value === "number") {
    return Number.isInteger(value) ? `integer ${value}` : `float ${value}`;
  }
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return "a date-time";
  if (typeof value === "object" && value !== null && value.constructor?.name === "TomlDate") {
    return "a date-time";
  }
  if (typeof value === "object") return "a table";
  return typeof value;
}

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    describeValue(value) === "a table";
}

/** Levenshtein distance, for "did you mean" hints. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The candidate closest to `word`, if it is close enough to be a likely typo. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined, bestDist = Infinity, bestEdit = Infinity;
  const tokens = (w: string) => w.toLowerCase().split(/[_-]/).sort().join("_");
  for (const c of candidates) {
    // Same words in another order (`icmp_ranges_in`) count as a near miss.
    // So does a prefix of at least 3 characters (`--hairpin` for `--hairpin-if`).
    const lw = word.toLowerCase(), lc = c.toLowerCase();
    const edit = editDistance(lw, lc);
    const d = tokens(word) === tokens(c) || (lw.length >= 3 && lc.startsWith(lw)) ? 1 : edit;
    // Ties go to the nearer spelling (`external`: `externals`, not `external_slots`).
    if (d < bestDist || (d === bestDist && edit < bestEdit)) {
      best = c;
      bestDist = d;
      bestEdit = edit;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return bestDist <= limit ? best : undefined;
}

/** Keys that belong in another table than where they were found: where they go. */
const KEY_HOME: Record<string, string> = {
  tcp_ranges: "[defaults] or [[interfaces.externals]]",
  udp_ranges: "[defaults] or [[interfaces.externals]]",
  icmp_ranges: "[defaults] or [[interfaces.externals]]",
  icmp_in_ranges: "[defaults] or [[interfaces.externals]]",
  icmp_out_ranges: "[defaults] or [[interfaces.externals]]",
  ipv4_local_rule_pref: "[defaults]",
  ipv6_local_rule_pref: "[defaults]",
  ipv4_hairpin_rule_pref: "[defaults] (or ip_rule_pref of the hairpin route)",
  ipv6_hairpin_rule_pref: "[defaults] (or ip_rule_pref of the hairpin route)",
  ipv4_hairpin_table_id: "[defaults] (or table_id of the hairpin route)",
  ipv6_hairpin_table_id: "[defaults] (or table_id of the hairpin route)",
};

function checkKeys(ctx: Ctx, table: Table, path: string, known: readonly string[]): void {
  for (const key of Object.keys(table)) {
    if (known.includes(key)) continue;
    if (KEY_HOME[key]) fail(ctx, join(path, key), `not a key here; it goes in ${KEY_HOME[key]}`);
    const guess = suggest(key, known);
    const hint = guess
      ? `did you mean \`${guess}\`?`
      : `valid keys here: ${known.map((k) => `\`${k}\``).join(", ")}`;
    fail(ctx, join(path, key), `unknown key; ${hint}`);
  }
}

function expectTable(ctx: Ctx, value: unknown, path: string): Table {
  if (!isTable(value)) fail(ctx, path, `expected a table, got ${describeValue(value)}`);
  return value;
}

function getBool(ctx: Ctx, t: Table, key: string, path: string, def: boolean): boolean {
  const v = t[key];
  if (v === undefined) return def;
  if (typeof v !== "boolean") {
    fail(ctx, join(path, key), `expected true or false, got ${describeValue(v)}`);
  }
  return v;
}

function getOptBool(ctx: Ctx, t: Table, key: string, path: string): boolean | undefined {
  return t[key] === undefined ? undefined : getBool(ctx, t, key, path, false);
}

function getInt(
  ctx: Ctx,
  t: Table,
  key: string,
  path: string,
  def: number,
  min: number,
  max: number,
  what: string,
): number {
  const v = t[key];
  if (v === undefined) return def;
  const p = join(path, key);
  if (typeof v === "bigint") {
    fail(ctx, p, `${v} is out of range; expected ${what} from ${min} to ${max}`);
  }
  if (typeof v !== "number" || !Number.isInteger(v)) {
    fail(ctx, p, `expected ${what}, an integer from ${min} to ${max}; got ${describeValue(v)}`);
  }
  if (v < min || v > max) {
    fail(ctx, p, `${v} is out of range; expected ${what} from ${min} to ${max}`);
  }
  return v;
}

/** Tables the kernel keeps for itself: hairpin routes need one of their own. */
const RESERVED_TABLES: Record<number, string> = { 253: "default", 254: "main", 255: "local" };

/** A hairpin routing table id: 1 to 2^32-1, not one of {@link RESERVED_TABLES}. */
function getTableId(ctx: Ctx, t: Table, key: string, path: string, def: number): number {
  const v = getInt(ctx, t, key, path, def, 1, 0xffffffff, "a routing table id");
  const name = RESERVED_TABLES[v];
  if (name) {
    fail(
      ctx,
      join(path, key),
      `${v} is the kernel's ${name} table; hairpin routes need a table of their own ` +
        `(einat adds and removes routes in it), e.g. 4787`,
    );
  }
  return v;
}

function getStringList(ctx: Ctx, t: Table, key: string, path: string): string[] | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  const p = join(path, key);
  if (!Array.isArray(v)) fail(ctx, p, `expected an array of strings, got ${describeValue(v)}`);
  return v.map((item, i) => {
    if (typeof item !== "string") {
      fail(ctx, `${p}[${i}]`, `expected a string, got ${describeValue(item)}`);
    }
    return item;
  });
}

/** Validates a Linux interface name (1-15 bytes, no `/`, whitespace or `:`). */
export function checkIfName(name: string): string | undefined {
  if (name === "") return "interface name is empty";
  if (new TextEncoder().encode(name).length > 15) {
    return `interface name "${name}" is longer than 15 bytes (Linux IFNAMSIZ limit)`;
  }
  if (name === "." || name === "..") return `"${name}" is not a valid interface name`;
  if (/[\s/:]/.test(name)) {
    return `interface name "${name}" contains whitespace, "/" or ":", which Linux does not allow`;
  }
  return undefined;
}

function getCidrList(ctx: Ctx, t: Table, key: string, path: string): Cidr[] {
  const list = getStringList(ctx, t, key, path) ?? [];
  return list.map((text, i) => {
    try {
      return parseCidr(text);
    } catch (e) {
      fail(ctx, `${join(path, key)}[${i}]`, (e as Error).message);
    }
  });
}

function getTimeout(ctx: Ctx, t: Table, key: string, path: string): number | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  const p = join(path, key);
  if (typeof v !== "string" && typeof v !== "number") {
    fail(ctx, p, `expected a duration string such as "5m", got ${describeValue(v)}`);
  }
  let ms: number;
  try {
    ms = parseDuration(v);
  } catch (e) {
    fail(ctx, p, (e as Error).message);
  }
  if (ms <= 0) {
    // "1ns", "0.4ms": not zero, but below the millisecond timeouts are counted in
    fail(
      ctx,
      p,
      /[1-9]/.test(String(v))
        ? `${
          JSON.stringify(v)
        } is shorter than 1ms, the shortest timeout; expected e.g. "2s" or "5m"`
        : `timeout must be longer than zero; expected e.g. "2s" or "5m"`,
    );
  }
  if (ms > MAX_TIMEOUT_MS) {
    fail(ctx, p, `${formatDuration(ms)} is too long; expected at most 30d`);
  }
  return ms;
}

function getRanges(
  ctx: Ctx,
  t: Table,
  key: string,
  kind: RangeKind,
  path: string,
): PortRange[] | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  const p = join(path, key);
  if (!Array.isArray(v) && typeof v !== "string" && typeof v !== "number") {
    fail(ctx, p, `expected an array of ranges such as ["20000-29999"], got ${describeValue(v)}`);
  }
  return parseRanges(v, kind, { path: p, file: ctx.file }, {
    warn: (at, message) => warning(ctx, at, message),
  });
}

/** Resolves ICMP in/out ranges and checks they lie inside the ICMP ranges. */
function finishIcmp(
  ctx: Ctx,
  r: ProtoRanges,
  path: string,
  own: Partial<Record<keyof ProtoRanges, boolean>>,
  inheritedFrom: string,
): ProtoRanges {
  if (r.icmp.length === 0) return { ...r, icmpIn: [], icmpOut: [] };
  for (const dir of ["icmpIn", "icmpOut"] as const) {
    if (!rangesContain(r.icmp, r[dir])) {
      const key = RANGE_KEYS[dir][0];
      // Blame the key this table actually set.
      const blame = own[dir] || !own.icmp ? key : "icmp_ranges";
      const inherited = own[dir] ? "" : ` (${inheritedFrom})`;
      fail(
        ctx,
        join(path, blame),
        `${key} ${formatRanges(r[dir])}${inherited} is not inside icmp_ranges ${
          formatRanges(r.icmp)
        }; every inbound and outbound ICMP id range must be covered by icmp_ranges`,
      );
    }
  }
  return r;
}

function parseDefaults(ctx: Ctx, value: unknown): Defaults {
  const path = "defaults";
  const t = value === undefined ? {} : expectTable(ctx, value, path);
  checkKeys(ctx, t, path, DEFAULTS_KEYS);
  const u32 = (key: string, def: number, what: string) =>
    getInt(ctx, t, key, path, def, 0, 0xffffffff, what);
  const table = (key: string, def: number) => getTableId(ctx, t, key, path, def);
  const base = defaultDefaults().ranges;
  const ranges = {
    tcp: getRanges(ctx, t, "tcp_ranges", "port", path) ?? base.tcp,
    udp: getRanges(ctx, t, "udp_ranges", "port", path) ?? base.udp,
    icmp: getRanges(ctx, t, "icmp_ranges", "icmp", path) ?? base.icmp,
    icmpIn: getRanges(ctx, t, "icmp_in_ranges", "icmp", path) ?? base.icmpIn,
    icmpOut: getRanges(ctx, t, "icmp_out_ranges", "icmp", path) ?? base.icmpOut,
  };
  const own = {
    icmp: t.icmp_ranges !== undefined,
    icmpIn: t.icmp_in_ranges !== undefined,
    icmpOut: t.icmp_out_ranges !== undefined,
  };
  const d: Defaults = {
    ipv4LocalRulePref: u32(
      "ipv4_local_rule_pref",
      DEFAULTS.ipv4LocalRulePref,
      "an ip rule preference",
    ),
    ipv6LocalRulePref: u32(
      "ipv6_local_rule_pref",
      DEFAULTS.ipv6LocalRulePref,
      "an ip rule preference",
    ),
    ipv4HairpinRulePref: u32(
      "ipv4_hairpin_rule_pref",
      DEFAULTS.ipv4HairpinRulePref,
      "an ip rule preference",
    ),
    ipv6HairpinRulePref: u32(
      "ipv6_hairpin_rule_pref",
      DEFAULTS.ipv6HairpinRulePref,
      "an ip rule preference",
    ),
    ipv4HairpinTableId: table("ipv4_hairpin_table_id", DEFAULTS.ipv4HairpinTableId),
    ipv6HairpinTableId: table("ipv6_hairpin_table_id", DEFAULTS.ipv6HairpinTableId),
    ranges: finishIcmp(ctx, ranges, path, own, "built-in default"),
    icmpDirs: { icmpIn: ranges.icmpIn, icmpOut: ranges.icmpOut },
  };
  return d;
}

function parseHairpin(
  ctx: Ctx,
  value: unknown,
  path: string,
  family: 4 | 6,
  defaults: Defaults,
): HairpinRoute {
  const t = value === undefined ? {} : expectTable(ctx, value, path);
  checkKeys(ctx, t, path, HAIRPIN_KEYS);
  const names = getStringList(ctx, t, "internal_if_names", path) ?? [];
  names.forEach((n, i) => {
    const problem = checkIfName(n);
    if (problem) fail(ctx, `${join(path, "internal_if_names")}[${i}]`, problem);
  });
  const protocols = (getStringList(ctx, t, "ip_protocols", path) ?? [...DEFAULTS.ipProtocols])
    .map((p, i) => {
      const lower = p.toLowerCase();
      if (!(IP_PROTOCOLS as readonly string[]).includes(lower)) {
        const guess = suggest(lower, IP_PROTOCOLS);
        fail(
          ctx,
          `${join(path, "ip_protocols")}[${i}]`,
          `unknown protocol "${p}"; expected one of "tcp", "udp" or "icmp"${
            guess ? ` (did you mean "${guess}"?)` : ""
          }`,
        );
      }
      return lower;
    });
  const enable = getOptBool(ctx, t, "enable", path);
  const localPref = family === 4 ? defaults.ipv4LocalRulePref : defaults.ipv6LocalRulePref;
  const ipRulePref = getInt(
    ctx,
    t,
    "ip_rule_pref",
    path,
    family === 4 ? defaults.ipv4HairpinRulePref : defaults.ipv6HairpinRulePref,
    0,
    0xffffffff,
    "an ip rule preference",
  );
  const route: HairpinRoute = {
    // einat-ebpf: on when explicitly enabled, or when not disabled and some
    // internal interface is listed.
    enable: enable === true || (enable !== false && names.length > 0),
    internalIfNames: names,
    ipProtocols: [...new Set(protocols)],
    ipRulePref,
    tableId: getTableId(
      ctx,
      t,
      "table_id",
      path,
      family === 4 ? defaults.ipv4HairpinTableId : defaults.ipv6HairpinTableId,
    ),
  };
  if (route.enable && ipRulePref >= localPref) {
    warning(
      ctx,
      join(path, "ip_rule_pref"),
      `hairpin rule preference ${ipRulePref} is not lower than the local rule preference ` +
        `${localPref} (defaults.ipv${family}_local_rule_pref), so hairpin routes may never match`,
    );
  }
  if (enable === true && names.length === 0) {
    notice(ctx, join(path, "enable"), "hairpin routing is enabled but internal_if_names is empty");
  }
  if (route.enable && route.ipProtocols.length === 0) {
    warning(
      ctx,
      join(path, "ip_protocols"),
      "hairpin routing is on but ip_protocols is empty: no rule sends anything to its routes",
    );
  }
  if (new Set(names).size < names.length) {
    notice(ctx, join(path, "internal_if_names"), "an interface listed twice is used once");
    route.internalIfNames = [...new Set(names)];
  }
  return route;
}

function parseMatch(ctx: Ctx, t: Table, path: string): ExternalMatch {
  const given = ["address", "network", "match_address"].filter((k) => t[k] !== undefined);
  if (given.length === 0) {
    fail(
      ctx,
      path,
      `an external needs one of \`address\` (e.g. "192.0.2.1"), \`network\` ` +
        `(e.g. "192.0.2.1/24") or \`match_address\` (e.g. "192.0.2.0/24")`,
    );
  }
  if (given.length > 1) {
    fail(
      ctx,
      join(path, given[1]),
      `\`${given[0]}\` is already set; an external takes exactly one of \`address\`, ` +
        `\`network\` or \`match_address\` (use another [[interfaces.externals]] entry)`,
    );
  }
  const key = given[0];
  const p = join(path, key);
  const v = t[key];
  const wrap = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      fail(ctx, p, (e as Error).message);
    }
  };
  if (key === "address") {
    if (typeof v !== "string") {
      fail(ctx, p, `expected an IP address string such as "192.0.2.1", got ${describeValue(v)}`);
    }
    if (v.includes("/")) {
      fail(
        ctx,
        p,
        `"${v}" is a CIDR; \`address\` takes a single address, use \`network\` or ` +
          `\`match_address\` for a CIDR`,
      );
    }
    const addr = wrap(() => parseAddr(v));
    if (addr.every((b) => b === 0)) {
      notice(
        ctx,
        p,
        `the unspecified address ${formatAddr(addr)} never matches; this external has no effect`,
      );
    }
    return {
      kind: "address",
      addr: { family: addr.length === 4 ? 4 : 6, addr, prefixLen: addr.length * 8 },
    };
  }
  if (key === "network") {
    if (typeof v !== "string") {
      fail(ctx, p, `expected a CIDR string such as "192.0.2.1/24", got ${describeValue(v)}`);
    }
    const { addr, net } = wrap(() => parseCidrHost(v));
    return { kind: "staticNetwork", net, address: addr };
  }
  // match_address: "CIDR", { network = "CIDR" } or { start = "addr", end = "addr" }
  if (typeof v === "string") {
    return { kind: "network", net: wrap(() => parseCidr(v)) };
  }
  if (!isTable(v)) {
    fail(
      ctx,
      p,
      `expected a CIDR string, { network = "..." } or { start = "...", end = "..." }, got ${
        describeValue(v)
      }`,
    );
  }
  if (v.network !== undefined && (v.start !== undefined || v.end !== undefined)) {
    fail(ctx, p, "give either `network` or `start` and `end`, not both");
  }
  if (v.network !== undefined) {
    checkKeys(ctx, v, p, ["network"]);
    if (typeof v.network !== "string") {
      fail(ctx, join(p, "network"), `expected a CIDR string, got ${describeValue(v.network)}`);
    }
    const text = v.network;
    try {
      return { kind: "network", net: parseCidr(text) };
    } catch (e) {
      fail(ctx, join(p, "network"), (e as Error).message);
    }
  }
  checkKeys(ctx, v, p, ["start", "end"]);
  const ends: Uint8Array[] = [];
  for (const k of ["start", "end"]) {
    const x = v[k];
    if (x === undefined) {
      fail(ctx, p, `missing \`${k}\`; an address range needs both start and end`);
    }
    if (typeof x !== "string") {
      fail(ctx, join(p, k), `expected an IP address string, got ${describeValue(x)}`);
    }
    try {
      ends.push(parseAddr(x));
    } catch (e) {
      fail(ctx, join(p, k), (e as Error).message);
    }
  }
  const [start, end] = ends;
  if (start.length !== end.length) {
    fail(
      ctx,
      join(p, "end"),
      `start is IPv${start.length === 4 ? 4 : 6} but end is IPv${
        end.length === 4 ? 4 : 6
      }; both ends must be of the same family`,
    );
  }
  if (compareAddr(start, end) > 0) {
    fail(
      ctx,
      join(p, "end"),
      `end ${formatAddr(end)} is before start ${formatAddr(start)}; swap them`,
    );
  }
  return { kind: "range", family: start.length === 4 ? 4 : 6, start, end };
}

function parseExternal(ctx: Ctx, value: unknown, path: string, defaults: Defaults): ExternalSpec {
  const t = expectTable(ctx, value, path);
  checkKeys(ctx, t, path, EXTERNAL_KEYS);
  const match = parseMatch(ctx, t, path);
  const own: Partial<Record<keyof ProtoRanges, boolean>> = {};
  const ranges = {} as ProtoRanges;
  for (
    const [name, [key, kind]] of Object.entries(RANGE_KEYS) as [
      keyof ProtoRanges,
      [string, RangeKind],
    ][]
  ) {
    const r = getRanges(ctx, t, key, kind, path);
    own[name] = r !== undefined;
    // ICMP in/out from [defaults] as it names them, even where its empty icmp_ranges cleared
    // them: an external that sets icmp_ranges uses them (einat-ebpf).
    const inherited = name === "icmpIn" || name === "icmpOut"
      ? defaults.icmpDirs?.[name] ?? defaults.ranges[name]
      : defaults.ranges[name];
    ranges[name] = r ?? inherited.map((x) => ({ ...x }));
  }
  return {
    match,
    isInternal: getBool(ctx, t, "is_internal", path, false),
    noSnat: getBool(ctx, t, "no_snat", path, false),
    noHairpin: getBool(ctx, t, "no_hairpin", path, false),
    ranges: finishIcmp(ctx, ranges, path, own, "inherited from [defaults]"),
  };
}

function parseKernelRelease(release: string | undefined): [number, number] | undefined {
  const m = release?.match(/^(\d+)\.(\d+)/);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/** True when the kernel release is at least `major.minor`. */
export function kernelAtLeast(release: string | undefined, major: number, minor: number): boolean {
  const v = parseKernelRelease(release);
  return v !== undefined && (v[0] > major || (v[0] === major && v[1] >= minor));
}

function currentKernel(): string | undefined {
  try {
    return Deno.osRelease();
  } catch {
    return undefined;
  }
}

/**
 * The value einat-ebpf uses for an unset `bpf_fib_lookup_external`: true on
 * Linux >= 6.7.
 */
export function defaultFibLookup(kernelRelease?: string): boolean {
  return kernelAtLeast(kernelRelease ?? currentKernel(), 6, 7);
}

/** The `[defaults]` table as einat-ebpf fills it when the file has none. */
export function defaultDefaults(): Defaults {
  return {
    ipv4LocalRulePref: DEFAULTS.ipv4LocalRulePref,
    ipv6LocalRulePref: DEFAULTS.ipv6LocalRulePref,
    ipv4HairpinRulePref: DEFAULTS.ipv4HairpinRulePref,
    ipv6HairpinRulePref: DEFAULTS.ipv6HairpinRulePref,
    ipv4HairpinTableId: DEFAULTS.ipv4HairpinTableId,
    ipv6HairpinTableId: DEFAULTS.ipv6HairpinTableId,
    ranges: {
      tcp: [...DEFAULTS.tcpRanges].map((r) => ({ ...r })),
      udp: [...DEFAULTS.udpRanges].map((r) => ({ ...r })),
      icmp: [...DEFAULTS.icmpRanges].map((r) => ({ ...r })),
      icmpIn: [...DEFAULTS.icmpInRanges].map((r) => ({ ...r })),
      icmpOut: [...DEFAULTS.icmpOutRanges].map((r) => ({ ...r })),
    },
  };
}

/**
 * Builds an interface with every setting at its default, as an `[[interfaces]]`
 * table holding only `if_name` would. Used by the CLI.
 */
export function defaultInterface(
  defaults: Defaults,
  kernelRelease?: string,
): InterfaceConfig {
  const hairpin = (family: 4 | 6): HairpinRoute => ({
    enable: false,
    internalIfNames: [],
    ipProtocols: [...DEFAULTS.ipProtocols],
    ipRulePref: family === 4 ? defaults.ipv4HairpinRulePref : defaults.ipv6HairpinRulePref,
    tableId: family === 4 ? defaults.ipv4HairpinTableId : defaults.ipv6HairpinTableId,
  });
  return {
    nat44: false,
    nat66: false,
    bpfLogLevel: DEFAULTS.bpfLogLevel,
    bpfFibLookupExternal: defaultFibLookup(kernelRelease),
    allowInboundIcmpx: DEFAULTS.allowInboundIcmpx,
    snatOtherProtocols: DEFAULTS.snatOtherProtocols,
    timeouts: { ...DEFAULTS.timeouts },
    fragTrackMaxRecords: DEFAULTS.fragTrackMaxRecords,
    otherMaxRecords: DEFAULTS.otherMaxRecords,
    bindingMaxRecords: DEFAULTS.bindingMaxRecords,
    bindingMaxPerHost: DEFAULTS.bindingMaxPerHost,
    sessionMaxPerHost: DEFAULTS.sessionMaxPerHost,
    ctMaxRecords: DEFAULTS.bindingMaxRecords * 2,
    preferTcx: DEFAULTS.preferTcx,
    preallocateMaps: DEFAULTS.preallocateMaps,
    flowCacheSlots: DEFAULTS.flowCacheSlots,
    sessionCounters: DEFAULTS.sessionCounters,
    externalSlots: DEFAULTS.externalSlots,
    noSnatDests: [],
    defaultExternals: DEFAULTS.defaultExternals,
    snatInternals: [],
    ipv4HairpinRoute: hairpin(4),
    ipv6HairpinRoute: hairpin(6),
    externals: [],
    defaultRanges: cloneRanges(defaults.ranges),
  };
}

/** Deep-copies a set of protocol ranges. */
export function cloneRanges(r: ProtoRanges): ProtoRanges {
  const c = (l: PortRange[]) => l.map((x) => ({ ...x }));
  return {
    tcp: c(r.tcp),
    udp: c(r.udp),
    icmp: c(r.icmp),
    icmpIn: c(r.icmpIn),
    icmpOut: c(r.icmpOut),
  };
}

function parseInterface(
  ctx: Ctx,
  value: unknown,
  path: string,
  defaults: Defaults,
): InterfaceConfig {
  const t = expectTable(ctx, value, path);
  checkKeys(ctx, t, path, INTERFACE_KEYS);
  const iface = defaultInterface(defaults, ctx.kernelRelease);

  // Identity: if_name (einat-ebpf) or if_index (extension).
  if (t.if_name !== undefined) {
    if (typeof t.if_name !== "string") {
      fail(
        ctx,
        join(path, "if_name"),
        `expected an interface name string such as "eth0", got ${describeValue(t.if_name)}`,
      );
    }
    const problem = checkIfName(t.if_name);
    if (problem) fail(ctx, join(path, "if_name"), problem);
    iface.ifName = t.if_name;
  }
  if (t.if_index !== undefined) {
    const idx = getInt(ctx, t, "if_index", path, 0, 1, 0x7fffffff, "an interface index");
    if (iface.ifName !== undefined) {
      notice(
        ctx,
        join(path, "if_index"),
        `ignored because if_name is set (einat-ebpf >= 0.1.2 ignores if_index)`,
      );
    } else {
      iface.ifIndex = idx;
    }
  }
  if (iface.ifName === undefined && iface.ifIndex === undefined) {
    fail(
      ctx,
      join(path, "if_name"),
      `missing; every [[interfaces]] entry needs if_name, e.g. if_name = "eth0"`,
    );
  }

  iface.nat44 = getBool(ctx, t, "nat44", path, false);
  iface.nat66 = getBool(ctx, t, "nat66", path, false);
  if (!iface.nat44 && !iface.nat66) {
    warning(
      ctx,
      join(path, "nat44"),
      `neither nat44 nor nat66 is enabled (both default to false in config files), so ` +
        `interface ${iface.ifName ?? `#${iface.ifIndex}`} is not translated; set nat44 = true`,
    );
  }
  iface.bpfLogLevel = getInt(
    ctx,
    t,
    "bpf_log_level",
    path,
    DEFAULTS.bpfLogLevel,
    0,
    MAX_BPF_LOG_LEVEL,
    "a log level (0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace)",
  );
  iface.bpfFibLookupExternal = getBool(
    ctx,
    t,
    "bpf_fib_lookup_external",
    path,
    iface.bpfFibLookupExternal,
  );
  iface.allowInboundIcmpx = getBool(
    ctx,
    t,
    "allow_inbound_icmpx",
    path,
    DEFAULTS.allowInboundIcmpx,
  );
  iface.snatOtherProtocols = getBool(
    ctx,
    t,
    "snat_other_protocols",
    path,
    DEFAULTS.snatOtherProtocols,
  );
  iface.preferTcx = getBool(ctx, t, "prefer_tcx", path, DEFAULTS.preferTcx);
  iface.preallocateMaps = getBool(ctx, t, "preallocate_maps", path, DEFAULTS.preallocateMaps);
  iface.flowCacheSlots = getInt(
    ctx,
    t,
    "flow_cache_slots",
    path,
    DEFAULTS.flowCacheSlots,
    FLOW_CACHE_SLOTS.min,
    FLOW_CACHE_SLOTS.max,
    "a slot count",
  );
  if (!isFlowCacheSize(iface.flowCacheSlots)) {
    fail(
      ctx,
      join(path, "flow_cache_slots"),
      `${iface.flowCacheSlots} is not a power of two (e.g. ${
        2 ** Math.round(Math.log2(iface.flowCacheSlots))
      })`,
    );
  }
  iface.sessionCounters = getInt(
    ctx,
    t,
    "session_counters",
    path,
    DEFAULTS.sessionCounters,
    0,
    SESSION_COUNTERS_MAX,
    "a session count (0: off)",
  );
  iface.externalSlots = getInt(
    ctx,
    t,
    "external_slots",
    path,
    DEFAULTS.externalSlots,
    1,
    MAX_SLOTS,
    "a number of external addresses",
  );
  iface.defaultExternals = getBool(ctx, t, "default_externals", path, DEFAULTS.defaultExternals);

  // Timeouts; the deprecated timeout_pkt_* apply unless the new key is set.
  for (const [pktKey, fields] of Object.entries(EINAT_EBPF_TIMEOUTS)) {
    const ms = getTimeout(ctx, t, pktKey, path);
    if (ms === undefined) continue;
    for (const field of fields) {
      const ownKey = TIMEOUT_KEYS[field];
      if (t[ownKey] !== undefined) notice(ctx, join(path, pktKey), `overridden by ${ownKey}`);
      else iface.timeouts[field] = ms;
    }
  }
  for (const [field, key] of Object.entries(TIMEOUT_KEYS) as [keyof Timeouts, string][]) {
    const ms = getTimeout(ctx, t, key, path);
    if (ms !== undefined) iface.timeouts[field] = ms;
  }
  // timeout_tcp_trans (einat-ebpf's) is TCP's opening and closing timeout; RFC 7857 2.1 asks
  // them configurable apart: timeout_tcp_opening and timeout_tcp_closing override it.
  if (t.timeout_tcp_closing === undefined) iface.timeouts.tcpClosing = iface.timeouts.tcpTrans;
  const opening = getTimeout(ctx, t, "timeout_tcp_opening", path);
  if (opening !== undefined) iface.timeouts.tcpTrans = opening;
  if (iface.timeouts.udpMin > iface.timeouts.udpDefault) {
    // Name the keys the file set (ours or einat-ebpf's), the one of the minimum first.
    const given = (ours: string, pkt: string) =>
      t[ours] !== undefined ? ours : t[pkt] !== undefined ? pkt : undefined;
    const minKey = given("timeout_udp_min", "timeout_pkt_min");
    const defKey = given("timeout_udp_default", "timeout_pkt_default");
    const name = (key: string | undefined, builtIn: string) => key ?? `${builtIn} (built-in)`;
    warning(
      ctx,
      join(path, minKey ?? defKey ?? "timeout_udp_min"),
      `${name(minKey, "timeout_udp_min")} (${
        formatDuration(iface.timeouts.udpMin)
      }) is longer than ` +
        `${name(defKey, "timeout_udp_default")} (${
          formatDuration(iface.timeouts.udpDefault)
        }): a UDP session nobody answered is kept longer than one that was answered`,
    );
  }

  const tcpTransKey = (own: string) => t[own] !== undefined ? own : "timeout_tcp_trans";
  for (
    const [ms, key, what] of [
      [iface.timeouts.tcpTrans, tcpTransKey("timeout_tcp_opening"), "opening"],
      [iface.timeouts.tcpClosing, tcpTransKey("timeout_tcp_closing"), "closing"],
    ] as const
  ) {
    if (iface.timeouts.tcpEst >= ms) continue;
    warning(
      ctx,
      join(path, t.timeout_tcp_est !== undefined ? "timeout_tcp_est" : key),
      `timeout_tcp_est (${formatDuration(iface.timeouts.tcpEst)}) is shorter than ` +
        `${key} (${formatDuration(ms)}): an established ` +
        `connection is kept less long than one ${what} (RFC 5382 REQ-5 asks 2h4m)`,
    );
    break;
  }

  const records = (key: string, def: number) =>
    getInt(ctx, t, key, path, def, 1, MAX_RECORDS, "a record count");
  iface.fragTrackMaxRecords = records("frag_track_max_records", DEFAULTS.fragTrackMaxRecords);
  iface.otherMaxRecords = records("other_max_records", DEFAULTS.otherMaxRecords);
  iface.bindingMaxRecords = records("binding_max_records", DEFAULTS.bindingMaxRecords);
  iface.bindingMaxPerHost = getInt(
    ctx,
    t,
    "binding_max_per_host",
    path,
    DEFAULTS.bindingMaxPerHost,
    0,
    MAX_RECORDS,
    "a number of bindings (0: no limit)",
  );
  iface.sessionMaxPerHost = getInt(
    ctx,
    t,
    "session_max_per_host",
    path,
    DEFAULTS.sessionMaxPerHost,
    0,
    0xffff_ffff,
    "a number of sessions (0: no limit)",
  );
  iface.ctMaxRecords = records("ct_max_records", iface.bindingMaxRecords * 2);
  if (iface.ctMaxRecords < iface.bindingMaxRecords) {
    notice(
      ctx,
      join(path, "ct_max_records"),
      `${iface.ctMaxRecords} is below binding_max_records (${iface.bindingMaxRecords}); ` +
        `einat-ebpf recommends at least as many connection records as bindings`,
    );
  }

  const perHost = iface.bindingMaxPerHost, sessPerHost = iface.sessionMaxPerHost;
  if (perHost && sessPerHost && sessPerHost < perHost) {
    notice(
      ctx,
      join(path, "session_max_per_host"),
      `${sessPerHost} is below binding_max_per_host (${perHost}): every binding holds a ` +
        `session, so a host reaches ${sessPerHost} bindings at most`,
    );
  }

  iface.noSnatDests = getCidrList(ctx, t, "no_snat_dests", path);
  iface.snatInternals = getCidrList(ctx, t, "snat_internals", path);
  for (const n of iface.snatInternals.filter((n) => n.prefixLen === 0)) {
    notice(
      ctx,
      join(path, "snat_internals"),
      `${formatCidr(n)} matches every source: all IPv${n.family} traffic is translated and ` +
        `the other IPv${n.family} entries have no effect`,
    );
  }

  if (t.bpf_loader !== undefined) {
    const p = join(path, "bpf_loader");
    const v = t.bpf_loader;
    if (typeof v !== "string" || !(BPF_LOADERS as readonly string[]).includes(v.toLowerCase())) {
      fail(ctx, p, `expected one of "aya", "libbpf" or "libbpf-skel", got ${describeValue(v)}`);
    }
    notice(
      ctx,
      p,
      `ignored: it selects one of einat-ebpf's Rust BPF loaders; this implementation has its own loader`,
    );
  }
  if (t.hairpin_dests !== undefined) {
    notice(
      ctx,
      join(path, "hairpin_dests"),
      "ignored: obsolete key that einat-ebpf no longer reads; hairpin destinations " +
        "follow the externals (see no_hairpin)",
    );
  }

  iface.ipv4HairpinRoute = parseHairpin(
    ctx,
    t.ipv4_hairpin_route,
    join(path, "ipv4_hairpin_route"),
    4,
    defaults,
  );
  iface.ipv6HairpinRoute = parseHairpin(
    ctx,
    t.ipv6_hairpin_route,
    join(path, "ipv6_hairpin_route"),
    6,
    defaults,
  );
  for (
    const [key, route] of [["ipv4", iface.ipv4HairpinRoute], [
      "ipv6",
      iface.ipv6HairpinRoute,
    ]] as const
  ) {
    const at = route.internalIfNames.indexOf(iface.ifName ?? "");
    if (at >= 0) {
      fail(
        ctx,
        `${join(path, `${key}_hairpin_route`)}.internal_if_names[${at}]`,
        `"${iface.ifName}" is this external interface; list the internal (LAN) interfaces`,
      );
    }
  }

  if (t.externals !== undefined) {
    const p = join(path, "externals");
    if (!Array.isArray(t.externals)) {
      fail(
        ctx,
        p,
        `expected an array of tables ([[interfaces.externals]]), got ${describeValue(t.externals)}`,
      );
    }
    iface.externals = t.externals.map((e, i) => parseExternal(ctx, e, `${p}[${i}]`, defaults));
  }
  // Without the match-all defaults, only the externals listed can be sources of mappings.
  const sources = iface.externals.filter((e) => !e.noSnat && !e.isInternal).length;
  if (!iface.defaultExternals && sources === 0 && (iface.nat44 || iface.nat66)) {
    warning(
      ctx,
      join(path, "default_externals"),
      "default_externals = false and no [[interfaces.externals]] to use instead: no address " +
        "can be an external one, so every new flow is refused",
    );
  }
  return iface;
}

/**
 * Parses an einat-ebpf compatible TOML configuration.
 *
 * @param text the file contents.
 * @param file the file name, used in error messages and notices.
 * @returns the normalised config with einat-ebpf's defaults applied, and
 * notices (ignored keys, deprecations, suspicious settings) to show the user.
 * An empty `interfaces` list is allowed here; the CLI rejects it.
 * @throws {ConfigError} for any syntax error (path `(syntax)`), wrong type,
 * out-of-range value or unknown key, naming `file` and the key path.
 */
export function parseConfigToml(
  text: string,
  file: string,
  options: ParseConfigOptions = {},
): ParsedConfig {
  const ctx: Ctx = {
    file,
    notices: [],
    kernelRelease: options.kernelRelease ?? currentKernel(),
  };
  let doc: Table;
  try {
    doc = parse(text, { integersAsBigInt: "asNeeded" }) as Table;
  } catch (e) {
    if (e instanceof TomlError) {
      const msg = e.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
      // The line itself: smol-toml's messages do not name the key ("trying to redefine an
      // already defined table or value").
      const line = text.split(/\r?\n/)[e.line - 1]?.trim();
      const at = line
        ? ` (${JSON.stringify(line.length > 60 ? line.slice(0, 57) + "..." : line)})`
        : "";
      fail(ctx, "(syntax)", `invalid TOML at line ${e.line}${at}, column ${e.column}: ${msg}`);
    }
    throw e;
  }
  checkKeys(ctx, doc, "", TOP_KEYS);
  getInt(ctx, doc, "version", "", 0, 0, 0xffffffff, "a version number");
  const defaults = parseDefaults(ctx, doc.defaults);
  const interfaces: InterfaceConfig[] = [];
  if (doc.interfaces !== undefined) {
    if (!Array.isArray(doc.interfaces)) {
      fail(
        ctx,
        "interfaces",
        `expected an array of tables ([[interfaces]]), got ${describeValue(doc.interfaces)}`,
      );
    }
    const seen = new Map<string, number>();
    doc.interfaces.forEach((value, i) => {
      const iface = parseInterface(ctx, value, `interfaces[${i}]`, defaults);
      const id = iface.ifName ?? `#${iface.ifIndex}`;
      const prev = seen.get(id);
      if (prev !== undefined) {
        fail(
          ctx,
          `interfaces[${i}].${iface.ifName !== undefined ? "if_name" : "if_index"}`,
          `interface ${id} is already configured by interfaces[${prev}]; merge the two entries`,
        );
      }
      seen.set(id, i);
      interfaces.push(iface);
    });
  }
  return { config: { defaults, interfaces }, notices: ctx.notices };
}
