/**
 * The whole life of one job on one node, top to bottom:
 *
 * 1. limits: the node's maximum, lowered by the request where it asks;
 * 2. a fresh workdir holding the source files (always removed at the end);
 * 3. the compile step, when the language has one: its own time limit, its
 *    output kept for the result, its failure ends the job as `compile_error`;
 * 4. the run step: stdin, args, output streamed live and capped, the wall
 *    time limit killing the whole process tree;
 * 5. a verdict that says what happened.
 *
 * Every call ends in exactly one {@linkcode JobResult}; a failure of kiln
 * itself becomes `internal_error` with the reason, never a thrown error.
 *
 * @module
 */
import { join } from "node:path";
import {
  blankResult,
  type CompileResult,
  DEFAULT_LIMITS,
  type JobLimits,
  type JobRequest,
  type JobResult,
  type LimitOverrides,
  type OutputStream,
  type SourceFile,
} from "./job.ts";
import type { ResolvedRunner } from "./runners/registry.ts";
import type { StepContext } from "./runners/runner.ts";
import { jobEnvironment } from "./sandbox/environment.ts";
import { defaultWorkRoot } from "./sandbox/work_root.ts";
import { launch, type StepOutcome } from "./sandbox/launcher.ts";

/** Options of {@linkcode executeJob}. */
export interface ExecuteOptions {
  /**
   * The node's maximum limits; the request may lower them, never raise them.
   * Missing fields default to {@linkcode DEFAULT_LIMITS}.
   */
  limits?: LimitOverrides;
  /** Id reported in the result. @default a random UUID */
  jobId?: string;
  /** Node name reported in the result. @default null */
  nodeName?: string;
  /**
   * Cancels the job; it then ends as `internal_error` with reason
   * "cancelled", followed by the abort reason when that is a string.
   */
  signal?: AbortSignal;
  /** Receives the run step's output chunks as the program produces them. */
  onOutput?: (stream: OutputStream, data: string) => void;
  /** Directory under which the job's workdir is made. @default `<tmp>/kiln-<pid>` */
  workRoot?: string;
}

/**
 * Compiles and runs one job, returning its result.
 *
 * @example Running a Python program
 * ```ts
 * import { createDefaultRegistry, executeJob } from "../mod.ts";
 *
 * const registry = createDefaultRegistry();
 * const python = await registry.resolve("python");
 * if (python.ok) {
 *   const result = await executeJob(python.resolved, {
 *     language: "python",
 *     files: [{ name: "main.py", content: "print(input()[::-1])" }],
 *     stdin: "kiln\n",
 *   });
 *   console.log(result.verdict, result.stdout); // ok nlik
 * }
 * ```
 */
