/**
 * Packaging: Nix files parse, the systemd unit verifies and its capability set is both enough
 * and least, `deno run main.ts -v` and (with DENORT_BIN) the compiled executable print the
 * version, and scripts/compile.sh fails with one line when it has no usable denort.
 * Checks whose tool is missing are skipped with a printed reason.
 * @module
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { run, runResult, spawnInNs, testPrefix } from "./lib/netns.ts";
import { ROOT, V8_FLAGS } from "./lib/einat.ts";
import denoJson from "../deno.json" with { type: "json" };
import { embeddedObject } from "../lib/nat/loader.ts";

const UNIT = `${ROOT}docs/examples/systemd/einat.service`;
const MODULE = `${ROOT}nix/module.nix`;

function skip(name: string, reason: string): void {
  console.log(`SKIPPED ${name}: ${reason}`);
}

async function which(cmd: string): Promise<string | null> {
  const r = await runResult(["sh", "-c", `command -v ${cmd}`]);
  return r.code === 0 ? r.stdout.trim() : null;
}

function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** Every .nix file of the project (not under node_modules/, tools/, dist/). */
function nixFiles(dir = ROOT, rel = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir + rel)) {
    const p = rel + e.name;
    if (e.isDirectory) {
      if (["node_modules", "tools", "dist", ".git"].includes(e.name)) continue;
      out.push(...nixFiles(dir, p + "/"));
    } else if (e.isFile && e.name.endsWith(".nix")) {
      out.push(p);
    }
  }
  return out.sort();
}

const NIX_ENV = { NIX_CONFIG: "build-users-group =", HOME: Deno.makeTempDirSync() };

Deno.test("packaging: every .nix file parses (nix-instantiate --parse)", async () => {
  const files = nixFiles();
  for (const f of ["flake.nix", "nix/package.nix", "nix/module.nix"]) {
    assert(files.includes(f), `${f} is missing`);
  }
  if (!await which("nix-instantiate")) {
    return skip("nix parse", "nix-instantiate not installed (Debian package nix-bin)");
  }
  for (const f of files) {
    const r = await runResult(
      [
        "env",
        ...Object.entries(NIX_ENV).map(([k, v]) => `${k}=${v}`),
        "nix-instantiate",
        "--parse",
        ROOT + f,
      ],
    );
    assertEquals(r.code, 0, `${f} does not parse:\n${r.stderr}`);
  }
});

Deno.test("packaging: flake metadata and deno.lock npm keys evaluate without nixpkgs", async () => {
  if (!await which("nix-instantiate")) {
    return skip("nix eval", "nix-instantiate not installed (Debian package nix-bin)");
  }
  // The same pattern nix/package.nix uses to derive npm tarball URLs from deno.lock.
  const expr = `
    let
      flake = import ${ROOT}flake.nix;
      lock = builtins.fromJSON (builtins.readFile ${ROOT}deno.lock);
      keys = builtins.attrNames (lock.npm or { });
      bad = builtins.filter (k: builtins.match "(@?[^@]+)@([^_]+).*" k == null) keys;
    in {
      description = flake.description;
      inputs = builtins.attrNames flake.inputs;
      inherit bad;
      integrity = builtins.all (k: lock.npm.\${k} ? integrity) keys;
    }`;
  const r = await runResult([
    "env",
    ...Object.entries(NIX_ENV).map(([k, v]) => `${k}=${v}`),
    "nix-instantiate",
    "--eval",
    "--strict",
    "--json",
    "-E",
    expr,
  ]);
  assertEquals(r.code, 0, r.stderr);
  const v = JSON.parse(r.stdout);
  assertEquals(v.inputs, ["nixpkgs"]);
  assertEquals(v.bad, []);
  assertEquals(v.integrity, true);
  assert(/einat/.test(v.description));
});

