/**
 * A master's side of a NATS cluster: it puts jobs in the stream, follows
 * each one's events (from whichever node runs it) back to whoever waits on
 * it, and sends cancels and stdin to that node. Any master can follow any
 * job by id, which is how a client whose master died re-attaches.
 *
 * Events travel on core subjects, so one published while nobody listened
 * is gone; the job's record is the truth. A follower reads the record
 * after subscribing (so nothing falls in between), and every follow is
 * checked against its record once per ack wait, so that a result whose
 * event was lost (a reconnect to NATS) still arrives.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Subscription } from "@nats-io/transport-node";
import { blankResult, type JobResult, type OutputStream } from "../job.ts";
import type { WorkerJob } from "../scheduler/worker.ts";
import { endQueued, readRecord, recordQueued } from "./job_record.ts";
import type { NatsCluster } from "./nats_cluster.ts";
import { retrying } from "./_retry.ts";
import { controlSubject, eventSubject, jobSubject } from "./subjects.ts";
import {
  type Control,
  decode,
  type NodeEvent,
  NodeEventSchema,
  type StreamedJob,
} from "./wire.ts";

const log = getLogger(["kiln", "nats"]);

/** Whoever waits on a job: the master's dispatcher, or a re-attached client. */
export interface ClusterJobListener {
  /** A node started attempt `attempt` of it (again, after a lost node, when above 1). */
  started(node: string, attempt: number): void;
  /** A chunk of output of the current attempt. */
  output(stream: OutputStream, data: string): void;
  /** Its one result; nothing follows. */
  result(result: JobResult): void;
}

/** A job this master follows: its subscription and everyone listening. */
interface Follow {
  readonly id: string;
  readonly subscription: Subscription;
  readonly listeners: Set<ClusterJobListener>;
  /** The attempt whose output counts; earlier attempts' events are stale. */
  attempt: number;
  /** Stdin sent so far, sent again to each attempt as it starts. */
  readonly input: Control[];
  ended: boolean;
}

/** A job to put in the stream. */
export interface ClusterJob extends WorkerJob {
  /** Who submitted it. */
  readonly client: string;
}

/** Options of {@linkcode ClusterJobs}. */
export interface ClusterJobsOptions {
  readonly cluster: NatsCluster;
}

/**
 * Puts jobs in the stream and follows them.
 *
 * @example
 * ```ts ignore
 * const jobs = new ClusterJobs({ cluster });
 * jobs.start({ id, request, language: "python", client: "alice" }, listener);
 * const known = await jobs.follow(id, otherListener); // from any master
 * ```
 */
export class ClusterJobs {
  readonly #cluster: NatsCluster;
  readonly #follows = new Map<string, Follow>();
  readonly #sweep: ReturnType<typeof setInterval>;
  #closed = false;

