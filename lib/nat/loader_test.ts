import { HAS_KERN_CTX } from "../../tests/lib/kernel.ts";
import { assert, assertEquals } from "../../tests/lib/assert.ts";
import { countBindings } from "./records.ts";
import * as bpf from "../ffi/libbpf.ts";
import { roConfigOf } from "../daemon.ts";
import { loadTestNat, TC_ACT_OK, testInterfaceConfig } from "../../tests/lib/natfixture.ts";
import { udpSpec } from "../../tests/lib/packet.ts";
import { withVariant } from "../../tests/lib/bpfobj.ts";
import { parseBtf } from "../btf.ts";
import {
  closeNat,
  csumModeOf,
  embeddedObject,
  flowCacheEntries,
  loadNat,
  type LoadOptions,
} from "./loader.ts";

const base = (): LoadOptions => {
  const ic = testInterfaceConfig();
  return { ro: roConfigOf(ic), bindingMaxRecords: 1024, ctMaxRecords: 2048 };
};

Deno.test("loader: the flow cache has a block of slots per CPU, and a size past a map's limit names the key", () => {
  const ro = roConfigOf(testInterfaceConfig({ flowCacheSlots: 4096 }));
  assertEquals(flowCacheEntries(ro, 2), 8192);
  let msg = "";
  try {
    flowCacheEntries({ ...ro, flowCacheSlots: 1 << 20 }, 4096);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(/^flow_cache_slots 1048576 x 4096 possible CPUs/.test(msg), msg);
});

Deno.test("loader: the two embedded objects differ in their checksum update", () => {
  assertEquals(csumModeOf(embeddedObject("inline")), "inline");
  assertEquals(csumModeOf(embeddedObject("helpers")), "helpers");
});

/** Loads with `opts` over the test defaults and checks what loaded. */
async function loads(
  opts: Partial<LoadOptions>,
  check: (n: Awaited<ReturnType<typeof loadNat>>) => void,
) {
  const n = await loadNat({ ...base(), ...opts });
  try {
    check(n);
  } finally {
    closeNat(n);
  }
}

Deno.test({
  name: "loader: with kernel BTF the inline-checksum object loads",
  ignore: !HAS_KERN_CTX, // Linux 6.2+
  fn: () =>
    loads({}, (n) => {
      assertEquals(n.csum, "inline");
      assertEquals(n.csumFallback, undefined);
    }),
});

Deno.test("loader: without kernel BTF the helpers object loads, saying why", () =>
  loads({ kernelBtf: "/nonexistent/einat-test/vmlinux" }, (n) => {
    assertEquals(n.csum, "helpers");
    assert(n.csumFallback?.includes("/nonexistent/einat-test/vmlinux"), n.csumFallback);
  }));

Deno.test("loader: an object can be asked for by checksum mode", () =>
  loads({ csum: "helpers" }, (n) => assertEquals(n.csum, "helpers")));

Deno.test("loader: both objects declare the same maps (the datapath objects reuse the state object's)", () => {
  const describe = (csum: "inline" | "helpers") => {
    const obj = bpf.openObjectMem(embeddedObject(csum), "einat");
    try {
      return bpf.mapNames(obj).map((n) => {
        const m = bpf.findMap(obj, n);
        return `${n} type ${bpf.mapType(m)} key ${bpf.mapKeySize(m)} value ${
          bpf.mapValueSize(m)
        } max ${bpf.mapMaxEntries(m)} flags ${bpf.mapFlags(m)}`;
      });
    } finally {
      bpf.closeObject(obj);
    }
  };
  const inline = describe("inline");
  assert(inline.length >= 20, inline.join("\n"));
  assertEquals(describe("helpers"), inline);
});

Deno.test("loader: the datapath programs load in objects of their own, on the state object's maps", async () => {
  const n = await loadTestNat();
  try {
    assertEquals(n.nat.progFds.length, 6); // egress; ingress and the four state programs
    assertEquals(countBindings(n.nat.maps.records), 0);
    const out = n.egress(udpSpec(4, "192.0.2.10", 40000, "198.51.100.1", 53, new Uint8Array(8)));
    assertEquals(out.retval, TC_ACT_OK);
    assertEquals(out.out.src, "203.0.113.1");
    // the egress object wrote its binding into the state object's map
    assertEquals(countBindings(n.nat.maps.records), 1);
  } finally {
    n.close();
  }
});

Deno.test("loader: an inline object the kernel refuses falls back to the helpers one, saying why", () =>
  // The inline object built with unchecked packet access (EINAT_TEST_REJECT).
  withVariant("EINAT_TEST_REJECT", async (obj) => {
    await loads({ inlineObject: Deno.readFileSync(obj) }, (n) => {
      assertEquals(n.csum, "helpers");
      assert(n.csumFallback?.startsWith("bpf_object__load"), n.csumFallback);
    });
  }));

Deno.test({
  name: "loader: the kernel's answer for the kfunc's BTF id is the id in its BTF",
  ignore: !HAS_KERN_CTX, // Linux 6.2+
}, async () => {
  // A full parse of the kernel's BTF by the project's other reader.
  const func = parseBtf(Deno.readFileSync("/sys/kernel/btf/vmlinux")).types
    .find((t) => t.kindName === "FUNC" && t.name === "bpf_cast_to_kern_ctx");
  assert(func, "bpf_cast_to_kern_ctx in the kernel's BTF");
  await loads({}, (n) => {
    assertEquals(n.csum, "inline");
    assertEquals(n.kfuncId, func.id); // btf_find's answer, which the loaded programs call
  });
});
