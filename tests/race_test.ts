/**
 * New mappings made on two CPUs at once (`BPF_PROG_TEST_RUN` from two workers pinned to CPUs 0
 * and 1, meeting at a barrier before every packet): the first packets of one internal endpoint
 * race to create its binding, and, to one remote, its session. Whoever loses takes the winner's
 * binding, and the reference counts still equal the sessions afterwards (tests/lib/fuzz.ts
 * checkMaps: both directions agree, every session has its binding, ref = sessions).
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { bindingView, checkMaps, EXT_CIDRS, fuzzConfig, PER_HOST_COUNTED } from "./lib/fuzz.ts";
import { formatAddr, parseAddr } from "../lib/config/cidr.ts";
import { loadTestNat, sessionsOf, TC_ACT_OK } from "./lib/natfixture.ts";
import { CT_FLAGS, CT_STATE } from "../lib/nat/codec.ts";
import { buildPacket } from "./lib/packet.ts";
import type { RaceJob } from "./lib/race_worker.ts";
import { onTwoCpus } from "./lib/race.ts";

const ENDPOINTS = 600;

const lan = (j: number) => `192.0.2.${10 + (j % 200)}`;
// half keep their port if they can (in the ranges), half need a port chosen for them
const lanPort = (j: number) => j % 2 ? 20000 + j : 40000 + j;
const payload = new TextEncoder().encode("race");

/** An internal endpoint's UDP packet to a remote (spec). */
const udpFrom = (j: number, remote: string) => ({
  family: 4 as const,
  proto: "udp" as const,
  src: lan(j),
  dst: remote,
  sport: lanPort(j),
  dport: 53,
  payload,
});

/** The frame of an internal endpoint's first UDP packet to a remote. */
function first(j: number, remote: string): Uint8Array {
  return buildPacket({
    family: 4,
    proto: "udp",
    src: lan(j),
    dst: remote,
    sport: lanPort(j),
    dport: 53,
    payload,
  });
}

const LIMITS = { bindings: 2 * ENDPOINTS, ctEntries: 8 * ENDPOINTS };

Deno.test({
  name: "race: one endpoint's first packets on two CPUs at once make one binding, refs = sessions",
  ignore: navigator.hardwareConcurrency < 2,
  async fn() {
    const ic = fuzzConfig(PER_HOST_COUNTED); // the counts per host checked too
    const n = await loadTestNat(ic, EXT_CIDRS);
    try {
      // Steps alternate: the same remote on both CPUs (one session, made once), or a remote
      // each (two sessions on the one binding).
      const stepsA = [], stepsB = [];
      let sessions = 0;
      for (let j = 0; j < ENDPOINTS; j++) {
        const same = j % 4 < 2;
        stepsA.push({ fd: n.nat.egressFd, bytes: first(j, "198.51.100.1") });
        stepsB.push({
          fd: n.nat.egressFd,
          bytes: first(j, same ? "198.51.100.1" : "198.51.100.2"),
        });
        sessions += same ? 1 : 2;
      }
      const race = async (a: RaceJob["steps"], b: RaceJob["steps"], what: string) => {
        const [{ verdicts: va }, { verdicts: vb }] = await onTwoCpus(a, b);
        assertEquals(va.filter((v) => v !== TC_ACT_OK), [], `${what}, CPU 0: all translated`);
        assertEquals(vb.filter((v) => v !== TC_ACT_OK), [], `${what}, CPU 1: all translated`);
        const check = checkMaps(n, LIMITS, ic);
        assertEquals(check.violations, [], what);
        assertEquals([check.bindings, check.sessions], [ENDPOINTS, sessions], what);
      };
      await race(stepsA, stepsB, "first packets");

      // Then both sides at once: one CPU's packet goes out to a third remote (a new session,
      // a reference on the binding) while the other's comes in from a fourth (endpoint-
      // independent filtering lets it in, reading the binding; it makes no session).
      const view = bindingView(n);
      const outA = [], inB = [];
      for (let j = 0; j < ENDPOINTS; j++) {
        const ext = view.get(true, 4, 17, parseAddr(lan(j)), lanPort(j));
        assert(ext, `endpoint ${j} mapped`);
        outA.push({ fd: n.nat.egressFd, bytes: first(j, "198.51.100.3") });
        inB.push({
          fd: n.nat.ingressFd,
          bytes: buildPacket({
            family: 4,
            proto: "udp",
            src: "198.51.100.4",
            dst: formatAddr(ext.addr.subarray(0, 4)),
            sport: 53,
            dport: ext.port,
            payload,
          }),
        });
        sessions += 1;
      }
      await race(outA, inB, "sessions from both sides");
    } finally {
      n.close();
    }
  },
});

