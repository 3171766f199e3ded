/**
 * A place where the master can run a job: its own slots
 * ({@linkcode LocalWorker}) or a connected secondary ({@linkcode RemoteWorker}).
 * The master places, restarts and cancels jobs through this one interface,
 * so neither placement nor the job's life cares which kind it is.
 *
 * @module
 */
import type { JobRequest, JobResult, OutputStream } from "../job.ts";
import type { SandboxReport } from "../sandbox/sandbox.ts";
import type { NodeLoad } from "./placement.ts";

/** A language a node can run, with its toolchain version. */
export interface OfferedLanguage {
  /** Canonical name, e.g. `python`. */
  name: string;
  /** The toolchain's version, e.g. `Python 3.11.2`. */
  version: string;
  /** Other names clients may use. */
  aliases: string[];
  /** File extensions with the dot. */
  extensions: string[];
}

/** One node as `cluster_status` reports it. */
export interface NodeStatus {
  /** The id it registered with (`local` for the master's own slots). */
  id: string;
  /** Its name. */
  name: string;
  /** Where the node connects from, or the master's listening address for itself. */
  address: string;
  /** `ready` takes jobs; `busy` is full or over a threshold; `failing` refused work lately; `draining` is leaving, finishing its jobs. */
  state: "ready" | "busy" | "failing" | "draining";
  /** Whether this is the master's own slots. */
  local: boolean;
  /** CPU busy, 0-100, from its last heartbeat. */
  cpuPercent: number;
  /** RAM in use, 0-100, from its last heartbeat. */
  ramPercent: number;
  /** Jobs the master has running on it now. */
  running: number;
  /** Jobs it runs at once. */
  slots: number;
  /** The languages it runs, with toolchain versions. */
  languages: { name: string; version: string }[];
  /** Milliseconds since its last message (0 for the master itself). */
  lastSeenMs: number;
  /** The isolation its jobs run under, or null when it did not say. */
  sandbox: SandboxReport | null;
}

/** A job handed to a worker. */
export interface WorkerJob {
  readonly id: string;
  /** Validated by the master. */
  readonly request: JobRequest;
  /** The canonical language name the master resolved. */
  readonly language: string;
  /** Who submitted it (its identity for fairness). */
  readonly client?: string | undefined;
}

/** How a worker reports on a job it was given. Exactly one of `result` or `failed` ends it. */
export interface WorkerJobEvents {
  /**
   * A node took the job (attempt `attempt`, above 1 after a lost node):
   * only from a worker that {@linkcode Worker.reportsStart}.
   */
  started?(node: string, attempt: number): void;
  /** A chunk of the program's output. */
  output(stream: OutputStream, data: string): void;
  /** The job ran to an end, whatever its verdict. */
  result(result: JobResult): void;
  /**
   * The worker could not run the job (`refused`: full, no toolchain) or
   * lost it (`lost`: the node died or went silent); the master may place
   * it elsewhere.
   */
  failed(reason: string, kind: "refused" | "lost"): void;
}

/** A node as the master sees it. */
export interface Worker {
  readonly id: string;
  readonly name: string;
  /** Where the node is: its peer address, or the master's own. */
  readonly address: string;
  /** The languages it runs, with their toolchains. */
  readonly languages: readonly OfferedLanguage[];
  /**
   * The job starts later, on a node the worker reports through
   * `events.started` (a window onto a NATS cluster, where nodes pull):
   * clients hear `started` then, not when the job is placed.
   */
  readonly reportsStart?: boolean;
  /**
   * Its load for placement; `assigned` counts the jobs the master gave it.
   * Read on every dispatch: it may hand out the same object while the load
   * is unchanged, but never changes one it handed out.
   */
  load(): NodeLoad;
  /** Starts a job; the worker reports through `events`. */
  start(job: WorkerJob, events: WorkerJobEvents): void;
  /** Stops a job it runs; its `result` (or `failed`) still follows. */
  cancel(jobId: string, reason: string): void;
  /**
   * More stdin for an interactive job it runs; `eof` ends the program's
   * stdin after `data`. Ignored for a job it does not run.
   */
  input(jobId: string, data: string, eof: boolean): void;
  /** Skip this node for placement until `until` (epoch ms), after a refusal. */
  markFailing(until: number): void;
  /** What `deno task status` shows of it. */
  status(): NodeStatus;
}
