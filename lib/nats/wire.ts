/**
 * What travels on NATS between masters and nodes: a job in the stream, its
 * events, and controls for it. Every message is JSON and checked on
 * arrival: anyone with rights on the subjects could have published it.
 *
 * @module
 */
import { z } from "zod";
import { JobResultSchema } from "../job.ts";
import {
  OfferedLanguageSchema,
  SandboxReportSchema,
} from "../protocol/messages.ts";

/** Job ids are the master's UUIDs, or anything a subject token allows. */
const JobIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,128}$/);

/** A job as a master puts it in the stream; `request` is checked again by the node. */
export const StreamedJobSchema = z.object({
  id: JobIdSchema,
  client: z.string().max(256),
  language: z.string().min(1).max(64),
  acceptedAt: z.number().finite(),
  request: z.unknown(),
});

/** A job as a master puts it in the stream. */
export type StreamedJob = z.infer<typeof StreamedJobSchema>;

/** A job's events, from the node running its attempt `attempt`. */
export const NodeEventSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("started"),
    attempt: z.number().int().min(1),
    node: z.string().max(256),
  }),
  z.object({
    type: z.literal("output"),
    attempt: z.number().int().min(1),
    stream: z.enum(["stdout", "stderr"]),
    data: z.string(),
  }),
  z.object({
    type: z.literal("result"),
    attempt: z.number().int().min(0),
    result: JobResultSchema,
  }),
]);

/** A job's event, from the node running it (or, for `result`, whoever ended it). */
export type NodeEvent = z.infer<typeof NodeEventSchema>;

/** Controls a master sends to whichever node runs a job. */
export const ControlSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("cancel"), reason: z.string().max(4096) }),
  z.object({
    type: z.literal("stdin"),
    data: z.string(),
    eof: z.boolean(),
  }),
]);

/** A control for a running job. */
export type Control = z.infer<typeof ControlSchema>;

/** A node's entry in the nodes bucket, rewritten on every heartbeat. */
export const NodeEntrySchema = z.object({
  id: z.string().max(128),
  name: z.string().max(256),
  address: z.string().max(512),
  slots: z.number().int().min(0).max(4096),
  running: z.number().int().min(0),
  cpuPercent: z.number().min(0).max(100),
  ramPercent: z.number().min(0).max(100),
  maxCpu: z.number().min(0).max(100),
  maxRam: z.number().min(0).max(100),
  draining: z.boolean(),
  languages: z.array(OfferedLanguageSchema).max(256),
  sandbox: SandboxReportSchema.nullable(),
  /** When the node wrote it, epoch ms by its own clock. */
  at: z.number().finite(),
});

/** A node as the nodes bucket holds it. */
export type NodeEntry = z.infer<typeof NodeEntrySchema>;

const decoder = new TextDecoder();

/**
 * Parses a message's JSON against `schema`; undefined, never a throw, for
 * anything else.
 */
export function decode<T>(
  schema: z.ZodType<T>,
  data: Uint8Array,
): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}
