/**
 * BPF trace logging (`bpf_log_level`, `--bpf-log`): what each level writes to the kernel's trace
 * buffer, through BPF_PROG_TEST_RUN. Each case uses client ports of its own, so lines of other
 * runs cannot match. No namespace.
 */
import { assertEquals } from "./lib/assert.ts";
import { type PacketSpec, udpSpec } from "./lib/packet.ts";
import {
  loadTestNat,
  ranges,
  TC_ACT_OK,
  TC_ACT_SHOT,
  testInterfaceConfig,
} from "./lib/natfixture.ts";

const EXT = "203.0.113.1";
const LAN1 = "192.0.2.10";
const SRV1 = "198.51.100.1";
const SRV2 = "198.51.100.2";
const TRACING = "/sys/kernel/tracing";
const mounted = (() => {
  try {
    Deno.statSync(`${TRACING}/trace`);
    return true;
  } catch {
    return false;
  }
})();

/**
 * Runs `script` (sh) where the trace files are: here when tracefs is mounted, else in a mount
 * namespace of its own that mounts it (`unshare -m`): tracefs is one instance whatever the
 * namespace, and the machine's mounts stay as they are. Returns its output, or null on failure.
 */
function withTracefs(script: string): string | null {
  const cmd = mounted
    ? ["sh", "-c", script]
    : ["unshare", "-m", "sh", "-c", `mount -t tracefs nodev ${TRACING} && ${script}`];
  const r = new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "null" })
    .outputSync();
  return r.success ? new TextDecoder().decode(r.stdout) : null;
}
const hasTrace = withTracefs(`test -w ${TRACING}/trace_marker`) !== null;

const udp = (sport: number): PacketSpec =>
  udpSpec(4, LAN1, sport, SRV1, 53, new TextEncoder().encode("hi"));

/**
 * Marks the trace buffer (`trace_marker`) and returns the mark: the buffer is the kernel's and
 * outlives processes, so lines of earlier runs on random ports could match a case's.
 */
function markTrace(): string {
  const mark = `einat-test-${crypto.randomUUID()}`;
  if (withTracefs(`echo ${mark} > ${TRACING}/trace_marker`) === null) {
    throw new Error("cannot write the trace marker");
  }
  return mark;
}

/** The trace buffer's einat lines after `mark` that name port `port` (as `:port`, whole). */
function linesOf(mark: string, port: number): string[] {
  const re = new RegExp(`:${port}(?!\\d)`);
  const all = (withTracefs(`cat ${TRACING}/trace`) ?? "").split("\n");
  const from = all.findLastIndex((l) => l.includes(mark));
  return all.slice(from + 1).filter((l) => /einat: /.test(l) && re.test(l))
    .map((l) => l.slice(l.indexOf("einat: ")));
}

/** A client port no earlier run of this test used (the trace buffer outlives processes). */
const freshPort = () => 40000 + Math.floor(Math.random() * 9000);

for (const level of [0, 1, 2, 3, 4, 5]) {
  Deno.test({
    name: `bpf log level ${level}: ${
      [
        "nothing is written",
        "nothing yet (no failure of the programs' own)",
        "drops for want of a port",
        "new mappings too",
        "new sessions and every drop too",
        "every packet too",
      ][level]
    }`,
    ignore: !hasTrace,
    fn: async () => {
      // One UDP port to hand out: a second endpoint is refused (drop_no_port).
      const one = [{ start: 20000, end: 20000 }];
      const n = await loadTestNat(
        testInterfaceConfig({ bpfLogLevel: level, defaultRanges: ranges(one) }),
      );
      try {
        const mark = markTrace();
        const port = freshPort();
        const first = n.egress(udp(port));
        assertEquals(first.retval, TC_ACT_OK);
        const ext = first.out.sport!;
        // A second remote: a new session on the mapping.
        assertEquals(n.egress({ ...udp(port), dst: SRV2 }).retval, TC_ACT_OK);
        // Another endpoint: no port left for it.
        n.egress(udp(port + 1));
        // A TCP RST of an endpoint without mapping: dropped (drop_untranslatable).
        const rst = n.egress({
          family: 4,
          src: LAN1,
          dst: SRV1,
          proto: "tcp",
          sport: port + 2,
          dport: 80,
          tcpFlags: { rst: true },
        });
        assertEquals(rst.retval, TC_ACT_SHOT);
        const lines = [port, port + 1, port + 2].flatMap((p) => linesOf(mark, p));
        const expect = (re: string, from: number) =>
          assertEquals(
            lines.some((l) => new RegExp(`^einat: ${re}$`).test(l)),
            level >= from,
            `level ${level}, /${re}/ ${level >= from ? "missing" : "written"}:\n${
              lines.join("\n")
            }`,
          );
        const q = (s: string) => s.replaceAll(".", "\\.");
        expect(`egress udp ${q(LAN1)}:${port} -> ${q(SRV1)}:53`, 5);
        expect(`new mapping udp ${q(LAN1)}:${port} as ${q(EXT)}:${ext}, remote ${q(SRV1)}:53`, 3);
        expect(`new session udp ${q(LAN1)}:${port} as ${q(EXT)}:${ext}, remote ${q(SRV2)}:53`, 4);
        expect(
          `drop udp ${q(LAN1)}:${port + 1} -> ${
            q(SRV1)
          }:53: no free external port \\(drop_no_port\\)`,
          2,
        );
        expect(
          `drop tcp ${q(LAN1)}:${port + 2} -> ${
            q(SRV1)
          }:80: untranslatable \\(drop_untranslatable\\)`,
          4,
        );
        if (level <= 1) assertEquals(lines, []);
      } finally {
        n.close();
      }
    },
  });
}
