/**
 * One cgroup per job, on cgroup v2 (the unified hierarchy) or v1 (one
 * hierarchy per controller): a memory limit with no swap on top, a limit on
 * the number of processes, and peak memory, CPU time and OOM kills read back
 * afterwards. The cgroup also finds every process of a job, even one that
 * double-forked away from its parent and its process group, so
 * {@linkcode JobCgroup.killAll} reaches what `killProcessTree` cannot.
 *
 * `Deno.Command` cannot place a child into a cgroup before it execs, so the
 * child enters it itself: {@linkcode JobCgroup.enterPrefix} is a `/bin/sh`
 * prefix that writes its own pid into the job's `cgroup.procs` file(s) and
 * then execs the command with its arguments unchanged. The pid the caller
 * spawned stays the program's pid (and its process group's leader).
 *
 * Wiring, in order: `detectCgroups()` once at start (report the reason when
 * it is unavailable); per job `backend.create(jobId, limits)`, run the step
 * as `[...cgroup.enterPrefix(), ...rest]` (the prefix goes first, outside
 * `bwrap`, because inside the sandbox `/sys/fs/cgroup` is out of reach),
 * `usage()` after the step, `remove()` at the end.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CommandSpec } from "../runners/runner.ts";

const log = getLogger(["kiln", "sandbox"]);

/** Where the cgroup filesystem is normally mounted. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";

/** The cgroup (below the root of each hierarchy) that holds every job's cgroup. */
export const DEFAULT_CGROUP_PARENT = "kiln";

/**
 * Exit code of the {@linkcode JobCgroup.enterPrefix} shell when it cannot
 * join the cgroup (the command never ran); it also writes a line starting
 * with `kiln: cannot enter cgroup` to stderr. 125 follows `env` and `nice`.
 */
export const CGROUP_ENTER_FAILED = 125;

/** Limits of one job's cgroup; a missing field means no limit. */
export interface CgroupLimits {
  /**
   * Memory the job's processes may use together, in bytes (anonymous memory
   * and page cache). Swap is never granted on top of it. Beyond it the
   * kernel's OOM killer sends SIGKILL.
   */
  readonly memoryBytes?: number | undefined;
  /** Processes (and threads) alive at once; `fork` fails with EAGAIN beyond it. */
  readonly pids?: number | undefined;
}

/** What a job's cgroup measured. */
export interface CgroupUsage {
  /** Highest memory use of the job, in KiB, or null when it cannot be read. */
  readonly peakMemoryKb: number | null;
  /**
   * The file `peakMemoryKb` comes from: a true peak on v1
   * (`memory.max_usage_in_bytes`) and on v2 from Linux 5.19 (`memory.peak`);
   * on older v2 kernels only `memory.current`, sampled whenever `usage()` is
   * called (the highest sample is kept), which misses short peaks.
   */
  readonly peakMemorySource:
    | "memory.max_usage_in_bytes"
    | "memory.peak"
    | "memory.current"
    | null;
  /** CPU time (user and system) of all the job's processes, in milliseconds. */
  readonly cpuTimeMs: number | null;
  /** Whether the kernel's OOM killer killed a process of the job. */
  readonly oomKilled: boolean;
}

/** One job's cgroup. Use it before {@linkcode JobCgroup.remove}; afterwards it reads nothing. */
export interface JobCgroup extends AsyncDisposable {
  /** The job's name, the last component of every path. */
  readonly name: string;
  /** The job's cgroup directories: one on v2, one per hierarchy on v1. */
  readonly paths: readonly string[];
  /**
   * The argument list to put before a command so that it runs in this
   * cgroup: `["/bin/sh", "-c", script, "kiln-cgroup", ...procsFiles, "--"]`.
   * The shell writes its pid into each `cgroup.procs` and execs the
   * command; nothing of the command is ever part of the script. When it
   * cannot join, it exits with {@linkcode CGROUP_ENTER_FAILED}.
   */
  enterPrefix(): string[];
  /** `spec` run through {@linkcode JobCgroup.enterPrefix}. */
  wrap(spec: CommandSpec): CommandSpec;
  /** The pids of the job's live processes (the union over all hierarchies). */
  processes(): Promise<number[]>;
  /** Peak memory, CPU time and OOM kills so far. Never throws. */
  usage(): Promise<CgroupUsage>;
  /**
   * Starts the peak memory over from the current usage, where the kernel
   * lets it be done for every later reader: v1's `memory.max_usage_in_bytes`
   * and the v2 sample kept for kernels without `memory.peak`. (A write to
   * v2's `memory.peak` resets it only for the descriptor that wrote, so
   * there the peak keeps what came before.) Never throws.
   */
  resetPeak(): Promise<void>;
  /**
   * SIGKILLs every process in the cgroup (on v2 through `cgroup.kill` when
   * the kernel has it) and repeats until none is left or a bound is reached
   * (about a second). Never throws.
   */
  killAll(): Promise<void>;
  /**
   * SIGKILLs every process in the cgroup once (on v2 through `cgroup.kill`
   * when the kernel has it), without waiting for them to be gone: enough
   * when nothing in it can fork any more, as in a pid namespace whose init
   * has exited (the kernel kills the rest). {@linkcode JobCgroup.remove}
   * still waits for them. Never throws.
   */
  signalAll(): void;
  /**
   * Removes every directory, killing what is in it first (see
   * {@linkcode JobCgroup.killAll}). True when
   * every directory is gone: the kernel removes only a cgroup no process is
   * in, so no process of the job is left. False when one stays behind
   * (logged and counted in {@linkcode CgroupBackend.leaked}). Never
   * throws; calling it again does nothing but answer again.
   */
  remove(): Promise<boolean>;
}

