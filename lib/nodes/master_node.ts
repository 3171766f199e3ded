/**
 * The master: accepts clients and secondaries over TCP, places every job on
 * its own slots while it is within its limits, otherwise on the least-loaded
 * secondary that runs the language, otherwise queues it (fair across
 * clients) and tells each waiting client its position as the queue moves. A
 * freed slot anywhere starts the next job that fits at once.
 *
 * Every submission ends with exactly one `result` message and one
 * `jobcomplete` event, whatever happens: a lost node's jobs start again
 * elsewhere (a bounded number of times), a disconnected client's jobs are
 * cancelled wherever they run.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { DEFAULT_PORT, formatHostPort } from "../address.ts";
import {
  blankResult,
  type JobRequest,
  type JobResult,
  type LimitOverrides,
} from "../job.ts";
import {
  type ResourceSample,
  type ResourceSampler,
  sampleResources,
} from "../monitor/resource_sampler.ts";
import { Connection } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  serverHandshake,
} from "../protocol/handshake.ts";
import type { ClusterStatus, MessageOf } from "../protocol/messages.ts";
import {
  createDefaultRegistry,
  type RunnerRegistry,
} from "../runners/registry.ts";
import { FairQueue } from "../scheduler/fair_queue.ts";
import type { JobQueue } from "../scheduler/job_queue.ts";
import { chooseNode } from "../scheduler/placement.ts";
import { abortableDelay } from "./_timing.ts";
import { parseJob } from "./admission.ts";
import { ClientSession } from "./client_session.ts";
import { resolveOffered } from "./cluster_languages.ts";
import type { MasterNodeEventMap } from "./events.ts";
import { LOCAL_WORKER_ID, LocalWorker } from "./local_worker.ts";
import { RemoteWorker } from "./remote_worker.ts";
import type { Worker } from "./worker.ts";

import { TypedEventTarget } from "./typed_event_target.ts";

const log = getLogger(["kiln", "master"]);

/** Largest frame accepted before the handshake completes. */
const HANDSHAKE_MAX_FRAME_BYTES = 16 * 1024;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;
/** How long a node that refused a job is passed over. */
const FAILING_COOLDOWN_MS = 5000;

/** Options of {@linkcode MasterNode}. */
export interface MasterNodeOptions {
  /** Address to listen on. @default "127.0.0.1" */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (see {@linkcode MasterNode.addr}). @default 7700 */
  port?: number;
  /** Name reported as the `node` of jobs run here. @default "master" */
  name?: string;
  /** Jobs run at once on the master itself; 0 makes it a pure coordinator. @default the number of CPUs */
  slots?: number;
  /** Above this CPU % the master runs no new job itself. @default 100 */
  maxCpu?: number;
  /** Above this RAM % the master runs no new job itself. @default 95 */
  maxRam?: number;
  /** Shared token clients and secondaries authenticate with; empty means an open cluster. @default "" */
  token?: string;
  /** Languages the master runs itself, and the names and aliases it knows. @default {@linkcode createDefaultRegistry}() */
  registry?: RunnerRegistry;
  /** The maximum limits per job on the master's own slots; requests may lower them. */
  limits?: LimitOverrides;
  /** Largest frame accepted from an authenticated peer, in bytes. @default 8 MiB */
  maxFrameBytes?: number;
  /** Time a new connection has to complete the handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Jobs that may wait for a slot; more are rejected with a retry hint. @default 1000 */
  maxQueue?: number;
  /** How often secondaries report their load, in ms. @default 1000 */
  heartbeatIntervalMs?: number;
  /** A secondary silent for this long is lost, in ms. @default 5000 */
  nodeTimeoutMs?: number;
  /** Times a job may start before a lost node makes it fail for good. @default 3 */
  maxAttempts?: number;
  /** Interval of the resource log line, in ms; 0 turns it off. @default 10000 */
  resourceLogIntervalMs?: number;
  /** Where the master's own load comes from. @default {@linkcode sampleResources} */
  sampleResources?: ResourceSampler;
  /** Directory for job workdirs. @default the system temp dir */
  workRoot?: string;
  /** Aborting it shuts the node down, like {@linkcode MasterNode.shutdown}. */
  signal?: AbortSignal;
}

