/**
 * The verifier prunes code by the read-only configuration, so an object can
 * load with one interface's settings and be refused with another's (a stack
 * over 512 bytes, an unbounded loop) only on some router. Every combination of
 * the switches in `.rodata` (per-session counters included) must load, in both
 * objects (inline checksums and the compatibility one: asked for by name, so
 * no fallback hides a refusal). The per-host limits go on with the counters.
 */
import { assert } from "./lib/assert.ts";
import { closeNat, loadNat } from "../lib/nat/loader.ts";
import { roConfigOf } from "../lib/daemon.ts";
import { testInterfaceConfig } from "./lib/natfixture.ts";

for (const csum of ["inline", "helpers"] as const) {
  Deno.test(`every combination of the read-only switches passes the verifier (${csum} object)`, async () => {
    const refused: string[] = [];
    let loaded = 0;
    for (const logLevel of [0, 5]) {
      for (const hasEth of [true, false]) {
        for (const fib of [false, true]) {
          for (const icmpx of [false, true]) {
            for (const [nat44, nat66] of [[true, false], [false, true], [true, true]]) {
              for (const counters of [0, 64]) {
                const perHost = counters ? 8 : 0;
                const ic = testInterfaceConfig({
                  bpfLogLevel: logLevel,
                  bpfFibLookupExternal: fib,
                  allowInboundIcmpx: icmpx,
                  nat44,
                  nat66,
                  sessionCounters: counters,
                  bindingMaxPerHost: perHost,
                  sessionMaxPerHost: perHost * 100,
                });
                const what =
                  `log ${logLevel} eth ${hasEth} fib ${fib} icmpx ${icmpx} nat44 ${nat44} nat66 ${nat66} counters ${counters} per-host ${perHost}`;
                try {
                  const nat = await loadNat({
                    ro: roConfigOf(ic, hasEth),
                    bindingMaxRecords: 1024,
                    ctMaxRecords: 2048,
                    csum,
                  });
                  if (nat.csum !== csum) refused.push(`${what}: loaded the ${nat.csum} object`);
                  closeNat(nat);
                  loaded++;
                } catch (e) {
                  refused.push(
                    `${what}: ${(e as Error).message.split("\n").slice(-3).join(" / ")}`,
                  );
                }
              }
            }
          }
        }
      }
    }
    assert(refused.length === 0, `refused:\n${refused.join("\n")}`);
    assert(loaded === 96);
  });
}

Deno.test("verifier work stays within its budget (a loop walked on every turn once tripled it, and the load time with it)", async () => {
  const vi = (fd: number) =>
    Number(/verified_insns:\s*(\d+)/.exec(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`))?.[1]);
  // Processed instructions with the default switches, NAT44+NAT66 (Linux 6.18: ~29,000 egress,
  // ~20,000 ingress): the budget leaves room for growth, not for another multiplication.
  const nat = await loadNat({
    ro: roConfigOf(testInterfaceConfig({ nat66: true }), true),
    bindingMaxRecords: 1024,
    ctMaxRecords: 2048,
  });
  try {
    const [egress, ingress] = [vi(nat.egressFd), vi(nat.ingressFd)];
    assert(egress > 0 && egress < 45_000, `egress: ${egress} processed instructions`);
    assert(ingress > 0 && ingress < 35_000, `ingress: ${ingress} processed instructions`);
  } finally {
    closeNat(nat);
  }
});
