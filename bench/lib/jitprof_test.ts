/**
 * bench/lib/jitprof.ts on the loaded egress program: samples named as `perf script` names them,
 * at known offsets, land on the lines the program's line info gives them.
 */
import { assert, assertEquals } from "../../tests/lib/assert.ts";
import { loadTestNat } from "../../tests/lib/natfixture.ts";
import { progJitInfo } from "../../lib/ffi/libbpf.ts";
import { fdinfo } from "./bpfbench.ts";
import { attribute, dumpXlated, formatAttribution, parseXlated } from "./jitprof.ts";

Deno.test("jitprof: perf samples of the egress program map to its functions' source lines, by name and tag", async () => {
  const n = await loadTestNat();
  try {
    const id = Number(fdinfo(n.nat.egressFd).prog_id);
    const info = progJitInfo(id);
    const xl = parseXlated(await dumpXlated(id));
    assertEquals(xl.funcs[0], "egress_snat");
    assertEquals(
      [xl.funcs.length, info.funcLens.length, info.funcTags.length],
      Array(3).fill(info.ksyms.length),
    );
    assertEquals(info.lineInsn.length, info.lineAddr.length);
    const r = xl.funcs.indexOf("einat_rewrite");
    assert(r > 0, "einat_rewrite is one of the egress program's functions");
    const tag = info.funcTags[r];
    const lines = [
      " ffffffffc0030050 bpf_prog_0123456789abcdef_egress_snat+0x0", // the main program: any tag
      ` ffffffffc0031000 bpf_prog_${tag}_einat_rewrite+0x0`,
      ` ffffffffc0031000 bpf_prog_${tag}_einat_rewrite+0x${(info.funcLens[r] - 1).toString(16)}`,
      " ffffffffc0032000 bpf_prog_ffffffffffffffff_einat_rewrite+0x0", // another program's copy
      " ffffffff81541765 __bpf_prog_enter_recur+0x115",
      " ffffffffc0033000 bpf_prog_0123456789abcdef_not_a_function+0x10",
    ];
    const a = attribute(info, xl, lines);
    assertEquals(a.total, 3);
    assertEquals([...a.perFunc].sort(), [["egress_snat", 1], ["einat_rewrite", 2]]);
    const at = (f: string) => a.lines.filter((l) => l.func === f).map((l) => l.source);
    // offset 0: the main program's first instruction, whatever line the compiler gave it, in
    // egress_snat's body
    assertEquals(at("egress_snat")[0], xl.source.get(0));
    const src = Deno.readTextFileSync(new URL("../../bpf/einat.bpf.c", import.meta.url)).split(
      "\n",
    );
    const first = src.findIndex((l) => l.startsWith("int egress_snat(")) + 1;
    const line = Number(/\[einat\.bpf\.c:(\d+)\]$/.exec(at("egress_snat")[0])?.[1]);
    assert(line >= first && line < first + 40, `${at("egress_snat")[0]}: not in egress_snat`);
    assert(
      at("einat_rewrite").some((s) => s.includes("int einat_rewrite(")),
      `${at("einat_rewrite")}`,
    );
    assert(a.lines.every((l) => /\[[\w.]+:\d+\]$/.test(l.source)), JSON.stringify(a.lines));
  } finally {
    n.close();
  }
});

Deno.test("jitprof: the report lists functions by samples, then the top source lines, with shares", () => {
  const text = formatAttribution({
    total: 8,
    perFunc: new Map([["einat_rewrite", 2], ["egress_snat", 6]]),
    lines: [
      { func: "egress_snat", source: "x = 1; [a.c:3]", samples: 5 },
      { func: "einat_rewrite", source: "y = 2; [b.h:9]", samples: 2 },
      { func: "egress_snat", source: "z = 3; [a.c:4]", samples: 1 },
    ],
  }, 2);
  assertEquals(text.split("\n"), [
    "8 samples in the program",
    "      6  75.0 %  egress_snat",
    "      2  25.0 %  einat_rewrite",
    "",
    "      5  62.5 %  egress_snat: x = 1; [a.c:3]",
    "      2  25.0 %  einat_rewrite: y = 2; [b.h:9]",
  ]);
});
