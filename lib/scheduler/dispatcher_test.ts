import assert from "node:assert/strict";
import { blankResult, type JobResult } from "../job.ts";
import {
  Dispatcher,
  type DispatcherOptions,
  type JobClient,
  MAX_NODE_GRACE_MS,
} from "./dispatcher.ts";
import type { DispatcherEventMap, JobUpdate } from "./events.ts";
import type { NodeLoad } from "./placement.ts";
import type {
  NodeStatus,
  OfferedLanguage,
  Worker,
  WorkerJob,
  WorkerJobEvents,
} from "./worker.ts";

/** A worker the test drives by hand: it only records what it was given. */
class FakeWorker implements Worker {
  readonly address = "fake";
  readonly languages: OfferedLanguage[];
  readonly jobs = new Map<string, WorkerJobEvents>();
  /** Every job it was given, in order. */
  readonly started: string[] = [];
  readonly cancelled: string[] = [];
  /** How many times placement read its load. */
  loads = 0;
  /** CPU use its heartbeats would report. */
  cpuPercent = 0;
  constructor(
    readonly id: string,
    readonly slots = 1,
    readonly language = "bash",
  ) {
    this.languages = [{
      name: language,
      version: "1",
      aliases: [],
      extensions: [],
    }];
  }
  get name(): string {
    return this.id;
  }
  load(): NodeLoad {
    this.loads++;
    return {
      id: this.id,
      name: this.id,
      local: false,
      languages: new Set([this.language]),
      slots: this.slots,
      assigned: this.jobs.size,
      cpuPercent: this.cpuPercent,
      ramPercent: 0,
      maxCpu: 100,
      maxRam: 100,
      draining: false,
      failingUntil: 0,
    };
  }
  start(job: WorkerJob, events: WorkerJobEvents): void {
    this.jobs.set(job.id, events);
    this.started.push(job.id);
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
): JobClient & { messages: JobUpdate[]; results: JobResult[] } {
  const messages: JobUpdate[] = [];
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

function setup(maxAttempts = 3, options: Partial<DispatcherOptions> = {}) {
  const events: string[] = [];
  /** Every event with its detail, for the tests that read them. */
  const details: [keyof DispatcherEventMap, Detail][] = [];
  const listeners: (<K extends keyof DispatcherEventMap>(
    type: K,
    detail: DispatcherEventMap[K],
  ) => void)[] = [];
  const dispatcher = new Dispatcher({
    maxQueue: 10,
    maxAttempts,
    nodeGraceMs: 0,
    ...options,
    emit: (type, detail) => {
      events.push(type);
      details.push([type, detail as Detail]);
      for (const listener of listeners) listener(type, detail);
    },
  });
  return { dispatcher, events, details, listeners };
}

const job = (id: string, language = "bash") => ({
  id,
  request: { language, files: [{ name: "a.sh", content: "true" }] },
  language,
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

/** Any event's detail, as the tests read it. */
type Detail = { jobId: string; position?: number };

/** The ids of every event of `type`, in order. */
function idsOf(
  details: [keyof DispatcherEventMap, Detail][],
  type: keyof DispatcherEventMap,
): string[] {
  return details.filter(([t]) => t === type).map(([, d]) => d.jobId);
}

Deno.test("Dispatcher: a listener that cancels a queued job while another starts ends it once, and it never starts", () => {
  const { dispatcher, details, listeners } = setup();
  const first = new FakeWorker("first", 2);
  dispatcher.addWorker(first);
  const alice = client("alice");
  for (const id of ["1", "2", "3", "4"]) dispatcher.submit(alice, job(id));
  assert.deepEqual(first.started, ["1", "2"]);
  // As 3 starts, its client gives up on 4: synchronously, inside the start.
  listeners.push((type, detail) => {
    if (type === "jobstart" && (detail as { jobId: string }).jobId === "3") {
      dispatcher.cancel(alice, "4", "gave up");
    }
  });
  // A node with room for both joins: one dispatch would start 3 and 4.
  const second = new FakeWorker("second", 2);
  dispatcher.addWorker(second);
  assert.deepEqual(second.started, ["3"]);
  assert.deepEqual(
    alice.messages.filter((m) => m.jobId === "4").map((m) => m.type),
    ["queued"],
  );
  assert.deepEqual(
    alice.results.filter((r) => r.jobId === "4").map((r) => r.reason),
    ["cancelled: gave up"],
  );
  assert.deepEqual(idsOf(details, "jobcomplete"), ["4"]);
  assert.ok(!idsOf(details, "jobstart").includes("4"));
  assert.equal(dispatcher.queued, 0);
});

Deno.test("Dispatcher: a job cancelled by a listener of its own start never reaches its worker", () => {
  const { dispatcher, details, listeners } = setup();
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  listeners.push((type, detail) => {
    if (type === "jobstart" && (detail as { jobId: string }).jobId === "1") {
      dispatcher.cancel(alice, "1", "changed my mind");
    }
  });
  dispatcher.submit(alice, job("1"));
  assert.deepEqual(worker.started, []);
  assert.deepEqual(worker.cancelled, []);
  assert.deepEqual(alice.results.map((r) => [r.jobId, r.reason]), [
    ["1", "cancelled: changed my mind"],
  ]);
  assert.deepEqual(idsOf(details, "jobcomplete"), ["1"]);
  // Its slot is free: the next job runs.
  dispatcher.submit(alice, job("2"));
  assert.deepEqual(worker.started, ["2"]);
});

Deno.test("Dispatcher: a job whose signal aborted before or as it is submitted ends cancelled, unstarted", () => {
  const { dispatcher, details } = setup();
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  dispatcher.submit(alice, { ...job("early"), signal: AbortSignal.abort() });
  assert.deepEqual(worker.started, []);
  assert.deepEqual(alice.results.map((r) => [r.jobId, r.verdict, r.reason]), [
    ["early", "internal_error", "cancelled: cancelled by the client"],
  ]);
  assert.deepEqual(idsOf(details, "jobcomplete"), ["early"]);

  // Aborted while it runs: cancelled on its worker, one result.
  const running = new AbortController();
  dispatcher.submit(alice, { ...job("running"), signal: running.signal });
  // Aborted while it waits: out of the queue at once.
  const waiting = new AbortController();
  dispatcher.submit(alice, { ...job("waiting"), signal: waiting.signal });
  waiting.abort();
  running.abort();
  assert.deepEqual(worker.started, ["running"]);
  assert.deepEqual(worker.cancelled, ["running"]);
  worker.finish("running", { verdict: "internal_error", reason: "cancelled" });
  // Once it ended, its signal is let go.
  running.signal.dispatchEvent(new Event("abort"));
  assert.deepEqual(worker.cancelled, ["running"]);
  assert.deepEqual(alice.results.map((r) => r.jobId), [
    "early",
    "waiting",
    "running",
  ]);
});

Deno.test("Dispatcher puts restarted jobs back at the front in their original order", async () => {
  const { dispatcher, details, listeners } = setup(3, {
    positionIntervalMs: 1,
  });
  const doomed = new FakeWorker("doomed", 3);
  dispatcher.addWorker(doomed);
  const alice = client("alice");
  for (const id of ["1", "2", "3"]) dispatcher.submit(alice, job(id));
  const busy = new FakeWorker("busy");
  dispatcher.addWorker(busy);
  dispatcher.submit(alice, job("4"));
  dispatcher.submit(alice, job("5"));
  assert.deepEqual(doomed.started, ["1", "2", "3"]);
  assert.deepEqual(busy.started, ["4"]);
  dispatcher.removeWorker(doomed, "connection closed");
  // Each restarted job hears its place at once; the job they pushed back
  // hears it with the next update.
  const pushedBack = Promise.withResolvers<void>();
  listeners.push((type, detail) => {
    if (type === "jobqueued" && detail.jobId === "5") pushedBack.resolve();
  });
  doomed.die();
  await pushedBack.promise;
  // Where each job was last told it stands.
  const positions = new Map<string, number>();
  for (const [type, detail] of details) {
    if (type === "jobqueued") {
      positions.set(detail.jobId, detail.position!);
    }
  }
  assert.deepEqual(
    [...positions].sort((a, b) => a[1] - b[1]),
    [["1", 1], ["2", 2], ["3", 3], ["5", 4]],
  );
  for (const id of ["4", "1", "2", "3"]) busy.finish(id);
  assert.deepEqual(busy.started, ["4", "1", "2", "3", "5"]);
});

Deno.test("Dispatcher keeps jobs queued while no node runs their language, and a node that joins within the grace runs them", () => {
  const { dispatcher, details } = setup(3, { nodeGraceMs: MAX_NODE_GRACE_MS });
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  dispatcher.submit(alice, job("running"));
  dispatcher.submit(alice, job("waiting"));
  // The only bash node is lost (a master paused past the node timeout).
  dispatcher.removeWorker(worker, "silent for 5000 ms");
  worker.die();
  assert.equal(alice.results.length, 0);
  assert.equal(dispatcher.queued, 2);
  // It rejoins: both run, the restarted one first. (Its grace timer ends
  // here too, or the test's sanitizer would catch it.)
  const back = new FakeWorker("w", 2);
  dispatcher.addWorker(back);
  assert.deepEqual(back.started, ["running", "waiting"]);
  back.finish("running");
  back.finish("waiting");
  assert.deepEqual(alice.results.map((r) => [r.jobId, r.verdict]), [
    ["running", "ok"],
    ["waiting", "ok"],
  ]);
  assert.deepEqual(idsOf(details, "jobcomplete"), ["running", "waiting"]);
});

Deno.test("Dispatcher ends jobs that waited out the grace with no node for their language, naming why", async () => {
  const { dispatcher, listeners } = setup(3, { nodeGraceMs: 1 });
  const worker = new FakeWorker("w");
  const python = new FakeWorker("py", 1, "python");
  dispatcher.addWorker(worker);
  dispatcher.addWorker(python);
  const alice = client("alice");
  dispatcher.submit(alice, job("running"));
  dispatcher.submit(alice, job("waiting"));
  const ended = Promise.withResolvers<void>();
  listeners.push((type) => {
    if (type === "jobcomplete" && alice.results.length === 2) ended.resolve();
  });
  dispatcher.removeWorker(worker, "connection closed");
  worker.die();
  // A node of another language does not save them.
  dispatcher.addWorker(new FakeWorker("py2", 1, "python"));
  assert.equal(alice.results.length, 0);
  await ended.promise;
  for (const result of alice.results) {
    assert.equal(result.verdict, "internal_error");
    assert.equal(
      result.reason,
      "no live node runs bash any more (w left: connection closed), and none joined within 1 ms",
    );
  }
  assert.equal(dispatcher.queued, 0);
});

Deno.test("Dispatcher with no grace ends such jobs at once; the grace has a maximum", async () => {
  const { dispatcher } = setup(3, { nodeGraceMs: 0 });
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  dispatcher.submit(alice, job("running"));
  dispatcher.submit(alice, job("waiting"));
  dispatcher.removeWorker(worker, "connection closed");
  worker.die();
  assert.deepEqual(alice.results.map((r) => [r.jobId, r.reason]), [
    ["waiting", "no live node runs bash any more (w left: connection closed)"],
    [
      "running",
      'node "w" was lost; no live node runs bash any more',
    ],
  ]);
  for (const nodeGraceMs of [-1, 1.5, MAX_NODE_GRACE_MS + 1, NaN]) {
    assert.throws(
      () =>
        new Dispatcher({ maxQueue: 1, maxAttempts: 1, nodeGraceMs, emit() {} }),
      RangeError,
    );
  }
  // Grace timers end with the dispatcher, and with the last job that waited.
  const graceful = setup(3, { nodeGraceMs: MAX_NODE_GRACE_MS });
  const gone = new FakeWorker("gone", 1);
  graceful.dispatcher.addWorker(gone);
  graceful.dispatcher.submit(alice, job("a"));
  graceful.dispatcher.submit(alice, job("b"));
  graceful.dispatcher.removeWorker(gone, "connection closed");
  graceful.dispatcher.cancel(alice, "b", "gave up");
  gone.die();
  await graceful.dispatcher.close("shutting down");
  assert.deepEqual(alice.results.slice(2).map((r) => [r.jobId, r.reason]), [
    ["b", "cancelled: gave up"],
    ["a", "the master shut down before the job started"],
  ]);
});

Deno.test("Dispatcher reads each node's load once per dispatch, however many jobs wait", () => {
  const { dispatcher } = setup(3, { maxQueue: 2000 });
  const java = new FakeWorker("java", 1, "java");
  dispatcher.addWorker(java);
  const pythons = Array.from(
    { length: 200 },
    (_, i) => new FakeWorker(`py${i}`, 1, "python"),
  );
  for (const worker of pythons) dispatcher.addWorker(worker);
  const clients = Array.from({ length: 10 }, (_, i) => client(`c${i}`));
  for (let i = 0; i < 1001; i++) {
    dispatcher.submit(clients[i % 10]!, job(`j${i}`, "java"));
  }
  assert.equal(dispatcher.queued, 1000);
  const workers = [java, ...pythons];
  for (const worker of workers) worker.loads = 0;
  dispatcher.dispatch();
  const reads = workers.reduce((sum, worker) => sum + worker.loads, 0);
  assert.ok(reads <= workers.length, `${reads} load reads`);
  // A python job behind them all still starts when a python node frees up.
  for (let i = 0; i < pythons.length; i++) {
    dispatcher.submit(clients[0]!, job(`p${i}`, "python"));
  }
  assert.ok(pythons.every((worker) => worker.started.length === 1));
  dispatcher.submit(clients[1]!, job("late", "python"));
  assert.equal(dispatcher.queued, 1001);
  pythons[7]!.finish(pythons[7]!.started[0]!);
  assert.deepEqual(pythons[7]!.started.slice(1), ["late"]);
  // And java's turn comes in queue order, fair across clients: c1 was
  // served last (its python job), so c2 goes first.
  java.finish("j0");
  assert.deepEqual(java.started, ["j0", "j2"]);
});

Deno.test("Dispatcher: a job's end and a submission read the loads of the nodes with room, not of every busy node", () => {
  const { dispatcher } = setup(3, { maxQueue: 100 });
  const workers = Array.from(
    { length: 100 },
    (_, i) => new FakeWorker(`w${i}`),
  );
  for (const worker of workers) dispatcher.addWorker(worker);
  const clients = Array.from({ length: 110 }, (_, i) => client(`c${i}`));
  for (const [i, each] of clients.entries()) {
    dispatcher.submit(each, job(`j${i}`));
  }
  assert.equal(dispatcher.running, 100);
  assert.equal(dispatcher.queued, 10);
  const reads = () => workers.reduce((sum, worker) => sum + worker.loads, 0);
  for (const worker of workers) worker.loads = 0;
  // A slot frees on w5: the next job starts there, and only w5 is read.
  const w5 = workers[5]!;
  w5.finish(w5.started[0]!);
  assert.equal(w5.started[1], "j100");
  assert.ok(reads() <= 8, `${reads()} load reads`);
  assert.equal(reads(), w5.loads);
  // A new job waits: every node is busy, and finding so reads w5 at most.
  for (const worker of workers) worker.loads = 0;
  dispatcher.submit(client("late"), job("late"));
  assert.equal(dispatcher.queued, 10);
  assert.ok(reads() <= 1, `${reads()} load reads`);
  // dispatch() reads every node again, for loads that changed unseen.
  dispatcher.dispatch();
  assert.ok(workers.every((worker) => worker.loads >= 1));
});

Deno.test("Dispatcher: a heartbeat under the threshold again starts the jobs that waited for that node", () => {
  const { dispatcher } = setup();
  const hot = new FakeWorker("hot", 2);
  hot.cpuPercent = 101;
  dispatcher.addWorker(hot);
  const alice = client("alice");
  dispatcher.submit(alice, job("1"));
  dispatcher.submit(alice, job("2"));
  assert.equal(dispatcher.queued, 2);
  hot.cpuPercent = 50;
  dispatcher.loadChanged(hot);
  assert.deepEqual(hot.started, ["1", "2"]);
  assert.equal(dispatcher.queued, 0);
});

Deno.test("Dispatcher keeps a client's counts while thousands of other clients come and go", () => {
  const { dispatcher } = setup(3, { maxQueue: 100 });
  const bash = new FakeWorker("bash");
  const python = new FakeWorker("python", 1, "python");
  dispatcher.addWorker(bash);
  dispatcher.addWorker(python);
  const bob = { ...client("bob"), quota: { maxRunning: 1, maxQueued: 2 } };
  for (const id of ["b1", "b2", "b3"]) dispatcher.submit(bob, job(id));
  // 3,000 clients run one job each and leave: their counts go back to
  // zero, and are swept as they pile up.
  for (let i = 0; i < 3000; i++) {
    const passing = {
      ...client(`c${i}`),
      quota: { maxRunning: 1, maxQueued: 1 },
    };
    dispatcher.submit(passing, job(`c${i}`, "python"));
    python.finish(`c${i}`);
  }
  dispatcher.submit(bob, job("b4"));
  assert.match(
    bob.results.at(-1)!.reason!,
    /2 jobs waiting and 1 running, the most it may have waiting is 2/,
  );
  bash.finish("b1");
  assert.deepEqual(bash.started, ["b1", "b2"]);
  dispatcher.submit(bob, job("b5"));
  assert.equal(dispatcher.queued, 2);
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

Deno.test("Dispatcher: draining a long queue costs a bounded number of position updates per job, and the last job still hears its place fall to 1", async () => {
  // Before: every dequeue told every waiting job, n(n-1)/2 updates in all.
  const perJob: number[] = [];
  for (const waiting of [100, 1000]) {
    const { dispatcher, listeners } = setup(3, {
      maxQueue: waiting,
      positionIntervalMs: 1,
    });
    const worker = new FakeWorker("w");
    dispatcher.addWorker(worker);
    const clients = Array.from(
      { length: waiting + 1 },
      (_, i) => client(`c${i}`),
    );
    for (const [i, each] of clients.entries()) {
      dispatcher.submit(each, job(`${i}`));
    }
    assert.equal(dispatcher.queued, waiting);
    const last = clients.at(-1)!;
    const initial = last.messages[0];
    assert.deepEqual(initial, {
      type: "queued",
      jobId: `${waiting}`,
      position: waiting,
      // Nothing ended yet: a guessed second a job, one slot.
      estimatedWaitMs: waiting * 1000,
    });
    // One job ends at a time; each time, the update it caused goes out
    // (the worst case: updates as frequent as dequeues).
    let updated = Promise.withResolvers<void>();
    listeners.push((type) => type === "jobqueued" && updated.resolve());
    while (dispatcher.queued > 0) {
      updated = Promise.withResolvers<void>();
      worker.finish(worker.started.at(-1)!);
      if (dispatcher.queued > 0) await updated.promise;
    }
    worker.finish(worker.started.at(-1)!);
    assert.equal(dispatcher.queued, 0);
    const updates = clients.flatMap((each) =>
      each.messages.filter((message) => message.type === "queued")
    );
    perJob.push(updates.length / waiting);
    const heard = last.messages.flatMap((message) =>
      message.type === "queued" ? [message] : []
    );
    const positions = heard.map((message) => message.position);
    assert.deepEqual(positions, [...positions].sort((a, b) => b - a));
    assert.equal(positions.at(-1), 1);
    assert.ok(positions.length > 10, `${positions}`);
    assert.ok(
      heard.every((message) => Number.isInteger(message.estimatedWaitMs)),
    );
    assert.deepEqual(last.messages.at(-1)?.type, "started");
    await dispatcher.close("done");
  }
  // At most the front's 10 and one from a whole walk per dequeue, plus the
  // job's first: the same bound for 100 waiting as for 1,000.
  for (const updates of perJob) assert.ok(updates <= 12, `${perJob}`);
});

Deno.test("Dispatcher: a walk of a long queue tells the first 1,024 positions at once and the rest in the next turns, none of them stale", async () => {
  const { dispatcher, listeners } = setup(3, {
    maxQueue: 5000,
    positionIntervalMs: 1,
  });
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const clients = Array.from({ length: 3001 }, (_, i) => client(`c${i}`));
  for (const [i, each] of clients.entries()) {
    dispatcher.submit(each, job(`${i}`));
  }
  // Jobs 1 to 3000 wait, in that order. 1,500 cancels move every job left
  // as many times as there are jobs: the next update walks them all.
  for (let i = 1; i <= 1500; i++) {
    dispatcher.cancel(clients[i]!, `${i}`, "gave up");
  }
  const lastTold = (i: number) =>
    clients[i]!.messages.findLast((m) => m.type === "queued")?.position;
  const walked = Promise.withResolvers<void>();
  let toldAtOnce: (number | undefined)[] = [];
  listeners.push((type, detail) => {
    if (type !== "jobqueued" || (detail as Detail).position !== 1024) return;
    // After the walk's turn, before the next one.
    queueMicrotask(() => {
      toldAtOnce = [1501, 2524, 2525, 3000].map(lastTold);
      // One waiting to hear leaves; another starts.
      dispatcher.cancel(clients[2600]!, "2600", "gave up");
      worker.finish("0");
      walked.resolve();
    });
  });
  await walked.promise;
  // The front heard at once; the rest still had their first position.
  assert.deepEqual(toldAtOnce, [1, 1024, 2525, 3000]);
  assert.deepEqual(worker.started, ["0", "1501"]);
  while (lastTold(3000) === 3000) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  // The slice after it: the positions the walk found, as the job that
  // started moved no one behind it.
  assert.deepEqual([2525, 2599, 2601, 3000].map(lastTold), [
    1025,
    1099,
    1101,
    1500,
  ]);
  assert.equal(
    clients[2600]!.messages.filter((m) => m.type === "queued").length,
    1,
    "a job that left is not told",
  );
  assert.deepEqual(clients[1501]!.messages.map((m) => m.type), [
    "queued",
    "queued",
    "started",
  ]);
  const closing = dispatcher.close("done");
  worker.finish("1501");
  await closing;
});

Deno.test("Dispatcher: a job that waited hears position 1 just before it starts, however its updates were coalesced", async () => {
  const { dispatcher } = setup(3, { positionIntervalMs: 60_000 });
  const worker = new FakeWorker("w");
  dispatcher.addWorker(worker);
  const alice = client("alice");
  for (const id of ["1", "2", "3", "4"]) dispatcher.submit(alice, job(id));
  // No update is due for a minute: 3 and 4 do not hear they moved...
  for (const id of ["1", "2", "3"]) worker.finish(id);
  // ...but each heard it was next as it started.
  const heard = (id: string) =>
    alice.messages.filter((m) => m.jobId === id).map((m) =>
      m.type === "queued" ? `queued ${m.position}` : m.type
    );
  assert.deepEqual(heard("1"), ["started"]);
  assert.deepEqual(heard("2"), ["queued 1", "started"]);
  assert.deepEqual(heard("3"), ["queued 2", "queued 1", "started"]);
  assert.deepEqual(heard("4"), ["queued 3", "queued 1", "started"]);
  worker.finish("4");
  await dispatcher.close("done");
});

Deno.test("Dispatcher estimates a wait from the position, the time recent jobs held a slot and the slots that run its language", async () => {
  const { dispatcher } = setup();
  const bash = [new FakeWorker("b1", 2), new FakeWorker("b2", 1)];
  const python = new FakeWorker("py", 8, "python");
  for (const worker of [...bash, python]) dispatcher.addWorker(worker);
  const alice = client("alice");
  for (let i = 0; i < 6; i++) dispatcher.submit(alice, job(`${i}`));
  const waits = alice.messages.flatMap((m) =>
    m.type === "queued" ? [[m.position, m.estimatedWaitMs]] : []
  );
  // Before any job ended, a job is guessed to hold its slot 1 s; three
  // slots run bash (python's eight do not count).
  assert.deepEqual(waits, [[1, 333], [2, 667], [3, 1000]]);
  for (const worker of bash) {
    for (const id of [...worker.jobs.keys()]) worker.finish(id);
  }
  for (const worker of bash) {
    for (const id of [...worker.jobs.keys()]) worker.finish(id);
  }
  await dispatcher.close("done");
});

Deno.test("Dispatcher keeps each client's counts through cancels, restarts and ends, and passes over a client at its quota", () => {
  const { dispatcher } = setup(3, { maxQueue: 100 });
  const doomed = new FakeWorker("doomed", 2);
  dispatcher.addWorker(doomed);
  const bob = { ...client("bob"), quota: { maxRunning: 1, maxQueued: 3 } };
  const carol = client("carol");
  for (const id of ["b1", "b2", "b3", "b4"]) dispatcher.submit(bob, job(id));
  assert.deepEqual(doomed.started, ["b1"]);
  dispatcher.submit(bob, job("b5"));
  assert.match(
    bob.results.at(-1)!.reason!,
    /3 jobs waiting and 1 running, the most it may have waiting is 3/,
  );
  dispatcher.cancel(bob, "b2", "changed my mind");
  dispatcher.submit(bob, job("b6")); // room again
  assert.equal(dispatcher.queued, 3);
  // carol's job joins behind bob's three: bob is at his quota, so the walk
  // passes over his jobs and carol takes the free slot.
  dispatcher.submit(carol, job("c1"));
  assert.deepEqual(doomed.started, ["b1", "c1"]);
  // Another node joins: bob is still at his quota, so nothing moves.
  const next = new FakeWorker("next", 2);
  dispatcher.addWorker(next);
  assert.deepEqual(next.started, []);
  // The first node dies: its jobs restart first on the other, b1 too, as
  // bob's count of running jobs went back to zero.
  dispatcher.removeWorker(doomed, "gone");
  doomed.die();
  assert.deepEqual(next.started, ["b1", "c1"]);
  next.finish("c1");
  assert.deepEqual(next.started, ["b1", "c1"], "bob is still at his quota");
  next.finish("b1");
  assert.deepEqual(next.started, ["b1", "c1", "b3"]);
  next.finish("b3");
  next.finish("b4");
  next.finish("b6");
  assert.equal(dispatcher.queued + dispatcher.running, 0);
  // All his counts are back to zero: four may wait again.
  for (const id of ["b7", "b8", "b9", "b10"]) dispatcher.submit(bob, job(id));
  assert.equal(dispatcher.queued, 3);
  assert.deepEqual(
    bob.results.filter((r) => r.verdict === "rejected").map((r) => r.jobId),
    ["b5"],
  );
});

Deno.test("Dispatcher counts a client's jobs on other masters against its quota, and starts its jobs when they end", () => {
  const elsewhere = new Map<string, { running: number; queued: number }>();
  const told: [string, number, number][] = [];
  const { dispatcher } = setup(3, {
    shared: {
      elsewhere: (name) => elsewhere.get(name) ?? { running: 0, queued: 0 },
      changed: (name, counts) =>
        told.push([name, counts.running, counts.queued]),
    },
  });
  const worker = new FakeWorker("w", 4);
  dispatcher.addWorker(worker);
  const quota = { maxRunning: 1, maxQueued: 2 };
  const alice = { ...client("alice"), quota };
  // Another master runs one of alice's jobs: hers here waits, free slots or not.
  elsewhere.set("alice", { running: 1, queued: 1 });
  dispatcher.submit(alice, job("a1"));
  assert.deepEqual(worker.started, []);
  // One waiting here and one elsewhere fill her queue quota of 2.
  dispatcher.submit(alice, job("a2"));
  assert.equal(alice.results.at(-1)?.verdict, "rejected");
  assert.match(
    alice.results.at(-1)?.reason ?? "",
    /2 jobs waiting and 1 running/,
  );
  // A client without a quota is neither counted nor told.
  dispatcher.submit(client("bob"), job("b1"));
  assert.deepEqual(worker.started, ["b1"]);
  // The other master's job ended: hers starts on the next dispatch.
  elsewhere.delete("alice");
  dispatcher.dispatch();
  assert.deepEqual(worker.started, ["b1", "a1"]);
  // This master told the others each change of alice's counts, and only hers.
  assert.deepEqual(told, [["alice", 0, 1], ["alice", 0, 0], ["alice", 1, 0]]);
});
