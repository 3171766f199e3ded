/**
 * Where job workdirs live: one private directory per kiln process, so that
 * the workdirs of a process that was killed before it could clean up
 * (SIGKILL, a power cut) are found and removed by the next kiln process
 * that starts on the machine.
 *
 * ```
 * <tmp>/kiln-<pid>-<random>/   mode 700, owned by kiln's uid
 *   owner                      the mark: written by kiln, names the pid
 *   jobs/                      mode 700: the job workdirs
 *   mounts/                    a tmpfs of its own, mode 700: mount points only
 * ```
 *
 * The random part makes the name unpredictable, and the directory is made
 * exclusively (`mkdir` fails on an existing name): another user cannot hand
 * kiln a directory of theirs by making `<tmp>/kiln-<pid>` first. The sweep
 * only removes a root that is provably kiln's own: a real directory (never
 * a symlink), owned by kiln's uid, holding the mark as a regular file of
 * kiln's uid, whose process is gone. Removal runs in a child process (see
 * `remove_tree.ts`), so no tree, however deep, can crash the node.
 *
 * ## Mount points on a tmpfs
 *
 * Where the sandbox gives every job a disk of its own (`disk_limit.ts`), a
 * job's files live on that disk, and the work root holds only the
 * directories its disk and its devpts are mounted on: two made and two
 * removed per job. On the host's root filesystem each costs the node's
 * event loop far more than on a tmpfs: measured on this project's CI host
 * (ext4 mounted with `discard`, 2 shared cores), 1,000
 * `makeTempDirSync` + `removeSync` pairs took 0.15 ms of CPU and 2 ms of
 * wall time each on ext4 (the `rmdir` waits for the journal and a block
 * discard), 0.02 ms and 0.05 ms on a tmpfs. So such jobs ask for
 * `mounts/` instead of `jobs/`: a tmpfs mounted once per process (as root,
 * through the same `mount(2)` the disk layer uses), that holds nothing but
 * empty directories. Jobs without a disk of their own keep writing into
 * `jobs/`, on the host's disk: the tmpfs would cap them, and in memory.
 *
 * The tmpfs's source is `kiln-<pid>`, like the job mounts'. The node
 * unmounts it when it removes its root; the root of a process killed
 * before it could is swept with it still mounted: the sweep unmounts it
 * (lazily, with whatever is still mounted below it) before the removal.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  loadMountCalls,
  mountErrnoName,
  SOURCE_PREFIX,
  unmountStaleKilnMounts,
  whyCannotMount,
} from "./_mounts.ts";
import { isProcessAlive } from "./process_tree.ts";
import { removeTree } from "./remove_tree.ts";

const log = getLogger(["kiln", "sandbox"]);

const PREFIX = "kiln-";
/** The mark kiln writes into each work root it makes. */
const MARK = "owner";
/** The directory in a work root that holds the job workdirs. */
const JOBS = "jobs";
/** The directory in a work root that holds only mount points, on a tmpfs. */
const MOUNTS = "mounts";
/** `MS_NOSUID | MS_NODEV | MS_NOEXEC`: the tmpfs holds empty directories only. */
const MOUNTS_FLAGS = 2n | 4n | 8n;
/**
 * The tmpfs of mount points: directories take no blocks on a tmpfs, so the
 * smallest size does; and two inodes per job, for more jobs than a node's
 * block of uids (65,536 by default) lets it run at once. An inode takes
 * memory only while it exists.
 */
const MOUNTS_OPTIONS = `size=64k,nr_inodes=${(1 << 17) + 1},mode=0700`;

/** This process's work root, by its jobs directory, once being made. */
let current: Promise<string> | undefined;
/**
 * The tmpfs of mount points of the current root, by that root's jobs
 * directory, once asked for: its path, or null when it could not be mounted
 * (those jobs then use the jobs directory).
 */
let mounts: { jobs: string; dir: string | null } | undefined;

/** Options of {@linkcode defaultWorkRoot}. */
export interface WorkRootOptions {
  /**
   * Whether the caller puts nothing but mount points in the directory (the
   * sandbox's disk layer works: a job's files live on its own disk). Then
   * it gets the root's tmpfs of mount points, where a directory is made
   * and removed far more cheaply than on the host's disk (see the module
   * doc), when this process can mount it; else the jobs directory.
   * @default {false}
   */
  mountPointsOnly?: boolean;
}

/**
 * This process's directory for job workdirs (`<tmp>/kiln-<pid>-<random>/jobs`),
 * made on first use, and made again when something removed it; or, for
 * mount points only, its tmpfs (`…/mounts`), mounted on first use.
 *
 * @example Making a job workdir
 * ```ts
 * import { defaultWorkRoot, removeWorkRoot } from "./work_root.ts";
 *
 * const workdir = await Deno.makeTempDir({
 *   prefix: "kiln-job-",
 *   dir: await defaultWorkRoot(),
 * });
 * await Deno.remove(workdir);
 * await removeWorkRoot();
 * ```
 */
