/**
 * The disk layer of the sandbox: every job gets a disk of its own, a tmpfs
 * mounted on its job directory with a size (`size=`) and a number of files
 * (`nr_inodes=`) the kernel enforces. A program that writes past either gets
 * `ENOSPC` from the kernel, at once; nothing polls.
 *
 * ```
 * <work root>/kiln-job-<random>/   the tmpfs, root's, mode 711
 *   work/                          the workdir: sources, build, the program's cwd
 *   tmp/                           bound at /tmp in the sandbox, mode 1777
 * ```
 *
 * The workdir and `/tmp` share the one limit, and both steps (compile and
 * run) the one disk. Unmounting at the end of the job frees everything at
 * once, however many files the program made, and a workdir no longer needs
 * a walk to be removed.
 *
 * ## Why a tmpfs (and who pays for its pages)
 *
 * Measured on this project's CI host (Linux 6.18, cgroup v1): mounting and
 * unmounting a tmpfs costs about 0.03 ms + 0.2 ms per job through `mount(2)`
 * and `umount2(2)` (Deno's FFI to libc; the `mount`/`umount` commands cost
 * 8 ms). A loop device needs a file, `mkfs` and a mount per job (tens of ms),
 * or a pool of them; project quotas need XFS or an ext4 mounted with
 * `prjquota`, which kiln cannot assume. tmpfs needs only root.
 *
 * A tmpfs lives in memory. Its pages are charged to the memory cgroup of
 * the process that wrote them, on cgroup v1 and v2 alike, and stay charged
 * (to that cgroup, or its parent once it is removed) until the file is
 * deleted or the tmpfs unmounted. So what the run step writes counts against
 * its memory limit too: a job whose memory limit is below its disk limit is
 * stopped by the OOM killer (`memory_limit`) before it fills its disk. What
 * the compile step wrote (the binary) is charged to the compile step's
 * cgroup and leaves the node's memory when the job ends. The node's memory
 * must therefore cover slots × (memory + disk) in the worst case.
 *
 * ## Without mount rights
 *
 * A node that is not root (or may not mount, or has no FFI permission) has
 * no disk layer: its sandbox report says why, the node warns at start, and
 * jobs write into a plain directory, limited only by the file size limit.
 *
 * @module
 */
import { join } from "node:path";
import {
  loadMountCalls,
  mountErrnoName,
  type MountLayerDetection,
  SOURCE_PREFIX,
  type StatFs,
  unmountStaleKilnMounts,
  whyCannotMount,
} from "./_mounts.ts";

/** `MS_NOSUID | MS_NODEV`: no setuid binaries, no device files on a job's disk. */
const MOUNT_FLAGS = 2n | 4n;
/**
 * A job disk at most this full is unmounted on the event loop's thread
 * (see {@linkcode JobDisk.unmount}): freeing this much takes well under a
 * millisecond.
 */
const SMALL_DISK_BYTES = 4 * 1024 * 1024;
const SMALL_DISK_FILES = 256;

/** `TMPFS_MAGIC`, what `statfs` says a tmpfs is. */
const TMPFS_MAGIC = 0x01021994n;

/** The libc calls the layer makes (see `_mounts.ts`). */
interface Libc {
  /** 0, or the errno. */
  mount(source: string, target: string, data: string): number;
  /** Off the event loop: 0, or -1. */
  umount(target: string): Promise<number>;
  /** On this thread, for a disk that holds little: 0, or the errno. */
  umountNow(target: string): number;
  /** The fields of `struct statfs` the layer reads, or the errno. */
  statfs(path: string): StatFs | number;
}

/** libc's calls for this layer; a string says why they cannot be made. */
function loadLibc(): Libc | string {
  const calls = loadMountCalls();
  if (typeof calls === "string") return calls;
  return {
    mount: (source, target, data) =>
      calls.mount(source, target, "tmpfs", MOUNT_FLAGS, data),
    umount: (target) => calls.unmountLazily(target),
    umountNow: (target) => calls.unmountLazilyNow(target),
    statfs: (path) => calls.statfs(path),
  };
}

/** What {@linkcode detectDiskLimit} found. */
export type DiskLimitDetection = MountLayerDetection;

