import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { sweepWorkRoots } from "../nodes/_work_roots.ts";
import { loadMountCalls, whyCannotMount } from "./_mounts.ts";
import { JobDisk } from "./disk_limit.ts";
import {
  defaultWorkRoot,
  removeWorkRoot,
  sweepStaleWorkRoots,
  unmountStaleMountPointRoots,
} from "./work_root.ts";
import { isProcessAlive } from "./process_tree.ts";

/** Why this process cannot mount the tmpfs of mount points, or null. */
const cannotMount = whyCannotMount("a tmpfs");

/** `TMPFS_MAGIC`, what `statfs` says a tmpfs is. */
const TMPFS_MAGIC = 0x01021994n;

/** Whether `path` is on a tmpfs. */
function onTmpfs(path: string): boolean {
  const calls = loadMountCalls();
  if (typeof calls === "string") throw new Error(calls);
  const stat = calls.statfs(path);
  if (typeof stat === "number") throw new Error(`statfs ${path}: ${stat}`);
  return stat.type === TMPFS_MAGIC;
}

/** The mount points of the mounts whose source is `kiln-<pid>`. */
async function kilnMounts(pid: number, under = "/"): Promise<string[]> {
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
  return mountinfo.split("\n").filter((line) => line.includes(` kiln-${pid} `))
    .map((line) => line.split(" ")[4]!)
    .filter((point) => point.startsWith(under));
}

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

Deno.test({
  name:
    "defaultWorkRoot() gives mount points a private tmpfs of the root's own, and job files the jobs directory",
  ignore: cannotMount !== null,
}, async () => {
  const jobs = await defaultWorkRoot();
  const mounts = await defaultWorkRoot({ mountPointsOnly: true });
  try {
    assert.equal(mounts, join(dirname(jobs), "mounts"));
    assert.equal(onTmpfs(mounts), true, "the mount points' tmpfs");
    assert.equal(onTmpfs(jobs), onTmpfs(tmpdir()), "the jobs directory");
    const info = await Deno.lstat(mounts);
    assert.equal(info.uid, Deno.uid());
    assert.equal(info.mode! & 0o777, 0o700);
    // Under this root only: other test modules in this process keep theirs.
    const root = `${dirname(mounts)}/`;
    assert.deepEqual(await kilnMounts(Deno.pid, root), [mounts]);
    assert.equal(
      await defaultWorkRoot({ mountPointsOnly: true }),
      mounts,
      "mounted once",
    );
    assert.deepEqual(await kilnMounts(Deno.pid, root), [mounts]);
  } finally {
    await removeWorkRoot();
  }
});

Deno.test({
  name:
    "removeWorkRoot() unmounts the tmpfs of mount points once none is left in it, and removes the root",
  ignore: cannotMount !== null,
}, async () => {
  const mounts = await defaultWorkRoot({ mountPointsOnly: true });
  const mountPoint = Deno.makeTempDirSync({ dir: mounts, prefix: "kiln-job-" });
  await removeWorkRoot();
  assert.equal(onTmpfs(mounts), true, "kept while a mount point is left");
  assert.equal(await defaultWorkRoot({ mountPointsOnly: true }), mounts);
  Deno.removeSync(mountPoint);
  await removeWorkRoot();
  assert.deepEqual(await kilnMounts(Deno.pid, `${dirname(mounts)}/`), []);
  await assert.rejects(Deno.lstat(dirname(mounts)), Deno.errors.NotFound);
  const next = await defaultWorkRoot({ mountPointsOnly: true });
  assert.notEqual(next, mounts);
  assert.equal(onTmpfs(next), true, "the next root mounts its own");
  await removeWorkRoot();
  assert.deepEqual(await kilnMounts(Deno.pid, `${dirname(next)}/`), []);
});

Deno.test({
  name:
    "the sweep unmounts and removes the tmpfs of mount points of a node killed with a job disk mounted in it",
  ignore: cannotMount !== null,
}, async () => {
  // A kiln process that makes its root and a job's disk, then is killed.
  const workRoot = new URL("./work_root.ts", import.meta.url).href;
  const diskLimit = new URL("./disk_limit.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { defaultWorkRoot } from "${workRoot}";
      import { JobDisk } from "${diskLimit}";
      const dir = Deno.makeTempDirSync({
        prefix: "kiln-job-",
        dir: await defaultWorkRoot({ mountPointsOnly: true }),
      });
      const disk = await JobDisk.mount(dir, { sizeBytes: 1 << 20, files: 10 });
      Deno.writeTextFileSync(disk.workdir + "/main.sh", "echo hi\\n");
      console.log(dir);
      await new Promise(() => {});`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!printed.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    printed += value;
  }
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  const jobDir = printed.trim();
  const root = dirname(dirname(jobDir));
  assert.match(root, new RegExp(`/kiln-${child.pid}-[^/]+$`));
  assert.deepEqual(
    (await kilnMounts(child.pid)).sort(),
    [join(root, "mounts"), jobDir].sort(),
    "the killed node left its mounts",
  );
  // What a node does at its start.
  await sweepWorkRoots();
  assert.deepEqual(await kilnMounts(child.pid), []);
  await assert.rejects(Deno.lstat(root), Deno.errors.NotFound);
  // The mounts left mounted alone (no job disk swept first) go too.
  const stale = await Deno.makeTempDir({ prefix: "kiln-sweep-test-" });
  try {
    const dead = await deadPid();
    const path = join(stale, `kiln-${dead}-stale`);
    await kilnRoot(path);
    await Deno.mkdir(join(path, "mounts"));
    const calls = loadMountCalls();
    if (typeof calls === "string") throw new Error(calls);
    assert.equal(
      calls.mount(
        `kiln-${dead}`,
        join(path, "mounts"),
        "tmpfs",
        0n,
        "size=64k",
      ),
      0,
    );
    await Deno.mkdir(join(path, "mounts", "kiln-job-1"));
    const disk = await JobDisk.mount(join(path, "mounts", "kiln-job-1"), {
      sizeBytes: 1 << 20,
      files: 10,
    });
    await Deno.writeTextFile(join(disk.workdir, "left"), "x");
    assert.deepEqual(await sweepStaleWorkRoots(stale), {
      removed: 1,
      failed: [],
    });
    assert.deepEqual(await names(stale), []);
    assert.deepEqual(await kilnMounts(dead), []);
    assert.ok(
      !(await Deno.readTextFile("/proc/self/mountinfo")).includes(path),
      "a job disk below it stays mounted",
    );
    // One whose root lost its mark and job directory (an older kiln's
    // sweep removed what it could around it) is unmounted too.
    await Deno.mkdir(join(path, "mounts"), { recursive: true });
    assert.equal(
      calls.mount(
        `kiln-${dead}`,
        join(path, "mounts"),
        "tmpfs",
        0n,
        "size=64k",
      ),
      0,
    );
    // At least ours: another kiln process on this host may have died too.
    assert.ok(await unmountStaleMountPointRoots(isProcessAlive) >= 1);
    assert.deepEqual(await kilnMounts(dead), []);
  } finally {
    await Deno.remove(stale, { recursive: true });
  }
});
