/**
 * A whole cluster in one script, through the library API:
 *
 *   deno run -A examples/cluster.ts
 *
 * A coordinator-only master and two secondaries start on loopback; twelve
 * programs go in at once from three clients; the master spreads them over
 * the secondaries by load, queues the rest fairly, and every job reports
 * where it ran. Then everything shuts down.
 */
// deno-lint-ignore-file no-console
import { MasterNode, SecondaryNode, submitProgram } from "../mod.ts";

const token = crypto.randomUUID();

// The master only coordinates (slots: 0): every job runs on a secondary.
await using master = new MasterNode({
  port: 0,
  slots: 0,
  token,
  resourceLogIntervalMs: 0,
});
const joined = new Promise<void>((resolve) => {
  let count = 0;
  master.addEventListener("nodejoin", (event) => {
    console.log(
      `node ${event.detail.name} joined from ${event.detail.address}`,
    );
    if (++count === 2) resolve();
  });
});

// Two secondaries dial the master, two slots each, and report their load every second.
await using _east = new SecondaryNode({
  master: master.addr,
  name: "east",
  slots: 2,
  token,
});
await using _west = new SecondaryNode({
  master: master.addr,
  name: "west",
  slots: 2,
  token,
});
await joined;

// Three clients submit four programs each, all at once.
const submissions = ["alice", "bob", "carol"].flatMap((client) =>
  [1, 2, 3, 4].map((n) =>
    submitProgram({
      language: "python",
      files: [{
        name: "work.py",
        content: `import time\ntime.sleep(0.2)\nprint("${client} #${n}")`,
      }],
    }, {
      master: master.addr,
      token,
      name: client,
      onEvent: (event) => {
        if (event.type === "queued") {
          console.log(`${client} #${n}: waiting at position ${event.position}`);
        }
      },
    })
  )
);

for (const result of await Promise.all(submissions)) {
  console.log(
    `${
      result.stdout.trim().padEnd(9)
    } ran on ${result.node} after ${result.queuedMs} ms in the queue: ${result.verdict}`,
  );
}
const { nodes } = master.status();
console.log(
  nodes.map((node) =>
    `${node.name}: ${node.languages.length} languages, ${node.slots} slots`
  ).join("\n"),
);
