/**
 * The life of every job the master accepted, from admission to its one
 * result: placed on a worker at once when one fits, otherwise queued (fair
 * across clients) with its position told as the queue moves, started the
 * moment a slot frees anywhere, placed again when its node refuses or is
 * lost (a bounded number of times), cancelled when its client gives up.
 *
 * It knows workers and clients only through small interfaces, so the whole
 * lifecycle is here, apart from sockets and registration (the master's).
 *
 * @module
 */
import type { ClientQuota } from "../security/credentials.ts";
import { getLogger } from "@logtape/logtape";
import {
  blankResult,
  type JobRequest,
  type JobResult,
  utf8Bytes,
} from "../job.ts";
import type { Message, OfferedLanguage } from "../protocol/messages.ts";
import type { MasterNodeEventMap } from "../nodes/events.ts";
import { FairQueue } from "./fair_queue.ts";
import type { JobQueue } from "./job_queue.ts";
import { chooseNode } from "./placement.ts";
import type { Worker } from "./worker.ts";

const log = getLogger(["kiln", "master"]);

/** How long a node that refused a job is passed over. */
const FAILING_COOLDOWN_MS = 5000;

/** Most stdin one interactive job may be sent while it runs, in UTF-8 bytes. */
export const MAX_INPUT_BYTES = 1024 * 1024;

/** Who submitted a job: where its events go, and which jobs die with it. */
export interface JobClient {
  /** Display name for logs. */
  readonly name: string;
  /** Identity for fair queueing: several connections of one client share it. */
  readonly client: string;
  /** How many jobs the client may have running and waiting; none means no quota. */
  readonly quota?: Readonly<ClientQuota> | undefined;
  /** Ids of this client's jobs that have not ended yet. */
  readonly jobs: Set<string>;
  /** Sends a job event; a client that went away simply misses it. */
  send(message: Message): void;
  /** Sends a job's result, cut to fit one frame. */
  sendResult(result: JobResult): void;
}

/** A job from acceptance to result. */
interface Job {
  readonly id: string;
  readonly request: JobRequest;
  /** Canonical language name. */
  readonly language: string;
  readonly client: JobClient;
  readonly acceptedAt: number;
  /** How many times it was started; restarts add one. */
  attempt: number;
  /** Where it runs now, if it runs. */
  worker: Worker | undefined;
  /** The name of the last node it ran on, for a result that ends it elsewhere. */
  lastNode: string | undefined;
  /** When it last started running (for queuedMs). */
  startedAt: number;
  /** Set once its client gave up: it must end, not restart. */
  cancelled: string | undefined;
  /** Last position the client was told, so only moves are sent. */
  position: number;
  /** Stdin sent while the job waited or ran, replayed to each attempt. */
  input: string[];
  /** Bytes of `input` so far, held to {@linkcode MAX_INPUT_BYTES}. */
  inputBytes: number;
  /** Whether the client ended stdin. */
  inputEnded: boolean;
  /** Called once the job has ended, for whoever waits on it (shutdown). */
  ended?: () => void;
}

/** Options of {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  /** Jobs that may wait; more are rejected with a retry hint. */
  readonly maxQueue: number;
  /** Times a job may start before a refusal or a lost node ends it. */
  readonly maxAttempts: number;
  /** Where the job events go (the master dispatches them as its own). */
  readonly emit: <K extends keyof MasterNodeEventMap>(
    type: K,
    detail: MasterNodeEventMap[K]["detail"],
  ) => void;
}

/**
 * Places, queues, restarts and ends jobs over a set of workers.
 *
 * @example A job on the only worker
 * ```ts ignore
 * const dispatcher = new Dispatcher({ maxQueue: 100, maxAttempts: 3, emit });
 * dispatcher.addWorker(worker);
 * dispatcher.submit(client, { id, request, language: "python", acceptedAt: performance.now() });
 * ```
 */
