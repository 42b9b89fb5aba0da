/**
 * A stand-in for systemd's notification socket: a unix datagram socket bound at a temporary
 * path, read without blocking (test-only FFI; einat's own sender is lib/notify.ts).
 * @module
 */
import { sockaddrUn } from "../../lib/ffi/libc.ts";

const lib = Deno.dlopen(
  "libc.so.6",
  {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
  } as const,
);

/** A bound notification socket. */
export interface NotifySocket {
  /** The path to give as `NOTIFY_SOCKET`. */
  path: string;
  /** Waits (up to `timeoutMs`) for a datagram whose text matches `re`; all read so far on fail. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Every datagram read so far. */
  messages: string[];
  close(): void;
}

/** Binds a notification socket in a new temporary folder. */
export function notifySocket(): NotifySocket {
  const dir = Deno.makeTempDirSync({ prefix: "einat-notify-" });
  const path = `${dir}/notify`;
  const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
  const fd = lib.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const { addr, len } = sockaddrUn(path);
  if (fd < 0 || lib.symbols.bind(fd, addr, len) !== 0) throw new Error(`bind ${path} failed`);
  const messages: string[] = [];
  const buf = new Uint8Array(4096);
  const drain = () => {
    for (;;) {
      const n = Number(lib.symbols.recv(fd, buf, BigInt(buf.length), 0));
      if (n <= 0) return;
      messages.push(new TextDecoder().decode(buf.subarray(0, n)));
    }
  };
  let seen = 0;
  return {
    path,
    messages,
    async waitFor(re, timeoutMs = 15000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        drain();
        const i = messages.findIndex((m, j) => j >= seen && re.test(m));
        if (i >= 0) {
          seen = i + 1;
          return messages[i];
        }
        if (Date.now() > until) throw new Error(`no ${re} in ${JSON.stringify(messages)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    close() {
      lib.symbols.close(fd);
      Deno.removeSync(dir, { recursive: true });
    },
  };
}
