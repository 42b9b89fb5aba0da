import { equal, throws } from "node:assert/strict";
import { formatDuration, parseDuration } from "./duration.ts";

Deno.test("parseDuration: units", () => {
  equal(parseDuration("2s"), 2_000);
  equal(parseDuration("1m"), 60_000);
  equal(parseDuration("120m"), 7_200_000);
  equal(parseDuration("2h"), 7_200_000);
  equal(parseDuration("1d"), 86_400_000);
  equal(parseDuration("1w"), 604_800_000);
  equal(parseDuration("250ms"), 250);
  equal(parseDuration("1500000us"), 1_500);
  equal(parseDuration("1500000Ms"), 1_500);
  equal(parseDuration("2000000000ns"), 2_000);
});

Deno.test("parseDuration: no unit means seconds", () => {
  equal(parseDuration("300"), 300_000);
  equal(parseDuration(300), 300_000);
  equal(parseDuration(1.5), 1_500);
});

Deno.test("parseDuration: fractions, exponents, compounds", () => {
  equal(parseDuration("1.5h"), 5_400_000);
  equal(parseDuration(".5s"), 500);
  equal(parseDuration("1e2s"), 100_000);
  equal(parseDuration("1h30m"), 5_400_000);
  equal(parseDuration("1h30m15s"), 5_415_000);
  equal(parseDuration(" 5m "), 300_000);
  equal(parseDuration("+5m"), 300_000);
  equal(parseDuration("0s"), 0);
});

Deno.test("parseDuration: errors", () => {
  throws(() => parseDuration(""), SyntaxError);
  throws(() => parseDuration("abc"), SyntaxError);
  throws(() => parseDuration("5 m"), SyntaxError);
  throws(() => parseDuration("5M"), /unknown unit "M"/);
  throws(() => parseDuration("1y"), /unknown unit "y"/);
  throws(() => parseDuration("5min"), /unknown unit "min"/);
  throws(() => parseDuration("1h30"), /without a unit/);
  throws(() => parseDuration("-5s"), RangeError);
  throws(() => parseDuration(-1), RangeError);
  throws(() => parseDuration(Infinity), RangeError);
  throws(() => parseDuration("1e400s"), /too large/);
});

Deno.test("formatDuration", () => {
  equal(formatDuration(7_200_000), "2h");
  equal(formatDuration(90_000), "1m30s");
  equal(formatDuration(2_000), "2s");
  equal(formatDuration(1_500), "1500ms");
  equal(formatDuration(0), "0s");
  equal(formatDuration(86_400_000 + 1000), "1d1s");
});
