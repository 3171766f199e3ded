/**
 * TypeScript, type-checked and run by Deno.
 *
 * @module
 */
import {
  denoCommand,
  type DenoRunnerOptions,
  denoToolchain,
  detectDeno,
  V8_OUT_OF_MEMORY,
} from "./_deno.ts";
import type {
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
} from "./runner.ts";

/**
 * Type-checks TypeScript programs with `deno check` (Deno's default, strict
 * compiler options), then runs them like {@linkcode JavaScriptRunner} does:
 * no permissions, no config, no network, a `DENO_DIR` of their own.
 *
 * The check step is what makes a type error a `compile_error`, as users of
 * Judge0 and Piston (which compile with `tsc`) expect. It costs about 1.2 s
 * per job, since each job starts from an empty type-check cache; the run
 * step then costs about as much as plain JavaScript.
 *
 * @example Detecting Deno and its TypeScript
 * ```ts
 * import { TypeScriptRunner } from "./typescript_runner.ts";
 *
 * const toolchain = await new TypeScriptRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class TypeScriptRunner implements LanguageRunner {
  readonly name = "typescript";
  readonly aliases: readonly string[] = ["ts"];
  readonly extensions: readonly string[] = [".ts", ".mts"];
  readonly outOfMemory: RegExp = V8_OUT_OF_MEMORY;
  #options: DenoRunnerOptions;

  /** Makes a runner that uses `Deno.execPath()` unless told otherwise. */
  constructor(options: DenoRunnerOptions = {}) {
    this.#options = options;
  }

  /** Finds the Deno CLI, its version and the TypeScript it bundles. */
  async detect(): Promise<Toolchain> {
    return denoToolchain(await detectDeno(this.#options), true);
  }

  /** `deno check <flags> ./<entry>` */
  compile(context: StepContext): CommandSpec {
    return denoCommand("check", context);
  }

  /** `deno run <flags> ./<entry> <args...>` */
  run(context: StepContext): CommandSpec {
    return denoCommand("run", context);
  }
}
