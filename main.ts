/**
 * einat: an eBPF endpoint-independent NAT. Entry point: CLI → config → plan
 * → apply → wait → clean up.
 * @module
 */

import denoJson from "./deno.json" with { type: "json" };
import { helpText, parseCli } from "./lib/config/cli.ts";
import { ConfigError } from "./lib/config/types.ts";
import { noticeLevel } from "./lib/config/toml.ts";
import { InterfaceError, type Served, startInterface, stopServing } from "./lib/daemon.ts";
import { follow } from "./lib/watch.ts";
import { restoreLocalRules } from "./lib/hairpin.ts";
import { catchSignals, reload, retryPending } from "./lib/lifecycle.ts";
import { BpfError, libbpfVersion, routeLibbpfPrintToLog } from "./lib/ffi/libbpf.ts";
import * as log from "./lib/log.ts";
import { BUILD_INFO } from "./lib/build_info.ts";
import { checkRuntimeLibraries } from "./lib/deps.ts";
import { BusyError, deferHandOvers } from "./lib/nat/attach.ts";
import { startSweeper, type Sweeper } from "./lib/nat/sweep.ts";
import { runShow } from "./lib/state/show.ts";
import { runFlush } from "./lib/state/flush.ts";
import { configureState, DEFAULT_PIN_ROOT } from "./lib/state/options.ts";
import { bindWhenFree, type MetricsServer, startMetrics, targetsOf } from "./lib/state/metrics.ts";
import { StateError } from "./lib/state/pin.ts";
import { checkKernel, checkPrivileges, EnvError } from "./lib/preflight.ts";
import { fixMmapThreshold } from "./lib/ffi/libc.ts";
import { releaseMemory } from "./lib/memory.ts";
import { notifyReady, notifyReloading, notifyStopping } from "./lib/notify.ts";

/** Version string printed by `-v`. */
export function versionString(): string {
  let lib = "libbpf unavailable";
  try {
    lib = `libbpf ${libbpfVersion()}`;
  } catch { /* reported when needed */ }
  const git = BUILD_INFO.describe ? `, ${BUILD_INFO.describe}` : "";
  return `einat ${denoJson.version} (deno ${Deno.version.deno}${git}, ${lib})`;
}

function fail(msg: string): number {
  console.error(`einat: ${msg}`);
  return 2;
}

/** Runs einat with `args`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  let cli;
  try {
    cli = parseCli(args);
  } catch (e) {
    if (e instanceof ConfigError) return fail(e.message);
    throw e;
  }
  if (cli.kind === "help") {
    console.log(helpText());
    return 0;
  }
  if (cli.kind === "version") {
    console.log(versionString());
    return 0;
  }
  if (cli.logLevel) log.setLevel(cli.logLevel);
  if (cli.kind === "show") return runShow(cli.show);
  if (cli.kind === "flush") return runFlush(cli.pinDir, cli.interfaces);
  // Caught from here on: a signal while einat starts is taken once it runs, not a kill half-way
  // through (lib/lifecycle.ts); SIGHUP's default would end the process.
  const signals = catchSignals();
  for (const n of cli.notices) log.log(noticeLevel(n), n);
  configureState({
    pinRoot: cli.state?.pinDir ?? DEFAULT_PIN_ROOT,
    replace: cli.state?.replace ?? false,
  });

  try {
    checkPrivileges();
    checkKernel();
    checkRuntimeLibraries();
    routeLibbpfPrintToLog();
    // The largest blocks of a load (object images, the kernel BTF's string table) are
    // transient: with a fixed threshold they get pages of their own and leave the RSS when freed.
    fixMmapThreshold(128 << 10);
    // Start-up's pages (the loader's relocations, V8's snapshot, the modules' first run) leave
    // now, before the loads add their own peak (lib/memory.ts).
    releaseMemory();
  } catch (e) {
    signals.close();
    if (e instanceof EnvError || e instanceof Error) return fail(e.message);
    throw e;
  }

  try {
    let served: Served[] = [];
    let metrics: MetricsServer | null = null;
    let sweeper: Sweeper | null = null;
    if (cli.state?.metrics) {
      try {
        metrics = startMetrics(
          cli.state.metrics,
          () => targetsOf(served),
          () => sweeper?.stats() ?? null,
        );
      } catch (e) {
        const { hostname, port } = cli.state.metrics;
        if (!(e instanceof Deno.errors.AddrInUse) || !cli.state.replace) {
          return fail(`--metrics ${hostname}:${port}: ${(e as Error).message}`);
        }
        // The einat replaced holds the port until it exits, right after the take-over.
        const addr = cli.state.metrics;
        log.info("metrics port busy: bound once the replaced einat exits", {
          listen: `${hostname}:${port}`,
        });
        bindWhenFree(
          () => startMetrics(addr, () => targetsOf(served), () => sweeper?.stats() ?? null),
          () => sweeper !== null, // set once every interface is taken over, unset when stopping
          (m) => metrics = m,
          `${hostname}:${port}`,
        );
      }
    }
    const errors: string[] = [];
    // --replace: the einat being replaced serves every interface until this one has them all.
    const endTakeOvers = deferHandOvers();
    for (const ic of cli.config.interfaces) {
      try {
        served.push(await startInterface(ic, cli.config.defaults, served));
      } catch (e) {
        let msg = e instanceof InterfaceError || e instanceof BusyError || e instanceof StateError
          ? e.message
          : `${ic.ifName ?? ic.ifIndex}: ${(e as Error).message}`;
        if (e instanceof BpfError) {
          // The verifier log goes to the log; the error stays one line.
          log.error("the kernel refused the BPF programs", { verifier_log: e.log ?? "" });
          msg = `${ic.ifName ?? ic.ifIndex}: ${msg.split("\n")[0].replace(/^[^:]+: /, "")}` +
            " (verifier log above)";
        }
        log.error("interface not served", { reason: msg });
        errors.push(msg);
      }
    }
    endTakeOvers();
    if (served.length === 0) {
      await restoreLocalRules(); // a start that failed after hairpin routing moved it
      await metrics?.close();
      return fail(errors.join("; ") || "no interface configured");
    }
    const follower = follow(() => served, () => retryPending(served));
    sweeper = startSweeper(() => served); // sessions carry no timer (bpf/lib/ct.h)
    await follower.resync(); // changes between start-up and the first event
    // What is attached, and what waits for its interface (or an address).
    const running = () => {
      const names = (on: boolean) =>
        served.filter((s) => (s.attachment !== null) === on).map((s) => s.ifname).join(",");
      return { interfaces: names(true), ...(names(false) ? { waiting: names(false) } : {}) };
    };
    const status = () =>
      Object.entries(running()).map(([k, v]) => `${k === "interfaces" ? "serving" : k} ${v}`)
        .join("; ");
    log.info("einat running", running());
    notifyReady(status());

    for await (const sig of signals) {
      if (sig !== "SIGHUP") {
        log.info("stopping", { signal: sig });
        notifyStopping();
        break;
      }
      if (!cli.configFile) {
        log.info("SIGHUP: no configuration file to reload");
        continue;
      }
      const file = cli.configFile;
      notifyReloading();
      served = await follower.exclusive(() => reload(file, served));
      await follower.resync();
      notifyReady(status());
    }
    await sweeper.stop();
    sweeper = null;
    await follower.stop();
    await metrics?.close();
    let handedOver = false;
    for (const s of served) handedOver = (await stopServing(s)) || handedOver;
    if (!handedOver) await restoreLocalRules(); // after --replace the new einat relies on them
    log.info("einat stopped", { code: 0 });
    return 0;
  } finally {
    signals.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
