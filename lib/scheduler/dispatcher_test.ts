import assert from "node:assert/strict";
import { blankResult, type JobResult } from "../job.ts";
import type { Message, NodeStatus } from "../protocol/messages.ts";
import { Dispatcher, type JobClient } from "./dispatcher.ts";
import type { NodeLoad } from "./placement.ts";
import type { Worker, WorkerJob, WorkerJobEvents } from "./worker.ts";

/** A worker the test drives by hand: it only records what it was given. */
class FakeWorker implements Worker {
  readonly address = "fake";
  readonly languages = [{
    name: "bash",
    version: "5",
    aliases: [],
    extensions: [".sh"],
  }];
  readonly jobs = new Map<string, WorkerJobEvents>();
  readonly cancelled: string[] = [];
  constructor(readonly id: string, readonly slots = 1) {}
  get name(): string {
    return this.id;
  }
  load(): NodeLoad {
    return {
      id: this.id,
      name: this.id,
      local: false,
      languages: new Set(["bash"]),
      slots: this.slots,
      assigned: this.jobs.size,
      cpuPercent: 0,
      ramPercent: 0,
      maxCpu: 100,
      maxRam: 100,
      draining: false,
      failingUntil: 0,
    };
  }
  start(job: WorkerJob, events: WorkerJobEvents): void {
    this.jobs.set(job.id, events);
  }
  cancel(jobId: string): void {
    this.cancelled.push(jobId);
  }
  readonly inputs: [jobId: string, data: string, eof: boolean][] = [];
  input(jobId: string, data: string, eof: boolean): void {
    this.inputs.push([jobId, data, eof]);
  }
  markFailing(): void {}
  status(): NodeStatus {
    throw new Error("not used");
  }
  /** Ends a job here with a result. */
  finish(jobId: string, fields: Partial<JobResult> = {}): void {
    const events = this.jobs.get(jobId)!;
    this.jobs.delete(jobId);
    events.result(
      blankResult(jobId, { verdict: "ok", node: this.id, ...fields }),
    );
  }
  /** Loses every job here, as a dead node does. */
  die(): void {
    const jobs = [...this.jobs.values()];
    this.jobs.clear();
    for (const events of jobs) {
      events.failed(`node "${this.id}" was lost`, "lost");
    }
  }
}

/** A client that records every message it is sent. */
function client(
  name: string,
): JobClient & { messages: Message[]; results: JobResult[] } {
  const messages: Message[] = [];
  const results: JobResult[] = [];
  return {
    name,
    client: name,
    jobs: new Set(),
    messages,
    results,
    send: (message) => messages.push(message),
    sendResult: (result) => results.push(result),
  };
}

function setup(maxAttempts = 3) {
  const events: string[] = [];
  const dispatcher = new Dispatcher({
    maxQueue: 10,
    maxAttempts,
    emit: (type) => events.push(type),
  });
  return { dispatcher, events };
}

const job = (id: string) => ({
  id,
  request: { language: "bash", files: [{ name: "a.sh", content: "true" }] },
  language: "bash",
  acceptedAt: performance.now(),
});

Deno.test("Dispatcher places, queues, and starts the next job the moment a slot frees", () => {
  const { dispatcher } = setup();
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  dispatcher.submit(alice, job("1"));
  dispatcher.submit(alice, job("2"));
  assert.deepEqual([...worker.jobs.keys()], ["1"]);
  assert.equal(dispatcher.queued, 1);
  assert.ok(
    alice.messages.some((m) =>
      m.type === "queued" && m.jobId === "2" && m.position === 1
    ),
  );
  worker.finish("1");
  assert.deepEqual([...worker.jobs.keys()], ["2"]);
  worker.finish("2");
  assert.deepEqual(alice.results.map((r) => [r.jobId, r.verdict]), [
    ["1", "ok"],
    ["2", "ok"],
  ]);
  assert.equal(alice.jobs.size, 0);
});

Deno.test("Dispatcher restarts a lost job elsewhere, and it still ends once", () => {
  const { dispatcher, events } = setup();
  const doomed = new FakeWorker("doomed");
  const spare = new FakeWorker("spare");
  dispatcher.addWorker(doomed);
  const bob = client("bob");
  dispatcher.submit(bob, job("1"));
  dispatcher.addWorker(spare);
  // As a lost secondary does: forgotten first, then its jobs fail.
  dispatcher.removeWorker(doomed, "connection closed");
  doomed.die();
  assert.deepEqual([...spare.jobs.keys()], ["1"]);
  assert.ok(
    bob.messages.some((m) => m.type === "restarted" && m.attempt === 2),
  );
  spare.finish("1");
  assert.equal(bob.results.length, 1);
  assert.equal(bob.results[0]!.node, "spare");
  assert.deepEqual(events.filter((e) => e === "jobcomplete"), ["jobcomplete"]);
});

Deno.test("Dispatcher ignores a late answer about an earlier attempt, even from the same node", () => {
  const { dispatcher } = setup();
  const only = new FakeWorker("only");
  dispatcher.addWorker(only);
  const carol = client("carol");
  dispatcher.submit(carol, job("1"));
  const firstAttempt = only.jobs.get("1")!;
  // The node drops the job (say it went silent past the job's deadline) and,
  // being the only one, gets it again.
  only.die();
  assert.ok(only.jobs.has("1"), "restarted on the same node");
  firstAttempt.output("stdout", "stale");
  firstAttempt.result(blankResult("1", { verdict: "ok", stdout: "stale" }));
  firstAttempt.failed("again", "lost");
  assert.equal(carol.results.length, 0, "the stale answers were ignored");
  assert.ok(!carol.messages.some((m) => m.type === "output"));
  only.finish("1", { stdout: "fresh" });
  assert.deepEqual(carol.results.map((r) => r.stdout), ["fresh"]);
});

