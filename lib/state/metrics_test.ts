import { deepStrictEqual } from "node:assert/strict";
import { portsInRanges, startMetrics, targetsOf } from "./metrics.ts";
import { planInterface } from "../nat/plan.ts";
import { formatAddr, parseAddr, parseCidr } from "../config/cidr.ts";
import type { ExternalSpec } from "../config/types.ts";
import { ranges, testInterfaceConfig } from "../../tests/lib/natfixture.ts";

Deno.test("metrics: port use is reported for every address new mappings are made on: the defaults, and with bpf_fib_lookup_external the other externals", () => {
  const base = testInterfaceConfig();
  const spec = (addr: string, o: Partial<ExternalSpec> = {}): ExternalSpec => ({
    match: { kind: "address", addr: parseCidr(addr) },
    isInternal: false,
    noSnat: false,
    noHairpin: false,
    ranges: base.defaultRanges,
    ...o,
  });
  const ic = testInterfaceConfig({
    nat66: true,
    externals: [
      spec("203.0.113.2/32", { ranges: ranges([{ start: 30000, end: 30009 }]) }),
      spec("203.0.113.9/32", { noSnat: true }), // never a source of mappings
    ],
  });
  const plan = planInterface(ic, [
    { family: 4, addr: parseAddr("203.0.113.1"), prefixLen: 24 },
    { family: 6, addr: parseAddr("2001:db8:2::1"), prefixLen: 64 },
  ]);
  const udp = (fib: boolean) =>
    targetsOf([{ ifname: "wan0", ic: { ...ic, bpfFibLookupExternal: fib }, plan }])[0].externals
      .filter((e) => e.protocol === "udp").map((e) => [e.external, e.ranges]);
  deepStrictEqual(udp(true), [
    ["203.0.113.2", [{ start: 30000, end: 30009 }]],
    ["203.0.113.1", base.defaultRanges.udp],
    ["2001:db8:2::1", base.defaultRanges.udp],
  ]);
  // Without the FIB lookup new mappings take the default (the first entry's, 203.0.113.2):
  // 203.0.113.1 is not counted.
  deepStrictEqual(formatAddr(plan.defaultExt[4]!.addr), "203.0.113.2");
  deepStrictEqual(udp(false).map(([a]) => a), ["203.0.113.2", "2001:db8:2::1"]);
  deepStrictEqual(targetsOf([{ ifname: "wan0", ic, plan }])[0].bindingMax, ic.bindingMaxRecords);
  deepStrictEqual(targetsOf([{ ifname: "wan0", plan: null }]), [{ ifname: "wan0", externals: [] }]);
  // Not served now (gone, renamed away): down, and no port gauges of the plan it last had.
  deepStrictEqual(
    targetsOf([{ ifname: "wan0", ic, plan, attachment: null }]).map((
      t,
    ) => [t.attached, t.externals]),
    [[false, []]],
  );
  deepStrictEqual(targetsOf([{ ifname: "wan0", ic, plan, attachment: {} }])[0].attached, true);
  // What purges dropped since the start, for einat_purged_total.
  const purged = { bindings: 2, sessions: 3, addressOnly: 1 };
  deepStrictEqual(targetsOf([{ ifname: "wan0", ic, plan, purged }])[0].purged, purged);
  deepStrictEqual(
    targetsOf([{ ifname: "wan0", plan: null, pending: { ic: {}, defaults: {} } }]),
    [{ ifname: "wan0", pending: true, externals: [] }],
    "a reload waiting for an address",
  );
});

Deno.test({
  name:
    "metrics: HEAD answers 200 without a scrape (health checks), another method 405, another path 404",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let scrapes = 0;
    const m = startMetrics({ hostname: "127.0.0.1", port: 0 }, () => {
      scrapes++;
      return [];
    });
    try {
      const at = (path: string, method: string) =>
        fetch(`http://127.0.0.1:${m.port}${path}`, { method }).then(async (r) => {
          await r.body?.cancel();
          return [r.status, r.headers.get("allow")];
        });
      deepStrictEqual(await at("/metrics", "HEAD"), [200, null]);
      deepStrictEqual(scrapes, 0, "HEAD scrapes nothing");
      deepStrictEqual(await at("/metrics", "POST"), [405, "GET, HEAD"]);
      deepStrictEqual(await at("/nope", "GET"), [404, null]);
      deepStrictEqual(await at("/metrics", "GET"), [200, null]);
      deepStrictEqual(scrapes, 1);
    } finally {
      await m.close();
    }
  },
});

Deno.test("metrics: ports used count the bindings inside the ranges only (a narrowed range, an inbound ping's identifier)", () => {
  const r = [{ start: 20000, end: 20001 }, { start: 30000, end: 30000 }];
  deepStrictEqual(portsInRanges([26832, 20001, 500, 30000], r), 2);
  deepStrictEqual(portsInRanges([], r), 0);
});

Deno.test("metrics: only counters end in _total (Prometheus naming; promtool refuses a gauge named so)", () => {
  const text = Deno.readTextFileSync(new URL("./metrics.ts", import.meta.url));
  const gauges = [...text.matchAll(/"(einat_[a-z_]+)",\s*"gauge"/g)].map((m) => m[1]);
  deepStrictEqual(gauges.length > 5, true, "gauges found");
  deepStrictEqual(gauges.filter((g) => g.endsWith("_total")), []);
});
