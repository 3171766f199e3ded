/**
 * A job's record in the cluster's bucket: the one place that says whether
 * it waits, which attempt of it runs where, and how it ended.
 *
 * Every change is a compare-and-set on the record's revision, so that two
 * nodes given the same job (one paused past its ack wait, then resumed)
 * cannot both end it: the attempt that started last is the only one that
 * may write a result, and the first result written is the job's result.
 * A late node's result changes nothing.
 *
 * @module
 */
import type { KV } from "@nats-io/kv";
import { blankResult, type JobResult } from "../job.ts";

/** Where a job is: in the stream, on a node, or over. */
export type JobRecordState = "queued" | "running" | "ended";

/** A job as every master and node of a NATS cluster sees it. */
export interface JobRecord {
  /** The id its master gave it. */
  readonly id: string;
  /** Who submitted it, for results and logs. */
  readonly client: string;
  /** Canonical language name. */
  readonly language: string;
  /** Where it is: in the stream, on a node, or over. */
  readonly state: JobRecordState;
  /** How many times a node started it. */
  readonly attempt: number;
  /** The node running it now, or the last one that did. */
  readonly node: string | null;
  /** When a master accepted it, in epoch ms. */
  readonly acceptedAt: number;
  /** When its current attempt started, in epoch ms; 0 before the first. */
  readonly startedAt: number;
  /** How it ended, once `ended`. */
  readonly result?: JobResult | undefined;
}

/** What a node's claim of a delivered job found. */
export type Claim =
  | {
    readonly kind: "claimed";
    readonly record: JobRecord;
    /** The record's revision after the claim, for {@linkcode finishRecord}. */
    readonly revision: number;
  }
  | { readonly kind: "ended" }
  | { readonly kind: "exhausted"; readonly result: JobResult };

/** How many times a conflicting write is tried again before giving up. */
const CAS_TRIES = 16;

/** Reads a record; undefined when there is none (or it was deleted). */
export async function readRecord(
  bucket: KV,
  id: string,
): Promise<{ record: JobRecord; revision: number } | undefined> {
  const entry = await bucket.get(id);
  if (entry === null || entry.operation !== "PUT") return undefined;
  try {
    return { record: entry.json<JobRecord>(), revision: entry.revision };
  } catch {
    return undefined;
  }
}

/**
 * Writes the record of a job just put in the stream, unless a node that
 * took it already wrote one.
 */
export async function recordQueued(
  bucket: KV,
  record: JobRecord,
): Promise<void> {
  try {
    await bucket.create(record.id, JSON.stringify(record));
  } catch (error) {
    if (await readRecord(bucket, record.id) === undefined) throw error;
  }
}

/**
 * A node takes a delivered job: its next attempt starts, unless the job
 * ended meanwhile (cancelled, or finished by another node), or its
 * attempts are used up (the last node to start it was lost), which ends it
 * here with `internal_error`.
 */
export async function claimRecord(
  bucket: KV,
  delivered: Omit<JobRecord, "state" | "attempt" | "node" | "startedAt">,
  node: string,
  maxAttempts: number,
): Promise<Claim> {
  for (let tries = 0; tries < CAS_TRIES; tries++) {
    const found = await readRecord(bucket, delivered.id);
    const now = Date.now();
    if (found === undefined) {
      // The master that put it in the stream has not written it yet.
      const record: JobRecord = {
        ...delivered,
        state: "running",
        attempt: 1,
        node,
        startedAt: now,
      };
      const written = await tryWrite(bucket, record, 0);
      if (written > 0) return { kind: "claimed", record, revision: written };
      continue;
    }
    const { record, revision } = found;
    if (record.state === "ended") return { kind: "ended" };
    if (record.state === "running" && record.attempt >= maxAttempts) {
      const result = blankResult(record.id, {
        language: record.language,
        client: record.client,
        node: record.node,
        reason:
          `the job's node was lost ${record.attempt} times (last "${record.node}"); it is not started again`,
      });
      if (
        await tryWrite(
          bucket,
          { ...record, state: "ended", result },
          revision,
        ) > 0
      ) {
        return { kind: "exhausted", result };
      }
      continue;
    }
    const next: JobRecord = {
      ...record,
      state: "running",
      attempt: record.attempt + 1,
      node,
      startedAt: now,
    };
    const written = await tryWrite(bucket, next, revision);
    if (written > 0) {
      return { kind: "claimed", record: next, revision: written };
    }
  }
  throw new Error(
    `Cannot claim job ${delivered.id}: its record kept changing under us`,
  );
}

/**
 * Ends a job with its result, if `attempt` is still the job's current one:
 * false when another attempt began since, or the job ended already.
 * `claimed` (the claim's record and revision) saves a read when nothing
 * changed the record since: the write is tried on it first.
 */
export async function finishRecord(
  bucket: KV,
  id: string,
  attempt: number,
  result: JobResult,
  claimed?: { record: JobRecord; revision: number },
): Promise<boolean> {
  if (claimed !== undefined && claimed.record.attempt === attempt) {
    const ended: JobRecord = { ...claimed.record, state: "ended", result };
    if (await tryWrite(bucket, ended, claimed.revision) > 0) return true;
  }
  for (let tries = 0; tries < CAS_TRIES; tries++) {
    const found = await readRecord(bucket, id);
    if (found === undefined) return false;
    const { record, revision } = found;
    if (record.state !== "running" || record.attempt !== attempt) return false;
    if (
      await tryWrite(bucket, { ...record, state: "ended", result }, revision) >
        0
    ) {
      return true;
    }
  }
  return false;
}

/**
 * Ends a job still waiting in the stream with `result` (a cancel): false
 * when a node started it first, or it ended.
 */
export async function endQueued(
  bucket: KV,
  id: string,
  result: JobResult,
): Promise<boolean> {
  for (let tries = 0; tries < CAS_TRIES; tries++) {
    const found = await readRecord(bucket, id);
    if (found === undefined || found.record.state !== "queued") return false;
    const ended: JobRecord = { ...found.record, state: "ended", result };
    if (await tryWrite(bucket, ended, found.revision) > 0) return true;
  }
  return false;
}

/**
 * One compare-and-set on `revision` (0: only if there is no record): the
 * record's new revision, or 0 when the revision moved on.
 */
async function tryWrite(
  bucket: KV,
  record: JobRecord,
  revision: number,
): Promise<number> {
  try {
    return revision === 0
      ? await bucket.create(record.id, JSON.stringify(record))
      : await bucket.update(record.id, JSON.stringify(record), revision);
  } catch (error) {
    if (isConflict(error)) return 0;
    throw error;
  }
}

/** A compare-and-set that lost: the record changed, or exists already. */
function isConflict(error: unknown): boolean {
  const text = error instanceof Error ? error.message : String(error);
  return /wrong last sequence|exists/i.test(text);
}
