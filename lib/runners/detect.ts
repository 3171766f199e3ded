/**
 * Helpers for `LanguageRunner.detect()`: find an executable on
 * `PATH`, run it once to learn its version, and turn every failure into an
 * {@linkcode UnavailableToolchain} with a reason a person can act on instead
 * of an exception.
 *
 * Probes run with the same bare environment the executor gives programs
 * ({@linkcode JOB_PATH}, `LANG=C.UTF-8`, nothing else), so a toolchain that
 * is reported available also works when a job uses it.
 *
 * @module
 */
import { JOB_PATH, jobEnvironment } from "../sandbox/environment.ts";
import type { AvailableToolchain, UnavailableToolchain } from "./runner.ts";

export { JOB_PATH };

/** How long a probe such as `javac -version` may take before it counts as broken. */
export const DEFAULT_PROBE_TIMEOUT_MS = 15_000;

/** Where and how runners look for their toolchain. */
export interface DetectOptions {
  /**
   * The search path for executables, `:`-separated.
   * @default {Deno.env.get("PATH")}
   */
  searchPath?: string | undefined;
  /**
   * How long one probe (`X --version`) may run, in milliseconds.
   * @default {15000}
   */
  timeoutMs?: number | undefined;
}

/**
 * Finds an executable the way a shell does: the first regular file with an
 * execute bit in the directories of `searchPath`. A name with a `/` is
 * checked as it is. Never throws: an unreadable `PATH` entry is skipped.
 *
 * @returns the absolute path as found (symlinks are not resolved, so
 * multi-call binaries such as rustup's proxies keep their name), or
 * `undefined`.
 *
 * @example Finding bash
 * ```ts
 * import { findExecutable } from "./detect.ts";
 *
 * const bash = await findExecutable("bash", { searchPath: "/usr/bin:/bin" });
 * console.log(bash); // "/usr/bin/bash"
 * ```
 */
