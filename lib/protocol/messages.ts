/**
 * Every message kiln peers exchange, as zod schemas: the single definition
 * that validates each inbound frame at run time and gives the static types.
 *
 * A connection starts with the handshake (`hello`, `challenge`, `auth`,
 * `welcome`), then carries job traffic multiplexed by `jobId`. `error` may be
 * sent by either side at any time, just before it closes the connection.
 *
 * @module
 */
import { z } from "zod";
import { type JobResult, JobResultSchema, type OutputStream } from "../job.ts";

/** The protocol version this build speaks best. */
export const PROTOCOL_VERSION = 1;
/** The oldest protocol version this build still speaks. */
export const MIN_PROTOCOL_VERSION = 1;

/** Who is on the other end of a connection. */
export const RoleSchema = z.enum(["client", "secondary"]);
/** Who is on the other end of a connection. */
export type Role = z.infer<typeof RoleSchema>;

const Nonce = z.string().min(16).max(128);
const Mac = z.string().regex(/^[0-9a-f]{64}$/, "expected a hex HMAC-SHA256");
const Version = z.number().int().min(0).max(65535);
const JobId = z.string().min(1).max(128);

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

/** The master took a submission and gave it an id. */
export const AcceptedSchema = z.object({
  type: z.literal("accepted"),
  ref: z.string(),
  jobId: JobId,
}).strict() satisfies z.ZodType<AcceptedEvent>;

/** The job waits; `position` 1 is next to run. Sent again whenever it moves. */
export const QueuedSchema = z.object({
  type: z.literal("queued"),
  jobId: JobId,
  position: z.number().int().positive(),
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

/** Any message of the protocol. */
export const MessageSchema = z.discriminatedUnion("type", [
  HelloSchema,
  ChallengeSchema,
  AuthSchema,
  WelcomeSchema,
  ErrorMessageSchema,
  SubmitSchema,
  CancelSchema,
  AcceptedSchema,
  QueuedSchema,
  StartedSchema,
  OutputSchema,
  ResultSchema,
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

/** The job waits; `position` 1 is next to run. Sent again whenever it moves. */
export interface QueuedEvent {
  /** The event type. */
  type: "queued";
  /** The job this event is about. */
  jobId: string;
  /** Place in the queue; 1 runs next. */
  position: number;
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

/** Events a client sees for one job, in order: accepted, queued, started, output, result. */
export type JobEvent =
  | AcceptedEvent
  | QueuedEvent
  | StartedEvent
  | OutputEvent
  | ResultEvent;
