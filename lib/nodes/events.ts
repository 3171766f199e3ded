/**
 * The events a {@linkcode MasterNode} dispatches, as a map from event type
 * to event, so listeners are typed: `master.addEventListener("jobcomplete",
 * (e) => e.detail.verdict)`.
 *
 * @module
 */
import type { JobResult } from "../job.ts";

/** A job was received and given an id. */
export interface JobAcceptedDetail {
  readonly jobId: string;
  /** The client's display name (from its handshake) or address. */
  readonly client: string;
}

/** A job waits in the queue at `position` (1 is next). */
export interface JobQueuedDetail {
  readonly jobId: string;
  readonly position: number;
}

/** A job started running on `node`. */
export interface JobStartDetail {
  readonly jobId: string;
  readonly node: string;
  readonly language: string;
}

/** Every event of a master node, by type. */
export interface MasterNodeEventMap {
  jobaccepted: CustomEvent<JobAcceptedDetail>;
  jobqueued: CustomEvent<JobQueuedDetail>;
  jobstart: CustomEvent<JobStartDetail>;
  /** Every job ends with exactly one `jobcomplete`, rejected ones included. */
  jobcomplete: CustomEvent<JobResult>;
}
