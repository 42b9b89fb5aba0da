/**
 * `--replace` with `--metrics`, in network namespaces: the einat replaced holds the metrics port
 * until it exits, right after the take-over; the new one binds it then (retrying in the
 * background) and serves `/metrics`. Without `--replace` the busy port stays an error at once.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { withSharedBpffs } from "./lib/bpffs.ts";
import { einatCmd, startEinat, stopEinat } from "./lib/einat.ts";
import { nsExecResult, type NsProcess, withTopology } from "./lib/netns.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "replace_metrics: --replace takes over an einat with --metrics and serves /metrics after",
  ...sanitize,
  fn: () =>
    withTopology(async (t) => {
      await withSharedBpffs(t.ns.router, async (bpffs) => {
        const url = "http://127.0.0.1:9482/metrics";
        const args = ["-i", "wan0", "--pin-dir", `${bpffs}/einat`, "--metrics", "127.0.0.1:9482"];
        let einat: NsProcess | null = await startEinat(t.ns.router, args);
        try {
          const scrape = () => nsExecResult(t.ns.router, ["curl", "-sS", "-m", "2", url]);
          const first = await scrape();
          assertEquals(first.code, 0, first.stderr);
          assert(/einat_bindings/.test(first.stdout), first.stdout);

          // Without --replace: the busy port is refused at once, as before.
          const plain = await nsExecResult(t.ns.router, einatCmd(args));
          assertEquals(plain.code, 2, plain.stderr);
          assert(/--metrics 127\.0\.0\.1:9482: .*in use/i.test(plain.stderr), plain.stderr);

          const old = einat;
          einat = await startEinat(t.ns.router, [...args, "--replace"]);
          const oldExit = await old.output(10000);
          assertEquals(oldExit.code, 0, oldExit.stderr);
          // The new einat binds the port once the old one is gone.
          const end = Date.now() + 10000;
          let r = await scrape();
          while ((r.code !== 0 || !/einat_bindings/.test(r.stdout)) && Date.now() < end) {
            await new Promise((res) => setTimeout(res, 200));
            r = await scrape();
          }
          assertEquals(r.code, 0, `${r.stderr}\n${einat.stderrText()}`);
          assert(/einat_bindings\{interface="wan0"/.test(r.stdout), r.stdout);
          assert(/metrics endpoint/.test(einat.stderrText()), einat.stderrText());
        } finally {
          if (einat) assertEquals(await stopEinat(einat), 0, einat.stderrText());
        }
      });
    }),
});
