/**
 * The environment every job step sees, and nothing else: a program must not
 * inherit the node's variables (a token among them). Toolchain probes use
 * the same environment, so a toolchain reported available also works inside
 * a job.
 *
 * @module
 */

/**
 * The `PATH` of every compile and run step. Tools a compiler calls by name
 * (gcc's `as` and `ld`, rustc's `cc`) must be found on it.
 */
export const JOB_PATH = "/usr/local/bin:/usr/bin:/bin";

/**
 * The whole environment of a job step: `PATH`, `LANG`, and with a workdir
 * also `HOME` and `TMPDIR` pointing into it, plus `extra` (a runner's own).
 *
 * @example The environment of a step
 * ```ts
 * import { jobEnvironment } from "./environment.ts";
 *
 * jobEnvironment("/tmp/kiln-job-1", { NO_COLOR: "1" });
 * // { PATH: "/usr/local/bin:/usr/bin:/bin", LANG: "C.UTF-8", HOME: "/tmp/kiln-job-1", TMPDIR: "/tmp/kiln-job-1", NO_COLOR: "1" }
 * ```
 */
export function jobEnvironment(
  workdir?: string,
  extra: Readonly<Record<string, string>> = {},
): Record<string, string> {
  return {
    PATH: JOB_PATH,
    LANG: "C.UTF-8",
    ...workdir === undefined ? {} : { HOME: workdir, TMPDIR: workdir },
    ...extra,
  };
}
