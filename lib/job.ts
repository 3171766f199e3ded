/**
 * The job model shared by every part of kiln: what a client asks for
 * ({@linkcode JobRequest}), the limits it runs under ({@linkcode JobLimits}),
 * and what it gets back ({@linkcode JobResult}).
 *
 * Each shape is a plain interface for readers and callers, and a zod schema
 * checked against it (`satisfies`) that validates untrusted input at run
 * time with messages a client can act on.
 *
 * @module
 */
import { Buffer } from "node:buffer";
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

/** One source file of a program. */
export interface SourceFile {
  /** A plain file name: no directory, no `/`, `\\` or NUL, not `.` or `..`. */
  name: string;
  /** The file's text (UTF-8). */
  content: string;
}

/**
 * Limits a job runs under. A request may lower a node's limits, never raise
 * them. The compile step has its own time and memory limits; the others
 * apply to both steps. CPU time, memory and processes need the cgroup layer
 * of the sandbox to be enforced job-wide (see `lib/sandbox/`).
 */
export interface JobLimits {
  /** Wall-clock time for the run step, in milliseconds. */
  wallTimeMs: number;
  /** CPU time (user and system, all processes together) for the run step, in milliseconds. */
  cpuTimeMs: number;
  /** Memory for the run step, in MiB: resident memory and page cache, never swap. */
  memoryMb: number;
  /** Wall-clock time for the compile step, in milliseconds. */
  compileWallTimeMs: number;
  /** CPU time for the compile step, in milliseconds. */
  compileCpuTimeMs: number;
  /** Memory for the compile step, in MiB. */
  compileMemoryMb: number;
  /** Processes and threads alive at once; more fail to start (`fork` returns EAGAIN). */
  processes: number;
  /** Bytes of stdout and stderr together that are kept; more ends the job with `output_limit`. */
  outputBytes: number;
  /** Largest file a step may write, in bytes; more is `SIGXFSZ`. */
  fileSizeBytes: number;
  /** Open files per process, stdin, stdout and stderr included; more fail with EMFILE. */
  openFiles: number;
  /**
   * Disk of the whole job, in MiB: the workdir and `/tmp` together, both
   * steps; more fails with ENOSPC (needs the `disk` layer of the sandbox).
   */
  diskMb: number;
  /**
   * Files (and directories) the job may have on its disk, its sources
   * included; more fail with ENOSPC (needs the `disk` layer).
   */
  diskFiles: number;
  /**
   * Pseudo-terminals the job may hold at once (`/dev/ptmx` opens); more
   * fail with ENOSPC (needs the `ptys` layer), and 0 gives none at all
   * (ENOENT, wherever the `namespaces` layer works).
   */
  ptys: number;
}

/** The isolation layers a job can run under (see `lib/sandbox/`). */
export const SANDBOX_LAYERS = [
  "namespaces",
  "cgroups",
  "rlimits",
  "seccomp",
  "disk",
  "ptys",
] as const;

/**
 * One isolation layer: `namespaces` (bubblewrap: own mount, pid, network,
 * IPC and UTS namespaces, an unprivileged uid), `cgroups` (memory, processes,
 * CPU time and peak memory per job), `rlimits` (CPU seconds, file size, open
 * files per process), `seccomp` (a syscall filter: no new namespaces, mounts,
 * keyrings, `bpf`, `ptrace`, `io_uring`, ...), `disk` (a size- and
 * file-capped tmpfs per job for the workdir and `/tmp`), `ptys` (a devpts
 * of its own per job, holding at most its pty limit).
 */
export type SandboxLayer = typeof SANDBOX_LAYERS[number];

/** How much isolation a node asks for: see `Sandbox.detect` in `lib/sandbox/`. */
export type SandboxMode = "auto" | "bwrap" | "none";

