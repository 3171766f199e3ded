/**
 * Interactive programs over real TCP on 127.0.0.1: a line typed while the
 * program runs reaches it, on the master's own slots and on a secondary
 * (through the master), and stdin ends when the client says so.
 */
import assert from "node:assert/strict";
import {
  type JobEvent,
  type JobRequest,
  MasterNode,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { InputChannel } from "../lib/sandbox/input_channel.ts";

const TOKEN = "interactive-test-token";

/** Asks a question, waits for the answer typed while it runs, then for EOF. */
const QUIZ: JobRequest = {
  language: "bash",
  files: [{
    name: "main.sh",
    content: [
      'echo "name?"',
      "read -r name",
      'echo "hello $name"',
      "cat > /dev/null",
      'echo "bye"',
    ].join("\n"),
  }],
};

async function quiz(master: MasterNode) {
  const input = new InputChannel();
  const output: string[] = [];
  const events: JobEvent["type"][] = [];
  const result = submitProgram(QUIZ, {
    master: master.addr,
    token: TOKEN,
    input,
    onEvent: (event) => {
      events.push(event.type);
      if (event.type !== "output") return;
      output.push(event.data);
      const seen = output.join("");
      // Answer only once the program has asked: it is running and waiting.
      if (seen === "name?\n") input.push("Ada\n");
      if (seen === "name?\nhello Ada\n") input.end();
    },
  });
  return { result: await result, events };
}

Deno.test("interactive: a line typed while the program runs reaches it, on the master's own slots", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const { result } = await quiz(master);
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "name?\nhello Ada\nbye\n");
  assert.equal(result.node, "master");
});

Deno.test("interactive: a line typed while the program runs reaches it on a secondary", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  await using _secondary = new SecondaryNode({
    master: master.addr,
    name: "east",
    token: TOKEN,
    slots: 1,
  });
  await joined.promise;
  const { result } = await quiz(master);
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "name?\nhello Ada\nbye\n");
  assert.equal(result.node, "east");
});

Deno.test("interactive: without EOF the program waits until its wall time limit", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const result = await submitProgram(
    { ...QUIZ, interactive: true, limits: { wallTimeMs: 500 } },
    { master: master.addr, token: TOKEN },
  );
  assert.equal(result.verdict, "time_limit");
  assert.equal(result.stdout, "name?\n");
});
