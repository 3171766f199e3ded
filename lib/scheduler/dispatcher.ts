/**
 * The life of every job the master accepted, from admission to its one
 * result: placed on a worker at once when one fits, otherwise queued (fair
 * across clients) with its position and estimated wait told as the queue
 * moves (coalesced, at a bounded cost per change: `position_announcer.ts`),
 * started the moment a slot frees anywhere, placed again when its node
 * refuses or is lost (a bounded number of times), cancelled when its client
 * gives up.
 *
 * It knows workers and clients only through small interfaces, so the whole
 * lifecycle is here, apart from sockets and registration (the master's).
 *
 * Listeners run synchronously inside it (a `jobstart` listener, a client's
 * event callback) and may cancel, submit or end jobs on the spot: a job
 * knows where it is in its life, a job that ended never starts, and a
 * dispatch called from inside a dispatch runs again after it.
 *
 * It depends on nothing above it: the types it shares with the nodes and
 * the protocol live here ({@linkcode ClientQuota}) or beside it
 * (`events.ts`, `worker.ts`).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { logsAt } from "../_log_enabled.ts";
import {
  blankResult,
  type JobRequest,
  type JobResult,
  utf8Bytes,
} from "../job.ts";
import type { DispatcherEventMap, JobUpdate } from "./events.ts";
import { FairQueue } from "./fair_queue.ts";
import type { JobQueue } from "./job_queue.ts";
import { OpenWorkers } from "./_open_workers.ts";
import { canRun, chooseNode } from "./placement.ts";
import {
  DEFAULT_POSITION_INTERVAL_MS,
  MAX_POSITION_INTERVAL_MS,
  PositionAnnouncer,
} from "./position_announcer.ts";
import type { OfferedLanguage, Worker } from "./worker.ts";

const log = getLogger(["kiln", "master"]);
/** Every job logs at `info` as it moves: records built only when kept. */
const logsInfo = logsAt(log, "info");

/**
 * A walk of the queue tells the first this many positions at once; those
 * further back are sent this many per turn of the event loop. A whole walk
 * of 10,000 waiting jobs sent in one turn held the master for 10,000 sends
 * in a row, every node's next job waiting behind them. Slicing does not
 * make the sends cheaper: a whole walk still costs one send per waiting
 * job, and the garbage collector still promotes some of what they
 * allocate.
 */
const TELL_AT_ONCE = 1024;

/** How long a node that refused a job is passed over. */
const FAILING_COOLDOWN_MS = 5000;

/**
 * How long queued jobs wait for a node that runs their language, once the
 * last one left, before they end: long enough for a node that lost its link
 * (a paused master, a network blip) to reconnect and register again.
 */
export const DEFAULT_NODE_GRACE_MS = 10_000;

/** The longest {@linkcode DispatcherOptions.nodeGraceMs}: 10 minutes. */
export const MAX_NODE_GRACE_MS = 600_000;

export { DEFAULT_POSITION_INTERVAL_MS, MAX_POSITION_INTERVAL_MS };

/** How many jobs of one client run and wait now. */
export interface ClientCounts {
  /** Jobs placed on a worker and not yet ended. */
  running: number;
  /** Jobs waiting in the queue. */
  queued: number;
}

/**
 * Quotas over several masters (a cluster on NATS): what the others hold
 * of each client, and where this one says what it holds. A quota is then
 * checked against the client's jobs on every master, as the others last
 * said (within a fraction of a second).
 */
export interface SharedCounts {
  /** The client's jobs on the other masters. */
  elsewhere(client: string): Readonly<ClientCounts>;
  /** This master's counts of a client that has a quota changed (the object is reused). */
  changed(client: string, counts: Readonly<ClientCounts>): void;
}

/** The counts of a client with no job. */
const NO_JOBS: Readonly<ClientCounts> = Object.freeze({
  running: 0,
  queued: 0,
});

/**
 * How many clients with no job keep their counts at least (see
 * {@linkcode Dispatcher.#count}).
 */
const IDLE_COUNTS_KEPT = 1024;

/** What a job is cancelled with when its submitter's signal aborts. */
const ABORTED = "cancelled by the client";

/** How many jobs one client may have at once. */
export interface ClientQuota {
  /** Jobs running at once; more wait in the queue. */
  maxRunning: number;
  /** Jobs waiting at once; more are rejected with the quota named. */
  maxQueued: number;
}

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
  send(message: JobUpdate): void;
  /** Sends a job's result, cut to fit one frame. */
  sendResult(result: JobResult): void;
}

