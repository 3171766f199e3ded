import assert from "node:assert/strict";
import { countTimers, trackIntervals } from "../_timer_testing.ts";
import { blankResult, DEFAULT_LIMITS } from "../job.ts";
import { MAX_TIMER_MS } from "../_timer.ts";
import { socketPair } from "../protocol/_testing.ts";
import { Connection } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
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

Deno.test("RemoteWorker gives up the jobs its node never answers, past their deadline and the grace, with one timer for all of them", async () => {
  const { server, client } = await socketPair();
  await using master = new Connection(server);
  await using node = new Connection(client);
  const worker = new RemoteWorker({
    connection: master,
    registration: { ...REGISTRATION, slots: 100 },
    nodeTimeoutMs: 200,
    silenceGraceMs: 20,
    onLost: () => {},
    onHeartbeat: () => {},
  });
  const serving = worker.serve();
  const request = {
    language: "bash",
    files: [{ name: "a.sh", content: "" }],
    limits: { wallTimeMs: 10, compileWallTimeMs: 10 },
  };
  const outcomes = new Map<string, string>();
  const allEnded = Promise.withResolvers<void>();
  const events = (jobId: string): WorkerJobEvents => ({
    output: () => {},
    result: (result) => end(jobId, `result ${result.verdict}`),
    failed: (reason, kind) => end(jobId, `${kind}: ${reason}`),
  });
  const end = (jobId: string, outcome: string) => {
    assert.equal(outcomes.get(jobId), undefined, `${jobId} ended twice`);
    outcomes.set(jobId, outcome);
    if (outcomes.size === 51) allEnded.resolve();
  };
  const timers = await countTimers(() => {
    worker.start(
      { id: "answered", request, language: "bash" },
      events("answered"),
    );
    for (let i = 0; i < 50; i++) {
      worker.start(
        { id: `mute-${i}`, request, language: "bash" },
        events(`mute-${i}`),
      );
    }
    return Promise.resolve();
  });
  assert.ok(timers <= 2, `${timers} timers for 51 jobs`);
  await node.send({
    type: "result",
    jobId: "answered",
    result: blankResult("answered", { verdict: "ok" }),
  });
  // The node keeps talking: only its jobs are late, not the node.
  const heartbeats = setInterval(() =>
    node.send({
      type: "heartbeat",
      cpuPercent: 1,
      ramPercent: 1,
      ramUsedMb: 1,
      running: 50,
    }).catch(() => {}), 50);
  try {
    await allEnded.promise;
  } finally {
    clearInterval(heartbeats);
  }
  assert.equal(outcomes.get("answered"), "result ok");
  for (let i = 0; i < 50; i++) {
    assert.equal(
      outcomes.get(`mute-${i}`),
      'lost: node "w1" did not finish it within 220 ms',
    );
  }
  // The node heard each given-up job cancelled, and is skipped for a while.
  const cancelled = new Set<string>();
  while (cancelled.size < 50) {
    const message = await node.receive({ timeoutMs: 5000 });
    if (message.type === "cancel") cancelled.add(message.jobId);
  }
  assert.ok(worker.load().failingUntil > Date.now());
  assert.equal(worker.load().assigned, 0);
  await node.close();
  await serving;
});

Deno.test("RemoteWorker hands out the same load until the node's load changes", async () => {
  const { server, client } = await socketPair();
  await using master = new Connection(server);
  await using node = new Connection(client);
  const worker = new RemoteWorker({
    connection: master,
    registration: { ...REGISTRATION, slots: 2 },
    nodeTimeoutMs: 60_000,
    onLost: () => {},
    onHeartbeat: () => {},
  });
  const serving = worker.serve();
  const first = worker.load();
  assert.equal(worker.load(), first);
  const noEvents: WorkerJobEvents = {
    output: () => {},
    result: () => {},
    failed: () => {},
  };
  worker.start({
    id: "j1",
    request: { language: "bash", files: [{ name: "a.sh", content: "" }] },
    language: "bash",
  }, noEvents);
  assert.equal(worker.load().assigned, 1);
  assert.equal(first.assigned, 0, "a load handed out never changes");
  const until = Date.now() + 60_000;
  worker.markFailing(until);
  assert.equal(worker.load().failingUntil, until);
  await node.close();
  await serving;
  assert.equal(worker.load().draining, true);
});