export async function executeJob(
  resolved: ResolvedRunner,
  request: JobRequest,
  options: ExecuteOptions = {},
): Promise<JobResult> {
  const jobId = options.jobId ?? crypto.randomUUID();
  const base = blankResult(jobId, {
    language: resolved.runner.name,
    node: options.nodeName ?? null,
  });

  const limits = effectiveLimits(options.limits, request.limits);

  let workdir: string | undefined;
  try {
    workdir = await Deno.makeTempDir({
      prefix: "kiln-job-",
      dir: options.workRoot ?? await defaultWorkRoot(),
    });
    const context = await writeSources(resolved, request, workdir);

    if (resolved.runner.compile) {
      const spec = resolved.runner.compile(context);
      const outcome = await launch(spec, {
        cwd: workdir,
        env: jobEnvironment(workdir, spec.env),
        wallTimeMs: limits.compileWallTimeMs,
        outputBytes: limits.outputBytes,
        signal: options.signal,
      });
      const compile = compileResult(outcome);
      if (compile.verdict !== "ok") {
        return {
          ...base,
          verdict: compile.verdict,
          compile,
          ...compileReason(outcome, limits, options.signal),
        };
      }
      base.compile = compile;
    }

    const spec = resolved.runner.run(context);
    const outcome = await launch(spec, {
      cwd: workdir,
      env: jobEnvironment(workdir, spec.env),
      stdin: request.stdin ?? "",
      wallTimeMs: limits.wallTimeMs,
      outputBytes: limits.outputBytes,
      signal: options.signal,
      onOutput: options.onOutput,
    });
    return {
      ...base,
      ...runVerdict(outcome, limits, options.signal),
      stdout: outcome.stdout,
      stderr: outcome.stderr,
      truncated: outcome.truncated,
      exitCode: outcome.exitCode,
      signal: outcome.signal,
      timeMs: outcome.timeMs,
    };
  } catch (error) {
    return {
      ...base,
      verdict: "internal_error",
      reason: `cannot run job: ${describe(error)}`,
    };
  } finally {
    if (workdir) {
      await Deno.remove(workdir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * The limits a job runs under: the node's maximum, lowered field by field
 * where the request asks for less. A request never raises a limit.
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

/** Writes the (arranged) sources into the workdir and builds the step context. */
async function writeSources(
  { runner, toolchain }: ResolvedRunner,
  request: JobRequest,
  workdir: string,
): Promise<StepContext> {
  const requestedEntry = request.entry ?? request.files[0]!.name;
  const { files, entry } = runner.arrange?.(request.files, requestedEntry) ??
    { files: request.files, entry: requestedEntry };
  for (const file of files) {
    await Deno.writeTextFile(join(workdir, file.name), file.content, {
      createNew: true,
    });
  }
  return {
    workdir,
    entry,
    files: [
      entry,
      ...files.map((f: SourceFile) => f.name).filter((name: string) =>
        name !== entry
      ),
    ],
    args: request.args ?? [],
    toolchain,
  };
}

function compileResult(outcome: StepOutcome): CompileResult {
  const verdict = outcome.ending === "exited"
    ? (outcome.exitCode === 0 ? "ok" : "compile_error")
    : outcome.ending === "cancelled"
    ? "internal_error"
    : outcome.ending;
  return {
    verdict,
    exitCode: outcome.exitCode,
    stdout: outcome.stdout,
    stderr: outcome.stderr,
    timeMs: outcome.timeMs,
  };
}

function compileReason(
  outcome: StepOutcome,
  limits: JobLimits,
  signal: AbortSignal | undefined,
): { reason?: string } {
  switch (outcome.ending) {
    case "time_limit":
      return {
        reason:
          `compile step exceeded its wall time limit of ${limits.compileWallTimeMs} ms`,
      };
    case "output_limit":
      return { reason: `compiler output exceeded ${limits.outputBytes} bytes` };
    case "cancelled":
      return { reason: cancelledReason(signal) };
    default:
      return {};
  }
}

function runVerdict(
  outcome: StepOutcome,
  limits: JobLimits,
  signal: AbortSignal | undefined,
): Pick<JobResult, "verdict"> & { reason?: string } {
  switch (outcome.ending) {
    case "time_limit":
      return {
        verdict: "time_limit",
        reason: `wall time limit of ${limits.wallTimeMs} ms exceeded`,
      };
    case "output_limit":
      return {
        verdict: "output_limit",
        reason: `output exceeded the limit of ${limits.outputBytes} bytes`,
      };
    case "cancelled":
      return { verdict: "internal_error", reason: cancelledReason(signal) };
    case "exited":
      if (outcome.signal !== null) {
        return {
          verdict: "runtime_error",
          reason: `killed by ${outcome.signal}`,
        };
      }
      if (outcome.exitCode !== 0) {
        return {
          verdict: "runtime_error",
          reason: `exited with code ${outcome.exitCode}`,
        };
      }
      return { verdict: "ok" };
  }
}

function cancelledReason(signal: AbortSignal | undefined): string {
  return typeof signal?.reason === "string"
    ? `cancelled: ${signal.reason}`
    : "cancelled";
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
