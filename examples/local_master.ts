/**
 * A master and a client in one script, through the library API:
 *
 *   deno run -A examples/local_master.ts
 *
 * It starts a master with two slots on a free port, submits five programs at
 * once (so three of them wait in the queue), prints every event as it
 * happens, then the results, and shuts the master down.
 */
// deno-lint-ignore-file no-console
import { MasterNode, submitProgram } from "../mod.ts";

const token = crypto.randomUUID();
await using master = new MasterNode({
  port: 0,
  slots: 2,
  token,
  resourceLogIntervalMs: 0,
});
await master.ready;
console.log(`master listening on ${master.addr.hostname}:${master.addr.port}`);

const programs = [1, 2, 3, 4, 5].map((n) => ({
  language: "bash",
  files: [{
    name: `count${n}.sh`,
    content: `for i in 1 2 3; do echo "job ${n}: $i"; sleep 0.1; done`,
  }],
}));

const results = await Promise.all(
  programs.map((program, i) =>
    submitProgram(program, {
      master: master.addr,
      token,
      onEvent: (event) => {
        if (event.type === "queued") {
          console.log(`job ${i + 1} waits at position ${event.position}`);
        }
        if (event.type === "started") {
          console.log(`job ${i + 1} started on ${event.node}`);
        }
        if (event.type === "output") {
          console.log(`job ${i + 1} says: ${event.data.trimEnd()}`);
        }
      },
    })
  ),
);

for (const [i, result] of results.entries()) {
  console.log(
    `job ${
      i + 1
    }: ${result.verdict} in ${result.timeMs} ms after ${result.queuedMs} ms in the queue`,
  );
}
