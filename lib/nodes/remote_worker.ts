/**
 * A connected secondary as the master sees it: jobs go out as `run`
 * messages over the secondary's one connection and come back as `output`,
 * `result` or `refused`, multiplexed by job id. A closed connection, or
 * silence past the deadline, loses the node and every job it had.
 *
 * @module
 */
import { effectiveLimits } from "../job.ts";
import type { Connection } from "../protocol/connection.ts";
import type {
  MessageOf,
  NodeStatus,
  OfferedLanguage,
} from "../protocol/messages.ts";
import { type NodeLoad, nodeState } from "../scheduler/placement.ts";
import type {
  Worker,
  WorkerJob,
  WorkerJobEvents,
} from "../scheduler/worker.ts";

/** Options of {@linkcode RemoteWorker}. */
export interface RemoteWorkerOptions {
  /** The secondary's connection, past the handshake and its `register`. */
  readonly connection: Connection;
  readonly registration: MessageOf<"register">;
  /** Silence longer than this loses the node. */
  readonly nodeTimeoutMs: number;
  /** Called once when the node is lost, before its jobs are failed. */
  readonly onLost: (worker: RemoteWorker, reason: string) => void;
  /** Called on every heartbeat: the node's load changed. */
  readonly onHeartbeat: (worker: RemoteWorker) => void;
}

/**
 * A secondary the master places jobs on.
 *
 * @example Serving a registered secondary
 * ```ts ignore
 * const worker = new RemoteWorker({ connection, registration, nodeTimeoutMs: 5000, onLost, onHeartbeat });
 * await worker.serve(); // until the node is lost
 * ```
 */
export class RemoteWorker implements Worker {
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly languages: readonly OfferedLanguage[];
  readonly #options: RemoteWorkerOptions;
  readonly #connection: Connection;
  readonly #jobs = new Map<string, WorkerJobEvents>();
  /** A deadline per job: a node that heartbeats but never answers must not hold a job forever. */
  readonly #overdue = new Map<string, ReturnType<typeof setTimeout>>();
  #heartbeat: MessageOf<"heartbeat"> | undefined;
  #lastSeen = performance.now();
  #failingUntil = 0;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  #lost: string | undefined;

  constructor(options: RemoteWorkerOptions) {
    this.#options = options;
    this.#connection = options.connection;
    this.id = options.registration.id;
    this.name = options.registration.name;
    this.address = options.connection.remoteAddr;
    this.languages = options.registration.languages;
  }

  /** Why the node was lost, once it was. */
  get lostReason(): string | undefined {
    return this.#lost;
  }

  /** Reads the secondary's messages until the node is lost. Never throws. */
  async serve(): Promise<void> {
    this.#armDeadline();
    try {
      for await (const message of this.#connection) {
        this.#lastSeen = performance.now();
        this.#armDeadline();
        this.#handle(message);
      }
      this.lose("it closed the connection");
    } catch (error) {
      this.lose(error instanceof Error ? error.message : String(error));
    }
  }

  load(): NodeLoad {
    const { registration } = this.#options;
    return {
      id: this.id,
      name: this.name,
      local: false,
      languages: new Set(this.languages.map((language) => language.name)),
      slots: registration.slots,
      assigned: this.#jobs.size,
      cpuPercent: this.#heartbeat?.cpuPercent ?? 0,
      ramPercent: this.#heartbeat?.ramPercent ?? 0,
      maxCpu: registration.maxCpu,
      maxRam: registration.maxRam,
      draining: this.#lost !== undefined,
      failingUntil: this.#failingUntil,
    };
  }

  start(job: WorkerJob, events: WorkerJobEvents): void {
    if (this.#lost !== undefined) {
      return queueMicrotask(() => events.failed(this.#lostMessage(), "lost"));
    }
    this.#jobs.set(job.id, events);
    const limits = effectiveLimits(
      this.#options.registration.limits,
      job.request.limits,
    );
    const deadlineMs = limits.compileWallTimeMs + limits.wallTimeMs +
      this.#options.nodeTimeoutMs;
    this.#overdue.set(
      job.id,
      setTimeout(() => {
        const overdue = this.#take(job.id);
        if (!overdue) return;
        this.#connection.send({ type: "cancel", jobId: job.id }).catch(
          () => {},
        );
        this.markFailing(Date.now() + deadlineMs);
        overdue.failed(
          `node "${this.name}" did not finish it within ${deadlineMs} ms`,
          "lost",
        );
      }, deadlineMs),
    );
    this.#connection.send({ type: "run", jobId: job.id, job: job.request })
      .catch((error) => this.lose(`cannot send it a job: ${error.message}`));
  }

  cancel(jobId: string): void {
    if (!this.#jobs.has(jobId)) return;
    this.#connection.send({ type: "cancel", jobId }).catch(() => {});
  }

  input(jobId: string, data: string, eof: boolean): void {
    if (!this.#jobs.has(jobId)) return;
    this.#connection.send({ type: "stdin", jobId, data, eof }).catch(() => {});
  }

  markFailing(until: number): void {
    this.#failingUntil = Math.max(this.#failingUntil, until);
  }

  status(): NodeStatus {
    const load = this.load();
    const state = nodeState(load, Date.now());
    return {
      id: this.id,
      name: this.name,
      address: this.address,
      state,
      local: false,
      cpuPercent: load.cpuPercent,
      ramPercent: load.ramPercent,
      // The master's own count: live, where a heartbeat is up to a second old.
      running: load.assigned,
      slots: load.slots,
      languages: this.languages.map(({ name, version }) => ({ name, version })),
      lastSeenMs: Math.round(performance.now() - this.#lastSeen),
      sandbox: this.#options.registration.sandbox ?? null,
    };
  }

  /**
   * Gives the node up: closes its connection, tells the master, and fails
   * every job it had so the master can place them again. Idempotent.
   */
  lose(reason: string): void {
    if (this.#lost !== undefined) return;
    this.#lost = reason;
    clearTimeout(this.#deadline);
    this.#connection.close().catch(() => {});
    // The master forgets the node first, so the jobs failed below are placed
    // knowing it is gone.
    this.#options.onLost(this, reason);
    const jobs = [...this.#jobs.keys()].map((jobId) => this.#take(jobId)!);
    for (const events of jobs) events.failed(this.#lostMessage(), "lost");
  }

  #handle(message: Awaited<ReturnType<Connection["receive"]>>): void {
    switch (message.type) {
      case "heartbeat":
        this.#heartbeat = message;
        this.#options.onHeartbeat(this);
        return;
      case "output":
        this.#jobs.get(message.jobId)?.output(message.stream, message.data);
        return;
      case "result":
        this.#take(message.jobId)?.result(message.result);
        return;
      case "refused":
        this.#take(message.jobId)?.failed(
          `node "${this.name}" refused it: ${message.reason}`,
          "refused",
        );
        return;
      default:
        this.lose(`it sent an unexpected "${message.type}" message`);
    }
  }

  /** Ends the master's interest in a job here: its events, and its deadline. */
  #take(jobId: string): WorkerJobEvents | undefined {
    const events = this.#jobs.get(jobId);
    this.#jobs.delete(jobId);
    clearTimeout(this.#overdue.get(jobId));
    this.#overdue.delete(jobId);
    return events;
  }

  #armDeadline(): void {
    clearTimeout(this.#deadline);
    this.#deadline = setTimeout(
      () => this.lose(`silent for ${this.#options.nodeTimeoutMs} ms`),
      this.#options.nodeTimeoutMs,
    );
  }

  #lostMessage(): string {
    return `node "${this.name}" was lost: ${this.#lost}`;
  }
}
