/**
 * Turning an untrusted submission into a job, or into the reason it is
 * refused: the reason is what the client reads.
 *
 * @module
 */
import { z } from "zod";
import { type JobRequest, JobRequestSchema } from "../job.ts";

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
 * Validates an untrusted job.
 *
 * @example Refusing a job without files
 * ```ts
 * import { parseJob } from "./admission.ts";
 *
 * const parsed = parseJob({ language: "python", files: [] });
 * if (!parsed.ok) console.log(parsed.reason); // invalid job: ✖ a job needs at least one source file ...
 * ```
 */
export function parseJob(raw: unknown): ParsedJob | InvalidJob {
  const parsed = JobRequestSchema.safeParse(raw);
  return parsed.success
    ? { ok: true, request: parsed.data }
    : { ok: false, reason: `invalid job: ${z.prettifyError(parsed.error)}` };
}
