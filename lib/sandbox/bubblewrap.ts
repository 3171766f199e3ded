/**
 * The namespace layer of the sandbox: a command prefix that runs a job step
 * under bubblewrap (`bwrap`) as an unprivileged uid, and the detection that
 * proves it works on this host.
 *
 * What the program gets:
 *
 * - its own mount, pid, network, IPC and UTS namespaces (and a cgroup
 *   namespace where the kernel has one). The network namespace holds only a
 *   loopback interface: no route out at all;
 * - a root that is an empty tmpfs with `/usr`, `/etc` and the `/bin`, `/sbin`,
 *   `/lib*` entry points bound read-only, plus any toolchain root the caller
 *   names (also read-only, at the same path: `/root/.pyenv/versions/3.11.7`);
 * - the job's workdir as the only writable host directory, and a fresh
 *   size-capped tmpfs at `/tmp` (its pages are memory, charged to the job's
 *   memory cgroup as well);
 * - a fresh `/proc` showing only the sandbox's processes, a minimal `/dev`
 *   whose ptys are the job's own, as many as its limit (`ptsDir`,
 *   `noPtys`; see `pty_limit.ts`);
 * - a cleared environment holding exactly `env`;
 * - `--die-with-parent` (the whole sandbox dies when bwrap's parent does) and
 *   `--new-session` (no `TIOCSTI` into our terminal).
 *
 * ## How the uid drop works
 *
 * kiln runs as root. Three ways were measured on this host (Debian, kernel
 * 6.18, bubblewrap 0.8.0):
 *
 * 1. `bwrap --unshare-user --uid 65534` as root: the user namespace maps the
 *    sandbox's uid to *root* outside, so files the program writes belong to
 *    root and a root-owned `0640` file such as `/etc/shadow` is readable
 *    through its owner bits. Rejected.
 * 2. `setpriv --reuid=65534 … bwrap --unshare-all` (bwrap itself
 *    unprivileged, inside a user namespace it creates): works here and also
 *    forbids nested user namespaces (`--disable-userns`), but bwrap then
 *    resolves bind sources as uid 65534, which cannot enter `/root` (mode
 *    700), where pyenv's Python and rustup's Rust live. It also needs
 *    unprivileged user namespaces, which many container hosts forbid.
 * 3. **Chosen:** bwrap runs as root *without* a user namespace (explicit
 *    `--unshare-ipc --unshare-pid --unshare-net --unshare-uts`), so it can
 *    bind any path; it drops every capability except `CAP_SETUID`,
 *    `CAP_SETGID`, `CAP_SETPCAP` and `CAP_DAC_READ_SEARCH` and execs
 *    `setpriv --reuid --regid --clear-groups --inh-caps=-all
 *    --bounding-set=-all`, which becomes the unprivileged uid and execs the
 *    program. Changing the uid away from 0 clears the permitted, effective
 *    and ambient capabilities, the inheritable and bounding sets are
 *    emptied explicitly, and bwrap has set `no_new_privs`, so nothing
 *    (setuid binary or file capability) can regain root. The program runs
 *    as the real uid 65534 in the initial user namespace: what it writes
 *    belongs to 65534, and root-only files stay root-only.
 *    `CAP_DAC_READ_SEARCH` is needed only because bwrap changes into the
 *    workdir (mode 700, owned by the job uid) after dropping capabilities.
 *
 * Caveats of the choice: bwrap runs as root (it is not setuid, and its root
 * is the caller's own); and the program, being an ordinary unprivileged user
 * of the host kernel, could create user namespaces of its own: the seccomp
 * layer (`seccomp.ts`, installed through `seccompFd`) denies that.
 *
 * ## A node that is not root
 *
 * A non-root kiln cannot drop to another uid, so it takes the way rootless
 * Podman does ({@linkcode BwrapOptions}' `rootless`): bwrap, itself
 * unprivileged, creates a user namespace (`--unshare-user`) mapping only
 * the node's own uid to itself, and in it the same mount, pid, network,
 * IPC and UTS namespaces, the same read-only system and the same seccomp
 * filter. The program runs with no capability at all (`--cap-drop ALL`
 * empties even the bounding set, and bwrap sets `no_new_privs`), and
 * `--disable-userns` keeps it from creating a user namespace of its own
 * even before the filter (whose `clone`/`unshare` rules bind the program
 * only: bwrap has made its namespaces before it loads the filter). It needs
 * a kernel that lets an unprivileged user create user namespaces
 * ({@linkcode userNamespacesRefused}). What it cannot give is a uid per
 * job: every job runs as the node's uid, so jobs share that uid's kernel
 * counters (inotify instances, user keyrings, which seccomp shuts) and
 * can read what the node's uid can read among the paths bound into the
 * sandbox.
 *
 * Nothing secret may be put in `env`: bwrap gets it as `--setenv` arguments,
 * and the sandbox's pid 1 is a fork of bwrap whose command line
 * (`/proc/1/cmdline`) every process inside can read.
 *
 * @module
 */
