/**
 * Turning an untrusted submission into a job, or into the reason it is
 * refused: the reason is what the client reads.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { z } from "zod";
import { type JobRequest, JobRequestSchema, MAX_FILES } from "../job.ts";
import { positiveInteger } from "../_options.ts";

/**
 * The largest program the master admits by default: 1 MiB of source files,
 * stdin and arguments together. Piston takes a 100 KB request body
 * (body-parser's default) and Judge0 extracts at most 10 MB of additional
 * files; 1 MiB holds any real source tree and a sizeable test input, and
 * even escaped as JSON (at worst six bytes per byte) it still fits the 8 MiB
 * frame that carries it on to a secondary.
 */
export const DEFAULT_MAX_PROGRAM_BYTES = 1024 * 1024;

/**
 * Room a frame keeps around a program's own bytes (1 KiB): the `run`
 * message that carries it to a secondary, and a simple job's JSON keys and
 * file name. A larger program could arrive in a `submit` and then not be
 * passed on, so `maxProgramBytes` is at most `maxFrameBytes` minus this.
 */
export const JOB_ENVELOPE_BYTES = 1024;

/** `{"type":"run","jobId":"<a UUID>","job":}`: a `run` message without its job. */
const RUN_MESSAGE_BYTES = JSON.stringify({
  type: "run",
  jobId: crypto.randomUUID(), // the master's job ids are UUIDs
  job: null,
}).length - "null".length;

/** The sizes a master admits; a secondary checks only the schema's own caps. */
export interface AdmissionLimits {
  /** Most bytes (UTF-8) of source files and their names, stdin and arguments together. */
  readonly maxProgramBytes: number;
  /** Most source files, at most {@linkcode MAX_FILES}. */
  readonly maxFiles: number;
  /**
   * The largest frame that carries a job on (its `run` message, JSON as it
   * is sent, escapes included); a job that would not fit is refused.
   * Unchecked when absent.
   */
  readonly maxFrameBytes?: number;
}

/** A submission that is a valid job. */
export interface ParsedJob {
  readonly ok: true;
  readonly request: JobRequest;
}

/** A submission that is not a valid job, and why. */
export interface InvalidJob {
  readonly ok: false;
  readonly reason: string;
}

/**
 * Checks admission limits, naming the bad one; throws `RangeError`. A
 * program must leave room in the frames that carry it (`maxFrameBytes`) for
 * {@linkcode JOB_ENVELOPE_BYTES}; the limits returned check each job's
 * encoded size against `maxFrameBytes` too.
 *
 * @example A master that takes small programs only
 * ```ts
 * import { admissionLimits } from "./admission.ts";
 *
 * const limits = admissionLimits({ maxProgramBytes: 64 * 1024, maxFiles: 8 }, 8 * 1024 * 1024);
 * ```
 */
export function admissionLimits(
  limits: AdmissionLimits,
  maxFrameBytes: number = Infinity,
): AdmissionLimits {
  const { maxProgramBytes, maxFiles } = limits;
  if (!Number.isInteger(maxProgramBytes) || maxProgramBytes < 1) {
    throw new RangeError(
      `Cannot use maxProgramBytes ${maxProgramBytes}: expected an integer >= 1`,
    );
  }
  // A larger program could arrive but never be passed on in a `run` frame.
  if (maxProgramBytes > maxFrameBytes - JOB_ENVELOPE_BYTES) {
    throw new RangeError(
      `Cannot use maxProgramBytes ${maxProgramBytes}: with maxFrameBytes ${maxFrameBytes} it may be at most ${
        maxFrameBytes - JOB_ENVELOPE_BYTES
      }, leaving ${JOB_ENVELOPE_BYTES} bytes for the message around it`,
    );
  }
  positiveInteger("maxFiles", maxFiles, MAX_FILES);
  return Number.isFinite(maxFrameBytes)
    ? { maxProgramBytes, maxFiles, maxFrameBytes }
    : { maxProgramBytes, maxFiles };
}

/**
 * Validates an untrusted job and, given `limits`, its size. The file count
 * is checked before anything else, so a job with a million files costs one
 * comparison; the byte count after the schema, when every field is known to
 * be a string.
 *
 * @example Refusing a job without files
 * ```ts
 * import { parseJob } from "./admission.ts";
 *
 * const parsed = parseJob({ language: "python", files: [] });
 * if (!parsed.ok) console.log(parsed.reason); // invalid job: ✖ a job needs at least one source file ...
 * ```
 *
 * @example Refusing a program over the size limit
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseJob } from "./admission.ts";
 *
 * const job = { language: "bash", files: [{ name: "a.sh", content: "x".repeat(2000) }] };
 * const parsed = parseJob(job, { maxProgramBytes: 1024, maxFiles: 4 });
 * assert.ok(!parsed.ok);
 * assert.match(parsed.reason, /program too large: 2004 bytes .* at most 1024 bytes/);
 * ```
 */
export function parseJob(
  raw: unknown,
  limits?: AdmissionLimits,
): ParsedJob | InvalidJob {
  if (limits !== undefined) {
    const files = (raw as { files?: unknown } | null)?.files;
    if (Array.isArray(files) && files.length > limits.maxFiles) {
      return {
        ok: false,
        reason:
          `too many source files: this job has ${files.length}; a job may have at most ${limits.maxFiles} source files`,
      };
    }
  }
  const parsed = JobRequestSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      ok: false,
      reason: `invalid job: ${z.prettifyError(parsed.error)}`,
    };
  }
  if (limits !== undefined) {
    const bytes = programBytes(parsed.data);
    if (bytes > limits.maxProgramBytes) {
      return {
        ok: false,
        reason:
          `program too large: ${bytes} bytes of source files and their names, stdin and arguments; a job may have at most ${limits.maxProgramBytes} bytes`,
      };
    }
    // Escaped as JSON, a byte can take six (`\u0001`): what travels on is
    // measured as it will be sent, not guessed from the raw size.
    const { maxFrameBytes } = limits;
    if (maxFrameBytes !== undefined) {
      const encoded = runMessageBytes(parsed.data);
      if (encoded > maxFrameBytes) {
        return {
          ok: false,
          reason:
            `program too large: passed on to a node as JSON (control characters, quotes and backslashes escaped), this job takes ${encoded} bytes; a frame carries at most ${maxFrameBytes} bytes`,
        };
      }
    }
  }
  return { ok: true, request: parsed.data };
}

/** The most UTF-8 bytes of the `run` message that carries `request` to a node. */
function runMessageBytes(request: JobRequest): number {
  return RUN_MESSAGE_BYTES + Buffer.byteLength(JSON.stringify(request), "utf8");
}

/** What a job brings onto a node's disk and command line, in UTF-8 bytes: file names too. */
function programBytes(request: JobRequest): number {
  let bytes = Buffer.byteLength(request.stdin ?? "", "utf8");
  for (const file of request.files) {
    bytes += Buffer.byteLength(file.name, "utf8");
    bytes += Buffer.byteLength(file.content, "utf8");
  }
  for (const arg of request.args ?? []) bytes += Buffer.byteLength(arg, "utf8");
  return bytes;
}
