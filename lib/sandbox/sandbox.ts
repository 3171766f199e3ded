/**
 * The sandbox a node runs every job step in: the three isolation layers
 * detected once at start, and one step launched under all of them.
 *
 * A step's command is built from the inside out:
 *
 * ```
 * bash (closes inherited descriptors, opens the seccomp filter on fd 3)
 *   → sh (joins the step's cgroup) → bwrap (namespaces, installs the
 *   filter) → setpriv (the job's own uid) → prlimit (rlimits) → the runner's command
 * ```
 *
 * A job's workdir and `/tmp` live on a disk of its own, a size- and
 * file-capped tmpfs ({@linkcode Sandbox.makeWorkdir}, `disk_limit.ts`), and
 * its ptys in a devpts of its own with the job's pty limit (`pty_limit.ts`).
 *
 * Each link `exec`s the next, except bwrap, which stays as the parent of the
 * sandbox and reports the program's exit: 128 + n for signal n, as a shell
 * does, and its `--json-status-fd` says the same. So under bwrap an exit
 * code above 128 is ambiguous: `exit 152` and a death by SIGXCPU look alike.
 * The sandbox never turns such a code into a signal; it reports the code,
 * names the signal it could also mean ({@linkcode SandboxedOutcome}'s
 * `ambiguousSignal`), and leaves the verdict to what kiln itself measured
 * (the cgroup's CPU time and OOM kills, its own timers). Only a SIGKILL that
 * kiln knows of (its own kill, or the cgroup's OOM kill) is reported as the
 * signal. The pid the launcher spawned is bwrap's, so its process-group kill
 * reaches bwrap, `--die-with-parent` takes the sandbox's first process with
 * it, and the pid namespace dies with that process. The cgroup catches the
 * rest, measures CPU time and peak memory, and enforces the memory and
 * process limits.
 *
 * Every job runs as a uid of its own, leased from the node's
 * {@linkcode IdentityPool} when its workdir is prepared and returned,
 * scrubbed, when the workdir is removed (see `identity.ts`). A node that
 * is not root has no uids to give: bubblewrap then makes a user namespace
 * and every job runs as the node's own uid (see `bubblewrap.ts`), and its
 * cgroups come from a delegated cgroup v2 subtree where there is one (see
 * `cgroup.ts`). Every layer is proven by a probe as the node's user.
 *
 * A missing layer is never silent: `auto` logs a warning for each, `bwrap`
 * refuses to start without namespaces, `require` refuses to start without
 * namespaces, cgroups, the disk and pty layers, and without seccomp where
 * the kernel has it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { normalize } from "node:path";
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
  nodeIdentity,
  prepareWorkdir,
  toolchainRoots,
} from "./bubblewrap.ts";
import {
  CGROUP_ENTER_FAILED,
  type CgroupDetection,
  detectCgroups,
  type JobCgroup,
} from "./cgroup.ts";
import {
  possibleCpus,
  spawnStep,
  type StepOutcome,
  superviseStep,
} from "./launcher.ts";
import {
  closeDescriptorsPrefix,
  findBash,
  OPEN_FAILED,
} from "./descriptors.ts";
import {
  detectDiskLimit,
  type DiskFill,
  type DiskLimitDetection,
  JobDisk,
} from "./disk_limit.ts";
import { detectSeccomp, SECCOMP_FD, type SeccompDetection } from "./seccomp.ts";
import {
  detectPtyLimit,
  JobPtys,
  PTY_DIR_PREFIX,
  type PtyLimitDetection,
} from "./pty_limit.ts";
import { IdentityPool, type JobIdentity, type UidRange } from "./identity.ts";
import { isProcessAlive } from "./process_tree.ts";
import { removeTree } from "./remove_tree.ts";
import { WarmPool } from "./prewarm.ts";
import {
  awaitStubReady,
  encodeOrders,
  findPerl,
  isStubFailure,
  prlimitSyscall,
  stubCpuMs,
  warmStubCommand,
} from "./warm_stub.ts";
import {
  detectPrlimit,
  type PrlimitDetection,
  prlimitPrefix,
  type Rlimits,
  rlimitSettings,
} from "./rlimits.ts";
import { removeWorkRoot } from "./work_root.ts";

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
  /**
   * Refuse to start without namespaces, cgroups, the disk and pty layers,
   * or without seccomp on a kernel that has it. @default false
   */
  readonly require?: boolean;
  /** Where to look for cgroups, for tests. @default "/sys/fs/cgroup" */
  readonly cgroupRoot?: string;
  /**
   * Where jobs' uids come from: the node claims a block of this range and
   * gives every job a uid of its own (see `identity.ts`).
   * @default DEFAULT_UID_RANGE (1879048192-2147352575)
   */
  readonly uidRange?: UidRange;
  /**
   * Layers to leave out although they work, reported missing with the
   * reason "left out": for benchmarks that measure what a layer costs.
   * @default []
   */
  readonly without?: readonly ("seccomp" | "disk" | "ptys")[];
  /**
   * How many pre-warmed sandboxes to keep ready per language (and limits)
   * that jobs ask for; 0 keeps none and every step starts cold. Needs the
   * namespace layer and Perl (see `warm_stub.ts`); without them this is 0.
   * @default 0
   */
  readonly prewarm?: number;
}

/**
 * What a job's sandbox is made for, so that it can be made ahead of the
 * job: {@linkcode Sandbox.makeWorkdir} then takes a ready one of the same
 * kind when there is one.
 */
