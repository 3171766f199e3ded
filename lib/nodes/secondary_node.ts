/**
 * The secondary: a node that dials the master, registers the languages it
 * can run, reports its load every second, and runs the jobs the master
 * gives it, streaming their output back over the same connection. When the
 * master goes away it aborts its jobs (the master places them again), then
 * dials again with capped exponential back-off until it is registered once
 * more, so a restarted master heals the cluster by itself. A master that
 * says nothing for `masterTimeoutMs` (no ping, no job: stopped, or behind a
 * dead network path) counts as gone too. {@linkcode
 * SecondaryNode.drain} leaves gracefully: no new job, the running ones
 * finish, then the node shuts down.
 *
 * The conversation on one connection, after the handshake (role `secondary`):
 *
 * ```
 * secondary                                   master
 *   register {id, name, languages, slots, maxCpu, maxRam}  ->
 *             <-  registered {master, heartbeatIntervalMs}
 *   heartbeat {cpuPercent, ramPercent, ramUsedMb, running, draining?}  ->  (at once, then every interval)
 *             <-  ping                          (every interval, protocol 4 and later)
 *             <-  run {jobId, job}
 *   refused {jobId, reason}  ->                 (full, invalid job, language not offered)
 *   output {jobId, stream, data}  ->            (or, once it runs: output..., then)
 *   result {jobId, result}  ->
 *             <-  cancel {jobId}                (the job's result still follows)
 * ```
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { formatHostPort, type HostPort, parseHostPort } from "../address.ts";
import { effectiveLimits, executeJob } from "../executor.ts";
import {
  blankResult,
  checkLimits,
  type JobRequest,
  type JobResult,
  type LimitOverrides,
  type OutputStream,
} from "../job.ts";
import {
  type ResourceSample,
  type ResourceSampler,
  sampleResources,
} from "../monitor/resource_sampler.ts";
import { MAX_TIMER_MS } from "../_timer.ts";
import { Connection } from "../protocol/connection.ts";
import { ConnectionError, ProtocolError } from "../protocol/errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import {
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
} from "../protocol/handshake.ts";
import {
  type MessageOf,
  type OfferedLanguage,
  PING_PROTOCOL_VERSION,
  resultMessage,
} from "../protocol/messages.ts";
import { offerOutput } from "../protocol/output_messages.ts";
import { dial, hintTls, type TlsDialOptions } from "../protocol/transport.ts";
import {
  createDefaultRegistry,
  type ResolvedRunner,
  type RunnerRegistry,
  type RunnerResolution,
} from "../runners/registry.ts";
import type { LanguageRunner } from "../runners/runner.ts";
import {
  abortableDelay,
  backoffDelay,
  DEFAULT_SILENCE_GRACE_MS,
  settledWithin,
} from "./_timing.ts";
import { parseJob } from "./admission.ts";
import { IdleTimer } from "./idle_timer.ts";
import { removeOwnWorkRoot, sweepWorkRoots } from "./_work_roots.ts";
import { startSandbox } from "./_sandbox.ts";
import { logLanguage } from "./_log_languages.ts";
import { InputChannel } from "../sandbox/input_channel.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import type { JobStartDetail } from "./events.ts";
import { NatsCluster, type NatsOptions } from "../nats/nats_cluster.ts";
import {
  JobPuller,
  type JobPullerOptions,
  type PulledJob,
} from "../nats/job_puller.ts";
import { NODES_BUCKET } from "../nats/subjects.ts";
import type { NodeEntry } from "../nats/wire.ts";

import { TypedEventTarget } from "./typed_event_target.ts";

const log = getLogger(["kiln", "secondary"]);

/** Errors that come back on every attempt until an operator fixes something. */
const MISCONFIGURED = new Set([
  "auth_failed",
  "version_mismatch",
  "role_refused",
  "invalid_message",
  "unexpected_message",
]);