/**
 * Proves the layer works here by using it: mounts a 1 MiB tmpfs of 8 files
 * on a throwaway directory, fills it, checks `statfs` says so, and unmounts
 * it. Never throws.
 *
 * @example Reporting the disk layer
 * ```ts
 * import { detectDiskLimit } from "./disk_limit.ts";
 *
 * const disk = await detectDiskLimit();
 * console.log(disk.available ? "tmpfs per job" : disk.reason);
 * ```
 */
export async function detectDiskLimit(): Promise<DiskLimitDetection> {
  const unavailable = whyCannotMount("a tmpfs");
  if (unavailable !== null) return { available: false, reason: unavailable };
  let dir: string | undefined;
  try {
    dir = await Deno.makeTempDir({ prefix: "kiln-disk-probe-" });
    const disk = await JobDisk.mount(dir, { sizeBytes: 1 << 20, files: 8 });
    try {
      await Deno.writeFile(join(disk.workdir, "fill"), new Uint8Array(2 << 20))
        .then(
          () => {
            throw new Error("a 2 MiB file fitted in a 1 MiB tmpfs");
          },
          (error) => {
            if (!String(error).includes("No space left")) throw error;
          },
        );
      const fill = disk.fill();
      if (!fill.full) {
        throw new Error(`statfs does not see the full tmpfs: ${fill.reason}`);
      }
    } finally {
      await disk.unmount();
    }
    return { available: true };
  } catch (error) {
    return {
      available: false,
      reason: `cannot mount a size-capped tmpfs: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  } finally {
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The limits of one job's disk. */
export interface JobDiskLimits {
  /** Bytes of file data, the workdir and `/tmp` together. */
  readonly sizeBytes: number;
  /** Files, directories and links the job may have, its sources included. */
  readonly files: number;
}

/** How full a job's disk is. */
export interface DiskFill {
  /** Whether the job reached its size or file limit. */
  readonly full: boolean;
  /** What is full, or why it could not be measured, for a reason. */
  readonly reason: string;
  /** Bytes in use, or null when `statfs` failed. */
  readonly usedBytes: number | null;
  /** Files in use (kiln's own directories included), or null. */
  readonly usedFiles: number | null;
}

/**
 * One job's disk: a size-capped tmpfs mounted on its job directory. Make it
 * before writing the sources, unmount it when the job is over.
 *
 * @example A job disk of 16 MiB and 100 files
 * ```ts
 * import { detectDiskLimit, JobDisk } from "./disk_limit.ts";
 *
 * if ((await detectDiskLimit()).available) {
 *   const dir = await Deno.makeTempDir();
 *   const disk = await JobDisk.mount(dir, { sizeBytes: 16 << 20, files: 100 });
 *   await Deno.writeTextFile(`${disk.workdir}/main.py`, "print(1)\n");
 *   console.log(disk.fill().full); // false
 *   await disk.unmount();
 *   await Deno.remove(dir);
 * }
 * ```
 */
export class JobDisk {
  /** The job directory the tmpfs is mounted on. */
  readonly mountPoint: string;
  /** The workdir: `<mountPoint>/work`, mode 700, still root's (hand it over as for any workdir). */
  readonly workdir: string;
  /** The job's `/tmp`: `<mountPoint>/tmp`, mode 1777. */
  readonly tmpDir: string;
  readonly #lib: Libc;
  #mounted = true;

  private constructor(lib: Libc, mountPoint: string) {
    this.#lib = lib;
    this.mountPoint = mountPoint;
    this.workdir = join(mountPoint, "work");
    this.tmpDir = join(mountPoint, "tmp");
  }

  /**
   * Mounts a tmpfs of `limits` on `mountPoint` (an empty directory) and
   * makes the workdir and `/tmp` in it. The file limit gets a few inodes
   * more for kiln's own directories: the root, `work` and `tmp`, and the
   * parents bubblewrap makes in `/tmp` for a workdir below it (one per
   * component of the path).
   *
   * @throws {RangeError} on limits that are not positive integers.
   * @throws {Error} naming the errno when the mount fails.
   */
  static async mount(
    mountPoint: string,
    limits: JobDiskLimits,
  ): Promise<JobDisk> {
    const { sizeBytes, files } = limits;
    for (
      const [name, value] of [["sizeBytes", sizeBytes], [
        "files",
        files,
      ]] as const
    ) {
      if (!Number.isSafeInteger(value) || value <= 0) {
        throw new RangeError(
          `Cannot mount a job disk: ${name} ${value} is not a positive integer`,
        );
      }
    }
    const lib = loadLibc();
    if (typeof lib === "string") throw new Error(lib);
    const reserved = 3 + mountPoint.split("/").filter(Boolean).length;
    const errno = lib.mount(
      `${SOURCE_PREFIX}${Deno.pid}`,
      mountPoint,
      `size=${sizeBytes},nr_inodes=${files + reserved},mode=0711`,
    );
    if (errno !== 0) {
      throw new Error(
        `cannot mount a tmpfs on ${mountPoint}: ${
          mountErrnoName(errno, "tmpfs")
        }`,
      );
    }
    const disk = new JobDisk(lib, mountPoint);
    try {
      // Synchronous: a fresh tmpfs is memory, and async calls would cost
      // thread hops worth more than the calls.
      Deno.mkdirSync(disk.workdir, { mode: 0o700 });
      Deno.mkdirSync(disk.tmpDir);
      // mkdir's mode passes through the umask: set the sticky bit here.
      Deno.chmodSync(disk.tmpDir, 0o1777);
    } catch (error) {
      await disk.unmount();
      throw error;
    }
    return disk;
  }

  /**
   * Whether the job filled its disk (no block or no inode left), measured
   * by `statfs` on the mount: kiln's own evidence, not the program's output.
   */
  fill(): DiskFill {
    const stat = this.#lib.statfs(this.mountPoint);
    if (typeof stat === "number") {
      return {
        full: false,
        reason: `statfs failed: ${mountErrnoName(stat, "tmpfs")}`,
        usedBytes: null,
        usedFiles: null,
      };
    }
    if (stat.type !== TMPFS_MAGIC) {
      return {
        full: false,
        reason: "the job disk is not mounted",
        usedBytes: null,
        usedFiles: null,
      };
    }
    const noSpace = stat.freeBlocks === 0;
    const noFiles = stat.freeFiles === 0;
    return {
      full: noSpace || noFiles,
      reason: noSpace && noFiles
        ? "no space and no file left"
        : noSpace
        ? "no space left"
        : noFiles
        ? "no file left"
        : "not full",
      usedBytes: (stat.blocks - stat.freeBlocks) * stat.blockSize,
      usedFiles: stat.files - stat.freeFiles,
    };
  }

  /**
   * Unmounts the tmpfs (lazily: a process of the job that still holds a
   * file cannot keep it mounted), which frees every file in it. Calling it
   * again does nothing.
   *
   * @throws {Error} when the kernel refuses.
   */
  async unmount(): Promise<void> {
    if (!this.#mounted) return;
    // What the unmount frees is freed before it returns: a disk that holds
    // little is unmounted on this thread (cheaper than a hop to another),
    // a full one off the event loop, which it could stall for milliseconds.
    const { usedBytes, usedFiles } = this.fill();
    const small = usedBytes !== null && usedFiles !== null &&
      usedBytes <= SMALL_DISK_BYTES && usedFiles <= SMALL_DISK_FILES;
    const failed = small
      ? this.#lib.umountNow(this.mountPoint) !== 0
      : await this.#lib.umount(this.mountPoint) !== 0;
    if (failed) {
      throw new Error(`cannot unmount the job disk ${this.mountPoint}`);
    }
    this.#mounted = false;
  }
}

/**
 * Unmounts the job disks of kiln processes that died (a node killed with
 * SIGKILL cannot unmount its own), so that their work roots can then be
 * removed. Reads `/proc/self/mountinfo`; touches only tmpfs mounts whose
 * source is `kiln-<pid>` for a pid that is gone. Returns how many it
 * unmounted. Never throws.
 */
export function unmountStaleJobDisks(
  isAlive: (pid: number) => Promise<boolean>,
): Promise<number> {
  return unmountStaleKilnMounts(
    "tmpfs",
    isAlive,
    (mountPoint) => mountPoint.includes("/kiln-job-"),
  );
}
