/**
 * Python 3, run by CPython.
 *
 * @module
 */
import {
  type DetectOptions,
  executableFor,
  fileArg,
  findExecutable,
  notFound,
  probe,
  unavailable,
  versionFrom,
} from "./detect.ts";
import type {
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
} from "./runner.ts";

/** Options of {@linkcode PythonRunner}. */
export interface PythonRunnerOptions extends DetectOptions {
  /**
   * The interpreter to look for on the search path (or an absolute path).
   * @default {"python3"}
   */
  executable?: string | undefined;
}

/**
 * Runs Python 3 programs: `python3 -u -B -E -s -X utf8 <entry> <args...>`.
 *
 * - `-u`: unbuffered stdout and stderr, so output streams live and nothing is
 *   lost when the program is killed at its time limit;
 * - `-B`: no `__pycache__`/`.pyc` written into the workdir;
 * - `-E` and `-s`: ignore `PYTHON*` variables and the user site directory, so
 *   nothing from outside the job changes how it runs (`-I` would also drop
 *   the script's directory from `sys.path` and break multi-file programs);
 * - `-X utf8`: UTF-8 stdin/stdout and files whatever the locale.
 *
 * `detect()` resolves the real interpreter once through `sys.executable`, so a
 * shim on `PATH` (pyenv's costs ~110 ms per start) is paid for once, not on
 * every job.
 *
 * @example Detecting Python
 * ```ts
 * import { PythonRunner } from "./python_runner.ts";
 *
 * const toolchain = await new PythonRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class PythonRunner implements LanguageRunner {
  readonly name = "python";
  readonly aliases: readonly string[] = ["python3", "py"];
  readonly extensions: readonly string[] = [".py"];
  readonly outOfMemory: RegExp = /^MemoryError\b[^\n]*/m;
  #options: PythonRunnerOptions;

  /** Makes a runner that will look for `python3` on the search path. */
  constructor(options: PythonRunnerOptions = {}) {
    this.#options = options;
  }

  /** Finds the real interpreter behind `python3` and its version. */
  async detect(): Promise<Toolchain> {
    const { executable = "python3", searchPath, timeoutMs } = this.#options;
    const found = await findExecutable(executable, { searchPath });
    if (found === undefined) return notFound(executable);
    // A shim needs this process's environment to find its interpreter.
    const where = await probe(found, [
      "-c",
      "import sys; print(sys.executable)",
    ], { inheritEnv: true, timeoutMs });
    if (!where.ok) return unavailable(where.reason);
    const real = where.stdout.trim();
    if (!real.startsWith("/")) {
      return unavailable(
        `${found} did not report the path of its interpreter (sys.executable is "${real}")`,
      );
    }
    const version = await probe(real, ["-E", "--version"], { timeoutMs });
    if (!version.ok) return unavailable(version.reason);
    return {
      available: true,
      version: versionFrom("Python", version.stdout || version.stderr),
      executables: { interpreter: real },
    };
  }

  /** `python3 -u -B -E -s -X utf8 <entry> <args...>` */
  run(context: StepContext): CommandSpec {
    return {
      command: executableFor(context.toolchain, "interpreter"),
      args: [
        "-u",
        "-B",
        "-E",
        "-s",
        "-X",
        "utf8",
        fileArg(context.entry),
        ...context.args,
      ],
    };
  }
}