/** What a node tells logs, `status` and the dashboard about its sandbox. */
export interface SandboxReport {
  /** The mode the node was started with. */
  mode: SandboxMode;
  /** The layers every job runs under. */
  layers: SandboxLayer[];
  /** Each active layer's backend, e.g. `bubblewrap 0.8.0`, `cgroup v1`. */
  backends: Partial<Record<SandboxLayer, string>>;
  /** Why each missing layer is missing. */
  missing: Partial<Record<SandboxLayer, string>>;
}

/** Some limits, each one optional: what a request or a node's options may set. */
export type LimitOverrides = {
  [K in keyof JobLimits]?: JobLimits[K] | undefined;
};

/** What a client asks a cluster to run. */
export interface JobRequest {
  /** Language name, alias or file extension known to the cluster (`python`, `py`, `c++`). */
  language: string;
  /** Source files; the first is the entry point unless `entry` names another. */
  files: SourceFile[];
  /** Name of the entry file, one of `files`. */
  entry?: string | undefined;
  /** Text given to the program on standard input; none means empty stdin. */
  stdin?: string | undefined;
  /**
   * Keep stdin open after `stdin` for input sent while the program runs
   * (`stdin` messages), until the client ends it: an interactive program.
   * The wall time limit still applies.
   */
  interactive?: boolean | undefined;
  /** Command-line arguments of the program. */
  args?: string[] | undefined;
  /** Limits to lower below the node's own. */
  limits?: LimitOverrides | undefined;
}

/** The outcome of a compile step. */
export interface CompileResult {
  /** `ok` when the compiler exited 0; otherwise what stopped it. */
  verdict:
    | "ok"
    | "compile_error"
    | "time_limit"
    | "memory_limit"
    | "output_limit"
    | "internal_error";
  /** The compiler's exit code, or null when a signal ended it. */
  exitCode: number | null;
  /** What the compiler wrote to stdout, capped at the output limit. */
  stdout: string;
  /** What the compiler wrote to stderr (its diagnostics), capped at the output limit. */
  stderr: string;
  /** Wall-clock time of the compile step, in milliseconds. */
  timeMs: number;
  /** CPU time of the compile step, in milliseconds, or null without cgroups. */
  cpuTimeMs: number | null;
  /** Peak memory of the compile step, in KiB, or null without cgroups. */
  memoryKb: number | null;
}

/** Everything a client learns about a finished job. */
export interface JobResult {
  /** The id the master gave the job when it accepted it. */
  jobId: string;
  /** How the job ended. */
  verdict: Verdict;
  /** Language the job ran as (the runner's canonical name), when it was resolved. */
  language: string | null;
  /** Exit code of the program, or null when it was killed by a signal or never ran. */
  exitCode: number | null;
  /** Name of the signal that ended the program (`SIGSEGV`), or null. */
  signal: string | null;
  /** What the program wrote to stdout, capped at the output limit. */
  stdout: string;
  /** What the program wrote to stderr, capped at the output limit. */
  stderr: string;
  /** Whether stdout or stderr were cut: at the output limit, or to fit one frame. */
  truncated: boolean;
  /** The compile step, or null when the language has none or it never ran. */
  compile: CompileResult | null;
  /** Wall-clock time of the run step, in milliseconds. */
  timeMs: number;
  /** CPU time of the run step (all its processes), in milliseconds, or null without cgroups. */
  cpuTimeMs: number | null;
  /** Peak memory of the run step (all its processes), in KiB, or null without cgroups. */
  memoryKb: number | null;
  /** The isolation layers the job ran under; empty when it ran unsandboxed or never ran. */
  sandbox: SandboxLayer[];
  /** Who submitted the job: its credential's name, or the name it gave, or its host. */
  client?: string | undefined;
  /** Name of the node that ran the job, or null when none did. */
  node: string | null;
  /** Time from acceptance to start, in milliseconds. */
  queuedMs: number;
  /** Why the job was rejected, failed, hit a limit or ended in error. */
  reason?: string | undefined;
  /** For a job rejected because the cluster is full: when to try again, in ms. */
  retryAfterMs?: number | undefined;
}

/** Most source files one job may have. */
export const MAX_FILES = 256;
/** Most command-line arguments one job may have. */
export const MAX_ARGS = 256;

