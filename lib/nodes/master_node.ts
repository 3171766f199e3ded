/**
 * The master: accepts client connections over TCP, runs their jobs on its
 * own slots, queues the rest in order and tells each waiting client its
 * position as the queue moves. Every submission ends with exactly one
 * `result` message and one `jobcomplete` event.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { DEFAULT_PORT, formatHostPort } from "../address.ts";
import { executeJob } from "../executor.ts";
import {
  blankResult,
  type JobRequest,
  type JobResult,
  type LimitOverrides,
} from "../job.ts";
import {
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
import type { MessageOf } from "../protocol/messages.ts";
import {
  createDefaultRegistry,
  type ResolvedRunner,
  type RunnerRegistry,
} from "../runners/registry.ts";
import { FifoQueue, type JobQueue } from "../scheduler/job_queue.ts";
import { admitJob } from "./admission.ts";
import { ClientSession } from "./client_session.ts";
import type { MasterNodeEventMap } from "./events.ts";

const log = getLogger(["kiln", "master"]);

/** Largest frame accepted before the handshake completes. */
const HANDSHAKE_MAX_FRAME_BYTES = 16 * 1024;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/** Options of {@linkcode MasterNode}. */
export interface MasterNodeOptions {
  /** Address to listen on. @default "127.0.0.1" */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (see {@linkcode MasterNode.addr}). @default 7700 */
  port?: number;
  /** Name reported as the `node` of jobs run here. @default "master" */
  name?: string;
  /** Jobs run at once on this node. @default the number of CPUs */
  slots?: number;
  /** Shared token clients authenticate with; empty means an open cluster. @default "" */
  token?: string;
  /** Languages this node runs. @default {@linkcode createDefaultRegistry}() */
  registry?: RunnerRegistry;
  /** The node's maximum limits per job; requests may lower them. */
  limits?: LimitOverrides;
  /** Largest frame accepted from a peer, in bytes. @default 8 MiB */
  maxFrameBytes?: number;
  /** Time a new connection has to complete the handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Jobs that may wait for a slot; more are rejected with a retry hint. @default 1000 */
  maxQueue?: number;
  /** Interval of the resource log line, in ms; 0 turns it off. @default 10000 */
  resourceLogIntervalMs?: number;
  /** Where the resource log line's numbers come from. @default {@linkcode sampleResources} */
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
  readonly resolved: ResolvedRunner;
  readonly session: ClientSession;
  readonly acceptedAt: number;
  readonly abort: AbortController;
  /** Last position the client was told, so only moves are sent. */
  position: number;
}

