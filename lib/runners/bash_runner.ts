/**
 * Bash scripts.
 *
 * @module
 */
import {
  type DetectOptions,
  executableFor,
  fileArg,
  locate,
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
 * Runs shell scripts with `bash <entry> <args...>`. Bash reads no startup
 * file when it runs a script, so nothing outside the job changes it.
 *
 * @example Detecting bash
 * ```ts
 * import { BashRunner } from "./bash_runner.ts";
 *
 * const toolchain = await new BashRunner().detect();
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export class BashRunner implements LanguageRunner {
  readonly name = "bash";
  readonly aliases: readonly string[] = ["sh"];
  readonly extensions: readonly string[] = [".sh", ".bash"];
  /**
   * bash's `xmalloc: cannot allocate N bytes`, or with the allocation site,
   * `xmalloc: subst.c:4896: cannot allocate N bytes`. The site is matched up
   * to its first colon, never with `[^\n]*` before "cannot allocate": that
   * backtracked over the whole line from every "xmalloc: " in it, and a
   * program printing 1 MiB of them stalled the node for minutes.
   */
  readonly outOfMemory: RegExp =
    /xmalloc: (?:[^\n:]*:\d+: )?cannot allocate[^\n]*/;
  #options: DetectOptions;

  /** Makes a runner that will look for `bash` on the search path. */
  constructor(options: DetectOptions = {}) {
    this.#options = options;
  }

  /** Finds `bash` and its version. */
  async detect(): Promise<Toolchain> {
    const bash = await locate("bash", ["--version"], this.#options);
    if (!bash.ok) return unavailable(bash.reason);
    return {
      available: true,
      version: versionFrom("bash", bash.stdout),
      executables: { interpreter: bash.path },
    };
  }

  /** `bash <entry> <args...>` */
  run(context: StepContext): CommandSpec {
    return {
      command: executableFor(context.toolchain, "interpreter"),
      args: [fileArg(context.entry), ...context.args],
    };
  }
}
