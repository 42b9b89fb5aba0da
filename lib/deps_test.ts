import { match as assertMatch } from "node:assert/strict";
import { assert, assertEquals, assertThrows } from "../tests/lib/assert.ts";
import {
  checkLibrary,
  checkRuntimeLibraries,
  type EnvLookup,
  LIBBPF,
  LIBMNL,
  libPath,
  MissingLibraryError,
} from "./deps.ts";

const noEnv: EnvLookup = () => undefined;
const envOf = (vars: Record<string, string>): EnvLookup => (name) => vars[name];

Deno.test("libPath: soname by default, override from the environment", () => {
  assertEquals(libPath("libbpf.so.1", noEnv), "libbpf.so.1");
  assertEquals(
    libPath("libmnl.so.0", envOf({ EINAT_LIBMNL: "/opt/lib/libmnl.so.0" })),
    "/opt/lib/libmnl.so.0",
  );
  assertEquals(libPath("libmnl.so.0", envOf({ EINAT_LIBMNL: "" })), "libmnl.so.0");
  assertEquals(libPath("libc.so.6", envOf({ EINAT_LIBBPF: "/x" })), "libc.so.6");
});

Deno.test("checkRuntimeLibraries: the installed libraries pass", () => {
  checkRuntimeLibraries(undefined, noEnv);
});

Deno.test("checkRuntimeLibraries: a missing library is one line naming the package", () => {
  const e = assertThrows(
    () =>
      checkRuntimeLibraries(undefined, envOf({ EINAT_LIBMNL: "/nonexistent/einat/libmnl.so.0" })),
  );
  assert(e instanceof MissingLibraryError);
  assertEquals(
    e.message,
    "libmnl.so.0 not found at /nonexistent/einat/libmnl.so.0 (from EINAT_LIBMNL): " +
      "install libmnl0 (Debian/Ubuntu), libmnl (Fedora/Arch/Nix)",
  );
  assertEquals(e.library, LIBMNL);
});

Deno.test("checkRuntimeLibraries: two missing libraries in one line", () => {
  const e = assertThrows(
    () =>
      checkRuntimeLibraries(
        undefined,
        envOf({ EINAT_LIBBPF: "/nonexistent/a.so", EINAT_LIBMNL: "/nonexistent/b.so" }),
      ),
  );
  assert(e instanceof MissingLibraryError);
  assert(!e.message.includes("\n"), e.message);
  assertMatch(
    e.message,
    /^libbpf\.so\.1 not found .*install libbpf1 \(Debian\/Ubuntu\).*; libmnl\.so\.0 not found /,
  );
});

Deno.test("checkLibrary: a wrong library is named as such", () => {
  const e = assertThrows(() => checkLibrary(LIBBPF, envOf({ EINAT_LIBBPF: "libc.so.6" })));
  assert(e instanceof MissingLibraryError);
  assertEquals(e.message, "libc.so.6 is not libbpf.so.1: it lacks libbpf_major_version");
});

Deno.test("checkLibrary: a file that is no library gives one line", () => {
  const e = assertThrows(() => checkLibrary(LIBMNL, envOf({ EINAT_LIBMNL: "/proc/self/status" })));
  assert(e instanceof MissingLibraryError);
  assert(!e.message.includes("\n"), e.message);
  assertMatch(
    e.message,
    /^cannot load libmnl\.so\.0 at \/proc\/self\/status \(from EINAT_LIBMNL\): /,
  );
  assert(!/Could not open library/.test(e.message), e.message);
});
