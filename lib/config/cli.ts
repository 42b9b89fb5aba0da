/**
 * Command-line parsing, compatible with einat-ebpf's flags.
 *
 * einat-ebpf parses with `lexopt`; its list options (`--ports`,
 * `--hairpin-if`, `--internal`) take every following argument up to the next
 * one starting with `-` (a lone `-` counts as a value) or `--`, so
 * `--ports 20000-29999 40000-49999` gives two ranges. `--ports=a` takes exactly
 * one value. Repeating a list option replaces the earlier values, as in
 * einat-ebpf (a notice says so). `node:util`'s `parseArgs` cannot do this, so
 * list options are lifted out of the argument list first and the rest is
 * parsed strictly by `parseArgs`.
 *
 * How `-c` and `-i` combine (as in einat-ebpf's main.rs):
 * - `-c FILE` alone: the file describes everything.
 * - `-i NAME` alone: one interface built from the flags on top of the
 *   defaults; NAT44 is on unless only `--nat66` is given; `--ports` replaces
 *   the TCP and UDP ranges of `[defaults]`; `--hairpin-if` enables IPv4 and
 *   IPv6 hairpin routing for TCP, UDP and ICMP (einat-ebpf: TCP and UDP; ICMP
 *   errors about hairpinned packets must turn around too); like einat-ebpf,
 *   such an interface does not prefer TCX attachment.
 * - `-c` with `-i` (or `--ifindex`): an error, einat-ebpf refuses to merge them.
 * - Interface flags without `-i` are ignored (a notice says so); with neither
 *   `-c` nor `-i` there is no interface, which is an error.
 * @module
 */

import { parseArgs } from "node:util";
import { type Config, ConfigError, type InterfaceConfig } from "./types.ts";
import type { Level } from "../log.ts";
import { parseAddr, parseCidr } from "./cidr.ts";
import { formatRanges, MAX_RANGES, parseRanges } from "./ranges.ts";
import {
  BPF_LOADERS,
  checkIfName,
  defaultDefaults,
  defaultInterface,
  DEFAULTS,
  MAX_BPF_LOG_LEVEL,
  type ParseConfigOptions,
  parseConfigToml,
  type ParsedConfig,
  suggest,
  WARNING_PREFIX,
} from "./toml.ts";

/** Options about state that outlives the process (`--pin-dir`, `--replace`, `--metrics`). */
export interface StateCli {
  /** `--pin-dir`, when given (default /sys/fs/bpf/einat). */
  pinDir?: string;
  /** `--replace`: take over from a running einat on the same interfaces. */
  replace: boolean;
  /** `--metrics HOST:PORT`: serve Prometheus metrics there. */
  metrics?: { hostname: string; port: number };
}

/** What `einat show` lists and how. */
export interface ShowCli {
  pinDir?: string;
  /** Interfaces to list (`-i`); all pinned ones when empty. */
  ifnames: string[];
  json: boolean;
  /** `--stats`: counters instead of bindings and sessions. */
  stats: boolean;
  proto?: "tcp" | "udp" | "icmp";
  /** Matches the internal, external or remote address: its first `addrPrefix` bits (all). */
  addr?: Uint8Array;
  addrPrefix?: number;
  /** Matches the internal, external or remote port (or ICMP identifier). */
  port?: number;
  /**
   * `--top N`: only the N sessions that moved the most bytes (session_counters), no bindings;
   * with `hosts`, the N internal addresses holding the most sessions.
   */
  top?: number;
  /** `--hosts`: per internal address, its bindings, sessions and address-only mappings. */
  hosts?: boolean;
}

/** What the command line asks for. */
export type CliResult =
  | { kind: "help" }
  | { kind: "version" }
  | {
    kind: "run";
    /** The `-c` file, when given. */
    configFile?: string;
    config: Config;
    /** Remarks to log at startup (ignored flags/keys, deprecations). */
    notices: string[];
    /** `--log`, when given. */
    logLevel?: Level;
    state?: StateCli;
  }
  | { kind: "show"; show: ShowCli; logLevel?: Level }
  | {
    kind: "flush";
    pinDir?: string;
    /** The interfaces whose pinned state to remove (from `-i` or `-c`). */
    interfaces: InterfaceConfig[];
    logLevel?: Level;
  };

