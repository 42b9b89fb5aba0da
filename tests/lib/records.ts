/**
 * The mapping records and the outbound index (bpf/lib/records.h) under test: loads
 * bpf/records_test.bpf.o and drives its rec_cmd program one operation per `BPF_PROG_TEST_RUN`,
 * each a `struct rec_cmd` after a 14-byte Ethernet header. The layouts here mirror the C structs
 * and are checked against the object's BTF (tests/records_test.ts).
 * @module
 */
import * as bpf from "../../lib/ffi/libbpf.ts";
import { datasecVars } from "../../lib/btf.ts";
import {
  addr16,
  addrOf,
  CT_VALUE_LAYOUT,
  MAPPING_RECORD_LAYOUT,
  type StructLayout,
} from "../../lib/nat/codec.ts";

export { MAPPING_RECORD_LAYOUT };
import { formatAddr, parseAddr } from "../../lib/config/cidr.ts";

/** The test object's path. */
export const RECORDS_OBJECT = new URL("../../bpf/records_test.bpf.o", import.meta.url).pathname;

/** struct rec_key (bpf/lib/records.h). */
export const REC_KEY_LAYOUT: StructLayout = {
  name: "rec_key",
  size: 20,
  fields: {
    addr: { offset: 0, size: 16 },
    port: { offset: 16, size: 2 },
    family: { offset: 18, size: 1 },
    l4proto: { offset: 19, size: 1 },
  },
};

/** struct rec_cmd (bpf/records_test.bpf.c). */
export const REC_CMD_LAYOUT: StructLayout = {
  name: "rec_cmd",
  size: 112,
  fields: {
    op: { offset: 0, size: 4 },
    idx: { offset: 4, size: 4 },
    ret: { offset: 8, size: 4 },
    slot: { offset: 12, size: 4 },
    port_lo: { offset: 16, size: 2 },
    port_hi: { offset: 18, size: 2 },
    made: { offset: 20, size: 4 },
    claimed: { offset: 24, size: 4 },
    key: { offset: 28, size: 20 },
    rec: { offset: 48, size: 64 },
  },
};

import { OB_ENTRIES } from "../../lib/nat/records.ts";
export { OB_EMPTY, OB_ENTRIES, OB_IDX_BITS, OB_TOMB } from "../../lib/nat/records.ts";

/** enum rec_op (bpf/records_test.bpf.c). */
export const OP = { CLAIM: 1, FIND: 2, INSERT: 3, DELETE: 4, READ: 5, CREATE: 6, PUT: 7 } as const;

export { BINDING_DYING, REC } from "../../lib/nat/codec.ts";

/** An internal endpoint. */
export interface RecKey {
  family: 4 | 6;
  l4proto: number;
  addr: string;
  port: number;
}

/** A decoded `struct mapping_record`. */
export interface MappingRecord {
  state: number;
  ref: number;
  key: RecKey;
}

/** A command to rec_cmd. */
export interface RecCmd {
  op: number;
  idx?: number;
  slot?: number;
  portLo?: number;
  portHi?: number;
  key?: RecKey;
}

/** What rec_cmd answered. */
export interface RecReply {
  ret: number;
  /** OP_CREATE: the record claimed here became the endpoint's. */
  made: boolean;
  /** OP_CREATE: a record was claimed here (made, or lost to another CPU's at the insert). */
  claimed: boolean;
  rec: MappingRecord;
}

const ETH = 14;
const o = (name: string) => REC_CMD_LAYOUT.fields[name].offset;

function putKey(v: DataView, b: Uint8Array, at: number, k: RecKey): void {
  b.set(addr16(parseAddr(k.addr)), at);
  v.setUint16(at + 16, k.port, false);
  v.setUint8(at + 18, k.family);
  v.setUint8(at + 19, k.l4proto);
}

function getKey(v: DataView, b: Uint8Array, at: number): RecKey {
  const family = (v.getUint8(at + 18) === 6 ? 6 : 4) as 4 | 6;
  return {
    family,
    l4proto: v.getUint8(at + 19),
    addr: formatAddr(addrOf(family, b.subarray(at, at + 16))),
    port: v.getUint16(at + 16, false),
  };
}

/** Decodes a `struct mapping_record` (at `at` of `b`): its state, references and endpoint. */
export function decodeRecord(b: Uint8Array, at = 0): MappingRecord {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const f = MAPPING_RECORD_LAYOUT.fields;
  const family = (v.getUint8(at + f.family.offset) === 6 ? 6 : 4) as 4 | 6;
  const ia = at + f.ct.offset + CT_VALUE_LAYOUT.fields.int_addr.offset;
  return {
    state: v.getUint32(at + f.state.offset, true),
    ref: v.getUint32(at + f.ref.offset, true),
    key: {
      family,
      l4proto: v.getUint8(at + f.l4proto.offset),
      addr: formatAddr(addrOf(family, b.subarray(ia, ia + 16))),
      port: v.getUint16(at + f.ct.offset + CT_VALUE_LAYOUT.fields.int_port.offset, false),
    },
  };
}