export async function defaultWorkRoot(
  options: WorkRootOptions = {},
): Promise<string> {
  const { mountPointsOnly = false } = options;
  const jobs = await jobsDirectory();
  if (!mountPointsOnly) return jobs;
  // Synchronous from here to the mount: two callers cannot both mount.
  if (mounts?.jobs !== jobs) {
    mounts = { jobs, dir: mountMountPoints(dirname(jobs)) };
  }
  return mounts.dir ?? jobs;
}

async function jobsDirectory(): Promise<string> {
  const making = current ??= makeWorkRoot(tmpdir());
  try {
    const jobs = await making;
    // Synchronous: asked once per job, and one lstat costs less than the
    // hop to another thread and back of an async one.
    if (Deno.lstatSync(jobs).isDirectory) return jobs;
  } catch {
    // Not made, or removed meanwhile (a temp cleaner): make a new one.
  }
  if (current === making) current = makeWorkRoot(tmpdir());
  return await current;
}

/**
 * Mounts the tmpfs of mount points in `root`: its path, or null (logged
 * once per root) where this process cannot mount one.
 */
function mountMountPoints(root: string): string | null {
  const dir = join(root, MOUNTS);
  const calls = loadMountCalls();
  let reason = whyCannotMount("a tmpfs");
  if (reason === null && typeof calls !== "string") {
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
      const errno = calls.mount(
        `${SOURCE_PREFIX}${Deno.pid}`,
        dir,
        "tmpfs",
        MOUNTS_FLAGS,
        MOUNTS_OPTIONS,
      );
      if (errno === 0) return dir;
      reason = mountErrnoName(errno, "tmpfs");
      Deno.removeSync(dir);
    } catch (error) {
      // mkdir or rmdir failed (a failed mount's reason is kept).
      reason ??= error instanceof Error ? error.message : String(error);
    }
  }
  log.warn(
    "cannot mount a tmpfs on {dir} for the jobs' mount points ({reason}): they are made in {root}/jobs",
    { dir, reason, root },
  );
  return null;
}

/**
 * The job directory of this process's work root if it was made, else
 * undefined: for the node to remove at its end.
 */
export function currentWorkRoot(): Promise<string | undefined> {
  return current?.catch(() => undefined) ?? Promise.resolve(undefined);
}

/**
 * Removes this process's work root if no workdir or mount point is left in
 * it (unmounting its tmpfs of mount points), so that the next
 * {@linkcode defaultWorkRoot} makes a new one. Never throws.
 */
export async function removeWorkRoot(): Promise<void> {
  const removing = current;
  const jobs = await currentWorkRoot();
  if (jobs === undefined) return;
  try {
    // Synchronous up to the unmount: no mount point can be made between
    // the look and it.
    unmountMountPoints(jobs);
    // Fails while a workdir is left: the root then stays for the sweep.
    await Deno.remove(jobs);
    // A caller that found it gone meanwhile has made the next root: that
    // one stays current, or nothing would ever remove it.
    if (current === removing) current = undefined;
    const root = join(jobs, "..");
    await Deno.remove(join(root, MARK));
    await Deno.remove(root);
  } catch {
    // Still in use (another node of this process), or already gone.
  }
}

/**
 * Unmounts and removes the tmpfs of mount points of the root of `jobs`, if
 * it was mounted.
 *
 * @throws {Error} while a mount point is left in it, or when the kernel
 * refuses.
 */
function unmountMountPoints(jobs: string): void {
  if (mounts?.jobs !== jobs || mounts.dir === null) return;
  const { dir } = mounts;
  for (const entry of Deno.readDirSync(dir)) {
    throw new Error(`${join(dir, entry.name)} is still in use`);
  }
  const calls = loadMountCalls();
  if (typeof calls === "string") throw new Error(calls);
  // Empty: nothing to free, so on this thread.
  const errno = calls.unmountLazilyNow(dir);
  if (errno !== 0) {
    throw new Error(
      `cannot unmount ${dir}: ${mountErrnoName(errno, "tmpfs")}`,
    );
  }
  mounts = undefined;
  Deno.removeSync(dir);
}

/** Makes a fresh work root in `parent` and checks it is ours and private. */
async function makeWorkRoot(parent: string): Promise<string> {
  const root = await Deno.makeTempDir({
    dir: parent,
    prefix: `${PREFIX}${Deno.pid}-`,
  });
  const info = await Deno.lstat(root);
  if (!info.isDirectory || info.uid !== Deno.uid()) {
    throw new Error(
      `Cannot use work root ${root}: it is not a directory of uid ${Deno.uid()}`,
    );
  }
  // Whatever the umask: only kiln may look in.
  await Deno.chmod(root, 0o700);
  await Deno.writeTextFile(join(root, MARK), `kiln ${Deno.pid}\n`, {
    createNew: true,
    mode: 0o600,
  });
  const jobs = join(root, JOBS);
  await Deno.mkdir(jobs, { mode: 0o700 });
  return jobs;
}

