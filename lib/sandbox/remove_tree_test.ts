import assert from "node:assert/strict";
import { join } from "node:path";
import { removeTree } from "./remove_tree.ts";
import { SANDBOX_UID } from "./bubblewrap.ts";

const asJob = {
  asUser: { uid: SANDBOX_UID, gid: SANDBOX_UID },
};

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("removeTree() removes a symlink, never what it points to", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-remove-test-" });
  try {
    await Deno.mkdir(join(dir, "target"));
    await Deno.writeTextFile(join(dir, "target", "keep"), "keep");
    await Deno.mkdir(join(dir, "tree"));
    await Deno.symlink(join(dir, "target"), join(dir, "tree", "out"));
    await Deno.symlink(join(dir, "target"), join(dir, "link"));
    assert.deepEqual(await removeTree(join(dir, "link")), { ok: true });
    assert.deepEqual(await removeTree(join(dir, "tree")), { ok: true });
    assert.deepEqual(await names(dir), ["target"]);
    assert.deepEqual(await names(join(dir, "target")), ["keep"]);
    assert.deepEqual(await removeTree(join(dir, "missing")), { ok: true });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "removeTree() as the job's uid empties what the job chmod-ed, and leaves what root wrote to rm",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-remove-test-" });
    try {
      // What a job leaves: its own 000 directories, and odd names.
      const workdir = join(dir, "work");
      await Deno.mkdir(join(workdir, "a", "b"), { recursive: true });
      for (const name of ["-rf", "@x", "new\nline"]) {
        await Deno.writeTextFile(join(workdir, "a", "b", name), "");
      }
      for (const path of ["a", "a/b", "a/b/-rf", "a/b/@x", "a/b/new\nline"]) {
        await Deno.chown(join(workdir, path), SANDBOX_UID, SANDBOX_UID);
      }
      await Deno.chown(workdir, SANDBOX_UID, SANDBOX_UID);
      await Deno.chmod(join(workdir, "a", "b"), 0o000);
      await Deno.chmod(join(workdir, "a"), 0o000);
      // And what the job's uid cannot remove: root's directory with a file.
      await Deno.mkdir(join(workdir, "root"));
      await Deno.writeTextFile(join(workdir, "root", "file"), "");
      assert.deepEqual(await removeTree(workdir, asJob), { ok: true });
      assert.deepEqual(await names(dir), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("removeTree() says why it failed, and never throws", async () => {
  const outcome = await removeTree("/proc/self/fd", {});
  assert.equal(outcome.ok, false);
  assert.match(
    (outcome as { reason: string }).reason,
    /^\/bin\/rm exited with code 1: /,
  );
});
