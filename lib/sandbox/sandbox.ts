/**
 * The sandbox a node runs every job step in: the three isolation layers
 * detected once at start, and one step launched under all of them.
 *
 * A step's command is built from the inside out:
 *
 * ```
 * sh (joins the step's cgroup) → bwrap (namespaces) → setpriv (uid 65534)
 *   → prlimit (rlimits) → the runner's command
 * ```
 *
 * Each link `exec`s the next, except bwrap, which stays as the parent of the
 * sandbox and reports the program's exit (128 + n for signal n, as a shell
 * does). The pid the launcher spawned is bwrap's, so its process-group kill
 * reaches bwrap, `--die-with-parent` takes the sandbox's first process with
 * it, and the pid namespace dies with that process. The cgroup catches the
 * rest, measures CPU time and peak memory, and enforces the memory and
 * process limits.
 *
 * A missing layer is never silent: `auto` logs a warning for each, `bwrap`
 * refuses to start without namespaces, `require` refuses to start without
 * namespaces and cgroups.
 *
 * @module
 */
import type {
  JobLimits,
  OutputStream,
  SandboxLayer,
  SandboxMode,
  SandboxReport,
} from "../job.ts";
import type { CommandSpec } from "../runners/runner.ts";
import {
  type BubblewrapDetection,
  bwrapPrefix,
  detectBubblewrap,
  prepareWorkdir,
  SANDBOX_UID,
  toolchainRoots,
} from "./bubblewrap.ts";
import {
  CGROUP_ENTER_FAILED,
  type CgroupDetection,
  detectCgroups,
  type JobCgroup,
} from "./cgroup.ts";
import { launch, type StepOutcome } from "./launcher.ts";
import { isProcessAlive } from "./process_tree.ts";
import {
  detectPrlimit,
  type PrlimitDetection,
  prlimitPrefix,
} from "./rlimits.ts";

// The mode and the report travel in protocol messages, so they live in
// job.ts, below both the protocol and the sandbox.
export type { SandboxMode, SandboxReport } from "../job.ts";

/** Every {@linkcode SandboxMode}, for flag parsing. */
export const SANDBOX_MODES: readonly SandboxMode[] = ["auto", "bwrap", "none"];

/** Options of {@linkcode Sandbox.detect}. */
export interface SandboxOptions {
  /**
   * `auto` uses every layer that works here and warns about the others;
   * `bwrap` also refuses to start without the namespace layer; `none` runs
   * programs as the node's own user, unisolated (development only).
   * @default "auto"
   */
  readonly mode?: SandboxMode;
  /** Refuse to start without namespaces and cgroups. @default false */
  readonly require?: boolean;
  /** Where to look for cgroups, for tests. @default "/sys/fs/cgroup" */
  readonly cgroupRoot?: string;
}

/** The limits of one step: the compile step's or the run step's. */
export type StepLimits = Pick<
  JobLimits,
  | "wallTimeMs"
  | "cpuTimeMs"
  | "memoryMb"
  | "processes"
  | "outputBytes"
  | "fileSizeBytes"
  | "openFiles"
>;

/** Options of {@linkcode Sandbox.run}. */
export interface SandboxStepOptions {
  /**
   * Text written to the program's stdin, which is then closed (unless
   * `input` follows); none (and no `input`) means empty stdin.
   */
  readonly stdin?: string | undefined;
  /**
   * More stdin, written as it arrives while the program runs (an
   * interactive program); stdin closes when it ends.
   */
  readonly input?: AsyncIterable<string> | undefined;
  /** Cancels the step: the process tree is killed. */
  readonly signal?: AbortSignal | undefined;
  /** Receives output chunks as they are produced. */
  readonly onOutput?:
    | ((stream: OutputStream, data: string) => void)
    | undefined;
  /** The job's workdir, prepared with {@linkcode Sandbox.prepareWorkdir}. */
  readonly workdir: string;
  /** The program's whole environment: never a secret (it is on bwrap's command line). */
  readonly env: Readonly<Record<string, string>>;
  /** The step's limits. */
  readonly limits: StepLimits;
  /** Executables the step runs, whose installation roots are bound read-only. */
  readonly executables: readonly string[];
}

