import { assert, assertEquals, assertThrows } from "../../tests/lib/assert.ts";
import { readBtf } from "../btf.ts";
import {
  convert,
  isIdentity,
  MigrationError,
  planConversion,
  planMapConversion,
  structId,
} from "./migrate.ts";
import * as bpf from "../ffi/libbpf.ts";
import { closeFd } from "../ffi/libc.ts";
import {
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  MAPPING_RECORD_LAYOUT,
  OUTBOUND_LINE_LAYOUT,
  REC,
} from "../nat/codec.ts";
import { KEEP } from "./pin.ts";

const bpfDir = new URL("../../bpf/", import.meta.url).pathname;
const testBtf = readBtf(Deno.readFileSync(`${bpfDir}migrate_test.bpf.o`));
const einatBtf = readBtf(Deno.readFileSync(`${bpfDir}einat.bpf.o`));

const plan = (from: string, to: string, toBtf = testBtf) =>
  planConversion(testBtf, structId(testBtf, from), toBtf, structId(toBtf, to));

Deno.test("migrate: fields move by name, new ones start as zeros, dropped ones go", () => {
  const c = plan("rec_v1", "rec_v2");
  assertEquals([c.oldSize, c.newSize], [44, 56]);
  assertEquals(c.added, ["rec_v2.in.c", "rec_v2.added"]);
  assertEquals(c.dropped, ["rec_v1.gone"]);
  // rec_v1: x@0 y@1 port@2 in{a@4 b@8 _pad@10} arr@12 u@24 gone@40
  const old = new Uint8Array(44);
  const ov = new DataView(old.buffer);
  old[0] = 0x11;
  old[1] = 0x22;
  ov.setUint16(2, 0x1234); // network order
  ov.setUint32(4, 0xdeadbeef, true);
  ov.setUint16(8, 0x5566, true);
  ov.setUint16(10, 0x0102, true);
  [7, 8, 9].forEach((x, i) => ov.setUint32(12 + 4 * i, x, true));
  for (let i = 0; i < 16; i++) old[24 + i] = 0xa0 + i;
  ov.setUint32(40, 0x77777777, true);
  // rec_v2: in{b@0 _pad@2 a@4 c@8} u@16 arr@32 port@44 y@46 x@47 added@48
  const want = new Uint8Array(56);
  const wv = new DataView(want.buffer);
  wv.setUint16(0, 0x5566, true);
  wv.setUint16(2, 0x0102, true);
  wv.setUint32(4, 0xdeadbeef, true);
  for (let i = 0; i < 16; i++) want[16 + i] = 0xa0 + i;
  [7, 8, 9].forEach((x, i) => wv.setUint32(32 + 4 * i, x, true));
  wv.setUint16(44, 0x1234);
  want[46] = 0x22;
  want[47] = 0x11;
  const got = new Uint8Array(56).fill(0xee); // what was there before is not kept
  convert(c, old, got);
  assertEquals(got, want);
  // Adjacent fields that stay adjacent are one copy (the array's elements; in.b and in._pad).
  assert(c.copies.some((k) => k.from === 12 && k.to === 32 && k.len === 12), JSON.stringify(c));
  assert(c.copies.some((k) => k.from === 8 && k.to === 0 && k.len === 4), JSON.stringify(c));
  // At offsets, as the batch buffers hold entries.
  const big = new Uint8Array(100), out = new Uint8Array(70);
  big.set(old, 50);
  convert(c, big, out, 50, 10);
  assertEquals(out.subarray(10, 66), want);
});

Deno.test("migrate: a field that changed size or kind, an array of another length, a union of another size, a bitfield: refused, named", () => {
  const cases: [string, RegExp][] = [
    ["rec_wider", /^rec_wider\.x: 1 byte, now 4$/],
    ["rec_kind", /^rec_kind\.x: a number, now a struct$/],
    ["rec_longer", /^rec_longer\.arr: 3 elements, now 4$/],
    ["rec_union", /^rec_union\.u: a union of 16 bytes, now 4$/],
    ["rec_bits", /^rec_bits\.x: a bitfield$/],
  ];
  for (const [to, why] of cases) {
    const e = assertThrows(() => plan("rec_v1", to), why, to);
    assert(e instanceof MigrationError, `${to}: ${e}`);
  }
});