const LOG_LEVELS: readonly Level[] = ["debug", "info", "warn", "error"];

/** Options taking one or more values, einat-ebpf style. */
const LIST_FLAGS = ["--ports", "--hairpin-if", "--internal"] as const;
type ListFlag = typeof LIST_FLAGS[number];

const PARSE_OPTIONS = {
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "v" },
  config: { type: "string", short: "c" },
  // Multiple only to refuse a repeat (parseArgs would keep the last one silently).
  ifname: { type: "string", short: "i", multiple: true },
  ifindex: { type: "string", multiple: true },
  nat44: { type: "boolean" },
  nat66: { type: "boolean" },
  "bpf-log": { type: "string" },
  "bpf-loader": { type: "string" },
  log: { type: "string" },
  "pin-dir": { type: "string" },
  replace: { type: "boolean" },
  flush: { type: "boolean" },
  metrics: { type: "string" },
} as const;

const SHOW_OPTIONS = {
  help: { type: "boolean", short: "h" },
  show: { type: "boolean" },
  ifname: { type: "string", short: "i", multiple: true },
  "pin-dir": { type: "string" },
  json: { type: "boolean" },
  stats: { type: "boolean" },
  proto: { type: "string" },
  addr: { type: "string" },
  port: { type: "string" },
  top: { type: "string" },
  hosts: { type: "boolean" },
  log: { type: "string" },
} as const;

const SHORT_TO_LONG: Record<string, string> = { h: "help", v: "version", c: "config", i: "ifname" };

/** The help text, listing every option with its default. */
export function helpText(): string {
  const ports = formatRanges(DEFAULTS.tcpRanges);
  return `einat - an eBPF-based Endpoint-Independent ("full cone") NAT

USAGE:
  einat [OPTIONS]
  einat -i <name> [--nat44] [--nat66] [--ports <range>...] [--hairpin-if <name>...]
  einat -c <file>
  einat show [-i <name>]... [--proto <p>] [--addr <ip[/len]>] [--port <n>] [--top <n>] [--json]
             [--stats | --hosts]
  einat --flush (-i <name> | -c <file>)

OPTIONS:
  -h, --help                   Print this message
  -v, --version                Print the version
  -c, --config <file>          Read the configuration from a TOML file (einat-ebpf format);
                               cannot be combined with -i/--ifname
  -i, --ifname <name>          External network interface to NAT on, e.g. eth0
      --ifindex <n>            External interface by index instead of name (taken over
                               -i when both are given, as einat-ebpf does)
      --nat44                  Enable NAPT44 on the interface; on by default unless only
                               --nat66 is given
      --nat66                  Enable NAPT66 on the interface; off by default
      --ports <range> ...      External TCP/UDP port ranges, e.g. 20000-29999 40000-49999;
                               at most ${MAX_RANGES} ranges; default ${ports}
      --hairpin-if <name> ...  Internal interfaces to set up hairpin routing for, e.g. lo lan0;
                               default none (hairpin routing off)
      --internal <CIDR> ...    Only source-NAT traffic from these internal networks;
                               default: all traffic leaving the interface
      --bpf-log <level>        BPF trace log level, 0 to ${MAX_BPF_LOG_LEVEL} (0 off, 1 error, 2 warn,
                               3 info, 4 debug, 5 trace); default 0
      --bpf-loader <loader>    Accepted for einat-ebpf compatibility and ignored
                               (${BPF_LOADERS.join(", ")})
      --log <level>            Daemon log level: debug, info, warn or error; default info
                               (or $EINAT_LOG)
      --pin-dir <dir>          Folder on a bpf filesystem for the state kept across restarts,
                               one subfolder per interface; default /sys/fs/bpf/einat
      --replace                Take over interfaces a running einat serves, without a gap
                               (same arguments); without it a served interface is refused
      --metrics <addr:port>    Serve Prometheus metrics over HTTP there, e.g. 127.0.0.1:9482;
                               default off
      --flush                  Remove the pinned state (every mapping) of the -i/-c interfaces
                               and exit; refused while einat serves them

SHOW (einat show, or einat --show): list bindings and sessions from the pinned state
  -i, --ifname <name>          Only this interface (repeatable); default all
      --proto <p>              Only tcp, udp or icmp
      --addr <ip[/len]>        Only entries with an internal, external or remote address this is
                               (or, with a prefix length, in this network)
      --port <n>               Only entries with this internal, external or remote port
      --top <n>                Only the n sessions that moved the most bytes, most first
                               (needs session_counters in the configuration); no bindings.
                               With --hosts: the n addresses holding the most sessions
      --hosts                  Per internal address: its bindings, sessions and address-only
                               mappings, most sessions first (who fills the tables); the
                               filters apply to the rows summed (--addr of a remote: its
                               sessions, and no bindings, which have no remote)
      --json                   JSON instead of a table
      --stats                  Counters (packets, bytes, events, drops) instead
      --pin-dir <dir>          As above

Options marked "..." take every following value up to the next option.
See config.sample.toml for the configuration file format.
`;
}

