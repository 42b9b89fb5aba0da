import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { ConfigError } from "./types.ts";
import {
  formatRanges,
  intersectRanges,
  MAX_RANGES,
  mergeRanges,
  parseLocalPortRange,
  parseRange,
  parseRanges,
  rangesContain,
} from "./ranges.ts";

const src = { path: "defaults.tcp_ranges", file: "f.toml" };

Deno.test("parseRange: forms", () => {
  deepStrictEqual(parseRange("20000-29999", "port"), { start: 20000, end: 29999 });
  deepStrictEqual(parseRange("53", "port"), { start: 53, end: 53 });
  deepStrictEqual(parseRange(53, "port"), { start: 53, end: 53 });
  deepStrictEqual(parseRange(" 1000 - 2000 ", "port"), { start: 1000, end: 2000 });
  deepStrictEqual(parseRange("0-65535", "icmp"), { start: 0, end: 65535 });
  deepStrictEqual(parseRange(0, "icmp"), { start: 0, end: 0 });
});

Deno.test("parseRange: errors", () => {
  throws(() => parseRange("0-100", "port"), /port 0 cannot be mapped/);
  throws(() => parseRange("1-65536", "port"), /65536, outside 1-65535/);
  throws(() => parseRange("1-65536", "icmp"), /outside 0-65535/);
  throws(() => parseRange("300-200", "port"), /reversed.*did you mean "200-300"/);
  throws(() => parseRange("a-b", "port"), /not a range/);
  throws(() => parseRange("1-2-3", "port"), /not a range/);
  throws(() => parseRange("-5", "port"), /not a range/);
  throws(() => parseRange("", "port"), /not a range/);
  throws(() => parseRange(1.5, "port"), /not an integer/);
  throws(() => parseRange(true, "port"), /expected a range string/);
});

Deno.test("parseRanges: list, single and empty", () => {
  deepStrictEqual(parseRanges(["20000-29999"], "port", src), [{ start: 20000, end: 29999 }]);
  deepStrictEqual(parseRanges("20000-29999", "port", src), [{ start: 20000, end: 29999 }]);
  deepStrictEqual(parseRanges(20000, "port", src), [{ start: 20000, end: 20000 }]);
  deepStrictEqual(parseRanges([], "port", src), []);
});

Deno.test("parseRanges: sorts and merges touching ranges", () => {
  deepStrictEqual(parseRanges(["3000-3999", "1000-1999", "2000-2999"], "port", src), [
    { start: 1000, end: 3999 },
  ]);
  deepStrictEqual(parseRanges(["40000-49999", "20000-29999"], "port", src), [
    { start: 20000, end: 29999 },
    { start: 40000, end: 49999 },
  ]);
});

Deno.test("parseRanges: overlaps are merged, as einat-ebpf merges them, each told to warn", () => {
  const told: string[] = [];
  deepStrictEqual(
    parseRanges(["200-300", "0-100", "50-150", "250-290"], "icmp", src, {
      warn: (path, message) => told.push(`${path}: ${message}`),
    }),
    [{ start: 0, end: 150 }, { start: 200, end: 300 }],
  );
  deepStrictEqual(told, [
    'defaults.tcp_ranges[2]: range "50-150" overlaps "0-100" (element 1); taken as "0-150, 200-300", as einat-ebpf does',
    'defaults.tcp_ranges[3]: range "250-290" overlaps "200-300" (element 0); taken as "0-150, 200-300", as einat-ebpf does',
  ]);
  // Touching ranges are joined without a word.
  parseRanges(["0-99", "100-200"], "icmp", src, {
    warn: () => ok(false, "touching is no overlap"),
  });
});

Deno.test("parseRanges: element errors carry the index", () => {
  throws(
    () => parseRanges(["1-2", "x"], "port", src),
    (e: ConfigError) => e.path === "defaults.tcp_ranges[1]",
  );
  throws(
    () => parseRanges(["1-2", "x"], "port", { ...src, indexElements: false }),
    (e: ConfigError) => e.path === "defaults.tcp_ranges",
  );
});

Deno.test("parseRanges: at most 4 after merging", () => {
  const five = ["1-1", "3-3", "5-5", "7-7", "9-9"];
  throws(
    () => parseRanges(five, "port", src),
    (e: ConfigError) =>
      e.path === "defaults.tcp_ranges" && /5 separate ranges.*at most 4/.test(e.message),
  );
  // Five entries that merge into four are fine.
  equal(parseRanges(["1-1", "2-2", "5-5", "7-7", "9-9"], "port", src).length, MAX_RANGES);
});

Deno.test("mergeRanges and formatRanges", () => {
  deepStrictEqual(mergeRanges([{ start: 5, end: 9 }, { start: 1, end: 4 }]), [{
    start: 1,
    end: 9,
  }]);
  equal(formatRanges([{ start: 1, end: 4 }, { start: 53, end: 53 }]), "1-4, 53");
  equal(formatRanges([]), "none");
});

Deno.test("rangesContain", () => {
  const a = [{ start: 0, end: 150 }, { start: 200, end: 300 }];
  ok(rangesContain(a, a));
  ok(rangesContain(a, [{ start: 0, end: 100 }]));
  ok(rangesContain(a, [{ start: 10, end: 20 }, { start: 250, end: 260 }]));
  ok(!rangesContain(a, [{ start: 120, end: 220 }]));
  ok(!rangesContain(a, [{ start: 290, end: 301 }]));
  ok(rangesContain(a, []));
  ok(!rangesContain([], [{ start: 1, end: 1 }]));
  ok(rangesContain([{ start: 0, end: 10 }, { start: 11, end: 20 }], [{ start: 5, end: 15 }]));
});

Deno.test("intersectRanges: the parts inside the other range", () => {
  const eph = { start: 32768, end: 60999 };
  deepStrictEqual(intersectRanges([{ start: 20000, end: 29999 }], eph), []);
  deepStrictEqual(
    intersectRanges([{ start: 20000, end: 33000 }, { start: 40000, end: 49999 }, {
      start: 60000,
      end: 65535,
    }], eph),
    [{ start: 32768, end: 33000 }, { start: 40000, end: 49999 }, { start: 60000, end: 60999 }],
  );
  deepStrictEqual(intersectRanges([{ start: 60999, end: 60999 }], eph), [{
    start: 60999,
    end: 60999,
  }]);
});

Deno.test("parseLocalPortRange: the sysctl's two ports, or null", () => {
  deepStrictEqual(parseLocalPortRange("32768\t60999\n"), { start: 32768, end: 60999 });
  deepStrictEqual(parseLocalPortRange("1024 65535"), { start: 1024, end: 65535 });
  equal(parseLocalPortRange(""), null);
  equal(parseLocalPortRange("60999 32768"), null);
  equal(parseLocalPortRange("0 100"), null);
  equal(parseLocalPortRange("1 2 3"), null);
});
