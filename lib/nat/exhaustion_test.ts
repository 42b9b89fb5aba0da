import { assertEquals } from "../../tests/lib/assert.ts";
import { EXHAUSTION_REPORT_INTERVAL_MS, exhaustionWatch } from "./exhaustion.ts";

const c = (
  drop_no_port: number,
  drop_binding_full = 0,
  drop_ct_full = 0,
  drop_host_full = 0,
  drop_host_ct_full = 0,
) => ({ drop_no_port, drop_binding_full, drop_ct_full, drop_host_full, drop_host_ct_full });

Deno.test("exhaustion: first counts are the baseline; growth reported at once, then once a minute per reason", () => {
  const w = exhaustionWatch();
  assertEquals(w.check("wan0", c(7), 0), {}, "pinned counters of an earlier run");
  assertEquals(w.check("wan0", c(7), 1000), {});
  assertEquals(w.check("wan0", c(9), 2000), { drop_no_port: 2 }, "first refusals: at once");
  assertEquals(w.check("wan0", c(12), 3000), {}, "within the minute");
  assertEquals(w.check("wan0", c(12, 1), 4000), { drop_binding_full: 1 }, "another reason");
  assertEquals(w.check("wan1", c(0), 4000), {}, "another interface: its own baseline");
  assertEquals(w.check("wan1", c(1), 4500), { drop_no_port: 1 });
  assertEquals(w.check("wan1", c(1, 0, 0, 0, 5), 4600), { drop_host_ct_full: 5 }, "sessions");
  const t = 2000 + EXHAUSTION_REPORT_INTERVAL_MS;
  assertEquals(w.check("wan0", c(13, 1), t), { drop_no_port: 4 }, "everything since the last");
  assertEquals(w.check("wan0", c(2, 1), t + 1000), {}, "within the minute");
  assertEquals(
    w.check("wan0", c(2, 1), t + EXHAUSTION_REPORT_INTERVAL_MS),
    { drop_no_port: 2 },
    "counters made anew (a reload): counted from 0",
  );
  w.retain(["wan1"]);
  assertEquals(w.check("wan0", c(50), t * 3), {}, "forgotten: a new baseline");
});