interface ListGroup {
  flag: ListFlag;
  values: string[];
}

/** Whether `arg` is an option rather than a value: "-" and negative numbers are values. */
function isOption(arg: string): boolean {
  return arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg);
}

/**
 * Joins a negative number to the value option before it (`--ifindex -1` → `--ifindex=-1`):
 * parseArgs takes "-1" for an option and would report a missing value instead of a bad one.
 */
function joinNegatives(args: string[], options: Record<string, { type: string; short?: string }>) {
  const valueOption = (arg: string) =>
    Object.entries(options).find(([name, o]) =>
      o.type === "string" && (arg === `--${name}` || (o.short && arg === `-${o.short}`))
    )?.[0];
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") return [...out, ...args.slice(i)];
    const name = valueOption(args[i]);
    const next = args[i + 1];
    if (name && next !== undefined && /^-\d/.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else out.push(args[i]);
  }
  return out;
}

/** Lifts einat-style list options out of `args`; returns the rest and the groups. */
function extractLists(args: string[], notices: string[]): {
  rest: string[];
  lists: Map<ListFlag, string[]>;
} {
  const rest: string[] = [];
  const groups: ListGroup[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      rest.push(...args.slice(i));
      break;
    }
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if ((LIST_FLAGS as readonly string[]).includes(name)) {
      const flag = name as ListFlag;
      if (eq >= 0) {
        groups.push({ flag, values: [arg.slice(eq + 1)] });
        continue;
      }
      const values: string[] = [];
      while (i + 1 < args.length && !isOption(args[i + 1])) {
        values.push(args[++i]);
      }
      if (values.length === 0) {
        throw new ConfigError(flag, `needs at least one value, e.g. ${example(flag)}`);
      }
      groups.push({ flag, values });
      continue;
    }
    // lexopt accepts `-c=file` for short options; parseArgs would keep the "=".
    const short = /^-([ci])=(.*)$/s.exec(arg);
    if (short) {
      rest.push(`--${SHORT_TO_LONG[short[1]]}=${short[2]}`);
      continue;
    }
    rest.push(arg);
  }
  const lists = new Map<ListFlag, string[]>();
  for (const g of groups) {
    if (lists.has(g.flag)) {
      notices.push(
        `${g.flag}: given more than once; as in einat-ebpf the last one wins (${
          g.values.join(" ")
        }); list all values after a single ${g.flag}`,
      );
    }
    lists.set(g.flag, g.values);
  }
  return { rest, lists };
}

function example(flag: string): string {
  switch (flag) {
    case "--ports":
      return "--ports 20000-29999 40000-49999";
    case "--hairpin-if":
      return "--hairpin-if lo lan0";
    case "--internal":
      return "--internal 192.168.1.0/24";
    default:
      return flag;
  }
}

