/**
 * The inside of a `KilnClient` (`kiln_client.ts`): one connection to the master and
 * the jobs multiplexed on it ({@linkcode ClientLink}), and one job from its
 * submission to its one outcome ({@linkcode ClientJob}).
 *
 * A job is matched to its `accepted` answer by the `ref` of its `submit`,
 * and to everything after by its `jobId`. When the connection drops, every
 * job on it fails at once with the reason: the master cancels the jobs of a
 * client that goes away, so none of them would ever get a result.
 *
 * @module
 */
import type { JobRequest, JobResult } from "./job.ts";
import type { Connection } from "./protocol/connection.ts";
import { ProtocolError } from "./protocol/errors.ts";
import type { ClusterStatus, JobEvent, Message } from "./protocol/messages.ts";

/**
 * Bytes of submissions that may wait to be written on one connection
 * before more wait in the client's outbox instead: a loop that submits
 * thousands of large programs must not overrun the connection's own send
 * limit (64 MiB, past which it closes with `slow_peer`).
 */
export const SEND_WINDOW_BYTES = 4 * 1024 * 1024;

/** What a job's submitter asked for besides the program (see `KilnClient.submit`). */
export interface ClientJobOptions {
  readonly onEvent?: ((event: JobEvent) => void) | undefined;
  readonly input?: AsyncIterable<string> | undefined;
}

/** Something that waits in a client's outbox for a connection with room to send it. */
export interface OutboxItem {
  /** Sends it on `link`, which from then on answers it. */
  sendOn(link: ClientLink): void;
  /** Ends it with `error`: it cannot be sent. */
  fail(error: unknown): void;
}

/**
 * One job of a client: the program, the caller's callbacks, and the promise
 * of its outcome.
 *
 * A client process with thousands of jobs waiting holds one of these for
 * each, for as long as the job waits (seconds, in a long queue), so it
 * holds no more than it needs: a flag for its end, not an abort controller
 * (whose abort builds a `DOMException` with a stack trace); its promise's
 * two settle functions, not a resolvers object; the caller's callbacks,
 * not their options object.
 */
export class ClientJob implements OutboxItem {
  /** The request as sent: `interactive` when input follows. */
  readonly request: JobRequest;
  /** Its result, or why it has none. */
  readonly outcome: Promise<JobResult>;
  /** Its stdin to come, for an interactive job. */
  readonly input: AsyncIterable<string> | undefined;
  /** The master's id for it, once `accepted` came. */
  jobId: string | undefined;
  /** The connection it was sent on; none while it waits in the outbox. */
  link: ClientLink | undefined;
  readonly #onEvent: ((event: JobEvent) => void) | undefined;
  #resolve!: (result: JobResult) => void;
  #reject!: (error: unknown) => void;
  #ended = false;
  /** Called once, as the job gets its outcome. */
  #onEnd: (() => void) | undefined;

