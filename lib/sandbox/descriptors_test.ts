import assert from "node:assert/strict";
import { closeDescriptorsPrefix } from "./descriptors.ts";
import { CGROUP_ENTER_FAILED } from "./cgroup.ts";

async function run(argv: string[]) {
  const [command, ...args] = argv;
  const { code, stdout, stderr } = await new Deno.Command(command!, {
    args,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

Deno.test("closeDescriptorsPrefix() writes the step's own pid into each cgroup file, then execs the command", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const files = [`${dir}/a.procs`, `${dir}/b.procs`];
    for (const file of files) await Deno.writeTextFile(file, "");
    const { code, stdout, stderr } = await run([
      ...closeDescriptorsPrefix(undefined, { enterCgroups: files }),
      "/bin/sh",
      "-c",
      'echo "$$"',
    ]);
    assert.equal(code, 0, stderr);
    // One process all along: the pid written is the command's own.
    for (const file of files) {
      assert.equal(await Deno.readTextFile(file), stdout);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("closeDescriptorsPrefix() names a cgroup it cannot enter on the first line of stderr and never runs the command", async () => {
  const { code, stdout, stderr } = await run([
    ...closeDescriptorsPrefix(undefined, {
      enterCgroups: ["/nonexistent/kiln/cgroup.procs"],
      open: { fd: 3, path: "/dev/null" },
    }),
    "/bin/echo",
    "ran",
  ]);
  assert.equal(code, CGROUP_ENTER_FAILED);
  assert.equal(stdout, "");
  assert.equal(
    stderr,
    "kiln: cannot enter cgroup /nonexistent/kiln/cgroup.procs\n",
  );
});

Deno.test("closeDescriptorsPrefix() opens its file on the given descriptor after entering the cgroup", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/procs`, "");
    await Deno.writeTextFile(`${dir}/filter`, "filter\n");
    const { code, stdout, stderr } = await run([
      ...closeDescriptorsPrefix(undefined, {
        enterCgroups: [`${dir}/procs`],
        open: { fd: 3, path: `${dir}/filter` },
      }),
      "/bin/sh",
      "-c",
      "cat <&3",
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, "filter\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
