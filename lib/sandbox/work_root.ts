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
 * @module
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isProcessAlive } from "./process_tree.ts";
import { removeTree } from "./remove_tree.ts";

const PREFIX = "kiln-";
/** The mark kiln writes into each work root it makes. */
const MARK = "owner";
/** The directory in a work root that holds the job workdirs. */
const JOBS = "jobs";

let current: Promise<string> | undefined;

/**
 * This process's directory for job workdirs (`<tmp>/kiln-<pid>-<random>/jobs`),
 * made on first use, and made again when something removed it.
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
export async function defaultWorkRoot(): Promise<string> {
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
 * The job directory of this process's work root if it was made, else
 * undefined: for the node to remove at its end.
 */
export function currentWorkRoot(): Promise<string | undefined> {
  return current?.catch(() => undefined) ?? Promise.resolve(undefined);
}

/**
 * Removes this process's work root if no workdir is left in it, so that
 * the next {@linkcode defaultWorkRoot} makes a new one. Never throws.
 */
export async function removeWorkRoot(): Promise<void> {
  const removing = current;
  const jobs = await currentWorkRoot();
  if (jobs === undefined) return;
  try {
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
    const removal = await removeTree(path);
    if (removal.ok) outcome.removed++;
    else outcome.failed.push({ path, reason: removal.reason });
  }
  return outcome;
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
