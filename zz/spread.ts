// Experiment: spread single runs vs flow count and flow-cache slots.
import * as bpf from "../lib/ffi/libbpf.ts";
import { benchNet, establish, type Flow, loadBenchNat, loadNoop, stat } from "../bench/lib/bpfbench.ts";
const median = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
const noop = await loadNoop();
const slotsList = (Deno.env.get("SLOTS") ?? "16384").split(",").map(Number);
const flowsList = (Deno.env.get("FLOWS") ?? "10,4000").split(",").map(Number);
const cases = [];
for (const slots of slotsList) for (const k of flowsList) {
  const n = await loadBenchNat({ ic: { ctMaxRecords: 65536, bindingMaxRecords: 65536, flowCacheSlots: slots } });
  const flows: Flow[] = [];
  for (let i = 0; i < k; i++) flows.push(establish(n, { family: 4, proto: "udp", lan: benchNet(i), lanPort: 40000, remote: "198.51.100.1", remotePort: 3478 }));
  cases.push({ slots, k, n, flows, res: [] as number[], miss: [] as number[] });
}
const runs = 4000;
for (let round = 0; round < 3; round++) for (const c of cases) {
  const fd = c.n.nat.egressFd;
  for (const f of c.flows) bpf.testRun(fd, f.egress, { repeat: 1 });
  const m0 = stat(c.n.nat, "flow_cache_miss");
  const a: number[] = [], b: number[] = [];
  for (let j = 0; j < runs; j++) {
    const f = c.flows[Math.floor(Math.random() * c.flows.length)];
    b.push(bpf.testRun(noop.fd, f.egress, { repeat: 1 }).durationNs);
    a.push(bpf.testRun(fd, f.egress, { repeat: 1 }).durationNs);
  }
  c.res.push(median(a) - median(b));
  c.miss.push(Number(stat(c.n.nat, "flow_cache_miss") - m0) / runs);
}
for (const c of cases) console.log(`slots ${c.slots} flows ${c.k}: delta ${c.res.join(" ")} miss ${c.miss.map((x) => (x * 100).toFixed(1) + "%").join(" ")}`);
for (const c of cases) c.n.close();