  constructor(request: JobRequest, options: ClientJobOptions) {
    // Input typed while the job runs needs stdin kept open for it.
    this.request = options.input ? { ...request, interactive: true } : request;
    this.input = options.input;
    this.#onEvent = options.onEvent;
    this.outcome = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /** Whether the job has its outcome (a result, or a failure). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Calls `callback` once the job has its outcome, before its promise
   * settles (at once if it has it already): the submitter's clean-up, such
   * as no longer listening to its abort signal. One callback per job; a
   * second replaces the first.
   */
  whenEnded(callback: () => void): void {
    if (this.#ended) callback();
    else this.#onEnd = callback;
  }

  sendOn(link: ClientLink): void {
    link.submit(this);
  }

  /**
   * Tells the caller of an event. A callback that throws fails this job
   * with what it threw, and nothing else: returns false then.
   */
  tell(event: JobEvent): boolean {
    if (this.#onEvent === undefined) return true;
    try {
      this.#onEvent(event);
      return true;
    } catch (error) {
      this.fail(error);
      return false;
    }
  }

  /** Resolves with the result; once only, like every outcome. */
  resolve(result: JobResult): void {
    if (this.#end()) this.#resolve(result);
  }

  /** Rejects with `error`; once only, like every outcome. */
  fail(error: unknown): void {
    if (this.#end()) this.#reject(error);
  }

  /** Marks the outcome as set; false when it already was. */
  #end(): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    const onEnd = this.#onEnd;
    this.#onEnd = undefined;
    onEnd?.();
    return true;
  }
}

/** A wish to be connected: done as soon as a connection is up. */
export class ConnectRequest implements OutboxItem {
  readonly #settle = Promise.withResolvers<void>();
  readonly done: Promise<void> = this.#settle.promise;

  sendOn(): void {
    this.#settle.resolve();
  }

  fail(error: unknown): void {
    this.#settle.reject(error);
  }
}

/** A `get_status` request: answered in order, since the answer names no request. */
export class StatusRequest implements OutboxItem {
  readonly answer: Promise<ClusterStatus>;
  readonly #settle: PromiseWithResolvers<ClusterStatus>;
  #settled = false;

  constructor() {
    this.#settle = Promise.withResolvers();
    this.answer = this.#settle.promise;
  }

  sendOn(link: ClientLink): void {
    link.askStatus(this);
  }

  resolve(status: ClusterStatus): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle.resolve(status);
  }

  fail(error: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle.reject(error);
  }
}

/**
 * One connection to the master and the jobs on it. It reads until the
 * connection ends, routing each message to its job; then it fails every
 * job and status request still waiting, naming the reason.
 */
export class ClientLink {
  /** The master's node name, from the handshake. */
  readonly node: string;
  /** Settles (never rejects) once the link has ended and everything on it has its outcome. */
  readonly done: Promise<void>;
  readonly #connection: Connection;
  /** Jobs sent and not yet accepted, by the `ref` of their `submit`. */
  readonly #byRef = new Map<string, ClientJob>();
  /** Accepted jobs without a result yet, by id. */
  readonly #byId = new Map<string, ClientJob>();
  /** Status requests sent, in order: the master answers them in order. */
  readonly #statusRequests: StatusRequest[] = [];
  #refs = 0;
  /**
   * The last write: settles once everything written so far has gone out,
   * or failed. Whoever wrote it handles its failure.
   */
  #lastWrite: Promise<void> = Promise.resolve();
  /** Why the link ended, once it has. */
  #endReason: ProtocolError | undefined;
  /** Set by {@linkcode close}: what the jobs still on the link are told. */
  #closeReason: ProtocolError | undefined;

  /** Starts reading; `onEnd` hears why the link ended and how many jobs it took with it. */
  constructor(
    connection: Connection,
    node: string,
    onEnd: (reason: ProtocolError, lostJobs: number) => void,
  ) {
    this.#connection = connection;
    this.node = node;
    this.done = this.#serve().then(({ reason, lostJobs }) =>
      onEnd(reason, lostJobs)
    );
  }

  /** Whether the link has ended: nothing more can be sent on it. */
  get ended(): boolean {
    return this.#endReason !== undefined || this.#closeReason !== undefined;
  }

  /** Whether so much waits to be written that more submissions should wait. */
  get backlogged(): boolean {
    return this.#connection.bufferedBytes >= SEND_WINDOW_BYTES;
  }

  /** Jobs on this link without an outcome yet. */
  get jobs(): number {
    return this.#byRef.size + this.#byId.size;
  }

  /** Settles (never rejects) once everything written so far has gone out. */
  drained(): Promise<void> {
    return this.#lastWrite.then(ignore, ignore);
  }

  /** Sends the job's `submit`; its events and result then come here. */
  submit(job: ClientJob): void {
    const ref = String(++this.#refs);
    job.link = this;
    this.#byRef.set(ref, job);
    this.#write({ type: "submit", ref, job: job.request }).catch((error) => {
      // Too large a frame fails this job alone; any other failure is the
      // link's end, which fails every job on it.
      if (error instanceof ProtocolError && error.code === "frame_too_large") {
        this.#byRef.delete(ref);
        job.fail(error);
      }
    });
  }

  /** Sends `get_status`; the next `cluster_status` answers it. */
  askStatus(request: StatusRequest): void {
    this.#statusRequests.push(request);
    this.#write({ type: "get_status" }).catch(() => {});
  }

  /**
   * The caller gave the job up: the master is told to cancel it (at once,
   * or as soon as it names the job), and what it says of it later is
   * ignored. The job's outcome is the caller's to set.
   */
  abandon(job: ClientJob): void {
    if (job.jobId === undefined) return; // cancelled when `accepted` comes
    if (this.#byId.delete(job.jobId)) this.#cancel(job.jobId);
  }

  /**
   * Ends the link: the jobs still on it fail with `reason` (the master
   * cancels them as the connection closes). Resolves once it has ended.
   */
  async close(reason: ProtocolError): Promise<void> {
    this.#closeReason ??= reason;
    await this.#connection.close();
    await this.done;
  }

  /** Reads until the connection ends; then fails what is still waiting. Never rejects. */
  async #serve(): Promise<{ reason: ProtocolError; lostJobs: number }> {
    let reason: ProtocolError;
    try {
      for await (const message of this.#connection) this.#route(message);
      reason = new ProtocolError("closed", "the master closed the connection");
    } catch (error) {
      reason = error instanceof ProtocolError ? error : new ProtocolError(
        "closed",
        `the connection to the master broke: ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
      await this.#connection.close(reason);
    }
    this.#endReason = this.#closeReason ?? reason;
    const lostJobs = this.jobs;
    this.#failAll(this.#endReason);
    return { reason: this.#endReason, lostJobs };
  }

  /** Hands one message to the job or request it answers. */
  #route(message: Message): void {
    switch (message.type) {
      case "accepted": {
        const job = this.#byRef.get(message.ref);
        if (job === undefined) {
          throw unexpected(`an "accepted" for submission ${message.ref}`);
        }
        this.#byRef.delete(message.ref);
        job.jobId = message.jobId;
        if (job.ended) return this.#cancel(message.jobId); // given up meanwhile
        this.#byId.set(message.jobId, job);
        if (!job.tell(message)) return this.abandon(job);
        if (job.input) this.#sendInput(job, message.jobId, job.input);
        return;
      }
      case "queued":
      case "started":
      case "output":
      case "restarted": {
        // Events of a job given up are ignored: it has its outcome.
        const job = this.#byId.get(message.jobId);
        if (job !== undefined && !job.tell(message)) this.abandon(job);
        return;
      }
      case "result": {
        const job = this.#byId.get(message.jobId);
        if (job === undefined) return;
        this.#byId.delete(message.jobId);
        if (job.tell(message)) job.resolve(message.result);
        return;
      }
      case "cluster_status": {
        const request = this.#statusRequests.shift();
        if (request === undefined) throw unexpected(`a "cluster_status"`);
        const { type: _, ...status } = message;
        request.resolve(status);
        return;
      }
      default:
        throw unexpected(`a "${message.type}" message`);
    }
  }

  #cancel(jobId: string): void {
    this.#write({ type: "cancel", jobId }).catch(() => {});
  }

  /**
   * Writes in order with every other message; `drained()` waits for it.
   * The caller must handle a failure of the promise returned.
   */
  #write(message: Message): Promise<void> {
    // Writes are batched: many share one promise, and none is chained here.
    this.#lastWrite = this.#connection.send(message);
    return this.#lastWrite;
  }

  /**
   * Sends each chunk of `input` as stdin of the job as it comes, then EOF.
   * Never rejects: a link that broke ends the job anyway.
   */
  async #sendInput(
    job: ClientJob,
    jobId: string,
    input: AsyncIterable<string>,
  ): Promise<void> {
    try {
      for await (const data of input) {
        if (job.ended) return; // leaving the loop returns the iterator
        await this.#write({ type: "stdin", jobId, data });
      }
      if (!job.ended) {
        await this.#write({ type: "stdin", jobId, data: "", eof: true });
      }
    } catch {
      // The connection closed: the job's failure says why.
    }
  }

  #failAll(reason: ProtocolError): void {
    const closedHere = reason === this.#closeReason;
    for (const job of [...this.#byRef.values(), ...this.#byId.values()]) {
      job.fail(jobLost(reason, job.jobId, closedHere));
    }
    this.#byRef.clear();
    this.#byId.clear();
    for (const request of this.#statusRequests.splice(0)) request.fail(reason);
  }
}

function ignore(): void {}

/**
 * The failure of a job whose connection ended before its result. Named
 * `closed`, whatever ended it, so that a caller can tell "submit it again"
 * from "fix the request" by one code.
 */
function jobLost(
  reason: ProtocolError,
  jobId: string | undefined,
  closedHere: boolean,
): ProtocolError {
  const job = jobId === undefined ? "a job not yet accepted" : `job ${jobId}`;
  return new ProtocolError(
    "closed",
    closedHere
      ? `${reason.message} before the result of ${job}`
      : `the connection to the master ended before the result of ${job}: ${reason.message} ` +
        "(the master cancels a disconnected client's jobs; submit it again to run it)",
    { cause: reason },
  );
}

function unexpected(what: string): ProtocolError {
  return new ProtocolError(
    "unexpected_message",
    `the master sent ${what}, which no request of this client asked for`,
  );
}
