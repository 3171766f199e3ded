/**
 * The job model shared by every part of kiln: what a client asks for
 * ({@linkcode JobRequest}), the limits it runs under ({@linkcode JobLimits}),
 * and what it gets back ({@linkcode JobResult}).
 *
 * Each shape is a zod schema, so the same definition validates messages at
 * run time and gives the static type.
 *
 * @module
 */
import { z } from "zod";

/** Every way a job can end. Exactly one per submission. */
export const VERDICTS = [
  "ok",
  "compile_error",
  "runtime_error",
  "time_limit",
  "memory_limit",
  "output_limit",
  "rejected",
  "internal_error",
] as const;

/** How a job ended: see {@linkcode VERDICTS}. */
export type Verdict = typeof VERDICTS[number];

/** A file name that can be written into a job's workdir and nowhere else. */
const FileNameSchema = z.string()
  .min(1, "file name is empty")
  .max(255, "file name is longer than 255 characters")
  .refine(
    (name) => !/[/\\\0]/.test(name),
    "file name contains a path separator or NUL",
  )
  .refine((name) => name !== "." && name !== "..", "file name is . or ..");

/** One source file of a program, as UTF-8 text. */
export const SourceFileSchema = z.object({
  name: FileNameSchema,
  content: z.string(),
}).strict();

/** One source file of a program, as UTF-8 text. */
export type SourceFile = z.infer<typeof SourceFileSchema>;

/** Limits a job runs under. A request may lower a node's limits, never raise them. */
export const JobLimitsSchema = z.object({
  /** Wall-clock time for the run step, in milliseconds. */
  wallTimeMs: z.number().int().positive(),
  /** Wall-clock time for the compile step, in milliseconds. */
  compileWallTimeMs: z.number().int().positive(),
  /** Bytes of stdout and stderr together that are kept; more ends the job with `output_limit`. */
  outputBytes: z.number().int().positive(),
}).strict();

/** Limits a job runs under. */
export type JobLimits = z.infer<typeof JobLimitsSchema>;

/** Some limits, each one optional: what a request or a node's options may set. */
export const LimitOverridesSchema = JobLimitsSchema.partial();

/** Some limits, each one optional: what a request or a node's options may set. */
export type LimitOverrides = z.infer<typeof LimitOverridesSchema>;

/** The limits a node applies when neither it nor the request says otherwise. */
export const DEFAULT_LIMITS: Readonly<JobLimits> = Object.freeze({
  wallTimeMs: 10_000,
  compileWallTimeMs: 30_000,
  outputBytes: 1024 * 1024,
});

/** Most source files one job may have. */
export const MAX_FILES = 256;
/** Most command-line arguments one job may have. */
export const MAX_ARGS = 256;

/** What a client asks a cluster to run. */
export const JobRequestSchema = z.object({
  /** Language name, alias or file extension known to the cluster (`python`, `py`, `c++`). */
  language: z.string().min(1, "language is empty").max(64),
  /** Source files; the first is the entry point unless `entry` names another. */
  files: z.array(SourceFileSchema)
    .min(1, "a job needs at least one source file")
    .max(MAX_FILES, `a job may have at most ${MAX_FILES} source files`)
    .refine(
      (files) => new Set(files.map((f) => f.name)).size === files.length,
      "two source files have the same name",
    ),
  /** Name of the entry file, one of `files`. */
  entry: z.string().optional(),
  /** Text given to the program on standard input. */
  stdin: z.string().optional(),
  /** Command-line arguments of the program. */
  args: z.array(
    z.string().refine((arg) => !arg.includes("\0"), "an argument contains NUL"),
  )
    .max(MAX_ARGS, `a job may have at most ${MAX_ARGS} arguments`)
    .optional(),
  /** Limits to lower below the node's own. */
  limits: LimitOverridesSchema.optional(),
}).strict().refine(
  (job) =>
    job.entry === undefined || job.files.some((f) => f.name === job.entry),
  { message: "entry does not name one of the files", path: ["entry"] },
);

/** What a client asks a cluster to run. */
export type JobRequest = z.infer<typeof JobRequestSchema>;

/** The outcome of a compile step. */
export const CompileResultSchema = z.object({
  verdict: z.enum([
    "ok",
    "compile_error",
    "time_limit",
    "output_limit",
    "internal_error",
  ]),
  exitCode: z.number().int().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  timeMs: z.number(),
}).strict();

/** The outcome of a compile step. */
export type CompileResult = z.infer<typeof CompileResultSchema>;

/** Everything a client learns about a finished job. */
export const JobResultSchema = z.object({
  jobId: z.string(),
  verdict: z.enum(VERDICTS),
  /** Language the job ran as (the runner's canonical name), when it was resolved. */
  language: z.string().nullable(),
  /** Exit code of the program, or null when it was killed by a signal or never ran. */
  exitCode: z.number().int().nullable(),
  /** Name of the signal that ended the program (`SIGSEGV`), or null. */
  signal: z.string().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  /** Whether stdout or stderr were cut at the output limit. */
  truncated: z.boolean(),
  /** The compile step, or null when the language has none or it never ran. */
  compile: CompileResultSchema.nullable(),
  /** Wall-clock time of the run step, in milliseconds. */
  timeMs: z.number(),
  /** Name of the node that ran the job, or null when none did. */
  node: z.string().nullable(),
  /** Time spent waiting in the queue, in milliseconds. */
  queuedMs: z.number(),
  /** Why the job was rejected or failed; set for `rejected`, `internal_error` and limits. */
  reason: z.string().optional(),
}).strict();

/** Everything a client learns about a finished job. */
export type JobResult = z.infer<typeof JobResultSchema>;

/**
 * A result in which nothing happened yet: no output, no exit, verdict
 * `internal_error` until someone says otherwise. The base every result is
 * built on, so a new field gets its default in one place.
 */
export function blankResult(
  jobId: string,
  fields: Partial<JobResult> = {},
): JobResult {
  return {
    jobId,
    verdict: "internal_error",
    language: null,
    exitCode: null,
    signal: null,
    stdout: "",
    stderr: "",
    truncated: false,
    compile: null,
    timeMs: 0,
    node: null,
    queuedMs: 0,
    ...fields,
  };
}

/** Which output stream a chunk came from. */
export type OutputStream = "stdout" | "stderr";
