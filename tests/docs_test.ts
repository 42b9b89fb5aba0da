/** The README against the code: what it lists must be what exists. */

import { assertEquals } from "./lib/assert.ts";
import { STATS } from "../lib/nat/codec.ts";

const README = new URL("../README.md", import.meta.url);

Deno.test("README: the counter table explains every map_stats counter, and no other", async () => {
  const text = await Deno.readTextFile(README);
  const start = text.indexOf("| counter ");
  const rows = text.slice(start).split("\n\n")[0].split("\n").slice(2);
  const names = rows.map((r) => /^\| `(\w+)`/.exec(r)?.[1]);
  assertEquals([...names].sort(), [...STATS].sort());
});
