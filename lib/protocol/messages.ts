/**
 * Every message kiln peers exchange, as zod schemas: the single definition
 * that validates each inbound frame at run time and gives the static types.
 *
 * A connection starts with the handshake (`hello`, `challenge`, `auth`,
 * `welcome`), then carries job traffic multiplexed by `jobId`. `error` may be
 * sent by either side at any time, just before it closes the connection.
 * From protocol version {@linkcode PING_PROTOCOL_VERSION} on, the master
 * also sends each secondary a `ping` every heartbeat interval.
 *
 * @module
 */
import { z } from "zod";
import { SANDBOX_LAYERS } from "../job.ts";
import type { SandboxReport } from "../job.ts";
import type { Role } from "../security/credentials.ts";
import {
  fitResult,
  JobLimitsSchema,
  type JobResult,
  JobResultSchema,
  type OutputStream,
} from "../job.ts";
import type { NodeStatus, OfferedLanguage } from "../scheduler/worker.ts";

// The scheduler owns these (it sits below the protocol); the wire carries them.
export type { NodeStatus, OfferedLanguage };

/**
 * The protocol version this build speaks best. Each version changes the
 * shape of some message, which the older version's strict schemas refuse,
 * so a mixed cluster is refused at the handshake, naming both versions,
 * rather than failing on its first such message. Version 2 brought frame
 * sizes, node secrets and draining in `register` and `heartbeat`, and the
 * `seccomp` and `disk` layers; version 3 the `estimatedWaitMs` of `queued`;
 * version 4 `attach` and `unknown_job`. Messages a version adds without
 * changing an older one's keep that older version spoken: a client that
 * agreed on version 3 never sends `attach`.
 */
export const PROTOCOL_VERSION = 4;
/**
 * The oldest protocol version this build still speaks. Version 3 peers
 * differ only in lacking what version 4 added.
 */
export const MIN_PROTOCOL_VERSION = 3;

// Declared by security, which authenticates a role and sits below the protocol.
export type { Role } from "../security/credentials.ts";
/** Validates a {@linkcode Role}. */
export const RoleSchema = z.enum(["client", "secondary"]) satisfies z.ZodType<
  Role
>;

const Nonce = z.string().min(16).max(128);
const Mac = z.string().regex(/^[0-9a-f]{64}$/, "expected a hex HMAC-SHA256");
const Version = z.number().int().min(0).max(65535);
const JobId = z.string().min(1).max(128);
/** The largest frame a peer accepts, as it declares it at registration. */
const FrameBytes = z.number().int().min(1024).max(0xffff_ffff);

/** First message of every connection, from the dialing side. */
export const HelloSchema = z.object({
  type: z.literal("hello"),
  role: RoleSchema,
  minVersion: Version,
  maxVersion: Version,
  /** Random base64 the server must prove it can MAC with the shared token. */
  nonce: Nonce,
  /** A display name for logs (not an identity: the token is). */
  name: z.string().max(128).optional(),
}).strict();

/** The server's answer to `hello`: its nonce, and its proof that it knows the token. */
export const ChallengeSchema = z.object({
  type: z.literal("challenge"),
  version: Version,
  nonce: Nonce,
  proof: Mac,
}).strict();

/** The dialing side's proof that it knows the token. */
export const AuthSchema = z.object({
  type: z.literal("auth"),
  mac: Mac,
}).strict();

/** The handshake succeeded. */
export const WelcomeSchema = z.object({
  type: z.literal("welcome"),
  version: Version,
  /** The server's node name. */
  node: z.string(),
}).strict();

/** Sent just before a peer closes the connection because of a problem. */
export const ErrorMessageSchema = z.object({
  type: z.literal("error"),
  code: z.string().max(64),
  message: z.string().max(4096),
}).strict();

/**
 * A client asks to run a job. `job` is validated separately, so that a bad
 * job is answered with a `rejected` result instead of a dropped connection.
 */
export const SubmitSchema = z.object({
  type: z.literal("submit"),
  /** Chosen by the client to match the `accepted` answer to this submit. */
  ref: z.string().min(1).max(128),
  job: z.unknown(),
}).strict();

/** A client gives up on a job. */
export const CancelSchema = z.object({
  type: z.literal("cancel"),
  jobId: JobId,
}).strict();

/**
 * More stdin for an interactive job, typed while it runs: from the client
 * to the master, and from the master to the secondary that runs the job.
 * `eof` ends the program's stdin after `data`.
 */
