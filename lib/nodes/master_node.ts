/**
 * The master: accepts clients and secondaries over TCP, validates what
 * clients submit, registers secondaries as workers next to its own slots,
 * and hands every job to the {@linkcode Dispatcher}
 * (`lib/scheduler/dispatcher.ts`), which places, queues, restarts and ends
 * it: every submission ends with exactly one `result` message and one
 * `jobcomplete` event, whatever happens.
 *
 * Its connections (accept, TLS, the peer guard, the handshake, client links
 * and their idle timers) live in `master_connections.ts`; this module keeps
 * the node's life and wiring: options, its own slots, the registry of
 * secondaries, admission of jobs, credentials and shutdown.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";
import { getLogger } from "@logtape/logtape";
import { createHash, timingSafeEqual } from "node:crypto";
import {
  DEFAULT_PORT,
  formatHostPort,
  isLoopbackHostname,
} from "../address.ts";
import {
  blankResult,
  checkLimits,
  type JobResult,
  type LimitOverrides,
  MAX_FILES,
} from "../job.ts";
import {
  type ResourceSample,
  type ResourceSampler,
  sampleResources,
} from "../monitor/resource_sampler.ts";
import { type Connection, sendBufferLimits } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import type { TlsListenOptions } from "../protocol/transport.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS } from "../protocol/handshake.ts";
import type {
  ClusterStatus,
  JobEvent,
  Message,
  MessageOf,
  OfferedLanguage,
} from "../protocol/messages.ts";
import { PING_PROTOCOL_VERSION } from "../protocol/messages.ts";
import {
  createDefaultRegistry,
  type RunnerRegistry,
} from "../runners/registry.ts";
import { Dispatcher, type JobClient } from "../scheduler/dispatcher.ts";
import {
  type AdmissionLimits,
  admissionLimits,
  DEFAULT_MAX_PROGRAM_BYTES,
  JOB_ENVELOPE_BYTES,
  parseJob,
} from "./admission.ts";
import type { ClientSession } from "./client_session.ts";
import { checkIdleTimeout, DEFAULT_IDLE_TIMEOUT_MS } from "./idle_timer.ts";
import { removeOwnWorkRoot, sweepWorkRoots } from "./_work_roots.ts";
import { startSandbox } from "./_sandbox.ts";
import { logLanguage } from "./_log_languages.ts";
import { type ClientQuota, Credentials } from "../security/credentials.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import { resolveOffered } from "./cluster_languages.ts";
import type { MasterNodeEventMap } from "./events.ts";
import { LOCAL_WORKER_ID, LocalWorker } from "./local_worker.ts";
import { MasterConnections } from "./master_connections.ts";
import { DEFAULT_SILENCE_GRACE_MS, RemoteWorker } from "./remote_worker.ts";

import { TypedEventTarget } from "./typed_event_target.ts";
import { NatsCluster, type NatsOptions } from "../nats/nats_cluster.ts";
import { type ClusterJobListener, ClusterJobs } from "../nats/cluster_jobs.ts";
import { ClusterCounts } from "../nats/cluster_counts.ts";
import { type JobRecord, readRecord } from "../nats/job_record.ts";
import { retrying } from "../nats/_retry.ts";
import { isClusterJobId } from "../nats/subjects.ts";
import { type NatsNodeWorker, NodeDirectory } from "../nats/node_directory.ts";

const log = getLogger(["kiln", "master"]);

/** How long a master on NATS keeps queued jobs when no node runs their language: one minute. */
export const NATS_NODE_GRACE_MS = 60_000;

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
  /**
   * Named credentials with roles and client quotas (`--auth FILE`); replaces
   * `token`. Swap them later with {@linkcode MasterNode.setCredentials}.
   * @default {Credentials.shared(token)}
   */
  credentials?: Credentials;
  /** Languages the master runs itself, and the names and aliases it knows. @default {@linkcode createDefaultRegistry}() */
  registry?: RunnerRegistry;
  /** The maximum limits per job on the master's own slots; requests may lower them. */
  limits?: LimitOverrides;
  /** Largest frame accepted from an authenticated peer, in bytes. @default 8 MiB */
  maxFrameBytes?: number;
  /** Time a new connection has to complete the handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * An authenticated client that sends nothing and has no job pending this
   * long is closed with `idle_timeout`, in ms; 0 never closes it.
   * (Secondaries are dropped by `nodeTimeoutMs` instead.)
   * @default 300000
   */
  idleTimeoutMs?: number;
  /**
   * Most bytes of source files and their names, stdin and arguments in one job; a larger
   * job is `rejected`, the reason naming both sizes, and so is one whose
   * `run` message (JSON, escapes included) would exceed `maxFrameBytes`.
   * At most `maxFrameBytes` minus 1024 (`JOB_ENVELOPE_BYTES`).
   * @default 1 MiB, or `maxFrameBytes` minus 1024 if smaller
   */
  maxProgramBytes?: number;
  /**
   * The high-water mark of each peer's send buffer, in bytes: past it, live
   * output to a client that does not read is dropped and its job's result
   * says `truncated`. At most `maxBufferedBytes`.
   * @default 8 MiB, or `maxBufferedBytes` if smaller
   */
  highWaterBytes?: number;
  /**
   * The most bytes waiting to be sent to one peer; a result or other
   * message past it closes that peer with `slow_peer`. Up to 2^32 - 1.
   * @default 64 MiB
   */
  maxBufferedBytes?: number;
  /** Most source files in one job, from 1 to 256; more are `rejected`. @default 256 */
  maxFiles?: number;
  /**
   * Connections one address (IPv6: one /64) may hold at once; more are
   * refused with `too_many_connections` before any byte is read. 0 means
   * no limit.
   * @default 64
   */
  maxConnectionsPerIp?: number;
  /**
   * Failed authentications from one address within `authFailureWindowMs`
   * after which its connections are refused with `auth_backoff` for a
   * while. 0 turns the back-off off.
   * @default 5
   */
  maxAuthFailures?: number;
  /** How long a failed authentication counts towards `maxAuthFailures`, in ms. @default 60000 */
  authFailureWindowMs?: number;
  /**
   * The first back-off, in ms; each one that follows within
   * `authBackoffMaxMs` of the last lasts twice as long.
   * @default 30000
   */
  authBackoffMs?: number;
  /** The longest back-off, in ms; after this long quiet, an address starts afresh. @default 3600000 */
  authBackoffMaxMs?: number;
  /**
   * Serve TLS with this certificate and key (PEM text, not paths); each
   * connection completes its TLS handshake within `handshakeTimeoutMs`.
   * Plain TCP when absent, with a warning unless listening on loopback.
   */
  tls?: TlsListenOptions;
  /** Jobs that may wait for a slot; more are rejected with a retry hint. @default 1000 */
  maxQueue?: number;
  /**
   * How often secondaries report their load, in ms, and how often the
   * master pings each of them (protocol 4 and later), so that a secondary
   * notices a master gone silent within its own `masterTimeoutMs`.
   * @default 1000
   */
  heartbeatIntervalMs?: number;
  /**
   * A secondary silent for this long is lost, in ms: after a last grace of
   * up to a second (one heartbeat interval at most) in which the master
   * reads what the node sent, so that a master that was itself paused does
   * not judge nodes by messages it has not read yet.
   * @default 5000
   */
  nodeTimeoutMs?: number;
  /** Times a job may start before a lost node makes it fail for good. @default 3 */
  maxAttempts?: number;
  /**
   * How long queued jobs wait for a node that runs their language, in ms,
   * once the last such node left, before they end with `internal_error`:
   * a node that rejoins meanwhile (say after the master was paused) runs
   * them. 0 ends them at once; at most 600000 (10 minutes).
   * @default 10000, or {@linkcode NATS_NODE_GRACE_MS} on NATS
   */
  nodeGraceMs?: number | undefined;
  /** Interval of the resource log line, in ms; 0 turns it off. @default 10000 */
  resourceLogIntervalMs?: number;
  /** Where the master's own load comes from. @default {@linkcode sampleResources} */
  sampleResources?: ResourceSampler;
  /** Directory for job workdirs. @default the system temp dir */
  workRoot?: string;
  /**
   * The sandbox jobs run in (`Sandbox.detect()` with the node's mode).
   * @default the strongest this host has, every missing layer warned about
   */
  sandbox?: Sandbox;
  /** Aborting it shuts the node down, like {@linkcode MasterNode.shutdown}. */
  signal?: AbortSignal;
  /**
   * Front a kiln cluster on NATS JetStream (`--nats`): jobs go into the
   * cluster's stream, secondaries pull them, and any master can serve any
   * client. Such a master runs no job itself (`slots` must be 0).
   */
  nats?: NatsOptions | undefined;
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
  #credentials: Credentials;
  readonly #registry: RunnerRegistry;
  readonly #maxFrameBytes: number;
  readonly #handshakeTimeoutMs: number;
  readonly #heartbeatIntervalMs: number;
  readonly #nodeTimeoutMs: number;
  readonly #admission: AdmissionLimits;
  /** Every connection: accept, TLS, the peer guard, the handshake, client links. */
  readonly #links: MasterConnections;
  /** Every job's life, and the workers it runs on. */
  readonly #jobs: Dispatcher;
  readonly #remoteServing = new Set<Promise<void>>();
  /** Who registered each secondary: only the same may take its id while it is live. */
  readonly #nodeOwners = new WeakMap<RemoteWorker, NodeOwner>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  #sample: ResourceSample = { cpuPercent: 0, ramPercent: 0, ramUsedMb: 0 };
  #closing = false;
  /** On NATS: the link, the jobs it follows, and the nodes it sees. */
  #nats: NatsLink | undefined;
  /** On NATS: the jobs each client attached to by id, and their listeners. */
  readonly #attached = new WeakMap<
    ClientSession,
    Map<string, ClusterJobListener>
  >();
  /** Whether {@linkcode MasterNode.ready} has resolved: submissions then go on at once. */
  #isReady = false;
  /** The start-up sweep of workdirs that dead kiln processes left. */
  #sweeping: Promise<void>;
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
      nats,
      slots = nats ? 0 : navigator.hardwareConcurrency,
      maxCpu = 100,
      maxRam = 95,
      token = "",
      credentials = Credentials.shared(token),
      registry = createDefaultRegistry(),
      limits = {},
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
      idleTimeoutMs = DEFAULT_IDLE_TIMEOUT_MS,
      maxProgramBytes = Math.min(
        DEFAULT_MAX_PROGRAM_BYTES,
        maxFrameBytes - JOB_ENVELOPE_BYTES,
      ),
      highWaterBytes,
      maxBufferedBytes,
      maxFiles = MAX_FILES,
      maxConnectionsPerIp,
      maxAuthFailures,
      authFailureWindowMs,
      authBackoffMs,
      authBackoffMaxMs,
      tls,
      maxQueue = 1000,
      heartbeatIntervalMs = 1000,
      nodeTimeoutMs = 5000,
      maxAttempts = 3,
      // On NATS, heartbeats stop for as long as the servers fail over (a
      // server lost: several seconds of elections); queued jobs wait that out.
      nodeGraceMs = nats ? NATS_NODE_GRACE_MS : undefined,
      resourceLogIntervalMs = 10_000,
      sampleResources: sampler = sampleResources,
      workRoot,
      sandbox,
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
    if (nats && slots > 0) {
      throw new RangeError(
        `Cannot start master: a master on NATS runs no job itself (its secondaries pull them), so slots must be 0, got ${slots}`,
      );
    }
    checkLimits(limits, "master limits");
    this.#name = name;
    this.#credentials = credentials;
    this.#registry = registry;
    this.#maxFrameBytes = maxFrameBytes;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#heartbeatIntervalMs = heartbeatIntervalMs;
    this.#nodeTimeoutMs = nodeTimeoutMs;
    const idleTimeout = checkIdleTimeout(idleTimeoutMs);
    const sendBuffers = sendBufferLimits({ highWaterBytes, maxBufferedBytes });
    this.#admission = admissionLimits(
      { maxProgramBytes, maxFiles },
      maxFrameBytes,
    );
    this.#jobs = new Dispatcher({
      maxQueue,
      maxAttempts,
      nodeGraceMs,
      // On NATS, quotas count a client's jobs on every master.
      ...nats
        ? {
          shared: {
            elsewhere: (client) =>
              this.#nats?.counts.elsewhere(client) ?? NO_JOBS_ELSEWHERE,
            changed: (client, counts) =>
              this.#nats?.counts.changed(client, counts),
          },
        }
        : {},
      emit: (type, detail) => this.emit(type, detail),
    });
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);

    this.#links = new MasterConnections({
      hostname,
      port,
      tls,
      name,
      credentials: () => this.#credentials,
      maxFrameBytes,
      handshakeTimeoutMs,
      idleTimeoutMs: idleTimeout,
      ...sendBuffers,
      guard: {
        maxConnectionsPerIp,
        maxAuthFailures,
        authFailureWindowMs,
        authBackoffMs,
        authBackoffMaxMs,
      },
      services: {
        submit: (session, message) => this.#submit(session, message),
        cancel: (session, jobId, reason) => {
          if (this.#attachedTo(session, jobId)) {
            void this.#nats?.jobs.cancel(jobId, reason);
          } else this.#jobs.cancel(session, jobId, reason);
        },
        left: (session, jobId) => this.#left(session, jobId),
        input: (session, jobId, data, eof) => {
          if (this.#attachedTo(session, jobId)) {
            this.#nats?.jobs.input(jobId, data, eof);
          } else this.#jobs.input(session, jobId, data, eof);
        },
        attach: (session, { ref, jobId }) => this.#attach(session, ref, jobId),
        status: () => this.status(),
        serveSecondary: (connection, identity, version) =>
          this.#serveSecondary(connection, identity, version),
      },
    });
    this.addr = this.#links.addr;
    warnAboutExposure(hostname, credentials);
    if (tls === undefined) warnAboutPlainText(hostname);
    this.ready =
      (nats
        ? this.#startNats(nats)
        : slots === 0
        ? Promise.resolve()
        : this.#startLocalWorker({
          slots,
          maxCpu,
          maxRam,
          limits,
          workRoot,
          sandbox,
        })).then(() => {
          this.#isReady = true;
        });
    // Whoever awaits `ready` sees its rejection (NATS out of reach); nobody has to.
    this.ready.catch(() => {});
    this.#sweeping = sweepWorkRoots();

    // The master's own load: sampled often for placement, logged seldom.
    const sampleNow = () =>
      sampler().then((sample) => {
        this.#sample = sample;
        this.#jobs.dispatch();
      }, (error) => log.warn("cannot sample resources: {error}", { error }));
    if (slots > 0) {
      sampleNow();
      this.#timers.push(
        setInterval(sampleNow, timerDelay(heartbeatIntervalMs)),
      );
    }
    if (resourceLogIntervalMs > 0) {
      this.#timers.push(
        setInterval(
          () => this.#logResources(sampler, slots),
          timerDelay(resourceLogIntervalMs),
        ),
      );
    }
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
    if (signal?.aborted) this.shutdown();
  }

  /** Jobs running now, anywhere in the cluster. */
  get running(): number {
    return this.#jobs.running;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#jobs.queued;
  }

  /** Bytes waiting to be sent to peers, over all connections: bounded by `maxBufferedBytes` each. */
  get bufferedBytes(): number {
    return this.#links.bufferedBytes;
  }

  /** The cluster as `deno task status` shows it: every node, the queue. */
  status(): ClusterStatus {
    return {
      master: this.#name,
      nodes: this.#jobs.workers.map((worker) => worker.status()),
      queued: this.#jobs.queued,
      running: this.#jobs.running,
    };
  }

  /** Most bytes of source files, stdin and arguments in one job (the HTTP API sizes bodies by it). */
  get maxProgramBytes(): number {
    return this.#admission.maxProgramBytes;
  }

  /** The credentials in use now (the HTTP API checks bearer tokens against them). */
  get credentials(): Credentials {
    return this.#credentials;
  }

  /**
   * For the HTTP API, which shares this master's authentication back-off
   * (same address, same counter): throws {@linkcode ProtocolError}
   * `auth_backoff`, saying when to retry, while `hostname` serves one.
   */
  checkAuthBackoff(hostname: string): void {
    this.#links.checkAuthBackoff(hostname);
  }

  /** Counts a failed HTTP bearer token from `hostname` as a failed TCP handshake counts. */
  countAuthFailure(hostname: string): void {
    this.#links.countAuthFailure(
      hostname,
      new ProtocolError("auth_failed", "the token is not valid"),
    );
  }

  /** Every language some node offers now, one entry per node, with aliases. */
  offers(): OfferedLanguage[] {
    return [...this.#jobs.offers()];
  }

  /**
   * Replaces the credentials (a reloaded `--auth` file): new connections
   * authenticate against them, and quotas apply at the next submission.
   * Connections already made keep who they proved to be.
   */
  setCredentials(credentials: Credentials): void {
    this.#credentials = credentials;
    // A credential removed, or its token or role changed: its links end now.
    this.#links.revokeChanged(credentials);
    log.info("credentials from {source}: {clients} clients, {nodes} nodes", {
      source: credentials.source,
      clients: credentials.count("client"),
      nodes: credentials.count("node"),
    });
    // The HTTP API closes the streams of a revoked credential on this.
    this.emit("credentialschange", { source: credentials.source });
  }

  /**
   * Runs a job for a caller in this process (the HTTP API): the same
   * validation, quotas, fair queue, placement and events as a client over
   * TCP. `raw` is untrusted; an invalid job ends `rejected` with the reason.
   * Aborting `signal` cancels the job wherever it is.
   *
   * @example Running a job on the master's own slots
   * ```ts ignore
   * const { jobId, result } = master.run(
   *   { language: "python", files: [{ name: "main.py", content: "print(1)" }] },
   *   { client: "http:alice", onEvent: (event) => console.log(event.type) },
   * );
   * console.log(jobId, (await result).verdict);
   * ```
   */
  run(raw: unknown, options: RunOptions): RunHandle {
    const { client, quota, onEvent, signal } = options;
    const ended = Promise.withResolvers<JobResult>();
    let jobId = "";
    const caller: Submitter = {
      name: client,
      client,
      quota,
      jobs: new Set(),
      send: (message) => {
        if (message.type === "accepted") jobId = message.jobId;
        if (isJobEvent(message)) onEvent?.(message);
      },
      sendResult: (result) => {
        onEvent?.({ type: "result", jobId: result.jobId, result });
        ended.resolve(result);
      },
    };
    // `accepted` is sent synchronously, before the first await in #submit;
    // the dispatcher follows the signal from the job's admission on, and
    // ends the job unstarted if it aborted before (even in this tick).
    this.#submit(caller, { type: "submit", ref: "", job: raw }, {
      signal,
      inTurn: false,
    }).catch(
      (error) =>
        caller.sendResult(
          blankResult(jobId, {
            reason: `cannot run job: ${
              error instanceof Error ? error.message : String(error)
            }`,
            client,
          }),
        ),
    );
    return {
      jobId,
      result: ended.promise,
      input: (data, eof = false) => this.#jobs.input(caller, jobId, data, eof),
    };
  }

  /**
   * On NATS: a job of the cluster by id, whichever master it was submitted
   * to, as its record holds it; undefined standalone, and for a job the
   * cluster does not know (or forgot: records live `recordTtlMs`).
   */
  async clusterJob(jobId: string): Promise<JobRecord | undefined> {
    const nats = await this.#natsReady();
    // An id no job could have (a client's, a URL's) never reaches NATS.
    if (nats === undefined || !isClusterJobId(jobId)) return undefined;
    const found = await retrying(() => readRecord(nats.cluster.jobs, jobId), {
      withinMs: 5_000,
    }).catch(() => undefined);
    return found?.record;
  }

  /**
   * On NATS: follows a job of the cluster by id (whichever master it was
   * submitted to): `listener` hears where it stands now, then the rest of
   * its events, its result last. Resolves with the function that stops
   * following, or undefined (standalone, or an unknown job).
   */
  async followClusterJob(
    jobId: string,
    listener: ClusterJobListener,
  ): Promise<(() => void) | undefined> {
    const nats = await this.#natsReady();
    if (nats === undefined || !isClusterJobId(jobId)) return undefined;
    const known = await nats.jobs.follow(jobId, listener);
    return known ? () => nats.jobs.unfollow(jobId, listener) : undefined;
  }

  /** The NATS link once the node is ready; undefined standalone. */
  async #natsReady(): Promise<NatsLink | undefined> {
    if (!this.#isReady) await this.ready.catch(() => {});
    return this.#nats;
  }

  /** Stops accepting, ends every job with a result, closes every connection. */
  async shutdown(): Promise<void> {
    if (this.#closing) return await this.finished;
    this.#closing = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.#links.stopAccepting();
    // Toolchain probes are processes too: none may outlive the node.
    await this.ready.catch(() => {});
    // Every job ends with a result: the queued at once, the running once
    // cancelled. Secondaries' jobs end as their links are let go.
    const ending = this.#jobs.close("the master is shutting down");
    for (const worker of this.#jobs.workers) {
      if (worker instanceof RemoteWorker) {
        worker.lose("the master is shutting down");
      }
    }
    await ending;
    if (this.#nats) {
      this.#nats.directory.close();
      this.#nats.jobs.close();
      await this.#nats.counts.close();
      await this.#nats.cluster.close();
    }
    // Results go out before their jobs' cleanup ends: that too, before the
    // work root goes.
    for (const worker of this.#jobs.workers) {
      if (worker instanceof LocalWorker) await worker.cleanedUp();
    }
    await Promise.all(this.#remoteServing);
    await this.#links.closeAll();
    await this.#sweeping;
    await removeOwnWorkRoot();
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
      sandbox: Sandbox | undefined;
    },
  ): Promise<void> {
    const sandbox = await startSandbox(options.sandbox);
    const statuses = await this.#registry.detect();
    for (const status of statuses) {
      logLanguage(log, status);
    }
    const runners = new Map(
      (await this.#registry.available()).map((r) => [r.runner.name, r]),
    );
    if (this.#closing) return;
    this.#jobs.addWorker(
      new LocalWorker({
        name: this.#name,
        address: formatHostPort(this.addr),
        slots: options.slots,
        runners,
        limits: options.limits,
        maxCpu: options.maxCpu,
        maxRam: options.maxRam,
        workRoot: options.workRoot,
        sandbox,
        sample: () => this.#sample,
      }),
    );
  }

  /**
   * Fronts a NATS cluster: its nodes (from the nodes bucket) become the
   * dispatcher's workers, windows onto the stream they pull from.
   */
  async #startNats(options: NatsOptions): Promise<void> {
    const cluster = await NatsCluster.connect({
      ...options,
      name: `kiln master ${this.#name}`,
    });
    if (this.#closing) return await cluster.close();
    const jobs = new ClusterJobs({ cluster });
    const counts = new ClusterCounts({
      cluster,
      changed: () => this.#jobs.dispatch(),
    });
    const directory = new NodeDirectory({
      cluster,
      jobs,
      nodeTimeoutMs: this.#nodeTimeoutMs,
      joined: (worker) => {
        this.#jobs.addWorker(worker);
        log.info("node {name} joined on NATS: {slots} slots, {languages}", {
          name: worker.name,
          slots: worker.entry.slots,
          languages: worker.languages.map((l) => `${l.name} (${l.version})`)
            .join(", "),
        });
        this.emit("nodejoin", {
          id: worker.id,
          name: worker.name,
          address: worker.address,
        });
      },
      changed: (worker) => this.#jobs.loadChanged(worker),
      // Its jobs go on: they are in the stream, not on the window.
      left: (worker, reason) => this.#nodeLost(worker, reason),
    });
    await directory.ready;
    this.#nats = { cluster, jobs, directory, counts };
    log.info("fronting the kiln cluster on NATS at {servers}", {
      servers: options.servers.join(", "),
    });
  }

  /**
   * A secondary: its registration, then its messages until it is lost. It
   * is pinged every heartbeat interval when its `version` has pings.
   */
  async #serveSecondary(
    connection: Connection,
    identity: string | undefined,
    version: number,
  ): Promise<void> {
    const registration = await connection.receive({
      timeoutMs: this.#handshakeTimeoutMs,
    });
    if (registration.type !== "register") {
      throw new ProtocolError(
        "unexpected_message",
        `a secondary must register first, not send "${registration.type}"`,
      );
    }
    // A node credential is a name: the node may not register as another.
    if (!this.#credentials.isShared && registration.name !== identity) {
      throw new ProtocolError(
        "auth_failed",
        `node credential "${identity}" cannot register as "${registration.name}"`,
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
    // The id is public (status, /api/v1/nodes): a registration may take a
    // live node's place only when it proves it is that node.
    const owner: NodeOwner = { identity, secret: registration.secret };
    this.#checkTakeover(registration, owner);
    const worker = new RemoteWorker({
      connection,
      registration,
      nodeTimeoutMs: this.#nodeTimeoutMs,
      // So that the node notices a master gone silent; an older node
      // would refuse the pings, and warn of each.
      pingIntervalMs: version >= PING_PROTOCOL_VERSION
        ? this.#heartbeatIntervalMs
        : undefined,
      // A heartbeat's worth, so that a stalled master reads before it judges.
      silenceGraceMs: Math.min(
        DEFAULT_SILENCE_GRACE_MS,
        this.#heartbeatIntervalMs,
      ),
      onLost: (lost, reason) => this.#nodeLost(lost, reason),
      onHeartbeat: (beating) => this.#jobs.loadChanged(beating),
      onDraining: (draining) => {
        log.info("node {name} is draining: it takes no new job", {
          name: draining.name,
        });
        this.emit("nodedrain", {
          id: draining.id,
          name: draining.name,
          address: draining.address,
        });
      },
    });
    // Only a node that heard it is registered joins; a send that fails
    // throws, and nothing of the node stays behind.
    await connection.send({
      type: "registered",
      master: this.#name,
      heartbeatIntervalMs: this.#heartbeatIntervalMs,
      maxFrameBytes: this.#maxFrameBytes,
    });
    // A secondary that reconnects before its old link timed out replaces
    // it: the new link is in place first, so the old one's jobs are placed
    // knowing the node is still there. Checked again: another registration
    // may have taken the id while `registered` went out.
    this.#checkTakeover(registration, owner);
    this.#nodeOwners.set(worker, owner);
    const previous = this.#jobs.addWorker(worker);
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
    this.#jobs.dispatch();
    const serving = worker.serve();
    this.#remoteServing.add(serving);
    await serving.finally(() => this.#remoteServing.delete(serving));
  }

  /**
   * Refuses a registration under the id of a live node it cannot prove to
   * be: one of another node credential, or (credentials shared, or two
   * secondaries holding one credential) one without that node's secret. A
   * node that reconnects before its old link timed out has both, and
   * replaces its own stale link.
   */
  #checkTakeover(
    registration: MessageOf<"register">,
    owner: NodeOwner,
  ): void {
    const live = this.#jobs.worker(registration.id);
    if (!(live instanceof RemoteWorker) || live.lostReason !== undefined) {
      return;
    }
    const holder = this.#nodeOwners.get(live);
    if (!this.#credentials.isShared && holder?.identity !== owner.identity) {
      throw new ProtocolError(
        "auth_failed",
        `node credential "${owner.identity}" cannot register as node ${registration.id}: that id belongs to a live node of credential "${holder?.identity}"`,
      );
    }
    if (!sameSecret(holder?.secret, owner.secret)) {
      throw new ProtocolError(
        "auth_failed",
        `node id ${registration.id} is taken by a live node ("${live.name}" from ${live.address}) and this registration does not carry its secret; a secondary's id is its own`,
      );
    }
  }

  #nodeLost(worker: RemoteWorker | NatsNodeWorker, reason: string): void {
    log.warn("node {name} left: {reason}", { name: worker.name, reason });
    this.emit("nodeleave", {
      id: worker.id,
      name: worker.name,
      address: worker.address,
      reason,
    });
    this.#jobs.removeWorker(worker, reason);
  }

  /**
   * Validates a submission and resolves its language, then hands it to the
   * dispatcher. A client's submission goes on in the same turn once the
   * node is ready, so that `accepted` and what follows it (`queued`,
   * `started` or the rejection) leave in one write: with many clients
   * waiting, a write per message was the master's largest cost.
   * `run()`'s callers still hear nothing after `accepted` before it
   * returns (`inTurn: false`).
   */
  async #submit(
    session: Submitter,
    { ref, job: raw }: MessageOf<"submit">,
    { signal, inTurn = true }: {
      signal?: AbortSignal | undefined;
      inTurn?: boolean;
    } = {},
  ): Promise<void> {
    const acceptedAt = performance.now();
    const id = crypto.randomUUID();
    session.send({ type: "accepted", ref, jobId: id });
    this.emit("jobaccepted", { jobId: id, client: session.name });
    if (!inTurn || !this.#isReady) await this.ready;
    const parsed = parseJob(raw, this.#admission);
    if (!parsed.ok) return this.#jobs.reject(session, id, parsed.reason);
    const language = resolveOffered(
      parsed.request.language,
      this.#jobs.offers(),
      this.#registry,
    );
    if (!language.ok) return this.#jobs.reject(session, id, language.reason);
    this.#jobs.submit(session, {
      id,
      request: parsed.request,
      language: language.language,
      acceptedAt,
      signal,
    });
  }

  /**
   * A client asks for the rest of a job it submitted over a connection
   * that was lost. On NATS the job is in the cluster, whichever master
   * took it: the client gets `accepted` (same `ref` and id), where the job
   * stands, then the rest of its events and its result, as any master
   * follows it (`lib/nats/cluster_jobs.ts`). A job of another client is as
   * unknown as one that never reached the cluster (it waited in the fair
   * queue of a master that died): the client submits it again.
   *
   * Standalone, there is none to give: a job ends with the connection that
   * submitted it (its jobs are cancelled as it leaves), and the node keeps
   * no result once sent (the HTTP API's history does, outside the node,
   * and would hold that cancellation). So the answer is `unknown_job`, and
   * the client submits the job again.
   */
  async #attach(
    session: ClientSession,
    ref: string,
    jobId: string,
  ): Promise<void> {
    const unknown = (reason: string) =>
      session.send({ type: "unknown_job", ref, jobId, reason });
    const nats = await this.#natsReady();
    if (nats === undefined) {
      return unknown(
        `master "${this.#name}" runs standalone, where a job ends with the connection that submitted it`,
      );
    }
    const record = await this.clusterJob(jobId);
    if (record === undefined || record.client !== session.client) {
      return unknown(
        `the cluster has no job ${jobId} of this client: it never reached the cluster (it waited at a master that was lost), or its record expired`,
      );
    }
    session.send({ type: "accepted", ref, jobId });
    session.jobs.add(jobId);
    let attempt = 0;
    const listener: ClusterJobListener = {
      started: (node, nodeAttempt) => {
        if (attempt > 0 && nodeAttempt > attempt) {
          session.send({
            type: "restarted",
            jobId,
            reason: "the node running it was lost",
            attempt: nodeAttempt,
          });
        }
        attempt = nodeAttempt;
        session.send({ type: "started", jobId, node });
      },
      output: (stream, data) =>
        session.send({ type: "output", jobId, stream, data }),
      result: (result) => {
        this.#attached.get(session)?.delete(jobId);
        session.jobs.delete(jobId);
        session.sendResult(result);
      },
    };
    let attached = this.#attached.get(session);
    if (attached === undefined) {
      this.#attached.set(session, attached = new Map());
    }
    attached.set(jobId, listener);
    if (!await nats.jobs.follow(jobId, listener)) {
      // Its record expired between the two reads.
      listener.result(blankResult(jobId, {
        client: session.client,
        reason: `job ${jobId} left the cluster's records while being attached`,
      }));
    }
  }

  /** Whether a job is one `session` attached to by id (on NATS). */
  #attachedTo(session: ClientSession, jobId: string): boolean {
    return this.#attached.get(session)?.has(jobId) ?? false;
  }

  /**
   * A client's connection ended with a job pending. Standalone, the job is
   * cancelled: nobody could hear its result. On NATS the client may attach
   * again through any master, so a job in the cluster runs on (this master
   * stops following it for that client); one still waiting in this
   * master's fair queue, which no other master could find, is cancelled.
   */
  #left(session: ClientSession, jobId: string): void {
    const attached = this.#attached.get(session);
    const listener = attached?.get(jobId);
    if (listener !== undefined) {
      attached!.delete(jobId);
      this.#nats?.jobs.unfollow(jobId, listener);
      return;
    }
    if (this.#nats !== undefined && !this.#jobs.isWaiting(jobId)) return;
    this.#jobs.cancel(session, jobId, "the client disconnected");
  }

  async #logResources(sample: ResourceSampler, slots: number): Promise<void> {
    try {
      const { cpuPercent, ramUsedMb, ramPercent } = await sample();
      const local = this.#jobs.worker(LOCAL_WORKER_ID);
      log.info(
        "resources: cpu {cpuPercent}%, ram {ramUsedMb} MB ({ramPercent}%), programs {running}/{slots}, queued {queued}, nodes {nodes}",
        {
          cpuPercent,
          ramUsedMb,
          ramPercent,
          running: local?.load().assigned ?? 0,
          slots,
          queued: this.#jobs.queued,
          nodes: this.#jobs.workers.length - (local ? 1 : 0),
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

/** A client as the master sees it: the dispatcher's, told of admission too. */
interface Submitter extends Omit<JobClient, "send"> {
  /** Sends any message of the client protocol: `accepted`, then the job's updates. */
  send(message: Message): void;
}

/** A master's link to a NATS cluster. */
interface NatsLink {
  readonly cluster: NatsCluster;
  readonly jobs: ClusterJobs;
  readonly directory: NodeDirectory;
  readonly counts: ClusterCounts;
}

/** A client with no job on another master. */
const NO_JOBS_ELSEWHERE = Object.freeze({ running: 0, queued: 0 });

/** A job {@linkcode MasterNode.run} started. */
export interface RunHandle {
  /** The job's id. */
  jobId: string;
  /** Its result, whatever the verdict; never rejects. */
  result: Promise<JobResult>;
  /**
   * More stdin for an interactive job (`interactive: true` in the request)
   * while it waits or runs; `eof` ends it. Ignored once the job ended.
   */
  input(data: string, eof?: boolean): void;
}

/** Options of {@linkcode MasterNode.run}. */
export interface RunOptions {
  /** Who runs the job: its identity for fairness, quotas, logs and results. */
  client: string;
  /** The client's quota; none means no quota. */
  quota?: Readonly<ClientQuota> | undefined;
  /** Receives every event of the job as it happens, the result last. */
  onEvent?: ((event: JobEvent) => void) | undefined;
  /** Aborting it cancels the job. */
  signal?: AbortSignal | undefined;
}

const JOB_EVENT_TYPES: ReadonlySet<string> = new Set([
  "accepted",
  "queued",
  "started",
  "output",
  "restarted",
]);

function isJobEvent(message: Message): message is JobEvent {
  return JOB_EVENT_TYPES.has(message.type);
}

/** The credential a secondary proved, and the secret it registered with. */
interface NodeOwner {
  readonly identity: string | undefined;
  readonly secret: string | undefined;
}

/**
 * Whether two registration secrets match, in constant time. Two absent ones
 * match: a secondary of an older build sends none, and then its credential
 * alone proves it.
 */
function sameSecret(
  held: string | undefined,
  offered: string | undefined,
): boolean {
  if (held === undefined || offered === undefined) {
    return held === offered;
  }
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(held), digest(offered));
}

/** Says loudly what an operator might not realise this node exposes. */
function warnAboutExposure(
  hostname: string,
  credentials: Credentials,
): void {
  const token = credentials.isOpen ? "" : "set";
  const loopback = hostname === "localhost" || hostname === "::1" ||
    hostname.startsWith("127.");
  const noToken =
    "no token set: anyone who can reach {hostname} can run programs here; set KILN_TOKEN";
  if (token === "" && loopback) log.warn(noToken, { hostname });
  if (token === "" && !loopback) log.error(noToken, { hostname });
}

/**
 * Plain TCP beyond this machine: programs, their output and who submitted
 * them cross the network readable by anyone on the path (the token itself
 * never does).
 */
function warnAboutPlainText(hostname: string): void {
  if (isLoopbackHostname(hostname)) return;
  log.warn(
    "listening on {hostname} without TLS: programs and their output cross the network in the clear; give --tls-cert and --tls-key",
    { hostname },
  );
}