/** A file name that can be written into a job's workdir and nowhere else. */
const FileNameSchema = z.string()
  .min(1, "file name is empty")
  .max(255, "file name is longer than 255 characters")
  // A filesystem takes 255 bytes per name; é is two, a CJK character three.
  .refine(
    (name) => new TextEncoder().encode(name).byteLength <= 255,
    "file name is longer than 255 bytes in UTF-8 (a filesystem's limit for one name)",
  )
  .refine(
    (name) => !/[/\\\0]/.test(name),
    "file name contains a path separator or NUL",
  )
  .refine((name) => name !== "." && name !== "..", "file name is . or ..");

/** Validates a {@linkcode SourceFile}. */
export const SourceFileSchema = z.object({
  name: FileNameSchema,
  content: z.string(),
}).strict() satisfies z.ZodType<SourceFile>;

/** One day, the longest any step may run: timers take at most 2^31 - 1 ms. */
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The largest value of each limit that a request, a node's options, a flag
 * or a secondary's registration may give; {@linkcode JobLimitsSchema}
 * rejects more. Times are at most a day, so a job's deadlines (the sum of
 * its compile and run times plus a node timeout) stay within what a timer
 * takes. Memory is at most 1 TiB, processes the kernel's `pid_max` ceiling
 * (2^22), output 1 GiB (it is held in memory), file size 1 TiB, open files
 * Linux's default `fs.nr_open` (2^20), disk 1 TiB, files on it 2^24,
 * ptys the kernel's ceiling for one devpts (`NR_UNIX98_PTY_MAX`, 2^20).
 */
export const LIMIT_MAXIMA: Readonly<JobLimits> = Object.freeze({
  wallTimeMs: DAY_MS,
  cpuTimeMs: DAY_MS,
  memoryMb: 1024 * 1024,
  compileWallTimeMs: DAY_MS,
  compileCpuTimeMs: DAY_MS,
  compileMemoryMb: 1024 * 1024,
  processes: 1 << 22,
  outputBytes: 1 << 30,
  fileSizeBytes: 2 ** 40,
  openFiles: 1 << 20,
  diskMb: 1024 * 1024,
  diskFiles: 1 << 24,
  ptys: 1 << 20,
});

/** A limit: a positive integer (for ptys, 0 too) up to its maximum, named in every message. */
function limitSchema(key: keyof JobLimits) {
  const max = LIMIT_MAXIMA[key];
  const integer = z.number({ error: `${key} must be a number` })
    .int(`${key} must be an integer`);
  // No pty at all is a limit a job can ask for; no time or memory is not.
  return (key === "ptys"
    ? integer.nonnegative(`${key} must not be negative`)
    : integer.positive(`${key} must be positive`))
    .max(max, `${key} must be at most ${max}`);
}

/** Validates {@linkcode JobLimits}, each one within {@linkcode LIMIT_MAXIMA}. */
export const JobLimitsSchema = z.object({
  wallTimeMs: limitSchema("wallTimeMs"),
  cpuTimeMs: limitSchema("cpuTimeMs"),
  memoryMb: limitSchema("memoryMb"),
  compileWallTimeMs: limitSchema("compileWallTimeMs"),
  compileCpuTimeMs: limitSchema("compileCpuTimeMs"),
  compileMemoryMb: limitSchema("compileMemoryMb"),
  processes: limitSchema("processes"),
  outputBytes: limitSchema("outputBytes"),
  fileSizeBytes: limitSchema("fileSizeBytes"),
  openFiles: limitSchema("openFiles"),
  diskMb: limitSchema("diskMb"),
  diskFiles: limitSchema("diskFiles"),
  ptys: limitSchema("ptys"),
}).strict() satisfies z.ZodType<JobLimits>;

/** Validates {@linkcode LimitOverrides}. */
export const LimitOverridesSchema = JobLimitsSchema
  .partial() satisfies z.ZodType<LimitOverrides>;

