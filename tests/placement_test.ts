/**
 * Placement and failure handling of the master, through its public API with
 * in-process nodes on 127.0.0.1: the master's own slots first, thresholds,
 * refusals, and a node that drops its jobs. Misbehaving secondaries are
 * played by a scripted peer that speaks the real protocol.
 */
import assert from "node:assert/strict";
import {
  type JobRequest,
  MasterNode,
  type MasterNodeOptions,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { blankResult, DEFAULT_LIMITS, type JobLimits } from "../lib/job.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import type { Message } from "../lib/protocol/messages.ts";

const TOKEN = "placement-token-0123456789";
const IDLE = () =>
  Promise.resolve({ cpuPercent: 10, ramPercent: 10, ramUsedMb: 100 });

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    sampleResources: IDLE,
    ...options,
  });
}

function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "job.sh", content: script }] };
}

function joined(master: MasterNode, count = 1): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    master.addEventListener("nodejoin", () => ++seen === count && resolve());
  });
}

/**
 * A secondary scripted by the test: it registers like a real one, then
 * hands every message from the master to `onMessage`.
 */
async function scriptedSecondary(
  master: MasterNode,
  name: string,
  onMessage: (message: Message, connection: Connection) => void,
  id: string = crypto.randomUUID(),
  limits?: JobLimits,
): Promise<Connection> {
  const connection = new Connection(await Deno.connect(master.addr));
  await clientHandshake(connection, { role: "secondary", token: TOKEN, name });
  await connection.send({
    type: "register",
    id,
    name,
    languages: [{
      name: "bash",
      version: "5",
      aliases: ["sh"],
      extensions: [".sh"],
    }],
    slots: 4,
    maxCpu: 100,
    maxRam: 100,
    ...limits ? { limits } : {},
  });
  (async () => {
    try {
      for await (const message of connection) onMessage(message, connection);
    } catch {
      // The master closed the link: the script is over.
    }
  })();
  return connection;
}

Deno.test("placement: the master's own slots come first, then the secondary", async () => {
  await using master = startMaster({ slots: 1 });
  const join = joined(master);
  await using _secondary = new SecondaryNode({
    master: master.addr,
    name: "helper",
    slots: 2,
    token: TOKEN,
  });
  await join;
  // Three jobs that hold their slots until the test lets go, one at a time.
  const nodes: string[] = [];
  const holds: AbortController[] = [];
  for (let i = 0; i < 3; i++) {
    const abort = new AbortController();
    holds.push(abort);
    const started = Promise.withResolvers<string>();
    submitProgram(bash("sleep 600"), {
      master: master.addr,
      token: TOKEN,
      signal: abort.signal,
      onEvent: (event) =>
        event.type === "started" && started.resolve(event.node),
    }).catch(() => {});
    nodes.push(await started.promise);
  }
  assert.deepEqual(nodes, ["master", "helper", "helper"]);
  for (const abort of holds) abort.abort();
});

Deno.test("placement: a master over its CPU threshold sends work to the secondary", async () => {
  await using master = startMaster({
    slots: 4,
    maxCpu: 50,
    sampleResources: () =>
      Promise.resolve({ cpuPercent: 97, ramPercent: 10, ramUsedMb: 100 }),
  });
  await master.ready;
  const join = joined(master);
  await using _secondary = new SecondaryNode({
    master: master.addr,
    name: "cool",
    slots: 2,
    token: TOKEN,
  });
  await join;
  const result = await submitProgram(bash("echo hi"), {
    master: master.addr,
    token: TOKEN,
  });
  assert.equal(result.node, "cool");
  const status = master.status();
  assert.equal(status.nodes.find((n) => n.local)?.state, "busy");
});

Deno.test("placement: a coordinator-only master rejects a language no node offers", async () => {
  await using master = startMaster({ slots: 0 });
  const result = await submitProgram(bash("echo hi"), {
    master: master.addr,
    token: TOKEN,
  });
  assert.equal(result.verdict, "rejected");
  assert.match(
    result.reason ?? "",
    /language "bash" is not offered by any live node; this cluster offers no language at all \(no node is connected\)/,
  );
});

