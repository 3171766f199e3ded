/**
 * The plug-in point for languages. A {@linkcode LanguageRunner} only
 * *describes* how to compile and run a program (which executable, which
 * arguments); the executor and the sandbox decide how those commands are
 * actually launched, limited and killed. That keeps runners pure and lets
 * every runner inherit every isolation layer for free.
 *
 * @module
 */
import type { SourceFile } from "../job.ts";

/** A toolchain that was found and can be used. */
export interface AvailableToolchain {
  /** Always `true`: the discriminant of {@linkcode Toolchain}. */
  readonly available: true;
  /** Human-readable version, e.g. `Python 3.11.2` or `gcc 12.2.0`. */
  readonly version: string;
  /**
   * Absolute paths of the executables the runner resolved, by role
   * (`compiler`, `interpreter`, ...). Resolved once, so shims such as
   * pyenv's are not paid for on every job.
   */
  readonly executables: Readonly<Record<string, string>>;
}

/** A toolchain that is missing or broken, and why. */
export interface UnavailableToolchain {
  /** Always `false`: the discriminant of {@linkcode Toolchain}. */
  readonly available: false;
  /** Why the runner cannot be used, e.g. `executable "javac" not found on PATH`. */
  readonly reason: string;
}

/** What {@linkcode LanguageRunner.detect} reports. */
export type Toolchain = AvailableToolchain | UnavailableToolchain;

/** A command to launch, relative to nothing: `command` is an absolute path. */
export interface CommandSpec {
  /** Absolute path of the executable. */
  readonly command: string;
  /** Arguments, not including the executable itself. */
  readonly args: readonly string[];
  /** Extra environment variables on top of the executor's minimal environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/** What a runner knows when it builds a compile or run command. */
export interface StepContext {
  /** Absolute path of the job's working directory; it holds the source files. */
  readonly workdir: string;
  /** File name (no directory) of the entry source file. */
  readonly entry: string;
  /** File names (no directory) of every source file, entry first. */
  readonly files: readonly string[];
  /** Command-line arguments for the program (used by the run step). */
  readonly args: readonly string[];
  /** The toolchain {@linkcode LanguageRunner.detect} found. */
  readonly toolchain: AvailableToolchain;
  /**
   * The step's memory limit in MiB, for runtimes that size their heap from
   * the machine's memory (the JVM, V8) and cannot see the sandbox's cgroup.
   */
  readonly memoryMb: number;
}

/** Source files arranged for a runner, with the entry it should start from. */
export interface ArrangedSources {
  /** Every file to write into the workdir, under its final name. */
  readonly files: readonly SourceFile[];
  /** Final name of the entry file, one of `files`. */
  readonly entry: string;
}

/**
 * One language kiln can compile and run.
 *
 * @example Registering a runner of your own
 * ```ts
 * import { RunnerRegistry, type LanguageRunner } from "../../mod.ts";
 *
 * const lua: LanguageRunner = {
 *   name: "lua",
 *   aliases: [],
 *   extensions: [".lua"],
 *   detect: () => Promise.resolve({ available: false, reason: "not installed" }),
 *   run: (ctx) => ({ command: ctx.toolchain.executables.interpreter!, args: [ctx.entry, ...ctx.args] }),
 * };
 * const registry = new RunnerRegistry().register(lua);
 * ```
 */
export interface LanguageRunner {
  /** Canonical lower-case name, e.g. `python`. */
  readonly name: string;
  /** Other names clients may use, e.g. `py`, `python3`. */
  readonly aliases: readonly string[];
  /** File extensions with the dot, e.g. `.py`. */
  readonly extensions: readonly string[];
  /** Finds the toolchain and its version, or says why it is unusable. Never throws. */
  detect(): Promise<Toolchain>;
  /**
   * Renames or adds files before they are written, e.g. Java moves a public
   * class `Main` into `Main.java`. Optional.
   */
  arrange?(files: readonly SourceFile[], entry: string): ArrangedSources;
  /**
   * The compile step, for languages that have one. Its artifacts are written
   * into the workdir; the run step reads them from there.
   */
  compile?(context: StepContext): CommandSpec;
  /** The run step: runs the program (or its compiled artifact) with `context.args`. */
  run(context: StepContext): CommandSpec;
  /**
   * Matches what the runtime writes to stderr when an allocation fails
   * (`MemoryError`, `java.lang.OutOfMemoryError`): a program that exits
   * with it ends as `memory_limit`, not `runtime_error`. Optional.
   *
   * It is run once over the program's whole stderr (up to the output limit)
   * on the node's event loop, so its cost must stay linear in that text: no
   * `[^\n]*` or `.*` followed by more pattern, no nested or overlapping
   * quantifiers.
   */
  readonly outOfMemory?: RegExp;
}
