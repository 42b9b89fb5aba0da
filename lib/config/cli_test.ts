import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { ConfigError } from "./types.ts";
import { type CliResult, helpText, parseCli } from "./cli.ts";
import { formatCidr } from "./cidr.ts";

const K = { kernelRelease: "6.1.0" };
const cli = (...args: string[]) => parseCli(args, K);

function run(...args: string[]): Extract<CliResult, { kind: "run" }> {
  const r = cli(...args);
  if (r.kind !== "run") throw new Error(`expected run, got ${r.kind}`);
  return r;
}

function expectError(args: string[], path: string, message?: RegExp): ConfigError {
  try {
    cli(...args);
  } catch (e) {
    ok(e instanceof ConfigError, String(e));
    equal(e.path, path, e.message);
    if (message) ok(message.test(e.message), e.message);
    return e;
  }
  throw new Error(`expected an error at ${path} for ${args.join(" ")}`);
}

const tempFiles: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const f of tempFiles) Deno.removeSync(f);
});

function tempConfig(text: string): string {
  const file = Deno.makeTempFileSync({ suffix: ".toml" });
  tempFiles.push(file);
  Deno.writeTextFileSync(file, text);
  return file;
}

Deno.test("help and version", () => {
  deepStrictEqual(cli("-h"), { kind: "help" });
  deepStrictEqual(cli("--help"), { kind: "help" });
  deepStrictEqual(cli("-v"), { kind: "version" });
  deepStrictEqual(cli("--version"), { kind: "version" });
  // They win over other, even invalid, arguments.
  deepStrictEqual(cli("-i", "eth0", "--bogus", "--help"), { kind: "help" });
  deepStrictEqual(cli("--ports", "1-2", "-v"), { kind: "version" });
  deepStrictEqual(cli("-h", "-v"), { kind: "help" });
});

Deno.test("helpText lists every option with its default", () => {
  const text = helpText();
  for (
    const opt of [
      "-h, --help",
      "-v, --version",
      "-c, --config <file>",
      "-i, --ifname <name>",
      "--ifindex <n>",
      "--nat44",
      "--nat66",
      "--ports <range> ...",
      "--hairpin-if <name> ...",
      "--internal <CIDR> ...",
      "--bpf-log <level>",
      "--bpf-loader <loader>",
      "--log <level>",
    ]
  ) {
    ok(text.includes(opt), opt);
  }
  ok(text.includes("default 20000-29999"));
  ok(text.includes("default info"));
  ok(text.includes("default 0"));
  ok(text.split("\n").every((l) => l.length <= 100), "lines fit 100 columns");
});

Deno.test("-i alone: one interface with einat-ebpf's CLI defaults", () => {
  const r = run("-i", "eth0");
  equal(r.configFile, undefined);
  deepStrictEqual(r.notices, []);
  equal(r.logLevel, undefined);
  equal(r.config.interfaces.length, 1);
  const i = r.config.interfaces[0];
  equal(i.ifName, "eth0");
  equal(i.nat44, true);
  equal(i.nat66, false);
  equal(i.preferTcx, false);
  equal(i.defaultExternals, true);
  equal(i.bpfLogLevel, 0);
  equal(i.bpfFibLookupExternal, false); // kernel 6.1
  deepStrictEqual(i.defaultRanges.tcp, [{ start: 20000, end: 29999 }]);
  deepStrictEqual(r.config.defaults.ranges.udp, [{ start: 20000, end: 29999 }]);
  equal(i.ipv4HairpinRoute.enable, false);
  equal(i.ipv6HairpinRoute.enable, false);
  deepStrictEqual(i.snatInternals, []);
});

Deno.test("--nat44/--nat66 selection", () => {
  const nat = (...a: string[]) => {
    const i = run("-i", "eth0", ...a).config.interfaces[0];
    return [i.nat44, i.nat66];
  };
  deepStrictEqual(nat(), [true, false]);
  deepStrictEqual(nat("--nat44"), [true, false]);
  deepStrictEqual(nat("--nat66"), [false, true]);
  deepStrictEqual(nat("--nat44", "--nat66"), [true, true]);
});