/** A usable cgroup hierarchy, ready to create jobs' cgroups. */
export interface CgroupBackend {
  /** Always true: cgroups can be used. */
  readonly available: true;
  /** 2 for the unified hierarchy, 1 for one hierarchy per controller. */
  readonly version: 1 | 2;
  /** Mount point of the cgroup filesystem(s), e.g. `/sys/fs/cgroup`. */
  readonly root: string;
  /** Controllers in use: `memory` and `pids`, plus `cpu` (v2) or `cpuacct` (v1) when present. */
  readonly controllers: readonly string[];
  /** The parent cgroup directories the jobs' cgroups are created in. */
  readonly parentPaths: readonly string[];
  /**
   * The delegated cgroup v2 subtree (below `root`, e.g.
   * `/user.slice/user-1000.slice/user@1000.service/app.slice/kiln.service`)
   * the parent was made in, for a node that is not root; null when the
   * parent is at the top of each hierarchy.
   */
  readonly delegated: string | null;
  /**
   * How many cgroup directories could not be removed (still busy after
   * every retry, or an error): each is logged at warn with its path, and
   * stays behind until `Sandbox.sweepStale` or a reboot takes it.
   */
  readonly leaked: number;
  /**
   * Removes the parent cgroups (up to the root) that are empty; a parent
   * another node's jobs still use stays, and {@linkcode CgroupBackend.create}
   * recreates a parent removed under it. Never throws.
   */
  removeParent(): Promise<void>;
  /**
   * Creates the cgroup `name` with `limits`.
   *
   * @throws {TypeError} when `name` is not a valid cgroup name.
   * @throws {RangeError} when a limit is not a positive safe integer.
   * @throws {Deno.errors.AlreadyExists} when the cgroup exists already.
   */
  create(name: string, limits?: CgroupLimits): Promise<JobCgroup>;
  /**
   * The names of the cgroups in the parent now: this node's jobs, and those
   * of other kiln processes on the host.
   */
  children(): Promise<string[]>;
  /**
   * An existing cgroup, to measure, kill or remove it (e.g. one a dead
   * process left behind).
   *
   * @throws {TypeError} when `name` is not a valid cgroup name.
   */
  open(name: string): JobCgroup;
}

/** Why no cgroup can be used. */
export interface CgroupsUnavailable {
  /** Always false: no cgroups. */
  readonly available: false;
  /** Why, for logs and `status`: not mounted, not writable, a controller missing. */
  readonly reason: string;
}

/** What {@linkcode detectCgroups} found. */
export type CgroupDetection = CgroupBackend | CgroupsUnavailable;

/**
 * The two directory operations the kernel gives a meaning to: on a cgroup
 * filesystem `mkdir` creates a cgroup with its interface files and `rmdir`
 * removes a cgroup with them (failing with EBUSY while a process or a child
 * cgroup is in it). Tests replace them to lay out a fake cgroupfs.
 */
export interface CgroupDirectories {
  /** Creates one directory; throws `Deno.errors.AlreadyExists` if it exists. */
  mkdir(path: string): Promise<void>;
  /** Removes one (cgroup) directory; throws `Deno.errors.NotFound` if it is gone. */
  rmdir(path: string): Promise<void>;
  /**
   * Runs `/bin/true` after `prefix` (a cgroup's
   * {@linkcode JobCgroup.enterPrefix}) to its end: detection's proof that a
   * process of this node can join a job's cgroup. A fake cgroupfs must, as
   * the kernel does, drop the pid from `cgroup.procs` when it exits.
   * @default {spawns it}
   */
  runProbe?(
    prefix: readonly string[],
  ): Promise<{ success: boolean; stderr: string }>;
}

/** Options of {@linkcode detectCgroups}. */
export interface DetectCgroupsOptions {
  /** Mount point of the cgroup filesystem(s). @default {"/sys/fs/cgroup"} */
  readonly root?: string;
  /** Parent cgroup of the jobs' cgroups, `/`-separated below the root of each hierarchy. @default {"kiln"} */
  readonly parent?: string;
  /** Directory operations. @default {the real `Deno.mkdir` and `Deno.remove`} */
  readonly directories?: CgroupDirectories;
  /**
   * Where the parent cgroup goes. `top`: at the top of each hierarchy
   * (`/sys/fs/cgroup/kiln`), root's way. `own`: inside the cgroup v2
   * subtree this process is in, which systemd delegates to a service with
   * `Delegate=yes` (a user service of a node that is not root); the
   * process first moves into a leaf of it, `kiln-node`, because a cgroup
   * that holds processes cannot give controllers to its children. `auto`:
   * `top`, then, for a process that is not root on cgroup v2, `own`.
   * @default "auto"
   */
  readonly placement?: "auto" | "top" | "own";
  /** The file this process's own cgroup is read from. @default "/proc/self/cgroup" */
  readonly selfCgroupFile?: string;
}

