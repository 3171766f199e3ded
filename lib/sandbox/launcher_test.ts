import assert from "node:assert/strict";
import { launch } from "./launcher.ts";

Deno.test("launch() keeps a program's own exit even when its wall timer fires during the cleanup", async () => {
  // The program exits at once, leaving a process that escaped its group:
  // the cleanup after the exit then outlasts the wall time limit.
  const outcome = await launch(
    {
      command: "/bin/sh",
      args: ["-c", "(setsid sh -c 'sleep 0.5' &); exit 0"],
    },
    {
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
      wallTimeMs: 100,
      outputBytes: 1024,
    },
  );
  assert.equal(outcome.ending, "exited");
  assert.equal(outcome.exitCode, 0);
});

Deno.test("launch() holds a wall time past what a timer takes instead of firing at once", async () => {
  // setTimeout fires at once for more than 2^31 - 1 ms: the program was
  // stopped as over its time limit after a millisecond.
  const outcome = await launch(
    { command: "/bin/sh", args: ["-c", "sleep 0.1; exit 0"] },
    {
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
      wallTimeMs: 2 ** 31,
      outputBytes: 1024,
    },
  );
  assert.equal(outcome.ending, "exited");
  assert.equal(outcome.exitCode, 0);
});
