import { equal, ok } from "node:assert/strict";

// A script that logs far more than a pipe holds, then says "done" on stdout.
const SCRIPT = `
import * as log from ${JSON.stringify(new URL("./log.ts", import.meta.url).href)};
for (let i = 0; i < 20000; i++) log.info("a line to fill the pipe", { i, pad: "x".repeat(64) });
log.error("after the reader left");
await Deno.stdout.write(new TextEncoder().encode("done\\n"));
`;

Deno.test("log: a stderr pipe whose reader went away does not throw", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", SCRIPT],
    env: { EINAT_LOG: "info" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Read the first lines, then close our end: the child's next writes fail (EPIPE).
  const reader = child.stderr.getReader();
  const first = await reader.read();
  ok(!first.done && first.value.length > 0);
  await reader.cancel();
  const out = new TextDecoder().decode(await new Response(child.stdout).arrayBuffer());
  const status = await child.status;
  equal(out, "done\n");
  equal(status.code, 0);
});

Deno.test("log: a field that cannot be printed does not throw", async () => {
  const { info } = await import("./log.ts");
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  info("log_test: a circular field", { loop, n: 1n });
});