  constructor({ cluster }: ClusterJobsOptions) {
    this.#cluster = cluster;
    this.#sweep = setInterval(
      () => void this.#checkRecords(),
      cluster.ackWaitMs,
    );
  }

  /** Jobs this master follows now. */
  get following(): number {
    return this.#follows.size;
  }

  /**
   * Puts a job in the stream and follows it. A job too large for the
   * servers' messages, or a stream that cannot be reached, ends it with a
   * result that says so.
   */
  start(job: ClusterJob, listener: ClusterJobListener): void {
    const streamed: StreamedJob = {
      id: job.id,
      client: job.client,
      language: job.language,
      acceptedAt: Date.now(),
      request: job.request,
    };
    const payload = JSON.stringify(streamed);
    const bytes = new TextEncoder().encode(payload).byteLength;
    const maxBytes = this.#cluster.maxPayload;
    if (bytes > maxBytes) {
      listener.result(blankResult(job.id, {
        verdict: "rejected",
        language: job.language,
        client: job.client,
        reason:
          `the job takes ${bytes} bytes as a NATS message, and the servers take at most ${maxBytes} (max_payload); send a smaller program, or raise max_payload`,
      }));
      return;
    }
    // Subscribed before the job is out: its first event cannot come sooner.
    const follow = this.#follow(job.id);
    follow.listeners.add(listener);
    void this.#publish(job, streamed, payload, follow, listener);
  }

  /**
   * Follows a job by id, from any master: `listener` hears where it stands
   * now (`started`, or at once its `result`), then the rest of its events.
   * Resolves false, and listens to nothing, when no such job is known.
   * {@linkcode unfollow} stops it.
   */
  async follow(jobId: string, listener: ClusterJobListener): Promise<boolean> {
    const follow = this.#follow(jobId);
    follow.listeners.add(listener);
    const found = await readRecord(this.#cluster.jobs, jobId).catch(() =>
      undefined
    );
    if (found === undefined) {
      this.unfollow(jobId, listener);
      return false;
    }
    const { record } = found;
    if (record.state === "ended" && record.result) {
      this.#end(follow, record.result);
    } else if (record.state === "running" && record.node !== null) {
      follow.attempt = Math.max(follow.attempt, record.attempt);
      listener.started(record.node, record.attempt);
    }
    return true;
  }

  /** Stops telling `listener` about a job (a client that left). */
  unfollow(jobId: string, listener: ClusterJobListener): void {
    const follow = this.#follows.get(jobId);
    if (follow === undefined) return;
    follow.listeners.delete(listener);
    if (follow.listeners.size === 0) this.#drop(follow);
  }

  /**
   * Stops a job: one still in the stream ends here, at once; one running
   * is stopped by its node, whose result follows.
   */
  async cancel(jobId: string, reason: string): Promise<void> {
    const result = blankResult(jobId, { reason: `cancelled: ${reason}` });
    const endedHere = await retrying(() =>
      endQueued(this.#cluster.jobs, jobId, result)
    ).catch(() => false);
    if (endedHere) {
      // Every master following it hears the end, this one included.
      this.#publishEvent(jobId, { type: "result", attempt: 0, result });
      return;
    }
    this.#control(jobId, { type: "cancel", reason });
  }

  /** More stdin for a job: sent to its node now, and to every later attempt. */
  input(jobId: string, data: string, eof: boolean): void {
    const control: Control = { type: "stdin", data, eof };
    const follow = this.#follows.get(jobId);
    follow?.input.push(control);
    if (follow === undefined || follow.attempt > 0) {
      this.#control(jobId, control);
    }
  }

  /** Follows nothing more; the jobs go on in the cluster. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const follow of this.#follows.values()) this.#drop(follow);
  }

  async #publish(
    job: ClusterJob,
    streamed: StreamedJob,
    payload: string,
    follow: Follow,
    listener: ClusterJobListener,
  ): Promise<void> {
    try {
      // Tried again through a failover of the servers: the message id
      // makes a second copy of a job that did get in a no-op.
      await retrying(() =>
        this.#cluster.jetstream.publish(
          jobSubject(job.language, job.id),
          payload,
          { msgID: job.id },
        )
      );
      await retrying(() =>
        recordQueued(this.#cluster.jobs, {
          id: job.id,
          client: job.client,
          language: job.language,
          state: "queued",
          attempt: 0,
          node: null,
          acceptedAt: streamed.acceptedAt,
          startedAt: 0,
        })
      );
    } catch (error) {
      if (follow.ended) return;
      const reason = `cannot put the job in the NATS stream: ${
        error instanceof Error ? error.message : String(error)
      }`;
      log.error("job {jobId}: {reason}", { jobId: job.id, reason });
      follow.listeners.delete(listener);
      if (follow.listeners.size === 0) this.#drop(follow);
      listener.result(blankResult(job.id, {
        language: job.language,
        client: job.client,
        reason,
      }));
    }
  }

  /** The follow of a job, subscribed to its events: made on first need. */
  #follow(jobId: string): Follow {
    const existing = this.#follows.get(jobId);
    if (existing !== undefined) return existing;
    const follow: Follow = {
      id: jobId,
      listeners: new Set(),
      attempt: 0,
      input: [],
      ended: false,
      subscription: this.#cluster.connection.subscribe(eventSubject(jobId), {
        callback: (error, message) => {
          if (error) return;
          const event = decode(NodeEventSchema, message.data);
          if (event !== undefined) this.#onEvent(follow, event);
        },
      }),
    };
    this.#follows.set(jobId, follow);
    return follow;
  }

  #onEvent(follow: Follow, event: NodeEvent): void {
    if (follow.ended) return;
    switch (event.type) {
      case "started":
        // A stale attempt's start (its node resumed late) changes nothing.
        if (event.attempt <= follow.attempt) return;
        follow.attempt = event.attempt;
        for (const listener of follow.listeners) {
          listener.started(event.node, event.attempt);
        }
        // Stdin typed so far: the new attempt's program gets all of it.
        for (const control of follow.input) this.#control(follow.id, control);
        return;
      case "output":
        if (event.attempt !== follow.attempt) return;
        for (const listener of follow.listeners) {
          listener.output(event.stream, event.data);
        }
        return;
      case "result":
        // Published only by whoever won the record: the job's one result.
        return this.#end(follow, event.result);
    }
  }

  #end(follow: Follow, result: JobResult): void {
    if (follow.ended) return;
    follow.ended = true;
    this.#drop(follow);
    for (const listener of follow.listeners) listener.result(result);
  }

  #drop(follow: Follow): void {
    if (this.#follows.get(follow.id) === follow) {
      this.#follows.delete(follow.id);
    }
    follow.subscription.unsubscribe();
  }

  /** Results whose event this master missed: read from their records. */
  async #checkRecords(): Promise<void> {
    for (const follow of [...this.#follows.values()]) {
      if (this.#closed) return;
      const found = await readRecord(this.#cluster.jobs, follow.id).catch(
        () => undefined,
      );
      if (found?.record.state === "ended" && found.record.result) {
        this.#end(follow, found.record.result);
      }
    }
  }

  #control(jobId: string, control: Control): void {
    try {
      this.#cluster.connection.publish(
        controlSubject(jobId),
        JSON.stringify(control),
      );
    } catch (error) {
      log.warn("cannot send {type} to job {jobId}: {error}", {
        type: control.type,
        jobId,
        error,
      });
    }
  }

  #publishEvent(jobId: string, event: NodeEvent): void {
    try {
      this.#cluster.connection.publish(
        eventSubject(jobId),
        JSON.stringify(event),
      );
    } catch {
      // The record holds the result; followers find it there.
    }
  }
}
