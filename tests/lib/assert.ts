/**
 * The few assertions the tests use (deno std is unreachable here), built on
 * node:assert so failures show a diff.
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Asserts that `cond` is truthy. */
export function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

/** Asserts deep equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Asserts deep inequality. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, msg);
}

/** Asserts that `fn` throws an error matching `pattern` (in its message). */
export function assertThrows(fn: () => unknown, pattern?: RegExp, msg?: string): Error {
  try {
    fn();
  } catch (e) {
    if (pattern) nodeAssert.match(String((e as Error).message), pattern, msg);
    return e as Error;
  }
  throw new nodeAssert.AssertionError({ message: msg ?? "expected an exception" });
}

/** Asserts that `fn` rejects with an error matching `pattern`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  pattern?: RegExp,
  msg?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (pattern) nodeAssert.match(String((e as Error).message), pattern, msg);
    return e as Error;
  }
  throw new nodeAssert.AssertionError({ message: msg ?? "expected a rejection" });
}
