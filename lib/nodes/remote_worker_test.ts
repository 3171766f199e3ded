import assert from "node:assert/strict";
import { countTimers } from "../_timer_testing.ts";
import { blankResult } from "../job.ts";
import { MAX_TIMER_MS } from "../_timer.ts";
import { socketPair } from "../protocol/_testing.ts";
import { Connection } from "../protocol/connection.ts";
import type { MessageOf } from "../protocol/messages.ts";
import type { WorkerJobEvents } from "../scheduler/worker.ts";
import { RemoteWorker } from "./remote_worker.ts";

const REGISTRATION: MessageOf<"register"> = {
  type: "register",
  id: "node-1",
  name: "w1",
  languages: [{ name: "bash", version: "5", aliases: [], extensions: [] }],
  slots: 1,
  maxCpu: 100,
  maxRam: 100,
};

Deno.test("RemoteWorker keeps a node and its job under a node timeout of 2^31 - 1 ms or more", async (t) => {
  // Past 2^31 - 1 ms a timer fires at once: the node was dropped as silent,
  // or its job marked overdue (the deadline adds the job's times to it).
  for (const nodeTimeoutMs of [MAX_TIMER_MS, 2 ** 32]) {
    await t.step(`${nodeTimeoutMs} ms`, async () => {
      const { server, client } = await socketPair();
      await using master = new Connection(server);
      await using node = new Connection(client);
      let lost: string | undefined;
      const worker = new RemoteWorker({
        connection: master,
        registration: REGISTRATION,
        nodeTimeoutMs,
        onLost: (_, reason) => lost = reason,
        onHeartbeat: () => {},
      });
      const serving = worker.serve();
      const ended = Promise.withResolvers<string>();
      const events: WorkerJobEvents = {
        output: () => {},
        result: (result) => ended.resolve(`result ${result.verdict}`),
        failed: (reason) => ended.resolve(`failed: ${reason}`),
      };
      worker.start({
        id: "job-1",
        request: { language: "bash", files: [{ name: "a.sh", content: "" }] },
        language: "bash",
      }, events);
      const run = await node.receive({ timeoutMs: 5000 });
      assert.equal(run.type, "run");
      // Timers fire in the order of their deadlines: a deadline that
      // overflowed (1 ms) would have fired before this one.
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(lost, undefined, "the node was dropped");
      await node.send({
        type: "result",
        jobId: "job-1",
        result: blankResult("job-1", { verdict: "ok" }),
      });
      assert.equal(await ended.promise, "result ok");
      await node.close();
      await serving;
    });
  }
});

Deno.test("RemoteWorker sets no timer per message of a busy node, keeps it while it talks, and loses it once silent", async () => {
  const { server, client } = await socketPair();
  await using master = new Connection(server);
  await using node = new Connection(client);
  const lost = Promise.withResolvers<string>();
  let heartbeats = 0;
  const worker = new RemoteWorker({
    connection: master,
    registration: REGISTRATION,
    nodeTimeoutMs: 300,
    silenceGraceMs: 50,
    onLost: (_, reason) => lost.resolve(reason),
    onHeartbeat: () => heartbeats++,
  });
  // Placement reads a node's languages on every dispatch: no copy each time.
  assert.equal(worker.load().languages, worker.load().languages);
  const serving = worker.serve();
  const heartbeat = {
    type: "heartbeat",
    cpuPercent: 1,
    ramPercent: 1,
    ramUsedMb: 1,
    running: 0,
  } as const;
  // A thousand messages, read with the real timers counted.
  const timers = await countTimers(async (realSetTimeout) => {
    await Promise.all(
      Array.from({ length: 1000 }, () => node.send(heartbeat)),
    );
    while (heartbeats < 1000) {
      await new Promise((resolve) => realSetTimeout(resolve, 5));
    }
  });
  assert.ok(timers < 10, `${timers} timers for 1000 messages`);
  // Talking past the deadline keeps it; silence loses it.
  for (let i = 0; i < 8; i++) {
    await node.send(heartbeat);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(await Promise.race([lost.promise, "kept"]), "kept");
  assert.equal(await lost.promise, "silent for 300 ms");
  await node.close();
  await serving;
});
