/**
 * A connected secondary as the master sees it: jobs go out as `run`
 * messages over the secondary's one connection and come back as `output`,
 * `result` or `refused`, multiplexed by job id. A closed connection, or
 * silence past the deadline, loses the node and every job it had; a job
 * that cannot be sent (too large for the node's frames) fails alone. The
 * master pings a node that speaks a protocol with pings, so that the node
 * too notices a master that went silent.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";
import { DEFAULT_SILENCE_GRACE_MS } from "./_timing.ts";
import { blankResult, effectiveLimits, type JobLimits } from "../job.ts";
import type { Connection } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
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
  /** Silence longer than this loses the node (after `silenceGraceMs`). */
  readonly nodeTimeoutMs: number;
  /**
   * When a deadline fires (the node's silence, a job's overdue), the node
   * gets this much more of the master's own time before it is judged: the
   * master may itself have been stalled (a long synchronous task, a VM
   * pause, SIGSTOP) while the node's messages waited unread in the socket,
   * and timers fire before the reader gets its turn.
   *
   * @default {DEFAULT_SILENCE_GRACE_MS}
   */
  readonly silenceGraceMs?: number;
  /**
   * Send the node a `ping` this often, in ms, so that it notices a master
   * gone silent; none when absent (a node whose protocol version predates
   * `PING_PROTOCOL_VERSION` refuses them).
   */
  readonly pingIntervalMs?: number | undefined;
  /** Called once when the node is lost, before its jobs are failed. */
  readonly onLost: (worker: RemoteWorker, reason: string) => void;
  /** Called on every heartbeat: the node's load changed. */
  readonly onHeartbeat: (worker: RemoteWorker) => void;
  /** Called once the node says it is draining (before `onHeartbeat`). */
  readonly onDraining?: (worker: RemoteWorker) => void;
}

/** A job on the node, as the master follows it. */
interface RemoteJob {
  readonly events: WorkerJobEvents;
  /**
   * Output relayed so far, in UTF-16 units: never more than the job's
   * output limit in bytes, which no honest node's output exceeds (a byte
   * decodes to at most one unit).
   */
  outputUnits: number;
  readonly maxOutputUnits: number;
  /** Whether output past the limit was dropped: the result then says `truncated`. */
  dropped: boolean;
  /** How long the node has for it, in ms: its compile and run times plus the node timeout. */
  readonly deadlineMs: number;
  /**
   * When (`performance.now()`) it is next judged: its deadline, then, once
   * that passed, the grace after it (see `silenceGraceMs`).
   */
  dueAt: number;
  /** Whether its deadline passed and it is in its grace. */
  overdue: boolean;
}

/** The default of {@linkcode RemoteWorkerOptions.silenceGraceMs}, in ms. */
export { DEFAULT_SILENCE_GRACE_MS };

