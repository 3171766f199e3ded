import assert from "node:assert/strict";
import { InputChannel } from "./input_channel.ts";
import { launch } from "./launcher.ts";

const OPTIONS = {
  cwd: "/",
  env: { PATH: "/usr/bin:/bin" },
  wallTimeMs: 30_000,
  outputBytes: 1 << 20,
};

Deno.test("InputChannel hands chunks to one reader in order, then ends", async () => {
  const input = new InputChannel();
  const reader = input[Symbol.asyncIterator]();
  const pending = reader.next();
  input.push("a");
  assert.deepEqual(await pending, { value: "a", done: false });
  input.push("b");
  input.end();
  input.push("ignored after end");
  assert.deepEqual(await reader.next(), { value: "b", done: false });
  assert.equal((await reader.next()).done, true);
});

Deno.test("InputChannel wakes a pending read when the reader stops", async () => {
  const input = new InputChannel();
  const reader = input[Symbol.asyncIterator]();
  const pending = reader.next();
  await reader.return!();
  assert.equal((await pending).done, true);
  assert.equal(input.ended, true);
});

Deno.test("launch() feeds an interactive program line by line as it answers", async () => {
  const input = new InputChannel();
  const answers: string[] = [];
  const answered = (count: number) =>
    new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (answers.join("").split("\n").length > count) {
          clearInterval(check);
          resolve();
        }
      }, 5);
    });
  const running = launch(
    {
      command: "/bin/bash",
      args: ["-c", 'while read -r line; do echo "got $line"; done; echo bye'],
    },
    {
      ...OPTIONS,
      stdin: "first\n",
      input,
      onOutput: (_stream, data) => answers.push(data),
    },
  );
  await answered(1);
  assert.equal(answers.join(""), "got first\n");
  // Typed after the program answered the first line: it is still running.
  input.push("second\n");
  await answered(2);
  assert.equal(answers.join(""), "got first\ngot second\n");
  input.end();
  const outcome = await running;
  assert.equal(outcome.exitCode, 0);
  assert.equal(outcome.stdout, "got first\ngot second\nbye\n");
});

Deno.test("launch() stops waiting for input when the program exits first", async () => {
  const input = new InputChannel();
  const outcome = await launch(
    { command: "/bin/bash", args: ["-c", "read -r line; echo $line"] },
    { ...OPTIONS, input, stdin: "only\n" },
  );
  assert.equal(outcome.stdout, "only\n");
  assert.equal(input.ended, true, "the reader let go of the channel");
});