Deno.test("RemoteWorker cuts a job's relayed output at the node's limit, or at the job's own when it asks for less", async () => {
  const { server, client } = await socketPair();
  await using master = new Connection(server);
  await using node = new Connection(client);
  const worker = new RemoteWorker({
    connection: master,
    registration: {
      ...REGISTRATION,
      slots: 2,
      limits: { ...DEFAULT_LIMITS, outputBytes: 4 },
    },
    nodeTimeoutMs: 60_000,
    onLost: () => {},
    onHeartbeat: () => {},
  });
  const serving = worker.serve();
  const relayed = new Map<string, string>();
  const ended = new Map<string, boolean>();
  const bothEnded = Promise.withResolvers<void>();
  const events = (jobId: string): WorkerJobEvents => ({
    output: (_, data) => relayed.set(jobId, (relayed.get(jobId) ?? "") + data),
    result: (result) => {
      ended.set(jobId, result.truncated);
      if (ended.size === 2) bothEnded.resolve();
    },
    failed: () => {},
  });
  const files = [{ name: "a.sh", content: "" }];
  worker.start(
    { id: "plain", request: { language: "bash", files }, language: "bash" },
    events("plain"),
  );
  worker.start({
    id: "asks-less",
    request: { language: "bash", files, limits: { outputBytes: 2 } },
    language: "bash",
  }, events("asks-less"));
  for (const jobId of ["plain", "asks-less"]) {
    await node.send({
      type: "output",
      jobId,
      stream: "stdout",
      data: "abcdef",
    });
    await node.send({
      type: "result",
      jobId,
      result: blankResult(jobId, { verdict: "ok" }),
    });
  }
  await bothEnded.promise;
  assert.deepEqual([...relayed], [["plain", "abcd"], ["asks-less", "ab"]]);
  assert.deepEqual([...ended], [["plain", true], ["asks-less", true]]);
  await node.close();
  await serving;
});

Deno.test("RemoteWorker pings its node every pingIntervalMs until the node is lost, and never without it", async () => {
  const { server, client } = await socketPair();
  await using master = new Connection(server);
  await using node = new Connection(client);
  const lost = Promise.withResolvers<string>();
  using intervals = trackIntervals();
  const worker = new RemoteWorker({
    connection: master,
    registration: REGISTRATION,
    nodeTimeoutMs: 60_000,
    pingIntervalMs: 10,
    onLost: (_, reason) => lost.resolve(reason),
    onHeartbeat: () => {},
  });
  const serving = worker.serve();
  assert.equal(intervals.live, 1, "one interval for the link");
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await node.receive(), { type: "ping" });
  }
  // Pings share the link with jobs: a run goes out among them.
  worker.start({
    id: "job-1",
    request: { language: "bash", files: [{ name: "a.sh", content: "" }] },
    language: "bash",
  }, { output: () => {}, result: () => {}, failed: () => {} });
  let message = await node.receive();
  while (message.type === "ping") message = await node.receive();
  assert.equal(message.type, "run");
  worker.lose("the test is over");
  assert.equal(await lost.promise, "the test is over");
  await serving;
  assert.equal(intervals.live, 0, "the pings outlived the node");

  const quiet = await socketPair();
  await using quietMaster = new Connection(quiet.server);
  await using quietNode = new Connection(quiet.client);
  const unpinged = new RemoteWorker({
    connection: quietMaster,
    registration: REGISTRATION,
    nodeTimeoutMs: 60_000,
    onLost: () => {},
    onHeartbeat: () => {},
  });
  const quietServing = unpinged.serve();
  assert.equal(intervals.live, 0);
  await assert.rejects(
    quietNode.receive({ timeoutMs: 200 }),
    (error: unknown) =>
      error instanceof ProtocolError && error.code === "timeout",
  );
  await quietNode.close();
  await quietServing;
});
