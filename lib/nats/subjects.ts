/**
 * The names kiln uses on NATS: one stream of work, two buckets, and the
 * core subjects a job's events and controls travel on.
 *
 * Subjects are built from job ids (UUIDs the master makes) and canonical
 * language names (the runners'), never from client text; still, every token
 * is checked, since a `.`, `*` or `>` in one would reach other subjects.
 *
 * @module
 */

/** The work-queue stream every job goes through. */
export const JOBS_STREAM = "KILN_JOBS";
/** The bucket of job records: state, attempt, node, and the result. */
export const JOBS_BUCKET = "kiln_jobs";
/** The bucket of live nodes and their load, written on every heartbeat. */
export const NODES_BUCKET = "kiln_nodes";

/** The bucket of each client's jobs on each master, for quotas across masters. */
export const CLIENTS_BUCKET = "kiln_clients";

/** Every job's subject starts with this; the stream holds `kiln.jobs.>`. */
export const JOB_SUBJECT_PREFIX = "kiln.jobs";

/** A token of a subject: letters, digits, `_` and `-` only. */
const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * Whether `jobId` can name a job on NATS (a subject token and a key of the
 * records bucket): an id a client or a URL gave is checked with this before
 * it goes anywhere near NATS.
 */
export function isClusterJobId(jobId: string): boolean {
  return TOKEN.test(jobId);
}

/**
 * Checks that `value` can stand as one token of a subject.
 *
 * @throws {TypeError} If it is empty, too long, or holds anything but letters, digits, `_` and `-`.
 */
export function subjectToken(value: string, what: string): string {
  if (!TOKEN.test(value)) {
    throw new TypeError(
      `Cannot use ${what} ${
        JSON.stringify(value.slice(0, 64))
      } on NATS: only letters, digits, "_" and "-" (at most 128)`,
    );
  }
  return value;
}

/**
 * A language's token: canonical names may hold characters a subject may not
 * (`c++`, `c#`), so anything else is written as `_` and its code point in
 * six hex digits: a fixed width, so that two names never share a token.
 */
export function languageToken(language: string): string {
  const token = [...language].map((char) =>
    /[A-Za-z0-9-]/.test(char)
      ? char
      : `_${char.codePointAt(0)!.toString(16).padStart(6, "0")}`
  ).join("");
  return subjectToken(token, "language");
}

/** Where a job of `language` waits: `kiln.jobs.<language>.<jobId>`. */
export function jobSubject(language: string, jobId: string): string {
  return `${JOB_SUBJECT_PREFIX}.${languageToken(language)}.${
    subjectToken(jobId, "job id")
  }`;
}

/** The durable consumer all nodes that run `language` pull from. */
export function languageConsumer(language: string): string {
  return `lang_${languageToken(language)}`;
}

/** The filter of {@linkcode languageConsumer}: every job of `language`. */
export function languageFilter(language: string): string {
  return `${JOB_SUBJECT_PREFIX}.${languageToken(language)}.*`;
}

/** A job's events, from the node that runs it: `started`, `output`, `result`. */
export function eventSubject(jobId: string): string {
  return `kiln.events.${subjectToken(jobId, "job id")}`;
}

/** Controls for a running job, from any master: `cancel`, `stdin`. */
export function controlSubject(jobId: string): string {
  return `kiln.control.${subjectToken(jobId, "job id")}`;
}
