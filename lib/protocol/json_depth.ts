/**
 * A linear pre-scan that refuses deeply nested JSON before `JSON.parse`
 * sees it. `JSON.parse` of `[` x 8M then `]` x 8M takes seconds and a
 * gigabyte on one event loop; every message kiln exchanges is a few levels
 * deep, so anything past {@linkcode MAX_JSON_DEPTH} is refused in one pass
 * over the text, allocating nothing.
 *
 * @module
 */

/**
 * The deepest nesting of arrays and objects accepted in a message: 64. The
 * deepest valid kiln message (a cluster status: nodes, their languages,
 * their aliases) is about 5 levels deep.
 */
export const MAX_JSON_DEPTH = 64;

const OPEN_ARRAY = 0x5b; // [
const OPEN_OBJECT = 0x7b; // {
const CLOSE_ARRAY = 0x5d; // ]
const CLOSE_OBJECT = 0x7d; // }
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/**
 * How deep `json` nests, or `maxDepth + 1` as soon as it nests deeper (the
 * scan stops there). `json` is text or its UTF-8 bytes (a quote or a
 * backslash byte never occurs inside a multi-byte UTF-8 sequence, so the
 * bytes scan the same). Brackets inside strings do not count. It does not
 * validate: invalid JSON is `JSON.parse`'s to refuse, in linear time, once
 * the depth is known to be small.
 *
 * @example Refusing a nested bomb before parsing it
 * ```ts
 * import assert from "node:assert/strict";
 * import { jsonDepth, MAX_JSON_DEPTH } from "./json_depth.ts";
 *
 * assert.equal(jsonDepth('{"a":[1,{"b":"[[["}]}'), 3);
 * const bomb = "[".repeat(100_000) + "]".repeat(100_000);
 * assert.equal(jsonDepth(bomb), MAX_JSON_DEPTH + 1);
 * ```
 */
export function jsonDepth(
  json: string | Uint8Array,
  maxDepth: number = MAX_JSON_DEPTH,
): number {
  return typeof json === "string"
    ? scan(json.length, (i) => json.charCodeAt(i), maxDepth)
    : scan(json.length, (i) => json[i]!, maxDepth);
}

/**
 * Throws `SyntaxError` naming the limit when `json` nests deeper than
 * `maxDepth`; for callers that then `JSON.parse` it.
 */
export function checkJsonDepth(
  json: string | Uint8Array,
  maxDepth: number = MAX_JSON_DEPTH,
): void {
  if (jsonDepth(json, maxDepth) > maxDepth) {
    throw new SyntaxError(
      `JSON nested deeper than ${maxDepth} levels of arrays and objects`,
    );
  }
}

function scan(
  length: number,
  at: (index: number) => number,
  maxDepth: number,
): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < length; i++) {
    const code = at(i);
    if (inString) {
      if (code === BACKSLASH) i++; // the escaped character, whatever it is
      else if (code === QUOTE) inString = false;
    } else if (code === QUOTE) inString = true;
    else if (code === OPEN_ARRAY || code === OPEN_OBJECT) {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > maxDepth) return deepest;
      }
    } else if (code === CLOSE_ARRAY || code === CLOSE_OBJECT) depth--;
  }
  return deepest;
}