export const StdinSchema = z.object({
  type: z.literal("stdin"),
  jobId: JobId,
  data: z.string(),
  eof: z.boolean().optional(),
}).strict();

/**
 * The first protocol version with `attach` and `unknown_job`: a client
 * sends `attach` only on a link that agreed on this version or a later one,
 * and treats an older master as one that does not know the job.
 */
export const ATTACH_PROTOCOL_VERSION = 4;

/**
 * A client asks for the rest of a job it submitted over a connection that
 * was lost, perhaps to another master: answered with `accepted` (the same
 * `jobId`) and then the job's remaining events and its result, as for a
 * submit; or with `unknown_job` when this master cannot give them.
 * Version 4 and later.
 */
export const AttachSchema = z.object({
  type: z.literal("attach"),
  /** Chosen by the client to match the answer to this request. */
  ref: z.string().min(1).max(128),
  /** The id the job was accepted with. */
  jobId: JobId,
}).strict();

/**
 * The master's answer to an `attach` it cannot serve: it does not know the
 * job, or no longer has its events and result. The client may submit the
 * job again. Version 4 and later.
 */
export const UnknownJobSchema = z.object({
  type: z.literal("unknown_job"),
  /** The `ref` of the client's `attach`. */
  ref: z.string().max(128),
  jobId: JobId,
  /** Why, e.g. `this master runs standalone: ...`. */
  reason: z.string().max(4096),
}).strict();

/** The master took a submission and gave it an id. */
export const AcceptedSchema = z.object({
  type: z.literal("accepted"),
  ref: z.string(),
  jobId: JobId,
}).strict() satisfies z.ZodType<AcceptedEvent>;

/**
 * The job waits; `position` 1 is next to run. Sent at once, then as it
 * moves (at most a few times a second), and with position 1 just before
 * it starts.
 */
export const QueuedSchema = z.object({
  type: z.literal("queued"),
  jobId: JobId,
  position: z.number().int().positive(),
  estimatedWaitMs: z.number().int().nonnegative(),
}).strict() satisfies z.ZodType<QueuedEvent>;

/** The job started on `node`. */
export const StartedSchema = z.object({
  type: z.literal("started"),
  jobId: JobId,
  node: z.string(),
}).strict() satisfies z.ZodType<StartedEvent>;

/** A chunk of the program's output, as it was produced. */
export const OutputSchema = z.object({
  type: z.literal("output"),
  jobId: JobId,
  stream: z.enum(["stdout", "stderr"]),
  data: z.string(),
}).strict() satisfies z.ZodType<OutputEvent>;

/** The job's one and only result. */
export const ResultSchema = z.object({
  type: z.literal("result"),
  jobId: JobId,
  result: JobResultSchema,
}).strict() satisfies z.ZodType<ResultEvent>;

/**
 * The job's node was lost and the job starts again elsewhere: output seen so
 * far is void. Sent to the client before the new `started`.
 */
export const RestartedSchema = z.object({
  type: z.literal("restarted"),
  jobId: JobId,
  /** Why, e.g. `node "w1" was lost: connection closed`. */
  reason: z.string(),
  /** The attempt that is about to start: 2 for the first restart. */
  attempt: z.number().int().min(2),
}).strict() satisfies z.ZodType<RestartedEvent>;

const Percent = z.number().min(0).max(100);

/** Most jobs one node runs at once (its `slots`). */
export const MAX_SLOTS = 4096;

/** A language a secondary can run, as it reports it when registering. */
export const OfferedLanguageSchema = z.object({
  name: z.string().min(1).max(64),
  version: z.string().max(256),
  aliases: z.array(z.string().max(64)).max(32),
  extensions: z.array(z.string().max(32)).max(32),
}).strict() satisfies z.ZodType<OfferedLanguage>;

/** Validates a node's {@linkcode SandboxReport}. */
export const SandboxReportSchema = z.object({
  mode: z.enum(["auto", "bwrap", "none"]),
  layers: z.array(z.enum(SANDBOX_LAYERS)),
  backends: z.partialRecord(z.enum(SANDBOX_LAYERS), z.string().max(256)),
  missing: z.partialRecord(z.enum(SANDBOX_LAYERS), z.string().max(1024)),
}).strict() satisfies z.ZodType<SandboxReport>;

