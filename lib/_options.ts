/**
 * The one check of a library option that must be a whole number within
 * bounds, so every constructor refuses a bad one with the same words.
 *
 * @module
 */

/**
 * `value` when it is an integer from 1 to `max`; otherwise a `RangeError`
 * naming the option, what it got and what it takes.
 *
 * @example Refusing a buffer of no bytes
 * ```ts
 * import assert from "node:assert/strict";
 * import { positiveInteger } from "./_options.ts";
 *
 * assert.equal(positiveInteger("maxFiles", 8, 256), 8);
 * assert.throws(
 *   () => positiveInteger("maxFiles", 0, 256),
 *   /^RangeError: Cannot use maxFiles 0: expected an integer from 1 to 256$/,
 * );
 * ```
 */
export function positiveInteger(
  name: string,
  value: number,
  max: number,
): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(
      `Cannot use ${name} ${value}: expected an integer from 1 to ${max}`,
    );
  }
  return value;
}
