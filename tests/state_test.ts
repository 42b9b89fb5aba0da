/**
 * Pinned state in a network namespace of its own: sessions of a stopped einat
 * expire at the next start under its configuration; the version stamp refuses
 * incompatible state untouched (bindings of the hash layout too), recreates
 * transient maps of another layout, and keeps a pinned map's size; `show` refuses state of
 * another layout instead of reading it.
 */
import { assert, assertEquals } from "./lib/assert.ts";
import { pinDirIn, withPrivateBpffs, withSharedBpffs } from "./lib/bpffs.ts";
import { withVariant } from "./lib/bpfobj.ts";
import { tamperMeta, tamperStamp } from "./lib/stamp.ts";
import { einatCmd, startEinat, stopEinat } from "./lib/einat.ts";
import {
  deleteNs as deleteTestNs,
  nsExec,
  nsExecResult,
  type NsProcess,
  peerCmd,
  run,
  runResult,
  spawnInNs,
  testPrefix,
} from "./lib/netns.ts";
import * as bpf from "../lib/ffi/libbpf.ts";
import { closeFd, dupFd } from "../lib/ffi/libc.ts";
import {
  asidePin,
  deepStamps,
  encodeMeta,
  layoutStamps,
  META_FORMAT,
  META_NAME,
  META_VALUE_SIZE,
  META_VERSION,
  migratingMark,
  STATE_MAPS,
  type StateMap,
  writeBtf,
} from "../lib/state/pin.ts";
import { embeddedObject } from "../lib/nat/loader.ts";
import { elfSection } from "../lib/btf.ts";
import {
  CT_KEY_LAYOUT,
  CT_VALUE_LAYOUT,
  FRAG_KEY_LAYOUT,
  MAPPING_RECORD_LAYOUT,
} from "../lib/nat/codec.ts";
import {
  openPinned,
  readBindings,
  readCounters,
  readSessions,
  type SessionRow,
} from "../lib/state/read.ts";

const sanitize = { sanitizeOps: false, sanitizeResources: false };

