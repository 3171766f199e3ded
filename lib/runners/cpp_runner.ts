/**
 * C++, compiled by GCC.
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
 * Compiles C++ programs with
 * `g++ -O2 -std=gnu++17 -pipe -o main <every .cpp/.cc/.cxx file>` and runs
 * `./main`.
 *
 * @example Detecting g++
 * ```ts
 * import { CppRunner } from "./cpp_runner.ts";
 *
 * const toolchain = await new CppRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class CppRunner implements LanguageRunner {
  readonly name = "cpp";
  readonly aliases: readonly string[] = ["c++", "cxx", "g++"];
  readonly extensions: readonly string[] = [".cpp", ".cc", ".cxx"];
  readonly outOfMemory: RegExp = /std::bad_alloc/;
  #options: DetectOptions;

  /** Makes a runner that will look for `g++` on the search path. */
  constructor(options: DetectOptions = {}) {
    this.#options = options;
  }

  /** Finds `g++`, its version, and the assembler and linker it calls. */
  detect(): Promise<Toolchain> {
    return detectGcc("g++", this.#options);
  }

  /** `g++ -O2 -std=gnu++17 -pipe -o main <every C++ source>` */
  compile(context: StepContext): CommandSpec {
    const sources = sourcesWith(context.files, this.extensions).map(fileArg);
    return {
      command: executableFor(context.toolchain, "compiler"),
      args: ["-O2", "-std=gnu++17", "-pipe", "-o", "main", ...sources],
    };
  }

  /** `./main <args...>` */
  run(context: StepContext): CommandSpec {
    return { command: `${context.workdir}/main`, args: [...context.args] };
  }
}