Deno.test("migrate: this einat's layouts to themselves are identities", () => {
  for (const name of ["ct_key", "ct_value", "mapping_record", "outbound_line", "slot_table"]) {
    const id = structId(einatBtf, name);
    assert(isIdentity(planConversion(einatBtf, id, einatBtf, id)), name);
  }
});

Deno.test("migrate: an older layout of sessions and records (bpf/migrate_test.bpf.c) becomes this einat's, every field in its place (lib/nat/codec.ts)", () => {
  // The old ct_value: last_seen_ns@0 int_addr@8 created_s@24 int_port@28 flags@30 state@31
  // retired@32; the old mapping_record: ct@0 (40 bytes) state@40 ref@44 remote_addr@48
  // remote_port@64 l4proto@66 family@67 sess@68.
  const rec = plan("mapping_record", "mapping_record", einatBtf);
  assertEquals([rec.oldSize, rec.newSize], [72, MAPPING_RECORD_LAYOUT.size]);
  assertEquals(rec.added, []);
  assertEquals(rec.dropped, ["mapping_record.ct.retired"]);
  const old = new Uint8Array(72), ov = new DataView(old.buffer);
  ov.setBigUint64(0, 0x0123456789abcdefn, true);
  for (let i = 0; i < 16; i++) old[8 + i] = 0xc0 + i;
  ov.setUint32(24, 123456, true);
  ov.setUint16(28, 40000);
  old[30] = 0x03;
  old[31] = 1;
  ov.setUint32(32, 0x99999999, true);
  ov.setUint32(40, 2 | 4 * 7, true);
  ov.setUint32(44, 3, true);
  for (let i = 0; i < 16; i++) old[48 + i] = 0xd0 + i;
  ov.setUint16(64, 9);
  old[66] = 17;
  old[67] = 4;
  ov.setUint32(68, 1, true);
  const got = new Uint8Array(MAPPING_RECORD_LAYOUT.size);
  convert(rec, old, got);
  const gv = new DataView(got.buffer), R = MAPPING_RECORD_LAYOUT.fields, V = CT_VALUE_LAYOUT.fields;
  const ct = R.ct.offset;
  assertEquals(gv.getUint32(R.state.offset, true), 2 | 4 * 7);
  assertEquals(gv.getUint32(R.ref.offset, true), 3);
  assertEquals(got.subarray(R.remote_addr.offset, R.remote_addr.offset + 16), old.subarray(48, 64));
  assertEquals(gv.getUint16(R.remote_port.offset), 9);
  assertEquals([got[R.l4proto.offset], got[R.family.offset]], [17, 4]);
  assertEquals(gv.getUint32(R.sess.offset, true), 1);
  assertEquals(gv.getBigUint64(ct + V.last_seen_ns.offset, true), 0x0123456789abcdefn);
  assertEquals(
    got.subarray(ct + V.int_addr.offset, ct + V.int_addr.offset + 16),
    old.subarray(8, 24),
  );
  assertEquals(gv.getUint32(ct + V.created_s.offset, true), 123456);
  assertEquals(gv.getUint16(ct + V.int_port.offset), 40000);
  assertEquals([got[ct + V.flags.offset], got[ct + V.state.offset]], [0x03, 1]);

  // The old ct_key: remote_addr@0 ext_addr@16 remote_port@32 ext_port@34 family@36
  // l4proto@37 flags@38.
  const key = plan("ct_key", "ct_key", einatBtf);
  assertEquals([key.added, key.dropped], [[], []]);
  const ok = new Uint8Array(40), okv = new DataView(ok.buffer);
  for (let i = 0; i < 32; i++) ok[i] = 0x40 + i;
  okv.setUint16(32, 53);
  okv.setUint16(34, 20001);
  [ok[36], ok[37], ok[38]] = [6, 17, 0x80];
  const nk = new Uint8Array(CT_KEY_LAYOUT.size), nkv = new DataView(nk.buffer);
  convert(key, ok, nk);
  const K = CT_KEY_LAYOUT.fields;
  assertEquals(nk.subarray(K.remote_addr.offset, K.remote_addr.offset + 16), ok.subarray(0, 16));
  assertEquals(nk.subarray(K.ext_addr.offset, K.ext_addr.offset + 16), ok.subarray(16, 32));
  assertEquals([nkv.getUint16(K.remote_port.offset), nkv.getUint16(K.ext_port.offset)], [
    53,
    20001,
  ]);
  assertEquals([nk[K.family.offset], nk[K.l4proto.offset], nk[K.flags.offset]], [6, 17, 0x80]);
});

