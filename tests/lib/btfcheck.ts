/**
 * A TypeScript mirror of a C struct against the struct in an object's BTF (Cilium-style): a
 * change on either side without the other fails.
 * @module
 */
import { assertEquals } from "./assert.ts";
import type { StructInfo } from "../../lib/btf.ts";
import type { StructLayout } from "../../lib/nat/codec.ts";

/** Throws unless `layout` has the size, offsets and members of `s` (the struct from BTF). */
export function assertLayoutMatches(layout: StructLayout, s: StructInfo | undefined): void {
  if (!s) throw new Error(`struct ${layout.name} not in BTF`);
  assertEquals(layout.size, s.size, `sizeof(struct ${layout.name})`);
  for (const [name, f] of Object.entries(layout.fields)) {
    const m = s.members.find((x) => x.name === name);
    if (!m) throw new Error(`${layout.name}.${name} not in BTF`);
    assertEquals({ offset: f.offset, size: f.size }, {
      offset: m.offsetBits / 8,
      size: m.sizeBytes,
    }, `${layout.name}.${name}`);
  }
  // every non-padding C member is known to the mirror
  const unknown = s.members.filter((m) => !m.name.startsWith("_") && !(m.name in layout.fields));
  assertEquals(unknown.map((m) => m.name), [], `members of ${layout.name} missing from the codec`);
}

/** Member offset (bytes) of `name` in struct `s` of an object's BTF (lib/btf.ts, readStructs). */
export function memberOffset(structs: Map<string, StructInfo>, s: string, name: string): number {
  const m = structs.get(s)?.members.find((x) => x.name === name);
  if (!m) throw new Error(`${s}.${name} not in BTF`);
  return m.offsetBits / 8;
}
