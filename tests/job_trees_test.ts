/**
 * Trees a program builds cannot take a node down: a job's workdir 20,000
 * levels deep (past the depth where `Deno.remove` overflowed its stack and
 * aborted the process), with `000` directories and symlinks out, is removed
 * after the job, and the start-up sweep removes such a tree a killed node
 * left. Each removal runs in a child process with a deadline (see
 * `_trees.ts`), so a regression fails the test instead of killing the runner.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PYTHON, runChild, TREE_PROGRAM } from "./_trees.ts";
import { SANDBOX_UID } from "../lib/sandbox/bubblewrap.ts";

/** Deep enough to abort the old removal (10,000 to 15,000 levels). */
const DEPTH = 20_000;
/** Building and removing such a tree takes seconds; a busy host, minutes. */
const DEADLINE_MS = 600_000;

/**
 * Removes what a test made with `rm -rf`, whatever the code under test
 * left: never `Deno.remove`, which a left deep tree would crash.
 */
async function cleanUp(...paths: string[]): Promise<void> {
  await new Deno.Command("/bin/rm", { args: ["-rf", "--", ...paths] })
    .output();
}

/** A directory a remover must not follow a symlink into, with a file to keep. */
async function canary(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "kiln-canary-" });
  await Deno.writeTextFile(join(dir, "keep"), "keep\n");
  await Deno.chmod(dir, 0o755);
  return dir;
}

for (const sandbox of ["default", "none"] as const) {
  Deno.test(`trees: a job's ${DEPTH}-level tree is removed after it, in the ${sandbox} sandbox, and the node lives`, async () => {
    const workRoot = await Deno.makeTempDir({ prefix: "kiln-test-" });
    const outside = await canary();
    try {
      const child = await runChild(
        ["job", workRoot, outside, `${DEPTH}`, sandbox],
        DEADLINE_MS,
      );
      assert.equal(
        child.code,
        0,
        `the node process died (signal ${child.signal}): ${
          child.stderr.slice(-500)
        }`,
      );
      const result = JSON.parse(child.stdout);
      assert.equal(result.verdict, "ok", JSON.stringify(result));
      assert.equal(result.stdout, `built ${DEPTH}\n`);
      assert.deepEqual(result.left, [], "the workdir was left");
      assert.equal(result.removalFailures, 0);
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(outside))).map((e) => e.name),
        ["keep"],
        "a symlink was followed",
      );
    } finally {
      await cleanUp(workRoot, outside);
    }
  });
}

Deno.test("trees: the sweep removes a dead node's work root holding a deep tree", async () => {
  const parent = await Deno.makeTempDir({ prefix: "kiln-sweep-test-" });
  const outside = await canary();
  try {
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    const root = join(parent, `kiln-${gone.pid}-stale`);
    const workdir = join(root, "jobs", "kiln-job-1");
    await Deno.mkdir(workdir, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(join(root, "owner"), "kiln\n");
    // Built by the job's uid where kiln is root, as a job would.
    const asJob = Deno.uid() === 0
      ? [
        "/usr/bin/setpriv",
        `--reuid=${SANDBOX_UID}`,
        `--regid=${SANDBOX_UID}`,
        "--clear-groups",
        "--",
      ]
      : [];
    if (asJob.length > 0) await Deno.chown(workdir, SANDBOX_UID, SANDBOX_UID);
    const [command, ...args] = [
      ...asJob,
      PYTHON,
      "-c",
      TREE_PROGRAM,
      ".",
      `${DEPTH}`,
      outside,
    ];
    const built = await new Deno.Command(command!, {
      args,
      cwd: workdir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(built.success, new TextDecoder().decode(built.stderr));

    const child = await runChild(["sweep", parent], DEADLINE_MS);
    assert.equal(
      child.code,
      0,
      `the sweeping process died (signal ${child.signal}): ${
        child.stderr.slice(-500)
      }`,
    );
    assert.deepEqual(JSON.parse(child.stdout), { removed: 1, failed: [] });
    assert.deepEqual(await Array.fromAsync(Deno.readDir(parent)), []);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(outside))).map((e) => e.name),
      ["keep"],
      "a symlink was followed",
    );
  } finally {
    await cleanUp(parent, outside);
  }
});