Deno.test({
  name: "race: a session expiring on one CPU while another makes a new session on its binding",
  ignore: navigator.hardwareConcurrency < 2,
  async fn() {
    const ms = 30;
    const ic = fuzzConfig({
      ...PER_HOST_COUNTED,
      timeouts: {
        fragment: ms,
        icmpDefault: ms,
        udpMin: ms,
        udpDefault: ms,
        tcpTrans: ms,
        tcpEst: ms,
        tcpClosing: ms,
        other: ms,
      },
    });
    const n = await loadTestNat(ic, EXT_CIDRS);
    try {
      const view = bindingView(n);
      const ports: number[] = [];
      for (let j = 0; j < ENDPOINTS; j++) {
        assertEquals(n.egress(udpFrom(j, "198.51.100.1")).retval, TC_ACT_OK);
        ports.push(view.get(true, 4, 17, parseAddr(lan(j)), lanPort(j))!.port);
      }
      await new Promise((r) => setTimeout(r, 3 * ms)); // every session expired, none swept
      // CPU 0: the remote's packet finds its session expired and ends it (and the binding with
      // its last session); CPU 1: the host's packet to another remote makes a session on it.
      const inA = ports.map((port) => ({
        fd: n.nat.ingressFd,
        bytes: buildPacket({
          family: 4,
          proto: "udp",
          src: "198.51.100.1",
          dst: EXT_CIDRS[0].split("/")[0],
          sport: 53,
          dport: port,
          payload,
        }),
      }));
      const outB = ports.map((_, j) => ({ fd: n.nat.egressFd, bytes: first(j, "198.51.100.2") }));
      await onTwoCpus(inA, outB);
      const check = checkMaps(n, LIMITS, ic);
      assertEquals(check.violations, []);
    } finally {
      n.close();
    }
  },
});

Deno.test({
  name:
    "race: a FIN each way on two CPUs at once closes the session (neither direction's flag is lost)",
  ignore: navigator.hardwareConcurrency < 2,
  async fn() {
    const CONNS = 1500;
    const n = await loadTestNat(fuzzConfig(), EXT_CIDRS);
    try {
      const SRV = "198.51.100.1";
      const tcp = (src: string, sport: number, dst: string, dport: number, flags: object) =>
        buildPacket({ family: 4, proto: "tcp", src, dst, sport, dport, tcpFlags: flags });
      const view = bindingView(n);
      const finOut = [], finIn = [];
      for (let j = 0; j < CONNS; j++) {
        const port = 30000 + j;
        const run = (fd: number, b: Uint8Array) =>
          n.runRaw(fd === n.nat.egressFd ? "egress" : "ingress", b);
        assertEquals(
          run(n.nat.egressFd, tcp(lan(j), port, SRV, 443, { syn: true })).retval,
          TC_ACT_OK,
        );
        const ext = view.get(true, 4, 6, parseAddr(lan(j)), port)!;
        const extAddr = formatAddr(ext.addr.subarray(0, 4));
        run(n.nat.ingressFd, tcp(SRV, 443, extAddr, ext.port, { syn: true, ack: true }));
        run(n.nat.egressFd, tcp(lan(j), port, SRV, 443, { ack: true }));
        finOut.push({
          fd: n.nat.egressFd,
          bytes: tcp(lan(j), port, SRV, 443, { fin: true, ack: true }),
        });
        finIn.push({
          fd: n.nat.ingressFd,
          bytes: tcp(SRV, 443, extAddr, ext.port, { fin: true, ack: true }),
        });
      }
      const est = sessionsOf(n.nat.maps).filter((s) => s.value.state === CT_STATE.EST).length;
      assertEquals(est, CONNS, "every connection established");
      const [{ verdicts: va }, { verdicts: vb }] = await onTwoCpus(finOut, finIn);
      assertEquals([...va, ...vb].filter((v) => v !== TC_ACT_OK), [], "all translated");
      const both = CT_FLAGS.FIN_OUT | CT_FLAGS.FIN_IN;
      const open = sessionsOf(n.nat.maps).filter((s) =>
        s.value.state !== CT_STATE.CLOSING || (s.value.flags & both) !== both
      );
      assertEquals(open.length, 0, `${open.length} of ${CONNS} sessions lost a FIN`);
    } finally {
      n.close();
    }
  },
});
