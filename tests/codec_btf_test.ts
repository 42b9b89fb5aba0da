/**
 * The TypeScript codecs of map keys and values against the BTF of the built
 * object (Cilium-style): a change on either side without the other fails here.
 */
import { assertEquals } from "./lib/assert.ts";
import { assertLayoutMatches } from "./lib/btfcheck.ts";
import { datasecVars, readStructs } from "../lib/btf.ts";
import { EINAT_CONFIG_LAYOUT, LAYOUTS, STATS } from "../lib/nat/codec.ts";
import { embeddedObject } from "../lib/nat/loader.ts";

const obj = embeddedObject();
const structs = readStructs(obj);
// btf_find's context lives in its own object (bpf/btf_query.bpf.o).
const queryStructs = readStructs(
  Deno.readFileSync(new URL("../bpf/btf_query.bpf.o", import.meta.url)),
);

for (const layout of LAYOUTS) {
  Deno.test(`codec layout of struct ${layout.name} matches BTF`, () => {
    assertLayoutMatches(layout, structs.get(layout.name) ?? queryStructs.get(layout.name));
  });
}

Deno.test("read-only config CFG sits at offset 0 of .rodata", () => {
  const vars = datasecVars(obj, ".rodata");
  const cfg = vars.find((v) => v.name === "CFG");
  assertEquals(cfg, { name: "CFG", offset: 0, size: EINAT_CONFIG_LAYOUT.size });
});

Deno.test("counter names follow enum einat_stat in bpf/einat.h", () => {
  // Enums used only as constants are not in BTF: read the header instead.
  const h = Deno.readTextFileSync(new URL("../bpf/einat.h", import.meta.url));
  const body = h.match(/enum einat_stat \{([^}]*)\}/)![1];
  const names = [...body.matchAll(/STAT_([A-Z0-9_]+)/g)].map((m) => m[1].toLowerCase()).filter((
    n,
  ) => n !== "max");
  assertEquals(names, [...STATS]);
});
