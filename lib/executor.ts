/**
 * The whole life of one job on one node, top to bottom:
 *
 * 1. limits: the node's maximum, lowered by the request where it asks (a
 *    request asking for more is noted in the reason, never granted);
 * 2. a fresh workdir holding the source files, handed to the sandbox's
 *    unprivileged uid (always removed at the end);
 * 3. the compile step, when the language has one, inside the sandbox with
 *    its own time and memory limits; its failure ends the job;
 * 4. the run step inside the sandbox: stdin, args, output streamed live and
 *    capped, wall and CPU time, memory, processes, file size and open files
 *    limited, the whole process tree killed at the end;
 * 5. a verdict that says what happened, with the CPU time and peak memory
 *    the sandbox measured, told at once (`onResult`);
 * 6. the cleanup: the steps' cgroups once their last processes are gone,
 *    the workdir, the uid; then the promise resolves.
 *
 * Every call ends in exactly one {@linkcode JobResult}; a failure of kiln
 * itself becomes `internal_error` with the reason, never a thrown error.
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import {
  blankResult,
  checkLimits,
  type CompileResult,
  DEFAULT_LIMITS,
  effectiveLimits,
  type JobLimits,
  type JobRequest,
  JobRequestSchema,
  type JobResult,
  type LimitOverrides,
  type OutputStream,
  type SourceFile,
  SourceFileSchema,
} from "./job.ts";
import type { ResolvedRunner } from "./runners/registry.ts";
import type {
  CommandSpec,
  LanguageRunner,
  StepContext,
} from "./runners/runner.ts";
import { jobEnvironment } from "./sandbox/environment.ts";
import { defaultWorkRoot } from "./sandbox/work_root.ts";
import {
  defaultSandbox,
  type Sandbox,
  type SandboxedOutcome,
  type StepLimits,
} from "./sandbox/sandbox.ts";

// Lives with the limits it computes; kept importable from here.
export { effectiveLimits } from "./job.ts";

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
  /**
   * More stdin for the run step, after `request.stdin`, as it arrives while
   * the program runs (an interactive program, e.g. an `InputChannel`);
   * stdin closes when it ends. None closes stdin after `request.stdin`.
   */
  input?: AsyncIterable<string>;
  /**
   * Receives the result as soon as it is known: the program has ended and
   * every process of the job has been sent SIGKILL, but the workdir, the
   * step cgroups and the job's uid may still be being cleaned up. The
   * promise of {@linkcode executeJob} resolves with the same result once
   * they are. A node answers here and frees the job's slot; the cleanup
   * costs the next job nothing but a little CPU.
   */
  onResult?: (result: JobResult) => void;
  /** Directory under which the job's workdir is made. @default `<tmp>/kiln-<pid>-<random>/jobs` */
  workRoot?: string;
  /**
   * The sandbox the steps run in. @default the strongest this host has
   * (`Sandbox.detect()`, once per process)
   */
  sandbox?: Sandbox;
}

/**
 * Compiles and runs one job, returning its result.
 *
 * The request is checked as the protocol checks a client's (file names that
 * stay in the workdir, limits within their maxima, ...), and its `language`
 * must name the given runner (its name, an alias or an extension): a job
 * that fails either ends as `rejected` with the reason, and nothing runs.
 * Bad `options.limits` are the node's fault: `internal_error`.
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
  const leftovers: Leftovers = {};
  try {
    const result = await attemptJob(resolved, request, options, leftovers);
    options.onResult?.(result);
    return result;
  } finally {
    // Never Deno.remove(recursive): a deep tree overflows its stack.
    const { workdir, sandbox } = leftovers;
    if (workdir && sandbox) await sandbox.removeWorkdir(workdir);
  }
}

/** What {@linkcode attemptJob} leaves for {@linkcode executeJob} to remove. */
interface Leftovers {
  workdir?: string;
  sandbox?: Sandbox;
}

