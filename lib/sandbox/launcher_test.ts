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

/** Runs `launch()` with `Deno.Command` watched: the options of every spawn. */
async function spawnOptionsOf(
  run: () => Promise<unknown>,
): Promise<Deno.CommandOptions[]> {
  const seen: Deno.CommandOptions[] = [];
  const original = Deno.Command;
  // @ts-ignore: a watching subclass, put back in `finally`.
  Deno.Command = class extends original {
    constructor(command: string | URL, options: Deno.CommandOptions = {}) {
      seen.push(options);
      super(command, options);
    }
  };
  try {
    await run();
  } finally {
    // @ts-ignore: see above.
    Deno.Command = original;
  }
  return seen;
}

Deno.test("launch() spawns without `detached`, which makes Deno fork its whole process", async () => {
  const seen = await spawnOptionsOf(() =>
    launch({ command: "/bin/true", args: [] }, {
      cwd: "/",
      env: {},
      wallTimeMs: 10_000,
      outputBytes: 1024,
    })
  );
  assert.equal(seen.length, 1);
  assert.notEqual(seen[0]!.detached, true);
});

/** pid, ppid, process group and session of the process that printed `stat`. */
function idsOf(stat: string) {
  const [pid] = stat.split(" ");
  const [, ppid, pgrp, session] = stat.slice(stat.lastIndexOf(")") + 2)
    .split(" ");
  return {
    pid: Number(pid),
    ppid: Number(ppid),
    pgrp: Number(pgrp),
    session: Number(session),
  };
}

for (const setsidPath of [undefined, null]) {
  Deno.test(
    `launch() runs the program as the leader of its own session and group, kiln's own child (setsid ${
      setsidPath === null ? "off" : "on"
    })`,
    async () => {
      const outcome = await launch(
        { command: "/bin/sh", args: ["-c", "cat /proc/$$/stat"] },
        {
          cwd: "/",
          env: {},
          wallTimeMs: 10_000,
          outputBytes: 4096,
          setsidPath,
        },
      );
      assert.equal(outcome.exitCode, 0, outcome.stderr);
      const ids = idsOf(outcome.stdout);
      // Our child, not a grandchild: setsid did not fork.
      assert.equal(ids.ppid, Deno.pid);
      assert.equal(ids.pgrp, ids.pid);
      assert.equal(ids.session, ids.pid);
    },
  );
}

Deno.test("launch() cancelled before the program starts still kills it, though it leads no group yet", async () => {
  const outcome = await launch(
    { command: "/bin/sleep", args: ["60"] },
    {
      cwd: "/",
      env: {},
      wallTimeMs: 120_000,
      outputBytes: 1024,
      signal: AbortSignal.abort(),
    },
  );
  assert.equal(outcome.ending, "cancelled");
  assert.equal(outcome.signal, "SIGKILL");
});

Deno.test("launch() reads a CPU budget no sooner than the step could have spent it", async () => {
  let reads = 0;
  const outcome = await launch(
    { command: "/bin/sh", args: ["-c", "sleep 0.3"] },
    {
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
      wallTimeMs: 10_000,
      outputBytes: 1024,
      // Two CPUs spend 10 s in 5 s at the earliest: each read before that
      // would only wake the node for nothing.
      cpu: { limitMs: 10_000, cpus: 2, read: () => Promise.resolve(++reads) },
    },
  );
  assert.equal(outcome.ending, "exited");
  assert.equal(reads, 0);
});

Deno.test("launch() stops a step at its CPU budget when it can be spent", async () => {
  let started: number | undefined;
  const outcome = await launch(
    { command: "/bin/sh", args: ["-c", "sleep 10"] },
    {
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
      wallTimeMs: 20_000,
      outputBytes: 1024,
      // As if one CPU were busy all the time, from the first read on.
      cpu: {
        limitMs: 200,
        cpus: 1,
        read: () => {
          started ??= performance.now() - 200;
          return Promise.resolve(performance.now() - started - 1);
        },
      },
    },
  );
  assert.equal(outcome.ending, "cpu_limit");
});
