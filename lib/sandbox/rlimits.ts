/**
 * Per-process resource limits (rlimits) through util-linux `prlimit`:
 * CPU seconds, file size, open files and core size. `prlimit [limits] --
 * command` sets the limits on itself and then execs the command, so the pid
 * the caller spawned stays the program's pid (and its process group's
 * leader), and every process the program forks inherits the limits.
 *
 * Rlimits are per process, not per job: a program that forks gets the CPU
 * limit once per process. Job-wide CPU time and memory belong to the cgroup
 * layer; rlimits are the cheap backstop that works everywhere.
 *
 * There is deliberately no address-space limit (`--as`, `RLIMIT_AS`): the
 * JVM, Node and Deno reserve gigabytes of virtual address space up front (a
 * Java heap, V8's pointer-compression cage, Wasm guard regions) without ever
 * touching it, so any `--as` small enough to matter makes them fail to start.
 * Memory is limited by the cgroup, which counts pages actually used.
 *
 * @module
 */

/** The rlimits {@linkcode prlimitPrefix} sets; a missing field is left as inherited. */
export interface Rlimits {
  /**
   * CPU time of each process, in whole seconds: the kernel sends SIGXCPU at
   * this soft limit and SIGKILL at the hard limit one second later, so a
   * program that catches SIGXCPU still ends. (With soft and hard equal the
   * kernel would send SIGKILL alone, and the verdict could not tell a CPU
   * limit from any other kill.)
   */
  readonly cpuSeconds?: number;
  /** Largest file a process may write, in bytes: more is SIGXFSZ (or EFBIG if ignored). */
  readonly fileSizeBytes?: number;
  /** Open file descriptors per process, stdin/stdout/stderr included. */
  readonly openFiles?: number;
  /** Largest core dump, in bytes. @default 0 (no core dumps) */
  readonly coreBytes?: number;
}

/** Where `prlimit` normally lives on Debian and most other distributions. */
export const DEFAULT_PRLIMIT_PATH = "/usr/bin/prlimit";

/**
 * The argument prefix that runs a command under `limits`: put the command
 * and its arguments after it. Soft and hard limits are set to the same
 * value (the CPU limit's hard value is a second above its soft value), so
 * the program cannot raise them again.
 *
 * @throws {RangeError} when a limit is not a non-negative safe integer, or
 * `cpuSeconds` or `openFiles` is zero (a process could not even start).
 *
 * @example Running a command with one CPU second and no core dumps
 * ```ts
 * import { prlimitPrefix } from "./rlimits.ts";
 *
 * const prefix = prlimitPrefix({ cpuSeconds: 1, openFiles: 64 });
 * // ["/usr/bin/prlimit", "--cpu=1:2", "--nofile=64:64", "--core=0:0", "--"]
 * const [command, ...args] = [...prefix, "/bin/echo", "hello"];
 * await new Deno.Command(command!, { args }).output();
 * ```
 */
export function prlimitPrefix(
  limits: Rlimits,
  prlimitPath: string = DEFAULT_PRLIMIT_PATH,
): string[] {
  return [
    prlimitPath,
    ...rlimitSettings(limits).map(({ flag, soft, hard }) =>
      `${flag}=${soft}:${hard}`
    ),
    "--",
  ];
}

/** One rlimit to set: its resource number, soft and hard values. */
export interface RlimitSetting {
  /** `prlimit`'s flag for it. */
  readonly flag: "--cpu" | "--fsize" | "--nofile" | "--core";
  /** The resource number of `setrlimit(2)` (the same on x86-64 and arm64). */
  readonly resource: number;
  readonly soft: number;
  readonly hard: number;
}

/**
 * The rlimits `limits` sets, in the order `prlimit` is given them: one
 * source for {@linkcode prlimitPrefix} and for the pre-warmed sandbox's
 * stub, which sets them itself (see `warm_stub.ts`).
 *
 * @throws {RangeError} as {@linkcode prlimitPrefix}.
 */
export function rlimitSettings(limits: Rlimits): RlimitSetting[] {
  const { cpuSeconds, fileSizeBytes, openFiles, coreBytes = 0 } = limits;
  const settings: RlimitSetting[] = [];
  const add = (
    flag: RlimitSetting["flag"],
    resource: number,
    value: number | undefined,
    min: number,
    hardAbove = 0,
  ) => {
    if (value === undefined) return;
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(
        `Cannot set rlimit ${flag}: ${value} is not an integer >= ${min}`,
      );
    }
    settings.push({ flag, resource, soft: value, hard: value + hardAbove });
  };
  add("--cpu", RLIMIT.cpu, cpuSeconds, 1, 1);
  add("--fsize", RLIMIT.fsize, fileSizeBytes, 0);
  add("--nofile", RLIMIT.nofile, openFiles, 1);
  add("--core", RLIMIT.core, coreBytes, 0);
  return settings;
}

/** Linux's resource numbers (asm-generic; x86-64 and arm64 agree). */
const RLIMIT = { cpu: 0, fsize: 1, core: 4, nofile: 7 } as const;

/** What {@linkcode detectPrlimit} found. */
export type PrlimitDetection =
  | {
    readonly available: true;
    readonly path: string;
    readonly version: string;
  }
  | { readonly available: false; readonly reason: string };

/**
 * Finds `prlimit` and proves it works by running `/bin/true` under it with
 * the limits a job gets. Never throws.
 *
 * @example Reporting the rlimits layer
 * ```ts
 * import { detectPrlimit } from "./rlimits.ts";
 *
 * const prlimit = await detectPrlimit();
 * console.log(prlimit.available ? prlimit.version : prlimit.reason);
 * ```
 */
export async function detectPrlimit(
  prlimitPath: string = DEFAULT_PRLIMIT_PATH,
): Promise<PrlimitDetection> {
  try {
    const version = await new Deno.Command(prlimitPath, {
      args: ["--version"],
      clearEnv: true,
      stdin: "null",
    }).output();
    if (!version.success) {
      return unavailable(`"${prlimitPath} --version" failed`);
    }
    const [command, ...args] = [
      ...prlimitPrefix(
        { cpuSeconds: 1, fileSizeBytes: 1 << 20, openFiles: 64 },
        prlimitPath,
      ),
      "/bin/true",
    ];
    const probe = await new Deno.Command(command!, {
      args,
      clearEnv: true,
      stdin: "null",
    }).output();
    if (!probe.success) {
      const stderr = new TextDecoder().decode(probe.stderr).trim();
      return unavailable(
        `prlimit cannot set limits: ${stderr || `exit ${probe.code}`}`,
      );
    }
    const text = new TextDecoder().decode(version.stdout).trim();
    return { available: true, path: prlimitPath, version: text };
  } catch (error) {
    return unavailable(
      error instanceof Deno.errors.NotFound
        ? `executable "${prlimitPath}" not found`
        : `cannot run "${prlimitPath}": ${
          error instanceof Error ? error.message : String(error)
        }`,
    );
  }
}

function unavailable(reason: string): PrlimitDetection {
  return { available: false, reason };
}