export interface WarmRequest {
  /** The language: one pool per language (and limits). */
  readonly language: string;
  /** Executables the steps run, as in {@linkcode SandboxStepOptions}. */
  readonly executables: readonly string[];
  /** The limits of each step the job will run, in order: compile, then run. */
  readonly steps: readonly StepLimits[];
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
  /**
   * Under bubblewrap, which reports a program killed by signal n as exit
   * code 128 + n: the signal that `exitCode` may also stand for, when it is
   * above 128. Neither is proven: a program can `exit 152` as well as die
   * of SIGXCPU. Null when the code is unambiguous.
   */
  readonly ambiguousSignal: Deno.Signal | null;
  /**
   * How full the job's disk was when the step ended (`statfs` on its
   * tmpfs), or null without the disk layer.
   */
  readonly disk: DiskFill | null;
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
 *   console.log(outcome.stdout); // the job's own uid where bubblewrap works
 * } finally {
 *   await sandbox.removeWorkdir(workdir);
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
  readonly #seccomp: SeccompDetection | null;
  readonly #disk: DiskLimitDetection | null;
  /** The job disks of live workdirs, by workdir. */
  readonly #disks = new Map<string, JobDisk>();
  readonly #ptyLimit: PtyLimitDetection | null;
  /**
   * The ptys of live workdirs' jobs, by workdir: a devpts of their own, or
   * null for none at all; absent, bwrap's own devpts (no limit).
   */
  readonly #ptys = new Map<string, JobPtys | null>();
  /** Toolchain roots per executable list: `realPath` once, not per job. */
  readonly #roots = new Map<string, Promise<string[]>>();
  readonly #identities: IdentityPool | null;
  /** The uid of each prepared workdir's job, until the workdir is removed. */
  readonly #leases = new Map<string, JobIdentity>();
  #removalFailures = 0;
  /** Pre-warmed job sandboxes, when `prewarm` asks for them. */
  #pool: WarmPool<WarmSpec, WarmJob> | null = null;
  /** The steps still waiting in taken warm workdirs, by workdir, in order. */
  readonly #warmSteps = new Map<string, WarmStep[]>();
  /** Taken warm workdirs whose sources are not yet handed to the job's uid. */
  readonly #handOver = new Set<string>();
  /**
   * Steps spawned in each workdir whose cgroup is not known removed: a
   * process of them may still run as the job's uid. At 0 the uid's
   * release skips its walk of `/proc` (see `identity.ts`).
   */
  readonly #unconfined = new Map<string, number>();
  readonly #stepStarts = { warm: 0, cold: 0 };
  /**
   * Jobs between makeWorkdir and removeWorkdir, plus one per makeWorkdir
   * under way: the pool makes sandboxes only while there are fewer than
   * {@linkcode QUIET_BELOW_JOBS}.
   */
  #jobsRunning = 0;
  readonly #jobWorkdirs = new Set<string>();
  /** Calls of removeWorkdir under way, so that close() waits for them. */
  readonly #removals = new Set<Promise<void>>();
  /** Removals of the step cgroups of each job workdir, still under way. */
  readonly #cgroupRemovals = new Map<string, Promise<void>[]>();

  private constructor(
    mode: SandboxMode,
    bwrap: BubblewrapDetection | null,
    cgroups: CgroupDetection | null,
    prlimit: PrlimitDetection | null,
    seccomp: SeccompDetection | null = null,
    disk: DiskLimitDetection | null = null,
    identities: IdentityPool | null = null,
    ptys: PtyLimitDetection | null = null,
  ) {
    this.#identities = identities;
    this.#ptyLimit = ptys;
    this.#bwrap = bwrap;
    this.#cgroups = cgroups;
    this.#prlimit = prlimit;
    this.#seccomp = seccomp;
    this.#disk = disk;
    const layers: SandboxLayer[] = [];
    const backends: Partial<Record<SandboxLayer, string>> = {};
    const missing: Partial<Record<SandboxLayer, string>> = {};
    if (bwrap?.available) {
      layers.push("namespaces");
      backends.namespaces = identities
        ? `bubblewrap ${bwrap.version}, uids ${identities.block.first}-${identities.block.last}`
        : bwrap.rootless
        ? `bubblewrap ${bwrap.version}, rootless (a user namespace as uid ${Deno.uid()})`
        : `bubblewrap ${bwrap.version}`;
    } else if (bwrap) missing.namespaces = bwrap.reason;
    if (cgroups?.available) {
      layers.push("cgroups");
      backends.cgroups = cgroups.delegated === null
        ? `cgroup v${cgroups.version}`
        : `cgroup v${cgroups.version}, delegated ${cgroups.delegated}`;
    } else if (cgroups) missing.cgroups = cgroups.reason;
    if (prlimit?.available) {
      layers.push("rlimits");
      backends.rlimits = "prlimit";
    } else if (prlimit) missing.rlimits = prlimit.reason;
    if (seccomp?.available) {
      layers.push("seccomp");
      backends.seccomp = `cBPF via bubblewrap (${Deno.build.arch})`;
    } else if (seccomp) missing.seccomp = seccomp.reason;
    if (disk?.available) {
      layers.push("disk");
      backends.disk = "tmpfs per job";
    } else if (disk) missing.disk = disk.reason;
    if (ptys?.available) {
      layers.push("ptys");
      backends.ptys = "devpts per job";
    } else if (ptys) missing.ptys = ptys.reason;
    if (mode === "none") {
      missing.namespaces =
        missing.cgroups =
        missing.rlimits =
        missing.seccomp =
        missing.disk =
        missing.ptys =
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
    const [bwrapFound, cgroups, prlimit, disk, ptys, bash] = await Promise.all([
      detectBubblewrap(),
      detectCgroups(
        options.cgroupRoot === undefined ? {} : { root: options.cgroupRoot },
      ),
      detectPrlimit(),
      detectDiskLimit(),
      detectPtyLimit(),
      findBash(),
    ]);
    let bwrap = bwrapFound;
    let identities: IdentityPool | null = null;
    // A rootless node has one uid, its own, for every job.
    if (bwrap.available && !bwrap.rootless) {
      try {
        identities = await IdentityPool.claim({
          setprivPath: bwrap.setprivPath,
          ...options.uidRange ? { range: options.uidRange } : {},
        });
      } catch (error) {
        // No uid of its own per job: the namespace layer is not given.
        bwrap = {
          available: false,
          reason: `no uids for jobs: ${describe(error)}`,
        };
      }
    }
    const seccomp = await detectSeccomp({
      bwrapPath: bwrap.available ? bwrap.path : null,
      ...bwrap.available
        ? { setprivPath: bwrap.setprivPath, rootless: bwrap.rootless }
        : {},
      bashPath: bash,
    });
    const without = new Set(options.without ?? []);
    const leftOut = { available: false, reason: "left out" } as const;
    const sandbox = new Sandbox(
      mode,
      bwrap,
      cgroups,
      prlimit,
      without.has("seccomp") ? { ...leftOut, kernelSupports: false } : seccomp,
      without.has("disk") ? leftOut : disk,
      identities,
      without.has("ptys")
        ? leftOut
        : bwrap.available || !ptys.available
        ? ptys
        : {
          available: false,
          reason:
            "a devpts per job is bound at /dev/pts by the namespace layer, which is missing",
        },
    );
    const { missing } = sandbox.report;
    const demanded: [SandboxLayer, string][] = [];
    if (mode === "bwrap" && missing.namespaces) {
      demanded.push(["namespaces", "--sandbox bwrap"]);
    }
    if (require) {
      for (
        const layer of ["namespaces", "cgroups", "disk", "ptys"] as const
      ) {
        if (missing[layer]) demanded.push([layer, "--require-sandbox"]);
      }
      // Where the kernel cannot filter syscalls, there is nothing to demand.
      if (!seccomp.available && seccomp.kernelSupports) {
        demanded.push(["seccomp", "--require-sandbox"]);
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
    await sandbox.#startPrewarm(options.prewarm ?? 0);
    return sandbox;
  }

  async #startPrewarm(perKey: number): Promise<void> {
    if (!Number.isSafeInteger(perKey) || perKey < 0) {
      throw new RangeError(
        `Cannot pre-warm sandboxes: ${perKey} is not a whole number >= 0`,
      );
    }
    if (perKey === 0) return;
    const perl = await findPerl();
    if (!this.#bwrap?.available || perl === null) {
      warnOnce(
        `sandboxes are not pre-warmed: ${
          perl === null
            ? "no perl for the waiting stub"
            : "the namespace layer is missing"
        }; every step starts cold`,
      );
      return;
    }
    this.#pool = new WarmPool<WarmSpec, WarmJob>({
      perKey,
      make: (spec) => this.#makeWarmJob(spec, perl),
      destroy: (job) => this.#destroyWarmJob(job),
      usable: (job) => job.steps.every((step) => !step.exited),
      quiet: () => this.#jobsRunning < QUIET_BELOW_JOBS,
    });
  }

  /**
   * How many steps this sandbox started in a pre-warmed chain and how many
   * cold, for metrics and tests. Do not change it.
   */
  get stepStarts(): Readonly<{ warm: number; cold: number }> {
    return this.#stepStarts;
  }

  /** How many pre-warmed job sandboxes wait, ready; 0 when none are kept. */
  get warmSandboxes(): number {
    return this.#pool?.size ?? 0;
  }

  /**
   * What the pre-warmed sandboxes waiting in the pool hold: their uids
   * (their stubs are the only processes of the node's uids that no job owns
   * yet) and their mount points (a job disk and a devpts each, where those
   * layers work). For tests and operators telling them from leftovers.
   */
  warmHoldings(): { uids: number[]; mounts: string[] } {
    const uids: number[] = [];
    const mounts: string[] = [];
    for (const job of this.#pool?.ready() ?? []) {
      const lease = this.#leases.get(job.workdir);
      if (lease) uids.push(lease.uid);
      const disk = this.#disks.get(job.workdir);
      if (disk) mounts.push(disk.mountPoint);
      const ptys = this.#ptys.get(job.workdir);
      if (ptys) mounts.push(ptys.mountPoint);
    }
    return { uids, mounts };
  }

  /**
   * Resolves when no pre-warmed sandbox is being made or destroyed: for
   * tests and benchmarks that need a quiet pool.
   */
  async warmSettled(): Promise<void> {
    await this.#pool?.settled();
  }

  /**
   * Resolves when no job's cleanup is under way (a job's result is told
   * before it, see `executeJob`) and the pool is settled: for tests that
   * look for what a job left behind, and for benchmarks.
   */
  async settled(): Promise<void> {
    do {
      await Promise.allSettled(this.#removals);
      // A job's end may have started a refill, whose failure removes.
      await this.#pool?.settled();
    } while (this.#removals.size > 0);
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
   * Step cgroups this sandbox could not remove (each logged at warn with
   * its path), for metrics; 0 without cgroups.
   */
  get leakedCgroups(): number {
    return this.#cgroups?.available ? this.#cgroups.leaked : 0;
  }

  /**
   * Makes a job's workdir in `root`: on its own disk of `limits` where the
   * disk layer works (a tmpfs on `<root>/kiln-job-<random>`, the workdir
   * its `work` directory, its `tmp` the job's `/tmp`), else a plain
   * directory `<root>/kiln-job-<random>`. Write the sources into it, then
   * call {@linkcode Sandbox.prepareWorkdir}; remove it with
   * {@linkcode Sandbox.removeWorkdir}.
   *
   * The job's ptys are settled here too: where the pty layer works, a
   * devpts of at most `limits.ptys` mounted on `<root>/kiln-pty-<random>`
   * (see `pty_limit.ts`); a limit of 0, no pty at all wherever the
   * namespace layer works.
   */
  async makeWorkdir(
    root: string,
    limits: Pick<JobLimits, "diskMb" | "diskFiles" | "ptys">,
    warm?: WarmRequest,
  ): Promise<string> {
    // Counted before the pool is asked: a job that runs is no time to warm.
    this.#jobsRunning++;
    try {
      const workdir = await this.#takeWorkdir(root, limits, warm);
      this.#jobWorkdirs.add(workdir);
      this.#cgroupRemovals.set(workdir, []);
      return workdir;
    } catch (error) {
      this.#jobEnded();
      throw error;
    }
  }

  async #takeWorkdir(
    root: string,
    limits: Pick<JobLimits, "diskMb" | "diskFiles" | "ptys">,
    warm: WarmRequest | undefined,
  ): Promise<string> {
    if (warm && this.#pool) {
      const spec = { root, limits, warm };
      const job = this.#pool.take(warmKey(spec), spec);
      if (job) {
        this.#warmSteps.set(job.workdir, [...job.steps]);
        this.#handOver.add(job.workdir);
        return job.workdir;
      }
    }
    return await this.#makeColdWorkdir(root, limits);
  }

  /** A job's workdir is gone: the pool may make up what jobs took. */
  #jobEnded(): void {
    this.#jobsRunning--;
    this.#pool?.nudge();
  }

  async #makeColdWorkdir(
    root: string,
    limits: Pick<JobLimits, "diskMb" | "diskFiles" | "ptys">,
  ): Promise<string> {
    // Synchronous calls on the job's path (here and below): each is a few
    // microseconds in the kernel, where an async one costs a hop to
    // another thread and back.
    const dir = Deno.makeTempDirSync({ prefix: "kiln-job-", dir: root });
    let workdir = dir;
    if (this.#disk?.available) {
      try {
        const disk = await JobDisk.mount(dir, {
          sizeBytes: limits.diskMb * 1024 * 1024,
          files: limits.diskFiles,
        });
        this.#disks.set(disk.workdir, disk);
        workdir = disk.workdir;
      } catch (error) {
        await Deno.remove(dir).catch(() => {});
        throw error;
      }
    }
    try {
      await this.#makePtys(root, workdir, limits.ptys);
    } catch (error) {
      await this.#removeFiles(workdir, undefined);
      throw error;
    }
    return workdir;
  }

  async #makePtys(root: string, workdir: string, limit: number) {
    // Unsandboxed, a job uses the host's /dev/pts: nothing to bind.
    if (!this.#bwrap?.available) return;
    // No devpts for none: the kernel reads max=0 as no limit.
    if (limit === 0) this.#ptys.set(workdir, null);
    if (limit === 0 || !this.#ptyLimit?.available) return;
    const dir = Deno.makeTempDirSync({ prefix: PTY_DIR_PREFIX, dir: root });
    try {
      this.#ptys.set(workdir, await JobPtys.mount(dir, limit));
    } catch (error) {
      await Deno.remove(dir).catch(() => {});
      throw error;
    }
  }

  /**
   * Leases the job a uid of its own and hands it the workdir, with the
   * sources written. Call it once per job, before the first step (see
   * `prepareWorkdir` in `bubblewrap.ts`); every step run in this workdir
   * runs as that uid, until {@linkcode Sandbox.removeWorkdir} returns it.
   * On a node that is not root the uid is the node's own.
   *
   * @throws {Error} when no uid is left (every uid of the node's block is
   * leased or quarantined), or the workdir cannot be handed over.
   */
  async prepareWorkdir(workdir: string): Promise<void> {
    if (!this.#bwrap?.available) return;
    const warmLease = this.#leases.get(workdir);
    if (warmLease && this.#handOver.delete(workdir)) {
      // Leased when it was warmed: only the new sources change hands.
      await prepareWorkdir(workdir, warmLease.uid, warmLease.gid);
      return;
    }
    if (this.#leases.has(workdir)) {
      throw new Error(`workdir ${workdir} is already prepared for a job`);
    }
    // Rootless, every job runs as the node's uid in a user namespace.
    const identity = this.#bwrap.rootless
      ? nodeIdentity()
      : await this.#identities?.acquire();
    if (!identity) return;
    this.#leases.set(workdir, identity);
    await prepareWorkdir(workdir, identity.uid, identity.gid);
  }

  /**
   * The uid and gid the steps in `workdir` run as, or null without the
   * namespace layer (or before {@linkcode Sandbox.prepareWorkdir}).
   */
  identityOf(workdir: string): JobIdentity | null {
    return this.#leases.get(workdir) ?? null;
  }

  /**
   * The block of uids this node's jobs run as, or null without the
   * namespace layer.
   */
  get uidBlock(): UidRange | null {
    return this.#identities?.block ?? null;
  }

  /**
   * Removes a job's workdir and whatever its program left there, however
   * deep, wide or `chmod`-ed, never following a symlink: emptied as the
   * job's uid where jobs run as one, then removed (see `remove_tree.ts`).
   * Call it after the last step, when no process of the job is left. Never
   * throws: a failure is logged with the path and counted in
   * {@linkcode Sandbox.removalFailures}; it never fails the node. Then
   * the job's uid is scrubbed and returned to the pool.
   */
  async removeWorkdir(workdir: string): Promise<void> {
    const removal = this.#removeWorkdir(workdir);
    this.#removals.add(removal);
    try {
      await removal;
    } finally {
      this.#removals.delete(removal);
      if (this.#jobWorkdirs.delete(workdir)) this.#jobEnded();
    }
  }

  async #removeWorkdir(workdir: string): Promise<void> {
    // Every process of the steps is gone once their cgroups are.
    await Promise.all(this.#cgroupRemovals.get(workdir) ?? []);
    this.#cgroupRemovals.delete(workdir);
    // Warm steps the job did not use (its compile step failed) go first.
    const unused = this.#warmSteps.get(workdir) ?? [];
    this.#warmSteps.delete(workdir);
    this.#handOver.delete(workdir);
    const removed = await Promise.all(
      unused.map((step) => destroyWarmStep(step)),
    );
    for (const gone of removed) if (gone) this.#confined(workdir);
    const identity = this.#leases.get(workdir);
    await this.#removeFiles(workdir, identity);
    await this.#removePtys(workdir);
    // Every step ran in a cgroup that the kernel let us remove, so empty:
    // nothing of the job is left to look for (the removal's own process
    // as the uid has been waited for).
    const processesGone = (this.#unconfined.get(workdir) ?? 0) === 0;
    this.#unconfined.delete(workdir);
    if (identity) {
      this.#leases.delete(workdir);
      // The steps' cgroups are gone and the removal has ended: no process
      // of the job is left, and its uid can be scrubbed for the next job.
      await this.#identities?.release(identity, {
        keyringsUntouched: this.layers.includes("seccomp"),
        processesGone,
      });
    }
  }

  async #removeFiles(
    workdir: string,
    identity: JobIdentity | undefined,
  ): Promise<void> {
    const disk = this.#disks.get(workdir);
    if (disk) {
      // Unmounting frees every file at once: no walk, however many.
      try {
        await disk.unmount();
        this.#disks.delete(workdir);
        Deno.removeSync(disk.mountPoint);
      } catch (error) {
        this.#removalFailures++;
        log.warn("cannot remove the job disk {path}: {reason}", {
          path: disk.mountPoint,
          reason: describe(error),
        });
      }
      return;
    }
    // Without a lease no step ran: only kiln wrote the tree.
    const outcome = await removeTree(
      workdir,
      this.#bwrap?.available && !this.#bwrap.rootless && identity
        ? {
          asUser: {
            uid: identity.uid,
            gid: identity.gid,
            setprivPath: this.#bwrap.setprivPath,
          },
        }
        : {},
    );
    if (!outcome.ok) {
      this.#removalFailures++;
      log.warn("cannot remove the job workdir {workdir}: {reason}", {
        workdir,
        reason: outcome.reason,
      });
    }
  }

  /** Unmounts the job's devpts (lazily: a pty still held cannot keep it). */
  async #removePtys(workdir: string): Promise<void> {
    const ptys = this.#ptys.get(workdir);
    this.#ptys.delete(workdir);
    if (!ptys) return;
    try {
      await ptys.unmount();
      Deno.removeSync(ptys.mountPoint);
    } catch (error) {
      // Left for the sweep of the next node that starts here.
      this.#removalFailures++;
      log.warn("cannot remove the job's devpts {path}: {reason}", {
        path: ptys.mountPoint,
        reason: describe(error),
      });
    }
  }

  /** How many workdirs {@linkcode Sandbox.removeWorkdir} failed to remove. */
  get removalFailures(): number {
    return this.#removalFailures;
  }

  /**
   * Runs one step to its end inside every layer, and measures it. Every
   * process of the step has been sent SIGKILL when this returns; its cgroup
   * is removed, with the last of them, before this returns, or, in a
   * workdir made by {@linkcode Sandbox.makeWorkdir}, before
   * {@linkcode Sandbox.removeWorkdir} returns.
   *
   * @throws {Error} when the sandbox itself fails (the cgroup cannot be
   * created or joined): a fault of the node, not of the program.
   */
  async run(
    spec: CommandSpec,
    options: SandboxStepOptions,
  ): Promise<SandboxedOutcome> {
    const { limits } = options;
    checkCommand(spec.command, options.workdir);
    const warm = this.#warmStepFor(options.workdir, limits);
    // A warm step was counted when it was spawned.
    if (!warm) this.#unconfine(options.workdir);
    const cgroups = this.#cgroups?.available ? this.#cgroups : null;
    const cgroup = warm ? warm.cgroup : cgroups
      ? await cgroups.create(
        `${STEP_PREFIX}${Deno.pid}-${crypto.randomUUID()}`,
        {
          memoryBytes: limits.memoryMb * 1024 * 1024,
          pids: limits.processes,
        },
      )
      : null;
    try {
      const noStdin = options.stdin === undefined &&
        options.input === undefined;
      /** What the warm chain used before the program: not the program's. */
      let cpuBeforeMs = 0;
      let nonce: string | undefined;
      let preamble: Uint8Array | undefined;
      let child: Deno.ChildProcess;
      if (warm) {
        nonce = crypto.randomUUID();
        // The stub sets the rlimits itself where it can: one exec less.
        const direct = prlimitSyscall() !== null;
        preamble = encodeOrders({
          nonce,
          stdin: noStdin ? "null" : "pipe",
          env: options.env,
          rlimits: direct && this.#prlimit?.available
            ? rlimitSettings(this.#rlimits(limits))
            : [],
          argv: [
            ...direct ? [] : this.#rlimitPrefix(limits),
            spec.command,
            ...spec.args,
          ],
        });
        cpuBeforeMs = warm.chainCpuMs;
        child = warm.child;
        this.#stepStarts.warm++;
      } else {
        child = await spawnStep(
          await this.#command(spec, options, cgroup),
          {
            cwd: options.workdir,
            env: this.#bwrap?.available ? {} : options.env,
            stdin: noStdin ? "null" : "piped",
          },
        );
        this.#stepStarts.cold++;
      }
      const outcome = await superviseStep(child, {
        preamble,
        stdin: options.stdin,
        input: options.input,
        wallTimeMs: limits.wallTimeMs,
        outputBytes: limits.outputBytes,
        signal: options.signal,
        onOutput: options.onOutput,
        cpu: cgroup
          ? {
            limitMs: limits.cpuTimeMs,
            cpus: possibleCpus(),
            read: async () => {
              const used = (await cgroup.usage()).cpuTimeMs;
              return used === null ? null : used - cpuBeforeMs;
            },
          }
          : undefined,
        // In bwrap's pid namespace, the kernel kills whatever is left once
        // the namespace's init has exited, forks under way included: one
        // signal does, and the cgroup's removal waits for them to be gone.
        killAll: cgroup
          ? this.#bwrap?.available
            ? () => Promise.resolve(cgroup.signalAll())
            : () => cgroup.killAll()
          : undefined,
      });
      if (nonce !== undefined && isStubFailure(outcome, nonce)) {
        throw new Error(outcome.stderr.trim());
      }
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
      // Likewise the filter file lives in a private directory of kiln's.
      if (
        this.#seccomp?.available && outcome.exitCode === OPEN_FAILED &&
        outcome.stderr.includes(`kiln: cannot open ${this.#seccomp.path}`)
      ) {
        throw new Error(outcome.stderr.trim());
      }
      const usage = cgroup ? await cgroup.usage() : null;
      const oomKilled = usage?.oomKilled ?? false;
      return {
        ...this.#exitOf(outcome, oomKilled),
        cpuTimeMs: usage?.cpuTimeMs == null
          ? null
          : Math.max(0, usage.cpuTimeMs - cpuBeforeMs),
        memoryKb: usage?.peakMemoryKb ?? null,
        oomKilled,
        disk: this.#disks.get(options.workdir)?.fill() ?? null,
      };
    } finally {
      if (cgroup) await this.#removeStepCgroup(options.workdir, cgroup);
    }
  }

  /** A step is spawned in `workdir`: its processes may run as the job's uid. */
  #unconfine(workdir: string): void {
    this.#unconfined.set(workdir, (this.#unconfined.get(workdir) ?? 0) + 1);
  }

  /** A step of `workdir` is over: its cgroup was removed, so it was empty. */
  #confined(workdir: string): void {
    const left = (this.#unconfined.get(workdir) ?? 0) - 1;
    if (left > 0) this.#unconfined.set(workdir, left);
    else this.#unconfined.delete(workdir);
  }

  /**
   * Removes a step's cgroup, which waits for its last processes to finish
   * exiting (the namespaces' teardown takes milliseconds): for a job's
   * workdir in the background, so that the step's outcome does not wait
   * ({@linkcode Sandbox.removeWorkdir} waits for it), else at once.
   */
  #removeStepCgroup(workdir: string, cgroup: JobCgroup): Promise<void> {
    const removed = cgroup.remove().then((gone) => {
      if (gone) this.#confined(workdir);
    });
    const pending = this.#cgroupRemovals.get(workdir);
    if (!pending) return removed;
    pending.push(removed);
    return Promise.resolve();
  }

  /**
   * The next warm step of a taken warm workdir, when it was made for these
   * limits and still waits; else undefined (the step starts cold), and a
   * step that cannot be used is destroyed.
   */
  #warmStepFor(workdir: string, limits: StepLimits): WarmStep | undefined {
    const step = this.#warmSteps.get(workdir)?.shift();
    if (!step) return undefined;
    if (
      step.exited || step.limits.memoryMb !== limits.memoryMb ||
      step.limits.processes !== limits.processes
    ) {
      destroyWarmStep(step);
      return undefined;
    }
    return step;
  }

  /** One job's sandbox, made ahead: workdir, uid and a waiting chain per step. */
  async #makeWarmJob(spec: WarmSpec, perl: string): Promise<WarmJob> {
    const workdir = await this.#makeColdWorkdir(spec.root, spec.limits);
    const steps: WarmStep[] = [];
    try {
      await this.prepareWorkdir(workdir);
      for (const limits of spec.warm.steps) {
        steps.push(
          await this.#spawnWarmStep(
            workdir,
            limits,
            spec.warm.executables,
            perl,
          ),
        );
      }
      return { workdir, steps };
    } catch (error) {
      await this.#destroyWarmJob({ workdir, steps });
      throw error;
    }
  }

  async #destroyWarmJob(job: WarmJob): Promise<void> {
    const removed = await Promise.all(
      job.steps.map((step) => destroyWarmStep(step)),
    );
    for (const gone of removed) if (gone) this.#confined(job.workdir);
    await this.#removeWorkdir(job.workdir);
  }

  /**
   * The whole chain of one step, started with the stub of `warm_stub.ts`
   * where the program goes: it waits in its cgroup, namespaces and filter,
   * as the job's uid, for {@linkcode Sandbox.run} to tell it what to run.
   */
  async #spawnWarmStep(
    workdir: string,
    limits: StepLimits,
    executables: readonly string[],
    perl: string,
  ): Promise<WarmStep> {
    const cgroup = this.#cgroups?.available
      ? await this.#cgroups.create(
        `${STEP_PREFIX}${Deno.pid}-${crypto.randomUUID()}`,
        {
          memoryBytes: limits.memoryMb * 1024 * 1024,
          pids: limits.processes,
        },
      )
      : null;
    this.#unconfine(workdir);
    try {
      const [command, ...args] = warmStubCommand(perl);
      const child = await spawnStep(
        await this.#chain([command!, ...args], {
          workdir,
          // The program's environment comes with its orders.
          env: {},
          limits,
          executables,
        }, cgroup),
        { cwd: workdir, env: {}, stdin: "piped" },
      );
      const step: WarmStep = {
        child,
        cgroup,
        limits,
        chainCpuMs: 0,
        exited: false,
      };
      child.status.then(() => step.exited = true);
      // Made only once it waits: a chain still starting would compete with
      // the job that takes it, and charge it with the chain's CPU.
      try {
        await awaitStubReady(child.stdout, WARM_READY_TIMEOUT_MS);
        // The chain's start is not the program's, except what the stub's
        // own process used: the CPU rlimit counts that for the program.
        // Its peak memory is not the program's either.
        if (cgroup) {
          const [usage, stub] = await Promise.all([
            cgroup.usage(),
            cgroup.processes().then(stubCpuMs),
          ]);
          step.chainCpuMs = Math.max(0, (usage.cpuTimeMs ?? 0) - stub);
          await cgroup.resetPeak();
        }
      } catch (error) {
        await destroyWarmStep(step);
        throw error;
      }
      return step;
    } catch (error) {
      if (await cgroup?.remove()) this.#confined(workdir);
      throw error;
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

  /**
   * Removes what detection created (the cgroup parent, when it is empty)
   * and gives the node's block of uids back. Call it when no job runs.
   * Then this process's work root is removed, with its tmpfs, if nothing
   * is left in it (see `work_root.ts`). Never throws.
   */
  async close(): Promise<void> {
    // Jobs told their results before their cleanup ended (see executeJob).
    await this.settled();
    await this.#pool?.close();
    // Its waiting sandboxes' workdirs may have been the last in the work
    // root, which the node tried to remove before they were gone.
    await removeWorkRoot();
    if (this.#cgroups?.available) await this.#cgroups.removeParent();
    await this.#identities?.close();
  }

  async #command(
    spec: CommandSpec,
    options: Pick<
      SandboxStepOptions,
      "workdir" | "env" | "limits" | "executables"
    >,
    cgroup: JobCgroup | null,
  ): Promise<CommandSpec> {
    return await this.#chain(
      [...this.#rlimitPrefix(options.limits), spec.command, ...spec.args],
      options,
      cgroup,
    );
  }

  /** prlimit with the step's rlimits, to put before its command; none without it. */
  #rlimitPrefix(limits: StepLimits): string[] {
    if (!this.#prlimit?.available) return [];
    return prlimitPrefix(this.#rlimits(limits), this.#prlimit.path);
  }

  /** The rlimits of a step: CPU in whole seconds (see `rlimits.ts`). */
  #rlimits(limits: StepLimits): Rlimits {
    return {
      cpuSeconds: Math.max(1, Math.ceil(limits.cpuTimeMs / 1000)),
      fileSizeBytes: limits.fileSizeBytes,
      openFiles: limits.openFiles,
    };
  }

  /** `inner` under every layer that wraps a step: bwrap, then the first link. */
  async #chain(
    inner: readonly string[],
    options: Pick<
      SandboxStepOptions,
      "workdir" | "env" | "limits" | "executables"
    >,
    cgroup: JobCgroup | null,
  ): Promise<CommandSpec> {
    const { limits } = options;
    let argv = [...inner];
    const disk = this.#disks.get(options.workdir);
    const ptys = this.#ptys.get(options.workdir);
    const seccomp = this.#seccomp?.available ? this.#seccomp : null;
    if (this.#bwrap?.available) {
      const identity = this.#leases.get(options.workdir);
      if (!identity) {
        throw new Error(
          `workdir ${options.workdir} was not prepared by this sandbox: the job has no uid`,
        );
      }
      argv = [
        ...bwrapPrefix({
          bwrapPath: this.#bwrap.path,
          setprivPath: this.#bwrap.setprivPath,
          workdir: options.workdir,
          readOnlyPaths: await this.#toolchainRoots(options.executables),
          // tmpfs pages are memory: the memory limit bounds them anyway.
          tmpSizeBytes: limits.memoryMb * 1024 * 1024,
          uid: identity.uid,
          gid: identity.gid,
          env: options.env,
          tmpDir: disk?.tmpDir,
          ptsDir: ptys?.mountPoint,
          noPtys: ptys === null,
          seccompFd: seccomp ? SECCOMP_FD : undefined,
          rootless: this.#bwrap.rootless,
        }),
        ...argv,
      ];
    }
    // First of all: no descriptor kiln inherited reaches the job. The same
    // bash joins the cgroup, saving the exec of a second shell.
    const bash = await findBash();
    if (bash) {
      argv = [
        ...closeDescriptorsPrefix(bash, {
          open: seccomp ? { fd: SECCOMP_FD, path: seccomp.path } : undefined,
          enterCgroups: cgroup?.paths.map((path) => `${path}/cgroup.procs`),
        }),
        ...argv,
      ];
    } else {
      if (cgroup) argv = [...cgroup.enterPrefix(), ...argv];
      warnOnce("inherited descriptors above 2 stay open in jobs: no bash");
    }
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
   * What the exit code means. Without bwrap it is the real wait status.
   * bwrap reports a program killed by signal n as exit code 128 + n (it
   * cannot die of the same signal itself), which a program can also choose
   * to exit with: the code stays the code, and the signal it may mean is
   * named as ambiguous. Only kiln's own evidence turns 137 into SIGKILL: the
   * launcher killed the step (a limit or a cancel), or the cgroup counted an
   * OOM kill.
   */
  #exitOf(
    outcome: StepOutcome,
    oomKilled: boolean,
  ): StepOutcome & Pick<SandboxedOutcome, "ambiguousSignal"> {
    const unambiguous = { ...outcome, ambiguousSignal: null };
    if (!this.#bwrap?.available || outcome.signal !== null) return unambiguous;
    const code = outcome.exitCode;
    const name = code !== null && code > 128
      ? SIGNAL_NAMES[code - 128]
      : undefined;
    if (name === undefined) return unambiguous;
    if (name === "SIGKILL" && (outcome.ending !== "exited" || oomKilled)) {
      return {
        ...outcome,
        exitCode: null,
        signal: name,
        ambiguousSignal: null,
      };
    }
    return { ...outcome, ambiguousSignal: name };
  }
}