/** The frame that carries command `c`. */
export function encodeCmd(c: RecCmd): Uint8Array {
  const b = new Uint8Array(ETH + REC_CMD_LAYOUT.size);
  const v = new DataView(b.buffer);
  v.setUint16(12, 0x0800, false); // an IPv4 ethertype: the kernel wants a plausible frame
  v.setUint32(ETH + o("op"), c.op, true);
  v.setUint32(ETH + o("idx"), c.idx ?? 0, true);
  v.setUint32(ETH + o("slot"), c.slot ?? 0, true);
  v.setUint16(ETH + o("port_lo"), c.portLo ?? 0, true);
  v.setUint16(ETH + o("port_hi"), c.portHi ?? 0, true);
  if (c.key) putKey(v, b, ETH + o("key"), c.key);
  return b;
}

/** Decodes rec_cmd's answer from the frame it returned. */
export function decodeReply(out: Uint8Array): RecReply {
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  return {
    ret: v.getInt32(ETH + o("ret"), true),
    made: v.getUint32(ETH + o("made"), true) === 1,
    claimed: v.getUint32(ETH + o("claimed"), true) === 1,
    rec: decodeRecord(out, ETH + o("rec")),
  };
}

/** Decodes the key field of a command frame (what was asked). */
export function cmdKey(frame: Uint8Array): RecKey {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return getKey(v, frame, ETH + o("key"));
}

/** The loaded test object. */
export interface RecordsFixture {
  /** rec_cmd's program fd. */
  fd: number;
  recordsFd: number;
  outboundFd: number;
  lines: number;
  /** Runs one command on this thread's CPU. */
  run(c: RecCmd): RecReply;
  /** The record at `idx`, read from user space. */
  record(idx: number): MappingRecord;
  /** The entries of outbound line `i`, read from user space. */
  line(i: number): number[];
  close(): void;
}

/** Index of (slot, protocol index, port), as rec_index() makes it. */
export function recIndex(slot: number, pidx: number, port: number): number {
  return ((slot * 3 + pidx) << 16) | port;
}

/** Loads the test object with `lines` outbound lines (a power of two) and `slots` slots. */
export async function loadRecords(lines: number, slots = 1): Promise<RecordsFixture> {
  const bytes = Deno.readFileSync(RECORDS_OBJECT);
  const obj = bpf.openObjectMem(bytes, "records_test");
  try {
    bpf.mapSetMaxEntries(bpf.findMap(obj, "map_records"), slots * 3 * 65536);
    bpf.mapSetMaxEntries(bpf.findMap(obj, "map_outbound"), lines);
    const rodata = bpf.findMap(obj, ".rodata");
    const init = bpf.mapInitialValue(rodata);
    const mask = datasecVars(bytes, ".rodata").find((x) => x.name === "outbound_mask");
    if (!mask) throw new Error("outbound_mask not in .rodata");
    new DataView(init.buffer, init.byteOffset).setUint32(mask.offset, lines - 1, true);
    bpf.mapSetInitialValue(rodata, init);
    await bpf.loadObject(obj);
  } catch (e) {
    bpf.closeObject(obj);
    throw e;
  }
  const fd = bpf.programFd(bpf.findProgram(obj, "rec_cmd"));
  const recordsFd = bpf.mapFd(bpf.findMap(obj, "map_records"));
  const outboundFd = bpf.mapFd(bpf.findMap(obj, "map_outbound"));
  const key32 = (i: number) => new Uint8Array(new Uint32Array([i]).buffer);
  return {
    fd,
    recordsFd,
    outboundFd,
    lines,
    run(c) {
      const r = bpf.testRun(fd, encodeCmd(c));
      if (r.retval !== 0) throw new Error(`rec_cmd: verdict ${r.retval}`);
      return decodeReply(r.dataOut);
    },
    record(idx) {
      const v = bpf.mapLookup(recordsFd, key32(idx), MAPPING_RECORD_LAYOUT.size);
      if (!v) throw new Error(`no record ${idx}`);
      return decodeRecord(v);
    },
    line(i) {
      const v = bpf.mapLookup(outboundFd, key32(i), 4 * (1 + OB_ENTRIES));
      if (!v) throw new Error(`no line ${i}`);
      const w = new Uint32Array(v.slice().buffer);
      return [...w.subarray(1)];
    },
    close: () => bpf.closeObject(obj),
  };
}
