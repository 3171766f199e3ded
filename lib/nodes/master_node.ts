/**
 * The master: accepts client connections over TCP, runs their jobs on its
 * own slots, queues the rest in order and tells each waiting client its
 * position as the queue moves. Every submission ends with exactly one
 * `result` message and one `jobcomplete` event.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { z } from "zod";
import { formatHostPort } from "../address.ts";
import { executeJob } from "../executor.ts";
import {
  blankResult,
  type JobRequest,
  JobRequestSchema,
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
import { serverHandshake } from "../protocol/handshake.ts";
import type { MessageOf } from "../protocol/messages.ts";
import {
  createDefaultRegistry,
  type ResolvedRunner,
  type RunnerRegistry,
} from "../runners/registry.ts";
import { FifoQueue, type JobQueue } from "../scheduler/job_queue.ts";
import { ClientSession } from "./client_session.ts";
import type { MasterNodeEventMap } from "./events.ts";

const log = getLogger(["kiln", "master"]);

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
  addEventListener<K extends keyof MasterNodeEventMap>(
    type: K,
    listener: (event: MasterNodeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof MasterNodeEventMap>(
    type: K,
    listener: (event: MasterNodeEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
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
  readonly #workRoot: string | undefined;
  readonly #listener: Deno.Listener;
  readonly #queue: JobQueue<MasterJob> = new FifoQueue();
  readonly #running = new Map<
    string,
    { job: MasterJob; done: Promise<void> }
  >();
  readonly #queued = new Map<string, MasterJob>();
  readonly #connections = new Set<Connection>();
  readonly #resourceTimer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #resolveFinished!: () => void;

  constructor(options: MasterNodeOptions = {}) {
    super();
    const {
      hostname = "127.0.0.1",
      port = 7700,
      name = "master",
      slots = navigator.hardwareConcurrency,
      token = "",
      registry = createDefaultRegistry(),
      limits = {},
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      handshakeTimeoutMs = 10_000,
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
    this.#workRoot = workRoot;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);

    this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    this.addr = this.#listener.addr as Deno.NetAddr & { transport: "tcp" };
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
    clearInterval(this.#resourceTimer);
    this.#listener.close();
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

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) this.#serve(conn);
    } catch (error) {
      if (!this.#closing) {
        log.error("stopped accepting connections: {error}", { error });
      }
    }
  }

  /** One connection, from handshake to close. Never throws. */
  async #serve(conn: Deno.Conn): Promise<void> {
    const connection = new Connection(conn, {
      maxFrameBytes: this.#maxFrameBytes,
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

  /** Validates a submission, then starts or queues it; rejects it with a reason otherwise. */
  async #submit(
    session: ClientSession,
    { ref, job: raw }: MessageOf<"submit">,
  ): Promise<void> {
    const acceptedAt = performance.now();
    const jobId = crypto.randomUUID();
    session.send({ type: "accepted", ref, jobId });
    this.#emit("jobaccepted", { jobId, client: session.name });
    await this.ready;

    const rejection = (reason: string) => {
      log.info("job {jobId} from {client} rejected: {reason}", {
        jobId,
        client: session.name,
        reason,
      });
      const result = blankResult(jobId, { verdict: "rejected", reason });
      session.send({ type: "result", jobId, result });
      this.#emit("jobcomplete", result);
    };
    if (this.#closing) return rejection("the master is shutting down");
    const parsed = JobRequestSchema.safeParse(raw);
    if (!parsed.success) {
      return rejection(`invalid job: ${z.prettifyError(parsed.error)}`);
    }
    const lookup = await this.#registry.resolve(parsed.data.language);
    if (!lookup.ok) {
      if (lookup.problem === "toolchain_unavailable") {
        return rejection(lookup.reason);
      }
      const offered = (await this.#registry.available()).map(({ runner }) =>
        runner.name
      ).join(", ");
      return rejection(
        `${lookup.reason}; this cluster offers ${
          offered || "no language at all"
        }`,
      );
    }

    const job: MasterJob = {
      id: jobId,
      request: parsed.data,
      resolved: lookup.resolved,
      session,
      acceptedAt,
      abort: new AbortController(),
      position: 0,
    };
    session.jobs.add(jobId);
    if (this.#running.size < this.#slots) {
      this.#start(job);
    } else {
      this.#queued.set(jobId, job);
      this.#queue.push(job);
      this.#announcePositions();
      log.info("job {jobId} from {client} queued at position {position}", {
        jobId,
        client: session.name,
        position: job.position,
      });
    }
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
      this.#queued.delete(job.id);
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
    const queued = this.#queued.get(jobId);
    if (queued && this.#queue.remove(queued)) {
      this.#queued.delete(jobId);
      this.#finish(
        queued,
        this.#failure(queued, `cancelled: ${reason}`),
      );
      this.#announcePositions();
      return;
    }
    this.#running.get(jobId)?.job.abort.abort(reason);
  }

  /** The one place a job ends: its client gets the result, listeners the event. */
  #finish(job: MasterJob, result: JobResult): void {
    job.session.jobs.delete(job.id);
    job.session.send({ type: "result", jobId: job.id, result });
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
