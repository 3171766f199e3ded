/**
 * What one `dispatch()` costs the master's event loop, which runs it on
 * every heartbeat, sampler tick, job end and submit: 1,000 Java jobs from
 * 10 clients wait for their one Java node, which is full, while 200 Python
 * nodes sit idle. Its floor, in the same run, is reading every node's load
 * once: the least a placement decision over these nodes can do.
 *
 * @module
 */
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