/** Options of {@linkcode SecondaryNode}. */
export interface SecondaryNodeOptions {
  /**
   * The master to dial, as `host:port` (`[::1]:7700`) or an address object.
   * Not with `nats`, where the node pulls work from the cluster instead.
   */
  master?: string | HostPort | undefined;
  /**
   * Pull jobs from a kiln cluster on NATS JetStream instead of dialing a
   * master (`--nats`): see `lib/nats/job_puller.ts`.
   */
  nats?: NatsOptions | undefined;
  /**
   * On NATS: times a job may start before a lost node ends it, counted in
   * its record by every node alike, from 1 to 10.
   * @default 3
   */
  maxAttempts?: number;
  /** Name reported to the master and as the `node` of jobs run here. @default Deno.hostname() */
  name?: string;
  /** Jobs run at once; the master is refused more. @default the number of CPUs */
  slots?: number;
  /** Above this CPU % the master should give this node no new job. @default 100 */
  maxCpu?: number;
  /** Above this RAM % the master should give this node no new job. @default 95 */
  maxRam?: number;
  /** Shared token of the cluster; empty for an open cluster. @default "" */
  token?: string;
  /** Languages this node knows. @default {@linkcode createDefaultRegistry}() */
  registry?: RunnerRegistry;
  /**
   * Offer only these languages (names or aliases known to the registry);
   * jobs in any other are refused. @default every available language
   */
  languages?: readonly string[];
  /** The node's maximum limits per job; requests may lower them. */
  limits?: LimitOverrides;
  /**
   * Interval of the load heartbeats, in ms, until the master says otherwise:
   * its `registered` answer sets the interval it expects. @default 1000
   */
  heartbeatIntervalMs?: number;
  /**
   * A master that sends nothing for this long (no ping, no job) is taken
   * for lost, in ms, from 1 to 2^31 - 1: the link is closed, its jobs are
   * stopped, and the node dials again. Masters ping every heartbeat
   * interval, so a timeout under two of them is stretched to two (with a
   * warning). A master of a protocol older than pings (before version 4)
   * is not watched: it is lost only when its link breaks.
   * @default {DEFAULT_MASTER_TIMEOUT_MS}
   */
  masterTimeoutMs?: number;
  /** First delay before dialing again after a failure, in ms. @default 100 */
  reconnectMinMs?: number;
  /** Longest delay between two dials, in ms. @default 5000 */
  reconnectMaxMs?: number;
  /** Where the heartbeats' numbers come from. @default {@linkcode sampleResources} */
  sampleResources?: ResourceSampler;
  /** Directory for job workdirs. @default the system temp dir */
  workRoot?: string;
  /**
   * The sandbox jobs run in (`Sandbox.detect()` with the node's mode).
   * @default the strongest this host has, every missing layer warned about
   */
  sandbox?: Sandbox;
  /** Largest frame sent to or accepted from the master, in bytes. @default 8 MiB */
  maxFrameBytes?: number;
  /** Time allowed for the handshake (TLS, then kiln's), and then for the master's `registered`. @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * Speak TLS to the master and check its certificate: `true` trusts Deno's
   * default roots; `{ caCerts }` also trusts these CAs (PEM), such as the
   * one `deno task gen-certs` makes. Plain TCP when absent.
   */
  tls?: true | TlsDialOptions;
  /**
   * How long {@linkcode SecondaryNode.drain} waits for running jobs before
   * it stops them (the master places them again), in ms, from 0 to
   * {@linkcode MAX_DRAIN_TIMEOUT_MS}.
   * @default {DEFAULT_DRAIN_TIMEOUT_MS}
   */
  drainTimeoutMs?: number;
  /** Aborting it shuts the node down, like {@linkcode SecondaryNode.shutdown}. */
  signal?: AbortSignal;
}

/**
 * The default of {@linkcode SecondaryNodeOptions.masterTimeoutMs}: five
 * seconds, the master's own default for its secondaries.
 */
export const DEFAULT_MASTER_TIMEOUT_MS = 5000;

/** The default of {@linkcode SecondaryNodeOptions.drainTimeoutMs}: a minute. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 60_000;
/** The largest {@linkcode SecondaryNodeOptions.drainTimeoutMs}: a day. */
export const MAX_DRAIN_TIMEOUT_MS = 86_400_000;

/** The node was accepted by the master. */
export interface SecondaryRegisteredDetail {
  /** The master's address as dialed, `host:port`. */
  readonly master: string;
  /** The name this node registered under. */
  readonly name: string;
}

/** The node lost the master it was registered with; it dials again. */
export interface SecondaryDisconnectedDetail {
  /** Why, e.g. `master closed the connection`. */
  readonly reason: string;
}

/** An attempt to dial, authenticate and register failed; another follows. */
export interface SecondaryConnectFailedDetail {
  /** What went wrong: a {@linkcode ConnectionError}, a {@linkcode ProtocolError}, ... */
  readonly error: Error;
  /** When the next attempt starts, in ms from now. */
  readonly retryInMs: number;
}

/** Every event of a secondary node, by type. */
export interface SecondaryNodeEventMap {
  /** The master accepted the registration (again, after a reconnection). */
  registered: CustomEvent<SecondaryRegisteredDetail>;
  /** The connection to the master was lost; running jobs were aborted. */
  disconnected: CustomEvent<SecondaryDisconnectedDetail>;
  /** An attempt to reach and register with the master failed. */
  connectfailed: CustomEvent<SecondaryConnectFailedDetail>;
  /** A job the master gave this node started. */
  jobstart: CustomEvent<JobStartDetail>;
  /** A job ended, here; its result went to the master if it was still there. */
  jobcomplete: CustomEvent<JobResult>;
}

/** A job this node runs, or has accepted and is about to run. */
interface SecondaryJob {
  readonly abort: AbortController;
  /** Stdin typed while an interactive job runs; none for the others. */
  readonly input: InputChannel | undefined;
}

/** Where a job's output and result go: the master's link, or NATS. */
interface JobReport {
  /** Streams a chunk; false once the receiver takes no more (the rest is dropped). */
  output(stream: OutputStream, data: string): boolean;
  /** Delivers the result; settles once it is out (or could not go). */
  result(result: JobResult): Promise<unknown>;
  /** The job cannot run here: the master (or the cluster) places it again. */
  refuse(reason: string): void;
}

/**
 * A secondary node. It starts when constructed, like `Deno.serve`: it
 * detects its toolchains ({@linkcode ready}), then dials the master and
 * stays registered with it until {@linkcode shutdown}, dialing again
 * whenever the connection is lost or cannot be made.
 *
 * @example A master and a secondary on this machine
 * ```ts
 * import { MasterNode } from "../../mod.ts";
 * import { SecondaryNode } from "./secondary_node.ts";
 *
 * await using master = new MasterNode({ port: 0, slots: 1, resourceLogIntervalMs: 0 });
 * await using secondary = new SecondaryNode({ master: master.addr, name: "w1", slots: 2 });
 * secondary.addEventListener("registered", (event) => {
 *   console.log(`registered with ${event.detail.master} as ${event.detail.name}`);
 * });
 * await secondary.ready; // toolchains detected; dialing the master
 * ```
 */
