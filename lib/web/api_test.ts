import assert from "node:assert/strict";
import { formatKb, formatMs, splitArgs } from "./api.js";

Deno.test("splitArgs() splits on spaces and keeps quoted words together", () => {
  assert.deepEqual(splitArgs(""), []);
  assert.deepEqual(splitArgs("  one two  "), ["one", "two"]);
  assert.deepEqual(splitArgs(`a "b c" 'd e' "f\\"g"`), [
    "a",
    "b c",
    "d e",
    'f"g',
  ]);
});

Deno.test("formatMs() and formatKb() read as short amounts", () => {
  assert.equal(formatMs(850), "850 ms");
  assert.equal(formatMs(1240), "1.24 s");
  assert.equal(formatMs(125_000), "2 min 5 s");
  assert.equal(formatMs(null), "–");
  assert.equal(formatKb(512), "512 KiB");
  assert.equal(formatKb(2048), "2.0 MiB");
});