/** The job up to its result, leaving its workdir in `leftovers`. */
async function attemptJob(
  resolved: ResolvedRunner,
  request: JobRequest,
  options: ExecuteOptions,
  leftovers: Leftovers,
): Promise<JobResult> {
  const jobId = options.jobId ?? crypto.randomUUID();
  const base = blankResult(jobId, {
    language: resolved.runner.name,
    node: options.nodeName ?? null,
  });
  // A public entry point: nothing it is given is trusted, whoever calls it.
  const parsed = JobRequestSchema.safeParse(request);
  if (!parsed.success) {
    return {
      ...base,
      verdict: "rejected",
      reason: `invalid job: ${z.prettifyError(parsed.error)}`,
    };
  }
  request = parsed.data;
  if (!answersTo(resolved.runner, request.language)) {
    return {
      ...base,
      verdict: "rejected",
      reason:
        `the job is for language "${request.language}", but it was given to the runner of "${resolved.runner.name}"`,
    };
  }
  try {
    checkLimits(options.limits ?? {}, "the node's limits");
  } catch (error) {
    return { ...base, verdict: "internal_error", reason: describe(error) };
  }

  const limits = effectiveLimits(options.limits, request.limits);
  const note = loweredNote(options.limits, request.limits);
  const withNote = (result: JobResult): JobResult =>
    note === undefined ? result : {
      ...result,
      reason: result.reason === undefined ? note : `${result.reason}; ${note}`,
    };

  try {
    const sandbox = options.sandbox ?? await defaultSandbox();
    leftovers.sandbox = sandbox;
    base.sandbox = [...sandbox.layers];
    const executables = Object.values(resolved.toolchain.executables);
    // A pre-warmed sandbox for these steps when the node keeps one ready.
    const workdir = await sandbox.makeWorkdir(
      // With a disk of its own per job, the root holds only mount points:
      // on a tmpfs, made and removed for far less (see `work_root.ts`).
      options.workRoot ??
        await defaultWorkRoot({
          mountPointsOnly: sandbox.layers.includes("disk"),
        }),
      limits,
      {
        language: resolved.runner.name,
        executables,
        steps: resolved.runner.compile
          ? [compileLimits(limits), limits]
          : [limits],
      },
    );
    leftovers.workdir = workdir;
    const context = await writeSources(resolved, request, workdir);
    await sandbox.prepareWorkdir(workdir);
    const runStep = (
      spec: CommandSpec,
      stepLimits: StepLimits,
      extra: {
        stdin?: string;
        input?: AsyncIterable<string> | undefined;
        onOutput?: ExecuteOptions["onOutput"];
      } = {},
    ) =>
      sandbox.run(spec, {
        workdir: context.workdir,
        env: jobEnvironment(context.workdir, spec.env),
        limits: stepLimits,
        executables,
        signal: options.signal,
        ...extra,
      });

    if (resolved.runner.compile) {
      const stepLimits = compileLimits(limits);
      const outcome = await runStep(
        resolved.runner.compile({
          ...context,
          memoryMb: stepLimits.memoryMb,
        }),
        stepLimits,
      );
      const ending = diskEnding(
        stepEnding(outcome, stepLimits, options.signal, {
          outOfMemory: undefined,
          what: "compile step",
        }),
        outcome,
        limits,
        "compile step",
      );
      const compile = compileResult(outcome, ending.verdict);
      if (compile.verdict !== "ok") {
        return withNote({
          ...base,
          verdict: compile.verdict,
          compile,
          reason: compile.verdict === "compile_error"
            ? `compile step ${ending.reason}`
            : ending.reason,
        });
      }
      base.compile = compile;
    }

    const outcome = await runStep(
      resolved.runner.run({ ...context, memoryMb: limits.memoryMb }),
      limits,
      {
        stdin: request.stdin ?? "",
        input: options.input,
        onOutput: options.onOutput,
      },
    );
    return withNote({
      ...base,
      ...diskEnding(
        stepEnding(outcome, limits, options.signal, {
          outOfMemory: resolved.runner.outOfMemory,
          what: "program",
        }),
        outcome,
        limits,
        "program",
      ),
      stdout: outcome.stdout,
      stderr: outcome.stderr,
      truncated: outcome.truncated,
      exitCode: outcome.exitCode,
      signal: outcome.signal,
      timeMs: outcome.timeMs,
      cpuTimeMs: outcome.cpuTimeMs,
      memoryKb: outcome.memoryKb,
    });
  } catch (error) {
    return {
      ...base,
      verdict: "internal_error",
      reason: `cannot run job: ${describe(error)}`,
    };
  }
}

/**
 * What the request asked above the node's maximum, for the reason, or
 * undefined when it asked for nothing more.
 */
function loweredNote(
  nodeLimits: LimitOverrides = {},
  requested: LimitOverrides = {},
): string | undefined {
  const lowered = (Object.keys(DEFAULT_LIMITS) as (keyof JobLimits)[])
    .flatMap((key) => {
      const max = nodeLimits[key] ?? DEFAULT_LIMITS[key];
      const asked = requested[key];
      return asked !== undefined && asked > max
        ? [`${key} ${asked} lowered to ${max}`]
        : [];
    });
  return lowered.length === 0
    ? undefined
    : `the request asked for more than this node's maximum: ${
      lowered.join(", ")
    }`;
}