/** Turns a `parseArgs` error into a ConfigError naming the flag. */
function argsError(e: unknown): ConfigError {
  const msg = (e as Error).message ?? String(e);
  const code = (e as { code?: string }).code;
  const quoted = /'([^']*)'/.exec(msg)?.[1] ?? "";
  const long = /--[A-Za-z0-9-]+/.exec(quoted)?.[0];
  const short = /^-([A-Za-z])/.exec(quoted)?.[1];
  const flag = long ?? (short && SHORT_TO_LONG[short] ? `--${SHORT_TO_LONG[short]}` : quoted);
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const known = [...Object.keys(PARSE_OPTIONS), ...LIST_FLAGS.map((f) => f.slice(2))];
      const name = quoted.replace(/^-+/, "").split("=")[0];
      const guess = suggest(name, known);
      const hint = guess ? `did you mean --${guess}?` : "see --help for the list of options";
      return new ConfigError(quoted, `unknown option; ${hint}`);
    }
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return new ConfigError(
        "(arguments)",
        `unexpected argument "${quoted}"; einat takes no positional arguments (is an option ` +
          `such as -i missing before it?)`,
      );
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/does not take an argument/.test(msg)) {
        return new ConfigError(flag, "is a switch and takes no value");
      }
      return new ConfigError(flag, `needs a value, e.g. ${flag} ${valueExample(flag)}`);
    default:
      return new ConfigError(flag || "(arguments)", msg);
  }
}

function valueExample(flag: string): string {
  return ({
    "--config": "/etc/einat/config.toml",
    "--ifname": "eth0",
    "--ifindex": "2",
    "--bpf-log": "3",
    "--bpf-loader": "aya",
    "--log": "debug",
  } as Record<string, string>)[flag] ?? "<value>";
}

/**
 * Reads and parses the configuration file `file`; an unreadable one is a {@link ConfigError}
 * saying why in words ("no such file").
 */
export function readConfig(file: string, options: ParseConfigOptions = {}): ParsedConfig {
  let text: string;
  try {
    // A FIFO or a device would block the daemon (and its reloads) until someone writes to it.
    const st = Deno.statSync(file);
    if (!st.isFile && !st.isDirectory) {
      throw new ConfigError(
        "--config",
        `cannot read the config file: not a regular file`,
        file,
      );
    }
    text = Deno.readTextFileSync(file);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : e instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : (e as Error).message;
    throw new ConfigError("--config", `cannot read the config file: ${why}`, file); // names it
  }
  const parsed = parseConfigToml(text, file, options);
  // At start and at a reload alike (a file an editor left empty must not turn NAT off).
  if (parsed.config.interfaces.length === 0) {
    throw new ConfigError(
      "interfaces",
      `no [[interfaces]] entry, so there is nothing to NAT; add one, e.g. ` +
        `[[interfaces]] with if_name = "eth0" and nat44 = true`,
      file,
    );
  }
  return parsed;
}

/**
 * Parses einat's command line (without the program name).
 *
 * @returns `help` / `version` when asked for (they win over everything else),
 * otherwise the configuration to run with and notices to log.
 * @throws {ConfigError} whose `path` is the offending flag (e.g. `--ports`),
 * or a file key path for errors inside the `-c` file.
 */
