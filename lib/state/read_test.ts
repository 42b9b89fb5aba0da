import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { CT_FLAGS, CT_STATE, IPPROTO } from "../nat/codec.ts";
import { sessionState, timeoutClass } from "./read.ts";

const F = CT_FLAGS;

Deno.test("sessionState names TCP sessions as the datapath's state has them", () => {
  const tcp = (flags: number) => sessionState(IPPROTO.TCP, flags);
  assertEquals(tcp(F.SEEN_OUT | F.SYN_OUT), "SYN_SENT");
  assertEquals(tcp(F.SEEN_IN | F.SYN_IN), "SYN_RECV");
  // Answered without a SYN: still opening (bpf/lib/ct.h ct_state_of).
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN | F.SYN_OUT), "SYN_SENT");
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN | F.SYN_IN), "SYN_RECV");
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN | F.SYN_OUT | F.SYN_IN), "ESTABLISHED");
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN), "ESTABLISHED", "picked up mid-stream");
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN | F.SYN_OUT | F.SYN_IN | F.FIN_OUT), "FIN_WAIT");
  assertEquals(tcp(F.SEEN_OUT | F.SEEN_IN | F.FIN_OUT | F.FIN_IN), "CLOSING");
  assertEquals(tcp(F.SEEN_OUT | F.RST), "RESET");
  assertEquals(sessionState(IPPROTO.UDP, F.SEEN_OUT), "UNREPLIED");
  assertEquals(sessionState(IPPROTO.UDP, F.SEEN_OUT | F.SEEN_IN), "ASSURED");
});

Deno.test("timeoutClass names the timeout a session's state picks", () => {
  assertEquals(timeoutClass(CT_STATE.TRANS), "transitory");
  assertEquals(timeoutClass(CT_STATE.EST), "established");
  assertEquals(timeoutClass(CT_STATE.CLOSING), "closing");
});