/**
 * Whether `language` names `runner` as the registry resolves it: its name
 * or an alias in any case, or one of its extensions with or without the dot.
 */
function answersTo(runner: LanguageRunner, language: string): boolean {
  const wanted = language.trim().toLowerCase();
  const extension = wanted.startsWith(".") ? wanted : `.${wanted}`;
  return [runner.name, ...runner.aliases].some((name) =>
    name.toLowerCase() === wanted
  ) || runner.extensions.some((ext) => ext.toLowerCase() === extension);
}

/** The compile step has its own time and memory limits; the rest are shared. */
function compileLimits(limits: JobLimits): StepLimits {
  return {
    ...limits,
    wallTimeMs: limits.compileWallTimeMs,
    cpuTimeMs: limits.compileCpuTimeMs,
    memoryMb: limits.compileMemoryMb,
  };
}

/** Writes the (arranged) sources into the workdir and builds the step context. */
async function writeSources(
  { runner, toolchain }: ResolvedRunner,
  request: JobRequest,
  workdir: string,
): Promise<Omit<StepContext, "memoryMb">> {
  const requestedEntry = request.entry ?? request.files[0]!.name;
  const { files, entry } = runner.arrange?.(request.files, requestedEntry) ??
    { files: request.files, entry: requestedEntry };
  for (const file of files) {
    // A runner may rename files (Java names the entry after its class): the
    // names it made are checked like a client's before any is written.
    const name = SourceFileSchema.shape.name.safeParse(file.name);
    if (!name.success) {
      throw new Error(
        `runner "${runner.name}" made the file name ${
          JSON.stringify(file.name)
        }: ${name.error.issues[0]?.message}`,
      );
    }
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

function compileResult(
  outcome: SandboxedOutcome,
  verdict: JobResult["verdict"],
): CompileResult {
  return {
    verdict: verdict === "runtime_error"
      ? "compile_error"
      : verdict as CompileResult["verdict"],
    exitCode: outcome.exitCode,
    stdout: outcome.stdout,
    stderr: outcome.stderr,
    timeMs: outcome.timeMs,
    cpuTimeMs: outcome.cpuTimeMs,
    memoryKb: outcome.memoryKb,
  };
}

/**
 * The verdict of one step and the reason for it, from the most specific
 * evidence down: what the launcher stopped, what the kernel killed, what the
 * runtime reported, how the program exited.
 *
 * A limit verdict needs kiln's own evidence (its timers, the cgroup's CPU
 * time and OOM kills), never a number the program chose: under bubblewrap
 * `exit 152` looks exactly like a death by SIGXCPU (see
 * `SandboxedOutcome.ambiguousSignal`), so such a code is a `runtime_error`
 * that names the code, and the signal it may stand for only where the
 * evidence does not rule that out.
 */
function stepEnding(
  outcome: SandboxedOutcome,
  limits: StepLimits,
  signal: AbortSignal | undefined,
  { outOfMemory, what }: { outOfMemory: RegExp | undefined; what: string },
): Pick<JobResult, "verdict"> & { reason?: string } {
  const cpuLimit = {
    verdict: "time_limit",
    reason: `${what} exceeded its CPU time limit of ${limits.cpuTimeMs} ms`,
  } as const;
  switch (outcome.ending) {
    case "time_limit":
      return {
        verdict: "time_limit",
        reason:
          `${what} exceeded its wall time limit of ${limits.wallTimeMs} ms`,
      };
    case "cpu_limit":
      return cpuLimit;
    case "output_limit":
      return {
        verdict: "output_limit",
        reason:
          `${what} output exceeded the limit of ${limits.outputBytes} bytes`,
      };
    case "cancelled":
      return { verdict: "internal_error", reason: cancelledReason(signal) };
  }
  if (outcome.oomKilled) {
    return {
      verdict: "memory_limit",
      reason:
        `${what} exceeded its memory limit of ${limits.memoryMb} MiB (killed by the kernel's OOM killer)`,
    };
  }
  const cpu = cpuEvidence(outcome, limits);
  const killedBy = (name: Deno.Signal) =>
    outcome.signal === name || outcome.ambiguousSignal === name;
  // The per-process rlimit sends SIGXCPU at the soft limit and SIGKILL a
  // second later; either counts only when the CPU time was really spent.
  if ((killedBy("SIGXCPU") || killedBy("SIGKILL")) && cpu === "spent") {
    return cpuLimit;
  }
  // Without a measurement, a real SIGXCPU (the wait status, not a code)
  // that came late enough for the rlimit to have sent it is all there is.
  if (outcome.signal === "SIGXCPU" && cpu === "possible") return cpuLimit;
  if (outcome.signal === "SIGXFSZ") {
    return {
      verdict: "runtime_error",
      reason:
        `killed by SIGXFSZ: ${what} wrote a file past the file size limit of ${limits.fileSizeBytes} bytes`,
    };
  }
  if (outcome.exitCode !== 0 && outOfMemory) {
    const match = outOfMemory.exec(outcome.stderr);
    if (match) {
      return {
        verdict: "memory_limit",
        reason:
          `${what} ran out of memory under the limit of ${limits.memoryMb} MiB: "${
            match[0].trim()
          }"`,
      };
    }
  }
  if (outcome.signal !== null) {
    return { verdict: "runtime_error", reason: `killed by ${outcome.signal}` };
  }
  if (outcome.exitCode !== 0) {
    return {
      verdict: "runtime_error",
      reason: `exited with code ${outcome.exitCode}${
        ambiguityNote(outcome.ambiguousSignal, cpu, limits)
      }`,
    };
  }
  return { verdict: "ok" };
}

/**
 * The step's ending, with the disk limit named first when the step ended
 * with its disk full (`statfs` on the job's tmpfs, kiln's own measurement):
 * the program then got ENOSPC, which is what most likely made it fail. A
 * limit kiln stopped the step at (time, memory, output) keeps its verdict
 * and reason.
 */
function diskEnding(
  ending: Pick<JobResult, "verdict"> & { reason?: string },
  outcome: SandboxedOutcome,
  limits: JobLimits,
  what: string,
): Pick<JobResult, "verdict"> & { reason?: string } {
  const disk = outcome.disk;
  if (
    !disk?.full ||
    (ending.verdict !== "ok" && ending.verdict !== "runtime_error")
  ) {
    return ending;
  }
  const reason =
    `${what} reached its disk limit of ${limits.diskMb} MiB and ${limits.diskFiles} files (workdir and /tmp together): ${disk.reason}`;
  return {
    verdict: ending.verdict,
    reason: ending.reason === undefined
      ? reason
      : `${reason}; ${ending.reason}`,
  };
}

/**
 * What kiln knows of the step's CPU time against its budget: `spent` when
 * the cgroup measured at least the budget, `unspent` when it measured less
 * (or, unmeasured, when even every core busy for the whole wall time could
 * not have reached the rlimit), `possible` when nothing rules it out.
 */
function cpuEvidence(
  outcome: SandboxedOutcome,
  limits: StepLimits,
): "spent" | "unspent" | "possible" {
  if (outcome.cpuTimeMs !== null) {
    return outcome.cpuTimeMs >= limits.cpuTimeMs ? "spent" : "unspent";
  }
  // The rlimit counts whole seconds (see `Sandbox`), and a process cannot
  // use more CPU time than its wall time on every core.
  const rlimitMs = Math.max(1, Math.ceil(limits.cpuTimeMs / 1000)) * 1000;
  const cores = navigator.hardwareConcurrency || 1;
  return outcome.timeMs * cores >= rlimitMs ? "possible" : "unspent";
}

/**
 * For an exit code that may stand for a signal (under bubblewrap, 128 + n):
 * the signal, unless kiln's evidence rules it out, with what it would mean.
 */
function ambiguityNote(
  maybe: Deno.Signal | null,
  cpu: "spent" | "unspent" | "possible",
  limits: StepLimits,
): string {
  if (maybe === null) return "";
  // SIGXCPU comes from the CPU rlimit: not without the CPU time. (The
  // verdict would have been time_limit had it been spent.)
  if (maybe === "SIGXCPU" && cpu !== "possible") return "";
  const meaning = maybe === "SIGXCPU"
    ? `, as at the CPU time limit of ${limits.cpuTimeMs} ms`
    : maybe === "SIGXFSZ"
    ? `, as for a file written past the file size limit of ${limits.fileSizeBytes} bytes`
    : "";
  return `, or was killed by ${maybe}${meaning} (the sandbox reports both alike)`;
}

function cancelledReason(signal: AbortSignal | undefined): string {
  return typeof signal?.reason === "string"
    ? `cancelled: ${signal.reason}`
    : "cancelled";
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