export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #workers = new Map<string, Worker>();
  readonly #queue: JobQueue<Job> = new FairQueue((job) => job.client.client);
  /** Jobs placed on a worker and not yet ended. */
  readonly #running = new Map<string, Job>();
  /** Average run time of recent jobs, for the queue-full retry hint. */
  #averageJobMs = 1000;
  #closed = false;

  constructor(options: DispatcherOptions) {
    this.#options = options;
  }

  /** Jobs running now, anywhere. */
  get running(): number {
    return this.#running.size;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Every worker, the master's own slots included. */
  get workers(): Worker[] {
    return [...this.#workers.values()];
  }

  /** The worker with this id, if it is live. */
  worker(id: string): Worker | undefined {
    return this.#workers.get(id);
  }

  /** Every language some live worker runs. */
  offers(): OfferedLanguage[] {
    return this.workers.flatMap((worker) => worker.languages);
  }

  /**
   * Adds a worker, or replaces a live one with the same id (a secondary
   * that reconnected); returns the one it replaced. Waiting jobs that now
   * fit start at once.
   */
  addWorker(worker: Worker): Worker | undefined {
    const previous = this.#workers.get(worker.id);
    this.#workers.set(worker.id, worker);
    this.dispatch();
    return previous;
  }

  /**
   * Forgets a lost worker (unless another took its id meanwhile). Waiting
   * jobs whose language no live worker runs any more end, or they would
   * wait forever. The worker fails its own running jobs, which restart.
   */
  removeWorker(worker: Worker, reason: string): void {
    if (this.#workers.get(worker.id) === worker) {
      this.#workers.delete(worker.id);
    }
    for (const [, job] of [...this.#queue.entries()]) {
      if (this.#isOffered(job.language)) continue;
      this.#queue.remove(job);
      this.#finish(
        job,
        this.#failure(
          job,
          `no live node runs ${job.language} any more (${worker.name} left: ${reason})`,
        ),
      );
    }
    this.#announcePositions();
    this.dispatch();
  }

  /** Places a validated job, or queues it, or rejects it when the queue is full. */
  submit(
    client: JobClient,
    { id, request, language, acceptedAt }: {
      id: string;
      request: JobRequest;
      language: string;
      acceptedAt: number;
    },
  ): void {
    if (this.#closed) {
      return this.reject(client, id, "the master is shutting down");
    }
    const job: Job = {
      id,
      request,
      language,
      client,
      acceptedAt,
      attempt: 0,
      worker: undefined,
      lastNode: undefined,
      startedAt: 0,
      cancelled: undefined,
      position: 0,
      input: [],
      inputBytes: 0,
      inputEnded: false,
    };
    // Waiting jobs go first; those still waiting then fit no node, so a
    // new job that fits somewhere takes no one's turn.
    this.dispatch();
    const quota = client.quota;
    const counts = this.#countsOf(client.client);
    const worker = quota && counts.running >= quota.maxRunning
      ? undefined
      : this.#place(job);
    if (worker) return this.#start(job, worker);
    if (quota && counts.queued >= quota.maxQueued) {
      return this.reject(
        client,
        id,
        `client "${client.client}" is over its quota: ${counts.queued} jobs waiting and ${counts.running} running, the most it may have waiting is ${quota.maxQueued} (maxQueued)`,
      );
    }
    if (this.#queue.length >= this.#options.maxQueue) {
      const retryAfterMs = this.#retryAfterMs();
      return this.reject(
        client,
        id,
        `the queue is full (${this.#queue.length} jobs waiting); retry in ${
          Math.ceil(retryAfterMs / 1000)
        } s`,
        retryAfterMs,
      );
    }
    client.jobs.add(id);
    this.#queue.push(job);
    this.#announcePositions();
    log.info("job {jobId} from {client} queued at position {position}", {
      jobId: id,
      client: client.name,
      position: job.position,
    });
  }

  /** Ends a submission that will not run, with the reason the client reads. */
  reject(
    client: JobClient,
    jobId: string,
    reason: string,
    retryAfterMs?: number,
  ): void {
    log.info("job {jobId} from {client} rejected: {reason}", {
      jobId,
      client: client.name,
      reason,
    });
    const result = blankResult(jobId, {
      verdict: "rejected",
      reason,
      client: client.client,
      ...retryAfterMs === undefined ? {} : { retryAfterMs },
    });
    client.sendResult(result);
    this.#options.emit("jobcomplete", result);
  }

  /**
   * Stdin its client typed for an interactive job: kept for a restart, and
   * passed on to the worker when the job runs. More than
   * {@linkcode MAX_INPUT_BYTES} ends stdin there (the program sees EOF).
   */
  input(client: JobClient, jobId: string, data: string, eof: boolean): void {
    if (!client.jobs.has(jobId)) return; // Not this client's job, or already over.
    const job = this.#running.get(jobId) ?? this.#findQueued(jobId);
    if (!job || job.inputEnded || !job.request.interactive) return;
    // Empty chunks carry nothing but would pile up in the replay log.
    if (data === "" && !eof) return;
    const bytes = utf8Bytes(data);
    if (job.inputBytes + bytes > MAX_INPUT_BYTES) {
      log.warn("job {jobId}: stdin over {max} bytes, ended there", {
        jobId,
        max: MAX_INPUT_BYTES,
      });
      data = "";
      eof = true;
    }
    job.input.push(data);
    job.inputBytes += utf8Bytes(data);
    job.inputEnded = eof;
    if (this.#running.has(jobId)) job.worker?.input(jobId, data, eof);
  }

  /** Its client gave up on a job: out of the queue, or stopped where it runs. */
  cancel(client: JobClient, jobId: string, reason: string): void {
    if (!client.jobs.has(jobId)) return; // Not this client's job, or already over.
    const queued = this.#findQueued(jobId);
    if (queued) {
      this.#queue.remove(queued);
      this.#finish(queued, this.#failure(queued, `cancelled: ${reason}`));
      this.#announcePositions();
      return;
    }
    const running = this.#running.get(jobId);
    if (!running) return;
    running.cancelled = reason;
    running.worker?.cancel(jobId, reason);
  }

  /**
   * Starts every waiting job that fits somewhere now, in queue order; jobs
   * that fit nowhere keep their place. Called on every event that can free
   * a slot or lower a load: a job ending, a node joining, a heartbeat.
   */
  dispatch(): void {
    if (this.#closed || this.#queue.length === 0) return;
    // Heartbeats call this every second from every node: skip the scan
    // when no node has a free slot at all.
    const free = this.workers.some((worker) => {
      const load = worker.load();
      return load.assigned < load.slots;
    });
    if (!free) return;
    let started = false;
    // A client at its running quota keeps its place, without a turn now.
    const running = new Map<string, number>();
    for (const job of this.#running.values()) {
      running.set(job.client.client, (running.get(job.client.client) ?? 0) + 1);
    }
    for (const [, job] of [...this.#queue.entries()]) {
      const quota = job.client.quota;
      const count = running.get(job.client.client) ?? 0;
      if (quota && count >= quota.maxRunning) continue;
      const worker = this.#place(job);
      if (!worker) continue;
      this.#queue.take(job);
      this.#start(job, worker);
      running.set(job.client.client, count + 1);
      started = true;
    }
    if (started) this.#announcePositions();
  }

  /**
   * Ends every job: queued ones with `reason`, running ones cancelled and
   * waited for. No job starts afterwards.
   */
  async close(reason: string): Promise<void> {
    this.#closed = true;
    for (const [, job] of [...this.#queue.entries()]) {
      this.#queue.remove(job);
      this.#finish(
        job,
        this.#failure(job, `the master shut down before the job started`),
      );
    }
    const ending = [...this.#running.values()].map((job) =>
      new Promise<void>((resolve) => {
        job.ended = resolve;
        job.cancelled = reason;
        job.worker?.cancel(job.id, reason);
      })
    );
    await Promise.all(ending);
  }

  /** How many jobs of one client run and wait now. */
  #countsOf(client: string): { running: number; queued: number } {
    let running = 0;
    for (const job of this.#running.values()) {
      if (job.client.client === client) running++;
    }
    let queued = 0;
    for (const [, job] of this.#queue.entries()) {
      if (job.client.client === client) queued++;
    }
    return { running, queued };
  }

  /** The worker a job would run on now, if any fits. */
  #place(job: Job): Worker | undefined {
    const chosen = chooseNode(
      this.workers.map((worker) => worker.load()),
      job.language,
    );
    return chosen && this.#workers.get(chosen.id);
  }

  /** Starts a job on a worker: the one place a job begins (again). */
  #start(job: Job, worker: Worker): void {
    job.attempt++;
    job.worker = worker;
    job.lastNode = worker.name;
    job.startedAt = performance.now();
    job.client.jobs.add(job.id);
    this.#running.set(job.id, job);
    job.client.send({ type: "started", jobId: job.id, node: worker.name });
    this.#options.emit("jobstart", {
      jobId: job.id,
      node: worker.name,
      language: job.language,
    });
    log.info("job {jobId} ({language}) placed on {node}{retry}", {
      jobId: job.id,
      language: job.language,
      node: worker.name,
      retry: job.attempt > 1 ? ` (attempt ${job.attempt})` : "",
    });
    // Answers about an earlier attempt (a node that lost the job, then
    // spoke up) must not touch this one, even on the same worker.
    const attempt = job.attempt;
    const current = () => job.worker === worker && job.attempt === attempt;
    worker.start({ id: job.id, request: job.request, language: job.language }, {
      output: (stream, data) => {
        if (current()) {
          job.client.send({ type: "output", jobId: job.id, stream, data });
        }
      },
      result: (result) => {
        if (!current()) return;
        this.#averageJobMs = 0.8 * this.#averageJobMs +
          0.2 * (result.timeMs + (result.compile?.timeMs ?? 0));
        this.#running.delete(job.id);
        // The id and node are the master's to say, not the worker's.
        this.#finish(job, {
          ...result,
          jobId: job.id,
          node: worker.name,
          queuedMs: Math.round(job.startedAt - job.acceptedAt),
        });
        this.dispatch();
      },
      failed: (reason, kind) => {
        if (!current()) return;
        this.#running.delete(job.id);
        job.worker = undefined;
        if (kind === "refused") {
          worker.markFailing(Date.now() + FAILING_COOLDOWN_MS);
        }
        this.#restart(job, reason);
        this.dispatch();
      },
    });
    // Stdin typed before this attempt began: every attempt gets all of it.
    for (const [i, data] of job.input.entries()) {
      const last = i === job.input.length - 1;
      worker.input(job.id, data, last && job.inputEnded);
    }
  }

  /** A job's node refused or lost it: start it again elsewhere, or end it. */
  #restart(job: Job, reason: string): void {
    if (job.cancelled !== undefined) {
      return this.#finish(
        job,
        this.#failure(job, `cancelled: ${job.cancelled}`),
      );
    }
    if (job.attempt >= this.#options.maxAttempts) {
      return this.#finish(
        job,
        this.#failure(job, `${reason} (gave up after ${job.attempt} attempts)`),
      );
    }
    if (!this.#isOffered(job.language)) {
      return this.#finish(
        job,
        this.#failure(
          job,
          `${reason}; no live node runs ${job.language} any more`,
        ),
      );
    }
    const attempt = job.attempt + 1;
    log.warn("job {jobId} re-placed: {reason} (attempt {attempt})", {
      jobId: job.id,
      reason,
      attempt,
    });
    job.client.send({ type: "restarted", jobId: job.id, reason, attempt });
    this.#options.emit("jobrestart", { jobId: job.id, reason, attempt });
    job.position = 0;
    this.#queue.pushFront(job);
    this.#announcePositions();
  }

  /** Tells every waiting client whose position changed where it stands now. */
  #announcePositions(): void {
    for (const [position, job] of this.#queue.entries()) {
      if (job.position === position) continue;
      job.position = position;
      job.client.send({ type: "queued", jobId: job.id, position });
      this.#options.emit("jobqueued", { jobId: job.id, position });
    }
  }

  #findQueued(jobId: string): Job | undefined {
    for (const [, job] of this.#queue.entries()) {
      if (job.id === jobId) return job;
    }
    return undefined;
  }

  /** The one place a job ends: its client gets the result, listeners the event. */
  #finish(job: Job, ended: JobResult): void {
    const result = { ...ended, client: job.client.client };
    job.client.jobs.delete(job.id);
    job.client.sendResult(result);
    log.info(
      "job {jobId} ({language}) finished on {node}: {verdict} in {timeMs} ms",
      {
        jobId: job.id,
        language: job.language,
        node: result.node ?? "-",
        verdict: result.verdict,
        timeMs: result.timeMs,
      },
    );
    this.#options.emit("jobcomplete", result);
    job.ended?.();
  }

  /** A result for a job that never ran to its end, because of `reason`. */
  #failure(job: Job, reason: string): JobResult {
    return blankResult(job.id, {
      language: job.language,
      node: job.lastNode ?? null,
      reason,
      queuedMs: Math.round(performance.now() - job.acceptedAt),
    });
  }

  #isOffered(language: string): boolean {
    return this.offers().some((offer) => offer.name === language);
  }

  /** A guess of when a slot frees up for a rejected client: queue length times average job time over slots. */
  #retryAfterMs(): number {
    const slots = this.workers.reduce(
      (sum, worker) => sum + worker.load().slots,
      0,
    );
    const estimate = (this.#queue.length * this.#averageJobMs) /
      Math.max(1, slots);
    return Math.round(Math.min(60_000, Math.max(1000, estimate)));
  }
}