/** A finished step with what the sandbox measured. */
export interface SandboxedOutcome extends StepOutcome {
  /** CPU time of all the step's processes, in milliseconds; null without cgroups. */
  readonly cpuTimeMs: number | null;
  /** Peak memory of the step, in KiB; null without cgroups. */
  readonly memoryKb: number | null;
  /** Whether the kernel's OOM killer killed a process of the step. */
  readonly oomKilled: boolean;
}

/** The node cannot give the isolation its options demand. */
export class SandboxUnavailableError extends Error {
  /** The report of what was found. */
  readonly report: SandboxReport;
  /** An error saying what is missing; `report` holds everything found. */
  constructor(message: string, report: SandboxReport) {
    super(message);
    this.name = "SandboxUnavailableError";
    this.report = report;
  }
}

/**
 * The isolation layers of one node, detected once.
 *
 * @example Running a command in the strongest sandbox this host has
 * ```ts
 * import { Sandbox } from "./sandbox.ts";
 *
 * const sandbox = await Sandbox.detect();
 * for (const warning of sandbox.warnings) console.warn(warning);
 * const workdir = await Deno.makeTempDir({ prefix: "kiln-job-" });
 * try {
 *   await sandbox.prepareWorkdir(workdir);
 *   const outcome = await sandbox.run({ command: "/usr/bin/id", args: ["-u"] }, {
 *     workdir,
 *     env: { PATH: "/usr/bin:/bin" },
 *     executables: ["/usr/bin/id"],
 *     limits: {
 *       wallTimeMs: 1000, cpuTimeMs: 1000, memoryMb: 64, processes: 8,
 *       outputBytes: 1024, fileSizeBytes: 1024, openFiles: 64,
 *     },
 *   });
 *   console.log(outcome.stdout); // "65534\n" where bubblewrap works
 * } finally {
 *   await Deno.remove(workdir, { recursive: true });
 *   await sandbox.close();
 * }
 * ```
 */
export class Sandbox {
  /** What was found, for logs and status. Do not change it. */
  readonly report: SandboxReport;
  /** One line per missing layer, for the node to log at start. */
  readonly warnings: readonly string[];
  readonly #bwrap: BubblewrapDetection | null;
  readonly #cgroups: CgroupDetection | null;
  readonly #prlimit: PrlimitDetection | null;
  /** Toolchain roots per executable list: `realPath` once, not per job. */
  readonly #roots = new Map<string, Promise<string[]>>();

  private constructor(
    mode: SandboxMode,
    bwrap: BubblewrapDetection | null,
    cgroups: CgroupDetection | null,
    prlimit: PrlimitDetection | null,
  ) {
    this.#bwrap = bwrap;
    this.#cgroups = cgroups;
    this.#prlimit = prlimit;
    const layers: SandboxLayer[] = [];
    const backends: Partial<Record<SandboxLayer, string>> = {};
    const missing: Partial<Record<SandboxLayer, string>> = {};
    if (bwrap?.available) {
      layers.push("namespaces");
      backends.namespaces = `bubblewrap ${bwrap.version}`;
    } else if (bwrap) missing.namespaces = bwrap.reason;
    if (cgroups?.available) {
      layers.push("cgroups");
      backends.cgroups = `cgroup v${cgroups.version}`;
    } else if (cgroups) missing.cgroups = cgroups.reason;
    if (prlimit?.available) {
      layers.push("rlimits");
      backends.rlimits = "prlimit";
    } else if (prlimit) missing.rlimits = prlimit.reason;
    if (mode === "none") {
      missing.namespaces =
        missing.cgroups =
        missing.rlimits =
          "--sandbox none";
    }
    this.report = { mode, layers, backends, missing };
    this.warnings = mode === "none"
      ? [
        "sandbox disabled (--sandbox none): programs run as this node's user with its privileges, unlimited in memory and processes",
      ]
      : Object.entries(missing).map(([layer, reason]) =>
        `sandbox layer "${layer}" is missing: ${reason}; ${
          CONSEQUENCES[layer as SandboxLayer]
        }`
      );
  }

