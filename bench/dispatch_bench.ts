/**
 * What one `dispatch()` costs the master's event loop, which runs it on
 * every heartbeat, sampler tick, job end and submit: 1,000 Java jobs from
 * 10 clients wait for their one Java node, which is full, while 200 Python
 * nodes sit idle. Its floor, in the same run, is reading every node's load
 * once: the least a placement decision over these nodes can do.
 *
 * And what one dequeue costs as the queue grows ({@linkcode benchDequeue}):
 * with 10, 1,000 and 10,000 clients waiting, one job each, a slot frees,
 * the next job starts and a new client's job joins the back, over and over,
 * with the master's position updates included at their real pace.
 *
 * @module
 */
import { blankResult } from "../lib/job.ts";
import { Dispatcher, type JobClient } from "../lib/scheduler/dispatcher.ts";
import type { NodeLoad } from "../lib/scheduler/placement.ts";
import type {
  NodeStatus,
  OfferedLanguage,
  Worker,
  WorkerJobEvents,
} from "../lib/scheduler/worker.ts";
import { type BenchSection, percentile } from "./_stats.ts";

const QUEUED = 1000;
const CLIENTS = 10;
const IDLE_NODES = 200;
const ROUNDS = 200;
/** Calls per sample: one call takes microseconds. */
const BATCH = 50;

/** A node as placement sees it, its load built afresh on each read as a secondary's is. */
class BenchWorker implements Worker {
  readonly address = "bench";
  readonly languages: OfferedLanguage[];
  readonly #jobs = new Set<string>();
  constructor(readonly id: string, language: string) {
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
    return {
      id: this.id,
      name: this.id,
      local: false,
      languages: new Set(this.languages.map((language) => language.name)),
      slots: 1,
      assigned: this.#jobs.size,
      cpuPercent: 10,
      ramPercent: 10,
      maxCpu: 100,
      maxRam: 100,
      draining: false,
      failingUntil: 0,
    };
  }
  start(job: { id: string }, _events: WorkerJobEvents): void {
    this.#jobs.add(job.id);
  }
  cancel(): void {}
  input(): void {}
  markFailing(): void {}
  status(): NodeStatus {
    throw new Error("not used");
  }
}

/** The scenario's dispatcher and nodes, with every Java job in place. */
export function dispatchScenario(
  Impl: new (
    options: ConstructorParameters<typeof Dispatcher>[0],
  ) => Pick<Dispatcher, "addWorker" | "submit" | "dispatch" | "queued">,
): { dispatch: () => void; floor: () => void } {
  const dispatcher = new Impl({
    maxQueue: 2 * QUEUED,
    maxAttempts: 3,
    emit() {},
  });
  const workers: Worker[] = [new BenchWorker("java", "java")];
  for (let i = 0; i < IDLE_NODES; i++) {
    workers.push(new BenchWorker(`python-${i}`, "python"));
  }
  for (const worker of workers) dispatcher.addWorker(worker);
  const clients: JobClient[] = Array.from({ length: CLIENTS }, (_, i) => ({
    name: `client-${i}`,
    client: `client-${i}`,
    jobs: new Set<string>(),
    send() {},
    sendResult() {},
  }));
  // One more than QUEUED: the first takes the Java node's only slot.
  for (let i = 0; i <= QUEUED; i++) {
    dispatcher.submit(clients[i % CLIENTS]!, {
      id: `job-${i}`,
      request: {
        language: "java",
        files: [{ name: "Main.java", content: "" }],
      },
      language: "java",
      acceptedAt: performance.now(),
    });
  }
  if (dispatcher.queued !== QUEUED) {
    throw new Error(`expected ${QUEUED} queued jobs, got ${dispatcher.queued}`);
  }
  let sink = 0;
  return {
    dispatch: () => dispatcher.dispatch(),
    floor: () => {
      for (const worker of workers) sink += worker.load().slots;
      if (sink < 0) throw new Error("unreachable");
    },
  };
}

/**
 * Milliseconds per call of `run`, one sample per round after a warm-up;
 * each sample times `batch` calls, so that a call far shorter than the
 * clock's resolution still measures.
 */
export function timePerCall(
  run: () => void,
  { rounds = ROUNDS, batch = 1 } = {},
): number[] {
  for (let i = 0; i < 20; i++) run();
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const started = performance.now();
    for (let j = 0; j < batch; j++) run();
    samples.push((performance.now() - started) / batch);
  }
  return samples;
}