/** What {@linkcode sweepStaleWorkRoots} did. */
export interface SweepOutcome {
  /** How many stale work roots were removed. */
  removed: number;
  /** The stale work roots that could not be removed, with why. */
  failed: { path: string; reason: string }[];
}

/**
 * Removes the work roots of kiln processes that are gone, with whatever
 * workdirs they left, however deep. Touches only roots that are provably
 * kiln's (see the module doc) and never follows a symlink. Never throws.
 *
 * @example Sweeping at start-up
 * ```ts
 * import { sweepStaleWorkRoots } from "./work_root.ts";
 *
 * const { removed, failed } = await sweepStaleWorkRoots();
 * console.log(`removed ${removed} stale work roots, ${failed.length} failed`);
 * ```
 */
export async function sweepStaleWorkRoots(
  parent: string = tmpdir(),
): Promise<SweepOutcome> {
  const outcome: SweepOutcome = { removed: 0, failed: [] };
  const stale: string[] = [];
  try {
    for await (const entry of Deno.readDir(parent)) {
      const pid = pidOf(entry.name);
      if (pid === undefined || !entry.isDirectory || pid === Deno.pid) {
        continue;
      }
      const path = join(parent, entry.name);
      if (await isOurs(path) && !await isProcessAlive(pid)) stale.push(path);
    }
  } catch {
    // An unreadable temp dir: nothing to sweep.
  }
  for (const path of stale) {
    // Its tmpfs of mount points, left mounted by a process killed before
    // it could unmount it, would stop the removal.
    await unmountStaleMountPoints(path);
    const removal = await removeTree(path);
    if (removal.ok) outcome.removed++;
    else outcome.failed.push({ path, reason: removal.reason });
  }
  return outcome;
}

/**
 * Lazily unmounts the tmpfs of mount points of a stale root of ours, with
 * anything still mounted below it, if one is mounted there: its directory
 * then lies on another device than the root. Never throws.
 */
async function unmountStaleMountPoints(root: string): Promise<void> {
  const dir = join(root, MOUNTS);
  try {
    const [rootInfo, dirInfo] = [Deno.lstatSync(root), Deno.lstatSync(dir)];
    if (!dirInfo.isDirectory || dirInfo.dev === rootInfo.dev) return;
  } catch {
    return; // None.
  }
  const calls = loadMountCalls();
  // What is below may still be a full job disk: off the event loop.
  if (typeof calls !== "string") await calls.unmountLazily(dir);
}

/**
 * Unmounts the tmpfs of mount points of kiln processes that died, wherever
 * their root is and whatever is left of it: those whose source is
 * `kiln-<pid>` for a pid that is gone, on a `…/kiln-<pid>-<random>/mounts`.
 * {@linkcode sweepStaleWorkRoots} unmounts the one of a root it removes;
 * this also finds one whose root lost its mark (an older kiln's sweep
 * removed what it could around it). Returns how many it unmounted. Never
 * throws.
 *
 * @example Sweeping at start-up
 * ```ts
 * import { unmountStaleMountPointRoots } from "./work_root.ts";
 * import { isProcessAlive } from "./process_tree.ts";
 *
 * console.log(await unmountStaleMountPointRoots(isProcessAlive)); // 0 on a clean host
 * ```
 */
export function unmountStaleMountPointRoots(
  isAlive: (pid: number) => Promise<boolean>,
): Promise<number> {
  return unmountStaleKilnMounts("tmpfs", isAlive, (mountPoint) => {
    const parts = mountPoint.split("/");
    return parts.at(-1) === MOUNTS && pidOf(parts.at(-2) ?? "") !== undefined;
  });
}

/** The pid in a work root's name `kiln-<pid>-<random>`, or undefined. */
function pidOf(name: string): number | undefined {
  if (!name.startsWith(PREFIX)) return undefined;
  const rest = name.slice(PREFIX.length);
  const dash = rest.indexOf("-");
  const digits = rest.slice(0, dash);
  if (dash < 1 || dash > 10 || dash === rest.length - 1) return undefined;
  for (const char of digits) if (char < "0" || char > "9") return undefined;
  const pid = Number(digits);
  return pid > 0 ? pid : undefined;
}

/** A real directory of our uid holding our mark; never follows a symlink. */
async function isOurs(path: string): Promise<boolean> {
  try {
    const root = await Deno.lstat(path);
    if (!root.isDirectory || root.uid !== Deno.uid()) return false;
    const mark = await Deno.lstat(join(path, MARK));
    return mark.isFile && mark.uid === Deno.uid();
  } catch {
    return false;
  }
}