export class SecondaryNode extends TypedEventTarget<SecondaryNodeEventMap>
  implements AsyncDisposable {
  /** Random per node: tells the master a restarted node from a reconnecting one. */
  readonly id: string = crypto.randomUUID();
  /**
   * Random per node and never shown: proves to the master that a
   * registration under {@linkcode id} comes from this node, so that nobody
   * who read the id from a status can take its place.
   */
  readonly #secret: string = randomSecret();
  /** The name this node registers under and reports as the `node` of its jobs. */
  readonly name: string;
  /** The master's address, `host:port`; on NATS, the servers' URLs. */
  readonly master: string;
  /**
   * Resolves once the toolchains are detected and the node starts dialing;
   * rejects, and the node shuts down, when no language is left to offer.
   */
  readonly ready: Promise<void>;
  /** Resolves when the node has shut down. */
  readonly finished: Promise<void>;

  readonly #address: HostPort | undefined;
  readonly #nats: NatsOptions | undefined;
  readonly #maxAttempts: number;
  /** On NATS: wakes the puller when a slot frees. */
  #puller: JobPuller | undefined;
  readonly #slots: number;
  readonly #maxCpu: number;
  readonly #maxRam: number;
  readonly #token: string;
  readonly #registry: RunnerRegistry;
  /** The runners the `languages` option allows; undefined allows all. */
  readonly #allowed: ReadonlySet<LanguageRunner> | undefined;
  readonly #limits: LimitOverrides;
  readonly #heartbeatIntervalMs: number;
  readonly #masterTimeoutMs: number;
  readonly #reconnectMinMs: number;
  readonly #reconnectMaxMs: number;
  readonly #sampler: ResourceSampler;
  readonly #workRoot: string | undefined;
  /** The sandbox given, then the one in use once `#main` started it. */
  #sandbox: Sandbox | undefined;
  readonly #maxFrameBytes: number;
  readonly #handshakeTimeoutMs: number;
  readonly #tls: true | TlsDialOptions | undefined;
  /** The jobs holding a slot: accepted, running, their result not yet told. */
  readonly #jobs = new Map<string, SecondaryJob>();
  /**
   * Every job's whole life, settling (never rejecting) once its result is
   * out and its sandbox cleaned up: a drain or a lost master waits for it.
   */
  readonly #unfinished = new Set<Promise<void>>();
  /** Aborted at shutdown: ends dials, back-off waits and heartbeats. */
  readonly #stopping = new AbortController();
  readonly #readiness = Promise.withResolvers<void>();
  #offered: readonly ResolvedRunner[] = [];
  #connection: Connection | undefined;
  #registered = false;
  #closing = false;
  /** Set by `drain()`: no new job is taken, and the master knows it. */
  #draining = false;
  readonly #drainTimeoutMs: number;
  #lastError: Error | undefined;
  #lastSample: ResourceSample = { cpuPercent: 0, ramPercent: 0, ramUsedMb: 0 };
  #sampling: Promise<void> | undefined;

  /**
   * Starts the node.
   *
   * @throws {TypeError} when `master` is not an address.
   * @throws {RangeError} when a number is out of range, or `languages`
   * names a language the registry does not know.
   */
  constructor(options: SecondaryNodeOptions) {
    super();
    const {
      master,
      nats,
      maxAttempts = 3,
      name = Deno.hostname(),
      slots = navigator.hardwareConcurrency,
      maxCpu = 100,
      maxRam = 95,
      token = "",
      registry = createDefaultRegistry(),
      languages,
      limits = {},
      heartbeatIntervalMs = 1000,
      masterTimeoutMs = DEFAULT_MASTER_TIMEOUT_MS,
      reconnectMinMs = 100,
      reconnectMaxMs = 5000,
      sampleResources: sampler = sampleResources,
      workRoot,
      sandbox,
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
      tls,
      drainTimeoutMs = DEFAULT_DRAIN_TIMEOUT_MS,
      signal,
    } = options;
    if ((master === undefined) === (nats === undefined)) {
      throw new TypeError(
        "Cannot start secondary: give either a master to dial or nats to pull from, not both or neither",
      );
    }
    this.#address = typeof master === "string" ? parseHostPort(master) : master;
    this.#nats = nats;
    this.master = this.#address
      ? formatHostPort(this.#address)
      : nats!.servers.join(",");
    checkRange("maxAttempts", maxAttempts, 1, 10, true);
    this.#maxAttempts = maxAttempts;
    if (name.length < 1 || name.length > 128) {
      throw new RangeError(
        `Cannot start secondary: name must be 1-128 characters, got "${name}"`,
      );
    }
    checkRange("slots", slots, 1, 4096, true);
    checkRange("maxCpu", maxCpu, 0, 100);
    checkRange("maxRam", maxRam, 0, 100);
    checkLimits(limits, "secondary limits");
    checkRange("heartbeatIntervalMs", heartbeatIntervalMs, 1, 2 ** 31 - 1);
    checkRange("masterTimeoutMs", masterTimeoutMs, 1, MAX_TIMER_MS);
    checkRange("reconnectMinMs", reconnectMinMs, 1, 2 ** 31 - 1);
    checkRange("reconnectMaxMs", reconnectMaxMs, reconnectMinMs, 2 ** 31 - 1);
    checkRange(
      "drainTimeoutMs",
      drainTimeoutMs,
      0,
      MAX_DRAIN_TIMEOUT_MS,
      true,
    );
    this.#drainTimeoutMs = drainTimeoutMs;
    this.name = name;
    this.#slots = slots;
    this.#maxCpu = maxCpu;
    this.#maxRam = maxRam;
    this.#token = token;
    this.#registry = registry;
    this.#allowed = languages === undefined
      ? undefined
      : allowedRunners(registry, languages);
    this.#limits = limits;
    this.#heartbeatIntervalMs = heartbeatIntervalMs;
    this.#masterTimeoutMs = masterTimeoutMs;
    this.#reconnectMinMs = reconnectMinMs;
    this.#reconnectMaxMs = reconnectMaxMs;
    this.#sampler = sampler;
    this.#workRoot = workRoot;
    this.#sandbox = sandbox;
    this.#maxFrameBytes = maxFrameBytes;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#tls = tls;
    this.ready = this.#readiness.promise;
    // Whoever awaits `ready` sees its rejection; nobody has to.
    this.ready.catch(() => {});

    const onAbort = () => void this.shutdown();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.finished = this.#main().finally(() =>
      signal?.removeEventListener("abort", onAbort)
    );
    if (signal?.aborted) void this.shutdown();
  }

  /** Whether the node is registered with the master right now. */
  get registered(): boolean {
    return this.#registered;
  }

  /** Jobs running now (including those accepted and about to start). */
  get running(): number {
    return this.#jobs.size;
  }

  /**
   * The latest failure to reach, authenticate with, register with or stay
   * connected to the master (or to start at all); undefined until one
   * happens. It is kept after the node registers again.
   */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /**
   * The languages offered to the master, with their toolchain versions;
   * empty until {@linkcode ready}.
   */
  get languages(): OfferedLanguage[] {
    return this.#offered.map(offeredLanguage);
  }

  /**
   * Stops dialing, closes the connection to the master (which places the
   * running jobs elsewhere), kills every running job and resolves
   * {@linkcode finished}.
   */
  async shutdown(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#stopping.abort();
      await this.#connection?.close();
      this.#abortJobs("the secondary is shutting down");
    }
    await this.finished;
  }

  /** Whether {@linkcode drain} has begun: no new job is taken. */
  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Leaves gracefully: takes no new job (the master is told at once, and
   * places nothing more here), lets the running ones finish and deliver
   * their results for up to `drainTimeoutMs`, then shuts down as
   * {@linkcode shutdown} does, stopping whatever still runs. Resolves with
   * {@linkcode finished}. A {@linkcode shutdown} meanwhile stops at once.
   */
  async drain(): Promise<void> {
    if (this.#closing || this.#draining) return await this.finished;
    this.#draining = true;
    const running = [...this.#unfinished];
    log.info(
      "draining: taking no new job; waiting up to {ms} ms for {running} running",
      { ms: this.#drainTimeoutMs, running: running.length },
    );
    // Told at once, not at the next heartbeat, so it places nothing more here.
    if (this.#registered) {
      this.#connection?.post(this.#heartbeat());
    }
    await settledWithin(
      Promise.all(running),
      this.#drainTimeoutMs,
      this.#stopping.signal,
    );
    if (!this.#closing && this.#jobs.size > 0) {
      log.warn(
        "drain timed out after {ms} ms: stopping {running} jobs (the master places them again)",
        { ms: this.#drainTimeoutMs, running: this.#jobs.size },
      );
    }
    await this.shutdown();
  }

  /** Shuts the node down; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  /** The node's whole life. Never rejects. */
  async #main(): Promise<void> {
    await sweepWorkRoots();
    this.#sandbox = await startSandbox(this.#sandbox);
    try {
      await this.#detectLanguages();
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      this.#lastError = failure;
      log.error("{message}", { message: failure.message });
      this.#closing = true;
      this.#readiness.reject(failure);
      return;
    }
    this.#readiness.resolve();
    if (this.#nats) {
      await this.#serveNats(this.#nats);
      await removeOwnWorkRoot();
      log.info("secondary {name} stopped", { name: this.name });
      return;
    }
    let attempt = 0;
    while (!this.#closing) {
      const session = await this.#connectOnce();
      // A drain ends with the link: its jobs, if any, were stopped with it.
      if (this.#closing || this.#draining) break;
      this.#lastError = session.error;
      // A link that held for a while starts the back-off over; one that
      // breaks as soon as it is made keeps backing off, so a master that
      // drops us at once is not hammered.
      if (session.upMs >= this.#reconnectMaxMs) attempt = 0;
      const retryInMs = backoffDelay(attempt++, {
        minMs: this.#reconnectMinMs,
        maxMs: this.#reconnectMaxMs,
      });
      if (session.registered) {
        const reason = session.error.message;
        log.warn("lost the master: {reason}; reconnecting in {ms} ms", {
          reason,
          ms: retryInMs,
        });
        this.emit("disconnected", { reason });
      } else {
        this.#logFailure(session.error, retryInMs);
        this.emit("connectfailed", { error: session.error, retryInMs });
      }
      await abortableDelay(retryInMs, this.#stopping.signal);
    }
    await removeOwnWorkRoot();
    log.info("secondary {name} stopped", { name: this.name });
  }

  /**
   * On NATS: connects (again, with back-off, until it can or the node
   * stops), says it is alive in the nodes bucket on every heartbeat, and
   * pulls jobs while it has room, until the node shuts down. Never rejects.
   */
  async #serveNats(options: NatsOptions): Promise<void> {
    let cluster: NatsCluster | undefined;
    for (let attempt = 0; !this.#closing && cluster === undefined;) {
      try {
        cluster = await NatsCluster.connect({
          ...options,
          name: `kiln secondary ${this.name}`,
        });
      } catch (error) {
        const failure = error instanceof Error
          ? error
          : new Error(String(error));
        this.#lastError = failure;
        const retryInMs = backoffDelay(attempt++, {
          minMs: this.#reconnectMinMs,
          maxMs: this.#reconnectMaxMs,
        });
        log.warn("{reason}; retrying in {ms} ms", {
          reason: failure.message,
          ms: retryInMs,
        });
        this.emit("connectfailed", { error: failure, retryInMs });
        await abortableDelay(retryInMs, this.#stopping.signal);
      }
    }
    if (cluster === undefined) return;
    const stop = this.#stopping.signal;
    const heartbeats = this.#natsHeartbeats(cluster, stop);
    this.#puller = new JobPuller({
      cluster,
      languages: this.#offered.map(({ runner }) => runner.name),
      node: this.name,
      maxAttempts: this.#maxAttempts,
      hasRoom: () =>
        !this.#closing && !this.#draining && this.#jobs.size < this.#slots &&
        this.#lastSample.cpuPercent <= this.#maxCpu &&
        this.#lastSample.ramPercent <= this.#maxRam,
      run: (job) => this.#runPulled(job),
    });
    this.#registered = true;
    log.info("pulling jobs from NATS at {servers} as {name}", {
      servers: this.master,
      name: this.name,
    });
    this.emit("registered", { master: this.master, name: this.name });
    await new Promise<void>((resolve) => {
      if (stop.aborted) return resolve();
      stop.addEventListener("abort", () => resolve(), { once: true });
    });
    this.#registered = false;
    // Jobs stopped by the shutdown are handed back, for another node.
    await this.#puller.stop();
    await heartbeats;
    await Promise.all(this.#unfinished);
    // Closed, not drained: a pull still waiting would hold a drain until it
    // expires. What must be out (results, acks, this node's removal) is.
    // Acks and events not waited for go out first.
    await cluster.connection.flush().catch(() => {});
    await cluster.connection.close();
    await this.#puller.finished;
  }

  /**
   * Runs a job pulled from NATS: takes its slot at once, and reports to the
   * cluster. A job stopped because this node shuts down is handed back,
   * not ended: another node runs it.
   */
  #runPulled(pulled: PulledJob): ReturnType<JobPullerOptions["run"]> {
    const parsed = parseJob(pulled.request);
    const job: SecondaryJob = {
      abort: new AbortController(),
      input: parsed.ok && parsed.request.interactive
        ? new InputChannel()
        : undefined,
    };
    const queuedMs = Math.max(0, Date.now() - pulled.acceptedAt);
    const fail = (verdict: "rejected" | "internal_error", reason: string) =>
      pulled.finish(blankResult(pulled.id, {
        verdict,
        client: pulled.client,
        node: this.name,
        queuedMs,
        reason,
      }));
    let done: Promise<unknown>;
    if (!parsed.ok) {
      done = fail("rejected", parsed.reason);
    } else {
      this.#jobs.set(pulled.id, job);
      done = this.#execute(pulled.id, parsed.request, job, {
        output: (stream, data) => {
          pulled.output(stream, data);
          return true;
        },
        result: (result) =>
          this.#closing
            ? pulled.handBack()
            : pulled.finish({ ...result, client: pulled.client, queuedMs }),
        refuse: (reason) => void fail("internal_error", reason),
      });
    }
    const settled = done.then(() => {}, () => {});
    this.#unfinished.add(settled);
    settled.finally(() => this.#unfinished.delete(settled));
    return {
      controls: {
        cancel: (reason) => job.abort.abort(`cancelled: ${reason}`),
        input: (data, eof) => {
          job.input?.push(data);
          if (eof) job.input?.end();
        },
      },
      done: settled,
    };
  }

  /**
   * On NATS: the node's entry in the nodes bucket, written at once and then
   * every heartbeat interval until `stop`; removed as the node leaves, so
   * that masters stop counting it at once. Never rejects.
   */
  async #natsHeartbeats(
    cluster: NatsCluster,
    stop: AbortSignal,
  ): Promise<void> {
    const intervalMs = this.#heartbeatIntervalMs;
    while (!stop.aborted) {
      await this.#sample(intervalMs, stop);
      if (stop.aborted) break;
      const entry: NodeEntry = {
        id: this.id,
        name: this.name,
        address: Deno.hostname(),
        slots: this.#slots,
        ...this.#lastSample,
        running: this.#jobs.size,
        maxCpu: this.#maxCpu,
        maxRam: this.#maxRam,
        draining: this.#draining,
        languages: this.languages,
        sandbox: this.#sandbox?.report ?? null,
        at: Date.now(),
      };
      await cluster.nodes.put(this.id, JSON.stringify(entry)).catch((error) =>
        log.warn("cannot write this node to the {bucket} bucket: {error}", {
          bucket: NODES_BUCKET,
          error,
        })
      );
      // The load may have dropped under the thresholds.
      this.#puller?.wake();
      await abortableDelay(intervalMs, stop);
    }
    await cluster.nodes.delete(this.id).catch(() => {});
  }

  /** Detects toolchains once and picks the languages to offer; throws when none is left. */
  async #detectLanguages(): Promise<void> {
    const statuses = await this.#registry.detect();
    const available = await this.#registry.available();
    this.#offered = available.filter(({ runner }) =>
      this.#allowed?.has(runner) ?? true
    );
    for (const status of statuses) {
      const runner = this.#registry.get(status.name);
      if (this.#allowed && runner && !this.#allowed.has(runner)) continue;
      logLanguage(log, status);
    }
    if (this.#offered.length > 0) return;
    const considered = statuses.filter((status) => {
      const runner = this.#registry.get(status.name);
      return !this.#allowed || (runner !== undefined &&
        this.#allowed.has(runner));
    });
    const why = considered.map(({ name, toolchain }) =>
      `${name}: ${toolchain.available ? "available" : toolchain.reason}`
    ).join("; ");
    throw new Error(
      `Cannot start secondary "${this.name}": no language to offer${
        this.#allowed
          ? ` among ${considered.map((s) => s.name).join(", ")}`
          : ""
      } (${why || "the registry is empty"})`,
    );
  }

  /**
   * One connection: dial, handshake, register, then serve jobs until it
   * ends. Never throws: says whether the node got registered, for how long,
   * and why the connection ended.
   */
  async #connectOnce(): Promise<
    { registered: boolean; upMs: number; error: Error }
  > {
    let conn: Deno.Conn;
    try {
      conn = await dial(this.#address!, {
        tls: this.#tls,
        signal: this.#stopping.signal,
        timeoutMs: this.#handshakeTimeoutMs,
      });
    } catch (error) {
      return {
        registered: false,
        upMs: 0,
        error: error instanceof Error ? error : new Error(String(error)),
      };
    }
    const connection = new Connection(conn, {
      maxFrameBytes: this.#maxFrameBytes,
      peerName: "master",
    });
    this.#connection = connection;
    if (this.#closing) await connection.close();
    try {
      const { heartbeatIntervalMs, version } = await this.#register(
        connection,
      );
      const registeredAt = performance.now();
      this.#registered = true;
      log.info("registered with {master} as {name}", {
        master: this.master,
        name: this.name,
      });
      this.emit("registered", { master: this.master, name: this.name });
      const linkDown = new AbortController();
      const heartbeats = this.#heartbeats(
        connection,
        heartbeatIntervalMs,
        linkDown.signal,
      );
      let silence: ProtocolError | undefined;
      const watch = this.#watchMaster(version, heartbeatIntervalMs, (error) => {
        silence = error;
        void connection.close(error);
      });
      try {
        const error = await this.#serve(connection, watch);
        return {
          registered: true,
          upMs: performance.now() - registeredAt,
          // The link closed because the master fell silent: say that.
          error: silence ?? error,
        };
      } finally {
        watch?.[Symbol.dispose]();
        this.#registered = false;
        linkDown.abort();
        await heartbeats;
      }
    } catch (error) {
      return {
        registered: false,
        upMs: 0,
        error: error instanceof Error ? error : new Error(String(error)),
      };
    } finally {
      await connection.close();
      // The master places these jobs again; their results have nowhere to go.
      this.#abortJobs("the connection to the master was lost");
      await Promise.all(this.#unfinished);
      this.#connection = undefined;
    }
  }

  /**
   * Handshake and registration; resolves with the heartbeat interval the
   * master wants and the protocol version agreed on.
   */
  async #register(
    connection: Connection,
  ): Promise<{ heartbeatIntervalMs: number; version: number }> {
    let version: number;
    try {
      ({ version } = await clientHandshake(connection, {
        role: "secondary",
        token: this.#token,
        name: this.name,
        timeoutMs: this.#handshakeTimeoutMs,
      }));
    } catch (error) {
      // Over TLS the master's hang-up means something else: let it speak.
      throw this.#tls === undefined ? hintTls(error) : error;
    }
    await connection.send({
      type: "register",
      id: this.id,
      secret: this.#secret,
      name: this.name,
      languages: this.languages,
      slots: this.#slots,
      maxCpu: this.#maxCpu,
      maxRam: this.#maxRam,
      limits: effectiveLimits(this.#limits),
      ...this.#sandbox ? { sandbox: this.#sandbox.report } : {},
      maxFrameBytes: this.#maxFrameBytes,
    });
    let answer;
    try {
      answer = await connection.receive(this.#handshakeTimeoutMs);
    } catch (error) {
      if (error instanceof ProtocolError && error.code === "timeout") {
        throw new ProtocolError(
          "timeout",
          `the master did not answer our registration within ${this.#handshakeTimeoutMs} ms`,
        );
      }
      throw error;
    }
    if (answer.type !== "registered") {
      throw new ProtocolError(
        "unexpected_message",
        `the master answered our registration with "${answer.type}" instead of "registered"`,
      );
    }
    // Output and results must fit the master's frames, not only ours.
    connection.peerMaxFrameBytes = answer.maxFrameBytes;
    return {
      heartbeatIntervalMs: answer.heartbeatIntervalMs ??
        this.#heartbeatIntervalMs,
      version,
    };
  }

  /**
   * Watches a registered master's silence: `onSilent` is called once it
   * has sent nothing (pings included) for `masterTimeoutMs`, with the
   * error that says so. None for a master whose protocol predates pings.
   * The master pings every `pingIntervalMs`; a stalled event loop here gets
   * a grace to read what waited unread before the master is judged.
   */
  #watchMaster(
    version: number,
    pingIntervalMs: number,
    onSilent: (error: ProtocolError) => void,
  ): IdleTimer | undefined {
    if (version < PING_PROTOCOL_VERSION) {
      log.info(
        "the master speaks protocol {version}, which has no pings: a master that goes silent without closing the link is not noticed",
        { version },
      );
      return undefined;
    }
    let timeoutMs = this.#masterTimeoutMs;
    if (timeoutMs < 2 * pingIntervalMs) {
      timeoutMs = Math.min(2 * pingIntervalMs, MAX_TIMER_MS);
      log.warn(
        "the master pings every {interval} ms: waiting {timeout} ms for it before taking it for lost, not {configured} ms",
        {
          interval: pingIntervalMs,
          timeout: timeoutMs,
          configured: this.#masterTimeoutMs,
        },
      );
    }
    return new IdleTimer(timeoutMs, (silentMs) => {
      onSilent(
        new ProtocolError(
          "timeout",
          `the master sent nothing for ${
            Math.round(silentMs)
          } ms, past the node timeout of ${timeoutMs} ms`,
        ),
      );
    }, { graceMs: Math.min(DEFAULT_SILENCE_GRACE_MS, pingIntervalMs) });
  }

  /**
   * Reads the master's messages until the connection ends; returns why it
   * ended. Every message, valid or not, tells `watch` the master is there.
   */
  async #serve(
    connection: Connection,
    watch: IdleTimer | undefined,
  ): Promise<Error> {
    while (true) {
      let message;
      try {
        message = await connection.receive();
        watch?.touch();
      } catch (error) {
        if (
          error instanceof ProtocolError && error.code === "invalid_message"
        ) {
          watch?.touch();
          log.warn("ignoring an invalid message from the master: {message}", {
            message: error.message,
          });
          continue;
        }
        return error instanceof Error ? error : new Error(String(error));
      }
      switch (message.type) {
        case "run":
          this.#run(connection, message);
          break;
        case "cancel":
          this.#jobs.get(message.jobId)?.abort.abort("cancelled by the master");
          break;
        case "stdin": {
          const input = this.#jobs.get(message.jobId)?.input;
          input?.push(message.data);
          if (message.eof) input?.end();
          break;
        }
        case "ping": // Its whole point was to arrive.
          break;
        default:
          log.warn('ignoring an unexpected "{type}" message from the master', {
            type: message.type,
          });
      }
    }
  }

  /** Takes a job or refuses it; the slot is taken before anything is awaited. */
  #run(connection: Connection, { jobId, job: raw }: MessageOf<"run">): void {
    const refuse = (reason: string) => {
      log.info("refused job {jobId}: {reason}", { jobId, reason });
      connection.post({
        type: "refused",
        jobId,
        reason: reason.slice(0, 4096),
      });
    };
    if (this.#closing) return refuse("the secondary is shutting down");
    if (this.#draining) {
      return refuse(`"${this.name}" is draining: it takes no new job`);
    }
    if (this.#jobs.has(jobId)) {
      return refuse(`job ${jobId} is already running here`);
    }
    if (this.#jobs.size >= this.#slots) {
      return refuse(
        `full: all ${this.#slots} slots of "${this.name}" are busy`,
      );
    }
    const parsed = parseJob(raw);
    if (!parsed.ok) return refuse(parsed.reason);
    const job: SecondaryJob = {
      abort: new AbortController(),
      input: parsed.request.interactive ? new InputChannel() : undefined,
    };
    this.#jobs.set(jobId, job);
    const done = this.#execute(jobId, parsed.request, job, {
      output: (stream, data) =>
        offerOutput(connection, { type: "output", jobId, stream, data }),
      result: (result) => sendResult(connection, result),
      refuse,
    });
    // Until its cleanup is over, which may be after its slot was freed.
    this.#unfinished.add(done);
    done.finally(() => this.#unfinished.delete(done));
  }

  /** Resolves the job's language and runs it, then sends its result. Never rejects. */
  async #execute(
    jobId: string,
    request: JobRequest,
    job: SecondaryJob,
    report: JobReport,
  ): Promise<void> {
    const { refuse } = report;
    try {
      const resolution = await this.#resolve(request.language);
      if (!resolution.ok) {
        this.#jobs.delete(jobId);
        this.#puller?.wake();
        return refuse(resolution.reason);
      }
      const language = resolution.resolved.runner.name;
      log.info("job {jobId} ({language}) started", { jobId, language });
      this.emit("jobstart", { jobId, node: this.name, language });
      // Output the master does not take in time is dropped, not buffered:
      // the rest of it is not streamed, and the result says `truncated`.
      let outputLost = false;
      let sent: Promise<unknown> | undefined;
      await executeJob(resolution.resolved, request, {
        jobId,
        nodeName: this.name,
        limits: this.#limits,
        ...this.#sandbox ? { sandbox: this.#sandbox } : {},
        signal: job.abort.signal,
        ...job.input ? { input: job.input } : {},
        onOutput: (stream, data) => {
          if (outputLost) return;
          outputLost = !report.output(stream, data);
        },
        ...this.#workRoot ? { workRoot: this.#workRoot } : {},
        // Told before the cleanup, which goes on after the slot is freed.
        onResult: (ran) => {
          const result = outputLost ? { ...ran, truncated: true } : ran;
          // The slot is free before the master hears of it, so it may reuse it at once.
          this.#jobs.delete(jobId);
          this.#puller?.wake();
          log.info(
            "job {jobId} ({language}) finished: {verdict} in {timeMs} ms",
            { jobId, language, verdict: result.verdict, timeMs: result.timeMs },
          );
          sent = report.result(result);
          this.emit("jobcomplete", result);
        },
      });
      // Awaited, so that a drain closes the link only once it is out.
      await sent;
    } catch (error) {
      // executeJob never throws; a listener of ours might. Whatever broke,
      // the master must hear of the job once: a refusal places it again
      // (and is ignored if its result already went out).
      this.#jobs.delete(jobId);
      this.#puller?.wake();
      log.error("job {jobId} failed: {error}", { jobId, error });
      refuse(
        `internal error on "${this.name}": ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
  }

  /** The registry's answer, narrowed to the languages this node offers. */
  async #resolve(language: string): Promise<RunnerResolution> {
    const resolution = await this.#registry.resolve(language);
    const offered = this.#offered.map(({ runner }) => runner.name).join(", ");
    if (resolution.ok) {
      const { runner } = resolution.resolved;
      if (this.#allowed?.has(runner) ?? true) return resolution;
      return {
        ok: false,
        problem: "toolchain_unavailable",
        runner,
        reason:
          `language "${runner.name}" is not offered by "${this.name}" (it offers ${offered})`,
      };
    }
    if (resolution.problem === "unknown_language") {
      return {
        ...resolution,
        reason: `${resolution.reason}; "${this.name}" offers ${offered}`,
      };
    }
    return resolution;
  }

  /**
   * Samples the node's load for the next heartbeat. A slow sampler delays
   * a heartbeat by at most `withinMs`: the last numbers go out instead, and
   * samples never overlap. Never rejects.
   */
  async #sample(withinMs: number, stop: AbortSignal): Promise<void> {
    this.#sampling ??= this.#sampler().then(
      (sample) => void (this.#lastSample = cleanSample(sample)),
      (error) => log.warn("cannot sample resources: {error}", { error }),
    ).finally(() => this.#sampling = undefined);
    await settledWithin(this.#sampling, withinMs, stop);
  }

  /** Sends a heartbeat at once, then every interval, until `stop` aborts. Never rejects. */
  async #heartbeats(
    connection: Connection,
    intervalMs: number,
    stop: AbortSignal,
  ): Promise<void> {
    while (!stop.aborted) {
      await this.#sample(intervalMs, stop);
      if (stop.aborted) return;
      connection.post(this.#heartbeat());
      await abortableDelay(intervalMs, stop);
    }
  }

  /** The heartbeat message with the latest numbers. */
  #heartbeat(): MessageOf<"heartbeat"> {
    return {
      type: "heartbeat",
      ...this.#lastSample,
      running: this.#jobs.size,
      ...this.#draining ? { draining: true } : {},
    };
  }

  #abortJobs(reason: string): void {
    for (const job of this.#jobs.values()) job.abort.abort(reason);
  }

  #logFailure(error: Error, retryInMs: number): void {
    if (error instanceof ConnectionError) {
      log.warn(
        "cannot reach the master at {master}: {reason}; retrying in {ms} ms",
        {
          master: this.master,
          reason: error.message.slice(
            `Cannot connect to master at ${this.master}: `.length,
          ),
          ms: retryInMs,
        },
      );
      return;
    }
    const properties = { master: this.master, reason: error.message };
    const template =
      "cannot register with {master}: {reason}; retrying in {ms} ms";
    // Wrong token, version or role: an operator must act, so say it loudly.
    if (error instanceof ProtocolError && MISCONFIGURED.has(error.code)) {
      log.error(template, { ...properties, ms: retryInMs });
    } else {
      log.warn(template, { ...properties, ms: retryInMs });
    }
  }
}

/**
 * Sends a job's result, its output cut to fit the master's frames. One that
 * still does not fit (a huge reason, say) goes as an `internal_error` that
 * says so: the master must hear of the job, and the link must not suffer.
 */
function sendResult(
  connection: Connection,
  result: JobResult,
): Promise<void> {
  return connection.send(resultMessage(result, connection.maxSendFrameBytes))
    .catch(
      (error) => {
        if (
          !(error instanceof ProtocolError) || error.code !== "frame_too_large"
        ) {
          return;
        }
        connection.send({
          type: "result",
          jobId: result.jobId,
          result: blankResult(result.jobId, {
            language: result.language,
            node: result.node,
            sandbox: result.sandbox,
            truncated: true,
            reason:
              `the result does not fit the master's frames: ${error.message}`,
          }),
        }).catch(() => {});
      },
    );
}