  /**
   * Detects every layer (about 50 ms) and checks the result against the
   * options.
   *
   * @throws {SandboxUnavailableError} when `mode` is `bwrap` and bubblewrap
   * does not work, or `require` is set and namespaces or cgroups are missing.
   */
  static async detect(options: SandboxOptions = {}): Promise<Sandbox> {
    const { mode = "auto", require = false } = options;
    if (mode === "none") {
      const sandbox = new Sandbox(mode, null, null, null);
      if (require) {
        throw new SandboxUnavailableError(
          "--require-sandbox cannot be combined with --sandbox none",
          sandbox.report,
        );
      }
      return sandbox;
    }
    const [bwrap, cgroups, prlimit] = await Promise.all([
      detectBubblewrap(),
      detectCgroups(
        options.cgroupRoot === undefined ? {} : { root: options.cgroupRoot },
      ),
      detectPrlimit(),
    ]);
    const sandbox = new Sandbox(mode, bwrap, cgroups, prlimit);
    const { missing } = sandbox.report;
    const demanded: [SandboxLayer, string][] = [];
    if (mode === "bwrap" && missing.namespaces) {
      demanded.push(["namespaces", "--sandbox bwrap"]);
    }
    if (require) {
      for (const layer of ["namespaces", "cgroups"] as const) {
        if (missing[layer]) demanded.push([layer, "--require-sandbox"]);
      }
    }
    if (demanded.length > 0) {
      await sandbox.close();
      throw new SandboxUnavailableError(
        demanded.map(([layer, flag]) =>
          `${flag} needs the "${layer}" layer: ${missing[layer]}`
        ).join("; "),
        sandbox.report,
      );
    }
    return sandbox;
  }

  /** A sandbox with no layer at all: `--sandbox none`. */
  static none(): Sandbox {
    return new Sandbox("none", null, null, null);
  }

  /** The layers every step runs under. */
  get layers(): readonly SandboxLayer[] {
    return this.report.layers;
  }

  /**
   * Hands the workdir, with the sources written, to the job's uid. Call it
   * once, before the first step (see `prepareWorkdir` in `bubblewrap.ts`).
   */
  async prepareWorkdir(workdir: string): Promise<void> {
    if (this.#bwrap?.available) {
      await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
    }
  }

  /**
   * Runs one step to its end inside every layer, and measures it. The
   * step's cgroup is removed before this returns, with every process in it.
   *
   * @throws {Error} when the sandbox itself fails (the cgroup cannot be
   * created or joined): a fault of the node, not of the program.
   */
  async run(
    spec: CommandSpec,
    options: SandboxStepOptions,
  ): Promise<SandboxedOutcome> {
    const { limits } = options;
    // Inside the sandbox a missing executable would look like the program
    // failing (exit 127 from prlimit): it is the node's fault, say so.
    await Deno.stat(spec.command).catch((error) => {
      throw new Error(`cannot run ${spec.command}: ${describe(error)}`);
    });
    const cgroups = this.#cgroups?.available ? this.#cgroups : null;
    const cgroup = cgroups
      ? await cgroups.create(
        `${STEP_PREFIX}${Deno.pid}-${crypto.randomUUID()}`,
        {
          memoryBytes: limits.memoryMb * 1024 * 1024,
          pids: limits.processes,
        },
      )
      : null;
    try {
      const command = await this.#command(spec, options, cgroup);
      const outcome = await launch(command, {
        cwd: options.workdir,
        env: this.#bwrap?.available ? {} : options.env,
        stdin: options.stdin,
        input: options.input,
        wallTimeMs: limits.wallTimeMs,
        outputBytes: limits.outputBytes,
        signal: options.signal,
        onOutput: options.onOutput,
        cpu: cgroup
          ? {
            limitMs: limits.cpuTimeMs,
            read: async () => (await cgroup.usage()).cpuTimeMs,
          }
          : undefined,
        killAll: cgroup ? () => cgroup.killAll() : undefined,
      });
      // The failure names the step's cgroup, a random path the program
      // cannot see (its cgroup namespace hides it): a program cannot fake it.
      if (
        cgroup && outcome.exitCode === CGROUP_ENTER_FAILED &&
        outcome.stderr.startsWith(
          `kiln: cannot enter cgroup ${cgroup.paths[0]}/cgroup.procs`,
        )
      ) {
        throw new Error(outcome.stderr.trim());
      }
      const usage = cgroup ? await cgroup.usage() : null;
      return {
        ...this.#withSignal(outcome),
        cpuTimeMs: usage?.cpuTimeMs ?? null,
        memoryKb: usage?.peakMemoryKb ?? null,
        oomKilled: usage?.oomKilled ?? false,
      };
    } finally {
      await cgroup?.remove();
    }
  }

