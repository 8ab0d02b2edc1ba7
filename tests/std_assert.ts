// deno-lint-ignore-file no-explicit-any
/**
 * The subset of `@std/assert` this project's tests use, over `node:assert/strict`.
 *
 * JSR (where `@std/assert` lives) cannot be reached from the build machines, so the import map
 * points `@std/assert` here. Where JSR is reachable, replace this mapping in `deno.json` with
 * `"@std/assert": "jsr:@std/assert@1"`; the signatures below follow that module.
 */
import assertNode from "node:assert/strict";

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(expr: unknown, msg = "expected a truthy value"): asserts expr {
  assertNode.ok(expr, msg as string);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assertNode.deepStrictEqual(actual, expected, msg as string);
}

export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  assertNode.notDeepStrictEqual(actual, expected, msg as string);
}

export function assertStrictEquals<T>(actual: unknown, expected: T, msg?: string): void {
  assertNode.strictEqual(actual, expected, msg as string);
}

/** `|actual - expected| <= tolerance` (default 1e-7, as in `@std/assert`). */
export function assertAlmostEquals(
  actual: number,
  expected: number,
  tolerance = 1e-7,
  msg?: string,
): void {
  if (Object.is(actual, expected)) return;
  const delta = Math.abs(expected - actual);
  if (!(delta <= tolerance)) {
    throw new AssertionError(
      msg ?? `expected ${actual} to be close to ${expected}: delta ${delta} > ${tolerance}`,
    );
  }
}

export function assertGreater(actual: number, expected: number, msg?: string): void {
  assertNode.ok(actual > expected, msg ?? `expected ${actual} > ${expected}`);
}

export function assertLess(actual: number, expected: number, msg?: string): void {
  assertNode.ok(actual < expected, msg ?? `expected ${actual} < ${expected}`);
}

export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  assertNode.ok(actual !== null && actual !== undefined, msg ?? "expected a value");
}

export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  assertNode.match(actual, expected, msg as string);
}

export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  assertNode.ok(actual.includes(expected), msg ?? `expected "${actual}" to include "${expected}"`);
}

export function assertInstanceOf<T extends abstract new (...args: any) => any>(
  actual: unknown,
  expectedType: T,
  msg?: string,
): asserts actual is InstanceType<T> {
  assertNode.ok(actual instanceof expectedType, msg ?? `expected an instance of ${expectedType.name}`);
}

type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

function checkError<E extends Error>(
  err: unknown,
  ErrorType?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  if (ErrorType && !(err instanceof ErrorType)) {
    throw new AssertionError(
      `expected error of type ${ErrorType.name}, got ${(err as Error)?.name}: ${(err as Error)?.message}`,
    );
  }
  if (msgIncludes !== undefined && !String((err as Error)?.message).includes(msgIncludes)) {
    throw new AssertionError(
      `expected error message to include "${msgIncludes}", got "${(err as Error)?.message}"`,
    );
  }
  return err as E;
}

/** Calls `fn`, expects it to throw (optionally an instance of `ErrorType` whose message includes `msgIncludes`). */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  ErrorType?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  try {
    fn();
  } catch (err) {
    return checkError(err, ErrorType, msgIncludes);
  }
  throw new AssertionError("expected function to throw");
}

/** Awaits `fn()`, expects it to reject (optionally with `ErrorType` and a message including `msgIncludes`). */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  ErrorType?: ErrorClass<E>,
  msgIncludes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    return checkError(err, ErrorType, msgIncludes);
  }
  throw new AssertionError("expected promise to reject");
}