/** A secondary introduces itself, right after the handshake. */
export const RegisterSchema = z.object({
  type: z.literal("register"),
  /** Random per process: tells a restarted secondary from a reconnecting one. Public. */
  id: z.string().min(1).max(128),
  /**
   * Random per process and never shown: while a node with this `id` is live,
   * only a registration with the same `secret` (and credential) may take its
   * place, so a public id cannot be used to evict a node.
   */
  secret: z.string().min(16).max(128).optional(),
  name: z.string().min(1).max(128),
  languages: z.array(OfferedLanguageSchema).max(256),
  /** Jobs it runs at once. */
  slots: z.number().int().min(1).max(MAX_SLOTS),
  /** Above this CPU % it takes no new job. */
  maxCpu: Percent,
  /** Above this RAM % it takes no new job. */
  maxRam: Percent,
  /** Its maximum limits per job, so the master knows when a job is overdue. */
  limits: JobLimitsSchema.optional(),
  /** The isolation its jobs run under. */
  sandbox: SandboxReportSchema.optional(),
  /** The largest frame it accepts: a `run` message must fit. */
  maxFrameBytes: FrameBytes.optional(),
}).strict();

/** The master took the registration; heartbeats are due every `heartbeatIntervalMs`. */
export const RegisteredSchema = z.object({
  type: z.literal("registered"),
  master: z.string(),
  heartbeatIntervalMs: z.number().int().positive(),
  /** The largest frame the master accepts: `output` and `result` messages must fit. */
  maxFrameBytes: FrameBytes.optional(),
}).strict();

/** A secondary's load, about every second. */
export const HeartbeatSchema = z.object({
  type: z.literal("heartbeat"),
  cpuPercent: Percent,
  ramPercent: Percent,
  ramUsedMb: z.number().min(0),
  /** Jobs running on it now. */
  running: z.number().int().min(0),
  /** It is leaving: it takes no new job, and finishes those it runs. */
  draining: z.boolean().optional(),
}).strict();

/**
 * The first protocol version whose masters ping their secondaries: a
 * secondary of an older one refuses `ping` as an invalid message (and warns
 * of each), so a master pings only a link that negotiated this version or
 * a later one, and a secondary waits for pings only then.
 */
export const PING_PROTOCOL_VERSION = 4;

/**
 * The master is still there: sent to each secondary every heartbeat
 * interval, so that a secondary whose master went silent without closing
 * the link (stopped, or behind a dead network path) notices within its node
 * timeout. Nothing answers it: the secondary's heartbeats already flow the
 * other way.
 */
export const PingSchema = z.object({
  type: z.literal("ping"),
}).strict();

/** The master gives a secondary a job (already validated by the master). */
export const RunSchema = z.object({
  type: z.literal("run"),
  jobId: JobId,
  job: z.unknown(),
}).strict();

/** A secondary will not run a job (full, or no toolchain for it); the master places it elsewhere. */
export const RefusedSchema = z.object({
  type: z.literal("refused"),
  jobId: JobId,
  reason: z.string().max(4096),
}).strict();

/** A client asks for the state of the cluster. */
export const GetStatusSchema = z.object({
  type: z.literal("get_status"),
}).strict();

/** One node as `cluster_status` reports it. */
export const NodeStatusSchema = z.object({
  id: z.string(),
  name: z.string(),
  /** Where the node connects from, or the master's listening address for itself. */
  address: z.string(),
  /**
   * `ready` takes jobs; `busy` is full or over a threshold; `failing`
   * refused or broke lately; `draining` is leaving, finishing its jobs.
   */
  state: z.enum(["ready", "busy", "failing", "draining"]),
  /** Whether this is the master's own slots. */
  local: z.boolean(),
  cpuPercent: z.number(),
  ramPercent: z.number(),
  running: z.number().int(),
  slots: z.number().int(),
  languages: z.array(
    z.object({ name: z.string(), version: z.string() }).strict(),
  ),
  /** Milliseconds since its last heartbeat (0 for the master itself). */
  lastSeenMs: z.number(),
  sandbox: SandboxReportSchema.nullable(),
}).strict() satisfies z.ZodType<NodeStatus>;

/** The master's answer to `get_status`. */
export const ClusterStatusSchema = z.object({
  type: z.literal("cluster_status"),
  master: z.string(),
  nodes: z.array(NodeStatusSchema),
  /** Jobs waiting for a slot. */
  queued: z.number().int().min(0),
  /** Jobs running anywhere. */
  running: z.number().int().min(0),
}).strict() satisfies z.ZodType<ClusterStatusMessage>;

/** The state of a cluster, as `deno task status` shows it. */
export interface ClusterStatus {
  /** The master's name. */
  master: string;
  /** Every node: the master's own slots (when it has any) and each secondary. */
  nodes: NodeStatus[];
  /** Jobs waiting for a slot. */
  queued: number;
  /** Jobs running anywhere. */
  running: number;
}

