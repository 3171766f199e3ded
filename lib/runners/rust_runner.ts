/**
 * Rust, compiled by rustc.
 *
 * @module
 */
import {
  type DetectOptions,
  executableFor,
  fileArg,
  findExecutable,
  JOB_PATH,
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

/**
 * Compiles Rust programs with
 * `rustc --edition 2021 -O --crate-type bin --crate-name main -o main <entry>`
 * and runs `./main`. Other `.rs` files are reached through `mod` declarations
 * in the entry, as usual.
 *
 * `rustc` on `PATH` is usually rustup's proxy, which needs `HOME` or
 * `RUSTUP_HOME` to find a toolchain and adds a few milliseconds to every
 * call. `detect()` asks it once for the sysroot and uses
 * `<sysroot>/bin/rustc` from then on: the real compiler, which needs no
 * environment. `--crate-name main` keeps file names such as `my-prog.rs`
 * (not a valid crate name) compiling.
 *
 * @example Detecting rustc
 * ```ts
 * import { RustRunner } from "./rust_runner.ts";
 *
 * const toolchain = await new RustRunner().detect();
 * console.log(toolchain.available ? toolchain.executables.compiler : toolchain.reason);
 * ```
 */
export class RustRunner implements LanguageRunner {
  readonly name = "rust";
  readonly aliases: readonly string[] = ["rs"];
  readonly extensions: readonly string[] = [".rs"];
  readonly outOfMemory: RegExp = /memory allocation of \d+ bytes failed/;
  #options: DetectOptions;

  /** Makes a runner that will look for `rustc` on the search path. */
  constructor(options: DetectOptions = {}) {
    this.#options = options;
  }

  /** Finds the real `rustc` behind rustup's proxy, its version, and the linker it calls. */
  async detect(): Promise<Toolchain> {
    const { searchPath, timeoutMs } = this.#options;
    const found = await findExecutable("rustc", { searchPath });
    if (found === undefined) return notFound("rustc");
    // The proxy needs this process's environment (HOME, RUSTUP_HOME) to choose a toolchain.
    const sysroot = await probe(found, ["--print", "sysroot"], {
      inheritEnv: true,
      timeoutMs,
    });
    if (!sysroot.ok) return unavailable(sysroot.reason);
    const compiler = `${sysroot.stdout.trim()}/bin/rustc`;
    if (await findExecutable(compiler) === undefined) {
      return unavailable(
        `${found} reported sysroot "${sysroot.stdout.trim()}", which holds no bin/rustc`,
      );
    }
    const version = await probe(compiler, ["--version"], { timeoutMs });
    if (!version.ok) return unavailable(version.reason);
    // rustc links through the system C compiler driver, found by name.
    if (await findExecutable("cc", { searchPath: JOB_PATH }) === undefined) {
      return unavailable(
        `rustc needs the linker "cc", which is not found on the job PATH ${JOB_PATH}`,
      );
    }
    return {
      available: true,
      version: versionFrom("rustc", version.stdout),
      executables: { compiler },
    };
  }

  /** `rustc --edition 2021 -O --crate-type bin --crate-name main -o main <entry>` */
  compile(context: StepContext): CommandSpec {
    return {
      command: executableFor(context.toolchain, "compiler"),
      args: [
        "--edition",
        "2021",
        "-O",
        "--crate-type",
        "bin",
        "--crate-name",
        "main",
        "-o",
        "main",
        fileArg(context.entry),
      ],
    };
  }

  /** `./main <args...>` */
  run(context: StepContext): CommandSpec {
    return { command: `${context.workdir}/main`, args: [...context.args] };
  }
}
