import assert from "node:assert/strict";
import { join } from "node:path";
import { Sandbox, type SandboxStepOptions } from "./sandbox.ts";

const LIMITS: SandboxStepOptions["limits"] = {
  wallTimeMs: 10_000,
  cpuTimeMs: 5_000,
  memoryMb: 128,
  processes: 32,
  outputBytes: 64 * 1024,
  fileSizeBytes: 1024 * 1024,
  openFiles: 64,
};

/** What running `<workdir>/<path>` gives, as the test can compare it. */
async function attempt(
  sandbox: Sandbox,
  workdir: string,
  path: string,
): Promise<string> {
  try {
    const outcome = await sandbox.run(
      { command: join(workdir, path), args: [] },
      { workdir, env: {}, executables: [], limits: LIMITS },
    );
    return `ran: exit ${outcome.exitCode}, ${outcome.signal}`;
  } catch (error) {
    return `refused: ${(error as Error).message}`;
  }
}

Deno.test("a symlink a job made as its program never tells it whether a host path exists", async () => {
  const sandbox = await Sandbox.detect();
  // A host directory only root can look in, holding one file.
  const hidden = await Deno.makeTempDir({ prefix: "kiln-hidden-" });
  const workdir = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
  try {
    await Deno.writeTextFile(join(hidden, "present"), "#!/bin/sh\n", {
      mode: 0o755,
    });
    await sandbox.prepareWorkdir(workdir);
    const answers: string[] = [];
    for (const target of ["present", "absent"]) {
      // As a compile step could leave them: main, and main in a linked dir.
      await Deno.symlink(join(hidden, target), join(workdir, "main"));
      await Deno.symlink(hidden, join(workdir, "dir"));
      answers.push(
        await attempt(sandbox, workdir, "main"),
        await attempt(sandbox, workdir, `dir/${target}`),
      );
      for (const name of ["main", "dir"]) {
        await Deno.remove(join(workdir, name));
      }
    }
    const [present, presentInDir, absent, absentInDir] = answers;
    assert.equal(present, absent);
    assert.match(present!, /^refused: .*symlink/);
    assert.equal(
      presentInDir!.replace("present", "X"),
      absentInDir!.replace("absent", "X"),
    );
    assert.match(presentInDir!, /^refused: .*symlink/);
  } finally {
    await Deno.remove(workdir, { recursive: true });
    await Deno.remove(hidden, { recursive: true });
    await sandbox.close();
  }
});

Deno.test("a program file the job left in its workdir still runs, and a missing one is the node's error", async () => {
  const sandbox = await Sandbox.detect();
  const workdir = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
  try {
    await Deno.writeTextFile(join(workdir, "main"), "#!/bin/sh\nexit 7\n", {
      mode: 0o755,
    });
    await sandbox.prepareWorkdir(workdir);
    assert.equal(await attempt(sandbox, workdir, "main"), "ran: exit 7, null");
    assert.match(
      await attempt(sandbox, workdir, "missing"),
      /^refused: cannot run .*\/missing: no such file$/,
    );
  } finally {
    await Deno.remove(workdir, { recursive: true });
    await sandbox.close();
  }
});