Deno.test("packaging: deno run main.ts -v prints the deno.json version", async () => {
  const r = await runResult([Deno.execPath(), "run", "-A", `${ROOT}main.ts`, "-v"]);
  assertEquals(r.code, 0, r.stderr);
  const line = r.stdout.trim();
  assert(line.startsWith(`einat ${denoJson.version}`), line);
  assert(!line.includes("\n"), line);
});

Deno.test("packaging: the start task, the tests' daemon and the executable run with one set of V8 flags", async () => {
  const compiled = (await run(["bash", `${ROOT}scripts/compile.sh`, "--print-v8-flags"])).trim();
  assertEquals(compiled, V8_FLAGS);
  assertEquals(denoJson.tasks.start, `deno run -A ${V8_FLAGS} main.ts`);
});

Deno.test("packaging: the embedded BPF objects are the built bpf/einat.bpf.o and einat_compat.bpf.o", () => {
  for (const [csum, file] of [["inline", "einat"], ["helpers", "einat_compat"]] as const) {
    const bytes = embeddedObject(csum);
    assertEquals(Array.from(bytes.subarray(0, 4)), [0x7f, 0x45, 0x4c, 0x46]); // ELF
    assertEquals(bytes[18] | bytes[19] << 8, 247); // EM_BPF
    assertEquals(bytes, Deno.readFileSync(`${ROOT}bpf/${file}.bpf.o`));
  }
});