/**
 * Checks limits a caller gives in code (a node's options), as the protocol
 * checks a request's: each a positive integer (ptys may be 0) within
 * {@linkcode LIMIT_MAXIMA}, no unknown field.
 *
 * @throws {RangeError} naming every bad field, and its maximum when it is
 * too large.
 *
 * @example Refusing a wall time no timer can hold
 * ```ts
 * import { checkLimits } from "./job.ts";
 *
 * checkLimits({ wallTimeMs: 5000 }); // fine
 * try {
 *   checkLimits({ wallTimeMs: 2 ** 31 });
 * } catch (error) {
 *   console.log((error as Error).message); // "Cannot use limits: wallTimeMs must be at most 86400000"
 * }
 * ```
 */
export function checkLimits(
  limits: LimitOverrides,
  what: string = "limits",
): LimitOverrides {
  const parsed = LimitOverridesSchema.safeParse(limits);
  if (!parsed.success) {
    throw new RangeError(
      `Cannot use ${what}: ${
        parsed.error.issues.map((issue) =>
          issue.path.length === 0 ||
            issue.message.startsWith(`${issue.path[0]!.toString()} `)
            ? issue.message
            : `${issue.path.join(".")}: ${issue.message}`
        ).join("; ")
      }`,
    );
  }
  return limits;
}

/**
 * The limits a node applies when neither it nor the request says otherwise.
 * The README compares them with Judge0's and Piston's defaults. Memory and
 * processes are sized for the JVM and Deno, which need hundreds of MiB and
 * dozens of threads just to compile. The disk holds 8 files of the largest
 * size (256 MiB) and 10 000 files: far more than any compiler here writes
 * for one program, and its tmpfs pages are memory the node must have. 16
 * ptys are plenty for a program that drives a terminal or two, and 16 per
 * slot leave the shared pool (3,072 by default) to 192 slots.
 */
export const DEFAULT_LIMITS: Readonly<JobLimits> = Object.freeze({
  wallTimeMs: 10_000,
  cpuTimeMs: 5_000,
  memoryMb: 512,
  compileWallTimeMs: 30_000,
  compileCpuTimeMs: 30_000,
  compileMemoryMb: 1024,
  processes: 256,
  outputBytes: 1024 * 1024,
  fileSizeBytes: 32 * 1024 * 1024,
  openFiles: 512,
  diskMb: 256,
  diskFiles: 10_000,
  ptys: 16,
});

/**
 * The limits a job runs under: the node's maximum, lowered field by field
 * where the request asks for less. A request never raises a limit.
 *
 * @example A request that asks for less time and more memory
 * ```ts
 * import assert from "node:assert/strict";
 * import { effectiveLimits } from "./job.ts";
 *
 * const limits = effectiveLimits({ memoryMb: 256 }, { wallTimeMs: 500, memoryMb: 4096 });
 * assert.equal(limits.wallTimeMs, 500);
 * assert.equal(limits.memoryMb, 256);
 * ```
 */
export function effectiveLimits(
  nodeLimits: LimitOverrides = {},
  requested: LimitOverrides = {},
): JobLimits {
  const limits = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(limits) as (keyof JobLimits)[]) {
    const max = nodeLimits[key] ?? DEFAULT_LIMITS[key];
    limits[key] = Math.min(requested[key] ?? max, max);
  }
  return limits;
}

/** Validates a {@linkcode JobRequest} from an untrusted client, with readable messages. */
export const JobRequestSchema = z.object({
  language: z.string().min(1, "language is empty").max(64),
  files: z.array(SourceFileSchema)
    .min(1, "a job needs at least one source file")
    .max(MAX_FILES, `a job may have at most ${MAX_FILES} source files`)
    .refine(
      (files) => new Set(files.map((f) => f.name)).size === files.length,
      "two source files have the same name",
    ),
  entry: z.string().optional(),
  stdin: z.string().optional(),
  interactive: z.boolean().optional(),
  args: z.array(
    z.string().refine((arg) => !arg.includes("\0"), "an argument contains NUL"),
  )
    .max(MAX_ARGS, `a job may have at most ${MAX_ARGS} arguments`)
    .optional(),
  limits: LimitOverridesSchema.optional(),
}).strict().refine(
  (job) =>
    job.entry === undefined || job.files.some((f) => f.name === job.entry),
  { message: "entry does not name one of the files", path: ["entry"] },
) satisfies z.ZodType<JobRequest>;

