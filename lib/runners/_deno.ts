/**
 * What the JavaScript and TypeScript runners share: finding a Deno CLI and
 * the flags and environment that run a program with no permissions and no
 * way out of its workdir.
 *
 * @module
 */
import {
  type DetectOptions,
  executableFor,
  findExecutable,
  firstLine,
  notFound,
  probe,
  unavailable,
} from "./detect.ts";
import type {
  AvailableToolchain,
  CommandSpec,
  StepContext,
  UnavailableToolchain,
} from "./runner.ts";

/** Options of the Deno-based runners. */
export interface DenoRunnerOptions extends DetectOptions {
  /**
   * The Deno CLI to run programs with.
   * @default {Deno.execPath()}, or `deno` on the search path when this
   * process is not the Deno CLI (a `deno compile`d kiln)
   */
  denoPath?: string | undefined;
}

/**
 * Flags shared by `deno run` and `deno check`:
 *
 * - `--no-config`, `--no-lock`: ignore any `deno.json`/`deno.lock` in or
 *   above the workdir (kiln's own, for one);
 * - `--no-remote`, `--no-npm`, `--cached-only`: never touch the network;
 *   `http:`, `jsr:` and `npm:` imports fail at once with a clear message;
 * - `--quiet`: no "Download"/"Check" progress lines in the program's stderr.
 *
 * No `--allow-*` flag is given, so the program has no permissions at all.
 */
export const DENO_COMMON_FLAGS = [
  "--quiet",
  "--no-config",
  "--no-lock",
  "--no-remote",
  "--no-npm",
  "--cached-only",
] as const;

/**
 * `deno run` flags on top of {@linkcode DENO_COMMON_FLAGS}: `--no-prompt`
 * makes a permission request throw instead of waiting on a prompt, and
 * `--no-code-cache` skips writing V8's code cache into a DENO_DIR that is
 * thrown away with the job.
 */
export const DENO_RUN_FLAGS = [
  "--no-prompt",
  "--no-code-cache",
  ...DENO_COMMON_FLAGS,
] as const;

/**
 * The environment a Deno step needs: its own `DENO_DIR` inside the workdir
 * (never the host's cache), no update check, no colours, no `package.json`
 * discovery.
 *
 * @example A job's Deno environment
 * ```ts
 * import { denoEnv } from "./_deno.ts";
 *
 * console.log(denoEnv("/tmp/job").DENO_DIR); // "/tmp/job/.deno"
 * ```
 */
export function denoEnv(workdir: string): Record<string, string> {
  return {
    DENO_DIR: `${workdir}/.deno`,
    DENO_NO_UPDATE_CHECK: "1",
    DENO_NO_PACKAGE_JSON: "1",
    NO_COLOR: "1",
  };
}

/**
 * The entry as a module specifier Deno reads as a local file: a file called
 * `npm:x.ts` or `-x.ts` must not be taken for a package or a flag.
 *
 * @example Keeping odd file names local
 * ```ts
 * import { denoEntry } from "./_deno.ts";
 *
 * console.log(denoEntry({ entry: "npm:x.ts" })); // "./npm:x.ts"
 * ```
 */
export function denoEntry(context: Pick<StepContext, "entry">): string {
  return `./${context.entry}`;
}

/**
 * A `deno` subcommand on the entry file, as both Deno runners launch it:
 * `deno check <flags> ./<entry>` or `deno run <flags> ./<entry> <args...>`.
 */
export function denoCommand(
  subcommand: "check" | "run",
  context: StepContext,
): CommandSpec {
  const flags = subcommand === "run" ? DENO_RUN_FLAGS : DENO_COMMON_FLAGS;
  return {
    command: executableFor(context.toolchain, "runtime"),
    args: [
      subcommand,
      ...flags,
      // V8 sizes its heap from the machine's memory and cannot see the
      // sandbox's cgroup: keep the heap inside the memory limit, so a full
      // heap is V8's "out of memory", not the OOM killer.
      `--v8-flags=--max-old-space-size=${Math.floor(context.memoryMb * 3 / 4)}`,
      denoEntry(context),
      ...subcommand === "run" ? context.args : [],
    ],
    env: denoEnv(context.workdir),
  };
}

/** What V8 prints when the heap is full: the program ran out of memory. */
export const V8_OUT_OF_MEMORY: RegExp =
  /Fatal (?:JavaScript|process) out of memory[^\n]*|JavaScript heap out of memory/;

/** What {@linkcode detectDeno} found. */
export interface DenoToolchain {
  /** Absolute path of the Deno CLI. */
  readonly path: string;
  /** `2.9.6` */
  readonly deno: string;
  /** `6.0.3`, or undefined when the banner does not say. */
  readonly typescript: string | undefined;
}

/**
 * Finds the Deno CLI: this process's own executable when it is one, `deno` on
 * the search path otherwise.
 *
 * @example Finding the Deno CLI
 * ```ts
 * import { detectDeno } from "./_deno.ts";
 *
 * const deno = await detectDeno();
 * console.log("reason" in deno ? deno.reason : deno.deno);
 * ```
 */
export async function detectDeno(
  options: DenoRunnerOptions = {},
): Promise<DenoToolchain | UnavailableToolchain> {
  const { denoPath, searchPath, timeoutMs } = options;
  const candidates: string[] = [];
  if (denoPath !== undefined) {
    candidates.push(denoPath);
  } else {
    const self = ownExecutable();
    if (self !== undefined) candidates.push(self);
    const onPath = await findExecutable("deno", { searchPath });
    if (onPath !== undefined && onPath !== self) candidates.push(onPath);
    if (candidates.length === 0) return notFound("deno");
  }
  const reasons: string[] = [];
  for (const path of candidates) {
    const result = await probe(path, ["--version"], {
      timeoutMs,
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    });
    if (!result.ok) {
      reasons.push(result.reason);
      continue;
    }
    const deno = /^deno (\S+)/.exec(firstLine(result.stdout) ?? "")?.[1];
    if (deno === undefined) {
      reasons.push(
        `${path} is not the Deno CLI (its --version says "${
          firstLine(result.stdout) ?? ""
        }")`,
      );
      continue;
    }
    const typescript = /^typescript (\S+)/m.exec(result.stdout)?.[1];
    return { path, deno, typescript };
  }
  return unavailable(reasons.join("; "));
}

function ownExecutable(): string | undefined {
  try {
    return Deno.execPath();
  } catch {
    return undefined;
  }
}

/**
 * The toolchain of a Deno-based runner, or the reason there is none.
 *
 * @example Describing a Deno toolchain
 * ```ts
 * import { denoToolchain } from "./_deno.ts";
 *
 * const toolchain = denoToolchain({ path: "/usr/bin/deno", deno: "2.9.6", typescript: "6.0.3" }, true);
 * console.log(toolchain.available && toolchain.version); // "deno 2.9.6 (typescript 6.0.3)"
 * ```
 */
export function denoToolchain(
  found: DenoToolchain | UnavailableToolchain,
  withTypeScript: boolean,
): AvailableToolchain | UnavailableToolchain {
  if ("reason" in found) return found;
  const typescript = withTypeScript && found.typescript !== undefined
    ? ` (typescript ${found.typescript})`
    : "";
  return {
    available: true,
    version: `deno ${found.deno}${typescript}`,
    executables: { runtime: found.path },
  };
}
