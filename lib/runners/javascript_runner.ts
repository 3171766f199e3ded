/**
 * JavaScript, run by Deno.
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
 * Runs JavaScript modules with the Deno CLI kiln itself runs on:
 * `deno run --no-prompt --no-code-cache --quiet --no-config --no-lock
 * --no-remote --no-npm --cached-only ./<entry> <args...>`.
 *
 * The program gets no permissions (no `--allow-*`), never reads a
 * `deno.json` or `package.json` above its workdir, never reaches the network
 * (remote, `jsr:` and `npm:` imports fail), and keeps its `DENO_DIR` in
 * `<workdir>/.deno`. Stdin, stdout, stderr and `Deno.args` need no
 * permission; relative imports of the other files work.
 *
 * @example Detecting Deno
 * ```ts
 * import { JavaScriptRunner } from "./javascript_runner.ts";
 *
 * const toolchain = await new JavaScriptRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class JavaScriptRunner implements LanguageRunner {
  readonly name = "javascript";
  readonly aliases: readonly string[] = ["js"];
  readonly extensions: readonly string[] = [".js", ".mjs"];
  readonly outOfMemory: RegExp = V8_OUT_OF_MEMORY;
  #options: DenoRunnerOptions;

  /** Makes a runner that uses `Deno.execPath()` unless told otherwise. */
  constructor(options: DenoRunnerOptions = {}) {
    this.#options = options;
  }

  /** Finds the Deno CLI and its version. */
  async detect(): Promise<Toolchain> {
    return denoToolchain(await detectDeno(this.#options), false);
  }

  /** `deno run <flags> ./<entry> <args...>` with its own DENO_DIR. */
  run(context: StepContext): CommandSpec {
    return denoCommand("run", context);
  }
}