import { dirname, isAbsolute, join, normalize } from "node:path";

/** Where bubblewrap normally lives. */
export const DEFAULT_BWRAP_PATH = "/usr/bin/bwrap";

/** Where util-linux `setpriv` normally lives. */
export const DEFAULT_SETPRIV_PATH = "/usr/bin/setpriv";

/**
 * `nobody` and `nogroup`: the uid and gid the detection probes run as.
 * Jobs never do: each runs as a uid of its own (see `identity.ts`).
 */
export const SANDBOX_UID = 65534;

/**
 * The node's own uid and gid: what a rootless sandbox runs jobs as
 * ({@linkcode BwrapOptions}' `rootless`).
 *
 * @example The uid a rootless job runs as
 * ```ts
 * import { nodeIdentity } from "./bubblewrap.ts";
 *
 * console.log(nodeIdentity().uid === Deno.uid()); // true on Linux
 * ```
 */
export function nodeIdentity(): { uid: number; gid: number } {
  const uid = Deno.uid() ?? 0;
  return { uid, gid: Deno.gid() ?? uid };
}

/**
 * Oldest bubblewrap with everything the prefix uses: `--size` (0.8.0),
 * `--perms` (0.5.0), `--unshare-cgroup-try` and `--die-with-parent`.
 */
export const MIN_BWRAP_VERSION = "0.8.0";

/**
 * Host directories bound read-only at the same path. Where one is a symlink
 * (Debian's merged `/usr` makes `/bin` point to `usr/bin`), bwrap binds its
 * target, which is the same files. Missing ones are skipped.
 */
const SYSTEM_PATHS = [
  "/usr",
  "/etc",
  "/bin",
  "/sbin",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
] as const;

/** Options of {@linkcode bwrapPrefix}. */
export interface BwrapOptions {
  /** Absolute path of bwrap. */
  readonly bwrapPath: string;
  /**
   * Absolute path of the job's workdir: bound read-write at the same path
   * and the program's working directory. It must belong to `uid`
   * (see {@linkcode prepareWorkdir}).
   */
  readonly workdir: string;
  /**
   * Extra absolute paths bound read-only at the same path, e.g. toolchain
   * roots outside the system directories (see {@linkcode toolchainRoots}).
   * Paths already inside a system directory are skipped.
   * @default []
   */
  readonly readOnlyPaths?: readonly string[];
  /** Size of the `/tmp` tmpfs in bytes; writing more fails with ENOSPC. */
  readonly tmpSizeBytes: number;
  /** Uid the program runs as, usually {@linkcode SANDBOX_UID}. Never 0. */
  readonly uid: number;
  /** Gid the program runs as, usually {@linkcode SANDBOX_UID}. Never 0. */
  readonly gid: number;
  /**
   * The program's whole environment. Visible to the program's sandbox on
   * bwrap's command line: never put a secret here.
   */
  readonly env: Readonly<Record<string, string>>;
  /** Absolute path of util-linux `setpriv`. @default "/usr/bin/setpriv" */
  readonly setprivPath?: string;
  /** Host name inside the sandbox. @default "kiln" */
  readonly hostname?: string;
  /**
   * A host directory to bind at `/tmp` instead of a fresh tmpfs of
   * `tmpSizeBytes`: the job's size-capped disk (see `disk_limit.ts`), so
   * that the workdir and `/tmp` share one limit.
   */
  readonly tmpDir?: string | undefined;
  /**
   * A descriptor, open in bwrap, holding the seccomp filter bwrap installs
   * before it execs the program (`--seccomp FD`; see `seccomp.ts`).
   */
  readonly seccompFd?: number | undefined;
  /**
   * A devpts instance of the job's own, bound at `/dev/pts` over the one
   * bwrap makes, which has no limit (see `pty_limit.ts`).
   */
  readonly ptsDir?: string | undefined;
  /**
   * No pty at all: an empty read-only tmpfs covers `/dev/pts`, so opening
   * `/dev/ptmx` fails with `ENOENT`. Wins over `ptsDir`. @default false
   */
  readonly noPtys?: boolean | undefined;
  /**
   * For a node that is not root: bwrap creates a user namespace mapping
   * `uid` and `gid`, which must then be the node's own, to themselves, and
   * the program runs as them with no capability, without the `setpriv`
   * link (see the module doc). @default false
   */
  readonly rootless?: boolean;
}