/**
 * A job from acceptance to result: `new` until it is queued or started,
 * `queued` while it waits (again after a restart), `running` while a worker
 * has it, `ended` once its one result went out (and then for good).
 */
type JobState = "new" | "queued" | "running" | "ended";

/** A job from acceptance to result. */
interface Job {
  readonly id: string;
  state: JobState;
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
  /** Last position the client was told (0: none yet), so only moves are sent. */
  position: number;
  /**
   * A position a walk of the queue found for it, still to be sent (0:
   * none): see {@linkcode TELL_AT_ONCE}.
   */
  unsent: number;
  /** Stdin sent while the job waited or ran, replayed to each attempt. */
  input: string[];
  /** Bytes of `input` so far, held to {@linkcode MAX_INPUT_BYTES}. */
  inputBytes: number;
  /** Whether the client ended stdin. */
  inputEnded: boolean;
  /** Called once the job has ended, for whoever waits on it (shutdown). */
  ended?: () => void;
  /** Stops listening to its submitter's abort signal, once it ended. */
  detach?: () => void;
}

/** Options of {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  /** Jobs that may wait; more are rejected with a retry hint. */
  readonly maxQueue: number;
  /** Times a job may start before a refusal or a lost node ends it. */
  readonly maxAttempts: number;
  /**
   * How long, in ms, queued jobs wait for a node that runs their language
   * once no live node does (the last one left, or a restarted job's node
   * was the last), before they end with `internal_error`. A node that
   * joins meanwhile takes them. 0 ends them at once; at most
   * {@linkcode MAX_NODE_GRACE_MS}.
   *
   * @default {DEFAULT_NODE_GRACE_MS}
   */
  readonly nodeGraceMs?: number | undefined;
  /**
   * The shortest time, in ms, between two updates of a waiting job's
   * position (see `position_announcer.ts`).
   *
   * @default {DEFAULT_POSITION_INTERVAL_MS}
   */
  readonly positionIntervalMs?: number | undefined;
  /** Quotas checked against every master's jobs, not only this one's. */
  readonly shared?: SharedCounts | undefined;
  /** Where the job events go (the master dispatches them as its own). */
  readonly emit: <K extends keyof DispatcherEventMap>(
    type: K,
    detail: DispatcherEventMap[K],
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
  readonly #nodeGraceMs: number;
  readonly #workers = new Map<string, Worker>();
  /** The workers that may have room: placement reads these, not every worker. */
  readonly #open = new OpenWorkers();
  /** How many live workers run each language; no key when none. */
  readonly #offering = new Map<string, number>();
  /** Every live worker's languages, made again when one joins or leaves. */
  #offers: readonly OfferedLanguage[] | undefined;
  readonly #queue: JobQueue<Job> = new FairQueue((job) => job.client.client);
  /** The queued jobs by id (the queue itself is in dispatch order). */
  readonly #queued = new Map<string, Job>();
  /** How many jobs of each language are queued; no key when none. */
  readonly #waiting = new Map<string, number>();
  /**
   * Languages with queued jobs and no live node, each with the timer that
   * ends those jobs when its grace is over.
   */
  readonly #stranded = new Map<string, ReturnType<typeof setTimeout>>();
  /** Jobs placed on a worker and not yet ended. */
  readonly #running = new Map<string, Job>();
  /**
   * How many jobs each client has running and waiting, so that a quota is
   * checked in O(1) however many jobs wait. A client whose jobs all ended
   * keeps its entry for a while: see {@linkcode Dispatcher.#count}.
   */
  readonly #counts = new Map<string, ClientCounts>();
  /** How many entries of `#counts` are at zero. */
  #idleCounts = 0;
  /** Tells waiting jobs where they stand as the queue moves. */
  readonly #positions: PositionAnnouncer<Job>;
  /**
   * How long a job holds its slot, from its start to its result as the
   * master sees them (sandbox and network included), averaged over recent
   * jobs (each new one weighs a fifth); a guess until the first ends. It
   * gives waits their estimates and the queue-full retry hint.
   */
  #averageRunMs = 1000;
  /** Slots of the live workers that run each language, counted when first asked. */
  readonly #slots = new Map<string, number>();
  #closed = false;
  /** Jobs whose position a walk found, to be sent a slice per turn. */
  #unsent: Job[] = [];
  /** How many of `#unsent` were sent. */
  #unsentSent = 0;
  /** Sends the next slice of `#unsent`; set while some wait. */
  #unsentTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The clients a dispatch's walk passes over (at their running quota);
   * one Set for every walk, emptied after it.
   */
  readonly #atQuota = new Set<string>();
  /** A dispatch is under way: one asked for meanwhile runs after it. */
  #dispatching = false;
  #dispatchAgain = false;

  /**
   * @throws {RangeError} If `nodeGraceMs` is not an integer from 0 to
   * {@linkcode MAX_NODE_GRACE_MS}, or `positionIntervalMs` not one from 1 to
   * {@linkcode MAX_POSITION_INTERVAL_MS}.
   */
  constructor(options: DispatcherOptions) {
    const { nodeGraceMs = DEFAULT_NODE_GRACE_MS } = options;
    if (
      !Number.isInteger(nodeGraceMs) || nodeGraceMs < 0 ||
      nodeGraceMs > MAX_NODE_GRACE_MS
    ) {
      throw new RangeError(
        `Cannot create dispatcher: nodeGraceMs must be an integer from 0 to ${MAX_NODE_GRACE_MS}, got ${nodeGraceMs}`,
      );
    }
    this.#options = options;
    this.#nodeGraceMs = nodeGraceMs;
    this.#positions = new PositionAnnouncer({
      queue: this.#queue,
      tell: (job, position) => this.#found(job, position),
      intervalMs: options.positionIntervalMs,
    });
  }

  /** Jobs running now, anywhere. */
  get running(): number {
    return this.#running.size;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#queued.size;
  }

  /** Every worker, the master's own slots included. */
  get workers(): Worker[] {
    return [...this.#workers.values()];
  }

  /** The worker with this id, if it is live. */
  worker(id: string): Worker | undefined {
    return this.#workers.get(id);
  }

  /**
   * Every language some live worker runs, once per worker that runs it:
   * the same array until a worker joins or leaves.
   */
  offers(): readonly OfferedLanguage[] {
    this.#offers ??= this.workers.flatMap((worker) => worker.languages);
    return this.#offers;
  }

  /**
   * Adds a worker, or replaces a live one with the same id (a secondary
   * that reconnected); returns the one it replaced. Waiting jobs that now
   * fit start at once, those that waited for its languages included.
   */
  addWorker(worker: Worker): Worker | undefined {
    const previous = this.#workers.get(worker.id);
    if (previous !== worker) {
      if (previous !== undefined) this.#forget(previous);
      this.#workers.set(worker.id, worker);
      this.#countOffers(worker, 1);
    }
    this.#open.add(worker);
    for (const { name } of worker.languages) {
      const timer = this.#stranded.get(name);
      if (timer === undefined) continue;
      clearTimeout(timer);
      this.#stranded.delete(name);
      log.info("node {node} runs {language}: its waiting jobs stay queued", {
        node: worker.name,
        language: name,
      });
    }
    this.#dispatch();
    return previous;
  }

  /**
   * Forgets a lost worker (unless another took its id meanwhile). Waiting
   * jobs whose language no live worker runs any more wait
   * {@linkcode DispatcherOptions.nodeGraceMs} for one to join, then end,
   * or they would wait forever. The worker fails its own running jobs,
   * which restart.
   */
  removeWorker(worker: Worker, reason: string): void {
    if (this.#workers.get(worker.id) === worker) {
      this.#workers.delete(worker.id);
      this.#forget(worker);
    }
    for (const language of [...this.#waiting.keys()]) {
      if (!this.#isOffered(language)) {
        this.#strand(language, `${worker.name} left: ${reason}`);
      }
    }
    this.#dispatch();
  }

  /**
   * Places a validated job, or queues it, or rejects it when the queue is
   * full. Aborting `signal` cancels it, as {@linkcode cancel} does; a
   * signal already aborted ends it at once, unstarted.
   */
  submit(
    client: JobClient,
    { id, request, language, acceptedAt, signal }: {
      id: string;
      request: JobRequest;
      language: string;
      acceptedAt: number;
      signal?: AbortSignal | undefined;
    },
  ): void {
    if (this.#closed) {
      return this.reject(client, id, "the master is shutting down");
    }
    const job: Job = {
      id,
      state: "new",
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
      unsent: 0,
      input: [],
      inputBytes: 0,
      inputEnded: false,
    };
    if (signal?.aborted) {
      return this.#finish(job, this.#failure(job, `cancelled: ${ABORTED}`));
    }
    // Waiting jobs go first; those still waiting then fit no node, so a
    // new job that fits somewhere takes no one's turn. Submitted from inside
    // a dispatch (by a listener), it queues: the dispatch runs again.
    this.#dispatch();
    const quota = client.quota;
    const counts = quota ? this.#totalOf(client.client) : NO_JOBS;
    const worker = this.#dispatching ||
        (quota && counts.running >= quota.maxRunning)
      ? undefined
      : this.#place(job);
    if (worker) {
      this.#follow(job, signal);
      this.#start(job, worker);
      return;
    }
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
    this.#follow(job, signal);
    this.#tell(job, this.#enqueue(job));
    if (logsInfo()) {
      log.info("job {jobId} from {client} queued at position {position}", {
        jobId: id,
        client: client.name,
        position: job.position,
      });
    }
    // The master admits only languages some node runs; should none run it
    // now, the job must still not wait forever.
    if (!this.#isOffered(language)) {
      this.#strand(language, "none did when the job came");
    }
  }

  /** Ends a submission that will not run, with the reason the client reads. */
  reject(
    client: JobClient,
    jobId: string,
    reason: string,
    retryAfterMs?: number,
  ): void {
    if (logsInfo()) {
      log.info("job {jobId} from {client} rejected: {reason}", {
        jobId,
        client: client.name,
        reason,
      });
    }
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
    const job = this.#running.get(jobId) ?? this.#queued.get(jobId);
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

  /** Whether a job waits in the queue (not yet placed on a worker). */
  isWaiting(jobId: string): boolean {
    return this.#queued.has(jobId);
  }

  /** Its client gave up on a job: out of the queue, or stopped where it runs. */
  cancel(client: JobClient, jobId: string, reason: string): void {
    if (!client.jobs.has(jobId)) return; // Not this client's job, or already over.
    const queued = this.#queued.get(jobId);
    if (queued) {
      this.#dequeue(queued, "removed");
      this.#finish(queued, this.#failure(queued, `cancelled: ${reason}`));
      return;
    }
    const running = this.#running.get(jobId);
    if (!running || running.cancelled !== undefined) return;
    running.cancelled = reason;
    running.worker?.cancel(jobId, reason);
  }

  /**
   * Starts every waiting job that fits somewhere now, in queue order; jobs
   * that fit nowhere keep their place. Every worker's load is read again:
   * for a load that changed without the dispatcher seeing it (the master's
   * own sample); the dispatcher dispatches by itself when a job ends, a
   * worker joins or leaves, and a job is submitted, and a heartbeat calls
   * {@linkcode loadChanged}.
   *
   * Called from inside a dispatch (a listener of a job it starts), it only
   * asks the running one to go round again, so the queue is never walked
   * by two loops at once.
   */
  dispatch(): void {
    this.#open.refreshAll();
    this.#dispatch();
  }

  /**
   * A worker's load may have dropped (its heartbeat came): it is read
   * again, and waiting jobs that now fit on it start. Cheaper than
   * {@linkcode dispatch}, which reads every worker's load.
   */
  loadChanged(worker: Worker): void {
    this.#open.refresh(worker);
    this.#dispatch();
  }

  /** A dispatch with the workers' room as last read. */
  #dispatch(): void {
    if (this.#dispatching) {
      this.#dispatchAgain = true;
      return;
    }
    this.#dispatching = true;
    try {
      do {
        this.#dispatchAgain = false;
        if (this.#closed || this.#queued.size === 0) break;
        this.#dispatchPass();
      } while (this.#dispatchAgain);
    } finally {
      this.#dispatching = false;
    }
  }

  /**
   * One walk of the queue. It runs on every job's end and submission and
   * on heartbeats, so it costs O(workers with room × waiting languages)
   * when nothing fits (nothing at all when no worker has room), and
   * O(jobs) plus O(workers with room) per job started otherwise: each
   * language's candidate nodes are found once, and a language whose job
   * fitted no candidate is passed over for the rest of the walk (nothing
   * frees a slot during it: what could, asks for another walk).
   */
  #dispatchPass(): void {
    if (this.#open.size === 0) return;
    const now = Date.now();
    // The nodes that could take a job of each waiting language now. Loads
    // are read live: a worker hands out the same load until it changes, so
    // reading costs no copy, and a start shows in the next read.
    // A language whose candidates all filled up keeps its (empty) list.
    const open = new Map<string, Worker[]>();
    let languages = 0;
    for (const language of this.#waiting.keys()) {
      const candidates = this.#open.candidates(language, now);
      if (candidates.length === 0) continue;
      open.set(language, candidates);
      languages++;
    }
    if (languages === 0) return;
    // A client at its running quota keeps its place, without a turn now;
    // the walk passes over the rest of its jobs.
    const atQuota = this.#atQuota;
    try {
      this.#walkQueue(open, languages, now);
    } finally {
      if (atQuota.size > 0) atQuota.clear();
    }
  }

  /** The walk of {@linkcode Dispatcher.#dispatchPass}, over the candidates it found. */
  #walkQueue(
    open: Map<string, Worker[]>,
    languages: number,
    now: number,
  ): void {
    const atQuota = this.#atQuota;
    for (const job of this.#queue.values(atQuota)) {
      // Listeners of the jobs started so far may have ended this one.
      if (job.state !== "queued") continue;
      const candidates = open.get(job.language);
      if (candidates === undefined || candidates.length === 0) continue;
      const quota = job.client.quota;
      if (
        quota &&
        this.#totalOf(job.client.client).running >= quota.maxRunning
      ) {
        atQuota.add(job.client.client);
        continue;
      }
      const worker = pick(candidates, job.language, now);
      if (worker === undefined) {
        candidates.length = 0;
        if (--languages === 0) break;
        continue;
      }
      // However its updates were coalesced, a job that waited hears it is
      // next before it starts. A listener may cancel it here (then it is
      // gone from the queue, and does not start), or drop its node.
      this.#tell(job, 1, 0);
      // A listener dropped the node: walk again with the nodes as they are.
      if (this.#workers.get(worker.id) !== worker) {
        this.#dispatchAgain = true;
        break;
      }
      if (!this.#dequeue(job, "served")) continue;
      this.#start(job, worker);
    }
  }

  /**
   * Ends every job: queued ones with `reason`, running ones cancelled and
   * waited for. No job starts afterwards.
   */
  async close(reason: string): Promise<void> {
    this.#closed = true;
    this.#positions.close();
    clearTimeout(this.#unsentTimer);
    this.#unsent = [];
    this.#unsentSent = 0;
    for (const timer of this.#stranded.values()) clearTimeout(timer);
    this.#stranded.clear();
    for (const job of this.#queue.values()) {
      if (!this.#dequeue(job, "removed")) continue;
      this.#finish(
        job,
        this.#failure(job, `the master shut down before the job started`),
      );
    }
    const ending = [...this.#running.values()].map((job) =>
      new Promise<void>((resolve) => {
        job.ended = resolve;
        if (job.cancelled !== undefined) return;
        job.cancelled = reason;
        job.worker?.cancel(job.id, reason);
      })
    );
    await Promise.all(ending);
  }

  /** How many jobs of one client run and wait now. */
  #countsOf(client: string): Readonly<ClientCounts> {
    return this.#counts.get(client) ?? NO_JOBS;
  }

  /** A client's jobs here and, with {@linkcode SharedCounts}, on the other masters. */
  #totalOf(client: string): Readonly<ClientCounts> {
    const here = this.#countsOf(client);
    const shared = this.#options.shared;
    if (shared === undefined) return here;
    const there = shared.elsewhere(client);
    if (there.running === 0 && there.queued === 0) return here;
    return {
      running: here.running + there.running,
      queued: here.queued + there.queued,
    };
  }

  /**
   * Adds one to, or takes one from, a client's count of jobs running or
   * waiting. A client back at zero keeps its entry, so that one cycling a
   * job at a time (submit, run, result, submit again) reuses its own and
   * does not add and delete a key of a large Map per job; entries at zero
   * are swept once there are more than {@linkcode IDLE_COUNTS_KEPT} and
   * they are most of the Map, which costs O(1) per change amortised.
   */
  #count(
    { client, quota }: JobClient,
    which: "running" | "queued",
    delta: 1 | -1,
  ): void {
    let counts = this.#counts.get(client);
    if (counts === undefined) {
      counts = { running: 0, queued: 0 };
      this.#counts.set(client, counts);
    } else if (counts.running === 0 && counts.queued === 0) {
      this.#idleCounts--;
    }
    counts[which] += delta;
    if (quota) this.#options.shared?.changed(client, counts);
    if (counts.running !== 0 || counts.queued !== 0) return;
    this.#idleCounts++;
    if (
      this.#idleCounts > IDLE_COUNTS_KEPT &&
      this.#idleCounts * 2 > this.#counts.size
    ) {
      for (const [key, each] of this.#counts) {
        if (each.running === 0 && each.queued === 0) this.#counts.delete(key);
      }
      this.#idleCounts = 0;
    }
  }

  /** Marks a job running, or no longer running, and counts it for its client. */
  #setRunning(job: Job, running: boolean): void {
    if (running) {
      this.#running.set(job.id, job);
      this.#count(job.client, "running", 1);
    } else if (this.#running.delete(job.id)) {
      this.#count(job.client, "running", -1);
    }
  }

  /** The worker a job would run on now, if any fits. */
  #place(job: Job): Worker | undefined {
    if (this.#open.size === 0) return undefined;
    const now = Date.now();
    return pick(this.#open.candidates(job.language, now), job.language, now);
  }

  /**
   * Starts a job on a worker: the one place a job begins (again). A job
   * that ended never starts; one cancelled by a listener of its own start
   * ends there, before the worker is given it.
   */
  #start(job: Job, worker: Worker): void {
    if (job.state === "ended") {
      log.error("job {jobId} ended already: it does not start on {node}", {
        jobId: job.id,
        node: worker.name,
      });
      return;
    }
    job.state = "running";
    job.attempt++;
    job.startedAt = performance.now();
    job.client.jobs.add(job.id);
    this.#setRunning(job, true);
    const deferred = worker.reportsStart === true;
    if (!deferred) this.#announceStart(job, worker.name);
    if (logsInfo()) {
      log.info("job {jobId} ({language}) placed on {node}{retry}", {
        jobId: job.id,
        language: job.language,
        node: worker.name,
        retry: job.attempt > 1 ? ` (attempt ${job.attempt})` : "",
      });
    }
    if (job.cancelled !== undefined) {
      // Cancelled by a listener of `started`: the worker never sees it.
      this.#setRunning(job, false);
      return this.#finish(
        job,
        this.#failure(job, `cancelled: ${job.cancelled}`),
      );
    }
    // Only now: a cancel or stdin before this point stays with the job.
    job.worker = worker;
    // Answers about an earlier attempt (a node that lost the job, then
    // spoke up) must not touch this one, even on the same worker.
    const attempt = job.attempt;
    const current = () => job.worker === worker && job.attempt === attempt;
    worker.start({
      id: job.id,
      request: job.request,
      language: job.language,
      client: job.client.client,
    }, {
      started: (node, nodeAttempt) => {
        if (!deferred || !current()) return;
        if (nodeAttempt > 1) {
          const reason = `the node running it (${
            job.lastNode ?? "unknown"
          }) was lost`;
          job.client.send({
            type: "restarted",
            jobId: job.id,
            reason,
            attempt: nodeAttempt,
          });
          this.#options.emit("jobrestart", {
            jobId: job.id,
            reason,
            attempt: nodeAttempt,
          });
        }
        job.startedAt = performance.now();
        this.#announceStart(job, node);
      },
      output: (stream, data) => {
        if (current()) {
          job.client.send({ type: "output", jobId: job.id, stream, data });
        }
      },
      result: (result) => {
        // The worker has a slot free again, whichever attempt this was.
        this.#open.refresh(worker);
        if (!current()) return;
        this.#averageRunMs = 0.8 * this.#averageRunMs +
          0.2 * (performance.now() - job.startedAt);
        this.#setRunning(job, false);
        // The id and node are the master's to say, not the worker's.
        this.#finish(job, {
          ...result,
          jobId: job.id,
          node: deferred ? job.lastNode ?? result.node : worker.name,
          queuedMs: Math.round(job.startedAt - job.acceptedAt),
        });
        this.#dispatch();
      },
      failed: (reason, kind) => {
        this.#open.refresh(worker);
        if (!current()) return;
        this.#setRunning(job, false);
        job.worker = undefined;
        if (kind === "refused") {
          worker.markFailing(Date.now() + FAILING_COOLDOWN_MS);
        }
        this.#restart(job, reason);
        this.#dispatch();
      },
    });
    // Full now, most likely: off the list of workers with room at once, so
    // that the next dispatch finds nothing to read.
    this.#open.refresh(worker);
    // Stdin typed before this attempt began: every attempt gets all of it.
    for (const [i, data] of job.input.entries()) {
      const last = i === job.input.length - 1;
      worker.input(job.id, data, last && job.inputEnded);
    }
  }

  /** Tells a job's client, and the listeners, that it started on `node`. */
  #announceStart(job: Job, node: string): void {
    job.lastNode = node;
    job.client.send({ type: "started", jobId: job.id, node });
    this.#options.emit("jobstart", {
      jobId: job.id,
      node,
      language: job.language,
    });
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
    const offered = this.#isOffered(job.language);
    if (!offered && this.#nodeGraceMs === 0) {
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
    // Queued before anyone hears of it, so a listener can cancel it.
    job.position = 0;
    const position = this.#enqueue(job, "front");
    job.client.send({ type: "restarted", jobId: job.id, reason, attempt });
    this.#options.emit("jobrestart", { jobId: job.id, reason, attempt });
    if (job.state !== "queued") return;
    this.#tell(job, position);
    if (!offered) this.#strand(job.language, reason);
  }

  /**
   * No live node runs `language` and jobs of it wait: they end when the
   * grace is over, unless a node that runs it joins first.
   */
  #strand(language: string, reason: string): void {
    if (this.#stranded.has(language) || !this.#waiting.has(language)) return;
    if (this.#nodeGraceMs === 0) {
      return this.#endStranded(
        language,
        `no live node runs ${language} any more (${reason})`,
      );
    }
    log.warn(
      "no live node runs {language} ({reason}): its {count} waiting jobs end unless one joins within {ms} ms",
      {
        language,
        reason,
        count: this.#waiting.get(language),
        ms: this.#nodeGraceMs,
      },
    );
    const timer = setTimeout(() => {
      this.#stranded.delete(language);
      this.#endStranded(
        language,
        `no live node runs ${language} any more (${reason}), and none joined within ${this.#nodeGraceMs} ms`,
      );
    }, this.#nodeGraceMs);
    this.#stranded.set(language, timer);
  }

  /** Ends every queued job of `language`, which no live node runs. */
  #endStranded(language: string, reason: string): void {
    for (const job of this.#queue.values()) {
      if (job.language !== language) continue;
      if (!this.#dequeue(job, "removed")) continue;
      this.#finish(job, this.#failure(job, reason));
    }
  }

  /**
   * Puts a job in the queue, at the back, or at the front after a restart;
   * returns its position, for its client to hear at once.
   */
  #enqueue(job: Job, where: "back" | "front" = "back"): number {
    const position = where === "front"
      ? this.#queue.pushFront(job)
      : this.#queue.push(job);
    job.state = "queued";
    this.#queued.set(job.id, job);
    this.#count(job.client, "queued", 1);
    this.#waiting.set(job.language, (this.#waiting.get(job.language) ?? 0) + 1);
    // Jobs behind it moved back, unless it joined at the very end.
    this.#positions.changed(position < this.#queue.length);
    return position;
  }

  /**
   * Takes a job out of the queue, `served` (it starts now: its client had
   * its turn) or `removed` (it leaves unserved); false if it was not there.
   */
  #dequeue(job: Job, how: "served" | "removed"): boolean {
    if (this.#queued.get(job.id) !== job) return false;
    if (how === "served") this.#queue.take(job);
    else this.#queue.remove(job);
    this.#queued.delete(job.id);
    this.#count(job.client, "queued", -1);
    this.#positions.changed(this.#queue.length > 0);
    const left = (this.#waiting.get(job.language) ?? 1) - 1;
    if (left > 0) {
      this.#waiting.set(job.language, left);
      return true;
    }
    this.#waiting.delete(job.language);
    // Nothing of that language waits for a node any more.
    const timer = this.#stranded.get(job.language);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.#stranded.delete(job.language);
    }
    return true;
  }

  /** Cancels the job when its submitter's signal aborts, until it ends. */
  #follow(job: Job, signal: AbortSignal | undefined): void {
    if (signal === undefined) return;
    const onAbort = () => this.cancel(job.client, job.id, ABORTED);
    signal.addEventListener("abort", onAbort, { once: true });
    job.detach = () => signal.removeEventListener("abort", onAbort);
  }

  /**
   * A walk of the queue found a job at `position`: its client hears it at
   * once near the front, within a few turns further back (in slices of
   * {@linkcode TELL_AT_ONCE}). Whatever it is told meanwhile (it starts,
   * restarts, another walk finds it elsewhere) wins over what waits.
   */
  #found(job: Job, position: number): void {
    if (position <= TELL_AT_ONCE) return this.#tell(job, position);
    if (job.state !== "queued") return;
    if (job.unsent === 0) this.#unsent.push(job);
    job.unsent = position;
    this.#unsentTimer ??= setTimeout(() => this.#sendUnsent(), 0);
  }

  /** Sends a slice of the positions walks found, and sets a turn for the rest. */
  #sendUnsent(): void {
    this.#unsentTimer = undefined;
    const unsent = this.#unsent;
    const end = Math.min(this.#unsentSent + TELL_AT_ONCE, unsent.length);
    while (this.#unsentSent < end) {
      const job = unsent[this.#unsentSent++]!;
      // 0: told since, which was newer.
      if (job.unsent !== 0) this.#tell(job, job.unsent);
    }
    if (this.#unsentSent < unsent.length) {
      this.#unsentTimer = setTimeout(() => this.#sendUnsent(), 0);
    } else {
      this.#unsent = [];
      this.#unsentSent = 0;
    }
  }

  /**
   * Tells a waiting job's client where it stands, and how long it may
   * wait, unless it heard that position last: the one place a position is
   * sent.
   */
  #tell(job: Job, position: number, estimatedWaitMs?: number): void {
    job.unsent = 0;
    if (job.state !== "queued" || job.position === position) return;
    job.position = position;
    const update = {
      jobId: job.id,
      position,
      estimatedWaitMs: estimatedWaitMs ??
        this.#estimateWaitMs(position, this.#slotsFor(job.language)),
    };
    job.client.send({ type: "queued", ...update });
    this.#options.emit("jobqueued", update);
  }

  /**
   * The one place a job ends: its client gets the result, listeners the
   * event. Once: a second ending is a bug, logged and dropped.
   */
  #finish(job: Job, ended: JobResult): void {
    if (job.state === "ended") {
      log.error("job {jobId} ended already: a second result is dropped", {
        jobId: job.id,
      });
      return;
    }
    job.state = "ended";
    job.detach?.();
    const result = { ...ended, client: job.client.client };
    job.client.jobs.delete(job.id);
    job.client.sendResult(result);
    if (logsInfo()) {
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
    }
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
    return this.#offering.has(language);
  }

  /** Forgets a worker that left or was replaced: its room and its offers. */
  #forget(worker: Worker): void {
    this.#open.delete(worker);
    this.#countOffers(worker, -1);
  }

  /** Counts a worker's languages in, or out, of what the cluster offers. */
  #countOffers(worker: Worker, delta: 1 | -1): void {
    this.#slots.clear();
    this.#offers = undefined;
    // A worker's languages are distinct; counted once each all the same.
    for (const name of new Set(worker.languages.map((offer) => offer.name))) {
      const count = (this.#offering.get(name) ?? 0) + delta;
      if (count > 0) this.#offering.set(name, count);
      else this.#offering.delete(name);
    }
  }

  /** A guess of when a slot frees up for a rejected client: the wait at the back of the queue, from 1 s to 1 min. */
  #retryAfterMs(): number {
    let slots = 0;
    for (const worker of this.#workers.values()) slots += worker.load().slots;
    const estimate = this.#estimateWaitMs(this.#queue.length, slots);
    return Math.min(60_000, Math.max(1000, estimate));
  }

  /**
   * How long the job at `position` may wait, in ms: slots free up, on
   * average, `slots` per {@linkcode Dispatcher.#averageRunMs}, and it
   * starts when `position` have. No slot at all counts as one.
   */
  #estimateWaitMs(position: number, slots: number): number {
    return Math.round(position * this.#averageRunMs / Math.max(1, slots));
  }

  /** How many slots the live workers that run `language` have in all. */
  #slotsFor(language: string): number {
    let slots = this.#slots.get(language);
    if (slots === undefined) {
      slots = 0;
      for (const worker of this.#workers.values()) {
        if (worker.languages.some((offer) => offer.name === language)) {
          slots += worker.load().slots;
        }
      }
      this.#slots.set(language, slots);
    }
    return slots;
  }
}

/**
 * The best of a language's candidate nodes for one more job, by
 * {@linkcode chooseNode}; candidates that filled up are dropped from the
 * list on the way, so it only shrinks as the walk places jobs.
 */
function pick(
  candidates: Worker[],
  language: string,
  now: number,
): Worker | undefined {
  let kept = 0;
  for (const worker of candidates) {
    if (canRun(worker.load(), language, now)) candidates[kept++] = worker;
  }
  candidates.length = kept;
  if (kept === 0) return undefined;
  if (kept === 1) return candidates[0];
  const nodes = candidates.map((worker) => worker.load());
  const chosen = chooseNode(nodes, language, { now });
  return chosen && candidates[nodes.indexOf(chosen)];
}