Deno.test("placement: a job a secondary refuses is placed on another node", async () => {
  // The scripted node sends no heartbeats: a long deadline keeps it around.
  await using master = startMaster({ slots: 0, nodeTimeoutMs: 60_000 });
  const refusals: string[] = [];
  const join = joined(master);
  const refuser = await scriptedSecondary(
    master,
    "refuser",
    (message, connection) => {
      if (message.type !== "run") return;
      refusals.push(message.jobId);
      connection.send({
        type: "refused",
        jobId: message.jobId,
        reason: "full",
      });
    },
  );
  await join;
  const result = submitProgram(bash("echo placed"), {
    master: master.addr,
    token: TOKEN,
  });
  // The refuser is the only node: the job waits for another one.
  const restarted = new Promise((resolve) =>
    master.addEventListener("jobrestart", resolve, { once: true })
  );
  await restarted;
  await using _good = new SecondaryNode({
    master: master.addr,
    name: "good",
    slots: 1,
    token: TOKEN,
    languages: ["bash"],
  });
  const done = await result;
  assert.equal(done.verdict, "ok", done.reason);
  assert.equal(done.node, "good");
  assert.equal(refusals.length, 1);
  assert.equal(
    master.status().nodes.find((n) => n.name === "refuser")?.state,
    "failing",
  );
  await refuser.close();
});

Deno.test("placement: a job whose node keeps dying ends in internal_error after the last attempt", async () => {
  await using master = startMaster({ slots: 0, maxAttempts: 2 });
  const victims: Connection[] = [];
  const reasons: string[] = [];
  master.addEventListener(
    "jobrestart",
    (event) => reasons.push(event.detail.reason),
  );
  // Each scripted node dies the moment it is given the job.
  const dier = (name: string) =>
    scriptedSecondary(master, name, (message, connection) => {
      if (message.type === "run") connection.close();
    });
  const join = joined(master, 2);
  victims.push(await dier("first"), await dier("second"));
  await join;
  const result = await submitProgram(bash("echo never"), {
    master: master.addr,
    token: TOKEN,
  });
  assert.equal(result.verdict, "internal_error");
  assert.match(
    result.reason ?? "",
    /was lost: .* \(gave up after 2 attempts\)$/,
  );
  assert.equal(reasons.length, 1);
  for (const victim of victims) await victim.close();
});

/** Starts `count` bash jobs on a master whose only node never answers: `count - 1` run, one waits. */
async function fillSilentNode(master: MasterNode, count: number) {
  const join = joined(master);
  const silent = await scriptedSecondary(master, "lonely", () => {}); // takes jobs, never answers
  await join;
  let started = 0;
  const allStarted = new Promise<void>((resolve) =>
    master.addEventListener("jobstart", () => ++started === 4 && resolve())
  );
  const queued = new Promise((resolve) =>
    master.addEventListener("jobqueued", resolve, { once: true })
  );
  // Four jobs fill the node's four slots; the rest wait.
  const jobs = Array.from(
    { length: count },
    (_, i) =>
      submitProgram(bash(`echo ${i}`), { master: master.addr, token: TOKEN }),
  );
  await Promise.all([allStarted, queued]);
  return { silent, jobs };
}

Deno.test("placement: running and queued jobs end when the last node for their language leaves and none joins within the grace", async () => {
  await using master = startMaster({ slots: 0, nodeGraceMs: 1 });
  const { silent, jobs } = await fillSilentNode(master, 5);
  await silent.close();
  const results = await Promise.all(jobs);
  for (const result of results) {
    assert.equal(result.verdict, "internal_error");
    assert.match(
      result.reason ?? "",
      /^no live node runs bash any more \(lonely left: .+\), and none joined within 1 ms$/,
    );
  }
});

