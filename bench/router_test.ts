import { assertEquals } from "../tests/lib/assert.ts";
import { pairedNoise, pairedRatio, type RouterRaw } from "./router.ts";

Deno.test("router: a verdict's noise is the paired ratio's own spread, not the rates' drift", () => {
  // The rates drift by 30 % over the rounds, but einat stays at 0.95-0.97 of plain in each.
  const plain = [100, 115, 130];
  const einat = [96, 110.4, 123.5];
  const raw = {
    t: { plain: plain.map((value) => ({ value })), einat: einat.map((value) => ({ value })) },
  };
  const r = raw as unknown as RouterRaw;
  assertEquals(pairedRatio(r, "t", "einat", "plain").toFixed(3), "0.960");
  // (0.960 - 0.950) / 2 / 0.960: about ±0.5 %, where the rates' spread is 30 %.
  assertEquals(pairedNoise(r, "t", "einat", "plain")!.toFixed(4), "0.0052");
  assertEquals(
    pairedNoise(
      { t: { plain: [{ value: 1 }], einat: [{ value: 1 }] } } as unknown as RouterRaw,
      "t",
      "einat",
      "plain",
    ),
    undefined,
  );
});