/** The event types of a master node; see {@linkcode MasterNodeEventMap}. */
export interface MasterNode {
  /** Listens for one of the node's typed events. */
  addEventListener<K extends keyof MasterNodeEventMap>(
    type: K,
    listener: (event: MasterNodeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Listens for any event, untyped. */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops listening for one of the node's typed events. */
  removeEventListener<K extends keyof MasterNodeEventMap>(
    type: K,
    listener: (event: MasterNodeEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops listening for any event, untyped. */
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/**
 * A master node. It starts listening when constructed, like `Deno.serve`.
 *
 * @example A master on a free port, used and shut down
 * ```ts
 * import { MasterNode, submitProgram } from "../../mod.ts";
 *
 * await using master = new MasterNode({ port: 0, slots: 2 });
 * const result = await submitProgram({
 *   language: "bash",
 *   files: [{ name: "hi.sh", content: "echo hi" }],
 * }, { master: master.addr });
 * console.log(result.stdout); // hi
 * ```
 */
export class MasterNode extends EventTarget implements AsyncDisposable {
  /** The address the node listens on. */
  readonly addr: Deno.NetAddr & { transport: "tcp" };
  /** Resolves once the node has detected its toolchains and serves jobs. */
  readonly ready: Promise<void>;
  /** Resolves when the node has shut down. */
  readonly finished: Promise<void>;

  readonly #name: string;
  readonly #slots: number;
  readonly #token: string;
  readonly #registry: RunnerRegistry;
  readonly #limits: LimitOverrides;
  readonly #maxFrameBytes: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #workRoot: string | undefined;
  readonly #listener: Deno.Listener;
  readonly #queue: JobQueue<MasterJob> = new FifoQueue();
  readonly #running = new Map<
    string,
    { job: MasterJob; done: Promise<void> }
  >();
  readonly #connections = new Set<Connection>();
  readonly #resourceTimer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  /** Aborted at shutdown: ends waits, such as the accept loop's back-off. */
  readonly #stopping = new AbortController();
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
      token = "",
      registry = createDefaultRegistry(),
      limits = {},
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
      maxQueue = 1000,
      resourceLogIntervalMs = 10_000,
      sampleResources: sampler = sampleResources,
      workRoot,
      signal,
    } = options;
    if (!Number.isInteger(slots) || slots < 1) {
      throw new RangeError(
        `Cannot start master: slots must be a positive integer, got ${slots}`,
      );
    }
    this.#name = name;
    this.#slots = slots;
    this.#token = token;
    this.#registry = registry;
    this.#limits = limits;
    this.#maxFrameBytes = maxFrameBytes;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#maxQueue = maxQueue;
    this.#workRoot = workRoot;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);

    this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    this.addr = this.#listener.addr as Deno.NetAddr & { transport: "tcp" };
    warnAboutExposure(hostname, token);
    this.ready = this.#detectToolchains();
    this.#acceptLoop();

    if (resourceLogIntervalMs > 0) {
      this.#resourceTimer = setInterval(
        () => this.#logResources(sampler),
        resourceLogIntervalMs,
      );
    }
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
    if (signal?.aborted) this.shutdown();
  }

  /** Jobs running now. */
  get running(): number {
    return this.#running.size;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Stops accepting, ends every job with a result, closes every connection. */
  async shutdown(): Promise<void> {
    if (this.#closing) return await this.finished;
    this.#closing = true;
    this.#stopping.abort();
    clearInterval(this.#resourceTimer);
    this.#listener.close();
    // Toolchain probes are processes too: none may outlive the node.
    await this.ready;
    for (const [, job] of [...this.#queue.entries()]) {
      this.#queue.remove(job);
      this.#finish(
        job,
        this.#failure(
          job,
          "the master shut down before the job started",
        ),
      );
    }
    for (const { job } of this.#running.values()) {
      job.abort.abort("the master is shutting down");
    }
    await Promise.all([...this.#running.values()].map(({ done }) => done));
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

  async #detectToolchains(): Promise<void> {
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
          {
            backoffMs,
            error,
          },
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
    let session: ClientSession | undefined;
    try {
      const peer = await serverHandshake(connection, {
        token: this.#token,
        node: this.#name,
        roles: ["client"],
        timeoutMs: this.#handshakeTimeoutMs,
      });
      connection.maxFrameBytes = this.#maxFrameBytes;
      session = new ClientSession(
        connection,
        peer.name ?? connection.remoteAddr,
      );
      log.debug("client {client} connected from {addr}", {
        client: session.name,
        addr: connection.remoteAddr,
      });
      for await (const message of connection) {
        if (message.type === "submit") await this.#submit(session, message);
        else if (message.type === "cancel") {
          this.#cancel(session, message.jobId, "cancelled by the client");
        } else {throw new ProtocolError(
            "unexpected_message",
            `a client may not send "${message.type}" messages`,
          );}
      }
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
      if (session) {
        for (const jobId of session.jobs) {
          this.#cancel(session, jobId, "the client disconnected");
        }
      }
      await connection.close();
      this.#connections.delete(connection);
    }
  }

  /** Admits a submission, then starts or queues it; rejects it with a reason otherwise. */
  async #submit(
    session: ClientSession,
    { ref, job: raw }: MessageOf<"submit">,
  ): Promise<void> {
    const acceptedAt = performance.now();
    const jobId = crypto.randomUUID();
    session.send({ type: "accepted", ref, jobId });
    this.#emit("jobaccepted", { jobId, client: session.name });
    await this.ready;
    const admission = await admitJob(raw, this.#registry);
    if (!admission.ok) return this.#reject(session, jobId, admission.reason);
    // Checked after the waits above: shutdown may have begun meanwhile.
    if (this.#closing) {
      return this.#reject(session, jobId, "the master is shutting down");
    }
    if (
      this.#running.size >= this.#slots && this.#queue.length >= this.#maxQueue
    ) {
      return this.#reject(
        session,
        jobId,
        `the queue is full (${this.#queue.length} jobs waiting); retry in a few seconds`,
      );
    }

    const job: MasterJob = {
      id: jobId,
      request: admission.request,
      resolved: admission.resolved,
      session,
      acceptedAt,
      abort: new AbortController(),
      position: 0,
    };
    session.jobs.add(jobId);
    if (this.#running.size < this.#slots) {
      this.#start(job);
    } else {
      this.#queue.push(job);
      this.#announcePositions();
      log.info("job {jobId} from {client} queued at position {position}", {
        jobId,
        client: session.name,
        position: job.position,
      });
    }
  }

  #reject(session: ClientSession, jobId: string, reason: string): void {
    log.info("job {jobId} from {client} rejected: {reason}", {
      jobId,
      client: session.name,
      reason,
    });
    const result = blankResult(jobId, { verdict: "rejected", reason });
    session.sendResult(result);
    this.#emit("jobcomplete", result);
  }

  #start(job: MasterJob): void {
    const queuedMs = Math.round(performance.now() - job.acceptedAt);
    const language = job.resolved.runner.name;
    job.session.send({ type: "started", jobId: job.id, node: this.#name });
    this.#emit("jobstart", { jobId: job.id, node: this.#name, language });
    log.debug("job {jobId} ({language}) started on {node}", {
      jobId: job.id,
      language,
      node: this.#name,
    });
    const done = executeJob(job.resolved, job.request, {
      jobId: job.id,
      nodeName: this.#name,
      limits: this.#limits,
      signal: job.abort.signal,
      onOutput: (stream, data) =>
        job.session.send({ type: "output", jobId: job.id, stream, data }),
      ...this.#workRoot ? { workRoot: this.#workRoot } : {},
    }).then((result) => {
      this.#running.delete(job.id);
      this.#finish(job, { ...result, queuedMs });
      this.#dispatch();
    });
    this.#running.set(job.id, { job, done });
  }

  /** Starts queued jobs while slots are free; called whenever a slot frees. */
  #dispatch(): void {
    if (this.#closing) return;
    let started = false;
    while (this.#running.size < this.#slots) {
      const job = this.#queue.shift();
      if (!job) break;
      this.#start(job);
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
      this.#emit("jobqueued", { jobId: job.id, position });
    }
  }

  #cancel(session: ClientSession, jobId: string, reason: string): void {
    if (!session.jobs.has(jobId)) return; // Not this client's job, or already over.
    const queued = this.#findQueued(jobId);
    if (queued) {
      this.#queue.remove(queued);
      this.#finish(
        queued,
        this.#failure(queued, `cancelled: ${reason}`),
      );
      this.#announcePositions();
      return;
    }
    this.#running.get(jobId)?.job.abort.abort(reason);
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
        language: result.language,
        node: result.node,
        verdict: result.verdict,
        timeMs: result.timeMs,
      },
    );
    this.#emit("jobcomplete", result);
  }

  /** A result for a job that never ran to its end, because of `reason`. */
  #failure(job: MasterJob, reason: string): JobResult {
    return blankResult(job.id, {
      language: job.resolved.runner.name,
      reason,
      queuedMs: Math.round(performance.now() - job.acceptedAt),
    });
  }

  async #logResources(sample: ResourceSampler): Promise<void> {
    try {
      const { cpuPercent, ramUsedMb, ramPercent } = await sample();
      log.info(
        "resources: cpu {cpuPercent}%, ram {ramUsedMb} MB ({ramPercent}%), programs {running}/{slots}, queued {queued}",
        {
          cpuPercent,
          ramUsedMb,
          ramPercent,
          running: this.#running.size,
          slots: this.#slots,
          queued: this.#queue.length,
        },
      );
    } catch (error) {
      log.warn("cannot sample resources: {error}", { error });
    }
  }

  #emit<K extends keyof MasterNodeEventMap>(
    type: K,
    detail: MasterNodeEventMap[K]["detail"],
  ): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
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

/** Resolves after `ms`, or at once when `signal` aborts. */
function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