Deno.test("packaging: compile.sh names an unusable DENORT_BIN in one line", async () => {
  for (
    const [denort, pattern] of [
      [
        "/nonexistent/denort",
        /^compile: DENORT_BIN=\/nonexistent\/denort is not an executable file$/,
      ],
      [Deno.execPath(), /^compile: DENORT_BIN=.* is the full deno CLI, not denort: use denort /],
    ] as const
  ) {
    const r = await runResult([
      "env",
      `DENORT_BIN=${denort}`,
      "bash",
      `${ROOT}scripts/compile.sh`,
      "--output",
      "/nonexistent/einat",
    ]);
    assertEquals(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assert(pattern.test(lines[0]), lines[0]);
  }
});

// Without DENORT_BIN deno compile would download denort, which these machines cannot reach:
// reported as ignored, not passed.
Deno.test({
  name: "packaging: deno compile with DENORT_BIN builds an einat that prints its version",
  ignore: !Deno.env.get("DENORT_BIN"),
  fn: compileTest,
});

async function compileTest(): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "einat-compile-test-" });
  try {
    const out = `${dir}/einat`;
    const r = await runResult(["bash", `${ROOT}scripts/compile.sh`, "--output", out], {
      timeoutMs: 300_000,
    });
    assertEquals(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const v = await runResult([out, "-v"]);
    assertEquals(v.code, 0, v.stderr);
    assert(v.stdout.startsWith(`einat ${denoJson.version}`), v.stdout);
    if (Deno.readTextFileSync(`${ROOT}main.ts`).includes("BUILD_INFO")) {
      const describe =
        (await runResult(["git", "-C", ROOT, "describe", "--tags", "--always", "--dirty"])).stdout
          .trim();
      if (describe) assert(v.stdout.includes(describe), `${v.stdout} lacks ${describe}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** The values of `key=` lines of the unit, split on spaces. */
function unitList(text: string, key: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${key}=`)).flatMap((l) =>
    l.slice(key.length + 1).trim().split(/\s+/)
  ).filter(Boolean);
}

Deno.test("packaging: the systemd unit passes systemd-analyze verify", async () => {
  const text = Deno.readTextFileSync(UNIT);
  assertEquals(unitList(text, "Restart"), ["on-failure"]);
  assert(/^ExecReload=.*-HUP \$MAINPID$/m.test(text), "ExecReload sends SIGHUP");
  if (!await which("systemd-analyze")) {
    return skip("systemd-analyze verify", "systemd-analyze not installed");
  }
  const dir = Deno.makeTempDirSync({ prefix: "einat-unit-" });
  try {
    // verify wants ExecStart to exist: point it at an executable that does.
    Deno.writeTextFileSync(
      `${dir}/einat.service`,
      text.replaceAll("/usr/local/bin/einat", Deno.execPath()),
    );
    const r = await runResult(["systemd-analyze", "verify", `${dir}/einat.service`]);
    assertEquals(r.code, 0, r.stderr);
    const unitWarnings = r.stderr.split("\n").filter((l) => l.includes("einat.service"));
    assertEquals(unitWarnings, []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("packaging: the unit and the NixOS module grant the same capabilities", () => {
  const unit = Deno.readTextFileSync(UNIT);
  const bounding = unitList(unit, "CapabilityBoundingSet").sort();
  assertEquals(unitList(unit, "AmbientCapabilities").sort(), bounding);
  const nix = Deno.readTextFileSync(MODULE);
  const block = nix.match(/capabilities = \[([^\]]*)\]/);
  assert(block, "capabilities list in nix/module.nix");
  assertEquals([...block[1].matchAll(/"(CAP_[A-Z_]+)"/g)].map((m) => m[1]).sort(), bounding);
});

/** Starts einat with `caps` only (root, bounding set = caps) in `ns`; true when it runs. */
async function runsWithCaps(
  ns: string,
  caps: string[],
  perms: string[],
): Promise<{ ok: boolean; log: string }> {
  const set = ["-all", ...caps.map((c) => "+" + c.replace(/^CAP_/, "").toLowerCase())].join(",");
  const p = spawnInNs(ns, [
    "setpriv",
    `--inh-caps=${set}`,
    `--bounding-set=${set}`,
    Deno.execPath(),
    "run",
    "--no-prompt",
    ...perms,
    `${ROOT}main.ts`,
    "-i",
    "veth0",
  ], { cwd: ROOT, killAfterMs: 60_000 });
  const until = Date.now() + 20_000;
  while (p.running() && !/einat running/.test(p.stderrText()) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const ok = /einat running/.test(p.stderrText());
  p.kill("SIGTERM");
  const r = await p.output(10_000);
  if (ok) assertEquals(r.code, 0, r.stderr);
  return { ok, log: r.stderr };
}

Deno.test("packaging: the unit's capabilities are enough and each is needed", async () => {
  if (!isRoot()) return skip("capabilities", "needs root");
  for (const tool of ["ip", "setpriv"]) {
    if (!await which(tool)) return skip("capabilities", `${tool} not installed`);
  }
  const caps = unitList(Deno.readTextFileSync(UNIT), "CapabilityBoundingSet");
  const perms = (await run(["bash", `${ROOT}scripts/compile.sh`, "--print-permissions"])).trim()
    .split(/\s+/);
  const ns = `${testPrefix()}-pkg${crypto.getRandomValues(new Uint16Array(1))[0].toString(16)}`;
  await run(["ip", "netns", "add", ns]);
  try {
    for (
      const cmd of [
        ["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
        ["addr", "add", "203.0.113.2/24", "dev", "veth0"],
        ["addr", "add", "203.0.113.1/24", "dev", "veth1"],
        ["link", "set", "veth0", "up"],
        ["link", "set", "veth1", "up"],
      ]
    ) await run(["ip", "-n", ns, ...cmd]);

    const all = await runsWithCaps(ns, caps, perms);
    assert(
      all.ok,
      `einat does not start with ${caps.join(" ")} and ${perms.join(" ")}:\n${all.log}`,
    );
    for (const c of caps) {
      const less = caps.filter((x) => x !== c);
      const r = await runsWithCaps(ns, less, perms);
      assert(!r.ok, `einat starts without ${c}: ${caps.join(" ")} is not the least set`);
    }
    const filters = await run([
      "ip",
      "netns",
      "exec",
      ns,
      "tc",
      "filter",
      "show",
      "dev",
      "veth0",
      "ingress",
    ]);
    assertEquals(filters.trim(), "", "filters left behind");
  } finally {
    await runResult(["ip", "netns", "del", ns]);
  }
});
