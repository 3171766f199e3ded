/**
 * A secondary's side of a NATS cluster: it pulls jobs from the stream only
 * while it has a free slot and is under its CPU and RAM thresholds, and
 * only for the languages it runs; it claims each in the job's record, says
 * it is alive while the job runs, and acks it once its result is written.
 *
 * One durable consumer per language is shared by every node that runs it,
 * so a job goes to whichever node asks first. A node asks on each of its
 * languages at once; when two answers arrive for one free slot, the second
 * is handed back at once (a refusal costs the job no attempt: attempts are
 * counted in its record, when a node starts it). A node that dies or
 * freezes with a job stops saying it is alive, and the job is delivered
 * again after the consumer's ack wait.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import type { JobResult, OutputStream } from "../job.ts";
import { abortableDelay } from "../nodes/_timing.ts";
import { claimRecord, finishRecord } from "./job_record.ts";
import type { NatsCluster } from "./nats_cluster.ts";
import { retrying } from "./_retry.ts";
import { controlSubject, eventSubject } from "./subjects.ts";
import {
  type Control,
  ControlSchema,
  decode,
  type NodeEvent,
  StreamedJobSchema,
} from "./wire.ts";

const log = getLogger(["kiln", "nats"]);

/** How long one pull waits for a job before it asks again, in ms. */
const PULL_EXPIRES_MS = 2_000;

/** A job this node pulled and claimed: what it runs, and where it reports. */
export interface PulledJob {
  readonly id: string;
  /** Untrusted until the node checks it (it came through the stream). */
  readonly request: unknown;
  readonly language: string;
  readonly client: string;
  /** This attempt's number: 1 the first time a node started it. */
  readonly attempt: number;
  /** When a master accepted it, in epoch ms. */
  readonly acceptedAt: number;
  /** Streams a chunk of output to whoever follows the job. */
  output(stream: OutputStream, data: string): void;
  /**
   * Ends the job with its result, if this attempt is still the job's
   * current one; resolves false (and the result is dropped) otherwise.
   */
  finish(result: JobResult): Promise<boolean>;
  /**
   * Gives the job back without a result (this node is shutting down):
   * another node takes it, as it would from a lost node.
   */
  handBack(): Promise<void>;
}

/** What the node does with a pulled job: it starts it and says how to reach it. */
export interface PulledJobControls {
  cancel(reason: string): void;
  input(data: string, eof: boolean): void;
}

/** Options of {@linkcode JobPuller}. */
export interface JobPullerOptions {
  readonly cluster: NatsCluster;
  /** Canonical names of the languages this node runs. */
  readonly languages: readonly string[];
  /** The node's name, for records and events. */
  readonly node: string;
  /** How many times a job may start before a lost node ends it. */
  readonly maxAttempts: number;
  /** Whether the node could start one more job now: a free slot, under its thresholds. */
  readonly hasRoom: () => boolean;
  /**
   * Starts a claimed job. It must take its slot before it returns, and
   * settle once the job's result is written (or dropped).
   */
  readonly run: (job: PulledJob) => {
    controls: PulledJobControls;
    done: Promise<void>;
  };
}

/**
 * Pulls jobs for one node until {@linkcode JobPuller.stop}.
 *
 * @example
 * ```ts ignore
 * const puller = new JobPuller({ cluster, languages: ["python"], node: "w1", maxAttempts: 3, hasRoom, run });
 * // a slot freed, or the load dropped:
 * puller.wake();
 * await puller.stop();
 * ```
 */
export class JobPuller {
  readonly #options: JobPullerOptions;
  readonly #stopping = new AbortController();
  readonly #loops: Promise<void>[];
  /** Jobs delivered and not yet handed to the node: they hold a slot too. */
  #claiming = 0;
  /** Resolves the waits of loops that found no room. */
  #wakeUp = Promise.withResolvers<void>();
  readonly #running = new Set<Promise<void>>();
  /** Resolves at stop: one promise for every wait, not a listener each. */
  readonly #stopped: Promise<void>;

