import assert from "node:assert/strict";
import { join } from "node:path";
import {
  detectDiskLimit,
  JobDisk,
  unmountStaleJobDisks,
} from "./disk_limit.ts";

const detection = await detectDiskLimit();
const ignore = !detection.available;
if (ignore) {
  // deno-lint-ignore no-console
  console.log(`skipping the job disk tests: ${detection.reason}`);
}

async function mounts(): Promise<string> {
  return await Deno.readTextFile("/proc/self/mountinfo");
}

Deno.test({
  name: "disk: writing past the size gets ENOSPC, and statfs sees it full",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-job-test-" });
    const disk = await JobDisk.mount(dir, { sizeBytes: 4 << 20, files: 100 });
    try {
      assert.equal(disk.fill().full, false);
      assert.equal((await Deno.stat(disk.tmpDir)).mode! & 0o7777, 0o1777);
      assert.equal((await Deno.stat(disk.workdir)).mode! & 0o777, 0o700);
      await assert.rejects(
        Deno.writeFile(join(disk.workdir, "big"), new Uint8Array(8 << 20)),
        /No space left/,
      );
      const fill = disk.fill();
      assert.equal(fill.full, true);
      assert.equal(fill.reason, "no space left");
      assert.ok(fill.usedBytes! >= 4 << 20, JSON.stringify(fill));
      // /tmp shares the one limit.
      await assert.rejects(
        Deno.writeFile(join(disk.tmpDir, "more"), new Uint8Array(4096)),
        /No space left/,
      );
    } finally {
      await disk.unmount();
      await Deno.remove(dir);
    }
    assert.ok(!(await mounts()).includes(dir), "the tmpfs is still mounted");
  },
});

Deno.test({
  name:
    "disk: a disk that holds little and one that holds much are both unmounted",
  ignore,
  fn: async () => {
    // Up to a few files, on the event loop's thread; more, off it.
    for (const files of [2, 600]) {
      const dir = await Deno.makeTempDir({ prefix: "kiln-job-test-" });
      const disk = await JobDisk.mount(dir, { sizeBytes: 8 << 20, files });
      try {
        for (let i = 0; i < files - 2; i++) {
          await Deno.writeFile(join(disk.workdir, `f${i}`), new Uint8Array(64));
        }
        assert.ok(disk.fill().usedFiles! >= files, JSON.stringify(disk.fill()));
      } finally {
        await disk.unmount();
      }
      assert.equal(disk.fill().reason, "the job disk is not mounted");
      assert.ok(!(await mounts()).includes(dir), "the tmpfs is still mounted");
      await Deno.remove(dir);
    }
  },
});

Deno.test({
  name: "disk: making more files than the limit gets ENOSPC",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-job-test-" });
    const disk = await JobDisk.mount(dir, { sizeBytes: 4 << 20, files: 50 });
    let made = 0;
    try {
      await assert.rejects(async () => {
        for (; made < 1000; made++) {
          await Deno.writeFile(join(disk.tmpDir, `f${made}`), new Uint8Array());
        }
      }, /No space left/);
      assert.ok(made >= 50 && made < 60, `${made} files made`);
      assert.equal(disk.fill().reason, "no file left");
    } finally {
      await disk.unmount();
      await disk.unmount(); // a second call does nothing
      await Deno.remove(dir);
    }
  },
});

Deno.test({
  name: "disk: unmounting frees a disk a process still holds a file of",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-job-test-" });
    const disk = await JobDisk.mount(dir, { sizeBytes: 1 << 20, files: 10 });
    const file = await Deno.open(join(disk.workdir, "held"), {
      write: true,
      create: true,
    });
    try {
      await disk.unmount();
      assert.ok(!(await mounts()).includes(dir));
    } finally {
      file.close();
      await Deno.remove(dir);
    }
  },
});

Deno.test({
  name: "disk: limits are positive integers",
  ignore,
  fn: async () => {
    for (
      const limits of [{ sizeBytes: 0, files: 1 }, { sizeBytes: 1, files: 1.5 }]
    ) {
      await assert.rejects(JobDisk.mount("/nonexistent", limits), RangeError);
    }
  },
});

Deno.test({
  name: "disk: the disks of a dead kiln process are unmounted, no other",
  ignore,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-disk-sweep-" });
    const mine = join(root, "kiln-job-mine");
    await Deno.mkdir(mine);
    const disk = await JobDisk.mount(mine, { sizeBytes: 1 << 20, files: 10 });
    try {
      // Our own pid is never swept; nor a pid said to be alive.
      assert.equal(await unmountStaleJobDisks(() => Promise.resolve(true)), 0);
      assert.ok((await mounts()).includes(mine));
      // A mount of a "dead" kiln process: one made by a child we wait for.
      const dead = join(root, "kiln-job-dead");
      await Deno.mkdir(dead);
      const child = await new Deno.Command("/bin/mount", {
        args: ["-t", "tmpfs", "-o", "size=1m", `kiln-${2 ** 22 + 1}`, dead],
      }).output();
      assert.ok(child.success, new TextDecoder().decode(child.stderr));
      const swept = await unmountStaleJobDisks((pid) =>
        Promise.resolve(pid !== 2 ** 22 + 1)
      );
      assert.equal(swept, 1);
      const after = await mounts();
      assert.ok(!after.includes(dead), "the dead process's disk stays");
      assert.ok(after.includes(mine), "a live disk was unmounted");
    } finally {
      await disk.unmount();
      await Deno.remove(root, { recursive: true });
    }
  },
});