/** A job the master knows about, from acceptance to result. */
interface MasterJob {
  readonly id: string;
  readonly request: JobRequest;
  /** Canonical language name. */
  readonly language: string;
  readonly session: ClientSession;
  readonly acceptedAt: number;
  /** How many times it was started; restarts add one. */
  attempt: number;
  /** Where it runs now, if it runs. */
  worker: Worker | undefined;
  /** The name of the last node it ran on, for a result that ends it elsewhere. */
  lastNode: string | undefined;
  /** When it started running (for queuedMs). */
  startedAt: number;
  /** Set once its client gave up: it must end, not restart. */
  cancelled: string | undefined;
  /** Last position the client was told, so only moves are sent. */
  position: number;
}

/**
 * A master node. It starts listening when constructed, like `Deno.serve`.
 *
 * @example A master on a free port, used and shut down
 * ```ts
 * import { MasterNode, submitProgram } from "../../mod.ts";
 *
 * await using master = new MasterNode({ port: 0, slots: 2, resourceLogIntervalMs: 0 });
 * const result = await submitProgram({
 *   language: "bash",
 *   files: [{ name: "hi.sh", content: "echo hi" }],
 * }, { master: master.addr });
 * console.log(result.stdout); // hi
 * ```
 */
export class MasterNode extends TypedEventTarget<MasterNodeEventMap>
  implements AsyncDisposable {
  /** The address the node listens on. */
  readonly addr: Deno.NetAddr & { transport: "tcp" };
  /** Resolves once the node has detected its own toolchains and serves jobs. */
  readonly ready: Promise<void>;
  /** Resolves when the node has shut down. */
  readonly finished: Promise<void>;

  readonly #name: string;
  readonly #token: string;
  readonly #registry: RunnerRegistry;
  readonly #maxFrameBytes: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #heartbeatIntervalMs: number;
  readonly #nodeTimeoutMs: number;
  readonly #maxAttempts: number;
  readonly #listener: Deno.Listener;
  readonly #queue: JobQueue<MasterJob> = new FairQueue((job) =>
    job.session.client
  );
  /** Jobs placed on a worker and not yet ended. */
  readonly #running = new Map<string, MasterJob>();
  readonly #workers = new Map<string, Worker>();
  readonly #remoteServing = new Set<Promise<void>>();
  readonly #connections = new Set<Connection>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Aborted at shutdown: ends waits, such as the accept loop's back-off. */
  readonly #stopping = new AbortController();
  #sample: ResourceSample = { cpuPercent: 0, ramPercent: 0, ramUsedMb: 0 };
  /** Average run time of recent jobs, for the queue-full retry hint. */
  #averageJobMs = 1000;
  #closing = false;
  #resolveFinished!: () => void;

  /**
   * Starts listening at once (throws `Deno.errors.AddrInUse` and the like
   * synchronously) and detects toolchains in the background ({@linkcode ready}).
   */
  constructor(options: MasterNodeOptions = {}) {
    super();
    const {
      hostname = "127.0.0.1",
      port = DEFAULT_PORT,
      name = "master",
      slots = navigator.hardwareConcurrency,
      maxCpu = 100,
      maxRam = 95,
      token = "",
      registry = createDefaultRegistry(),
      limits = {},
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
      maxQueue = 1000,
      heartbeatIntervalMs = 1000,
      nodeTimeoutMs = 5000,
      maxAttempts = 3,
      resourceLogIntervalMs = 10_000,
      sampleResources: sampler = sampleResources,
      workRoot,
      signal,
    } = options;
    if (nodeTimeoutMs < 2 * heartbeatIntervalMs) {
      throw new RangeError(
        `Cannot start master: nodeTimeoutMs (${nodeTimeoutMs}) must be at least twice heartbeatIntervalMs (${heartbeatIntervalMs}), or every secondary would seem lost between heartbeats`,
      );
    }
    if (!Number.isInteger(slots) || slots < 0) {
      throw new RangeError(
        `Cannot start master: slots must be an integer >= 0, got ${slots}`,
      );
    }
    this.#name = name;
    this.#token = token;
    this.#registry = registry;
    this.#maxFrameBytes = maxFrameBytes;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#maxQueue = maxQueue;
    this.#heartbeatIntervalMs = heartbeatIntervalMs;
    this.#nodeTimeoutMs = nodeTimeoutMs;
    this.#maxAttempts = maxAttempts;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);

    this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    this.addr = this.#listener.addr as Deno.NetAddr & { transport: "tcp" };
    warnAboutExposure(hostname, token);
    this.ready = slots === 0 ? Promise.resolve() : this.#startLocalWorker({
      slots,
      maxCpu,
      maxRam,
      limits,
      workRoot,
    });
    this.#acceptLoop();

    // The master's own load: sampled often for placement, logged seldom.
    const sampleNow = () =>
      sampler().then((sample) => {
        this.#sample = sample;
        this.#dispatch();
      }, (error) => log.warn("cannot sample resources: {error}", { error }));
    if (slots > 0) {
      sampleNow();
      this.#timers.push(setInterval(sampleNow, heartbeatIntervalMs));
    }
    if (resourceLogIntervalMs > 0) {
      this.#timers.push(
        setInterval(
          () => this.#logResources(sampler, slots),
          resourceLogIntervalMs,
        ),
      );
    }
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
    if (signal?.aborted) this.shutdown();
  }

  /** Jobs running now, anywhere in the cluster. */
  get running(): number {
    return this.#running.size;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The cluster as `deno task status` shows it: every node, the queue. */
  status(): ClusterStatus {
    return {
      type: "cluster_status",
      master: this.#name,
      nodes: [...this.#workers.values()].map((worker) => worker.status()),
      queued: this.#queue.length,
      running: this.#running.size,
    };
  }

  /** Stops accepting, ends every job with a result, closes every connection. */
  async shutdown(): Promise<void> {
    if (this.#closing) return await this.finished;
    this.#closing = true;
    this.#stopping.abort();
    for (const timer of this.#timers) clearInterval(timer);
    this.#listener.close();
    // Toolchain probes are processes too: none may outlive the node.
    await this.ready;
    for (const [, job] of [...this.#queue.entries()]) {
      this.#queue.remove(job);
      this.#finish(
        job,
        this.#failure(job, "the master shut down before the job started"),
      );
    }
    const ending = [...this.#running.values()].map((job) =>
      new Promise<void>((resolve) => {
        const done = (event: MasterNodeEventMap["jobcomplete"]) => {
          if (event.detail.jobId !== job.id) return;
          this.removeEventListener("jobcomplete", done);
          resolve();
        };
        this.addEventListener("jobcomplete", done);
        job.cancelled = "the master is shutting down";
        job.worker?.cancel(job.id, job.cancelled);
      })
    );
    // Secondaries: their jobs were cancelled above; now let them go.
    for (const worker of this.#workers.values()) {
      if (worker instanceof RemoteWorker) {
        worker.lose("the master is shutting down");
      }
    }
    await Promise.all(ending);
    await Promise.all(this.#remoteServing);
    await Promise.all(
      [...this.#connections].map((connection) => connection.close()),
    );
    log.info("master {name} stopped", { name: this.#name });
    this.#resolveFinished();
  }

  /** Shuts the node down; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #startLocalWorker(
    options: {
      slots: number;
      maxCpu: number;
      maxRam: number;
      limits: LimitOverrides;
      workRoot: string | undefined;
    },
  ): Promise<void> {
    const statuses = await this.#registry.detect();
    for (const status of statuses) {
      if (status.toolchain.available) {
        log.info("language {name}: {version}", {
          name: status.name,
          version: status.toolchain.version,
        });
      } else {
        log.warn("language {name} unavailable: {reason}", {
          name: status.name,
          reason: status.toolchain.reason,
        });
      }
    }
    const runners = new Map(
      (await this.#registry.available()).map((r) => [r.runner.name, r]),
    );
    if (this.#closing) return;
    this.#workers.set(
      LOCAL_WORKER_ID,
      new LocalWorker({
        name: this.#name,
        address: formatHostPort(this.addr),
        slots: options.slots,
        runners,
        limits: options.limits,
        maxCpu: options.maxCpu,
        maxRam: options.maxRam,
        workRoot: options.workRoot,
        sample: () => this.#sample,
      }),
    );
    this.#dispatch();
  }

  /**
   * Accepts connections until shutdown. A failed accept (out of file
   * descriptors, say) is logged and retried after a growing pause, as
   * `Deno.serve` does: the node must not go deaf while it looks alive.
   */
  async #acceptLoop(): Promise<void> {
    let backoffMs = ACCEPT_BACKOFF_MIN_MS;
    while (!this.#closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing) return;
        log.error(
          "cannot accept a connection, retrying in {backoffMs} ms: {error}",
          { backoffMs, error },
        );
        await abortableDelay(backoffMs, this.#stopping.signal);
        backoffMs = Math.min(backoffMs * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      backoffMs = ACCEPT_BACKOFF_MIN_MS;
      this.#serve(conn);
    }
  }

  /** One connection, from handshake to close. Never throws. */
  async #serve(conn: Deno.Conn): Promise<void> {
    // Small frames until the peer has proven it knows the token, so that a
    // stranger cannot make the master buffer megabytes per connection.
    const connection = new Connection(conn, {
      maxFrameBytes: Math.min(HANDSHAKE_MAX_FRAME_BYTES, this.#maxFrameBytes),
    });
    this.#connections.add(connection);
    try {
      const peer = await serverHandshake(connection, {
        token: this.#token,
        node: this.#name,
        roles: ["client", "secondary"],
        timeoutMs: this.#handshakeTimeoutMs,
      });
      connection.maxFrameBytes = this.#maxFrameBytes;
      if (peer.role === "secondary") await this.#serveSecondary(connection);
      else await this.#serveClient(connection, peer.name);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      log.warn("closing connection from {addr}: {message}", {
        addr: connection.remoteAddr,
        message,
      });
      await connection.close(
        error instanceof ProtocolError ? error : undefined,
      );
    } finally {
      await connection.close();
      this.#connections.delete(connection);
    }
  }

  async #serveClient(
    connection: Connection,
    name: string | undefined,
  ): Promise<void> {
    const host = connection.remoteAddr.replace(/:\d+$/, "");
    // Fairness is per client: its declared name, or else its host.
    const session = new ClientSession(
      connection,
      name ?? connection.remoteAddr,
      name ?? host,
    );
    log.debug("client {client} connected from {addr}", {
      client: session.name,
      addr: connection.remoteAddr,
    });
    try {
      for await (const message of connection) {
        if (message.type === "submit") await this.#submit(session, message);
        else if (message.type === "cancel") {
          this.#cancel(session, message.jobId, "cancelled by the client");
        } else if (message.type === "get_status") session.send(this.status());
        else {throw new ProtocolError(
            "unexpected_message",
            `a client may not send "${message.type}" messages`,
          );}
      }
    } finally {
      for (const jobId of session.jobs) {
        this.#cancel(session, jobId, "the client disconnected");
      }
    }
  }

  /** A secondary: its registration, then its messages until it is lost. */
  async #serveSecondary(connection: Connection): Promise<void> {
    const registration = await connection.receive({
      timeoutMs: this.#handshakeTimeoutMs,
    });
    if (registration.type !== "register") {
      throw new ProtocolError(
        "unexpected_message",
        `a secondary must register first, not send "${registration.type}"`,
      );
    }
    if (this.#closing) {
      throw new ProtocolError("closed", "the master is shutting down");
    }
    if (registration.id === LOCAL_WORKER_ID) {
      throw new ProtocolError(
        "unexpected_message",
        `a secondary may not register as "${LOCAL_WORKER_ID}"`,
      );
    }
    const worker = new RemoteWorker({
      connection,
      registration,
      nodeTimeoutMs: this.#nodeTimeoutMs,
      onLost: (lost, reason) => this.#nodeLost(lost, reason),
      onHeartbeat: () => this.#dispatch(),
    });
    // Only a node that heard it is registered joins; a send that fails
    // throws, and nothing of the node stays behind.
    await connection.send({
      type: "registered",
      master: this.#name,
      heartbeatIntervalMs: this.#heartbeatIntervalMs,
    });
    // A secondary that reconnects before its old link timed out replaces
    // it: the new link is in place first, so the old one's jobs are placed
    // knowing the node is still there.
    const previous = this.#workers.get(worker.id);
    this.#workers.set(worker.id, worker);
    if (previous instanceof RemoteWorker) previous.lose("it registered again");
    log.info("node {name} joined from {address}: {slots} slots, {languages}", {
      name: worker.name,
      address: worker.address,
      slots: registration.slots,
      languages: worker.languages.map((l) => `${l.name} (${l.version})`).join(
        ", ",
      ),
    });
    this.emit("nodejoin", {
      id: worker.id,
      name: worker.name,
      address: worker.address,
    });
    this.#dispatch();
    const serving = worker.serve();
    this.#remoteServing.add(serving);
    await serving.finally(() => this.#remoteServing.delete(serving));
  }

  #nodeLost(worker: RemoteWorker, reason: string): void {
    if (this.#workers.get(worker.id) === worker) {
      this.#workers.delete(worker.id);
    }
    log.warn("node {name} left: {reason}", { name: worker.name, reason });
    this.emit("nodeleave", {
      id: worker.id,
      name: worker.name,
      address: worker.address,
      reason,
    });
    // Waiting jobs whose language nobody runs any more would wait forever.
    for (const [, job] of [...this.#queue.entries()]) {
      if (this.#offers().some((offer) => offer.name === job.language)) continue;
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
    this.#dispatch();
  }

  /** Validates a submission, then starts or queues it; rejects it with a reason otherwise. */
  async #submit(
    session: ClientSession,
    { ref, job: raw }: MessageOf<"submit">,
  ): Promise<void> {
    const acceptedAt = performance.now();
    const jobId = crypto.randomUUID();
    session.send({ type: "accepted", ref, jobId });
    this.emit("jobaccepted", { jobId, client: session.name });
    await this.ready;
    const parsed = parseJob(raw);
    if (!parsed.ok) return this.#reject(session, jobId, parsed.reason);
    const language = resolveOffered(
      parsed.request.language,
      this.#offers(),
      this.#registry,
    );
    if (!language.ok) return this.#reject(session, jobId, language.reason);
    // Checked after the wait above: shutdown may have begun meanwhile.
    if (this.#closing) {
      return this.#reject(session, jobId, "the master is shutting down");
    }

    const job: MasterJob = {
      id: jobId,
      request: parsed.request,
      language: language.language,
      session,
      acceptedAt,
      attempt: 0,
      worker: undefined,
      lastNode: undefined,
      startedAt: 0,
      cancelled: undefined,
      position: 0,
    };
    // Waiting jobs go first; those still waiting then fit no node, so a
    // new job that fits somewhere takes no one's turn.
    this.#dispatch();
    const worker = this.#place(job);
    if (worker) return this.#start(job, worker);
    if (this.#queue.length >= this.#maxQueue) {
      const retryAfterMs = this.#retryAfterMs();
      return this.#reject(
        session,
        jobId,
        `the queue is full (${this.#queue.length} jobs waiting); retry in ${
          Math.ceil(retryAfterMs / 1000)
        } s`,
        retryAfterMs,
      );
    }
    session.jobs.add(jobId);
    this.#queue.push(job);
    this.#announcePositions();
    log.info("job {jobId} from {client} queued at position {position}", {
      jobId,
      client: session.name,
      position: job.position,
    });
    this.#dispatch();
  }

  #reject(
    session: ClientSession,
    jobId: string,
    reason: string,
    retryAfterMs?: number,
  ): void {
    log.info("job {jobId} from {client} rejected: {reason}", {
      jobId,
      client: session.name,
      reason,
    });
    const result = blankResult(jobId, {
      verdict: "rejected",
      reason,
      ...retryAfterMs === undefined ? {} : { retryAfterMs },
    });
    session.sendResult(result);
    this.emit("jobcomplete", result);
  }

  /** The node a job would run on now, if any fits. */
  #place(job: MasterJob): Worker | undefined {
    const workers = [...this.#workers.values()];
    const chosen = chooseNode(
      workers.map((worker) => worker.load()),
      job.language,
    );
    return chosen && this.#workers.get(chosen.id);
  }

  /** Starts a job on a worker: the one place a job begins (again). */
  #start(job: MasterJob, worker: Worker): void {
    job.attempt++;
    job.worker = worker;
    job.lastNode = worker.name;
    job.startedAt = performance.now();
    job.session.jobs.add(job.id);
    this.#running.set(job.id, job);
    job.session.send({ type: "started", jobId: job.id, node: worker.name });
    this.emit("jobstart", {
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
    worker.start({ id: job.id, request: job.request, language: job.language }, {
      output: (stream, data) => {
        if (job.worker === worker) {
          job.session.send({ type: "output", jobId: job.id, stream, data });
        }
      },
      result: (result) => {
        if (job.worker !== worker) return;
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
        this.#dispatch();
      },
      failed: (reason, kind) => {
        if (job.worker !== worker) return;
        this.#running.delete(job.id);
        job.worker = undefined;
        if (kind === "refused") {
          worker.markFailing(Date.now() + FAILING_COOLDOWN_MS);
        }
        this.#restart(job, reason);
        this.#dispatch();
      },
    });
  }

  /** A job's node refused or lost it: start it again elsewhere, or end it. */
  #restart(job: MasterJob, reason: string): void {
    if (job.cancelled !== undefined) {
      return this.#finish(
        job,
        this.#failure(job, `cancelled: ${job.cancelled}`),
      );
    }
    if (job.attempt >= this.#maxAttempts) {
      return this.#finish(
        job,
        this.#failure(job, `${reason} (gave up after ${job.attempt} attempts)`),
      );
    }
    if (!this.#offers().some((offer) => offer.name === job.language)) {
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
    job.session.send({ type: "restarted", jobId: job.id, reason, attempt });
    this.emit("jobrestart", { jobId: job.id, reason, attempt });
    job.position = 0;
    this.#queue.pushFront(job);
    this.#announcePositions();
  }

  /**
   * Starts every waiting job that fits somewhere now, in queue order; jobs
   * that fit nowhere keep their place. Called on every event that can free
   * a slot or lower a load: a job ending, a node joining, a heartbeat.
   */
  #dispatch(): void {
    if (this.#closing || this.#queue.length === 0) return;
    // Heartbeats call this every second from every node: skip the scan
    // when no node has a free slot at all.
    const free = [...this.#workers.values()].some((w) => {
      const load = w.load();
      return load.assigned < load.slots;
    });
    if (!free) return;
    let started = false;
    for (const [, job] of [...this.#queue.entries()]) {
      const worker = this.#place(job);
      if (!worker) continue;
      this.#queue.take(job);
      this.#start(job, worker);
      started = true;
    }
    if (started) this.#announcePositions();
  }

  /** Tells every waiting client whose position changed where it stands now. */
  #announcePositions(): void {
    for (const [position, job] of this.#queue.entries()) {
      if (job.position === position) continue;
      job.position = position;
      job.session.send({ type: "queued", jobId: job.id, position });
      this.emit("jobqueued", { jobId: job.id, position });
    }
  }

  #cancel(session: ClientSession, jobId: string, reason: string): void {
    if (!session.jobs.has(jobId)) return; // Not this client's job, or already over.
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

  #findQueued(jobId: string): MasterJob | undefined {
    for (const [, job] of this.#queue.entries()) {
      if (job.id === jobId) return job;
    }
    return undefined;
  }

  /** The one place a job ends: its client gets the result, listeners the event. */
  #finish(job: MasterJob, result: JobResult): void {
    job.session.jobs.delete(job.id);
    job.session.sendResult(result);
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
    this.emit("jobcomplete", result);
  }

  /** A result for a job that never ran to its end, because of `reason`. */
  #failure(job: MasterJob, reason: string): JobResult {
    return blankResult(job.id, {
      language: job.language,
      node: job.lastNode ?? null,
      reason,
      queuedMs: Math.round(performance.now() - job.acceptedAt),
    });
  }

  /** Every language some live node runs. */
  #offers() {
    return [...this.#workers.values()].flatMap((worker) => worker.languages);
  }

  /** A guess of when a slot frees up for a rejected client: queue length times average job time over slots. */
  #retryAfterMs(): number {
    const slots = [...this.#workers.values()].reduce(
      (sum, worker) => sum + worker.load().slots,
      0,
    );
    const estimate = (this.#queue.length * this.#averageJobMs) /
      Math.max(1, slots);
    return Math.round(Math.min(60_000, Math.max(1000, estimate)));
  }

  async #logResources(sample: ResourceSampler, slots: number): Promise<void> {
    try {
      const { cpuPercent, ramUsedMb, ramPercent } = await sample();
      const local = this.#workers.get(LOCAL_WORKER_ID);
      log.info(
        "resources: cpu {cpuPercent}%, ram {ramUsedMb} MB ({ramPercent}%), programs {running}/{slots}, queued {queued}, nodes {nodes}",
        {
          cpuPercent,
          ramUsedMb,
          ramPercent,
          running: local?.load().assigned ?? 0,
          slots,
          queued: this.#queue.length,
          nodes: this.#workers.size - (local ? 1 : 0),
        },
      );
    } catch (error) {
      log.warn("cannot sample resources: {error}", { error });
    }
  }

  /** The address as `host:port`, for logs. */
  override toString(): string {
    return formatHostPort(this.addr);
  }
}

/** Says loudly what an operator might not realise this node exposes. */
function warnAboutExposure(hostname: string, token: string): void {
  const loopback = hostname === "localhost" || hostname === "::1" ||
    hostname.startsWith("127.");
  const noToken =
    "no token set: anyone who can reach {hostname} can run programs here; set KILN_TOKEN";
  if (token === "" && loopback) log.warn(noToken, { hostname });
  if (token === "" && !loopback) log.error(noToken, { hostname });
  log.warn(
    "no sandbox yet: programs run as this user, with its files and network; run trusted code only",
  );
}