/** Runs the dispatch benchmark and returns its section. */
export function benchDispatch(): Promise<BenchSection> {
  const scenario = dispatchScenario(Dispatcher);
  const rows = [
    ["dispatch()", timePerCall(scenario.dispatch, { batch: BATCH })],
    [
      "floor: every node's load read once",
      timePerCall(scenario.floor, { batch: BATCH }),
    ],
  ] as const;
  return Promise.resolve({
    title: "Dispatch",
    markdown: [
      `One \`dispatch()\` with ${QUEUED} Java jobs from ${CLIENTS} clients waiting for their one Java node (full)`,
      `and ${IDLE_NODES} idle Python nodes, ${ROUNDS} samples of ${BATCH} calls; the floor reads every node's load once.`,
      "Both measured in this one invocation, in process, without sockets.",
      "",
      "| what | p50 ms | p95 ms |",
      "| --- | ---: | ---: |",
      ...rows.map(([label, samples]) =>
        `| ${label} | ${percentile(samples, 50).toFixed(3)} | ${
          percentile(samples, 95).toFixed(3)
        } |`
      ),
      "",
    ].join("\n"),
  });
}

/** Queue lengths the dequeue bench holds, one waiting job per client. */
const WAITING = [10, 1_000, 10_000];
/** Samples per queue length, and the least wall time of one sample. */
const DEQUEUE_SAMPLES = 15;
const DEQUEUE_SAMPLE_MS = 300;
/** Dequeues between two yields to the event loop, where updates go out. */
const DEQUEUES_PER_YIELD = 100;

/** One slot whose job ends when the bench says. */
class SlotWorker extends BenchWorker {
  #running: [string, WorkerJobEvents] | undefined;
  override start(job: { id: string }, events: WorkerJobEvents): void {
    this.#running = [job.id, events];
  }
  override load(): NodeLoad {
    return { ...super.load(), assigned: this.#running ? 1 : 0 };
  }
  override cancel(): void {
    this.finish();
  }
  /** Ends the running job; the dispatcher starts the next at once. */
  finish(): void {
    const [id, events] = this.#running!;
    this.#running = undefined;
    events.result(blankResult(id, { verdict: "ok" }));
  }
}

/**
 * Per dequeue with `waiting` jobs queued: the time, and the queued updates
 * sent. Each sample runs for at least {@linkcode DEQUEUE_SAMPLE_MS}, so that
 * it holds the master's position updates (due every 250 ms) as they come.
 */
async function measureDequeue(
  waiting: number,
): Promise<{ microseconds: number[]; updates: number }> {
  let updates = 0;
  let jobs = 0;
  const submit = (dispatcher: Dispatcher) => {
    const id = `job-${jobs++}`;
    const client: JobClient = {
      name: id,
      client: id,
      jobs: new Set<string>(),
      send: (message) => message.type === "queued" && updates++,
      sendResult() {},
    };
    dispatcher.submit(client, {
      id,
      request: { language: "bash", files: [{ name: "a.sh", content: "" }] },
      language: "bash",
      acceptedAt: performance.now(),
    });
  };
  const dispatcher = new Dispatcher({
    maxQueue: waiting,
    maxAttempts: 1,
    emit() {},
  });
  const worker = new SlotWorker("slot", "bash");
  dispatcher.addWorker(worker);
  for (let i = 0; i <= waiting; i++) submit(dispatcher);
  const cycle = () => {
    worker.finish();
    submit(dispatcher);
  };
  const microseconds: number[] = [];
  updates = 0;
  let dequeues = 0;
  for (let sample = -2; sample < DEQUEUE_SAMPLES; sample++) {
    const started = performance.now();
    let count = 0;
    while (performance.now() - started < DEQUEUE_SAMPLE_MS) {
      for (let i = 0; i < DEQUEUES_PER_YIELD; i++) cycle();
      count += DEQUEUES_PER_YIELD;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    // The first two samples warm up.
    if (sample < 0) {
      updates = 0;
      continue;
    }
    microseconds.push((performance.now() - started) * 1000 / count);
    dequeues += count;
  }
  if (dispatcher.queued !== waiting) {
    throw new Error(`expected ${waiting} waiting, got ${dispatcher.queued}`);
  }
  await dispatcher.close("bench over");
  return { microseconds, updates: updates / dequeues };
}

/** Runs the dequeue benchmark and returns its section. */
export async function benchDequeue(): Promise<BenchSection> {
  const rows: string[] = [];
  for (const waiting of WAITING) {
    const { microseconds, updates } = await measureDequeue(waiting);
    rows.push(
      `| ${waiting.toLocaleString("en-US")} | ${
        percentile(microseconds, 50).toFixed(1)
      } | ${percentile(microseconds, 95).toFixed(1)} | ${updates.toFixed(2)} |`,
    );
  }
  return {
    title: "Dequeue cost",
    markdown: [
      `One dequeue with N clients waiting, one job each, on one slot: the job running ends, the next starts, a new`,
      `client's job joins the back (so N stay waiting), ${DEQUEUES_PER_YIELD} at a time between yields to the event loop,`,
      `where the position updates go out at their real pace. ${DEQUEUE_SAMPLES} samples of at least ${DEQUEUE_SAMPLE_MS} ms each, in process,`,
      "without sockets (a client's `send` counts its updates).",
      "",
      "| waiting | p50 µs per dequeue | p95 µs | `queued` updates per dequeue |",
      "| ---: | ---: | ---: | ---: |",
      ...rows,
      "",
    ].join("\n"),
  };
}