function nsName(): string {
  return `${testPrefix()}-s${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
}

/** Adds wan0 (203.0.113.1) and an internal source 192.0.2.10 on lo to namespace `ns`. */
async function setUpNs(ns: string): Promise<void> {
  await run(["ip", "-n", ns, "-batch", "-"], {
    stdin: [
      "link set lo up",
      "link add wan0 type veth peer name peer0",
      "addr add 203.0.113.1/24 dev wan0",
      "addr add 192.0.2.10/32 dev lo",
      "link set wan0 up",
      "link set peer0 up",
      "neigh add 203.0.113.50 lladdr 02:00:00:00:00:50 dev wan0 nud permanent",
    ].join("\n") + "\n",
  });
}

/** Kills what still runs in namespace `ns` and deletes it. */
async function deleteNs(ns: string): Promise<void> {
  const r = await deleteTestNs(ns);
  if (r.code !== 0) throw new Error(`ip netns del ${ns}: ${r.stderr}`);
}

/** A namespace with wan0 (203.0.113.1) and an internal source 192.0.2.10 on lo. */
async function withNs(
  fn: (ns: string, pin: string, dir: string) => Promise<void>,
): Promise<void> {
  const ns = nsName();
  await run(["ip", "netns", "add", ns]);
  try {
    await setUpNs(ns);
    await withSharedBpffs(ns, (bpffs) => fn(ns, `${bpffs}/einat`, pinDirIn(`${bpffs}/einat`, ns)));
  } finally {
    await deleteNs(ns);
  }
}

function config(extra: string): string {
  const f = Deno.makeTempFileSync({ prefix: "einat-state-", suffix: ".toml" });
  Deno.writeTextFileSync(
    f,
    `[[interfaces]]\nif_name = "wan0"\nnat44 = true\nprefer_tcx = false\n${extra}\n`,
  );
  return f;
}

/** One outbound UDP datagram from 192.0.2.10:40000 (sent again until a one-way session shows). */
async function send(ns: string, dir: string, port = 40000): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await sendOnce(ns, port);
    if (state(dir).sessions.length > 0) break;
  }
}

async function sendOnce(ns: string, port: number): Promise<void> {
  await nsExecResult(
    ns,
    peerCmd("udp-send", [
      "--bind",
      "192.0.2.10",
      "--from-port",
      String(port),
      "--to",
      "203.0.113.50:9",
      "--reply-timeout-ms",
      "50",
    ]),
  );
}

function state(dir: string) {
  const st = openPinned(dir, "wan0");
  if (!st) return { sessions: [], bindings: [], expired: 0 };
  try {
    return {
      sessions: readSessions(st),
      bindings: readBindings(st),
      expired: readCounters(st).events.expired_session,
    };
  } finally {
    st.close();
  }
}

async function poll(ok: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

Deno.test({
  name:
    "state: sessions of a stopped einat expire at the next start, under its timeouts; a running one sweeps them",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      const short = config(`timeout_udp_min = "2s"`);
      const long = config(`timeout_udp_min = "60s"`);
      const shorter = config(`timeout_udp_min = "1s"`);
      // The running sweep's test: a timeout longer than the time between a datagram and the
      // read that sees its session on a slow host (the sweep runs every second).
      const RUNNING_S = 3;
      const running = config(`timeout_udp_min = "${RUNNING_S}s"`);
      try {
        let p = await startEinat(ns, ["-c", short, "--pin-dir", pin]);
        await send(ns, dir);
        const s0 = state(dir);
        assertEquals(s0.sessions.length, 1);
        assert(s0.sessions[0].secondsLeft! <= 2, JSON.stringify(s0.sessions));
        assertEquals(await stopEinat(p), 0, p.stderrText());
        assertEquals(state(dir).sessions.length, 1, "kept after stop");
        // Nothing runs: the session stays, shown as expired under the stamp's 2 s.
        await new Promise((r) => setTimeout(r, 2500));
        const s1 = state(dir).sessions;
        assertEquals(s1.map((s) => s.expired), [true], JSON.stringify(s1));

        // An einat with 60 s keeps it (idle 2.5 s); one with 1 s sweeps it at start.
        p = await startEinat(ns, ["-c", long, "--pin-dir", pin]);
        assert(/pinned state reused .* sessions=1 expired=0/.test(p.stderrText()), p.stderrText());
        assert(state(dir).sessions[0].secondsLeft! > 50, JSON.stringify(state(dir)));
        assertEquals(await stopEinat(p), 0, p.stderrText());
        p = await startEinat(ns, ["-c", shorter, "--pin-dir", pin]);
        assert(
          /pinned state reused .* bindings=1 sessions=1 expired=1/.test(p.stderrText()),
          p.stderrText(),
        );
        assertEquals(state(dir).sessions, [], "swept at start");
        assertEquals(state(dir).bindings, [], "the binding went with its last session");
        assertEquals(state(dir).expired, 1);

        assertEquals(await stopEinat(p), 0, p.stderrText());

        // While einat runs, its sweep (every second) removes a session past its RUNNING_S; it
        // must be there first, and be gone within RUNNING_S + 1 s (and a margin).
        p = await startEinat(ns, ["-c", running, "--pin-dir", pin]);
        await send(ns, dir);
        assertEquals(state(dir).sessions.length, 1);
        assert(
          await poll(() => state(dir).sessions.length === 0, (RUNNING_S + 1 + 4) * 1000),
          `swept within ${RUNNING_S} s + 1 s`,
        );
        assertEquals(state(dir).bindings, []);
        assertEquals(state(dir).expired, 2);
        assertEquals(await stopEinat(p), 0, p.stderrText());
      } finally {
        for (const f of [short, long, shorter, running]) Deno.removeSync(f);
      }
    }),
});

Deno.test({
  name:
    "state: the version stamp refuses incompatible sessions untouched, recreates counters of another layout, keeps a pinned size",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      const small = config(`binding_max_records = 1000`);
      try {
        let p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        await send(ns, dir);
        assertEquals(await stopEinat(p), 0, p.stderrText());

        // Counters of another layout are recreated; a changed size keeps the pinned one.
        tamperStamp(dir, (m) => m.map_stats.layout = "0000000000000000");
        p = await startEinat(ns, ["-c", small, "--pin-dir", pin]);
        const log = p.stderrText();
        assert(/pinned map has another layout; recreated empty .*map=map_stats/.test(log), log);
        assert(
          /pinned map keeps its size.*map=map_outbound pinned=32768 configured=256/.test(log),
          log,
        );
        assert(/pinned state reused .*recreated=map_stats .*sessions=1/.test(log), log);
        assertEquals(await stopEinat(p), 0, p.stderrText());

        // Sessions of another layout: refused, nothing touched, nothing attached.
        let state0Layout = "";
        tamperStamp(dir, (m) => {
          state0Layout = m.map_ct.layout;
          m.map_ct.layout = "0000000000000000";
          m.map_ct.semantics = 0; // a layout of another meaning: not carried over
        });
        const r = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", pin]));
        assertEquals(r.code, 2, r.stderr);
        assert(
          /map_ct .*another layout.*einat --flush -i wan0 --pin-dir/.test(r.stderr),
          r.stderr,
        );
        assertEquals(
          (await nsExec(ns, ["tc", "filter", "show", "dev", "wan0", "egress"])).trim(),
          "",
        );

        // Bindings pinned as hash entries (einat before the mapping records): refused as well.
        tamperStamp(dir, (m) => {
          m.map_ct.layout = state0Layout;
          m.map_ct.semantics = 1;
        });
        // (read back under the stamp: show refuses state of another layout)
        assertEquals(state(dir).sessions.length, 1, "sessions untouched");
        const legacy = bpf.mapCreate(bpf.MapType.HASH, "map_binding", 24, 24, 16);
        try {
          bpf.objPin(legacy, `${dir}/map_binding`);
        } finally {
          closeFd(legacy);
        }
        const rl = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", pin]));
        assertEquals(rl.code, 2, rl.stderr);
        assert(
          /before mapping records \(map_binding\).*einat --flush -i wan0 --pin-dir/.test(rl.stderr),
          rl.stderr,
        );
        assertEquals(state(dir).sessions.length, 1, "sessions untouched");

        // Maps without a stamp: refused as well.
        Deno.removeSync(`${dir}/${META_NAME}`);
        const r2 = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", pin]));
        assertEquals(r2.code, 2, r2.stderr);
        assert(/without a readable einat version stamp/.test(r2.stderr), r2.stderr);

        // --flush, then a fresh start.
        const f = await nsExecResult(ns, einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]));
        assertEquals(f.code, 0, f.stderr);
        p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        assert(/pinned state created/.test(p.stderrText()), p.stderrText());
        assertEquals(await stopEinat(p), 0, p.stderrText());
      } finally {
        Deno.removeSync(small);
      }
    }),
});

Deno.test({
  name:
    "state: session_counters counts a session's datagrams for show (JSON and text), kept across a restart, gone when turned off",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      const on = config("session_counters = 1024"), off = config("");
      const showJson = async () => {
        const r = await nsExecResult(ns, einatCmd(["show", "--json", "--pin-dir", pin]));
        assertEquals(r.code, 0, r.stderr);
        return (JSON.parse(r.stdout) as { sessions: SessionRow[] }).sessions;
      };
      try {
        let p = await startEinat(ns, ["-c", on, "--pin-dir", pin]);
        await send(ns, dir);
        const [first] = await showJson();
        const c0 = first.counters!;
        assert(c0 && c0.packetsOut >= 1 && c0.packetsIn === 0, JSON.stringify(first));
        const size = c0.bytesOut / c0.packetsOut; // one datagram's IP length
        for (let i = 0; i < 2; i++) await sendOnce(ns, 40000);
        const [s1] = await showJson();
        assertEquals(s1.counters, {
          packetsOut: c0.packetsOut + 2,
          bytesOut: (c0.packetsOut + 2) * size,
          packetsIn: 0,
          bytesIn: 0,
        });
        const top = await nsExecResult(ns, einatCmd(["show", "--top", "1", "--pin-dir", pin]));
        assertEquals(top.code, 0, top.stderr);
        assert(/the 1 sessions that moved the most bytes \(--top 1\)/.test(top.stdout), top.stdout);
        assert(!/SESSIONS/.test(top.stdout), "no bindings table");
        const text = await nsExecResult(ns, einatCmd(["show", "--pin-dir", pin]));
        assert(
          new RegExp(
            `PACKETS OUT/IN .*\\n.* ${c0.packetsOut + 2}/0 +${(c0.packetsOut + 2) * size}/0`,
          )
            .test(text.stdout),
          text.stdout,
        );
        assertEquals(await stopEinat(p), 0, p.stderrText());

        // Pinned with the state: the next einat goes on counting where this one stopped.
        p = await startEinat(ns, ["-c", on, "--pin-dir", pin]);
        await sendOnce(ns, 40000);
        assertEquals((await showJson())[0].counters?.packetsOut, c0.packetsOut + 3);
        assertEquals(await stopEinat(p), 0, p.stderrText());

        // Turned off: the table goes (one entry, recreated), show lists no counts.
        p = await startEinat(ns, ["-c", off, "--pin-dir", pin]);
        assert(/session counters resized; recreated empty/.test(p.stderrText()), p.stderrText());
        await sendOnce(ns, 40000);
        const [s3] = await showJson();
        assert(!("counters" in s3), JSON.stringify(s3));
        const noTop = await nsExecResult(ns, einatCmd(["show", "--top", "3", "--pin-dir", pin]));
        assertEquals(noTop.code, 2, noTop.stdout);
        assert(/session_counters is off/.test(noTop.stderr), noTop.stderr);
        assertEquals(await stopEinat(p), 0, p.stderrText());
      } finally {
        for (const f of [on, off]) Deno.removeSync(f);
      }
    }),
});

Deno.test({
  name:
    "state: a layout change inside a nested struct (ct_value in mapping_record), which the stamp does not see, is carried over by the BTF left beside the state",
  ...sanitize,
  fn: () =>
    withVariant("EINAT_TEST_NESTED_LAYOUT", (variant) =>
      withNs(async (ns, pin, dir) => {
        const before = await twoBindingsPinned(ns, pin, dir);
        // The variant's ct_value: int_addr@0 created_s@16 int_port@20 state@22 flags@23
        // last_seen_ns@24, a mapping_record's own members as they were: its stamp is the same.
        const vBytes = Deno.readFileSync(variant);
        const vStamps = layoutStamps(vBytes), own = layoutStamps(embeddedObject());
        assertEquals(vStamps.map_records, own.map_records, "the stamp cannot tell");
        const V = CT_VALUE_LAYOUT.fields;
        const moved = { int_addr: 0, created_s: 16, int_port: 20, state: 22, flags: 23 };
        const toVariant = (src: Uint8Array, so: number, dst: Uint8Array, o: number) => {
          const copy = src.slice(so, so + CT_VALUE_LAYOUT.size);
          for (const [f, at] of Object.entries(moved)) {
            const { offset, size } = V[f as keyof typeof moved];
            dst.set(copy.subarray(offset, offset + size), o + at);
          }
        };
        const rewrite = (map: string, keySize: number, valueSize: number, ctAt: number) => {
          const fd = bpf.objGetPinned(`${dir}/${map}`);
          try {
            const entries: [Uint8Array, Uint8Array][] = [];
            bpf.forEachEntry(fd, keySize, valueSize, (e) => {
              if (map === "map_records" && (e.values[e.vo] & 3) === 0) return; // free
              const v = e.values.slice(e.vo, e.vo + valueSize);
              toVariant(e.values, e.vo + ctAt, v, ctAt);
              entries.push([e.keys.slice(e.ko, e.ko + keySize), v]);
            });
            for (const [k, v] of entries) bpf.mapUpdate(fd, k, v);
            return entries.length;
          } finally {
            closeFd(fd);
          }
        };
        const R = MAPPING_RECORD_LAYOUT;
        assertEquals(rewrite("map_records", 4, R.size, R.fields.ct.offset), 2);
        assertEquals(rewrite("map_ct", CT_KEY_LAYOUT.size, CT_VALUE_LAYOUT.size, 0), 1);
        // As that einat would have stamped them (each map's deep hash tells the nested
        // change) and the BTF it would have left beside them.
        stampAs(dir, vBytes, ["map_records", "map_ct"]);

        const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        try {
          const log = p.stderrText();
          assert(/carried over to this einat's layout .*map=map_records entries=2/.test(log), log);
          assert(/carried over to this einat's layout .*map=map_ct entries=1/.test(log), log);
          await assertCarriedOver(ns, dir, before);
        } finally {
          assertEquals(await stopEinat(p), 0, p.stderrText());
        }
      })),
});

/**
 * Runs einat in `ns` to pin two bindings and three sessions in `dir`: 192.0.2.10:40000 to two
 * remotes (a session inline in its record, one in map_ct), 40001 to one; stops it and returns
 * the state as it left it.
 */
async function twoBindingsPinned(ns: string, pin: string, dir: string) {
  await run(["ip", "-n", ns, "neigh", "add", "203.0.113.51", "lladdr", "02:00:00:00:00:51"]
    .concat(["dev", "wan0", "nud", "permanent"]));
  const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
  await send(ns, dir, 40000);
  await nsExecResult(
    ns,
    peerCmd(
      "udp-send",
      ["--bind", "192.0.2.10", "--from-port", "40000"].concat(
        ["--to", "203.0.113.51:9", "--reply-timeout-ms", "50"],
      ),
    ),
  );
  await sendOnce(ns, 40001);
  const before = state(dir);
  assertEquals([before.bindings.length, before.sessions.length], [2, 3]);
  assertEquals(await stopEinat(p), 0, p.stderrText());
  return before;
}

Deno.test({
  name:
    "state: bindings a narrower port range leaves outside are kept (they map until idle, as conntrack entries outlive a changed rule), and the start says so",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      await twoBindingsPinned(ns, pin, dir);
      const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin, "--ports", "30000-30999"]);
      try {
        const log = p.stderrText();
        assert(
          /INFO {2}bindings outside the port ranges kept: .* ifname=wan0 bindings="?203\.0\.113\.1\/udp=2"?/
            .test(log),
          log,
        );
        assertEquals(state(dir).bindings.length, 2, "kept");
      } finally {
        assertEquals(await stopEinat(p), 0, p.stderrText());
      }
      // Within the ranges again: nothing to say.
      const q = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
      try {
        assert(!/outside the port ranges/.test(q.stderrText()), q.stderrText());
      } finally {
        assertEquals(await stopEinat(q), 0, q.stderrText());
      }
    }),
});

Deno.test({
  name:
    "state: mappings pinned on an address that is no longer external are dropped at start, which says so; the summary counts what is kept",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      await twoBindingsPinned(ns, pin, dir);

      // Another external address while no einat ran: nothing pinned is on one of ours.
      await run(["ip", "-n", ns, "-batch", "-"], {
        stdin: "addr del 203.0.113.1/24 dev wan0\naddr add 203.0.113.2/24 dev wan0\n",
      });
      const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
      try {
        const log = p.stderrText();
        assert(
          /pinned mappings dropped: their external address is not one einat translates to now .*gone=203\.0\.113\.1 now="203\.0\.113\.2, .*dropped_bindings=2 dropped_sessions=3/
            .test(log),
          log,
        );
        assert(/pinned state reused .* bindings=0 sessions=0 expired=0/.test(log), log);
        const after = state(dir);
        assertEquals([after.bindings.length, after.sessions.length], [0, 0]);
      } finally {
        assertEquals(await stopEinat(p), 0, p.stderrText());
      }
    }),
});

Deno.test({
  name:
    "state: sessions pinned preallocated (earlier builds) are reused as they are, mappings kept",
  ...sanitize,
  fn: async () => {
    await withVariant("EINAT_PREALLOC", async (old) => {
      await withNs(async (ns, pin, dir) => {
        let p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin], 15000, {
          EINAT_BPF_OBJECT: old,
        });
        await send(ns, dir);
        const before = state(dir);
        assertEquals(before.sessions.length, 1);
        assertEquals(await stopEinat(p), 0, p.stderrText());
        assertEquals(pinnedFlags(dir), { map_ct: 0 }, "the old build preallocates");

        p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        const log = p.stderrText();
        assert(
          /pinned map keeps its creation flags .*map=map_ct pinned=0x0 object=0x1/.test(log),
          log,
        );
        assert(/pinned state reused .* bindings=1 sessions=1/.test(log), log);
        assertEquals(state(dir).bindings, before.bindings, "the mapping is the same");
        await send(ns, dir, 40001);
        assertEquals(state(dir).sessions.length, 2, "new sessions go into the reused maps");
        assertEquals(await stopEinat(p), 0, p.stderrText());

        // After --flush the maps are made the current way (allocated on demand).
        const f = await nsExecResult(ns, einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]));
        assertEquals(f.code, 0, f.stderr);
        p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        assertEquals(await stopEinat(p), 0, p.stderrText());
        assertEquals(pinnedFlags(dir), { map_ct: 1 }, "BPF_F_NO_PREALLOC");
      });
    });
  },
});

// The layouts of bpf/migrate_test.bpf.c (an older einat's, as it could have been): where each
// field of this einat's (lib/nat/codec.ts) sits there, written by hand.
const OLD_CT_VALUE = {
  size: 40,
  at: { last_seen_ns: 0, int_addr: 8, created_s: 24, int_port: 28, flags: 30, state: 31 },
  retired: 32, // a field this einat does not have
};
const OLD_RECORD = {
  size: 72,
  at: { ct: 0, state: 40, ref: 44, remote_addr: 48, remote_port: 64, l4proto: 66, family: 67 },
  sess: 68,
};
const OLD_CT_KEY = {
  size: 40,
  at: { remote_addr: 0, ext_addr: 16, remote_port: 32, ext_port: 34, family: 36, l4proto: 37 },
  flags: 38,
};

/** Copies the fields `at` names from `src` (this einat's `layout`) to their old places in `dst`. */
function toOld(
  layout: { fields: Record<string, { offset: number; size: number }> },
  at: Record<string, number>,
  src: Uint8Array,
  so: number,
  dst: Uint8Array,
  base = 0,
): void {
  for (const [name, o] of Object.entries(at)) {
    const f = layout.fields[name];
    if (name !== "ct") dst.set(src.subarray(so + f.offset, so + f.offset + f.size), base + o);
  }
}

/**
 * Rewrites the pinned map_records and map_ct of `dir` as an einat of the layouts of
 * bpf/migrate_test.bpf.c would have left them: maps created from that object's BTF, the
 * entries moved to their old places, the stamp saying that object's layouts. Returns the
 * records and sessions written.
 */
async function pinOldLayout(dir: string): Promise<{ records: number; sessions: number }> {
  const oldBytes = Deno.readFileSync(new URL("../bpf/migrate_test.bpf.o", import.meta.url));
  const obj = bpf.openObjectMem(oldBytes, "migrate_test");
  let records = 0, sessions = 0;
  try {
    const recFd = bpf.objGetPinned(`${dir}/map_records`), ctFd = bpf.objGetPinned(`${dir}/map_ct`);
    try {
      for (const [m, fd] of [["map_records", recFd], ["map_ct", ctFd]] as const) {
        bpf.mapSetMaxEntries(bpf.findMap(obj, m), bpf.mapInfo(fd).maxEntries);
      }
      await bpf.loadObject(obj);
      const oldRec = bpf.mapFd(bpf.findMap(obj, "map_records"));
      const oldCt = bpf.mapFd(bpf.findMap(obj, "map_ct"));
      const R = MAPPING_RECORD_LAYOUT;
      bpf.forEachEntry(recFd, 4, R.size, (e) => {
        if ((e.values[e.vo + R.fields.state.offset] & 3) === 0) return; // free
        const v = new Uint8Array(OLD_RECORD.size);
        toOld(R, OLD_RECORD.at, e.values, e.vo, v);
        new DataView(v.buffer).setUint32(
          OLD_RECORD.sess,
          e.vv.getUint32(e.vo + R.fields.sess.offset, true),
          true,
        );
        toOld(CT_VALUE_LAYOUT, OLD_CT_VALUE.at, e.values, e.vo + R.fields.ct.offset, v);
        v.fill(0xff, OLD_CT_VALUE.retired, OLD_CT_VALUE.retired + 4);
        bpf.mapUpdate(oldRec, e.keys.slice(e.ko, e.ko + 4), v);
        records++;
      });
      bpf.forEachEntry(ctFd, CT_KEY_LAYOUT.size, CT_VALUE_LAYOUT.size, (e) => {
        const k = new Uint8Array(OLD_CT_KEY.size), v = new Uint8Array(OLD_CT_VALUE.size);
        toOld(CT_KEY_LAYOUT, OLD_CT_KEY.at, e.keys, e.ko, k);
        k[OLD_CT_KEY.flags] = e.keys[e.ko + CT_KEY_LAYOUT.fields.flags.offset];
        toOld(CT_VALUE_LAYOUT, OLD_CT_VALUE.at, e.values, e.vo, v);
        v.fill(0xff, OLD_CT_VALUE.retired, OLD_CT_VALUE.retired + 4);
        bpf.mapUpdate(oldCt, k, v);
        sessions++;
      });
      pinFd(dupFd(oldRec), `${dir}/map_records`);
      pinFd(dupFd(oldCt), `${dir}/map_ct`);
    } finally {
      closeFd(recFd);
      closeFd(ctFd);
    }
  } finally {
    bpf.closeObject(obj);
  }
  stampAs(dir, oldBytes, ["map_records", "map_ct"]);
  return { records, sessions };
}

/**
 * Stamps `maps` of the state in `dir` as the einat of the object `bytes` would have (their
 * layout and deep hashes), and leaves that object's BTF beside them as it would have.
 */
function stampAs(dir: string, bytes: Uint8Array, maps: StateMap[]): void {
  const layout = layoutStamps(bytes), deep = deepStamps(bytes);
  tamperStamp(dir, (m) => {
    for (const x of maps) Object.assign(m[x], { layout: layout[x], deep: deep[x] });
  });
  writeBtf(dir, "wan0", elfSection(bytes, ".BTF")!);
}

/** The unit's capabilities (docs/examples/systemd/einat.service): no CAP_SYS_ADMIN. */
const UNIT_CAPS = "-all,+bpf,+net_admin,+perfmon";

/** einat in `ns` with the unit's capabilities only. */
function spawnWithUnitCaps(ns: string, args: string[]): NsProcess {
  return spawnInNs(
    ns,
    ["setpriv", `--inh-caps=${UNIT_CAPS}`, `--bounding-set=${UNIT_CAPS}`, ...einatCmd(args)],
    { cwd: new URL("../", import.meta.url).pathname, killAfterMs: 60_000 },
  );
}

/** Waits until `p` logs that it runs, or exits; true when it runs. */
async function running(p: NsProcess): Promise<boolean> {
  const until = Date.now() + 15_000;
  while (p.running() && !/einat running/.test(p.stderrText()) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return /einat running/.test(p.stderrText());
}

/**
 * Runs `fn` while a process in a PID namespace of its own holds an exclusive `flock` on `path`;
 * the process ends with it (killed by its pid, its namespace with it).
 */
async function withLockedElsewhere(path: string, fn: () => Promise<void>): Promise<void> {
  const holder = new Deno.Command("unshare", {
    args: ["--pid", "--fork", "--kill-child", "flock", "-x", path, "sleep", "60"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const held = async () =>
    (await new Deno.Command("flock", { args: ["-n", "-x", path, "true"] }).output()).code !== 0;
  try {
    for (let i = 0; i < 100 && !(await held()); i++) await new Promise((r) => setTimeout(r, 50));
    assert(await held(), `${path}: not locked by the holder`);
    await fn();
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
    for (let i = 0; i < 100 && await held(); i++) await new Promise((r) => setTimeout(r, 50));
  }
}

/** The pid of a process that ran and is gone. */
async function deadPid(): Promise<number> {
  const c = new Deno.Command("true").spawn();
  await c.status;
  return c.pid;
}

/** Value size of the map pinned at `path`. */
function pinnedValueSize(path: string): number {
  const fd = bpf.objGetPinned(path);
  try {
    return bpf.mapInfo(fd).valueSize;
  } finally {
    closeFd(fd);
  }
}

/**
 * The state of `dir` is `before`, carried over: the same mappings and sessions, their ages and
 * idle times of seconds (created_s and last_seen_ns in their places, not read from others), and
 * traffic goes on through the carried-over records: the same external ports, no new binding (the
 * outbound index finds each record by its internal endpoint).
 */
async function assertCarriedOver(
  ns: string,
  dir: string,
  before: ReturnType<typeof state>,
): Promise<void> {
  const after = state(dir);
  assertEquals(after.bindings, before.bindings, "the same mappings");
  assertEquals(sessionKeys(after.sessions), sessionKeys(before.sessions));
  for (const s of after.sessions) {
    assert(s.ageSeconds < 60 && s.idleSeconds < 60, JSON.stringify(s));
  }
  await sendOnce(ns, 40000);
  await sendOnce(ns, 40001);
  assertEquals(state(dir).bindings, before.bindings);
}

/** What a session is, without the times that move. */
const sessionKeys = (
  rows: { protocol: string; internal: string; external: string; remote: string; state: string }[],
) => rows.map((r) => `${r.protocol} ${r.internal} ${r.external} ${r.remote} ${r.state}`).sort();

Deno.test({
  name:
    "state: bindings and sessions pinned by an einat of another layout are carried over at start (fields by name), kept ports and all; a start that fails, or was interrupted, while carrying them over leaves them as they were; another meaning version is refused untouched",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      const before = await twoBindingsPinned(ns, pin, dir);
      let p: NsProcess;

      assertEquals(await pinOldLayout(dir), { records: 2, sessions: 1 });
      assertEquals(pinnedValueSize(`${dir}/map_records`), OLD_RECORD.size);

      // Another meaning version: refused, nothing touched.
      tamperStamp(dir, (m) => m.map_ct.semantics = 99);
      const r = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", pin]));
      assertEquals(r.code, 2, r.stderr);
      assert(
        /map_ct.*another layout.*cannot be carried over \(map_ct: what its entries mean changed \(version 99, now 1\)\).*einat --flush -i wan0/
          .test(r.stderr),
        r.stderr,
      );
      assertEquals(pinnedValueSize(`${dir}/map_records`), OLD_RECORD.size, "untouched");
      assertEquals(pinnedValueSize(`${dir}/map_ct`), OLD_CT_VALUE.size, "untouched");
      tamperStamp(dir, (m) => delete m.map_ct.semantics); // as einats before the field wrote it

      // A start that fails once it pinned them aside (the kernel refuses its programs): put back.
      await withVariant("EINAT_TEST_REJECT", async (obj) => {
        const cmd = [
          "env",
          `EINAT_BPF_OBJECT=${obj}`,
          ...einatCmd(["-i", "wan0", "--pin-dir", pin]),
        ];
        const f = await nsExecResult(ns, cmd);
        assertEquals(f.code, 2, f.stderr);
        assert(/carrying it over .*map=map_ct/.test(f.stderr), f.stderr);
        // The binding count, shared with the programs of the einat that wrote the records, is
        // counted afresh from the carried-over ones.
        assert(/binding count recounted: the bindings are carried over/.test(f.stderr), f.stderr);
        assert(/the kernel refused the BPF programs/.test(f.stderr), f.stderr);
      });
      assertEquals(pinnedValueSize(`${dir}/map_records`), OLD_RECORD.size, "put back");
      assertEquals(pinnedValueSize(`${dir}/map_ct`), OLD_CT_VALUE.size, "put back");
      assertEquals(
        [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes("migrating")),
        [],
      );

      // A start that stopped while carrying map_ct over: the old map pinned aside (by a process
      // gone since), a new one in its place.
      const gone = await deadPid();
      Deno.renameSync(`${dir}/map_ct`, asidePin(dir, "map_ct", gone));
      pinFd(
        bpf.mapCreate(bpf.MapType.HASH, "map_ct", CT_KEY_LAYOUT.size, CT_VALUE_LAYOUT.size, 16),
        `${dir}/map_ct`,
      );

      // While its mark is locked, the copy is going on: refused as busy, nothing put back. The
      // lock's holder is in a PID namespace of its own, where the pid in the names is not its.
      Deno.mkdirSync(migratingMark(dir, gone));
      await withLockedElsewhere(migratingMark(dir, gone), async () => {
        const busy = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", pin]));
        assertEquals(busy.code, 2, busy.stderr);
        assert(
          new RegExp(`already served by einat \\(pid ${gone}\\)`).test(busy.stderr),
          busy.stderr,
        );
        assert(existsSync(asidePin(dir, "map_ct", gone)), "left aside");
      });

      // With the unit's capabilities (no CAP_SYS_ADMIN, which reading a map's BTF from the
      // kernel needs): the old layout is read from the BTF left beside the state.
      p = spawnWithUnitCaps(ns, ["-i", "wan0", "--pin-dir", pin]);
      try {
        assert(await running(p), p.stderrText());
        const log = p.stderrText();
        assert(/interrupted while carrying it over; put back .*maps=map_ct/.test(log), log);
        assert(
          /pinned map of another layout: carrying it over .*map=map_records .*dropped=mapping_record\.ct\.retired/
            .test(log),
          log,
        );
        assert(/carried over to this einat's layout .*map=map_records entries=2/.test(log), log);
        assert(/carried over to this einat's layout .*map=map_ct entries=1/.test(log), log);
        assert(
          /pinned state reused .*carried_over=map_records,map_ct .*bindings=2 sessions=3 expired=0/
            .test(log),
          log,
        );
        assertEquals(
          [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes("migrating")),
          [],
          "the aside pins and the mark of the process gone",
        );
        assertEquals(pinnedValueSize(`${dir}/map_records`), MAPPING_RECORD_LAYOUT.size);
        await assertCarriedOver(ns, dir, before);
      } finally {
        assertEquals(await stopEinat(p), 0, p.stderrText());
      }
      // The next start reuses them as they are.
      p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
      assert(/pinned state reused .*bindings=2 sessions=3/.test(p.stderrText()), p.stderrText());
      assert(!/carried_over/.test(p.stderrText()), p.stderrText());
      assertEquals(await stopEinat(p), 0, p.stderrText());
      // A start killed after the old maps went, before the stamp was rewritten: new maps under
      // the old stamp, carried over as they are (the kernel's copy of their BTF says this
      // layout; the one left beside them does not give the stamp's layout, so it is not used).
      // Without CAP_SYS_ADMIN that copy cannot be read: refused, naming it.
      const old0 = layoutStamps(
        Deno.readFileSync(new URL("../bpf/migrate_test.bpf.o", import.meta.url)),
      );
      tamperStamp(dir, (m) => m.map_ct.layout = old0.map_ct);
      const q = spawnWithUnitCaps(ns, ["-i", "wan0", "--pin-dir", pin]);
      assert(!await running(q), q.stderrText());
      const qr = await q.output(10_000);
      assertEquals(qr.code, 2, qr.stderr);
      assert(/map_ct: its layout is unknown: .*needs CAP_SYS_ADMIN/.test(qr.stderr), qr.stderr);
      p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
      assert(
        /pinned state reused .*carried_over=map_ct .*bindings=2 sessions=3/.test(p.stderrText()),
        p.stderrText(),
      );
      assert(!/dropped=|added=/.test(p.stderrText()), p.stderrText());
      assertEquals(state(dir).bindings, before.bindings);
      assertEquals(await stopEinat(p), 0, p.stderrText());
    }),
});

function pinnedFlags(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of ["map_ct"]) {
    const fd = bpf.objGetPinned(`${dir}/${m}`);
    try {
      out[m] = bpf.mapInfo(fd).flags;
    } finally {
      closeFd(fd);
    }
  }
  return out;
}

Deno.test({
  name:
    "state: --pin-dir on a folder with files that is not on a bpffs is refused, never mounted over; an empty one is mounted",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const dir = Deno.makeTempDirSync({ prefix: `${testPrefix()}-pin-` });
      try {
        Deno.writeTextFileSync(`${dir}/keep.txt`, "an operator's file\n");
        // Runs under `ip netns exec`: a mount made anyway would be private to the process.
        const r = await nsExecResult(ns, einatCmd(["-i", "wan0", "--pin-dir", dir]), {
          timeoutMs: 15000,
        });
        assertEquals(r.code, 2, r.stderr);
        assert(
          new RegExp(`--pin-dir ${dir} is not on a bpf filesystem and is not empty`).test(r.stderr),
          r.stderr,
        );
        assert(!/mounted/.test(r.stderr), r.stderr);
        assert(!/einat running/.test(r.stderr), r.stderr);
        assertEquals(Deno.readTextFileSync(`${dir}/keep.txt`), "an operator's file\n");

        // A folder below it that does not exist yet, and an empty one, get a bpffs.
        for (const pin of [`${dir}/new/einat`, `${dir}/empty`]) {
          if (pin.endsWith("empty")) Deno.mkdirSync(pin);
          const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
          // Under `ip netns exec`: a private mount namespace, whose mount ends with einat.
          assert(
            /WARN +mounted a bpf filesystem in a private mount namespace/.test(p.stderrText()),
            p.stderrText(),
          );
          assertEquals(await stopEinat(p), 0, p.stderrText());
        }
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    }),
});

Deno.test({
  name:
    "state: two network namespaces on one bpffs keep their state apart: neither reuses, shows nor flushes the other's",
  ...sanitize,
  fn: () =>
    withNs((ns1, pin, dir1) =>
      // ns2 has a bpffs of its own too, unused: both einats are given ns1's.
      withNs(async (ns2) => {
        const dir2 = pinDirIn(pin, ns2);
        assert(dir1 !== dir2, dir1);
        const show = async (ns: string) => {
          const out = await nsExec(ns, einatCmd(["show", "--json", "--pin-dir", pin]));
          return JSON.parse(out) as { sessions: unknown[] };
        };
        // State where einats before namespaces pinned every namespace's (<root>/wan0): not used.
        Deno.mkdirSync(`${pin}/wan0`, { recursive: true });
        const meta = bpf.mapCreate(bpf.MapType.ARRAY, META_NAME, 4, 8, 1);
        try {
          bpf.objPin(meta, `${pin}/wan0/${META_NAME}`);
        } finally {
          closeFd(meta);
        }
        const p1 = await startEinat(ns1, ["-i", "wan0", "--pin-dir", pin]);
        let p2: NsProcess | null = null;
        try {
          const log1 = p1.stderrText();
          assert(/pinned state created/.test(log1), log1);
          assert(new RegExp(`is not used here.*not_used=${pin}/wan0`).test(log1), log1);
          await send(ns1, dir1);
          p2 = await startEinat(ns2, ["-i", "wan0", "--pin-dir", pin]);
          assert(/pinned state created/.test(p2.stderrText()), p2.stderrText());
          assertEquals(state(dir2).sessions.length, 0);
          assertEquals(state(dir1).sessions.length, 1, "ns1's session kept");
          assertEquals(await stopEinat(p2), 0, p2.stderrText());
          p2 = null;

          assertEquals((await show(ns1)).sessions.length, 1);
          assertEquals((await show(ns2)).sessions.length, 0);
          // ns2's einat is stopped, ns1's runs: --flush in ns2 removes ns2's state only.
          const f = await nsExecResult(ns2, einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]));
          assertEquals(f.code, 0, f.stderr);
          assert(!existsSync(dir2), "ns2's state removed");
          assert(!existsSync(dir2.replace(/\/[^/]+$/, "")), "and its namespace's folder, empty");
          assert(existsSync(pin), "a --pin-dir given stays");
          assertEquals(state(dir1).sessions.length, 1, "ns1's state untouched");
          const busy = await nsExecResult(
            ns1,
            einatCmd(["--flush", "-i", "wan0", "--pin-dir", pin]),
          );
          assertEquals(busy.code, 2, busy.stderr);
          assert(
            new RegExp(
              `--flush: wan0: einat \\(pid ${p1.pid}\\) serves it and holds its state; stop that einat first`,
            ).test(busy.stderr) && !/--replace/.test(busy.stderr),
            busy.stderr,
          );
        } finally {
          assertEquals(await stopEinat(p1), 0, p1.stderrText());
          if (p2) await stopEinat(p2);
        }
      })
    ),
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "state: an interface named with a dot (a VLAN such as wan0.7) keeps pinned state across a restart; show finds it by its name",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin) => {
      await run(["ip", "-n", ns, "-batch", "-"], {
        stdin: "link add wan0.7 type veth peer name peer7\n" +
          "addr add 198.51.100.1/24 dev wan0.7\nlink set wan0.7 up\nlink set peer7 up\n" +
          "neigh add 198.51.100.50 lladdr 02:00:00:00:00:50 dev wan0.7 nud permanent\n",
      });
      const dir = pinDirIn(pin, ns, "wan0%2E7"); // a bpf filesystem refuses a dot in a name
      let p = await startEinat(ns, ["-i", "wan0.7", "--pin-dir", pin]);
      assert(/pinned state created/.test(p.stderrText()), p.stderrText());
      assert(Deno.statSync(`${dir}/${META_NAME}`).isFile !== undefined);
      assertEquals(await stopEinat(p), 0, p.stderrText());
      p = await startEinat(ns, ["-i", "wan0.7", "--pin-dir", pin]);
      assert(/pinned state reused/.test(p.stderrText()), p.stderrText());
      try {
        await nsExecResult(
          ns,
          peerCmd("udp-send", [
            "--bind",
            "192.0.2.10",
            "--to",
            "198.51.100.50:9",
            "--reply-timeout-ms",
            "50",
          ]),
        );
        const show = await nsExecResult(ns, einatCmd(["show", "--json", "--pin-dir", pin]));
        assertEquals(show.code, 0, show.stderr);
        assert(show.stdout.includes('"wan0.7"'), `the binding under its interface: ${show.stdout}`);
        const one = await nsExecResult(
          ns,
          einatCmd(["show", "--json", "-i", "wan0.7", "--pin-dir", pin]),
        );
        assertEquals(one.code, 0, one.stdout + one.stderr);
      } finally {
        assertEquals(await stopEinat(p), 0, p.stderrText());
      }
    }),
});

Deno.test({
  name:
    "state: a namespace that got a deleted one's inode does not reuse its pinned state (the cookie differs)",
  ...sanitize,
  fn: () =>
    withPrivateBpffs("nsreuse", async (bpffs) => {
      const pin = `${bpffs}/einat`;
      const ns1 = nsName();
      const made: string[] = [];
      try {
        await run(["ip", "netns", "add", ns1]);
        made.push(ns1);
        await setUpNs(ns1);
        const ino1 = Deno.statSync(`/run/netns/${ns1}`).ino!;
        const dir1 = pinDirIn(pin, ns1);
        const p = await startEinat(ns1, ["-i", "wan0", "--pin-dir", pin]);
        await send(ns1, dir1);
        assertEquals(await stopEinat(p), 0, p.stderrText());
        assertEquals(state(dir1).bindings.length, 1, "ns1 left a binding");
        await deleteNs(made.pop()!);

        // New namespaces until one gets ns1's inode (the kernel hands out the lowest free one,
        // once ns1 is cleaned up, which is asynchronous).
        let ns = "";
        for (let i = 0; i < 20 && !ns; i++) {
          const n = nsName();
          await run(["ip", "netns", "add", n]);
          made.push(n);
          if (Deno.statSync(`/run/netns/${n}`).ino === ino1) ns = n;
          else await new Promise((r) => setTimeout(r, 100));
        }
        if (!ns) {
          // Not reused within the bounds: make the last one's folder hold ns1's state, as if
          // written there under its inode by another namespace (ns1's cookie).
          ns = made[made.length - 1];
          const ino = Deno.statSync(`/run/netns/${ns}`).ino!;
          Deno.mkdirSync(`${pin}/netns:${ino}`);
          Deno.renameSync(dir1, pinDirIn(pin, ns));
          tamperMeta(pinDirIn(pin, ns), (doc) => doc.netns!.ino = ino);
          console.log(`inode ${ino1} not reused in 20 namespaces: mismatch faked in ${ino}`);
        }
        const dir = pinDirIn(pin, ns);
        assertEquals(state(dir).bindings.length, 1, "the deleted namespace's state is there");
        await setUpNs(ns);
        const q = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        const log = q.stderrText();
        assertEquals(await stopEinat(q), 0, q.stderrText());
        assert(!/pinned state reused/.test(log), log);
        assert(/pinned state created/.test(log), log);
        assert(/pinned state of a deleted network namespace .*removed/.test(log), log);
        assertEquals(state(dir).bindings.length, 0, "none of ns1's bindings");

        // Its own state, though, it reuses.
        const r = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
        assertEquals(await stopEinat(r), 0, r.stderrText());
        assert(/pinned state reused/.test(r.stderrText()), r.stderrText());
      } finally {
        for (const n of made) await deleteNs(n);
      }
    }),
});

Deno.test({
  name:
    "state: --flush refuses while an einat holds the state: one waiting for its deleted interface, and from another namespace with --pin-dir <root>/netns:<inode>",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      const flush = (root: string) => einatCmd(["--flush", "-i", "wan0", "--pin-dir", root]);
      const p = await startEinat(ns, ["-i", "wan0", "--pin-dir", pin]);
      try {
        await send(ns, dir);
        await run(["ip", "-n", ns, "link", "del", "wan0"]);
        assert(
          await poll(() => /interface gone; .*waiting for it/.test(p.stderrText()), 10000),
          p.stderrText(),
        );
        // (a) In its namespace: wan0 has no index now, yet the state is this einat's.
        const a = await nsExecResult(ns, flush(pin));
        assertEquals(a.code, 2, a.stdout + a.stderr);
        assert(new RegExp(`einat \\(pid ${p.pid}\\) serves it`).test(a.stderr), a.stderr);
        assertEquals(state(dir).bindings.length, 1, "the running einat's state kept");
        // (b) From the initial namespace, naming the namespace's folder. Only the state folder is
        // touched (a flush attaches nothing).
        const b = await runResult(flush(`${pin}/netns:${Deno.statSync(`/run/netns/${ns}`).ino}`), {
          timeoutMs: 30000,
        });
        assertEquals(b.code, 2, b.stdout + b.stderr);
        assertEquals(state(dir).bindings.length, 1, "the running einat's state kept");
      } finally {
        assertEquals(await stopEinat(p), 0, p.stderrText());
      }
      // Once it stopped, the state is nobody's: flushed.
      const f = await nsExecResult(ns, flush(pin));
      assertEquals(f.code, 0, f.stderr);
      assert(!existsSync(dir), "removed");
    }),
});

/** Pins `fd` at `path` (replacing what is there) and closes it. */
function pinFd(fd: number, path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* none yet */ }
  try {
    bpf.objPin(fd, path);
  } finally {
    closeFd(fd);
  }
}

/** A session map of `valueSize`-byte values holding `n` sessions, pinned as `dir`/map_ct. */
function pinSessionMap(dir: string, valueSize: number, n: number): void {
  const fd = bpf.mapCreate(bpf.MapType.HASH, "map_ct", CT_KEY_LAYOUT.size, valueSize, 4096);
  const key = new Uint8Array(CT_KEY_LAYOUT.size), value = new Uint8Array(valueSize).fill(0xa5);
  for (let i = 0; i < n; i++) {
    new DataView(key.buffer).setUint32(0, i, true);
    bpf.mapUpdate(fd, key, value);
  }
  pinFd(fd, `${dir}/map_ct`);
}

Deno.test({
  name:
    "state: show refuses pinned state of another einat's layout (a bigger session value, a stamp of another layout) with a clear error, without reading it",
  ...sanitize,
  fn: () =>
    withNs(async (ns, pin, dir) => {
      // Pinned state as an einat with a 64-byte session value would leave it, under a stamp
      // that says this einat's layouts (only the sizes tell): 2,000 sessions, more than one
      // batch of this einat's 32-byte values holds.
      Deno.mkdirSync(dir, { recursive: true });
      const stamps = layoutStamps(embeddedObject());
      const meta = bpf.mapCreate(bpf.MapType.ARRAY, META_NAME, 4, META_VALUE_SIZE, 1);
      bpf.mapUpdate(
        meta,
        new Uint8Array(4),
        encodeMeta({
          format: META_FORMAT,
          version: META_VERSION,
          einat: "0.0.0-other",
          ifname: "wan0",
          maps: Object.fromEntries(STATE_MAPS.map((m) => [m, { layout: stamps[m] }])),
        }),
      );
      pinFd(meta, `${dir}/${META_NAME}`);
      pinSessionMap(dir, CT_VALUE_LAYOUT.size * 2, 2000);
      const show = (...args: string[]) =>
        nsExecResult(ns, einatCmd(["show", "--pin-dir", pin, ...args]));
      const refused = (r: { code: number; stdout: string; stderr: string }, why: RegExp) => {
        assertEquals(r.code, 2, `exit ${r.code}: ${r.stdout}${r.stderr}`);
        assert(
          /einat: show: wan0: pinned state .* is of another einat version/.test(r.stderr),
          r.stderr,
        );
        assert(why.test(r.stderr), r.stderr);
        assert(
          /Restart einat with this version.*`einat --flush -i wan0 --pin-dir /.test(r.stderr),
          r.stderr,
        );
      };
      const sizes = new RegExp(
        `map_ct has value size ${
          CT_VALUE_LAYOUT.size * 2
        } \\(this einat: ${CT_VALUE_LAYOUT.size}\\)`,
      );
      for (const args of [[], ["--json"], ["-i", "wan0"], ["--stats"]]) {
        refused(await show(...args), sizes);
      }

      // This einat's sizes under a stamp of another layout: refused as well.
      pinSessionMap(dir, CT_VALUE_LAYOUT.size, 10);
      let layout = "";
      tamperStamp(dir, (m) => {
        layout = m.map_ct.layout;
        m.map_ct.layout = "0000000000000000";
      });
      refused(await show(), /map_ct .*another layout/);

      // With this einat's stamp back, the same maps are shown.
      tamperStamp(dir, (m) => m.map_ct.layout = layout);
      const ok = await show("--json");
      assertEquals(ok.code, 0, ok.stderr);
      assertEquals(JSON.parse(ok.stdout).sessions.length, 10);

      // A fragment table of an older einat (24-byte values, its own layout stamp): show does not
      // decode it, so it shows the rest as before.
      const frag = bpf.mapCreate(bpf.MapType.HASH, "map_frag", FRAG_KEY_LAYOUT.size, 24, 16);
      pinFd(frag, `${dir}/map_frag`);
      tamperStamp(dir, (m) => m.map_frag = { layout: "0000000000000000" });
      const older = await show("--json");
      assertEquals(older.code, 0, older.stderr);
      assertEquals(JSON.parse(older.stdout).sessions.length, 10);

      // The stamp map of a later stamp format, with a longer value: read as pinned, refused by
      // its version.
      const later = new Uint8Array(2 * META_VALUE_SIZE).fill(0xa5);
      const doc = encodeMeta({
        format: META_FORMAT,
        version: META_VERSION + 1,
        einat: "0.0.0-other",
        ifname: "wan0",
        maps: {},
      });
      later.set(doc.subarray(0, doc.indexOf(0) + 1));
      const meta2 = bpf.mapCreate(bpf.MapType.ARRAY, META_NAME, 4, later.length, 1);
      bpf.mapUpdate(meta2, new Uint8Array(4), later);
      pinFd(meta2, `${dir}/${META_NAME}`);
      refused(await show(), new RegExp(`state stamp version ${META_VERSION + 1} `));
    }),
});

Deno.test({
  name:
    "state: show where /sys/fs/bpf is no bpffs (as under ip netns exec) says why it finds nothing and what to do",
  ...sanitize,
  fn: () =>
    withNs(async (ns) => {
      const r = await nsExecResult(ns, einatCmd(["show"]));
      assertEquals(r.code, 2, r.stderr);
      assert(
        /\/sys\/fs\/bpf\/einat is not on a bpf filesystem in this mount namespace: .*ip netns exec.*--pin-dir on a bpffs both see/
          .test(r.stderr),
        r.stderr,
      );
    }),
});
