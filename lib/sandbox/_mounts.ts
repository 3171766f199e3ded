/**
 * The mount calls the job disk and the job devpts make, through Deno's FFI
 * to libc: `mount(2)` and `umount2(2)` cost a few hundredths of a
 * millisecond where the `mount` and `umount` commands cost about 8 ms.
 * An unmount that frees little is made on the event loop's thread: handing
 * it to another thread costs more CPU than the call itself.
 * Needs `--allow-ffi` (within `-A`); without it, or without glibc, the
 * loader says why, and the layers that need it are reported missing.
 *
 * @module
 */

/** `MNT_DETACH`: a lazy unmount, which never fails because a process still holds a file. */
const MNT_DETACH = 2;

/** The fields of `struct statfs` the disk layer reads. */
export interface StatFs {
  type: bigint;
  blockSize: number;
  blocks: number;
  freeBlocks: number;
  files: number;
  freeFiles: number;
}

/** libc's mount calls, as the sandbox's layers use them. */
export interface MountCalls {
  /** `mount(2)`: 0, or the errno. */
  mount(
    source: string,
    target: string,
    type: string,
    flags: bigint,
    data: string,
  ): number;
  /**
   * A lazy `umount2(2)`, off the event loop (it frees every file of a tmpfs
   * on return, however many a program made): 0, or -1 (the errno of a call
   * on another thread is lost).
   */
  unmountLazily(target: string): Promise<number>;
  /**
   * The same `umount2(2)` on this thread, for a mount that holds little:
   * 0, or the errno.
   */
  unmountLazilyNow(target: string): number;
  /** `statfs(2)`: the fields above, or the errno. */
  statfs(path: string): StatFs | number;
}

let loaded: MountCalls | string | undefined;

/** libc's mount calls, loaded once; a string says why they cannot be. */
export function loadMountCalls(): MountCalls | string {
  if (loaded !== undefined) return loaded;
  try {
    const lib = Deno.dlopen("libc.so.6", {
      mount: {
        parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
        result: "i32",
      },
      umount2: {
        parameters: ["buffer", "i32"],
        result: "i32",
        nonblocking: true,
      },
      umount2Now: {
        name: "umount2",
        parameters: ["buffer", "i32"],
        result: "i32",
      },
      statfs: { parameters: ["buffer", "buffer"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    });
    const encoder = new TextEncoder();
    const c = (text: string) => encoder.encode(`${text}\0`);
    const errno = () => {
      const pointer = lib.symbols.__errno_location();
      return pointer === null
        ? -1
        : new Deno.UnsafePointerView(pointer).getInt32();
    };
    loaded = {
      mount: (source, target, type, flags, data) =>
        lib.symbols.mount(c(source), c(target), c(type), flags, c(data)) === 0
          ? 0
          : errno(),
      unmountLazily: (target) => lib.symbols.umount2(c(target), MNT_DETACH),
      unmountLazilyNow: (target) =>
        lib.symbols.umount2Now(c(target), MNT_DETACH) === 0 ? 0 : errno(),
      statfs: (path) => {
        // struct statfs on 64-bit Linux: 15 longs (120 bytes).
        const buffer = new BigUint64Array(16);
        if (lib.symbols.statfs(c(path), buffer) !== 0) return errno();
        const n = (i: number) => Number(buffer[i]!);
        return {
          type: buffer[0]!,
          blockSize: n(1),
          blocks: n(2),
          freeBlocks: n(3),
          files: n(5),
          freeFiles: n(6),
        };
      },
    };
  } catch (error) {
    loaded = `cannot call libc's mount(2) through Deno's FFI: ${
      error instanceof Error ? error.message : String(error)
    }`;
  }
  return loaded;
}

/** The mount source of a job's mount names the kiln process: `kiln-<pid>`. */
export const SOURCE_PREFIX = "kiln-";

/**
 * Unmounts the `type` mounts of kiln processes that died (a node killed
 * with SIGKILL cannot unmount its own): those whose source is `kiln-<pid>`
 * for a pid that is gone and whose mount point `isJobMount` recognises.
 * Reads `/proc/self/mountinfo`. Returns how many it unmounted. Never throws.
 */
export async function unmountStaleKilnMounts(
  type: string,
  isAlive: (pid: number) => Promise<boolean>,
  isJobMount: (mountPoint: string) => boolean,
): Promise<number> {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return 0;
  const calls = loadMountCalls();
  if (typeof calls === "string") return 0;
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo").catch(
    () => "",
  );
  let unmounted = 0;
  for (const line of mountinfo.split("\n")) {
    // "<id> <parent> <dev> <root> <mount point> <options> ... - <type> <source> <super options>"
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const [mountType, source] = right.split(" ");
    if (mountType !== type || !source?.startsWith(SOURCE_PREFIX)) continue;
    const digits = source.slice(SOURCE_PREFIX.length);
    if (!/^[0-9]{1,10}$/.test(digits)) continue;
    const pid = Number(digits);
    if (pid === Deno.pid || await isAlive(pid)) continue;
    const mountPoint = unescapeMountinfo(left.split(" ")[4] ?? "");
    if (!isJobMount(mountPoint)) continue;
    if (await calls.unmountLazily(mountPoint) === 0) unmounted++;
  }
  return unmounted;
}

/** `/proc/self/mountinfo` writes space, tab, newline and backslash as `\ooo`. */
function unescapeMountinfo(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM (not permitted)",
  2: "ENOENT (no such directory)",
  12: "ENOMEM",
  13: "EACCES (permission denied)",
  16: "EBUSY",
  20: "ENOTDIR",
  22: "EINVAL",
};

/** An errno of a mount of `type`, by name. */
export function mountErrnoName(errno: number, type: string): string {
  if (errno === 19) return `ENODEV (no ${type} in this kernel)`;
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** What a layer built on mounts found when it probed this host. */
export type MountLayerDetection =
  | { readonly available: true }
  | { readonly available: false; readonly reason: string };

/**
 * Why a node cannot mount `what` per job here (not Linux, not root, no FFI
 * to libc), or null when it may try: the probe then proves it by using it.
 */
export function whyCannotMount(what: string): string | null {
  if (Deno.build.os !== "linux") return `needs Linux, not ${Deno.build.os}`;
  if (Deno.uid() !== 0) {
    return `mounting ${what} per job needs root (running as uid ${Deno.uid()})`;
  }
  const calls = loadMountCalls();
  return typeof calls === "string" ? calls : null;
}