  constructor(options: JobPullerOptions) {
    this.#options = options;
    this.#stopped = new Promise((resolve) =>
      this.#stopping.signal.addEventListener("abort", () => resolve(), {
        once: true,
      })
    );
    this.#loops = options.languages.map((language) => this.#pull(language));
  }

  /** The node has room again (a job ended, its load dropped): pull. */
  wake(): void {
    this.#wakeUp.resolve();
    this.#wakeUp = Promise.withResolvers<void>();
  }

  /**
   * Pulls no more; resolves once every job it handed out settled. A pull
   * still waiting for a job ends with the connection ({@linkcode finished}).
   */
  async stop(): Promise<void> {
    this.#stopping.abort();
    this.wake();
    await Promise.all(this.#running);
  }

  /** Resolves once every pull loop ended: after {@linkcode stop}, and the connection closed. */
  get finished(): Promise<void> {
    return Promise.all(this.#loops).then(() => {});
  }

  #hasRoom(): boolean {
    return this.#claiming === 0 && this.#options.hasRoom();
  }

  /** One language's loop: wait for room, ask for a job, take it or hand it back. */
  async #pull(language: string): Promise<void> {
    const stop = this.#stopping.signal;
    let failures = 0;
    while (!stop.aborted) {
      if (!this.#hasRoom()) {
        await Promise.race([this.#wakeUp.promise, this.#stopped]);
        continue;
      }
      let message: JsMsg | null;
      try {
        const consumer = await this.#options.cluster.consumer(language);
        message = await consumer.next({ expires: PULL_EXPIRES_MS });
        failures = 0;
      } catch (error) {
        if (stop.aborted) return;
        const delayMs = Math.min(5_000, 100 * 2 ** failures++);
        log.warn("cannot pull {language} jobs: {error}; again in {ms} ms", {
          language,
          error: error instanceof Error ? error.message : String(error),
          ms: delayMs,
        });
        await abortableDelay(delayMs, stop);
        continue;
      }
      if (message === null) continue;
      if (stop.aborted || !this.#hasRoom()) {
        // Another language's job took the slot: someone else may run it.
        message.nak();
        continue;
      }
      this.#claiming++;
      const taking = this.#take(message).finally(() => {
        this.#running.delete(taking);
        this.wake();
      });
      this.#running.add(taking);
    }
  }

  /** Claims a delivered job and runs it; never rejects. */
  async #take(message: JsMsg): Promise<void> {
    const { cluster, node, maxAttempts } = this.#options;
    let handed = false;
    const handedOver = () => {
      if (!handed) this.#claiming--;
      handed = true;
    };
    try {
      const job = decode(StreamedJobSchema, message.data);
      if (job === undefined) {
        log.error(
          "dropping a message on {subject} that is not a job (seq {seq})",
          { subject: message.subject, seq: message.seq },
        );
        message.term();
        return;
      }
      const claim = await claimRecord(
        cluster.jobs,
        {
          id: job.id,
          client: job.client,
          language: job.language,
          acceptedAt: job.acceptedAt,
        },
        node,
        maxAttempts,
      );
      if (claim.kind === "ended") {
        // Cancelled while it waited, or finished elsewhere: nothing to run.
        await message.ackAck().catch(() => {});
        return;
      }
      if (claim.kind === "exhausted") {
        log.warn("job {jobId} ended: {reason}", {
          jobId: job.id,
          reason: claim.result.reason,
        });
        this.#publish(job.id, {
          type: "result",
          attempt: 0,
          result: claim.result,
        });
        await message.ackAck().catch(() => {});
        return;
      }
      const { attempt } = claim.record;
      const claimed = { record: claim.record, revision: claim.revision };
      const alive = setInterval(
        () => message.working(),
        Math.max(50, Math.floor(cluster.ackWaitMs / 3)),
      );
      let controls: PulledJobControls | undefined;
      const pending: Control[] = [];
      const control: Subscription = cluster.connection.subscribe(
        controlSubject(job.id),
        {
          callback: (error, msg) => {
            if (error) return;
            const parsed = decode(ControlSchema, msg.data);
            if (parsed === undefined) return;
            if (controls === undefined) pending.push(parsed);
            else apply(controls, parsed);
          },
        },
      );
      try {
        // Subscribed first: a master that hears `started` may send stdin at once.
        this.#publish(job.id, { type: "started", attempt, node });
        let ended = false;
        const ran = this.#options.run({
          id: job.id,
          request: job.request,
          language: job.language,
          client: job.client,
          attempt,
          acceptedAt: job.acceptedAt,
          output: (stream, data) => {
            if (!ended) {
              this.#publish(job.id, { type: "output", attempt, stream, data });
            }
          },
          finish: async (result) => {
            ended = true;
            // Through a failover of the servers too: the job ran.
            const won = await retrying(() =>
              finishRecord(cluster.jobs, job.id, attempt, result, claimed)
            ).catch((error) => {
              log.error("cannot write the result of job {jobId}: {error}", {
                jobId: job.id,
                error,
              });
              return false;
            });
            if (!won) {
              log.warn(
                "job {jobId}: attempt {attempt} ended after another began or the job ended; its result is dropped",
                { jobId: job.id, attempt },
              );
              return false;
            }
            this.#publish(job.id, { type: "result", attempt, result });
            // Not waited for: an ack that is lost delivers the job again,
            // and its claim then finds it ended, and acks it.
            message.ack();
            return true;
          },
          handBack: async () => {
            ended = true;
            message.nak();
            // Out before the node closes its connection.
            await cluster.connection.flush().catch(() => {});
          },
        });
        controls = ran.controls;
        handedOver();
        for (const early of pending.splice(0)) apply(controls, early);
        await ran.done;
      } finally {
        clearInterval(alive);
        control.unsubscribe();
      }
    } catch (error) {
      log.error("cannot run a pulled job: {error}", { error });
      // Handed back: another node (or this one) tries again.
      message.nak(1_000);
    } finally {
      handedOver();
    }
  }

  #publish(jobId: string, event: NodeEvent): void {
    try {
      this.#options.cluster.connection.publish(
        eventSubject(jobId),
        JSON.stringify(event),
      );
    } catch (error) {
      log.warn("cannot publish a {type} event of job {jobId}: {error}", {
        type: event.type,
        jobId,
        error,
      });
    }
  }
}

function apply(controls: PulledJobControls, control: Control): void {
  if (control.type === "cancel") controls.cancel(control.reason);
  else controls.input(control.data, control.eof);
}
