import assert from "node:assert/strict";
import { tokenize } from "./highlight.js";

function kinds(code: string, language: string): string[] {
  return tokenize(code, language)
    .filter((token) => token.type !== "text")
    .map((token) => `${token.type}:${token.text}`);
}

Deno.test("tokenize() gives back the code it was given, token by token", () => {
  const code = 'def f(x):\n    return "a\\"b" + 42  # done\n';
  for (const language of ["python", "bash", "c", "rust", "unknown"]) {
    const tokens = tokenize(code, language);
    assert.equal(tokens.map((token) => token.text).join(""), code);
  }
});

Deno.test("tokenize() finds keywords, strings, numbers and comments in python", () => {
  assert.deepEqual(
    kinds('def f(x):\n    return "a\\"b" + 42  # done\n', "python"),
    [
      "keyword:def",
      "keyword:return",
      'string:"a\\"b"',
      "number:42",
      "comment:# done",
    ],
  );
});

Deno.test("tokenize() knows C's comments and leaves #include alone", () => {
  assert.deepEqual(
    kinds("#include <stdio.h>\n/* a */ int x = 0x1F; // b", "c"),
    [
      "keyword:include",
      "comment:/* a */",
      "keyword:int",
      "number:0x1F",
      "comment:// b",
    ],
  );
});

Deno.test("tokenize() treats ${#name} and $# in bash as lengths", () => {
  assert.deepEqual(kinds("echo ${#list} $# # n\nread -r x", "bash"), [
    "keyword:echo",
    "comment:# n",
    "keyword:read",
  ]);
});

Deno.test("tokenize() ends an unterminated string at the end of its line", () => {
  assert.deepEqual(kinds('x = "open\ny = 1', "python"), [
    'string:"open',
    "number:1",
  ]);
});
