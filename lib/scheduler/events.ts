/**
 * What the dispatcher says about a job as its life goes on: the
 * events it emits (the master dispatches them as its own) and the updates it
 * sends the job's client. The scheduler owns these types, so that it depends
 * on nothing above it; `lib/nodes/events.ts` re-exports the details.
 *
 * @module
 */
import type { JobResult, OutputStream } from "../job.ts";

/** A job waits in the queue at `position` (1 is next). */
export interface JobQueuedDetail {
  /** The waiting job. */
  readonly jobId: string;
  /** Its place in the queue; 1 runs next. */
  readonly position: number;
  /**
   * A guess of how long it waits still, in ms: `position` times the time
   * recent jobs held their slot, over the slots that run its language.
   */
  readonly estimatedWaitMs: number;
}

/** A job started running on `node`. */
export interface JobStartDetail {
  /** The job that started. */
  readonly jobId: string;
  /** The node running it. */
  readonly node: string;
  /** The runner's canonical language name. */
  readonly language: string;
}

/** A job lost its node and starts again elsewhere. */
export interface JobRestartDetail {
  /** The job. */
  readonly jobId: string;
  /** Why it restarts. */
  readonly reason: string;
  /** The attempt about to start: 2 for the first restart. */
  readonly attempt: number;
}

/** The detail of every event the dispatcher emits, by type. */
export interface DispatcherEventMap {
  /** A job entered the queue or moved in it. */
  jobqueued: JobQueuedDetail;
  /** A job started running. */
  jobstart: JobStartDetail;
  /** A job lost its node and waits to start again. */
  jobrestart: JobRestartDetail;
  /** A job ended: exactly once per job, rejected ones included. */
  jobcomplete: JobResult;
}

/**
 * What the dispatcher tells a job's client while the job waits and runs
 * (its result goes separately). Each is a message of the client protocol
 * as it stands, so a client link sends them as they are.
 */
export type JobUpdate =
  | {
    type: "queued";
    jobId: string;
    position: number;
    estimatedWaitMs: number;
  }
  | { type: "started"; jobId: string; node: string }
  | { type: "output"; jobId: string; stream: OutputStream; data: string }
  | { type: "restarted"; jobId: string; reason: string; attempt: number };