/**
 * The argument prefix that runs a command in the sandbox: put the absolute
 * path of the command and its arguments after it. The caller (root) spawns
 * the result with a cleared environment.
 *
 * @throws {TypeError} when a path is not absolute, or an env name is empty
 * or holds `=`.
 * @throws {RangeError} when `uid` or `gid` is 0 or not an id, or
 * `tmpSizeBytes` is not a positive integer.
 *
 * @example Running `id -u` as nobody in the sandbox
 * ```ts
 * import { bwrapPrefix, prepareWorkdir, SANDBOX_UID } from "./bubblewrap.ts";
 *
 * const workdir = await Deno.makeTempDir({ prefix: "kiln-job-" });
 * await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
 * const prefix = bwrapPrefix({
 *   bwrapPath: "/usr/bin/bwrap",
 *   workdir,
 *   tmpSizeBytes: 16 << 20,
 *   uid: SANDBOX_UID,
 *   gid: SANDBOX_UID,
 *   env: { PATH: "/usr/bin:/bin", HOME: workdir },
 * });
 * const [command, ...args] = [...prefix, "/usr/bin/id", "-u"];
 * console.log(command, args.length); // "/usr/bin/bwrap", then the flags
 * await Deno.remove(workdir, { recursive: true });
 * ```
 */