Deno.test("placement: jobs whose last node left wait for one to join, and run there", async () => {
  await using master = startMaster({ slots: 0, nodeGraceMs: 600_000 });
  const { silent, jobs } = await fillSilentNode(master, 5);
  const left = new Promise((resolve) =>
    master.addEventListener("nodeleave", resolve, { once: true })
  );
  await silent.close();
  await left;
  assert.equal(master.queued, 5, "all five wait, the running ones again");
  // The node comes back (a master paused past --node-timeout sees this).
  const runs: string[] = [];
  const back = await scriptedSecondary(master, "lonely", (message, link) => {
    if (message.type !== "run") return;
    runs.push(message.jobId);
    link.send({
      type: "result",
      jobId: message.jobId,
      result: blankResult(message.jobId, {
        verdict: "ok",
        language: "bash",
        exitCode: 0,
        stdout: "back\n",
      }),
    });
  });
  const results = await Promise.all(jobs);
  assert.deepEqual(results.map((r) => r.verdict), Array(5).fill("ok"));
  assert.equal(runs.length, 5);
  await back.close();
});

Deno.test("placement: a secondary that registers again takes its jobs over on the new link", async () => {
  await using master = startMaster({ slots: 0, nodeTimeoutMs: 60_000 });
  const id = crypto.randomUUID();
  const runs: string[] = [];
  const firstRun = Promise.withResolvers<void>();
  const join = joined(master);
  const old = await scriptedSecondary(master, "flaky", (message) => {
    if (message.type === "run") firstRun.resolve();
  }, id);
  await join;
  const result = submitProgram(bash("echo 1"), {
    master: master.addr,
    token: TOKEN,
  });
  await firstRun.promise;
  // The same node comes back on a new link before the old one timed out.
  const fresh = await scriptedSecondary(
    master,
    "flaky",
    (message, connection) => {
      if (message.type !== "run") return;
      runs.push(message.jobId);
      connection.send({
        type: "result",
        jobId: message.jobId,
        result: {
          jobId: message.jobId,
          verdict: "ok",
          language: "bash",
          exitCode: 0,
          signal: null,
          stdout: "1\n",
          stderr: "",
          truncated: false,
          compile: null,
          timeMs: 1,
          cpuTimeMs: null,
          memoryKb: null,
          sandbox: [],
          node: "flaky",
          queuedMs: 0,
        },
      });
    },
    id,
  );
  const done = await result;
  assert.equal(done.verdict, "ok", done.reason);
  assert.equal(done.stdout, "1\n");
  assert.equal(runs.length, 1, "the job was placed again on the new link");
  assert.equal(master.status().nodes.length, 1);
  await old.close();
  await fresh.close();
});

Deno.test("placement: no secondary may pose as the master's own slots", async () => {
  await using master = startMaster({ slots: 1 });
  await master.ready;
  const connection = await scriptedSecondary(
    master,
    "impostor",
    () => {},
    "local",
  );
  await connection.closed;
  assert.deepEqual(master.status().nodes.map((n) => [n.name, n.local]), [[
    "master",
    true,
  ]]);
});

Deno.test("placement: a node that stays alive but never answers a job loses it at its deadline", async () => {
  await using master = startMaster({
    slots: 0,
    heartbeatIntervalMs: 100,
    nodeTimeoutMs: 300,
    maxAttempts: 1,
  });
  const join = joined(master);
  let heartbeats: ReturnType<typeof setInterval> | undefined;
  const cancelled = Promise.withResolvers<string>();
  const mute = await scriptedSecondary(
    master,
    "mute",
    (message, connection) => {
      if (message.type === "registered") {
        const beat = () =>
          connection.send({
            type: "heartbeat",
            cpuPercent: 1,
            ramPercent: 1,
            ramUsedMb: 1,
            running: 0,
          }).catch(() => {});
        beat();
        heartbeats = setInterval(beat, 50);
      }
      if (message.type === "cancel") cancelled.resolve(message.jobId);
    },
    crypto.randomUUID(),
    { ...DEFAULT_LIMITS, wallTimeMs: 200, compileWallTimeMs: 200 },
  );
  await join;
  try {
    const result = await submitProgram(bash("echo never"), {
      master: master.addr,
      token: TOKEN,
    });
    assert.equal(result.verdict, "internal_error");
    assert.match(
      result.reason ?? "",
      /node "mute" did not finish it within 700 ms \(gave up after 1 attempts\)/,
    );
    assert.equal(result.node, "mute");
    assert.equal(
      await cancelled.promise,
      result.jobId,
      "the node was told to stop the job",
    );
  } finally {
    clearInterval(heartbeats);
    await mute.close();
  }
});
