import assert from "node:assert/strict";
import { assertCompletes } from "../_completes_testing.ts";
import { BashRunner } from "./bash_runner.ts";
import { runRunnerConformance } from "./conformance.ts";

await runRunnerConformance(() => new BashRunner(), {
  hello: 'echo "Hello, world!"\n',
  echo: "cat\n",
  args: 'for arg in "$@"; do\n  printf "%s\\n" "$arg"\ndone\n',
  exit3: 'echo "exiting with 3" >&2\nexit 3\n',
  crash: 'set -u\necho "$undefined_variable"\necho "not reached"\n',
  multiFile: [
    { name: "main.sh", content: "source ./greet.sh\ngreet\n" },
    { name: "greet.sh", content: 'greet() {\n  echo "Hello, world!"\n}\n' },
  ],
});

Deno.test("BashRunner.outOfMemory finds bash's messages, in time linear in stderr", async () => {
  const { outOfMemory } = new BashRunner();
  for (
    const line of [
      "bash: xmalloc: cannot allocate 134217729 bytes",
      "main.sh: line 2: xmalloc: cannot allocate 134217729 bytes",
      "main.sh: xmalloc: ../bash/subst.c:4896: cannot allocate 9223372036854775808 bytes (0 bytes allocated)",
    ]
  ) {
    const message = line.slice(line.indexOf("xmalloc: "));
    assert.equal(outOfMemory.exec(`output\n${line}\nmore`)?.[0], message);
  }
  assert.equal(outOfMemory.exec("xmalloc: fine\ncannot allocate"), null);
  // stderr of up to the output limit (1 MiB by default) meets this pattern on
  // the node's event loop. The old /xmalloc: [^\n]*cannot allocate/ took
  // about 157 s on 1 MiB of "xmalloc: " (1.1 s at 64 KiB), far past the 60 s
  // deadline of assertCompletes; the new one takes milliseconds.
  const module = JSON.stringify(import.meta.resolve("./bash_runner.ts"));
  await assertCompletes(`
    import { BashRunner } from ${module};
    const { outOfMemory } = new BashRunner();
    const MiB = 1024 * 1024;
    for (const unit of ["xmalloc: ", "xmalloc: a:1", "xmalloc: a:1: "]) {
      const stderr = unit.repeat(Math.ceil(MiB / unit.length));
      if (outOfMemory.exec(stderr) !== null) throw new Error("a false match");
    }
  `);
});
