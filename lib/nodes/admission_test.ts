import assert from "node:assert/strict";
import { MAX_FILES } from "../job.ts";
import { admissionLimits, parseJob } from "./admission.ts";

const LIMITS = { maxProgramBytes: 100, maxFiles: 3 };

function files(count: number, content = "") {
  return Array.from(
    { length: count },
    (_, i) => ({ name: `f${i}.sh`, content }),
  );
}

Deno.test("parseJob() admits a job at the limits and refuses one over them, naming the limit and the size", () => {
  const atLimit = parseJob({
    language: "bash",
    files: files(3, "x".repeat(25)),
    stdin: "12345",
    args: ["1234", "5"],
  }, LIMITS);
  assert.ok(atLimit.ok, "(5 + 25) * 3 + 5 + 5 = 100 bytes is allowed");

  const tooMany = parseJob({ language: "bash", files: files(4) }, LIMITS);
  assert.deepEqual(tooMany, {
    ok: false,
    reason:
      "too many source files: this job has 4; a job may have at most 3 source files",
  });

  const tooBig = parseJob({
    language: "bash",
    files: files(1, "x".repeat(85)),
    stdin: "é".repeat(6), // 12 bytes in UTF-8, 6 in UTF-16
  }, LIMITS);
  assert.deepEqual(tooBig, {
    ok: false,
    reason:
      "program too large: 102 bytes of source files and their names, stdin and arguments; a job may have at most 100 bytes",
  });

  // File names land on disk and on command lines too: 256 names of 255
  // bytes are 64 KiB, whatever the files hold.
  const longNames = parseJob({
    language: "bash",
    files: [{ name: "n".repeat(101), content: "" }],
  }, LIMITS);
  assert.ok(!longNames.ok);
  assert.match(longNames.reason, /program too large: 101 bytes/);
});

Deno.test("parseJob() counts files before validating them, and survives any shape", () => {
  const huge = parseJob(
    { language: "bash", files: new Array(1_000_000) },
    LIMITS,
  );
  assert.ok(!huge.ok);
  assert.match(huge.reason, /this job has 1000000/);
  for (const raw of [null, 42, "job", [], { files: "many" }, { files: null }]) {
    const parsed = parseJob(raw, LIMITS);
    assert.ok(!parsed.ok);
    assert.match(parsed.reason, /^invalid job: /);
  }
});

Deno.test("parseJob() without limits checks only the schema", () => {
  const parsed = parseJob({
    language: "bash",
    files: files(MAX_FILES, "x".repeat(10_000)),
  });
  assert.ok(parsed.ok);
  const over = parseJob({ language: "bash", files: files(MAX_FILES + 1) });
  assert.ok(!over.ok);
  assert.match(over.reason, /at most 256 source files/);
});

Deno.test("admissionLimits() refuses limits the schema could never honour", () => {
  assert.deepEqual(admissionLimits(LIMITS), LIMITS);
  assert.throws(
    () => admissionLimits({ maxProgramBytes: 100, maxFiles: MAX_FILES + 1 }),
    /maxFiles 257: expected an integer from 1 to 256/,
  );
  assert.throws(
    () => admissionLimits({ maxProgramBytes: 0, maxFiles: 1 }),
    RangeError,
  );
  assert.throws(
    () => admissionLimits({ maxProgramBytes: 2000, maxFiles: 1 }, 1000),
    /maxProgramBytes 2000: with maxFrameBytes 1000 it may be at most -24/,
  );
  // A program as large as the frame could arrive but not be passed on.
  assert.throws(
    () => admissionLimits({ maxProgramBytes: 65536, maxFiles: 1 }, 65536),
    /maxProgramBytes 65536: with maxFrameBytes 65536 it may be at most 64512, leaving 1024 bytes for the message around it/,
  );
  assert.deepEqual(
    admissionLimits({ maxProgramBytes: 64512, maxFiles: 1 }, 65536),
    { maxProgramBytes: 64512, maxFiles: 1, maxFrameBytes: 65536 },
  );
});

Deno.test("parseJob() refuses a job whose run message, escaped as JSON, would not fit a frame", () => {
  const limits = admissionLimits(
    { maxProgramBytes: 20_000, maxFiles: 4 },
    65536,
  );
  // 15,000 raw bytes, far under the program limit; 90,000 bytes as JSON.
  const escaped = parseJob({
    language: "bash",
    files: [{ name: "a.sh", content: "\x01".repeat(15_000) }],
  }, limits);
  assert.ok(!escaped.ok);
  assert.match(
    escaped.reason,
    /^program too large: passed on to a node as JSON .* this job takes 90\d{3} bytes; a frame carries at most 65536 bytes$/,
  );
  const plain = parseJob({
    language: "bash",
    files: [{ name: "a.sh", content: "x".repeat(15_000) }],
  }, limits);
  assert.ok(plain.ok);
});
