/**
 * The pty layer of the sandbox: every job gets a pool of pseudo-terminals
 * of its own, a devpts instance with `max=` that the kernel enforces. A
 * program that opens one more gets `ENOSPC` from `/dev/ptmx` at once.
 *
 * ## Why
 *
 * bubblewrap's `--dev /dev` mounts a fresh devpts in every sandbox
 * (`newinstance,ptmxmode=0666,mode=620`) with no `max=`, and has no option
 * to set one. Every devpts instance but the host's own (which alone may
 * dip into `kernel.pty.reserve`) draws from one pool of
 * `kernel.pty.max` − `kernel.pty.reserve` ptys (3,072 by default): one
 * sandbox opened 3,071 before `ENOSPC`, and every other job on the host was
 * then left without a terminal. So kiln, as root, mounts a devpts with
 * `max=N` per job beside its workdir, and bwrap binds it over the one it
 * made (`--dev-bind <it> /dev/pts`; bwrap's `/dev/ptmx` is already a link
 * to `pts/ptmx`). The job's ptys then count against both its own `max`
 * and the shared pool: a node whose slots × N stays below the pool leaves
 * every job its N.
 *
 * ```
 * <work root>/kiln-pty-<random>/   the job's devpts, mode 755 in a 700 root
 *   ptmx                           mode 666: each open makes a pty
 *   0, 1, ...                      the job's ptys, owned by its uid, mode 620
 * ```
 *
 * A limit of 0 mounts nothing: devpts reads `max=0` as *no* limit (the
 * kernel's `ida_alloc_max(max - 1)` wraps), so the sandbox covers
 * `/dev/pts` with an empty read-only tmpfs instead, and opening
 * `/dev/ptmx` fails with `ENOENT` (see `bubblewrap.ts`, `noPtys`). That
 * needs no mount of kiln's, so a node that is not root gives it too.
 *
 * ## Per job, not per uid
 *
 * Measured on this project's CI host (Linux 6.18, 2 shared cores):
 * mounting and lazily unmounting a devpts through `mount(2)`/`umount2(2)`
 * (Deno's FFI to libc) costs 0.025 + 0.06 ms (p50; p99 0.06 + 0.2 ms), and
 * 0.27 ms (p99 0.55 ms) with making and removing its directory, once per
 * job; the extra bind costs a step nothing measurable (`bwrap … /bin/true`,
 * p50 5.69 ms without, 5.75 ms with). Keeping one devpts per pool uid would
 * save the mount, but would keep up to one mount per uid of the node's
 * block (65,536) alive between jobs; a fresh instance per job also numbers
 * the job's ptys from 0 and holds nothing of an earlier job.
 *
 * ## Without mount rights
 *
 * A node that is not root cannot mount a devpts in the host's namespace,
 * and bwrap cannot be told to: its jobs get bwrap's devpts, bounded only
 * by the shared pool (its sandbox report says why; a limit of 0 still
 * gives a job no pty at all).
 *
 * @module
 */
import {
  loadMountCalls,
  mountErrnoName,
  type MountLayerDetection,
  SOURCE_PREFIX,
  unmountStaleKilnMounts,
  whyCannotMount,
} from "./_mounts.ts";

/** The kernel's ceiling for a devpts `max=` (`NR_UNIX98_PTY_MAX`): the documented maximum of the pty limit. */
export const MAX_PTY_LIMIT = 1 << 20;

/** `MS_NOSUID | MS_NOEXEC`: device nodes only, and they must stay usable (no `MS_NODEV`). */
const MOUNT_FLAGS = 2n | 8n;
/**
 * The prefix of the directories the sandbox mounts jobs' devpts instances
 * on (`<work root>/kiln-pty-<random>`), which
 * {@linkcode unmountStaleJobPtys} looks for.
 */
export const PTY_DIR_PREFIX = "kiln-pty-";

/** The libc calls the layer makes (see `_mounts.ts`). */
interface Libc {
  /** 0, or the errno. */
  mount(source: string, target: string, data: string): number;
  /** 0, or the errno. */
  umount(target: string): number;
}

/** libc's calls for this layer; a string says why they cannot be made. */
function loadLibc(): Libc | string {
  const calls = loadMountCalls();
  if (typeof calls === "string") return calls;
  return {
    mount: (source, target, data) =>
      calls.mount(source, target, "devpts", MOUNT_FLAGS, data),
    // A devpts holds a few ptys at most: on this thread (see `_mounts.ts`).
    umount: (target) => calls.unmountLazilyNow(target),
  };
}

/** What {@linkcode detectPtyLimit} found. */
export type PtyLimitDetection = MountLayerDetection;

/**
 * Proves the layer works here by using it: mounts a devpts of one pty on a
 * throwaway directory, opens its `ptmx` once (a pty) and again (which must
 * fail with `ENOSPC`), and unmounts it. Never throws.
 *
 * @example Reporting the pty layer
 * ```ts
 * import { detectPtyLimit } from "./pty_limit.ts";
 *
 * const ptys = await detectPtyLimit();
 * console.log(ptys.available ? "a devpts per job" : ptys.reason);
 * ```
 */