export function parseCli(args: string[], options: ParseConfigOptions = {}): CliResult {
  if (args[0] === "show" || args.includes("--show")) {
    return parseShow(args[0] === "show" ? args.slice(1) : args);
  }
  const notices: string[] = [];
  const lifted = extractLists(args, notices);
  const rest = joinNegatives(lifted.rest, PARSE_OPTIONS);
  const lists = lifted.lists;

  // Help and version win even when other arguments are wrong.
  const loose = parseArgs({
    args: rest,
    options: PARSE_OPTIONS,
    strict: false,
    allowPositionals: true,
  });
  if (loose.values.help === true) return { kind: "help" };
  if (loose.values.version === true) return { kind: "version" };

  let parsed;
  try {
    const r = parseArgs({
      args: rest,
      options: PARSE_OPTIONS,
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
    parsed = r.values;
    refuseRepeats(r.tokens, PARSE_OPTIONS);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw argsError(e);
  }
  const values = {
    ...parsed,
    ifname: single(parsed.ifname, "--ifname"),
    ifindex: single(parsed.ifindex, "--ifindex"),
  };

  const logLevel = logLevelOf(values.log);

  let bpfLogLevel: number | undefined;
  if (values["bpf-log"] !== undefined) {
    const text = values["bpf-log"];
    if (!/^[0-9]+$/.test(text) || Number(text) > MAX_BPF_LOG_LEVEL) {
      throw new ConfigError(
        "--bpf-log",
        `"${text}" is not a BPF log level; expected an integer from 0 (off) to ${MAX_BPF_LOG_LEVEL} (trace)`,
      );
    }
    bpfLogLevel = Number(text);
  }

  if (values["bpf-loader"] !== undefined) {
    const loader = values["bpf-loader"];
    if (!(BPF_LOADERS as readonly string[]).includes(loader.toLowerCase())) {
      throw new ConfigError(
        "--bpf-loader",
        `"${loader}" is not a BPF loader; expected one of ${BPF_LOADERS.join(", ")}`,
      );
    }
    notices.push(`--bpf-loader: ignored; it selects one of einat-ebpf's Rust BPF loaders`);
  }

  let ifIndex: number | undefined;
  if (values.ifindex !== undefined) {
    const text = values.ifindex;
    if (!/^[1-9][0-9]*$/.test(text) || Number(text) > 0x7fffffff) {
      throw new ConfigError(
        "--ifindex",
        `"${text}" is not an interface index; expected a positive integer such as 2`,
      );
    }
    ifIndex = Number(text);
  }
  if (values.ifname !== undefined) {
    const problem = checkIfName(values.ifname);
    if (problem) throw new ConfigError("--ifname", problem);
  }

  const configFile = values.config;
  const wantsInterface = values.ifname !== undefined || ifIndex !== undefined;
  const state = stateCli(values);

  if (configFile !== undefined && wantsInterface) {
    const flag = values.ifname !== undefined ? "--ifname" : "--ifindex";
    throw new ConfigError(
      flag,
      `cannot be combined with -c/--config (einat-ebpf does not merge interface options into a ` +
        `config file); describe the interface in the file's [[interfaces]] instead, or drop -c`,
    );
  }

  if (!wantsInterface) {
    const ignored = [
      ...(values.nat44 ? ["--nat44"] : []),
      ...(values.nat66 ? ["--nat66"] : []),
      ...(bpfLogLevel !== undefined ? ["--bpf-log"] : []),
      ...lists.keys(),
    ];
    if (configFile === undefined) {
      throw new ConfigError(
        "--ifname",
        `no network interface specified; give the external interface with -i, e.g. ` +
          `einat -i eth0, or a config file with -c`,
      );
    }
    for (const flag of ignored) {
      notices.push(
        `${flag}: ignored because interface options only apply with -i/--ifname; set it in ${configFile} instead`,
      );
    }
    const parsed = readConfig(configFile, options);
    if (values.flush) {
      return {
        kind: "flush",
        pinDir: state.pinDir,
        interfaces: parsed.config.interfaces,
        logLevel,
      };
    }
    return {
      kind: "run",
      configFile,
      config: parsed.config,
      notices: [...parsed.notices, ...notices],
      logLevel,
      state,
    };
  }

  const defaults = defaultDefaults();
  const ports = lists.get("--ports");
  if (ports) {
    const ranges = parseRanges(ports, "port", { path: "--ports", indexElements: false }, {
      warn: (at, message) => notices.push(`${WARNING_PREFIX}${at}: ${message}`),
    });
    defaults.ranges.tcp = ranges.map((r) => ({ ...r }));
    defaults.ranges.udp = ranges.map((r) => ({ ...r }));
  }

  const hairpinIfs = lists.get("--hairpin-if") ?? [];
  for (const name of hairpinIfs) {
    const problem = checkIfName(name) ??
      (name === values.ifname
        ? `"${name}" is the external interface (-i); list the internal (LAN) interfaces`
        : null);
    if (problem) throw new ConfigError("--hairpin-if", problem);
  }

  const internals = (lists.get("--internal") ?? []).map((text) => {
    try {
      return parseCidr(text);
    } catch (e) {
      throw new ConfigError("--internal", (e as Error).message);
    }
  });

  const iface: InterfaceConfig = defaultInterface(defaults, options.kernelRelease);
  // Both given: the index, as einat-ebpf's command line takes it first.
  if (values.ifname !== undefined && ifIndex !== undefined) {
    notices.push(`--ifname ${values.ifname}: ignored; --ifindex ${ifIndex} names the interface`);
  } else if (values.ifname !== undefined) iface.ifName = values.ifname;
  if (ifIndex !== undefined) iface.ifIndex = ifIndex;
  iface.nat44 = values.nat44 === true || values.nat66 !== true;
  iface.nat66 = values.nat66 === true;
  if (!iface.nat44) {
    notices.push(
      `${WARNING_PREFIX}--nat66: NAT44 is off (as in einat-ebpf, --nat66 alone translates IPv6 only), so IPv4 ` +
        `leaves ${
          ifIndex !== undefined ? `interface #${ifIndex}` : values.ifname
        } untranslated; pass --nat44 too to ` +
        `translate both`,
    );
  }
  if (bpfLogLevel !== undefined) iface.bpfLogLevel = bpfLogLevel;
  // einat-ebpf builds this interface from `ConfigNetIf::default()`, where
  // prefer_tcx is false (the TOML default is true).
  iface.preferTcx = false;
  iface.snatInternals = internals;
  for (const route of [iface.ipv4HairpinRoute, iface.ipv6HairpinRoute]) {
    route.internalIfNames = [...hairpinIfs];
    route.enable = hairpinIfs.length > 0;
    route.ipProtocols = [...DEFAULTS.ipProtocols];
  }

  if (values.flush) return { kind: "flush", pinDir: state.pinDir, interfaces: [iface], logLevel };
  return { kind: "run", config: { defaults, interfaces: [iface] }, notices, logLevel, state };
}

/**
 * Refuses an option of one value given more than once: parseArgs would keep the last one
 * silently (`-c b.toml -c a.toml` ran a.toml, b.toml never read).
 */
function refuseRepeats(
  tokens: { kind: string; name?: string; rawName?: string }[] | undefined,
  options: Record<string, { type: string; multiple?: boolean }>,
): void {
  const seen = new Set<string>();
  for (const t of tokens ?? []) {
    if (t.kind !== "option" || !t.name) continue;
    const o = options[t.name];
    if (!o || o.type !== "string" || o.multiple) continue;
    if (seen.has(t.name)) {
      throw new ConfigError(`--${t.name}`, "given more than once; give it once");
    }
    seen.add(t.name);
  }
}

/** The one value of an interface flag; a repeat is refused rather than the last one taken. */
function single(values: string[] | undefined, flag: string): string | undefined {
  if (values !== undefined && values.length > 1) {
    throw new ConfigError(
      flag,
      `given twice; the command line serves one interface, use a config file (-c) with ` +
        `several [[interfaces]]`,
    );
  }
  return values?.[0];
}

function parseLogLevel(text: string | undefined, source: string): Level | undefined {
  if (text === undefined) return undefined;
  const level = text.toLowerCase() as Level;
  if (!LOG_LEVELS.includes(level)) {
    throw new ConfigError(
      source,
      `"${text}" is not a log level; expected one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  return level;
}

/** The log level `--log` gives, else `$EINAT_LOG` (read the same way: any case, checked). */
function logLevelOf(flag: string | undefined): Level | undefined {
  let env: string | undefined;
  try {
    env = Deno.env.get("EINAT_LOG") || undefined;
  } catch { /* no env permission: as if unset */ }
  return parseLogLevel(flag, "--log") ?? parseLogLevel(env, "$EINAT_LOG");
}

function checkPinDir(dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined;
  if (!dir.startsWith("/") || dir.includes("\0") || /(^|\/)\.\.?(\/|$)/.test(dir)) {
    throw new ConfigError(
      "--pin-dir",
      `"${dir}" is not an absolute folder path; e.g. --pin-dir /sys/fs/bpf/einat`,
    );
  }
  const clean = dir.replace(/\/+$/, "");
  if (clean === "") {
    throw new ConfigError(
      "--pin-dir",
      `"${dir}" is the root folder; pinned state needs a folder of its own, ` +
        `e.g. --pin-dir /sys/fs/bpf/einat`,
    );
  }
  return clean;
}

/** Parses `HOST:PORT` or `[IPv6]:PORT` of `--metrics`. */
export function parseListenAddr(text: string): { hostname: string; port: number } {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(text) ?? /^([^:\[\]]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new ConfigError(
      "--metrics",
      `"${text}" is not an address and port; e.g. --metrics 127.0.0.1:9482 or [::1]:9482`,
    );
  }
  try {
    parseAddr(m[1]);
  } catch {
    throw new ConfigError("--metrics", `"${m[1]}" is not an IP address; e.g. 127.0.0.1`);
  }
  return { hostname: m[1], port };
}

function stateCli(
  values: { "pin-dir"?: string; replace?: boolean; metrics?: string; flush?: boolean },
): StateCli {
  if (values.flush && (values.replace || values.metrics !== undefined)) {
    throw new ConfigError("--flush", "only removes pinned state; drop --replace and --metrics");
  }
  return {
    pinDir: checkPinDir(values["pin-dir"]),
    replace: values.replace === true,
    metrics: values.metrics === undefined ? undefined : parseListenAddr(values.metrics),
  };
}

/** `einat show ...` / `einat --show ...`. */
function parseShow(args: string[]): CliResult {
  let values;
  try {
    const r = parseArgs({
      args: joinNegatives(args, SHOW_OPTIONS),
      options: SHOW_OPTIONS,
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
    values = r.values;
    refuseRepeats(r.tokens, SHOW_OPTIONS);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const err = argsError(e);
    if (/unknown option/.test(err.message)) {
      throw new ConfigError(err.path, "is not an option of show; see einat --help (SHOW)");
    }
    throw err;
  }
  if (values.help) return { kind: "help" };
  const ifnames = values.ifname ?? [];
  for (const n of ifnames) {
    const problem = checkIfName(n);
    if (problem) throw new ConfigError("--ifname", problem);
  }
  let proto: ShowCli["proto"];
  if (values.proto !== undefined) {
    const p = values.proto.toLowerCase();
    if (p !== "tcp" && p !== "udp" && p !== "icmp") {
      throw new ConfigError("--proto", `"${values.proto}" is not tcp, udp or icmp`);
    }
    proto = p;
  }
  let addr: Uint8Array | undefined, addrPrefix: number | undefined;
  if (values.addr !== undefined) {
    try {
      if (values.addr.includes("/")) {
        const net = parseCidr(values.addr); // host bits ignored, as in the config
        [addr, addrPrefix] = [net.addr, net.prefixLen];
      } else addr = parseAddr(values.addr);
    } catch {
      throw new ConfigError(
        "--addr",
        `"${values.addr}" is not an IP address or network (e.g. 192.0.2.10, 192.0.2.0/24)`,
      );
    }
  }
  let port: number | undefined;
  if (values.port !== undefined) {
    if (!/^[0-9]+$/.test(values.port) || Number(values.port) > 65535) {
      throw new ConfigError("--port", `"${values.port}" is not a port (0-65535)`);
    }
    port = Number(values.port);
  }
  let top: number | undefined;
  if (values.top !== undefined) {
    if (!/^[0-9]+$/.test(values.top) || Number(values.top) < 1) {
      throw new ConfigError("--top", `"${values.top}" is not a count (1 or more)`);
    }
    if (values.stats) throw new ConfigError("--top", "lists sessions: drop --stats");
    top = Number(values.top);
  }
  if (values.hosts && values.stats) {
    throw new ConfigError("--hosts", "counts per address; --stats per interface: drop one of them");
  }
  // The counters are per interface: a row filter would be silently ignored.
  for (
    const [flag, v] of [["--proto", values.proto], ["--addr", values.addr], ["--port", values.port]]
  ) {
    if (values.stats && v !== undefined) {
      throw new ConfigError(flag!, "filters rows; --stats counts per interface: drop one of them");
    }
  }
  return {
    kind: "show",
    show: {
      pinDir: checkPinDir(values["pin-dir"]),
      ifnames,
      json: values.json === true,
      stats: values.stats === true,
      proto,
      addr,
      ...(addrPrefix !== undefined ? { addrPrefix } : {}),
      port,
      ...(top !== undefined ? { top } : {}),
      ...(values.hosts ? { hosts: true } : {}),
    },
    logLevel: logLevelOf(values.log),
  };
}
