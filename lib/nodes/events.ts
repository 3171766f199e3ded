/**
 * The events a {@linkcode MasterNode} dispatches, as a map from event type
 * to event, so listeners are typed: `master.addEventListener("jobcomplete",
 * (e) => e.detail.verdict)`.
 *
 * @module
 */
import type { JobResult } from "../job.ts";
import type {
  JobQueuedDetail,
  JobRestartDetail,
  JobStartDetail,
} from "../scheduler/events.ts";

// The scheduler emits these; they are the master's events too.
export type { JobQueuedDetail, JobRestartDetail, JobStartDetail };

/** A job was received and given an id. */
export interface JobAcceptedDetail {
  /** The id given to the job. */
  readonly jobId: string;
  /** The client's display name (from its handshake) or address. */
  readonly client: string;
}

/** A secondary joined the cluster, or left it (`reason` says why). */
export interface NodeDetail {
  /** The id the secondary registered with. */
  readonly id: string;
  /** Its name. */
  readonly name: string;
  /** Where it connected from. */
  readonly address: string;
  /** Why it left; absent when it joined. */
  readonly reason?: string;
}

/** The master's credentials were replaced (a reloaded `--auth` file). */
export interface CredentialsChangeDetail {
  /** Where the new credentials came from. */
  readonly source: string;
}

/** Every event of a master node, by type. */
export interface MasterNodeEventMap {
  /** A submission arrived and got an id; validation comes next. */
  jobaccepted: CustomEvent<JobAcceptedDetail>;
  /** A job entered the queue or moved up in it. */
  jobqueued: CustomEvent<JobQueuedDetail>;
  /** A job started running. */
  jobstart: CustomEvent<JobStartDetail>;
  /** A job lost its node and waits to start again elsewhere. */
  jobrestart: CustomEvent<JobRestartDetail>;
  /** A secondary registered. */
  nodejoin: CustomEvent<NodeDetail>;
  /**
   * A secondary is draining: it takes no new job, finishes those it runs,
   * then leaves (a `nodeleave` follows).
   */
  nodedrain: CustomEvent<NodeDetail>;
  /** A secondary was lost: it disconnected or went silent. */
  nodeleave: CustomEvent<NodeDetail>;
  /** Every job ends with exactly one `jobcomplete`, rejected ones included. */
  jobcomplete: CustomEvent<JobResult>;
  /** The credentials were replaced: links of revoked ones have been closed. */
  credentialschange: CustomEvent<CredentialsChangeDetail>;
}
