import { assertEquals, assertNotEquals } from "../tests/lib/assert.ts";
import { textKey } from "./key.ts";

Deno.test("textKey: equal bytes give equal keys, other bytes other keys", () => {
  const a = { addr: new Uint8Array([192, 0, 2, 1]), n: 1 };
  assertEquals(textKey(a), textKey({ addr: new Uint8Array([192, 0, 2, 1]), n: 1 }));
  assertNotEquals(textKey(a), textKey({ addr: new Uint8Array([192, 0, 2, 2]), n: 1 }));
  assertEquals(textKey(a), '{"addr":[192,0,2,1],"n":1}');
});