export async function findExecutable(
  name: string,
  options: Pick<DetectOptions, "searchPath"> = {},
): Promise<string | undefined> {
  if (name === "") return undefined;
  if (name.includes("/")) {
    return name.startsWith("/") && await isExecutableFile(name)
      ? name
      : undefined;
  }
  const searchPath = options.searchPath ?? safeEnv("PATH") ?? "";
  for (const dir of searchPath.split(":")) {
    // An empty or relative entry would mean "the current directory": never
    // what a server wants.
    if (!dir.startsWith("/")) continue;
    const candidate = `${dir.replace(/\/+$/, "")}/${name}`;
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.isFile && info.mode !== null && (info.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

function safeEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Options of {@linkcode probe}. */
export interface ProbeOptions {
  /**
   * Run with this process's own environment instead of the bare job
   * environment. Needed only to ask a shim (pyenv, rustup) where the real
   * binary is.
   * @default {false}
   */
  inheritEnv?: boolean | undefined;
  /** Extra environment variables. */
  env?: Readonly<Record<string, string>> | undefined;
  /**
   * Milliseconds before the probe is killed.
   * @default {15000}
   */
  timeoutMs?: number | undefined;
}

/** What {@linkcode probe} learned: the output of a run that exited with 0, or why there was none. */
export type ProbeResult =
  | { readonly ok: true; readonly stdout: string; readonly stderr: string }
  | { readonly ok: false; readonly reason: string };

/**
 * Runs `command args...` to its end and captures its output, with a time
 * limit. Never throws: a missing binary, a missing `--allow-run`, a timeout or
 * a non-zero exit become `{ ok: false, reason }`.
 *
 * By default the command sees only `PATH=`{@linkcode JOB_PATH} and
 * `LANG=C.UTF-8`, like a job does.
 *
 * @example Asking gcc for its version
 * ```ts
 * import { probe } from "./detect.ts";
 *
 * const result = await probe("/usr/bin/gcc", ["-dumpfullversion"]);
 * if (result.ok) console.log(result.stdout.trim()); // "12.2.0"
 * else console.log(result.reason);
 * ```
 */
export async function probe(
  command: string,
  args: readonly string[],
  options: ProbeOptions = {},
): Promise<ProbeResult> {
  const { inheritEnv = false, env = {}, timeoutMs = DEFAULT_PROBE_TIMEOUT_MS } =
    options;
  const shown = [command, ...args].join(" ");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args: [...args],
      env: inheritEnv ? { ...env } : jobEnvironment(undefined, env),
      clearEnv: !inheritEnv,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // Its own process group, so a timeout kills whatever it started too:
      // a grandchild holding the pipes open would keep output() waiting.
      detached: true,
    }).spawn();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, reason: `cannot run "${shown}": ${message}` };
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  try {
    const output = await child.output();
    if (timedOut) {
      return {
        ok: false,
        reason: `"${shown}" timed out after ${timeoutMs} ms`,
      };
    }
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    if (!output.success) {
      const how = output.signal
        ? `was killed by ${output.signal}`
        : `exited with code ${output.code}`;
      const said = firstLine(stderr) ?? firstLine(stdout);
      return {
        ok: false,
        reason: `"${shown}" ${how}${said ? `: ${said}` : ""}`,
      };
    }
    return { ok: true, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The first line of `text` that is not blank, trimmed.
 *
 * @example Taking the first line of a banner
 * ```ts
 * import { firstLine } from "./detect.ts";
 *
 * console.log(firstLine("\n  javac 17.0.15\n")); // "javac 17.0.15"
 * ```
 */
export function firstLine(text: string): string | undefined {
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed !== "") return trimmed;
  }
  return undefined;
}

/**
 * `${tool} ${version}` from a version banner, where `version` is its first
 * dotted number; the whole first line when there is none.
 *
 * @example Tidying bash's banner
 * ```ts
 * import { versionFrom } from "./detect.ts";
 *
 * const banner = "GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)";
 * console.log(versionFrom("bash", banner)); // "bash 5.2.15"
 * ```
 */
export function versionFrom(tool: string, banner: string): string {
  const line = firstLine(banner) ?? "";
  // The lookbehind starts a number only where a run of digits starts: without
  // it, a long run with no dot after it cost time quadratic in its length.
  const number = /(?<!\d)\d+(?:\.\d+)+/.exec(line)?.[0];
  return number ? `${tool} ${number}` : line || tool;
}

/**
 * The toolchain a runner reports when it cannot be used.
 *
 * @example Reporting a toolchain as unusable
 * ```ts
 * import { unavailable } from "./detect.ts";
 *
 * const toolchain = unavailable("executable \"javac\" not found on PATH");
 * console.log(toolchain.available); // false
 * ```
 */
export function unavailable(reason: string): UnavailableToolchain {
  return { available: false, reason };
}

/**
 * The reason given when an executable is not on the search path.
 *
 * @example Reporting a missing executable
 * ```ts
 * import { notFound } from "./detect.ts";
 *
 * console.log(notFound("javac").reason); // executable "javac" not found on PATH
 * ```
 */
export function notFound(name: string, where = "PATH"): UnavailableToolchain {
  return unavailable(`executable "${name}" not found on ${where}`);
}

/**
 * Finds `name` on the search path and checks that `name versionArgs...`
 * runs in the bare job environment.
 *
 * @returns the executable's absolute path and the probe's output, or the
 * reason it is unusable.
 *
 * @example Finding bash and its version
 * ```ts
 * import { locate, versionFrom } from "./detect.ts";
 *
 * const bash = await locate("bash", ["--version"]);
 * if (bash.ok) console.log(bash.path, versionFrom("bash", bash.stdout));
 * else console.log(bash.reason);
 * ```
 */
export async function locate(
  name: string,
  versionArgs: readonly string[],
  options: DetectOptions = {},
): Promise<
  | {
    readonly ok: true;
    readonly path: string;
    readonly stdout: string;
    readonly stderr: string;
  }
  | { readonly ok: false; readonly reason: string }
> {
  const path = await findExecutable(name, options);
  if (path === undefined) return { ok: false, reason: notFound(name).reason };
  const result = await probe(path, versionArgs, {
    timeoutMs: options.timeoutMs,
  });
  return result.ok
    ? { ok: true, path, stdout: result.stdout, stderr: result.stderr }
    : result;
}

/**
 * `name` as a command-line argument that cannot be mistaken for an option
 * or an argument file: a file called `-x.py` becomes `./-x.py`, and one
 * called `@opts.c` becomes `./@opts.c`, because gcc, g++, javac, rustc and
 * the `java` launcher read the arguments in `opts.c` for `@opts.c`, and a
 * program's own file could then add `-wrapper /bin/sh,...` to its compile.
 *
 * @example Guarding file names that look like flags or argument files
 * ```ts
 * import { fileArg } from "./detect.ts";
 *
 * console.log(fileArg("main.c"), fileArg("-o.c"), fileArg("@x.c")); // main.c ./-o.c ./@x.c
 * ```
 */
export function fileArg(name: string): string {
  return name.startsWith("-") || name.startsWith("@") ? `./${name}` : name;
}

/**
 * The file names in `files` whose extension is one of `extensions`
 * (case-insensitive), in order.
 *
 * @example Picking the C sources of a program
 * ```ts
 * import { sourcesWith } from "./detect.ts";
 *
 * console.log(sourcesWith(["main.c", "util.h", "util.c"], [".c"])); // ["main.c", "util.c"]
 * ```
 */
export function sourcesWith(
  files: readonly string[],
  extensions: readonly string[],
): string[] {
  return files.filter((file) => {
    const lower = file.toLowerCase();
    return extensions.some((ext) =>
      lower.length > ext.length && lower.endsWith(ext)
    );
  });
}

/**
 * The absolute path a toolchain resolved for `role`.
 *
 * @throws {TypeError} when the toolchain has no such executable: a runner
 * was handed a toolchain its own `detect()` did not produce.
 *
 * @example Getting the compiler of a toolchain
 * ```ts
 * import { executableFor } from "./detect.ts";
 *
 * const toolchain = { available: true, version: "gcc 12.2.0", executables: { compiler: "/usr/bin/gcc" } } as const;
 * console.log(executableFor(toolchain, "compiler")); // "/usr/bin/gcc"
 * ```
 */
export function executableFor(
  toolchain: AvailableToolchain,
  role: string,
): string {
  const path = toolchain.executables[role];
  if (path === undefined) {
    throw new TypeError(
      `Toolchain "${toolchain.version}" has no "${role}" executable`,
    );
  }
  return path;
}
