/**
 * tcpdump in a test namespace: start on a device with a filter, read the lines so far, stop
 * (SIGINT) and get every line.
 * @module
 */
import type { NsProcess, Topology } from "./netns.ts";

/** A running capture. */
export interface Capture {
  proc: NsProcess;
  /** Packet lines printed so far. */
  lines(): string[];
  /** Stops tcpdump and returns every packet line. */
  stop(): Promise<string[]>;
}

const packetLines = (text: string) => text.split("\n").filter((l) => l.trim() !== "");

/** Starts `tcpdump -i dev -nn -l filter` in `ns` and waits until it listens. */
export async function capture(
  t: Topology,
  ns: string,
  dev: string,
  filter: string,
): Promise<Capture> {
  const p = t.spawn(ns, ["tcpdump", "-i", dev, "-nn", "-l", "-U", filter], {
    killAfterMs: 120_000,
  });
  const until = Date.now() + 5000;
  while (!/listening on/.test(p.stderrText())) {
    if (!p.running() || Date.now() > until) {
      throw new Error(`tcpdump did not start: ${p.stderrText()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc: p,
    lines: () => packetLines(p.stdoutText()),
    async stop() {
      await new Promise((r) => setTimeout(r, 200));
      p.kill("SIGINT");
      await p.output(5000);
      const dropped = /(\d+) packets? dropped by kernel/.exec(p.stderrText());
      if (dropped && Number(dropped[1]) > 0) {
        throw new Error(`tcpdump dropped packets: ${p.stderrText()}`);
      }
      return packetLines(p.stdoutText());
    },
  };
}