const log = getLogger(["kiln", "sandbox"]);

const warned = new Set<string>();
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  log.warn(message);
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

/**
 * Inside the sandbox a missing executable would look like the program
 * failing (exit 127 from prlimit): it is the node's fault, say so. A command
 * in the workdir is the job's own file (`main` of a compiled program): it
 * is looked at with `lstat` from the workdir down, never followed, so that
 * a symlink the job planted cannot make root tell it whether a host path
 * exists.
 */
function checkCommand(command: string, workdir: string): void {
  // Synchronous: a stat or two, cheaper than the hop of an async one.
  const statOf = (stat: () => Deno.FileInfo) => {
    try {
      return stat();
    } catch (error) {
      throw new Error(`cannot run ${command}: ${describe(error)}`);
    }
  };
  const work = normalize(workdir).replace(/(.)\/+$/, "$1");
  const path = normalize(command);
  if (!path.startsWith(`${work}/`)) {
    statOf(() => Deno.statSync(command));
    return;
  }
  let at = work;
  for (const part of path.slice(work.length + 1).split("/")) {
    at = `${at}/${part}`;
    if (statOf(() => Deno.lstatSync(at)).isSymlink) {
      throw new Error(`cannot run ${command}: it is a symlink the job made`);
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Error
    ? error.message
    : String(error);
}

/** What a pool's sandboxes are made from: the job that asked for one. */
interface WarmSpec {
  readonly root: string;
  readonly limits: Pick<JobLimits, "diskMb" | "diskFiles" | "ptys">;
  readonly warm: WarmRequest;
}

/** A job's sandbox made ahead: its workdir (disk, ptys, uid) and a waiting chain per step. */
interface WarmJob {
  readonly workdir: string;
  readonly steps: readonly WarmStep[];
}

/** One step's chain, spawned with the stub waiting for its orders. */
interface WarmStep {
  readonly child: Deno.ChildProcess;
  readonly cgroup: JobCgroup | null;
  /** The limits baked in when it was made: its cgroup's. */
  readonly limits: Pick<StepLimits, "memoryMb" | "processes">;
  /**
   * CPU time its chain used to start, less the stub's own: what the step's
   * cgroup counted that is not the program's. Final once the stub waits.
   */
  chainCpuMs: number;
  /** Whether the chain has exited (it died waiting, or was destroyed). */
  exited: boolean;
}

/**
 * The pool a job's sandbox comes from: everything baked into a warm
 * sandbox when it is made (the other limits are applied when it is used).
 */
function warmKey({ limits, warm }: WarmSpec): string {
  return JSON.stringify([
    warm.language,
    warm.executables,
    limits.diskMb,
    limits.diskFiles,
    limits.ptys,
    warm.steps.map((step) => [step.memoryMb, step.processes]),
  ]);
}

/**
 * Ends a warm step that will not be used: its process group and cgroup
 * killed, its pipes closed, its exit awaited. Whether its cgroup was
 * removed (so nothing of it is left). Never throws.
 */
async function destroyWarmStep(step: WarmStep): Promise<boolean> {
  const { child } = step;
  try {
    // setsid made the spawned pid the group's leader (see launcher.ts).
    Deno.kill(-child.pid, "SIGKILL");
  } catch {
    // Gone already.
  }
  const removed = await step.cgroup?.remove() ?? false;
  await Promise.allSettled([
    child.stdin.close(),
    child.stdout.cancel(),
    child.stderr.cancel(),
  ]);
  await child.status;
  step.exited = true;
  return removed;
}

/** How long a pre-warmed chain may take to start: far more than it needs. */
const WARM_READY_TIMEOUT_MS = 30_000;

/** Step cgroups are named `p<pid of the node>-<uuid>`, so stale ones can be told. */
const STEP_PREFIX = "p";

/**
 * The pool makes sandboxes only while fewer jobs than this run: none on a
 * machine of up to 7 cores, one in four cores' worth beyond. Making one
 * takes more than a core in bursts (kiln's spawn, bwrap's namespaces and
 * mounts, the kernel's work), so even one job running beside it on 2
 * cores was slowed by more than a warm start saves.
 */
const QUIET_BELOW_JOBS = Math.max(
  1,
  Math.floor((navigator.hardwareConcurrency || 1) / 4),
);
const STEP_NAME = /^p(\d+)-/;

/** What a job can do when a layer is missing, for the warning. */
const CONSEQUENCES: Record<SandboxLayer, string> = {
  namespaces:
    "programs run as this node's user and can read its files, see its processes and use its network",
  cgroups:
    "memory, processes and job-wide CPU time are not limited, and peak memory is not measured",
  rlimits: "file size and open files are not limited",
  seccomp:
    "programs may create user namespaces, mount, use keyrings, bpf, ptrace and io_uring: every door of the kernel stays open",
  disk:
    "the disk a job may fill is not limited (workdir and /tmp; only the file size limit holds)",
  ptys:
    "a job may hold every pty the host's sandboxes share (kernel.pty.max - kernel.pty.reserve), leaving none to other jobs; a pty limit of 0 still gives it none",
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
