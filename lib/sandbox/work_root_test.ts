import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  defaultWorkRoot,
  removeWorkRoot,
  sweepStaleWorkRoots,
} from "./work_root.ts";

/** The pid of a process that surely exited. */
async function deadPid(): Promise<number> {
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  return gone.pid;
}

/** A work root as kiln makes it: private, marked, with a job workdir. */
async function kilnRoot(path: string): Promise<void> {
  await Deno.mkdir(join(path, "jobs", "kiln-job-1"), {
    recursive: true,
    mode: 0o700,
  });
  await Deno.writeTextFile(join(path, "owner"), "kiln\n");
}

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("sweepStaleWorkRoots() removes the marked roots of dead kiln processes only", async () => {
  const parent = await Deno.makeTempDir({ prefix: "kiln-sweep-test-" });
  try {
    const dead = await deadPid();
    await kilnRoot(join(parent, `kiln-${dead}-stale`));
    await kilnRoot(join(parent, `kiln-${Deno.pid}-alive`));
    // Unrelated or unproven names are left alone.
    await kilnRoot(join(parent, `kiln-${dead}`));
    await kilnRoot(join(parent, "kiln-abc-x"));
    await Deno.mkdir(join(parent, `kiln-${dead}-unmarked`));
    await Deno.mkdir(join(parent, "other"));
    assert.deepEqual(await sweepStaleWorkRoots(parent), {
      removed: 1,
      failed: [],
    });
    assert.deepEqual(
      await names(parent),
      [
        `kiln-${dead}`,
        `kiln-${Deno.pid}-alive`,
        "kiln-abc-x",
        `kiln-${dead}-unmarked`,
        "other",
      ].sort(),
    );
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test({
  name:
    "sweepStaleWorkRoots() never touches a root another user made, nor follows a symlink",
  // Making files of another uid needs root.
  ignore: Deno.uid() !== 0,
}, async () => {
  const parent = await Deno.makeTempDir({ prefix: "kiln-sweep-test-" });
  const elsewhere = await Deno.makeTempDir({ prefix: "kiln-sweep-target-" });
  try {
    const dead = await deadPid();
    // Another user's root, marked as kiln marks its own.
    const theirs = join(parent, `kiln-${dead}-theirs`);
    await kilnRoot(theirs);
    for (const path of [theirs, join(theirs, "owner")]) {
      await Deno.chown(path, 65534, 65534);
    }
    // Another user's root under the name the old scheme swept.
    const old = join(parent, `kiln-${dead}`);
    await kilnRoot(old);
    await Deno.chown(old, 65534, 65534);
    // Our directory, marked by another user.
    const forged = join(parent, `kiln-${dead}-forged`);
    await kilnRoot(forged);
    await Deno.chown(join(forged, "owner"), 65534, 65534);
    // A symlink to a marked root of ours, and a mark that is a symlink.
    await kilnRoot(join(elsewhere, "target"));
    await Deno.symlink(
      join(elsewhere, "target"),
      join(parent, `kiln-${dead}-link`),
    );
    const linked = join(parent, `kiln-${dead}-linkmark`);
    await Deno.mkdir(linked);
    await Deno.symlink(
      join(elsewhere, "target", "owner"),
      join(linked, "owner"),
    );

    assert.deepEqual(await sweepStaleWorkRoots(parent), {
      removed: 0,
      failed: [],
    });
    assert.deepEqual(await names(parent), [
      `kiln-${dead}`,
      `kiln-${dead}-forged`,
      `kiln-${dead}-link`,
      `kiln-${dead}-linkmark`,
      `kiln-${dead}-theirs`,
    ]);
    assert.deepEqual(await names(join(elsewhere, "target")), ["jobs", "owner"]);
  } finally {
    await Deno.remove(parent, { recursive: true });
    await Deno.remove(elsewhere, { recursive: true });
  }
});

Deno.test("defaultWorkRoot() makes a private, marked root of its own, never a squatted kiln-<pid>", async () => {
  // Another user got there first with the name the old scheme predicted.
  const squat = join(tmpdir(), `kiln-${Deno.pid}`);
  await Deno.mkdir(squat, { mode: 0o777 });
  await Deno.chmod(squat, 0o777);
  if (Deno.uid() === 0) await Deno.chown(squat, 65534, 65534);
  try {
    const jobs = await defaultWorkRoot();
    const root = dirname(jobs);
    assert.notEqual(root, squat);
    assert.ok(!jobs.startsWith(`${squat}/`), jobs);
    assert.match(root, new RegExp(`/kiln-${Deno.pid}-[^/]+$`));
    for (const dir of [root, jobs]) {
      const info = await Deno.lstat(dir);
      assert.ok(info.isDirectory && !info.isSymlink, dir);
      assert.equal(info.uid, Deno.uid(), dir);
      assert.equal(info.mode! & 0o777, 0o700, dir);
    }
    assert.equal((await Deno.lstat(join(root, "owner"))).isFile, true);
    assert.equal(await defaultWorkRoot(), jobs, "made once per process");
  } finally {
    await Deno.remove(squat);
  }
});

Deno.test("removeWorkRoot() removes an empty root, and the next use makes a new one", async () => {
  const first = await defaultWorkRoot();
  const workdir = await Deno.makeTempDir({ dir: first });
  await removeWorkRoot();
  assert.equal((await Deno.lstat(first)).isDirectory, true, "kept while used");
  await Deno.remove(workdir);
  await removeWorkRoot();
  await assert.rejects(Deno.lstat(dirname(first)), Deno.errors.NotFound);
  const second = await defaultWorkRoot();
  assert.notEqual(second, first);
  await removeWorkRoot();
});