Deno.test("migrate: a map whose key gained or lost fields, of another type, or of a layout not known is refused", () => {
  const fd = bpf.mapCreate(bpf.MapType.HASH, "t", 44, 40, 4); // no BTF
  const small = bpf.mapCreate(bpf.MapType.HASH, "t", 44, 32, 4);
  try {
    const to = (key: string, mapType: number = bpf.MapType.HASH) => ({
      key: "rec_v1",
      value: "ct_value",
      mapType,
      ids: { key: structId(testBtf, key), value: structId(testBtf, "ct_value") },
      btf: testBtf,
    });
    // Its entries are found by the key: a field more or less, and none would be.
    assertThrows(
      () => planMapConversion(fd, testBtf, to("rec_v2")),
      /its key gained or lost fields \(rec_v2\.in\.c, rec_v2\.added, rec_v1\.gone\)/,
    );
    assertThrows(
      () => planMapConversion(fd, testBtf, to("rec_v1", bpf.MapType.ARRAY)),
      /a map of type 1, now 2/,
    );
    // Without the BTF left beside it, the kernel's copy is asked for: this map has none.
    assertThrows(() => planMapConversion(fd, null, to("rec_v1")), /created without BTF/);
    // The same key: fine.
    const c = planMapConversion(fd, testBtf, to("rec_v1"));
    assert(isIdentity(c.key), JSON.stringify(c.key));
    assertEquals(c.value.copies, [{ from: 0, to: 0, len: 36 }]); // its 4 bytes of tail padding
    // A BTF whose structs are not of the map's sizes does not describe it: the kernel's copy is
    // asked for.
    assertThrows(() => planMapConversion(small, testBtf, to("rec_v1")), /created without BTF/);
  } finally {
    closeFd(fd);
    closeFd(small);
  }
});

Deno.test("migrate: what old programs left mid-operation is not carried as it stands (a held line lock, a record being claimed)", () => {
  const line = new Uint8Array(OUTBOUND_LINE_LAYOUT.size).fill(7);
  line.fill(0, 0, 4);
  line[OUTBOUND_LINE_LAYOUT.fields.lock.offset] = 1;
  assert(KEEP.map_outbound!(line));
  assertEquals(new DataView(line.buffer).getUint32(OUTBOUND_LINE_LAYOUT.fields.lock.offset), 0);
  assertEquals(line[OUTBOUND_LINE_LAYOUT.fields.e.offset], 7, "its entries kept");
  const rec = new Uint8Array(MAPPING_RECORD_LAYOUT.size);
  for (
    const [state, kept] of [[REC.LIVE, true], [REC.BUSY, false], [REC.LIVE | REC.GEN_ONE * 3, true]]
  ) {
    new DataView(rec.buffer).setUint32(
      MAPPING_RECORD_LAYOUT.fields.state.offset,
      state as number,
      true,
    );
    assertEquals(KEEP.map_records!(rec), kept, `state ${state}`);
  }
});