function checkRange(
  name: string,
  value: number,
  min: number,
  max: number,
  integer = false,
): void {
  if (
    typeof value !== "number" || Number.isNaN(value) || value < min ||
    value > max || (integer && !Number.isInteger(value))
  ) {
    throw new RangeError(
      `Cannot start secondary: ${name} must be ${
        integer ? "an integer" : "a number"
      } from ${min} to ${max}, got ${value}`,
    );
  }
}

/** The runners named by `languages`; a RangeError names every unknown one. */
function allowedRunners(
  registry: RunnerRegistry,
  languages: readonly string[],
): Set<LanguageRunner> {
  const unknown = languages.filter((language) => !registry.get(language));
  if (unknown.length > 0) {
    const known = registry.list().map((runner) => runner.name).join(", ");
    throw new RangeError(
      `Cannot start secondary: unknown ${
        unknown.length === 1 ? "language" : "languages"
      } ${unknown.map((name) => `"${name}"`).join(", ")} (known: ${known})`,
    );
  }
  return new Set(languages.map((language) => registry.get(language)!));
}

function offeredLanguage({ runner, toolchain }: ResolvedRunner) {
  return {
    name: runner.name,
    version: toolchain.version.slice(0, 256),
    aliases: runner.aliases.slice(0, 32),
    extensions: runner.extensions.slice(0, 32),
  } satisfies OfferedLanguage;
}

/** 32 random bytes as hex. */
function randomSecret(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}

/** A sample the heartbeat schema accepts, whatever the sampler returned. */
function cleanSample(sample: ResourceSample): ResourceSample {
  const percent = (value: number) =>
    Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : 0;
  return {
    cpuPercent: percent(sample.cpuPercent),
    ramPercent: percent(sample.ramPercent),
    ramUsedMb: Number.isFinite(sample.ramUsedMb)
      ? Math.max(0, sample.ramUsedMb)
      : 0,
  };
}