export function bwrapPrefix(options: BwrapOptions): string[] {
  const {
    bwrapPath,
    workdir,
    readOnlyPaths = [],
    tmpSizeBytes,
    uid,
    gid,
    env,
    setprivPath = DEFAULT_SETPRIV_PATH,
    hostname = "kiln",
    tmpDir,
    seccompFd,
    rootless = false,
    ptsDir,
    noPtys = false,
  } = options;
  for (
    const [what, path] of [
      ["bwrapPath", bwrapPath],
      ["workdir", workdir],
      [
        "setprivPath",
        setprivPath,
      ],
      ...readOnlyPaths.map((path) => ["readOnlyPaths", path] as const),
      ...(
        tmpDir === undefined ? [] : [["tmpDir", tmpDir] as const]
      ),
      ...(
        ptsDir === undefined ? [] : [["ptsDir", ptsDir] as const]
      ),
    ]
  ) {
    if (!isAbsolute(path)) {
      throw new TypeError(
        `Cannot build sandbox: ${what} "${path}" is not an absolute path`,
      );
    }
  }
  for (const [what, id] of [["uid", uid], ["gid", gid]] as const) {
    if (!Number.isSafeInteger(id) || id <= 0 || id > 0xfffffffe) {
      throw new RangeError(
        `Cannot build sandbox: ${what} ${id} is not an unprivileged id`,
      );
    }
  }
  if (!Number.isSafeInteger(tmpSizeBytes) || tmpSizeBytes <= 0) {
    throw new RangeError(
      `Cannot build sandbox: tmpSizeBytes ${tmpSizeBytes} is not a positive integer`,
    );
  }

  const args = [
    bwrapPath,
    // As root every namespace but the user namespace; without root, the
    // user namespace that makes the others possible (see the module doc).
    ...rootless
      ? [
        "--unshare-user",
        "--disable-userns",
        "--uid",
        `${uid}`,
        "--gid",
        `${gid}`,
      ]
      : [],
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--hostname",
    hostname,
  ];
  for (const path of SYSTEM_PATHS) {
    args.push(
      path === "/usr" || path === "/etc" ? "--ro-bind" : "--ro-bind-try",
      path,
      path,
    );
  }
  args.push("--proc", "/proc", "--dev", "/dev");
  // bwrap's /dev/ptmx is a link to pts/ptmx: covering /dev/pts is enough.
  if (noPtys) {
    args.push("--tmpfs", "/dev/pts", "--remount-ro", "/dev/pts");
  } else if (ptsDir !== undefined) {
    args.push("--dev-bind", clean(ptsDir), "/dev/pts");
  }
  if (tmpDir === undefined) {
    args.push(
      "--perms",
      "1777",
      "--size",
      `${tmpSizeBytes}`,
      "--tmpfs",
      "/tmp",
    );
  } else args.push("--bind", clean(tmpDir), "/tmp");
  if (seccompFd !== undefined) {
    if (!Number.isInteger(seccompFd) || seccompFd < 3) {
      throw new RangeError(
        `Cannot build sandbox: seccompFd ${seccompFd} is not a descriptor above 2`,
      );
    }
    args.push("--seccomp", `${seccompFd}`);
  }
  // Mount points get their missing parents made world-searchable first:
  // bwrap would copy a 700 /root from the host, or make a 700 directory in
  // the /tmp tmpfs, which the job's uid could not pass through. Inside a
  // read-only bind nothing can be made (nor needs to be).
  const mounted: string[] = [...SYSTEM_PATHS, "/proc", "/dev"];
  const writable = ["/tmp"];
  const made = new Set<string>(writable);
  const makeParents = (path: string) => {
    const parents: string[] = [];
    for (let dir = dirname(path); dir !== "/"; dir = dirname(dir)) {
      parents.unshift(dir);
    }
    for (const dir of parents) {
      if (within(dir, mounted)) return;
      if (made.has(dir)) continue;
      made.add(dir);
      args.push("--perms", "0755", "--dir", dir);
    }
  };
  for (const raw of readOnlyPaths) {
    const path = clean(raw);
    if (within(path, mounted)) continue;
    makeParents(path);
    args.push("--ro-bind", path, path);
    mounted.push(path);
  }
  const work = clean(workdir);
  makeParents(work);
  args.push("--bind", work, work, "--chdir", work, "--clearenv");
  for (const [name, value] of Object.entries(env)) {
    if (name === "" || name.includes("=")) {
      throw new TypeError(
        `Cannot build sandbox: environment variable name "${name}" is empty or holds "="`,
      );
    }
    args.push("--setenv", name, value);
  }
  if (rootless) {
    // The node's own uid already: nothing to drop to, every capability
    // (of the user namespace) dropped.
    args.push("--cap-drop", "ALL", "--");
    return args;
  }
  args.push(
    "--cap-drop",
    "ALL",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
    "--cap-add",
    "CAP_SETPCAP",
    "--cap-add",
    "CAP_DAC_READ_SEARCH",
    "--",
    setprivPath,
    `--reuid=${uid}`,
    `--regid=${gid}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
  );
  return args;
}

/** `path` normalized, without a trailing slash. */
function clean(path: string): string {
  const normal = normalize(path);
  return normal.length > 1 ? normal.replace(/\/+$/, "") : normal;
}

/** True when `path` is one of `roots` or inside one. */
function within(path: string, roots: readonly string[]): boolean {
  return roots.some((root) => path === root || path.startsWith(`${root}/`));
}

/**
 * Makes `workdir` belong to the job's uid and gid with mode 700, so the
 * sandboxed program can write it and no other host user can look in. Call
 * it after writing the sources and before the first step, never after a
 * sandboxed step ran: root walking a tree the program could change (a file
 * swapped for a symlink between the read and the chown) could be made to
 * chown a host file. Symlinks are skipped, not followed.
 *
 * @example Preparing a workdir
 * ```ts
 * import { prepareWorkdir, SANDBOX_UID } from "./bubblewrap.ts";
 *
 * const workdir = await Deno.makeTempDir({ prefix: "kiln-job-" });
 * await Deno.writeTextFile(`${workdir}/main.py`, "print(1)\n");
 * await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
 * await Deno.remove(workdir, { recursive: true });
 * ```
 */
export function prepareWorkdir(
  workdir: string,
  uid: number,
  gid: number,
): Promise<void> {
  try {
    handOver(workdir, uid, gid);
    return Promise.resolve();
  } catch (error) {
    return Promise.reject(error);
  }
}

function handOver(workdir: string, uid: number, gid: number): void {
  // Synchronous: the sources kiln just wrote are a few files in memory
  // (a tmpfs or the page cache), and each async call would cost a hop to
  // another thread and back. A list, not recursion: however deep.
  const pending = [workdir];
  for (let path = pending.pop(); path !== undefined; path = pending.pop()) {
    Deno.chownSync(path, uid, gid);
    if (!Deno.lstatSync(path).isDirectory) continue;
    for (const entry of Deno.readDirSync(path)) {
      // A symlink is changed itself (lchown semantics are what we want, and
      // Deno.chown follows links): skip it rather than chown its target.
      if (entry.isSymlink) continue;
      pending.push(join(path, entry.name));
    }
  }
  Deno.chmodSync(workdir, 0o700);
}

/**
 * The directories to bind read-only so that `executables` run inside the
 * sandbox: for each executable outside the system directories, the
 * installation prefix of the path and of its resolved target
 * (`<prefix>/bin/<name>` gives `<prefix>`). Executables under `/usr`,
 * `/bin` and the like need nothing.
 *
 * @example The roots of pyenv's Python
 * ```ts
 * import { toolchainRoots } from "./bubblewrap.ts";
 *
 * const roots = await toolchainRoots(["/usr/bin/gcc", "/root/.pyenv/versions/3.11.7/bin/python3"]);
 * // ["/root/.pyenv/versions/3.11.7"] where that Python exists
 * console.log(roots);
 * ```
 */
export async function toolchainRoots(
  executables: Iterable<string>,
): Promise<string[]> {
  const roots = new Set<string>();
  const add = (path: string) => {
    if (within(path, SYSTEM_PATHS)) return;
    const dir = dirname(path);
    roots.add(dir.endsWith("/bin") ? dirname(dir) : dir);
  };
  for (const executable of executables) {
    add(clean(executable));
    try {
      add(await Deno.realPath(executable));
    } catch {
      // Missing: detection reports that; there is nothing to bind.
    }
  }
  // Keep only outermost roots: binding a parent covers its children.
  const sorted = [...roots].sort();
  return sorted.filter((root, i) =>
    !sorted.slice(0, i).some((other) => within(root, [other]))
  );
}

/** What {@linkcode detectBubblewrap} found. */
export type BubblewrapDetection =
  | {
    readonly available: true;
    /** Absolute path of bwrap. */
    readonly path: string;
    /** bwrap's version, e.g. `0.8.0`. */
    readonly version: string;
    /** Absolute path of the `setpriv` used to drop to the job uid. */
    readonly setprivPath: string;
    /**
     * True for a node that is not root: jobs run in a user namespace as
     * the node's own uid (see {@linkcode BwrapOptions}' `rootless`).
     */
    readonly rootless: boolean;
  }
  | { readonly available: false; readonly reason: string };

/** Options of {@linkcode detectBubblewrap}. */
export interface DetectBubblewrapOptions {
  /** @default "/usr/bin/bwrap" */
  readonly bwrapPath?: string;
  /** @default "/usr/bin/setpriv" */
  readonly setprivPath?: string;
  /** Uid and gid the probe drops to (as root). @default 65534 */
  readonly uid?: number;
  /**
   * Prove the rootless way (a user namespace as the node's own uid)
   * instead of the uid drop, which needs root.
   * @default {true when kiln does not run as root}
   */
  readonly rootless?: boolean;
  /** Where the kernel's settings are read, for tests. @default "/proc/sys" */
  readonly sysctlRoot?: string;
}

/**
 * Proves the sandbox works on this host: finds bwrap and checks its version,
 * then runs `id -u` under the very prefix jobs get (namespaces, mounts,
 * tmpfs size, uid drop) in a throwaway workdir and checks it prints the job
 * uid. Containers often forbid namespaces; the reason then says what failed.
 * Never throws.
 *
 * @example Reporting the namespace layer
 * ```ts
 * import { detectBubblewrap } from "./bubblewrap.ts";
 *
 * const bwrap = await detectBubblewrap();
 * console.log(bwrap.available ? `bubblewrap ${bwrap.version}` : bwrap.reason);
 * ```
 */
export async function detectBubblewrap(
  options: DetectBubblewrapOptions = {},
): Promise<BubblewrapDetection> {
  const {
    bwrapPath = DEFAULT_BWRAP_PATH,
    setprivPath = DEFAULT_SETPRIV_PATH,
    rootless = Deno.uid() !== 0,
    sysctlRoot = "/proc/sys",
  } = options;
  if (Deno.build.os !== "linux") {
    return unavailable(`bubblewrap needs Linux, not ${Deno.build.os}`);
  }
  const { uid, gid } = rootless
    ? nodeIdentity()
    : { uid: options.uid ?? SANDBOX_UID, gid: options.uid ?? SANDBOX_UID };
  if (!rootless && Deno.uid() !== 0) {
    return unavailable(
      `bubblewrap needs kiln to run as root to drop jobs to uid ${uid} (running as uid ${Deno.uid()})`,
    );
  }
  if (rootless && uid === 0) {
    return unavailable(
      "a user namespace as uid 0 would map the program to root: as root, kiln drops jobs to uids of their own instead",
    );
  }
  if (rootless) {
    const refused = await userNamespacesRefused(sysctlRoot);
    if (refused !== null) {
      return unavailable(
        `kiln runs as uid ${uid}, not root, and ${refused}`,
      );
    }
  }
  let version: string;
  try {
    const output = await run(bwrapPath, ["--version"]);
    version = /(\d+\.\d+\.\d+)/.exec(output.stdout)?.[1] ?? "";
    if (!output.success || version === "") {
      return unavailable(
        `"${bwrapPath} --version" failed: ${output.stderr || output.stdout}`,
      );
    }
  } catch (error) {
    return unavailable(missing(bwrapPath, error));
  }
  if (compareVersions(version, MIN_BWRAP_VERSION) < 0) {
    return unavailable(
      `bubblewrap ${version} is too old: tmpfs --size needs ${MIN_BWRAP_VERSION} or later`,
    );
  }
  if (!rootless) {
    try {
      await Deno.stat(setprivPath);
    } catch (error) {
      return unavailable(missing(setprivPath, error));
    }
  }

  let workdir: string | undefined;
  try {
    workdir = await Deno.makeTempDir({ prefix: "kiln-bwrap-probe-" });
    await prepareWorkdir(workdir, uid, gid);
    const [command, ...args] = [
      ...bwrapPrefix({
        bwrapPath,
        setprivPath,
        workdir,
        tmpSizeBytes: 1 << 20,
        uid,
        gid,
        env: { PATH: "/usr/bin:/bin" },
        rootless,
      }),
      "/usr/bin/id",
      "-u",
    ];
    const output = await run(command!, args);
    if (!output.success || output.stdout.trim() !== `${uid}`) {
      return unavailable(
        `bubblewrap cannot create a sandbox here${
          rootless ? ` in a user namespace (kiln runs as uid ${uid})` : ""
        }: ${
          output.stderr.trim() ||
          `exit ${output.code}, output "${output.stdout.trim()}"`
        }`,
      );
    }
    return {
      available: true,
      path: bwrapPath,
      version,
      setprivPath,
      rootless,
    };
  } catch (error) {
    return unavailable(
      `bubblewrap probe failed: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  } finally {
    if (workdir) {
      await Deno.remove(workdir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Why this kernel will not let a user that is not root create a user
 * namespace, or null when nothing says it refuses (the probe then proves
 * it): Debian's `kernel.unprivileged_userns_clone` at 0,
 * `user.max_user_namespaces` at 0, or Ubuntu's AppArmor restriction
 * (`kernel.apparmor_restrict_unprivileged_userns` at 1), each with the
 * setting that lifts it.
 *
 * @example Saying why a non-root node has no namespaces
 * ```ts
 * import { userNamespacesRefused } from "./bubblewrap.ts";
 *
 * console.log((await userNamespacesRefused()) ?? "user namespaces allowed");
 * ```
 */
export async function userNamespacesRefused(
  sysctlRoot = "/proc/sys",
): Promise<string | null> {
  const read = (name: string) =>
    Deno.readTextFile(`${sysctlRoot}/${name}`).then(
      (text) => text.trim(),
      () => null,
    );
  if (await read("kernel/unprivileged_userns_clone") === "0") {
    return "the kernel refuses user namespaces to users that are not root " +
      "(kernel.unprivileged_userns_clone = 0; " +
      "sysctl -w kernel.unprivileged_userns_clone=1 allows them)";
  }
  if (await read("user/max_user_namespaces") === "0") {
    return "user namespaces are disabled (user.max_user_namespaces = 0; " +
      "sysctl -w user.max_user_namespaces=15000 enables them)";
  }
  if (await read("kernel/apparmor_restrict_unprivileged_userns") === "1") {
    return "AppArmor refuses user namespaces to unconfined programs " +
      "(kernel.apparmor_restrict_unprivileged_userns = 1; " +
      "an AppArmor profile for bwrap with the userns permission allows them)";
  }
  return null;
}

async function run(command: string, args: string[]) {
  const output = await new Deno.Command(command, {
    args,
    clearEnv: true,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    success: output.success,
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

function missing(path: string, error: unknown): string {
  return error instanceof Deno.errors.NotFound
    ? `executable "${path}" not found`
    : `cannot run "${path}": ${
      error instanceof Error ? error.message : String(error)
    }`;
}

/** Compares dotted version numbers: negative, zero or positive. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const diff = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (diff !== 0) return diff;
  }
  return 0;
}

function unavailable(reason: string): BubblewrapDetection {
  return { available: false, reason };
}
