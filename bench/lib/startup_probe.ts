/**
 * Start-up probe, run inside the router namespace by bench/startup.ts:
 * `deno run -A bench/lib/startup_probe.ts --rounds N --variants NAT66:RECORDS:PREALLOC,... [--ifname wan0]`
 * (e.g. `0:0:0,1:0:0`: NAT44, then NAT44+NAT66; RECORDS 0 keeps the default sizes).
 * With the daemon's default configuration (from `parseCli`), times what it does for one interface —
 * `loadNat` (bpf_object__load), plan + map fill, clsact attach — then detaches, and reads the
 * verifier's processed-instruction count (`verified_insns` in the program's fdinfo) and JIT sizes.
 * The variants take turns within each round, so a noisy moment hits them alike and their ratios
 * hold. Prints one JSON line: one entry per variant.
 * @module
 */

import { externalAddrs, roConfigOf } from "../../lib/daemon.ts";
import { ifNameToIndex } from "../../lib/ffi/libc.ts";
import { applyPlan, purgeStale } from "../../lib/nat/apply.ts";
import { afterAttach, syncBindingsAtStart } from "../../lib/state/serve.ts";
import { attach, detach } from "../../lib/nat/attach.ts";
import { closeNat, loadNat } from "../../lib/nat/loader.ts";
import { planInterface } from "../../lib/nat/plan.ts";
import { parseCli } from "../../lib/config/cli.ts";

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}

function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).split("\n")) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

async function progInfo(fd: number): Promise<Record<string, number>> {
  const fi = fdinfo(fd);
  const out: Record<string, number> = {
    verified_insns: Number(fi.verified_insns ?? NaN),
    id: Number(fi.prog_id),
  };
  try {
    const r = await new Deno.Command("bpftool", {
      args: ["prog", "show", "id", fi.prog_id, "-j"],
      stderr: "null",
    })
      .output();
    const j = JSON.parse(new TextDecoder().decode(r.stdout));
    out.bytes_xlated = j.bytes_xlated;
    out.bytes_jited = j.bytes_jited;
  } catch { /* bpftool missing: sizes stay unknown */ }
  return out;
}

const ifname = arg("ifname", "wan0");
const rounds = Math.min(50, Number(arg("rounds", "5")));
const ifindex = ifNameToIndex(ifname);
if (!ifindex) throw new Error(`no interface ${ifname}`);

/** One variant's configuration: the daemon's defaults (map sizes included), as `einat -i IF`
 * [`--nat44 --nat66`] gets them, with smaller maps or preallocation when asked. */
function variant(spec: string) {
  const [nat66, records, prealloc] = spec.split(":").map(Number);
  const cli = parseCli(["-i", ifname, ...(nat66 ? ["--nat44", "--nat66"] : [])]);
  if (cli.kind !== "run") throw new Error("unexpected CLI result");
  const ic = cli.config.interfaces[0];
  if (records > 0) { // smaller maps: shows what preallocating the default sizes costs at load
    ic.bindingMaxRecords = records;
    ic.ctMaxRecords = records * 2;
  }
  ic.preallocateMaps = prealloc === 1;
  return { nat66: nat66 === 1, ic, runs: [] as Record<string, number>[], progs: {} };
}

const variants = arg("variants", "0:0:0").split(",").map(variant);
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const ic = v.ic;
    const t0 = performance.now();
    const nat = await loadNat({
      ro: roConfigOf(ic),
      bindingMaxRecords: ic.bindingMaxRecords,
      ctMaxRecords: ic.ctMaxRecords,
      preallocate: ic.preallocateMaps,
    });
    const t1 = performance.now();
    try {
      // As the daemon before "einat running" (lib/daemon.ts reconcile): the plan applied and
      // stale mappings purged, the free-port hint and binding count synced, the filters
      // attached, then a first sweep (lib/state/serve.ts afterAttach); the sync and the sweep
      // only where a map was reused (here, never: nothing is pinned).
      const plan = planInterface(ic, await externalAddrs(ifname));
      applyPlan(nat.maps, plan);
      purgeStale(nat, plan);
      const bindings = syncBindingsAtStart(nat);
      const t2 = performance.now();
      const a = attach(ifindex, ifname, nat.egressFd, nat.ingressFd);
      afterAttach(nat, ifname, bindings);
      const t3 = performance.now();
      detach(a);
      const t4 = performance.now();
      v.runs.push({
        loadMs: nat.loadMs,
        loadCallMs: t1 - t0,
        applyMs: t2 - t1,
        attachMs: t3 - t2,
        detachMs: t4 - t3,
        totalMs: t3 - t0,
      });
      if (r === 0) {
        v.progs = { egress: await progInfo(nat.egressFd), ingress: await progInfo(nat.ingressFd) };
      }
    } finally {
      closeNat(nat);
    }
  }
}
console.log(JSON.stringify(
  variants.map((v) => ({
    nat66: v.nat66,
    records: v.ic.bindingMaxRecords,
    runs: v.runs,
    progs: v.progs,
  })),
));
