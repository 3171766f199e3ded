/**
 * C, compiled by GCC.
 *
 * @module
 */
import { detectGcc } from "./_gcc.ts";
import {
  type DetectOptions,
  executableFor,
  fileArg,
  sourcesWith,
} from "./detect.ts";
import type {
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
} from "./runner.ts";

/**
 * Compiles C programs with
 * `gcc -O2 -std=gnu17 -pipe -o main <every .c file> -lm` and runs `./main`.
 * Headers (`.h`) among the files are found by `#include "..."` since they sit
 * beside the sources.
 *
 * @example Detecting gcc
 * ```ts
 * import { CRunner } from "./c_runner.ts";
 *
 * const toolchain = await new CRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class CRunner implements LanguageRunner {
  readonly name = "c";
  readonly aliases: readonly string[] = ["gcc"];
  readonly extensions: readonly string[] = [".c"];
  #options: DetectOptions;

  /** Makes a runner that will look for `gcc` on the search path. */
  constructor(options: DetectOptions = {}) {
    this.#options = options;
  }

  /** Finds `gcc`, its version, and the assembler and linker it calls. */
  detect(): Promise<Toolchain> {
    return detectGcc("gcc", this.#options);
  }

  /** `gcc -O2 -std=gnu17 -pipe -o main <every .c file> -lm` */
  compile(context: StepContext): CommandSpec {
    const sources = sourcesWith(context.files, this.extensions).map(fileArg);
    return {
      command: executableFor(context.toolchain, "compiler"),
      args: ["-O2", "-std=gnu17", "-pipe", "-o", "main", ...sources, "-lm"],
    };
  }

  /** `./main <args...>` */
  run(context: StepContext): CommandSpec {
    return { command: `${context.workdir}/main`, args: [...context.args] };
  }
}
