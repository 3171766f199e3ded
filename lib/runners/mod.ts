/**
 * Languages kiln compiles and runs: the {@linkcode LanguageRunner} plug-in
 * interface, the {@linkcode RunnerRegistry} that looks runners up and
 * detects their toolchains, the eight built-in runners, and helpers for
 * writing a runner of your own.
 *
 * @example Resolving a language
 * ```ts
 * import { createDefaultRegistry } from "./mod.ts";
 *
 * const registry = createDefaultRegistry();
 * const resolution = await registry.resolve("py");
 * console.log(resolution.ok ? resolution.resolved.toolchain.version : resolution.reason);
 * ```
 *
 * @module
 */
export type { SourceFile } from "../job.ts";
export type {
  ArrangedSources,
  AvailableToolchain,
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
  UnavailableToolchain,
} from "./runner.ts";
export {
  createDefaultRegistry,
  type ResolvedRunner,
  RunnerRegistry,
  type RunnerResolution,
  type RunnerStatus,
} from "./registry.ts";
export {
  type DetectOptions,
  executableFor,
  findExecutable,
  JOB_PATH,
  probe,
  type ProbeOptions,
  type ProbeResult,
  versionFrom,
} from "./detect.ts";
export type { DenoRunnerOptions } from "./_deno.ts";
export { BashRunner } from "./bash_runner.ts";
export { CRunner } from "./c_runner.ts";
export { CppRunner } from "./cpp_runner.ts";
export { JavaRunner } from "./java_runner.ts";
export { JavaScriptRunner } from "./javascript_runner.ts";
export { PythonRunner, type PythonRunnerOptions } from "./python_runner.ts";
export { RustRunner } from "./rust_runner.ts";
export { TypeScriptRunner } from "./typescript_runner.ts";