/**
 * The leaf of a delegated subtree the node moves itself into
 * ({@linkcode DetectCgroupsOptions}' `own`).
 */
export const NODE_LEAF = "kiln-node";

// Synchronous calls, here and for every control file: the cgroup
// filesystem is in memory, and an async call costs several times its
// syscall in hops to another thread and back (mkdir and rmdir of a v1
// cgroup: 67 us of CPU sync, 167 us async; a control file read: 15 us, 50).
const REAL_DIRECTORIES: CgroupDirectories = {
  mkdir: (path) => settle(() => Deno.mkdirSync(path)),
  rmdir: (path) => settle(() => Deno.removeSync(path)),
};

/** `fn`'s outcome as a promise: a throw becomes a rejection. */
function settle(fn: () => void): Promise<void> {
  try {
    fn();
    return Promise.resolve();
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Runs `/bin/true` in a cgroup through `prefix`, for the probe. */
async function runProbe(
  prefix: readonly string[],
): Promise<{ success: boolean; stderr: string }> {
  const [command, ...args] = [...prefix, "/bin/true"];
  const output = await new Deno.Command(command!, {
    args,
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return {
    success: output.success,
    stderr: new TextDecoder().decode(output.stderr),
  };
}

/**
 * Joins the cgroup(s) named as positional parameters up to `--`, then execs
 * the rest. User data never reaches the script text: paths and the command
 * are positional parameters. `echo` writes the pid in one `write`.
 */
const ENTER_SCRIPT =
  `while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo "$$" > "$1" || { echo "kiln: cannot enter cgroup $1" >&2; exit ${CGROUP_ENTER_FAILED}; }; shift; done; shift; exec "$@"`;

/** A name is a directory name, not a path; no leading "." rules out "." and "..". */
const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Rounds of SIGKILL in {@linkcode JobCgroup.killAll} before giving up. */
const KILL_ROUNDS = 100;
/**
 * Longest pause between those rounds (and between attempts to remove), so
 * the kernel can finish the killed processes; the first pauses are shorter.
 */
const KILL_PAUSE_MS = 10;
/** Attempts to `rmdir` a cgroup whose last processes are still exiting. */
const RMDIR_ATTEMPTS = 50;

/**
 * Finds a usable cgroup hierarchy under `root` and prepares the parent
 * cgroup: v2 when `root` has `cgroup.controllers` (the parent is created and
 * `memory`, `pids` and `cpu` are enabled down to it), otherwise v1 with a
 * `memory`, a `pids` and optionally a `cpuacct` hierarchy (the parent is
 * created in each). Then it proves the hierarchy works for this node by
 * using it: it makes a probe cgroup with limits, runs `/bin/true` in it
 * and removes it, as the node's own user. A parent that exists (made by
 * root, say) proves nothing: a hierarchy that fails the probe is reported
 * unavailable with the reason. A node that is not root gets the delegated
 * cgroup v2 subtree it runs in where the top is closed to it
 * ({@linkcode DetectCgroupsOptions}' `placement`). Detection leaves the
 * parent behind. Never throws for what it finds on the host.
 *
 * @throws {TypeError} when `parent` is not a valid cgroup path.
 *
 * @example Reporting the cgroup layer
 * ```ts
 * import { detectCgroups } from "./cgroup.ts";
 *
 * const cgroups = await detectCgroups();
 * if (!cgroups.available) console.log(`no cgroups: ${cgroups.reason}`);
 * else {
 *   const cgroup = await cgroups.create("job-1", { memoryBytes: 256 << 20, pids: 64 });
 *   try {
 *     const [command, ...args] = [...cgroup.enterPrefix(), "/bin/echo", "hello"];
 *     await new Deno.Command(command!, { args }).output();
 *     console.log(await cgroup.usage()); // { peakMemoryKb: 256, cpuTimeMs: 1, ... }
 *   } finally {
 *     await cgroup.remove();
 *     await cgroups.removeParent();
 *   }
 * }
 * ```
 */
export async function detectCgroups(
  options: DetectCgroupsOptions = {},
): Promise<CgroupDetection> {
  const {
    root: rawRoot = DEFAULT_CGROUP_ROOT,
    parent = DEFAULT_CGROUP_PARENT,
    directories = REAL_DIRECTORIES,
    placement = "auto",
    selfCgroupFile = "/proc/self/cgroup",
  } = options;
  const segments = parent.split("/");
  for (const segment of segments) validateName(segment, "parent cgroup");
  const root = rawRoot.replace(/(.)\/+$/, "$1");
  try {
    const info = await Deno.stat(root);
    if (!info.isDirectory) return unavailable(`${root} is not a directory`);
  } catch (error) {
    return unavailable(
      error instanceof Deno.errors.NotFound
        ? `no cgroup filesystem at ${root}: not mounted`
        : `cannot read ${root}: ${message(error)}`,
    );
  }
  const uid = Deno.uid();
  try {
    const controllers = readText(`${root}/cgroup.controllers`);
    let top: CgroupDetection | undefined;
    if (placement !== "own") {
      top = await proven(
        controllers !== null
          ? await detectV2(root, root, segments, controllers, directories)
          : await detectV1(root, segments, directories),
        directories,
      );
      if (top.available || placement === "top" || uid === 0) return top;
      if (controllers === null) {
        return unavailable(
          `${top.reason} (kiln runs as uid ${uid}, not root, and cgroup v1 ` +
            "delegates nothing to it: a node that is not root gets cgroups " +
            "from a delegated cgroup v2 subtree)",
        );
      }
    } else if (controllers === null) {
      return unavailable(`no cgroup v2 at ${root}: nothing is delegated`);
    }
    const own = await proven(
      await detectDelegated(root, segments, directories, selfCgroupFile),
      directories,
    );
    if (own.available || !top || top.available) return own;
    return unavailable(
      `${top.reason}; and in the cgroup this node runs in: ${own.reason}`,
    );
  } catch (error) {
    return unavailable(`cannot use cgroups at ${root}: ${message(error)}`);
  }
}

/**
 * The detection, once its backend passed the probe: a cgroup with limits
 * made, joined by a process and removed, as this node's user. What the
 * probe fails on is the reason, and what detection made is removed again.
 */
async function proven(
  detection: CgroupDetection,
  directories: CgroupDirectories,
): Promise<CgroupDetection> {
  if (!detection.available) return detection;
  const problem = await probe(detection, directories);
  if (problem === undefined) return detection;
  await detection.removeParent();
  return unavailable(
    `cgroup v${detection.version} at ${detection.root} fails for uid ` +
      `${Deno.uid()}: ${problem}`,
  );
}

/** Memory limit of the probe cgroup: `/bin/sh` and `/bin/true` need far less. */
const PROBE_MEMORY_BYTES = 64 * 1024 * 1024;

/** Uses `backend` as a job would; the problem, or undefined when it works. */
async function probe(
  backend: CgroupBackend,
  directories: CgroupDirectories,
): Promise<string | undefined> {
  // Named like a step's cgroup, so that `Sandbox.sweepStale` removes one
  // a killed node left behind.
  const name = `p${Deno.pid}-probe-${crypto.randomUUID().slice(0, 8)}`;
  let cgroup: JobCgroup;
  try {
    cgroup = await backend.create(name, {
      memoryBytes: PROBE_MEMORY_BYTES,
      pids: 8,
    });
  } catch (error) {
    return `cannot create a cgroup with limits in ${
      backend.parentPaths.join(" and ")
    }: ${message(error)}`;
  }
  let problem: string | undefined;
  try {
    const ran = await (directories.runProbe ?? runProbe)(cgroup.enterPrefix());
    if (!ran.success) {
      problem = `cannot put a process into ${cgroup.paths.join(" and ")}: ${
        ran.stderr.trim().replaceAll("\n", "; ") || "the probe failed"
      }`;
    }
  } catch (error) {
    problem = `cannot run the probe: ${message(error)}`;
  }
  const leaked = backend.leaked;
  await cgroup.remove();
  if (backend.leaked > leaked) {
    problem ??= `cannot remove the probe cgroup ${cgroup.paths.join(" and ")}`;
  }
  return problem;
}

/**
 * The parent in the cgroup v2 subtree this process is in, when it may
 * write there (systemd's `Delegate=yes`): the process moves into the leaf
 * {@linkcode NODE_LEAF} first, so that the subtree's root holds no process
 * and can give the memory and pids controllers to the jobs' cgroups.
 */
async function detectDelegated(
  root: string,
  segments: readonly string[],
  directories: CgroupDirectories,
  selfCgroupFile: string,
): Promise<CgroupDetection> {
  const lines = readText(selfCgroupFile)?.split("\n") ?? [];
  let path = lines.find((line) => line.startsWith("0::"))?.slice(3).trim();
  if (!path) {
    return unavailable(`${selfCgroupFile} names no cgroup v2 of this process`);
  }
  // Moved into the leaf by an earlier detection: its parent is the subtree.
  if (path.endsWith(`/${NODE_LEAF}`)) {
    path = path.slice(0, -NODE_LEAF.length - 1) || "/";
  }
  if (path === "/" || !path.startsWith("/") || path.split("/").includes("..")) {
    return unavailable(
      `this process is in the cgroup "${path}", not in a subtree of its own`,
    );
  }
  const top = `${root}${path}`;
  const controllers = readText(`${top}/cgroup.controllers`);
  if (controllers === null) {
    return unavailable(`cannot read ${top}/cgroup.controllers`);
  }
  // Nothing moves for a subtree that lacks what jobs need.
  const lacking = ["memory", "pids"].filter((c) =>
    !controllers.split(/\s+/).includes(c)
  );
  if (lacking.length > 0) {
    return unavailable(
      `cgroup v2 at ${top} lacks the ${lacking.join(" and ")} controller` +
        ` (cgroup.controllers: "${controllers.trim()}")`,
    );
  }
  const leaf = `${top}/${NODE_LEAF}`;
  const problem = await ensureDirectory(directories, leaf);
  if (problem) {
    return unavailable(
      `${problem}: ${top} is not delegated to uid ${Deno.uid()} ` +
        "(systemd delegates a service's cgroup with Delegate=yes)",
    );
  }
  try {
    writeFile(`${leaf}/cgroup.procs`, String(Deno.pid));
  } catch (error) {
    await directories.rmdir(leaf).catch(() => {});
    return unavailable(
      `cannot move this process into ${leaf}: ${message(error)}`,
    );
  }
  const found = await detectV2(root, top, segments, controllers, directories);
  return found.available ? { ...found, delegated: path } : found;
}

/**
 * Cgroup v2 with the parent made below `top`: the root of the hierarchy,
 * or a delegated subtree of it.
 */
async function detectV2(
  root: string,
  top: string,
  segments: readonly string[],
  controllersText: string,
  directories: CgroupDirectories,
): Promise<CgroupDetection> {
  const available = controllersText.split(/\s+/).filter(Boolean);
  const missing = ["memory", "pids"].filter((c) => !available.includes(c));
  if (missing.length > 0) {
    return unavailable(
      `cgroup v2 at ${top} lacks the ${missing.join(" and ")} controller` +
        ` (cgroup.controllers: "${available.join(" ")}")`,
    );
  }
  const controllers = ["memory", "pids"];
  if (available.includes("cpu")) controllers.push("cpu");
  // Controllers reach a cgroup only through `cgroup.subtree_control` of
  // every ancestor. A non-root cgroup that holds processes cannot enable
  // them for its children (the no-internal-processes rule): the parent is
  // ours and never holds a process, jobs live only in its children.
  const levels = lineage(top, segments);
  const prepare = async () => {
    for (const dir of [top, ...levels]) {
      if (dir !== top) {
        const problem = await ensureDirectory(directories, dir);
        if (problem) return problem;
      }
      const problem = enableControllers(dir, controllers);
      if (problem) return problem;
    }
    return undefined;
  };
  const problem = await prepare();
  if (problem) return unavailable(problem);
  const parentPath = levels.at(-1)!;
  const leaks: Leaks = { count: 0 };
  return {
    available: true,
    version: 2,
    root,
    controllers,
    parentPaths: [parentPath],
    delegated: null,
    get leaked() {
      return leaks.count;
    },
    removeParent: () => removeLineage(directories, levels),
    children: () => childNames([parentPath]),
    open: (name) => {
      validateName(name, "cgroup");
      return new V2Cgroup(name, `${parentPath}/${name}`, directories, leaks);
    },
    create: async (name, limits = {}) => {
      validateName(name, "cgroup");
      const { memoryBytes, pids } = validateLimits(name, limits);
      const path = `${parentPath}/${name}`;
      const cgroup = new V2Cgroup(name, path, directories, leaks);
      await makeCgroup(directories, path, prepare);
      try {
        if (memoryBytes !== undefined) {
          writeFile(`${path}/memory.max`, String(memoryBytes));
          // An OOM kill takes the whole job, not one process of it.
          writeFileIfPresent(`${path}/memory.oom.group`, "1");
        }
        // No swap, ever: swap would let a job exceed its memory limit and
        // make its peak meaningless.
        writeFileIfPresent(`${path}/memory.swap.max`, "0");
        if (pids !== undefined) {
          writeFile(`${path}/pids.max`, String(pids));
        }
      } catch (error) {
        await cgroup.remove();
        throw error;
      }
      return cgroup;
    },
  };
}

/** The names of the child cgroups of `parents`, each once. */
async function childNames(parents: readonly string[]): Promise<string[]> {
  const names = new Set<string>();
  for (const parent of parents) {
    try {
      for await (const entry of Deno.readDir(parent)) {
        if (entry.isDirectory) names.add(entry.name);
      }
    } catch {
      // A parent removed under us has no children.
    }
  }
  return [...names];
}

/** Enables `controllers` for the children of `dir`; a reason on failure. */
function enableControllers(
  dir: string,
  controllers: readonly string[],
): string | undefined {
  const file = `${dir}/cgroup.subtree_control`;
  const enabled = readText(file)?.split(/\s+/) ?? [];
  const wanted = controllers.filter((c) => !enabled.includes(c));
  if (wanted.length === 0) return undefined;
  try {
    writeFile(file, wanted.map((c) => `+${c}`).join(" "));
    return undefined;
  } catch (error) {
    return isBusy(error)
      ? `cannot enable ${wanted.join(", ")} in ${file}: ${dir} holds ` +
        "processes (cgroup v2 allows controllers only for cgroups without)"
      : `cannot enable ${wanted.join(", ")} in ${file}: ${message(error)}`;
  }
}

/** One v1 hierarchy in use: its directory and the controllers used from it. */
interface V1Hierarchy {
  readonly dir: string;
  readonly controllers: string[];
}

async function detectV1(
  root: string,
  segments: readonly string[],
  directories: CgroupDirectories,
): Promise<CgroupDetection> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(root)) names.push(entry.name);
  // A hierarchy is mounted under its controller's name, or under the
  // comma-joined names of co-mounted controllers ("cpu,cpuacct"), often
  // with symlinks for each name.
  const mountOf = (controller: string) =>
    names.includes(controller)
      ? controller
      : names.find((name) => name.split(",").includes(controller));
  // A file only a mounted hierarchy of that controller has at its root.
  const probes: Record<string, string> = {
    memory: "memory.limit_in_bytes",
    pids: "cgroup.procs",
    cpuacct: "cpuacct.usage",
  };
  const hierarchies: V1Hierarchy[] = [];
  const missing: string[] = [];
  for (const controller of ["memory", "pids", "cpuacct"]) {
    const mount = mountOf(controller);
    const probe = probes[controller]!;
    if (mount === undefined || !(await exists(`${root}/${mount}/${probe}`))) {
      missing.push(controller);
      continue;
    }
    // Co-mounted controllers share one directory (symlinks resolved).
    const dir = await Deno.realPath(`${root}/${mount}`);
    const shared = hierarchies.find((h) => h.dir === dir);
    if (shared) shared.controllers.push(controller);
    else hierarchies.push({ dir, controllers: [controller] });
  }
  if (missing.includes("memory") && missing.includes("pids")) {
    return unavailable(
      `neither cgroup v2 (no ${root}/cgroup.controllers) nor cgroup v1 ` +
        `hierarchies (no memory or pids hierarchy in ${root})`,
    );
  }
  const lacking = missing.filter((c) => c !== "cpuacct");
  if (lacking.length > 0) {
    return unavailable(
      `cgroup v1 at ${root} lacks the ${lacking.join(" and ")} hierarchy`,
    );
  }
  const lineages = hierarchies.map((h) => lineage(h.dir, segments));
  const parents = lineages.map((levels) => levels.at(-1)!);
  const prepare = async () => {
    for (const dir of lineages.flat()) {
      const problem = await ensureDirectory(directories, dir);
      if (problem) return problem;
    }
    return undefined;
  };
  const problem = await prepare();
  if (problem) return unavailable(problem);
  const leaks: Leaks = { count: 0 };
  const openV1 = (name: string) => {
    const paths = parents.map((parent) => `${parent}/${name}`);
    const pathOf = (controller: string) => {
      const index = hierarchies.findIndex((h) =>
        h.controllers.includes(controller)
      );
      return index === -1 ? undefined : paths[index];
    };
    return new V1Cgroup(name, paths, directories, leaks, {
      memory: pathOf("memory")!,
      pids: pathOf("pids")!,
      cpuacct: pathOf("cpuacct"),
    });
  };
  return {
    available: true,
    version: 1,
    root,
    controllers: hierarchies.flatMap((h) => h.controllers),
    parentPaths: parents,
    delegated: null,
    get leaked() {
      return leaks.count;
    },
    removeParent: async () => {
      for (const levels of lineages) await removeLineage(directories, levels);
    },
    children: () => childNames(parents),
    open: (name) => {
      validateName(name, "cgroup");
      return openV1(name);
    },
    create: async (name, limits = {}) => {
      validateName(name, "cgroup");
      const { memoryBytes, pids } = validateLimits(name, limits);
      const cgroup = openV1(name);
      const paths = cgroup.paths;
      const memory = cgroup.memoryPath;
      const created: string[] = [];
      try {
        for (const path of paths) {
          await makeCgroup(directories, path, prepare);
          created.push(path);
        }
        if (memoryBytes !== undefined) {
          writeFile(
            `${memory}/memory.limit_in_bytes`,
            String(memoryBytes),
          );
          // memory+swap may never be below memory alone, hence second. With
          // it equal, a job cannot escape its limit into swap. Without the
          // file (swap accounting off) swap is not accounted at all.
          writeFileIfPresent(
            `${memory}/memory.memsw.limit_in_bytes`,
            String(memoryBytes),
          );
        }
        if (pids !== undefined) {
          writeFile(`${cgroup.pidsPath}/pids.max`, String(pids));
        }
      } catch (error) {
        for (const path of created.reverse()) {
          await removeDirectory(directories, path, async () => {}, leaks);
        }
        throw error;
      }
      return cgroup;
    },
  };
}

/** What both versions share: entering, listing, killing and removing. */
abstract class BaseCgroup implements JobCgroup {
  readonly name: string;
  readonly paths: readonly string[];
  #directories: CgroupDirectories;
  #leaks: Leaks;

  constructor(
    name: string,
    paths: readonly string[],
    directories: CgroupDirectories,
    leaks: Leaks,
  ) {
    this.name = name;
    this.paths = paths;
    this.#directories = directories;
    this.#leaks = leaks;
  }

  enterPrefix(): string[] {
    return [
      "/bin/sh",
      "-c",
      ENTER_SCRIPT,
      "kiln-cgroup",
      ...this.paths.map((path) => `${path}/cgroup.procs`),
      "--",
    ];
  }

  wrap(spec: CommandSpec): CommandSpec {
    const [command, ...args] = this.enterPrefix();
    return {
      ...spec,
      command: command!,
      args: [...args, spec.command, ...spec.args],
    };
  }

  processes(): Promise<number[]> {
    return Promise.resolve(this.#processes());
  }

  #processes(): number[] {
    const pids = new Set<number>();
    for (const path of this.paths) {
      const text = readText(`${path}/cgroup.procs`);
      for (const line of text?.split("\n") ?? []) {
        if (/^\d+$/.test(line)) pids.add(Number(line));
      }
    }
    return [...pids];
  }

  abstract usage(): Promise<CgroupUsage>;

  abstract resetPeak(): Promise<void>;

  /** A kernel shortcut that kills the whole cgroup at once; false when there is none. */
  protected killAtOnce(): boolean {
    return false;
  }

  async killAll(): Promise<void> {
    try {
      this.killAtOnce();
      // Until the cgroup is empty: a process may have forked between our
      // reading `cgroup.procs` and the signal reaching it. The pids limit
      // bounds how many can appear per round.
      for (let round = 0; round < KILL_ROUNDS; round++) {
        if (this.#signalListed() === 0) return;
        // Most are gone within a millisecond or two: look again soon.
        await delay(Math.min(KILL_PAUSE_MS, 2 ** round));
      }
    } catch {
      // Never throws: a cgroup that cannot be read has nothing to kill.
    }
  }

  signalAll(): void {
    try {
      if (!this.killAtOnce()) this.#signalListed();
    } catch {
      // Never throws: a cgroup that cannot be read has nothing to kill.
    }
  }

  /** SIGKILLs every process `cgroup.procs` lists; returns how many it listed. */
  #signalListed(): number {
    const pids = this.#processes();
    for (const pid of pids) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    return pids.length;
  }

  async remove(): Promise<boolean> {
    // No kill first: the kernel removes only an empty cgroup, and one that
    // is not empty (EBUSY) is killed before each retry. A step's cgroup is
    // mostly empty by now (its launcher killed what was left).
    let gone = true;
    for (const path of [...this.paths].reverse()) {
      gone = await removeDirectory(
        this.#directories,
        path,
        () => this.killAll(),
        this.#leaks,
      ) && gone;
    }
    return gone;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.remove();
  }
}

class V2Cgroup extends BaseCgroup {
  #path: string;
  /** Highest `memory.current` seen, for kernels without `memory.peak`. */
  #sampledPeak = 0;

  constructor(
    name: string,
    path: string,
    directories: CgroupDirectories,
    leaks: Leaks,
  ) {
    super(name, [path], directories, leaks);
    this.#path = path;
  }

  override usage(): Promise<CgroupUsage> {
    return Promise.resolve(this.#usage());
  }

  #usage(): CgroupUsage {
    const path = this.#path;
    let peakMemoryKb: number | null = null;
    let peakMemorySource: CgroupUsage["peakMemorySource"] = null;
    const peak = readNumber(`${path}/memory.peak`);
    if (peak !== null) {
      peakMemoryKb = Math.round(peak / 1024);
      peakMemorySource = "memory.peak";
    } else {
      const current = readNumber(`${path}/memory.current`);
      if (current !== null) {
        this.#sampledPeak = Math.max(this.#sampledPeak, current);
        peakMemoryKb = Math.round(this.#sampledPeak / 1024);
        peakMemorySource = "memory.current";
      }
    }
    const usec = readKeyed(`${path}/cpu.stat`)?.get("usage_usec");
    const oomKills = readKeyed(`${path}/memory.events`)?.get(
      "oom_kill",
    );
    return {
      peakMemoryKb,
      peakMemorySource,
      cpuTimeMs: usec === undefined ? null : Math.round(usec / 1000),
      oomKilled: (oomKills ?? 0) > 0,
    };
  }

  override resetPeak(): Promise<void> {
    this.#sampledPeak = 0;
    return Promise.resolve();
  }

  protected override killAtOnce(): boolean {
    // Linux 5.14: the kernel kills every process, forking or not.
    return writeFileIfPresent(`${this.#path}/cgroup.kill`, "1");
  }
}

/** The directory of each v1 controller in use. */
interface V1Paths {
  readonly memory: string;
  readonly pids: string;
  readonly cpuacct: string | undefined;
}

class V1Cgroup extends BaseCgroup {
  #controllers: V1Paths;

  constructor(
    name: string,
    paths: readonly string[],
    directories: CgroupDirectories,
    leaks: Leaks,
    controllers: V1Paths,
  ) {
    super(name, paths, directories, leaks);
    this.#controllers = controllers;
  }

  /** The directory in the memory hierarchy. */
  get memoryPath(): string {
    return this.#controllers.memory;
  }

  /** The directory in the pids hierarchy. */
  get pidsPath(): string {
    return this.#controllers.pids;
  }

  override usage(): Promise<CgroupUsage> {
    return Promise.resolve(this.#usage());
  }

  #usage(): CgroupUsage {
    const { memory, cpuacct } = this.#controllers;
    const peak = readNumber(`${memory}/memory.max_usage_in_bytes`);
    const ns = cpuacct === undefined
      ? null
      : readNumber(`${cpuacct}/cpuacct.usage`);
    // `oom_kill` in memory.oom_control counts kills (Linux 4.13). Before
    // that only `memory.failcnt` is left, which counts hitting the limit,
    // an OOM kill or not: an over-approximation, used only as a fallback.
    const oomKills = readKeyed(`${memory}/memory.oom_control`)?.get(
      "oom_kill",
    );
    const oomKilled = oomKills !== undefined
      ? oomKills > 0
      : (readNumber(`${memory}/memory.failcnt`) ?? 0) > 0;
    return {
      peakMemoryKb: peak === null ? null : Math.round(peak / 1024),
      peakMemorySource: peak === null ? null : "memory.max_usage_in_bytes",
      cpuTimeMs: ns === null ? null : Math.round(ns / 1e6),
      oomKilled,
    };
  }

  override resetPeak(): Promise<void> {
    try {
      writeFileIfPresent(
        `${this.#controllers.memory}/memory.max_usage_in_bytes`,
        "0",
      );
    } catch {
      // Never throws: the peak then keeps what came before.
    }
    return Promise.resolve();
  }
}

/** Cgroup directories a backend could not remove, counted. */
interface Leaks {
  count: number;
}

/**
 * Removes a cgroup directory, retrying while processes are still exiting
 * (EBUSY). On a cgroup filesystem `rmdir` takes the interface files with it;
 * a plain directory with files in it fails, so a fake cgroupfs must bring
 * its own {@linkcode CgroupDirectories}. A directory left behind is logged
 * at warn with its path and counted in `leaks`. Never throws.
 */
async function removeDirectory(
  directories: CgroupDirectories,
  path: string,
  killAll: () => Promise<void>,
  leaks: Leaks,
): Promise<boolean> {
  let why = "";
  for (let attempt = 1; attempt <= RMDIR_ATTEMPTS; attempt++) {
    try {
      await directories.rmdir(path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return true; // Gone already.
      why = message(error);
      if (!isBusy(error)) break; // Hopeless.
      await killAll();
      await delay(Math.min(KILL_PAUSE_MS, 2 ** (attempt - 1)));
    }
  }
  leaks.count++;
  log.warn(
    "cannot remove cgroup {path}, left behind ({leaked} so far): {why}",
    { path, leaked: leaks.count, why },
  );
  return false;
}

/** `base/a`, `base/a/b`, ... for the segments `a`, `b`, ... */
function lineage(base: string, segments: readonly string[]): string[] {
  return segments.map((_, i) => [base, ...segments.slice(0, i + 1)].join("/"));
}

/** Removes the empty ones of `levels`, deepest first. Never throws. */
async function removeLineage(
  directories: CgroupDirectories,
  levels: readonly string[],
): Promise<void> {
  for (const dir of [...levels].reverse()) {
    try {
      await directories.rmdir(dir);
    } catch (error) {
      // In use (EBUSY): so are its ancestors.
      if (!(error instanceof Deno.errors.NotFound)) return;
    }
  }
}

/**
 * Creates a job's cgroup directory; when its parent is gone (another node's
 * `removeParent()`), prepares the parents again first.
 */
async function makeCgroup(
  directories: CgroupDirectories,
  path: string,
  prepare: () => Promise<string | undefined>,
): Promise<void> {
  try {
    await directories.mkdir(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    const problem = await prepare();
    if (problem) throw new Error(`Cannot create cgroup ${path}: ${problem}`);
    await directories.mkdir(path);
  }
}

/** Creates `dir` unless it exists; a reason on failure. */
async function ensureDirectory(
  directories: CgroupDirectories,
  dir: string,
): Promise<string | undefined> {
  try {
    await directories.mkdir(dir);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return undefined;
    return error instanceof Deno.errors.PermissionDenied
      ? `cannot create ${dir}: not writable (${message(error)})`
      : `cannot create ${dir}: ${message(error)}`;
  }
  return undefined;
}

function validateName(name: string, what: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new TypeError(
      `Cannot use ${what} name "${name}": a name is 1 to 128 letters, ` +
        `digits, "_", "-" and "." and does not start with "."`,
    );
  }
}

function validateLimits(name: string, limits: CgroupLimits): CgroupLimits {
  for (const [key, value] of Object.entries(limits)) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) {
      throw new RangeError(
        `Cannot create cgroup "${name}": ${key} ${value} is not a positive integer`,
      );
    }
  }
  return limits;
}

/** Writes a control file that must exist (never creates one). */
function writeFile(path: string, data: string): void {
  Deno.writeTextFileSync(path, data, { create: false });
}

/** Writes a control file the kernel may lack; false when it does. */
function writeFileIfPresent(path: string, data: string): boolean {
  try {
    writeFile(path, data);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

function readNumber(path: string): number | null {
  const text = readText(path)?.trim();
  if (!text || !/^\d+$/.test(text)) return null;
  return Number(text);
}

/** A file of `key value` lines, such as `cpu.stat` or `memory.events`. */
function readKeyed(path: string): Map<string, number> | null {
  const text = readText(path);
  if (text === null) return null;
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value && /^\d+$/.test(value)) values.set(key, Number(value));
  }
  return values;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `error` is EBUSY: a cgroup that still holds processes. Deno 2.9
 * reports it as a plain `Error` whose `code` is `"EBUSY"`, not as
 * `Deno.errors.Busy`.
 */
function isBusy(error: unknown): boolean {
  return error instanceof Deno.errors.Busy ||
    (error as { code?: unknown } | null)?.code === "EBUSY";
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function unavailable(reason: string): CgroupsUnavailable {
  return { available: false, reason };
}
