import assert from "node:assert/strict";
import { defaultWorkRoot, sweepStaleWorkRoots } from "./work_root.ts";

Deno.test("sweepStaleWorkRoots() removes the roots of dead kiln processes only", async () => {
  const parent = await Deno.makeTempDir({ prefix: "kiln-sweep-test-" });
  try {
    // A process that surely exited, one that lives (us), and unrelated names.
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    for (
      const name of [
        `kiln-${gone.pid}`,
        `kiln-${Deno.pid}`,
        "kiln-abc",
        "other",
      ]
    ) {
      await Deno.mkdir(`${parent}/${name}/kiln-job-1`, { recursive: true });
    }
    assert.equal(await sweepStaleWorkRoots(parent), 1);
    const left = (await Array.fromAsync(Deno.readDir(parent))).map((e) =>
      e.name
    ).sort();
    assert.deepEqual(left, [`kiln-${Deno.pid}`, "kiln-abc", "other"].sort());
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("defaultWorkRoot() is this process's own directory", async () => {
  const root = await defaultWorkRoot();
  assert.match(root, new RegExp(`/kiln-${Deno.pid}$`));
  assert.equal((await Deno.stat(root)).isDirectory, true);
});