  /**
   * Removes the step cgroups of kiln processes that died (a node killed
   * with SIGKILL cannot remove its own), killing anything left in them.
   * Returns how many were removed. Never throws.
   */
  async sweepStale(): Promise<number> {
    if (!this.#cgroups?.available) return 0;
    const cgroups = this.#cgroups;
    let removed = 0;
    for (const name of await cgroups.children()) {
      const pid = Number(STEP_NAME.exec(name)?.[1]);
      if (!Number.isInteger(pid) || pid === Deno.pid) continue;
      if (await isProcessAlive(pid)) continue;
      await cgroups.open(name).remove();
      removed++;
    }
    return removed;
  }

  /** Removes what detection created (the cgroup parent) when it is empty. Never throws. */
  async close(): Promise<void> {
    if (this.#cgroups?.available) await this.#cgroups.removeParent();
  }

  async #command(
    spec: CommandSpec,
    options: SandboxStepOptions,
    cgroup: JobCgroup | null,
  ): Promise<CommandSpec> {
    const { limits } = options;
    let argv = [spec.command, ...spec.args];
    if (this.#prlimit?.available) {
      argv = [
        ...prlimitPrefix({
          cpuSeconds: Math.max(1, Math.ceil(limits.cpuTimeMs / 1000)),
          fileSizeBytes: limits.fileSizeBytes,
          openFiles: limits.openFiles,
        }, this.#prlimit.path),
        ...argv,
      ];
    }
    if (this.#bwrap?.available) {
      argv = [
        ...bwrapPrefix({
          bwrapPath: this.#bwrap.path,
          setprivPath: this.#bwrap.setprivPath,
          workdir: options.workdir,
          readOnlyPaths: await this.#toolchainRoots(options.executables),
          // tmpfs pages are memory: the memory limit bounds them anyway.
          tmpSizeBytes: limits.memoryMb * 1024 * 1024,
          uid: SANDBOX_UID,
          gid: SANDBOX_UID,
          env: options.env,
        }),
        ...argv,
      ];
    }
    if (cgroup) argv = [...cgroup.enterPrefix(), ...argv];
    const [command, ...args] = argv;
    return { command: command!, args };
  }

  #toolchainRoots(executables: readonly string[]): Promise<string[]> {
    const key = executables.join("\0");
    let roots = this.#roots.get(key);
    if (!roots) {
      roots = toolchainRoots(executables);
      this.#roots.set(key, roots);
    }
    return roots;
  }

  /**
   * bwrap reports a program killed by signal n as exit code 128 + n (it
   * cannot die of the same signal itself): turn that back into the signal.
   */
  #withSignal(outcome: StepOutcome): StepOutcome {
    if (!this.#bwrap?.available || outcome.signal !== null) return outcome;
    const code = outcome.exitCode;
    const name = code !== null && code > 128 ? SIGNAL_NAMES[code - 128] : null;
    return name ? { ...outcome, exitCode: null, signal: name } : outcome;
  }
}

let detected: Promise<Sandbox> | undefined;

/**
 * The strongest sandbox this host has (`Sandbox.detect()` in `auto` mode),
 * detected once per process: what `executeJob` uses when it is given none.
 */
export function defaultSandbox(): Promise<Sandbox> {
  detected ??= Sandbox.detect();
  return detected;
}

function describe(error: unknown): string {
  return error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Error
    ? error.message
    : String(error);
}

/** Step cgroups are named `p<pid of the node>-<uuid>`, so stale ones can be told. */
const STEP_PREFIX = "p";
const STEP_NAME = /^p(\d+)-/;

/** What a job can do when a layer is missing, for the warning. */
const CONSEQUENCES: Record<SandboxLayer, string> = {
  namespaces:
    "programs run as this node's user and can read its files, see its processes and use its network",
  cgroups:
    "memory, processes and job-wide CPU time are not limited, and peak memory is not measured",
  rlimits: "file size and open files are not limited",
};

/** Linux signal numbers (x86-64 and arm64 agree on these). */
const SIGNAL_NAMES: Readonly<Record<number, Deno.Signal>> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  16: "SIGSTKFLT",
  17: "SIGCHLD",
  18: "SIGCONT",
  19: "SIGSTOP",
  20: "SIGTSTP",
  21: "SIGTTIN",
  22: "SIGTTOU",
  23: "SIGURG",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  26: "SIGVTALRM",
  27: "SIGPROF",
  28: "SIGWINCH",
  29: "SIGIO",
  30: "SIGPWR",
  31: "SIGSYS",
};
