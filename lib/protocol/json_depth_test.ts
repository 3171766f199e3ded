import assert from "node:assert/strict";
import { checkJsonDepth, jsonDepth, MAX_JSON_DEPTH } from "./json_depth.ts";

Deno.test("jsonDepth counts nesting outside strings, escapes included", () => {
  assert.equal(jsonDepth("1"), 0);
  assert.equal(jsonDepth("[]"), 1);
  assert.equal(jsonDepth('[{"a":[]},[]]'), 3);
  assert.equal(jsonDepth('["\\"[[[", {"\\\\": "]"}]'), 2);
  assert.equal(jsonDepth('"[[[["'), 0);
  const bytes = new TextEncoder().encode('{"é[":["ü"]}');
  assert.equal(jsonDepth(bytes), 2);
});

Deno.test("jsonDepth stops past the maximum; checkJsonDepth names it", () => {
  const deep = "[".repeat(MAX_JSON_DEPTH + 1) + "]".repeat(MAX_JSON_DEPTH + 1);
  assert.equal(jsonDepth(deep), MAX_JSON_DEPTH + 1);
  assert.equal(jsonDepth("[".repeat(10_000_000)), MAX_JSON_DEPTH + 1);
  assert.throws(() => checkJsonDepth(deep), /deeper than 64 levels/);
  checkJsonDepth("[".repeat(64) + "]".repeat(64));
  assert.throws(() => checkJsonDepth("[[[]]]", 2), /deeper than 2 levels/);
});
