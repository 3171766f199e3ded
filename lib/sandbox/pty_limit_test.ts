import assert from "node:assert/strict";
import { join } from "node:path";
import {
  detectPtyLimit,
  JobPtys,
  MAX_PTY_LIMIT,
  unmountStaleJobPtys,
} from "./pty_limit.ts";

const detection = await detectPtyLimit();
const ignore = !detection.available;
if (ignore) {
  // deno-lint-ignore no-console
  console.log(`skipping the job pty tests: ${detection.reason}`);
}

async function mounts(): Promise<string> {
  return await Deno.readTextFile("/proc/self/mountinfo");
}

/** Opens `ptmx` until it fails; returns the files and the error's message. */
async function openAll(
  ptmx: string,
): Promise<{ files: Deno.FsFile[]; error: string }> {
  const files: Deno.FsFile[] = [];
  for (let i = 0; i < 100; i++) {
    try {
      files.push(await Deno.open(ptmx, { read: true, write: true }));
    } catch (error) {
      return { files, error: String(error) };
    }
  }
  return { files, error: "none" };
}

Deno.test({
  name: "ptys: a job's devpts gives its limit of ptys, then ENOSPC",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-pty-test-" });
    const ptys = await JobPtys.mount(dir, 3);
    const { files, error } = await openAll(join(dir, "ptmx"));
    try {
      assert.equal(files.length, 3);
      assert.match(error, /No space left on device/);
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(),
        ["0", "1", "2", "ptmx"],
      );
      assert.equal((await Deno.stat(join(dir, "ptmx"))).mode! & 0o777, 0o666);
      assert.match(
        (await mounts()).split("\n").find((line) => line.includes(dir))!,
        new RegExp(` - devpts kiln-${Deno.pid} .*max=3`),
      );
      // Closing one gives it back.
      files.pop()!.close();
      files.push(
        await Deno.open(join(dir, "ptmx"), { read: true, write: true }),
      );
    } finally {
      for (const file of files) file.close();
      await ptys.unmount();
      await ptys.unmount(); // a second call does nothing
      await Deno.remove(dir);
    }
    assert.ok(!(await mounts()).includes(dir), "the devpts is still mounted");
  },
});

Deno.test({
  name: "ptys: unmounting frees a devpts a process still holds a pty of",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-pty-test-" });
    const ptys = await JobPtys.mount(dir, 2);
    const held = await Deno.open(join(dir, "ptmx"), {
      read: true,
      write: true,
    });
    try {
      await ptys.unmount();
      assert.ok(!(await mounts()).includes(dir));
    } finally {
      held.close();
      await Deno.remove(dir);
    }
  },
});

Deno.test({
  name: "ptys: the limit is an integer from 1 to the kernel's maximum",
  ignore,
  fn: async () => {
    // 0 above all: devpts reads max=0 as no limit at all.
    for (const limit of [0, -1, 1.5, MAX_PTY_LIMIT + 1, NaN]) {
      await assert.rejects(
        JobPtys.mount("/nonexistent", limit),
        (error) =>
          error instanceof RangeError &&
          error.message.includes(`limit ${limit} is not an integer`),
      );
    }
    await assert.rejects(
      JobPtys.mount("/nonexistent-kiln-pty", 1),
      /cannot mount a devpts on \/nonexistent-kiln-pty: ENOENT/,
    );
  },
});

Deno.test({
  name: "ptys: the devpts of a dead kiln process is unmounted, no other",
  ignore,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-pty-sweep-" });
    const mine = join(root, "kiln-pty-mine");
    await Deno.mkdir(mine);
    const ptys = await JobPtys.mount(mine, 2);
    const dead = join(root, "kiln-pty-dead");
    const elsewhere = join(root, "not-a-job");
    try {
      // Our own pid is never swept; nor a pid said to be alive.
      assert.equal(await unmountStaleJobPtys(() => Promise.resolve(true)), 0);
      assert.ok((await mounts()).includes(mine));
      // The mounts of a "dead" kiln process: made by a child we wait for.
      const deadPid = 2 ** 22 + 1;
      for (const dir of [dead, elsewhere]) {
        await Deno.mkdir(dir);
        const child = await new Deno.Command("/bin/mount", {
          args: ["-t", "devpts", "-o", "newinstance", `kiln-${deadPid}`, dir],
        }).output();
        assert.ok(child.success, new TextDecoder().decode(child.stderr));
      }
      const swept = await unmountStaleJobPtys((pid) =>
        Promise.resolve(pid !== deadPid)
      );
      assert.equal(swept, 1);
      const after = await mounts();
      assert.ok(!after.includes(dead), "the dead process's devpts stays");
      assert.ok(after.includes(mine), "a live devpts was unmounted");
      // Only a kiln-pty- directory is a job's: the other one stays.
      assert.ok(after.includes(elsewhere), "a devpts not kiln's was unmounted");
    } finally {
      await ptys.unmount();
      await new Deno.Command("/bin/umount", { args: ["-l", elsewhere] })
        .output();
      await Deno.remove(root, { recursive: true });
    }
  },
});