/** Validates a {@linkcode CompileResult}. */
export const CompileResultSchema = z.object({
  verdict: z.enum([
    "ok",
    "compile_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "internal_error",
  ]),
  exitCode: z.number().int().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  timeMs: z.number(),
  cpuTimeMs: z.number().nullable(),
  memoryKb: z.number().nullable(),
}).strict() satisfies z.ZodType<CompileResult>;

/** Validates a {@linkcode JobResult}. */
export const JobResultSchema = z.object({
  jobId: z.string(),
  verdict: z.enum(VERDICTS),
  language: z.string().nullable(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.boolean(),
  compile: CompileResultSchema.nullable(),
  timeMs: z.number(),
  cpuTimeMs: z.number().nullable(),
  memoryKb: z.number().nullable(),
  sandbox: z.array(z.enum(SANDBOX_LAYERS)),
  client: z.string().optional(),
  node: z.string().nullable(),
  queuedMs: z.number(),
  reason: z.string().optional(),
  retryAfterMs: z.number().int().min(0).optional(),
}).strict() satisfies z.ZodType<JobResult>;

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
    cpuTimeMs: null,
    memoryKb: null,
    sandbox: [],
    node: null,
    queuedMs: 0,
    ...fields,
  };
}

/**
 * The result, cut until its JSON takes at most `maxBytes` bytes of UTF-8.
 * Output is limited in bytes as the program writes it, but JSON escaping can
 * make it up to six times longer (`\u0001`), so the longest text field is
 * halved until the whole fits, and `truncated` says so. A result that already
 * fits is returned as it is.
 */
export function fitResult(result: JobResult, maxBytes: number): JobResult {
  let fitted = result;
  // Each round halves the longest text, so a few dozen rounds reach zero.
  for (let round = 0; round < 64 && jsonBytes(fitted) > maxBytes; round++) {
    const compile = fitted.compile;
    const texts: [length: number, cut: () => JobResult][] = [
      [
        fitted.stdout.length,
        () => ({ ...fitted, stdout: half(fitted.stdout) }),
      ],
      [
        fitted.stderr.length,
        () => ({ ...fitted, stderr: half(fitted.stderr) }),
      ],
    ];
    if (compile) {
      texts.push(
        [
          compile.stdout.length,
          () => ({
            ...fitted,
            compile: { ...compile, stdout: half(compile.stdout) },
          }),
        ],
        [
          compile.stderr.length,
          () => ({
            ...fitted,
            compile: { ...compile, stderr: half(compile.stderr) },
          }),
        ],
      );
    }
    const [length, cut] = texts.reduce((a, b) => (b[0] > a[0] ? b : a));
    if (length === 0) break;
    fitted = { ...cut(), truncated: true };
  }
  return fitted;
}

/** The first half of `text`, never ending in half a surrogate pair. */
function half(text: string): string {
  let end = Math.floor(text.length / 2);
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return text.slice(0, end);
}

/** The UTF-8 bytes of `value` as JSON, counted without encoding it (every result is measured). */
function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value), "utf8");
}

/**
 * The length of `text` in UTF-8 bytes, what it takes on a disk, a command
 * line or the wire (not `text.length`, which counts UTF-16 units: "€" is 1
 * unit and 3 bytes). A lone surrogate counts as the 3 bytes of U+FFFD.
 *
 * @example
 * ```ts
 * import { utf8Bytes } from "./job.ts";
 *
 * console.log(utf8Bytes("aa€")); // 5
 * ```
 */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/** Which output stream a chunk came from. */
export type OutputStream = "stdout" | "stderr";
