import assert from "node:assert/strict";
import { blankResult, fitResult, JobRequestSchema } from "./job.ts";

const jsonBytes = (value: unknown) =>
  new TextEncoder().encode(JSON.stringify(value)).byteLength;

Deno.test("fitResult() leaves a result that fits untouched", () => {
  const result = blankResult("j", { verdict: "ok", stdout: "hello\n" });
  assert.equal(fitResult(result, 10_000), result);
});

Deno.test("fitResult() cuts output that JSON escaping makes too long", () => {
  // 100 000 control characters: 100 KB of output, 600 KB once escaped.
  const controls = "\u0001".repeat(100_000);
  const result = blankResult("j", {
    verdict: "output_limit",
    stdout: controls,
    stderr: "short",
    compile: {
      verdict: "ok",
      exitCode: 0,
      stdout: "",
      stderr: controls,
      timeMs: 1,
      cpuTimeMs: null,
      memoryKb: null,
    },
  });
  const fitted = fitResult(result, 200_000);
  assert.ok(jsonBytes(fitted) <= 200_000, `${jsonBytes(fitted)} bytes`);
  assert.equal(fitted.truncated, true);
  assert.ok(
    controls.startsWith(fitted.stdout) && fitted.stdout.length > 10_000,
  );
  assert.ok(
    controls.startsWith(fitted.compile!.stderr) &&
      fitted.compile!.stderr.length > 10_000,
  );
  assert.equal(fitted.stderr, "short", "the short field is kept whole");
});

Deno.test("JobRequestSchema refuses file names that leave the workdir", () => {
  for (
    const name of ["../x.py", "a/b.py", "..", ".", "", "a\0.py", "a\\b.py"]
  ) {
    const parsed = JobRequestSchema.safeParse({
      language: "python",
      files: [{ name, content: "" }],
    });
    assert.equal(parsed.success, false, `accepted ${JSON.stringify(name)}`);
  }
  const fine = JobRequestSchema.safeParse({
    language: "python",
    files: [{ name: ".hidden.py", content: "" }],
  });
  assert.equal(fine.success, true);
});
