/**
 * The links between a master and its secondaries under stress: a master
 * whose event loop stalls past the node timeout, and secondaries that leave
 * gracefully.
 */
import assert from "node:assert/strict";
import { type JobEvent, MasterNode, submitProgram } from "../mod.ts";

/** A secondary on its own thread (tests/_secondary_worker.ts). */
async function threadSecondary(
  master: string,
  name: string,
  slots: number,
) {
  const counters = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    new URL("./_secondary_worker.ts", import.meta.url),
    { type: "module" },
  );
  const registered = Promise.withResolvers<void>();
  const stopped = Promise.withResolvers<void>();
  worker.onmessage = (event) => {
    if (event.data.type === "registered") registered.resolve();
    if (event.data.type === "stopped") stopped.resolve();
  };
  worker.postMessage({ type: "start", master, name, slots, counters });
  await registered.promise;
  return {
    /** Jobs this secondary has completed so far. */
    get completed(): number {
      return Atomics.load(counters, 0);
    },
    /**
     * Blocks this thread (and so the master's event loop, when the master
     * runs here) until the secondary has completed `count` jobs and at
     * least `ms` have passed.
     */
    blockUntil(count: number, ms: number): void {
      const until = performance.now() + ms;
      while (true) {
        const seen = Atomics.load(counters, 0);
        const left = until - performance.now();
        if (seen >= count && left <= 0) return;
        Atomics.wait(counters, 0, seen, seen >= count ? left : 1000);
      }
    },
    async [Symbol.asyncDispose]() {
      worker.postMessage({ type: "stop" });
      await stopped.promise;
      worker.terminate();
    },
  };
}

Deno.test("links: a master stalled past the node timeout reads what its nodes sent before judging them", async () => {
  const nodeTimeoutMs = 600;
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    heartbeatIntervalMs: 100,
    nodeTimeoutMs,
    resourceLogIntervalMs: 0,
  });
  const left: string[] = [];
  master.addEventListener("nodeleave", (event) => {
    left.push(`${event.detail.name}: ${event.detail.reason}`);
  });
  await using secondary = await threadSecondary(
    `127.0.0.1:${master.addr.port}`,
    "steady",
    2,
  );
  const started = [
    Promise.withResolvers<void>(),
    Promise.withResolvers<void>(),
  ];
  const events: JobEvent[][] = [[], []];
  const jobs = [0, 1].map((i) =>
    submitProgram({
      language: "bash",
      files: [{ name: "main.sh", content: `sleep 0.3; echo done ${i}` }],
    }, {
      master: master.addr,
      onEvent: (event) => {
        events[i]!.push(event);
        if (event.type === "started") started[i]!.resolve();
      },
    })
  );
  await Promise.all(started.map((s) => s.promise));
  // The master's event loop stops, as under SIGSTOP or a long synchronous
  // task, until both jobs ended on the secondary and well past the node
  // timeout: results and heartbeats wait unread in the master's sockets.
  secondary.blockUntil(2, 3 * nodeTimeoutMs);

  const results = await Promise.all(jobs);
  for (const [i, result] of results.entries()) {
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, `done ${i}\n`);
    assert.equal(result.node, "steady");
    assert.deepEqual(
      events[i]!.filter((e) => e.type === "restarted"),
      [],
      "the job ran once",
    );
  }
  assert.deepEqual(left, [], "no node was declared lost");
  assert.deepEqual(master.status().nodes.map((n) => n.name), ["steady"]);
});
