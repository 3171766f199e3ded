/**
 * The inside of a `KilnClient` (`kiln_client.ts`): one connection to a
 * master and the jobs multiplexed on it ({@linkcode ClientLink}), and one
 * job from its submission to its one outcome ({@linkcode ClientJob}).
 *
 * A job is matched to its `accepted` answer by the `ref` of its `submit`
 * (or `attach`), and to everything after by its `jobId`. When the
 * connection drops, the jobs on it go back to the client, which sends them
 * on its next connection: an accepted job is attached again by its id, and
 * one the master there does not know is submitted again, a bounded number
 * of times in all; one not yet accepted is simply submitted again.
 *
 * @module
 */
import { blankResult, type JobRequest, type JobResult } from "./job.ts";
import { JobInput } from "./_job_input.ts";
import type { Connection } from "./protocol/connection.ts";
import { ProtocolError } from "./protocol/errors.ts";
import {
  ATTACH_PROTOCOL_VERSION,
  type ClusterStatus,
  type JobEvent,
  type Message,
} from "./protocol/messages.ts";

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
  /** Ends it with `error`: no connection could be made to send it on. */
  cannotSend(error: unknown): void;
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
  readonly input: JobInput | undefined;
  /**
   * The master's id for it, once `accepted` came; kept while it is attached
   * again elsewhere, and cleared when it is submitted again.
   */
  jobId: string | undefined;
  /** The connection it was sent on; none while it waits in the outbox. */
  link: ClientLink | undefined;
  /** How many times its `submit` was sent. */
  submits = 0;
  /** How many connections ended with it on them before its result. */
  losses = 0;
  /** How its last connection ended before its result, if one did. */
  lost: string | undefined;
  readonly #onEvent: ((event: JobEvent) => void) | undefined;
  #resolve!: (result: JobResult) => void;
  #reject!: (error: unknown) => void;
  #ended = false;
  /** Called once, as the job gets its outcome. */
  #onEnd: (() => void) | undefined;

  constructor(request: JobRequest, options: ClientJobOptions) {
    // Input typed while the job runs needs stdin kept open for it.
    this.request = options.input ? { ...request, interactive: true } : request;
    this.input = options.input ? new JobInput(options.input) : undefined;
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

  /**
   * Submits the job on `link`, or attaches it there when a master accepted
   * it already. A job given up while its connection was down is attached
   * only so that its master hears the cancel.
   */
  sendOn(link: ClientLink): void {
    if (this.jobId !== undefined) link.attach(this);
    else if (!this.#ended) link.submit(this);
  }

  /** No connection could be made: a job lost with its last one says so too. */
  cannotSend(error: unknown): void {
    if (this.lost === undefined) return this.fail(error);
    const why = error instanceof Error ? error.message : String(error);
    this.fail(
      new ProtocolError(
        "closed",
        `${this.lost}, and it could not be sent again: ${why}`,
        { cause: error },
      ),
    );
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

  /** Ends the job with an `internal_error` result saying why, told as its last event. */
  giveUp(reason: string): void {
    const jobId = this.jobId ?? "";
    const result = blankResult(jobId, { verdict: "internal_error", reason });
    if (this.tell({ type: "result", jobId, result })) this.resolve(result);
  }

  /** Marks the outcome as set; false when it already was. */
  #end(): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    this.input?.stop();
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

  cannotSend(error: unknown): void {
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

  cannotSend(error: unknown): void {
    this.fail(error);
  }
}

/** Where a link goes and what it may do: see {@linkcode ClientLink}. */
export interface ClientLinkOptions {
  /** The master's node name, from the handshake. */
  readonly node: string;
  /** The master's address as dialed, `host:port`. */
  readonly address: string;
  /** The protocol version agreed in the handshake. */
  readonly version: number;
  /**
   * Times one job may be submitted in all, counting every connection; and
   * times its connection may be lost before its result.
   */
  readonly maxSubmits: number;
}

/**
 * One connection to a master and the jobs on it. It reads until the
 * connection ends, routing each message to its job; then it hands the jobs
 * still without a result back to the client (to attach or submit on its
 * next connection), or fails them when the client closed it, and fails
 * every status request still waiting, naming the reason.
 */
export class ClientLink {
  /** The master's node name, from the handshake. */
  readonly node: string;
  /** The master's address as dialed, `host:port`. */
  readonly address: string;
  /** Settles (never rejects) once the link has ended and everything on it is handed on. */
  readonly done: Promise<void>;
  readonly #connection: Connection;
  readonly #version: number;
  readonly #maxSubmits: number;
  /** Jobs sent and not yet accepted, by the `ref` of their `submit` or `attach`. */
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

  /**
   * Starts reading. `onEnd` hears why the link ended and gets the jobs it
   * leaves without a result (none when the client closed it: they failed).
   */
  constructor(
    connection: Connection,
    options: ClientLinkOptions,
    onEnd: (reason: ProtocolError, orphans: ClientJob[]) => void,
  ) {
    this.#connection = connection;
    this.node = options.node;
    this.address = options.address;
    this.#version = options.version;
    this.#maxSubmits = options.maxSubmits;
    this.done = this.#serve().then(({ reason, orphans }) =>
      onEnd(reason, orphans)
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

  /**
   * Sends the job's `submit`; its events and result then come here. A job
   * submitted as often as the client allows ends with `internal_error`.
   */
  submit(job: ClientJob): void {
    if (job.submits >= this.#maxSubmits) {
      return job.giveUp(
        `${job.lost}; not submitted again: submitted ${
          times(job.submits)
        } already, as many as the client allows (maxSubmits ${this.#maxSubmits})`,
      );
    }
    job.submits++;
    job.jobId = undefined;
    const ref = String(++this.#refs);
    job.link = this;
    this.#byRef.set(ref, job);
    this.#write({ type: "submit", ref, job: job.request }).catch((error) => {
      // Too large a frame fails this job alone; any other failure is the
      // link's end, which hands every job on it back to the client.
      if (error instanceof ProtocolError && error.code === "frame_too_large") {
        this.#byRef.delete(ref);
        job.fail(error);
      }
    });
  }

  /**
   * Asks the master for the rest of a job accepted over a connection that
   * was lost: it answers `accepted` and the job goes on here, or
   * `unknown_job` and the job is submitted again. A master of an older
   * protocol cannot attach, and is taken as one that does not know the job.
   */
  attach(job: ClientJob): void {
    if (this.#version < ATTACH_PROTOCOL_VERSION) {
      // Given up: this master never had it, so there is nothing to cancel.
      if (job.ended) return;
      job.link = this;
      return this.#submitAgain(
        job,
        `it speaks protocol version ${this.#version}, which cannot attach a job`,
      );
    }
    job.link = this;
    const ref = String(++this.#refs);
    this.#byRef.set(ref, job);
    this.#write({ type: "attach", ref, jobId: job.jobId! }).catch(ignore);
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

  /** `master "name" at host:port`, for reasons. */
  toString(): string {
    return `master "${this.node}" at ${this.address}`;
  }

  /** Reads until the connection ends; then hands on what is still waiting. Never rejects. */
  async #serve(): Promise<{ reason: ProtocolError; orphans: ClientJob[] }> {
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
    for (const request of this.#statusRequests.splice(0)) {
      request.fail(this.#endReason);
    }
    const jobs = [...this.#byRef.values(), ...this.#byId.values()];
    this.#byRef.clear();
    this.#byId.clear();
    if (this.#closeReason !== undefined) {
      for (const job of jobs) {
        job.fail(closedBefore(this.#closeReason, job.jobId));
      }
      return { reason: this.#endReason, orphans: [] };
    }
    const orphans: ClientJob[] = [];
    for (const job of jobs) {
      if (job.ended) continue;
      job.link = undefined;
      job.input?.detach();
      job.lost = `the connection to ${this} ended before the result of ${
        job.jobId === undefined ? "a job not yet accepted" : `job ${job.jobId}`
      }: ${reason.message}`;
      // Masters that take the job and then drop the link, again and
      // again, must not keep it going round for ever.
      if (++job.losses > this.#maxSubmits) {
        job.giveUp(
          `${job.lost}; not sent again: its connection was lost ${
            times(job.losses)
          }, more than the client allows (maxSubmits ${this.#maxSubmits})`,
        );
      } else orphans.push(job);
    }
    return { reason, orphans };
  }

  /** Hands one message to the job or request it answers. */
  #route(message: Message): void {
    switch (message.type) {
      case "accepted": {
        const job = this.#byRef.get(message.ref);
        if (job === undefined) {
          throw unexpected(`an "accepted" for request ${message.ref}`);
        }
        this.#byRef.delete(message.ref);
        // A submit's answer, or an attach answered with another id: the
        // master runs the job afresh, and its stdin starts over.
        const fresh = job.jobId !== message.jobId;
        job.jobId = message.jobId;
        if (job.ended) return this.#cancel(message.jobId); // given up meanwhile
        this.#byId.set(message.jobId, job);
        if (!job.tell(message)) return this.abandon(job);
        job.input?.attach(this.#stdinSender(job, message.jobId), fresh);
        return;
      }
      case "unknown_job": {
        const job = this.#byRef.get(message.ref);
        // Only an attach is answered so; a job it leaves hanging goes back
        // to the client with the link.
        if (job?.jobId === undefined) {
          throw unexpected(`an "unknown_job" for request ${message.ref}`);
        }
        this.#byRef.delete(message.ref);
        if (job.ended) return; // given up meanwhile: nothing runs to cancel
        return this.#submitAgain(job, message.reason);
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

  /**
   * This master does not know a job that was accepted elsewhere (or here,
   * over a connection that was lost): the caller hears `restarted`, and
   * the job is submitted here again, if it may be.
   */
  #submitAgain(job: ClientJob, why: string): void {
    job.lost = `${job.lost}; ${this} does not know job ${job.jobId}: ${why}`;
    if (job.submits < this.#maxSubmits) {
      const restarted = job.tell({
        type: "restarted",
        jobId: job.jobId!,
        reason: `${job.lost}; submitted again to ${this}`,
        attempt: job.submits + 1,
      });
      if (!restarted) return; // failed by its callback: nothing runs here yet
    }
    this.submit(job);
  }

  /** Sends a job's stdin over this link, as long as the job is on it. */
  #stdinSender(
    job: ClientJob,
    jobId: string,
  ): (data: string, eof: boolean) => Promise<boolean> {
    return async (data, eof) => {
      if (this.ended) return false;
      try {
        await this.#write({ type: "stdin", jobId, data, eof });
        return true;
      } catch (error) {
        if (
          !(error instanceof ProtocolError) || error.code !== "frame_too_large"
        ) return false; // the link ended: sent again after the next attach
        // A chunk no frame can carry fails its job alone.
        job.fail(error);
        this.abandon(job);
        return true;
      }
    };
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
}

function ignore(): void {}

function times(count: number): string {
  return count === 1 ? "once" : count === 2 ? "twice" : `${count} times`;
}

/** The failure of a job whose client closed its connection before the result. */
function closedBefore(
  reason: ProtocolError,
  jobId: string | undefined,
): ProtocolError {
  const job = jobId === undefined ? "a job not yet accepted" : `job ${jobId}`;
  return new ProtocolError(
    "closed",
    `${reason.message} before the result of ${job}`,
    {
      cause: reason,
    },
  );
}

function unexpected(what: string): ProtocolError {
  return new ProtocolError(
    "unexpected_message",
    `the master sent ${what}, which no request of this client asked for`,
  );
}