/** The master's answer to `get_status`: a {@linkcode ClusterStatus} on the wire. */
export interface ClusterStatusMessage extends ClusterStatus {
  /** The message type. */
  type: "cluster_status";
}

/** Any message of the protocol. */
export const MessageSchema = z.discriminatedUnion("type", [
  HelloSchema,
  ChallengeSchema,
  AuthSchema,
  WelcomeSchema,
  ErrorMessageSchema,
  SubmitSchema,
  CancelSchema,
  StdinSchema,
  AttachSchema,
  UnknownJobSchema,
  AcceptedSchema,
  QueuedSchema,
  StartedSchema,
  OutputSchema,
  ResultSchema,
  RestartedSchema,
  RegisterSchema,
  RegisteredSchema,
  HeartbeatSchema,
  PingSchema,
  RunSchema,
  RefusedSchema,
  GetStatusSchema,
  ClusterStatusSchema,
]);

/** Any message of the protocol. */
export type Message = z.infer<typeof MessageSchema>;
/** The message whose `type` is `T`. */
export type MessageOf<T extends Message["type"]> = Extract<
  Message,
  { type: T }
>;
/** The master took a submission and gave it an id. */
export interface AcceptedEvent {
  /** The event type. */
  type: "accepted";
  /** The `ref` of the client's `submit`. */
  ref: string;
  /** The job this event is about. */
  jobId: string;
}

/**
 * The job waits; `position` 1 is next to run. Sent at once, then as it
 * moves (at most a few times a second), and with position 1 just before
 * it starts.
 */
export interface QueuedEvent {
  /** The event type. */
  type: "queued";
  /** The job this event is about. */
  jobId: string;
  /** Place in the queue; 1 runs next. */
  position: number;
  /**
   * A guess of how long it still waits, in ms: its position times how long
   * recent jobs held a slot, over the slots that run its language.
   */
  estimatedWaitMs: number;
}

/** The job started on `node`. */
export interface StartedEvent {
  /** The event type. */
  type: "started";
  /** The job this event is about. */
  jobId: string;
  /** The node running the job. */
  node: string;
}

/** A chunk of the program's output, as it was produced. */
export interface OutputEvent {
  /** The event type. */
  type: "output";
  /** The job this event is about. */
  jobId: string;
  /** `stdout` or `stderr`. */
  stream: OutputStream;
  /** The text, decoded as UTF-8 as it streamed. */
  data: string;
}

/** The job's one and only result. */
export interface ResultEvent {
  /** The event type. */
  type: "result";
  /** The job this event is about. */
  jobId: string;
  /** The result. */
  result: JobResult;
}

/** The job's node was lost; it starts again elsewhere, and earlier output is void. */
export interface RestartedEvent {
  /** The event type. */
  type: "restarted";
  /** The job this event is about. */
  jobId: string;
  /** Why the job restarts. */
  reason: string;
  /** The attempt about to start: 2 for the first restart. */
  attempt: number;
}

/**
 * Events a client sees for one job, in order: accepted, queued (again as it
 * moves), started, output, then result; `restarted` may come after output
 * when a node is lost, followed by a new `started`.
 */
export type JobEvent =
  | AcceptedEvent
  | QueuedEvent
  | StartedEvent
  | OutputEvent
  | RestartedEvent
  | ResultEvent;

/** Room left in a frame for `{"type":"result","jobId":...}` around the result. */
const RESULT_ENVELOPE_BYTES = 512;

/**
 * The `result` message for a job, its output cut if needed so the frame
 * fits `maxFrameBytes`: escaped as JSON, output can grow up to six times,
 * and a result too big to send would leave its client waiting forever.
 *
 * @example A result message for a frame of at most 8 MiB
 * ```ts
 * import assert from "node:assert/strict";
 * import { resultMessage } from "./messages.ts";
 * import { blankResult } from "../job.ts";
 *
 * const message = resultMessage(blankResult("job-1", { verdict: "ok" }), 8 * 1024 * 1024);
 * assert.equal(message.type, "result");
 * assert.equal(message.jobId, "job-1");
 * ```
 */
export function resultMessage(
  result: JobResult,
  maxFrameBytes: number,
): ResultEvent {
  return {
    type: "result",
    jobId: result.jobId,
    result: fitResult(result, maxFrameBytes - RESULT_ENVELOPE_BYTES),
  };
}
