import { assertEquals } from "../tests/lib/assert.ts";
import { serialized } from "./watch.ts";

Deno.test("serialized: calls run one at a time, in order, and a throw does not stop the next", async () => {
  const log: string[] = [];
  let n = 0;
  const s = serialized(async () => {
    const i = ++n;
    log.push(`start ${i}`);
    await new Promise((r) => setTimeout(r, 5));
    log.push(`end ${i}`);
    if (i === 2) throw new Error("the second call fails");
  });
  const calls = [s.run(), s.run(), s.run()];
  // None rejects, the failed one included.
  await Promise.all(calls);
  await s.settled();
  assertEquals(log, ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]);
  // After a failure the next call still runs.
  await s.run();
  assertEquals(log.slice(-2), ["start 4", "end 4"]);
});