/**
 * A secondary the master places jobs on. What a node sends is bounded per
 * job: output past the job's output limit is not relayed, whatever the
 * node claims.
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
  /** The names of `languages`, made once: placement reads them on every dispatch. */
  readonly #languageNames: ReadonlySet<string>;
  readonly #options: RemoteWorkerOptions;
  readonly #connection: Connection;
  /** The node's own limits: those of every job that asks for none lower. */
  readonly #limits: JobLimits;
  readonly #jobs = new Map<string, RemoteJob>();
  /**
   * One timer for every job's deadline (a node that heartbeats but never
   * answers must not hold a job for ever), set for the earliest: a timer
   * per job cost more than the rest of its bookkeeping here.
   */
  #sweep: ReturnType<typeof setTimeout> | undefined;
  /** When {@linkcode RemoteWorker.#sweep} fires; Infinity when it is not set. */
  #sweepAt = Infinity;
  readonly #graceMs: number;
  #heartbeat: MessageOf<"heartbeat"> | undefined;
  #lastSeen = performance.now();
  #failingUntil = 0;
  /** The last load built, handed out again while nothing in it changed. */
  #load: NodeLoad | undefined;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  /** Sends the pings: one timer per link, whatever else it carries. */
  #pings: ReturnType<typeof setInterval> | undefined;
  #lost: string | undefined;

  constructor(options: RemoteWorkerOptions) {
    this.#options = options;
    this.#connection = options.connection;
    this.#graceMs = options.silenceGraceMs ?? DEFAULT_SILENCE_GRACE_MS;
    this.id = options.registration.id;
    this.name = options.registration.name;
    this.address = options.connection.remoteAddr;
    this.languages = options.registration.languages;
    this.#limits = effectiveLimits(options.registration.limits);
    this.#languageNames = new Set(
      this.languages.map((language) => language.name),
    );
    // `run` messages must fit the frames the node accepts.
    this.#connection.peerMaxFrameBytes = options.registration.maxFrameBytes;
  }

  /** Why the node was lost, once it was. */
  get lostReason(): string | undefined {
    return this.#lost;
  }

  /** Reads the secondary's messages until the node is lost. Never throws. */
  async serve(): Promise<void> {
    this.#armDeadline();
    this.#startPings();
    try {
      for await (const message of this.#connection) {
        // The silence deadline reads this when it fires: no timer per message.
        this.#lastSeen = performance.now();
        this.#handle(message);
      }
      this.lose(
        this.#heartbeat?.draining
          ? "it drained and left"
          : "it closed the connection",
      );
    } catch (error) {
      this.lose(error instanceof Error ? error.message : String(error));
    }
  }

  /**
   * The node's load now. The same object comes back until the load
   * changes: a dispatch reads every node's load, and building one object
   * per node per dispatch was most of the master's garbage.
   */
  load(): NodeLoad {
    const assigned = this.#jobs.size;
    const cpuPercent = this.#heartbeat?.cpuPercent ?? 0;
    const ramPercent = this.#heartbeat?.ramPercent ?? 0;
    const draining = this.#lost !== undefined ||
      this.#heartbeat?.draining === true;
    const failingUntil = this.#failingUntil;
    const last = this.#load;
    if (
      last !== undefined && last.assigned === assigned &&
      last.cpuPercent === cpuPercent && last.ramPercent === ramPercent &&
      last.draining === draining && last.failingUntil === failingUntil
    ) return last;
    const { registration } = this.#options;
    this.#load = {
      id: this.id,
      name: this.name,
      local: false,
      languages: this.#languageNames,
      slots: registration.slots,
      assigned,
      cpuPercent,
      ramPercent,
      maxCpu: registration.maxCpu,
      maxRam: registration.maxRam,
      draining,
      failingUntil,
    };
    return this.#load;
  }

  start(job: WorkerJob, events: WorkerJobEvents): void {
    if (this.#lost !== undefined) {
      return queueMicrotask(() => events.failed(this.#lostMessage(), "lost"));
    }
    const limits = job.request.limits === undefined
      ? this.#limits
      : effectiveLimits(this.#options.registration.limits, job.request.limits);
    // A sum of durations: held to what a timer takes, or it fires at once.
    const deadlineMs = timerDelay(
      limits.compileWallTimeMs + limits.wallTimeMs +
        this.#options.nodeTimeoutMs,
    );
    const dueAt = performance.now() + deadlineMs;
    this.#jobs.set(job.id, {
      events,
      outputUnits: 0,
      maxOutputUnits: limits.outputBytes,
      dropped: false,
      deadlineMs,
      dueAt,
      overdue: false,
    });
    this.#armSweep(dueAt);
    // Posted: a write that fails later loses the link, and with it the node.
    const refused = this.#connection.post({
      type: "run",
      jobId: job.id,
      job: job.request,
    });
    if (refused === undefined) return;
    // Told after start() returns, as a failed send always was.
    queueMicrotask(() => {
      // Too large for this node's frames: nothing was sent, the link is
      // fine, and only this job fails.
      if (
        refused instanceof ProtocolError && refused.code === "frame_too_large"
      ) {
        this.#take(job.id)?.result(blankResult(job.id, {
          verdict: "rejected",
          language: job.language,
          reason:
            `program too large for node "${this.name}" (its run message: ${refused.message})`,
        }));
        return;
      }
      this.lose(`cannot send it a job: ${refused.message}`);
    });
  }

  cancel(jobId: string): void {
    if (!this.#jobs.has(jobId)) return;
    this.#connection.post({ type: "cancel", jobId });
  }

  input(jobId: string, data: string, eof: boolean): void {
    if (!this.#jobs.has(jobId)) return;
    this.#connection.post({ type: "stdin", jobId, data, eof });
  }

  markFailing(until: number): void {
    this.#failingUntil = Math.max(this.#failingUntil, until);
  }

  status(): NodeStatus {
    const load = this.load();
    const state = this.#heartbeat?.draining
      ? "draining"
      : nodeState(load, Date.now());
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
    clearTimeout(this.#sweep);
    clearInterval(this.#pings);
    this.#sweep = undefined;
    this.#connection.close().catch(() => {});
    // The master forgets the node first, so the jobs failed below are placed
    // knowing it is gone.
    this.#options.onLost(this, reason);
    const jobs = [...this.#jobs.keys()].map((jobId) => this.#take(jobId)!);
    for (const events of jobs) events.failed(this.#lostMessage(), "lost");
  }

  #handle(message: Awaited<ReturnType<Connection["receive"]>>): void {
    switch (message.type) {
      case "heartbeat": {
        const draining = message.draining === true &&
          this.#heartbeat?.draining !== true;
        this.#heartbeat = message;
        if (draining) this.#options.onDraining?.(this);
        this.#options.onHeartbeat(this);
        return;
      }
      case "output":
        this.#relayOutput(message);
        return;
      case "result": {
        const dropped = this.#jobs.get(message.jobId)?.dropped;
        this.#take(message.jobId)?.result(
          dropped ? { ...message.result, truncated: true } : message.result,
        );
        return;
      }
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

  /** Relays a chunk of a job's output, cut at the job's output limit. */
  #relayOutput({ jobId, stream, data }: MessageOf<"output">): void {
    const job = this.#jobs.get(jobId);
    if (job === undefined || job.dropped) return;
    const room = job.maxOutputUnits - job.outputUnits;
    let kept = data;
    if (data.length > room) {
      job.dropped = true;
      // Not half a surrogate pair: the cut falls before it.
      const end = room > 0 && isHighSurrogate(data.charCodeAt(room - 1))
        ? room - 1
        : room;
      kept = data.slice(0, Math.max(0, end));
    }
    job.outputUnits += kept.length;
    if (kept.length > 0) job.events.output(stream, kept);
  }

  /**
   * Ends the master's interest in a job here: its events, and its deadline
   * (the sweep, when it fires, finds the job gone).
   */
  #take(jobId: string): WorkerJobEvents | undefined {
    const job = this.#jobs.get(jobId);
    this.#jobs.delete(jobId);
    return job?.events;
  }

  /** Makes the sweep fire by `at` (`performance.now()` time), unless it already will. */
  #armSweep(at: number): void {
    if (this.#lost !== undefined || at >= this.#sweepAt) return;
    clearTimeout(this.#sweep);
    this.#sweepAt = at;
    this.#sweep = setTimeout(
      () => this.#sweepOverdue(),
      timerDelay(Math.ceil(at - performance.now())),
    );
  }

  /**
   * Judges the jobs whose time is up: past its deadline a job gets the
   * grace (its result may wait unread behind a stalled master), past that
   * it is given up. Then sets the sweep for the next job due.
   */
  #sweepOverdue(): void {
    this.#sweep = undefined;
    this.#sweepAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    const late: [string, RemoteJob][] = [];
    for (const [jobId, job] of this.#jobs) {
      if (job.dueAt <= now && !job.overdue) {
        job.overdue = true;
        job.dueAt = now + this.#graceMs;
      }
      if (job.dueAt <= now) late.push([jobId, job]);
      else next = Math.min(next, job.dueAt);
    }
    if (next !== Infinity) this.#armSweep(next);
    for (const [jobId, job] of late) this.#giveUp(jobId, job);
  }

  /** A job the node did not finish within its deadline and grace: failed here, cancelled there. */
  #giveUp(jobId: string, job: RemoteJob): void {
    if (this.#jobs.get(jobId) !== job) return; // Ended meanwhile.
    this.#take(jobId);
    this.#connection.post({ type: "cancel", jobId });
    this.markFailing(Date.now() + job.deadlineMs);
    job.events.failed(
      `node "${this.name}" did not finish it within ${job.deadlineMs} ms`,
      "lost",
    );
  }

  /**
   * Pings the node every `pingIntervalMs`. A ping that cannot be queued
   * (the node reads nothing, and `slow_peer` closed the link) needs no
   * handling here: the reader sees the link end and loses the node.
   */
  #startPings(): void {
    const { pingIntervalMs } = this.#options;
    if (pingIntervalMs === undefined || this.#lost !== undefined) return;
    this.#pings = setInterval(
      () => this.#connection.post(PING),
      timerDelay(pingIntervalMs),
    );
  }

  /** Loses the node once it was silent for `nodeTimeoutMs`, and the grace after. */
  #armDeadline(): void {
    this.#deadline = setTimeout(
      () => this.#checkSilence(),
      timerDelay(this.#options.nodeTimeoutMs),
    );
  }

  #checkSilence(): void {
    const { nodeTimeoutMs } = this.#options;
    const silentMs = performance.now() - this.#lastSeen;
    if (silentMs < nodeTimeoutMs) {
      // It spoke since the deadline was set: wait for the rest of it.
      this.#deadline = setTimeout(
        () => this.#checkSilence(),
        timerDelay(Math.ceil(nodeTimeoutMs - silentMs)),
      );
      return;
    }
    // Not lost at once: what it sent while the master could not read is
    // read in the grace, and puts the deadline off (see `silenceGraceMs`).
    const seen = this.#lastSeen;
    this.#deadline = setTimeout(() => {
      if (this.#lastSeen !== seen) this.#checkSilence();
      else this.lose(`silent for ${nodeTimeoutMs} ms`);
    }, this.#graceMs);
  }

  #lostMessage(): string {
    return `node "${this.name}" was lost: ${this.#lost}`;
  }
}

const PING: MessageOf<"ping"> = { type: "ping" };

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}