Deno.test("Dispatcher cancels queued and running jobs, one result each", () => {
  const { dispatcher } = setup();
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const dave = client("dave");
  dispatcher.submit(dave, job("running"));
  dispatcher.submit(dave, job("waiting"));
  dispatcher.cancel(dave, "waiting", "gave up");
  assert.deepEqual(dave.results.map((r) => [r.jobId, r.reason]), [[
    "waiting",
    "cancelled: gave up",
  ]]);
  dispatcher.cancel(dave, "running", "gave up");
  assert.deepEqual(worker.cancelled, ["running"]);
  // The node dies before it answers the cancel: the job ends, it does not restart.
  worker.die();
  assert.equal(dave.results.length, 2);
  assert.equal(dave.results[1]!.reason, "cancelled: gave up");
  assert.ok(!dave.messages.some((m) => m.type === "restarted"));
});

Deno.test("Dispatcher gives up after the last attempt and names the last node", () => {
  const { dispatcher } = setup(2);
  const worker = new FakeWorker("flaky");
  dispatcher.addWorker(worker);
  const erin = client("erin");
  dispatcher.submit(erin, job("1"));
  worker.die();
  worker.die();
  assert.equal(erin.results.length, 1);
  assert.match(erin.results[0]!.reason ?? "", /\(gave up after 2 attempts\)$/);
  assert.equal(erin.results[0]!.node, "flaky");
});

Deno.test("Dispatcher.close() ends queued jobs and waits for running ones", async () => {
  const { dispatcher } = setup();
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const fay = client("fay");
  dispatcher.submit(fay, job("running"));
  dispatcher.submit(fay, job("waiting"));
  let closed = false;
  const closing = dispatcher.close("shutting down").then(() => closed = true);
  assert.deepEqual(fay.results.map((r) => r.jobId), ["waiting"]);
  assert.deepEqual(worker.cancelled, ["running"]);
  await Promise.resolve();
  assert.equal(closed, false, "close waits for the running job");
  worker.finish("running", {
    verdict: "internal_error",
    reason: "cancelled: shutting down",
  });
  await closing;
  assert.equal(fay.results.length, 2);
  dispatcher.submit(fay, job("late"));
  assert.equal(fay.results.at(-1)!.verdict, "rejected");
});

Deno.test("Dispatcher holds a client to its quota: running jobs wait, queued ones over it are rejected", () => {
  const { dispatcher } = setup();
  const worker = new FakeWorker("w", 4);
  dispatcher.addWorker(worker);
  const bob = { ...client("bob"), quota: { maxRunning: 1, maxQueued: 1 } };
  const carol = client("carol");
  dispatcher.submit(bob, job("b1"));
  dispatcher.submit(bob, job("b2"));
  dispatcher.submit(bob, job("b3"));
  // Slots are free, but bob may run one job: b2 waits, b3 is over the queue quota.
  assert.deepEqual([...worker.jobs.keys()], ["b1"]);
  assert.equal(dispatcher.queued, 1);
  assert.deepEqual(bob.results.map((r) => [r.jobId, r.verdict, r.client]), [
    ["b3", "rejected", "bob"],
  ]);
  assert.match(bob.results[0]!.reason!, /maxQueued/);
  // Another client is not held up by bob's waiting job.
  dispatcher.submit(carol, job("c1"));
  assert.deepEqual([...worker.jobs.keys()], ["b1", "c1"]);
  // bob's turn comes when his running job ends.
  worker.finish("b1");
  assert.deepEqual([...worker.jobs.keys()], ["c1", "b2"]);
  assert.equal(bob.results.at(-1)?.client, "bob");
});

Deno.test("Dispatcher passes stdin on to an interactive job, and replays it all after a restart", () => {
  const { dispatcher } = setup();
  const doomed = new FakeWorker("doomed");
  dispatcher.addWorker(doomed);
  const alice = client("alice");
  const interactive = {
    ...job("1"),
    request: { ...job("1").request, interactive: true },
  };
  dispatcher.submit(alice, interactive);
  dispatcher.input(alice, "1", "first\n", false);
  dispatcher.input(client("mallory"), "1", "not yours\n", false);
  assert.deepEqual(doomed.inputs, [["1", "first\n", false]]);

  const spare = new FakeWorker("spare");
  dispatcher.addWorker(spare);
  dispatcher.removeWorker(doomed, "connection closed");
  doomed.die();
  dispatcher.input(alice, "1", "second\n", true);
  assert.deepEqual(spare.inputs, [
    ["1", "first\n", false],
    ["1", "second\n", true],
  ]);
  // Ended: nothing more reaches the program.
  dispatcher.input(alice, "1", "late\n", false);
  assert.equal(spare.inputs.length, 2);

  // A job that is not interactive never gets stdin after its start.
  dispatcher.submit(alice, job("2"));
  dispatcher.input(alice, "2", "ignored\n", false);
  assert.ok(!spare.inputs.some(([id]) => id === "2"));
});

Deno.test("Dispatcher holds an interactive job's stdin to MAX_INPUT_BYTES in UTF-8 bytes", () => {
  const { dispatcher } = setup();
  const worker = new FakeWorker("w1");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  dispatcher.submit(alice, {
    ...job("1"),
    request: { ...job("1").request, interactive: true },
  });
  // 3 bytes a character: 1.5 MiB of stdin in 512 Ki UTF-16 units.
  const euros = "€".repeat(256 * 1024);
  dispatcher.input(alice, "1", euros, false);
  dispatcher.input(alice, "1", euros, false);
  assert.deepEqual(worker.inputs.map(([, data, eof]) => [data.length, eof]), [
    [euros.length, false],
    [0, true],
  ]);
});