export async function detectPtyLimit(): Promise<PtyLimitDetection> {
  const unavailable = whyCannotMount("a devpts with max=");
  if (unavailable !== null) return { available: false, reason: unavailable };
  let dir: string | undefined;
  try {
    dir = await Deno.makeTempDir({ prefix: "kiln-pty-probe-" });
    const ptys = await JobPtys.mount(dir, 1);
    const held: Deno.FsFile[] = [];
    try {
      const ptmx = `${dir}/ptmx`;
      held.push(await Deno.open(ptmx, { read: true, write: true }));
      await Deno.open(ptmx, { read: true, write: true }).then(
        (file) => {
          held.push(file);
          throw new Error("a devpts with max=1 gave a second pty");
        },
        (error) => {
          if (!String(error).includes("No space left")) throw error;
        },
      );
    } finally {
      for (const file of held) file.close();
      await ptys.unmount();
    }
    return { available: true };
  } catch (error) {
    return {
      available: false,
      reason: `cannot mount a devpts with max=: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  } finally {
    if (dir) await Deno.remove(dir).catch(() => {});
  }
}

/**
 * One job's ptys: a devpts instance with `max=limit` mounted on an empty
 * directory, for the sandbox to bind at `/dev/pts`. Mount it with the job's
 * workdir, unmount it when the job is over.
 *
 * @example A job with at most 4 ptys
 * ```ts
 * import { detectPtyLimit, JobPtys } from "./pty_limit.ts";
 *
 * if ((await detectPtyLimit()).available) {
 *   const dir = await Deno.makeTempDir({ prefix: "kiln-pty-" });
 *   const ptys = await JobPtys.mount(dir, 4);
 *   console.log(ptys.limit); // 4: bind ptys.mountPoint at /dev/pts
 *   await ptys.unmount();
 *   await Deno.remove(dir);
 * }
 * ```
 */
export class JobPtys {
  /** The directory the devpts is mounted on. */
  readonly mountPoint: string;
  /** How many ptys the job may hold at once. */
  readonly limit: number;
  readonly #lib: Libc;
  #mounted = true;

  private constructor(lib: Libc, mountPoint: string, limit: number) {
    this.#lib = lib;
    this.mountPoint = mountPoint;
    this.limit = limit;
  }

  /**
   * Mounts a fresh devpts instance of at most `limit` ptys on `mountPoint`
   * (an empty directory): `ptmx` mode 666, each pty owned by whoever
   * opened it, mode 620.
   *
   * @throws {RangeError} when `limit` is not an integer from 1 to
   * {@linkcode MAX_PTY_LIMIT} (the kernel would read 0 as no limit).
   * @throws {Error} naming the errno when the mount fails.
   */
  static mount(mountPoint: string, limit: number): Promise<JobPtys> {
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PTY_LIMIT) {
      return Promise.reject(
        new RangeError(
          `Cannot mount a job's devpts: limit ${limit} is not an integer from 1 to ${MAX_PTY_LIMIT}`,
        ),
      );
    }
    const lib = loadLibc();
    if (typeof lib === "string") return Promise.reject(new Error(lib));
    const errno = lib.mount(
      `${SOURCE_PREFIX}${Deno.pid}`,
      mountPoint,
      `newinstance,ptmxmode=0666,mode=0620,max=${limit}`,
    );
    if (errno !== 0) {
      return Promise.reject(
        new Error(
          `cannot mount a devpts on ${mountPoint}: ${
            mountErrnoName(errno, "devpts")
          }`,
        ),
      );
    }
    return Promise.resolve(new JobPtys(lib, mountPoint, limit));
  }

  /**
   * Unmounts the devpts, lazily: a process that still holds one of its
   * ptys cannot keep it mounted. Calling it again does nothing.
   *
   * @throws {Error} when the kernel refuses.
   */
  unmount(): Promise<void> {
    if (!this.#mounted) return Promise.resolve();
    const errno = this.#lib.umount(this.mountPoint);
    if (errno !== 0) {
      return Promise.reject(
        new Error(
          `cannot unmount the job's devpts ${this.mountPoint}: ${
            mountErrnoName(errno, "devpts")
          }`,
        ),
      );
    }
    this.#mounted = false;
    return Promise.resolve();
  }
}

/**
 * Unmounts the job devpts instances of kiln processes that died (a node
 * killed with SIGKILL cannot unmount its own), so that their work roots
 * can then be removed. Reads `/proc/self/mountinfo`; touches only devpts
 * mounts whose source is `kiln-<pid>` for a pid that is gone, on a
 * directory named `kiln-pty-…`. Returns how many it unmounted. Never throws.
 *
 * @example Sweeping at start-up
 * ```ts
 * import { unmountStaleJobPtys } from "./pty_limit.ts";
 * import { isProcessAlive } from "./process_tree.ts";
 *
 * console.log(await unmountStaleJobPtys(isProcessAlive)); // 0 on a clean host
 * ```
 */
export function unmountStaleJobPtys(
  isAlive: (pid: number) => Promise<boolean>,
): Promise<number> {
  return unmountStaleKilnMounts(
    "devpts",
    isAlive,
    (mountPoint) =>
      mountPoint.slice(mountPoint.lastIndexOf("/") + 1).startsWith(
        PTY_DIR_PREFIX,
      ),
  );
}
