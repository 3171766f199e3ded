import assert from "node:assert/strict";
import {
  blankResult,
  checkLimits,
  fitResult,
  type JobLimits,
  JobLimitsSchema,
  JobRequestSchema,
  LIMIT_MAXIMA,
} from "./job.ts";

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

Deno.test("JobLimitsSchema holds every limit to its documented maximum, naming it", () => {
  assert.equal(JobLimitsSchema.safeParse(LIMIT_MAXIMA).success, true);
  for (const key of Object.keys(LIMIT_MAXIMA) as (keyof JobLimits)[]) {
    const parsed = JobRequestSchema.safeParse({
      language: "python",
      files: [{ name: "main.py", content: "" }],
      limits: { [key]: LIMIT_MAXIMA[key] + 1 },
    });
    assert.equal(parsed.success, false, `accepted ${key} over its maximum`);
    assert.match(
      parsed.error!.issues[0]!.message,
      new RegExp(`^${key} must be at most ${LIMIT_MAXIMA[key]}$`),
    );
  }
  // Timers fire at once past 2^31 - 1 ms: no time limit comes near it.
  for (
    const key of [
      "wallTimeMs",
      "cpuTimeMs",
      "compileWallTimeMs",
      "compileCpuTimeMs",
    ] as const
  ) {
    assert.ok(LIMIT_MAXIMA[key] * 4 < 2 ** 31, key);
  }
});

Deno.test("checkLimits() refuses a limit no timer can hold, and an unknown one", () => {
  assert.deepEqual(checkLimits({ wallTimeMs: 5000 }), { wallTimeMs: 5000 });
  assert.throws(
    () => checkLimits({ wallTimeMs: 2 ** 31 }, "the node's limits"),
    new RangeError(
      "Cannot use the node's limits: wallTimeMs must be at most 86400000",
    ),
  );
  assert.throws(
    () => checkLimits({ memoryMb: 0.5 }),
    /memoryMb must be an integer/,
  );
  assert.throws(
    () => checkLimits({ wallTime: 5 } as never),
    /Cannot use limits: .*wallTime/,
  );
});

Deno.test("checkLimits() lets ptys be 0 (none at all), no other limit", () => {
  assert.deepEqual(checkLimits({ ptys: 0 }), { ptys: 0 });
  assert.throws(() => checkLimits({ ptys: -1 }), /ptys must not be negative/);
  assert.throws(
    () => checkLimits({ processes: 0 }),
    /processes must be positive/,
  );
});

Deno.test("fitResult() never splits a surrogate pair", () => {
  // "😀" is two UTF-16 units: halving 3 of them falls inside the second.
  const result = blankResult("j", { verdict: "ok", stdout: "😀😀😀" });
  const fitted = fitResult(result, jsonBytes(result) - 1);
  assert.equal(fitted.stdout, "😀");
  assert.ok(!/[\ud800-\udbff]$/.test(fitted.stdout));
});
