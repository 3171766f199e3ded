/**
 * What the C and C++ runners share: finding a GCC driver and the programs it
 * needs at compile time.
 *
 * @module
 */
import {
  type DetectOptions,
  findExecutable,
  JOB_PATH,
  notFound,
  probe,
  unavailable,
} from "./detect.ts";
import type { Toolchain } from "./runner.ts";

/**
 * Finds a GCC driver (`gcc` or `g++`) and its version, and checks that the
 * assembler and linker it calls by name are on {@linkcode JOB_PATH}, the only
 * `PATH` a compile step gets.
 *
 * @example Detecting g++
 * ```ts
 * import { detectGcc } from "./_gcc.ts";
 *
 * const toolchain = await detectGcc("g++");
 * console.log(toolchain.available ? toolchain.version : toolchain.reason);
 * ```
 */
export async function detectGcc(
  driver: "gcc" | "g++",
  options: DetectOptions = {},
): Promise<Toolchain> {
  const { searchPath, timeoutMs } = options;
  const compiler = await findExecutable(driver, { searchPath });
  if (compiler === undefined) return notFound(driver);
  const version = await probe(compiler, ["-dumpfullversion"], { timeoutMs });
  if (!version.ok) return unavailable(version.reason);
  for (const tool of ["as", "ld"]) {
    const answer = await probe(compiler, [`-print-prog-name=${tool}`], {
      timeoutMs,
    });
    if (!answer.ok) return unavailable(answer.reason);
    const name = answer.stdout.trim() || tool;
    if (await findExecutable(name, { searchPath: JOB_PATH }) === undefined) {
      return unavailable(
        `${driver} needs "${name}", which is not found on the job PATH ${JOB_PATH}`,
      );
    }
  }
  return {
    available: true,
    version: `${driver} ${version.stdout.trim()}`,
    executables: { compiler },
  };
}
