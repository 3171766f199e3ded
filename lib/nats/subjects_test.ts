import assert from "node:assert/strict";
import {
  controlSubject,
  eventSubject,
  isClusterJobId,
  jobSubject,
  languageConsumer,
  languageFilter,
  languageToken,
  subjectToken,
} from "./subjects.ts";

Deno.test("subjects: a job's subject holds its language and id as single tokens", () => {
  const id = crypto.randomUUID();
  assert.equal(jobSubject("python", id), `kiln.jobs.python.${id}`);
  assert.equal(languageFilter("python"), "kiln.jobs.python.*");
  assert.equal(languageConsumer("python"), "lang_python");
  assert.equal(eventSubject(id), `kiln.events.${id}`);
  assert.equal(controlSubject(id), `kiln.control.${id}`);
});

Deno.test("subjects: a language with characters a subject may not hold is encoded, never split", () => {
  assert.equal(languageToken("c++"), "c_00002b_00002b");
  assert.equal(languageToken("c#"), "c_000023");
  // Distinct names stay distinct: "_" itself is encoded, at a fixed width.
  assert.notEqual(languageToken("a_00002b"), languageToken("a+"));
  assert.notEqual(languageToken("\u0002b"), languageToken("+"));
  for (const hostile of ["a.b", "*", ">", "a b", "é"]) {
    assert.match(languageToken(hostile), /^[A-Za-z0-9_-]+$/);
  }
});

Deno.test("subjects: an id that could reach other subjects is refused", () => {
  assert.equal(isClusterJobId(crypto.randomUUID()), true);
  for (const bad of ["", "a.b", "*", ">", "a b", "x".repeat(129)]) {
    assert.equal(isClusterJobId(bad), false);
    assert.throws(() => subjectToken(bad, "job id"), TypeError);
    assert.throws(() => eventSubject(bad), TypeError);
  }
});