Deno.test("--nat66 alone says NAT44 is off", () => {
  const r = run("-i", "eth0", "--nat66");
  ok(
    r.notices.some((n) =>
      /^warning: --nat66: NAT44 is off .*IPv4 leaves eth0 untranslated; pass --nat44 too/.test(n)
    ),
    r.notices.join("\n"),
  );
  const byIndex = run("--ifindex", "7", "--nat66").notices;
  ok(byIndex.some((n) => /IPv4 leaves interface #7 untranslated/.test(n)), byIndex.join("\n"));
  deepStrictEqual(run("-i", "eth0", "--nat66", "--nat44").notices, []);
  deepStrictEqual(run("-i", "eth0").notices, []);
});

Deno.test("attached values: -ieth0, --ifname=eth0, -c=file", () => {
  equal(run("-ieth0").config.interfaces[0].ifName, "eth0");
  equal(run("--ifname=eth0").config.interfaces[0].ifName, "eth0");
  const file = tempConfig(`[[interfaces]]\nif_name = "wan0"\nnat44 = true\n`);
  equal(run(`-c=${file}`).configFile, file);
});

Deno.test("--ports takes several values, replaces TCP and UDP defaults", () => {
  const r = run("-i", "eth0", "--ports", "40000-49999", "20000-29999", "--nat66");
  const want = [{ start: 20000, end: 29999 }, { start: 40000, end: 49999 }];
  deepStrictEqual(r.config.defaults.ranges.tcp, want);
  deepStrictEqual(r.config.defaults.ranges.udp, want);
  deepStrictEqual(r.config.interfaces[0].defaultRanges.tcp, want);
  deepStrictEqual(r.config.interfaces[0].defaultRanges.icmp, [{ start: 0, end: 65535 }]);
  equal(r.config.interfaces[0].nat66, true);
});

Deno.test("--ports=value takes exactly one value", () => {
  deepStrictEqual(run("-i", "eth0", "--ports=1000-2000").config.defaults.ranges.tcp, [
    { start: 1000, end: 2000 },
  ]);
  expectError(["-i", "eth0", "--ports=1000-2000", "3000-4000"], "(arguments)", /"3000-4000"/);
});

Deno.test("repeating a list option: last one wins, with a notice", () => {
  const r = run("-i", "eth0", "--ports", "1000-2000", "--ports", "3000-4000");
  deepStrictEqual(r.config.defaults.ranges.tcp, [{ start: 3000, end: 4000 }]);
  ok(r.notices.some((n) => n.startsWith("--ports: given more than once")), r.notices.join());
});

Deno.test("--hairpin-if and --internal take several values", () => {
  const r = run(
    "--hairpin-if",
    "lo",
    "lan0",
    "--internal",
    "192.168.1.7/24",
    "fd00::/64",
    "-i",
    "wan0",
  );
  const i = r.config.interfaces[0];
  equal(i.ifName, "wan0");
  for (const route of [i.ipv4HairpinRoute, i.ipv6HairpinRoute]) {
    equal(route.enable, true);
    deepStrictEqual(route.internalIfNames, ["lo", "lan0"]);
    deepStrictEqual(route.ipProtocols, ["tcp", "udp", "icmp"]);
    equal(route.ipRulePref, 100);
    equal(route.tableId, 4787);
  }
  deepStrictEqual(i.snatInternals.map(formatCidr), ["192.168.1.0/24", "fd00::/64"]);
});

Deno.test("a lone - counts as a value, -- ends the list", () => {
  expectError(["-i", "eth0", "--internal", "10.0.0.0/8", "-"], "--internal", /"-"/);
  expectError(["-i", "eth0", "--hairpin-if", "lo", "--", "x"], "(arguments)");
});

Deno.test("--bpf-log, --bpf-loader, --log, --ifindex", () => {
  let r = run("-i", "eth0", "--bpf-log", "5", "--log", "DEBUG");
  equal(r.config.interfaces[0].bpfLogLevel, 5);
  equal(r.logLevel, "debug");
  r = run("-i", "eth0", "--bpf-loader", "libbpf");
  ok(r.notices.some((n) => n.startsWith("--bpf-loader: ignored")));
  r = run("--ifindex", "7");
  equal(r.config.interfaces[0].ifIndex, 7);
  equal(r.config.interfaces[0].ifName, undefined);
  // both: the index, as einat-ebpf's command line (the name said to be ignored)
  r = run("--ifindex", "7", "-i", "eth0");
  equal(r.config.interfaces[0].ifIndex, 7);
  equal(r.config.interfaces[0].ifName, undefined);
  ok(r.notices.some((n) => /^--ifname eth0: ignored; --ifindex 7/.test(n)), r.notices.join("\n"));
});

Deno.test("-c: loads the file, notices from the file are kept", () => {
  const file = tempConfig(
    `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nbpf_loader = "aya"\n`,
  );
  const r = run("-c", file, "--log", "warn");
  equal(r.configFile, file);
  equal(r.config.interfaces[0].ifName, "wan0");
  equal(r.config.interfaces[0].preferTcx, true);
  equal(r.logLevel, "warn");
  ok(r.notices.some((n) => n.startsWith(`${file}: interfaces[0].bpf_loader: ignored`)));
});

Deno.test("-c with interface flags but no -i: flags ignored with notices", () => {
  const file = tempConfig(`[[interfaces]]\nif_name = "wan0"\nnat44 = true\n`);
  const r = run("-c", file, "--ports", "1000-2000", "--nat66", "--bpf-log", "2");
  deepStrictEqual(r.config.defaults.ranges.tcp, [{ start: 20000, end: 29999 }]);
  equal(r.config.interfaces[0].nat66, false);
  for (const flag of ["--ports", "--nat66", "--bpf-log"]) {
    ok(r.notices.some((n) => n.startsWith(`${flag}: ignored`)), flag);
  }
});

Deno.test("-c errors: missing file, bad file, no interfaces, combined with -i", () => {
  const missing = "/nonexistent/einat.toml";
  const e = expectError(["-c", missing], "--config", /no such file/);
  equal(e.file, missing);
  ok(e.message.includes(missing));

  const bad = tempConfig(`[[interfaces]]\nif_name = "wan0"\nnat44 = 1\n`);
  const e2 = expectError(["-c", bad], "interfaces[0].nat44");
  equal(e2.file, bad);

  const empty = tempConfig(`[defaults]\n`);
  equal(expectError(["-c", empty], "interfaces", /no \[\[interfaces\]\] entry/).file, empty);

  const good = tempConfig(`[[interfaces]]\nif_name = "wan0"\nnat44 = true\n`);
  expectError(["-c", good, "-i", "eth0"], "--ifname", /cannot be combined with -c/);
  expectError(["--ifindex", "2", "-c", good], "--ifindex", /cannot be combined/);

  // A FIFO is refused, not read (the read would block until someone writes to it).
  const dir = Deno.makeTempDirSync();
  try {
    const fifo = `${dir}/einat.toml`;
    new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
    expectError(["-c", fifo], "--config", /not a regular file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("errors name the flag", () => {
  expectError([], "--ifname", /no network interface specified/);
  expectError(["--nat44"], "--ifname", /no network interface/);
  expectError(["--bogus"], "--bogus", /unknown option; see --help/);
  expectError(["-i", "eth0", "--hairpin", "lo"], "--hairpin", /did you mean --hairpin-if\?/);
  expectError(["-x"], "-x", /unknown option/);
  expectError(["eth0"], "(arguments)", /unexpected argument "eth0"/);
  expectError(["-i"], "--ifname", /needs a value, e.g. --ifname eth0/);
  expectError(["-c"], "--config", /needs a value/);
  expectError(["-i", "--nat44"], "--ifname", /needs a value/);
  // A negative number is a bad value, not a missing one.
  expectError(["--ifindex", "-1"], "--ifindex", /"-1" is not an interface index/);
  expectError(["-i", "eth0", "--bpf-log", "-2"], "--bpf-log", /-2/);
  expectError(["-i", "eth0", "--ports", "-5"], "--ports", /-5/);
  expectError(["-i", "eth0", "--ports", "-5"], "--ports", /^(?!.*at least one value)/);
  expectError(["-i", "eth0", "--nat44=yes"], "--nat44", /takes no value/);
  expectError(["-i", "eth0", "--ports"], "--ports", /at least one value, e.g. --ports 20000-29999/);
  expectError(["-i", "eth0", "--ports", "-i"], "--ports", /at least one value/);
  expectError(["-i", "eth0", "--hairpin-if"], "--hairpin-if", /--hairpin-if lo lan0/);
  expectError(["-i", "eth0", "--internal"], "--internal", /--internal 192.168.1.0\/24/);
  expectError(["-i", "a-name-longer-than-15"], "--ifname", /15 bytes/);
  expectError(["--ifindex", "0"], "--ifindex", /positive integer/);
  expectError(["--ifindex", "eth0"], "--ifindex", /positive integer/);
  expectError(["-i", "eth0", "--bpf-log", "6"], "--bpf-log", /0 \(off\) to 5 \(trace\)/);
  expectError(["-i", "eth0", "--bpf-log", "x"], "--bpf-log");
  expectError(["-i", "eth0", "--bpf-loader", "bcc"], "--bpf-loader", /aya, libbpf, libbpf-skel/);
  expectError(["-i", "eth0", "--log", "verbose"], "--log", /debug, info, warn, error/);
  expectError(["-i", "eth0", "--hairpin-if", "lo", "bad/name"], "--hairpin-if", /"\/"/);
  expectError(
    ["-i", "eth0", "--hairpin-if", "lan0", "eth0"],
    "--hairpin-if",
    /"eth0" is the external interface \(-i\); list the internal \(LAN\) interfaces/,
  );
  expectError(["-i", "eth0", "--internal", "10.0.0.0"], "--internal", /10.0.0.0\/32/);
});

Deno.test("--ports validation errors", () => {
  expectError(["-i", "eth0", "--ports", "0-100"], "--ports", /port 0 cannot be mapped/);
  expectError(["-i", "eth0", "--ports", "300-200"], "--ports", /reversed/);
  expectError(["-i", "eth0", "--ports", "1-1", "3-3", "5-5", "7-7", "9-9"], "--ports", /at most 4/);
  expectError(["-i", "eth0", "--ports", "abc"], "--ports", /not a range/);
  // Overlapping ranges are merged, as einat-ebpf merges them, with a warning.
  const merged = run("-i", "eth0", "--ports", "1000-2000", "1500-2500");
  deepStrictEqual(merged.config.defaults.ranges.udp, [{ start: 1000, end: 2500 }]);
  ok(
    merged.notices.includes(
      'warning: --ports: range "1500-2500" overlaps "1000-2000" (element 0); taken as "1000-2500", as einat-ebpf does',
    ),
    merged.notices.join("\n"),
  );
  // Single ports are accepted.
  deepStrictEqual(run("-i", "eth0", "--ports", "53").config.defaults.ranges.tcp, [
    { start: 53, end: 53 },
  ]);
});

Deno.test("state flags: --pin-dir, --replace, --metrics", () => {
  const r = run(
    "-i",
    "eth0",
    "--pin-dir",
    "/run/einat/bpffs/",
    "--replace",
    "--metrics",
    "127.0.0.1:9482",
  );
  deepStrictEqual(r.state, {
    pinDir: "/run/einat/bpffs",
    replace: true,
    metrics: { hostname: "127.0.0.1", port: 9482 },
  });
  deepStrictEqual(run("-i", "eth0").state, {
    pinDir: undefined,
    replace: false,
    metrics: undefined,
  });
  deepStrictEqual(run("-i", "eth0", "--metrics", "[::1]:9100").state?.metrics, {
    hostname: "::1",
    port: 9100,
  });
  const file = tempConfig(`[[interfaces]]\nif_name = "eth0"\nnat44 = true\n`);
  equal(run("-c", file, "--replace").state?.replace, true);
  expectError(["-i", "eth0", "--pin-dir", "relative/dir"], "--pin-dir", /absolute/);
  expectError(["-i", "eth0", "--pin-dir", "/a/../b"], "--pin-dir", /absolute/);
  expectError(["-i", "eth0", "--pin-dir", "/"], "--pin-dir", /the root folder/);
  expectError(["-i", "eth0", "--pin-dir", "//"], "--pin-dir", /the root folder/);
  expectError(["-i", "eth0", "--metrics", "9482"], "--metrics", /127\.0\.0\.1:9482/);
  expectError(["-i", "eth0", "--metrics", "localhost:9482"], "--metrics", /not an IP address/);
  expectError(["-i", "eth0", "--metrics", "127.0.0.1:0"], "--metrics");
  expectError(["-i", "eth0", "--metrics", "127.0.0.1:70000"], "--metrics");
  expectError(["-i", "eth0", "--replace=yes"], "--replace", /switch/);
  expectError(["-i", "eth0", "--pin-dri", "/x"], "--pin-dri", /did you mean --pin-dir/);
});

Deno.test("--flush: the -i or -c interfaces, nothing else", () => {
  const r = cli("--flush", "-i", "wan0", "--pin-dir", "/run/x");
  equal(r.kind, "flush");
  if (r.kind !== "flush") return;
  equal(r.pinDir, "/run/x");
  deepStrictEqual(r.interfaces.map((i) => i.ifName), ["wan0"]);
  const file = tempConfig(
    `[[interfaces]]\nif_name = "a0"\nnat44 = true\n[[interfaces]]\nif_name = "b0"\nnat44 = true\n`,
  );
  const c = cli("--flush", "-c", file);
  deepStrictEqual(c.kind === "flush" && c.interfaces.map((i) => i.ifName), ["a0", "b0"]);
  expectError(["--flush"], "--ifname", /no network interface/);
  expectError(["--flush", "-i", "wan0", "--replace"], "--flush", /only removes/);
});

Deno.test("show: subcommand and --show flag, filters, --json, --stats", () => {
  const s = cli("show");
  deepStrictEqual(s, {
    kind: "show",
    show: {
      pinDir: undefined,
      ifnames: [],
      json: false,
      stats: false,
      proto: undefined,
      addr: undefined,
      port: undefined,
    },
    logLevel: undefined,
  });
  const f = cli(
    "--show",
    "-i",
    "wan0",
    "-i",
    "wan1",
    "--proto",
    "UDP",
    "--addr",
    "2001:db8::1",
    "--port",
    "40000",
    "--json",
    "--pin-dir",
    "/run/p",
  );
  if (f.kind !== "show") throw new Error(f.kind);
  deepStrictEqual(f.show.ifnames, ["wan0", "wan1"]);
  equal(f.show.proto, "udp");
  equal(f.show.addr?.length, 16);
  equal(f.show.port, 40000);
  equal(f.show.json, true);
  equal(f.show.pinDir, "/run/p");
  const st = cli("show", "--stats");
  equal(st.kind === "show" && st.show.stats, true);
  deepStrictEqual(cli("show", "--help"), { kind: "help" });
  expectError(["show", "--proto", "sctp"], "--proto", /tcp, udp or icmp/);
  expectError(["show", "--addr", "192.0.2.300"], "--addr", /not an IP address or network/);
  const net = cli("show", "--addr", "192.0.2.77/24");
  if (net.kind !== "show") throw new Error(net.kind);
  deepStrictEqual([net.show.addr?.join("."), net.show.addrPrefix], ["192.0.2.0", 24]);
  expectError(["show", "--port", "65536"], "--port");
  const top = cli("show", "--top", "5");
  equal(top.kind === "show" && top.show.top, 5);
  expectError(["show", "--top", "0"], "--top", /1 or more/);
  expectError(["show", "--top", "x"], "--top", /not a count/);
  expectError(["show", "--top", "3", "--stats"], "--top", /drop --stats/);
  const hosts = cli("show", "--hosts", "--top", "2");
  equal(hosts.kind === "show" && hosts.show.hosts, true);
  equal(hosts.kind === "show" && hosts.show.top, 2);
  expectError(["show", "--hosts", "--stats"], "--hosts", /drop one of them/);
  expectError(["show", "--nat66"], "--nat66", /not an option of show/);
  expectError(["show", "extra"], "(arguments)");
  ok(helpText().includes("einat show"));
  for (
    const opt of [
      "--pin-dir <dir>",
      "--replace",
      "--metrics <addr:port>",
      "--flush",
      "--json",
      "--stats",
    ]
  ) {
    ok(helpText().includes(opt), opt);
  }
});

Deno.test("$EINAT_LOG is read as --log is (any case, checked); --log wins", () => {
  const before = Deno.env.get("EINAT_LOG");
  try {
    Deno.env.set("EINAT_LOG", "DEBUG");
    equal(run("-i", "eth0").logLevel, "debug");
    equal(run("-i", "eth0", "--log", "warn").logLevel, "warn");
    Deno.env.set("EINAT_LOG", "loud");
    expectError(["-i", "eth0"], "$EINAT_LOG", /"loud" is not a log level/);
    equal(run("-i", "eth0", "--log", "error").logLevel, "error", "the flag first");
    Deno.env.delete("EINAT_LOG");
    equal(run("-i", "eth0").logLevel, undefined);
  } finally {
    if (before === undefined) Deno.env.delete("EINAT_LOG");
    else Deno.env.set("EINAT_LOG", before);
  }
});

Deno.test("a repeated -i/--ifname or --ifindex is refused, not the last one taken", () => {
  const twice = /given twice; the command line serves one interface, use a config file \(-c\)/;
  expectError(["-i", "wan0", "-i", "lan0"], "--ifname", twice);
  expectError(["-i", "wan0", "--ifname=lan0"], "--ifname", twice);
  expectError(["-iwan0", "-i", "wan0"], "--ifname", /several \[\[interfaces\]\]/);
  expectError(["--ifindex", "2", "--ifindex", "3"], "--ifindex", twice);
  expectError(["--ifindex", "2", "-i", "a", "--ifindex=2"], "--ifindex", twice);
  // One of each is still the einat-ebpf way (the index wins, with a notice).
  equal(run("-i", "eth0", "--ifindex", "7").config.interfaces[0].ifIndex, 7);
  // show takes several -i.
  equal(cli("show", "-i", "a", "-i", "b").kind, "show");
});

Deno.test("an option of one value given twice is refused, not the last one taken (-c, --pin-dir, --log, --metrics; show's too)", () => {
  const twice = /given more than once; give it once/;
  expectError(["-c", "/b.toml", "-c", "/a.toml"], "--config", twice);
  expectError(["-c", "/b.toml", "--config=/a.toml"], "--config", twice);
  expectError(
    ["-i", "eth0", "--pin-dir", "/sys/fs/bpf/a", "--pin-dir=/sys/fs/bpf/b"],
    "--pin-dir",
    twice,
  );
  expectError(["-i", "eth0", "--bpf-log", "1", "--bpf-log", "2"], "--bpf-log", twice);
  expectError(["-i", "eth0", "--metrics", ":1", "--metrics", ":2"], "--metrics", twice);
  expectError(["show", "--port", "1", "--port", "2"], "--port", twice);
});

Deno.test("show --stats with a row filter is refused, not silently ignored", () => {
  for (const [flag, v] of [["--proto", "udp"], ["--addr", "192.0.2.1"], ["--port", "9"]]) {
    expectError(["show", "--stats", flag, v], flag, /--stats counts per interface/);
  }
});
