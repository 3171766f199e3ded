/**
 * An identity of its own for every job: a pool of host uids (each with the
 * gid of the same number) that no host account uses, one leased per job,
 * scrubbed before it is leased again.
 *
 * Much of what the kernel limits or keeps is counted per uid, not per
 * process: inotify instances (`fs.inotify.max_user_instances`, 128 by
 * default) and watches, `RLIMIT_NPROC`, pending signals, the key quota and,
 * above all, the user keyrings. With every job as uid 65534, one job's
 * `add_key(..., KEY_SPEC_USER_KEYRING)` was read by a later job, and one job
 * holding 128 inotify instances made a concurrent job's `inotify_init` fail
 * with `EMFILE`. With a uid per job such limits are per job.
 *
 * ## Which uids
 *
 * A node process claims a *block* of the range (`--uid-range`, default
 * {@linkcode DEFAULT_UID_RANGE}), {@linkcode DEFAULT_UID_BLOCK_SIZE} uids,
 * and leases only uids of its block, so that two kiln processes on one host
 * never share a uid. The default range lies above systemd's container range
 * (524288–1879048191) and below its foreign range and 2^31, where no
 * distribution allocates. A block is never one that holds an id of
 * `/etc/passwd` or `/etc/group` or a subordinate range of `/etc/subuid` or
 * `/etc/subgid`. Accounts from other sources (LDAP, NSS modules) are not
 * seen: pick `--uid-range` clear of them.
 *
 * The claim is a file per block owner in a root-only directory
 * ({@linkcode DEFAULT_IDENTITY_DIR}) naming the owner's pid, its start time
 * and its block; claims are read and written under an `flock` of that
 * directory's lock file (released by the kernel if the process dies), and
 * a claim whose process is gone (its pid dead or reused, told by the start
 * time) is stale and removed. Kiln processes that do not share `/run` (two
 * containers) do not see each other's claims: give them disjoint ranges.
 *
 * ## Lease and return
 *
 * The compile and run steps of one job share its uid; the workdir is
 * chowned to it. After the job, when its steps' cgroups are gone (the
 * cgroup removal kills and waits for every process, and without cgroups
 * the pid namespace's end does), the uid is scrubbed and goes back to the
 * pool:
 *
 * 1. no process of the uid may be left: read from `/proc`, unless the
 *    caller vouches that every process of the job ended (its steps ran in
 *    cgroups that were removed, which the kernel allows only when they are
 *    empty; {@linkcode ReleaseOptions}). The walk is the wall where that
 *    is not known: a step cgroup that could not be removed, no cgroups, or
 *    a uid's first lease in this process;
 * 2. its keyrings are cleared. Since Linux 5.3 a uid's user and
 *    user-session keyrings (and its persistent keyring) belong to the user
 *    namespace, not to the uid's processes: in the initial namespace they
 *    outlive every process and would reach the next job of the uid. There
 *    is no way for root to clear another uid's user keyring, so a small
 *    `perl` program (perl-base is part of every Debian) runs *as the uid*
 *    through `setpriv` and, for each keyring, restores the default
 *    permissions (a job may have taken its own write permission away),
 *    `KEYCTL_CLEAR`s it and checks that it reads empty. The unlinked keys
 *    are unreachable and the kernel collects them.
 *
 * A uid that fails either check is quarantined: never leased again by this
 * process, logged at warn, counted in {@linkcode IdentityPool.quarantined}.
 * A uid is scrubbed the same way before its first lease in a process, for
 * what a kiln process that died may have left in it.
 *
 * Without perl (or on a CPU whose `keyctl` number is not known here),
 * keyrings cannot be cleared: the pool then never reuses a uid while its
 * block has an unused one, and reuses the least recently used uid after
 * that (65,536 jobs later by default), with a warning at start. The seccomp
 * filter denies `add_key` and `keyctl` to jobs anyway; the clear is the
 * second wall.
 *
 * Without root (no `setpriv` uid switch, no bubblewrap layer) there is no
 * pool: every job runs as the node's own uid, and shares all of the above.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { processesOfUser } from "./process_tree.ts";

/** A range of host uids (and the gids of the same numbers), both ends included. */
export interface UidRange {
  /** The first uid. */
  readonly first: number;
  /** The last uid, at least `first`. */
  readonly last: number;
}

/**
 * The default range jobs' uids come from: 0x70000000–0x7FFDFFFF, between
 * systemd's container range and its foreign range, below 2^31 (ids above
 * it meet signed-integer bugs in some tools).
 */
export const DEFAULT_UID_RANGE: UidRange = {
  first: 0x7000_0000,
  last: 0x7ffd_ffff,
};

/** Uids a node process claims: at most this many, the range's size if smaller. */
export const DEFAULT_UID_BLOCK_SIZE = 65_536;

/** Where block claims are kept: a directory only root may write. */
export const DEFAULT_IDENTITY_DIR = "/run/kiln/uid-blocks";

/** The largest uid a range may hold: 2^32 - 2 (2^32 - 1 means "no uid"). */
export const MAX_UID = 0xffff_fffe;

/** One job's identity: the uid and gid its steps run as. */
export interface JobIdentity {
  /** The host uid. */
  readonly uid: number;
  /** The host gid (the uid's number). */
  readonly gid: number;
}

/** Options of {@linkcode IdentityPool.claim}. */
export interface IdentityPoolOptions {
  /** Where uids may come from. @default DEFAULT_UID_RANGE */
  readonly range?: UidRange;
  /** Uids per node process. @default DEFAULT_UID_BLOCK_SIZE */
  readonly blockSize?: number;
  /** The claims' directory. @default DEFAULT_IDENTITY_DIR */
  readonly directory?: string;
  /** Absolute path of util-linux `setpriv`. @default "/usr/bin/setpriv" */
  readonly setprivPath?: string;
  /** Absolute path of perl, which clears keyrings. @default "/usr/bin/perl" */
  readonly perlPath?: string;
}

/** Options of {@linkcode IdentityPool.release}: what the caller vouches for. */
export interface ReleaseOptions {
  /**
   * The job could not have touched a keyring (the seccomp filter denies
   * `add_key`, `keyctl` and `request_key`): the clearing, a process of its
   * own at the end of every job, is skipped.
   * @default false
   */
  readonly keyringsUntouched?: boolean;
  /**
   * The caller saw every process that ran as the uid end: each step of the
   * job ran in a cgroup that was then removed (the kernel removes only a
   * cgroup no process is in, and a job's process cannot leave its cgroup),
   * and kiln's own processes as the uid (`removeTree`'s) have exited. The
   * walk of `/proc` for processes of the uid is then skipped: a step whose
   * cgroup could not be removed, or a step without a cgroup, must not be
   * vouched for.
   * @default false
   */
  readonly processesGone?: boolean;
}

/**
 * Parses `FIRST-LAST` (decimal uids, both included) as `--uid-range` takes
 * it.
 *
 * @throws {RangeError} naming the problem: not two integers, 0 (root) in
 * it, past {@linkcode MAX_UID}, or `LAST` below `FIRST`.
 *
 * @example
 * ```ts
 * import { parseUidRange } from "./identity.ts";
 *
 * console.log(parseUidRange("1879048192-1879113727")); // { first: 1879048192, last: 1879113727 }
 * ```
 */
export function parseUidRange(text: string): UidRange {
  const match = /^\s*(\d{1,10})\s*-\s*(\d{1,10})\s*$/.exec(text);
  if (!match) {
    throw new RangeError(
      `uid range "${text}" is not FIRST-LAST (two decimal uids)`,
    );
  }
  const range = { first: Number(match[1]), last: Number(match[2]) };
  checkRange(range);
  return range;
}

function checkRange({ first, last }: UidRange): void {
  for (const id of [first, last]) {
    if (!Number.isSafeInteger(id) || id < 1 || id > MAX_UID) {
      throw new RangeError(
        `uid ${id} cannot be a job's: a job uid is between 1 and ${MAX_UID}`,
      );
    }
  }
  if (last < first) {
    throw new RangeError(`uid range ${first}-${last} ends before it starts`);
  }
}

/**
 * The uids of one node process: a block claimed on this host, leased one
 * per job and scrubbed before reuse (see the module doc).
 *
 * @example Leasing a uid for one job
 * ```ts
 * import { IdentityPool } from "./identity.ts";
 *
 * if (Deno.uid() === 0) {
 *   const pool = await IdentityPool.claim();
 *   const identity = await pool.acquire();
 *   console.log(identity.uid); // e.g. 1879048192, no other job's
 *   await pool.release(identity);
 *   await pool.close();
 * }
 * ```
 */
export class IdentityPool {
  /** The claimed block. */
  readonly block: UidRange;
  /** Whether keyrings are cleared before a uid is reused (perl was found). */
  readonly clearsKeyrings: boolean;
  readonly #claim: string;
  readonly #setpriv: string;
  readonly #perl: string | null;
  /** Scrubbed, returned uids, oldest first. */
  readonly #ready: number[] = [];
  readonly #leased = new Set<number>();
  readonly #quarantined = new Set<number>();
  /** The next uid of the block never leased by this process. */
  #fresh: number;
  #closed = false;

  private constructor(
    block: UidRange,
    claim: string,
    setpriv: string,
    perl: string | null,
  ) {
    this.block = block;
    this.#claim = claim;
    this.#setpriv = setpriv;
    this.#perl = perl;
    this.clearsKeyrings = perl !== null;
    this.#fresh = block.first;
  }

  /**
   * Claims a block of `range` no live kiln process holds and no host
   * account uses. Needs root.
   *
   * @throws {RangeError} for a bad range or block size.
   * @throws {Error} naming the problem when no block is free, or the claims'
   * directory is unsafe (not root's, or writable by others).
   */
  static async claim(options: IdentityPoolOptions = {}): Promise<IdentityPool> {
    const {
      range = DEFAULT_UID_RANGE,
      blockSize = DEFAULT_UID_BLOCK_SIZE,
      directory = DEFAULT_IDENTITY_DIR,
      setprivPath = "/usr/bin/setpriv",
      perlPath = "/usr/bin/perl",
    } = options;
    checkRange(range);
    if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
      throw new RangeError(
        `uid block size ${blockSize} is not a positive integer`,
      );
    }
    const size = Math.min(blockSize, range.last - range.first + 1);
    const taken = await hostIds();
    await safeDirectory(directory);
    const me = await processIdentity(Deno.pid);
    const name = `${Deno.pid}-${crypto.randomUUID()}`;
    using lock = await Deno.open(join(directory, ".lock"), {
      create: true,
      write: true,
      mode: 0o600,
    });
    await lock.lock(true);
    const claims = await liveClaims(directory);
    const block = freeBlock(range, size, [...claims, ...taken]);
    if (!block) {
      throw new Error(
        `no block of ${size} uids in ${range.first}-${range.last} is free: ${claims.length} are claimed by other kiln processes, the rest overlap host accounts or subordinate id ranges`,
      );
    }
    await Deno.writeTextFile(
      join(directory, name),
      JSON.stringify({ ...me, first: block.first, last: block.last }),
      { mode: 0o600, createNew: true },
    );
    const perl = await isFile(perlPath) && KEYCTL[Deno.build.arch] !== undefined
      ? perlPath
      : null;
    if (!perl) {
      log.warn(
        "keyrings of a job's uid cannot be cleared ({reason}): uids {first}-{last} are reused only when the block has no unused one left",
        {
          reason: KEYCTL[Deno.build.arch] === undefined
            ? `keyctl's number on ${Deno.build.arch} is unknown`
            : `no ${perlPath}`,
          first: block.first,
          last: block.last,
        },
      );
    }
    return new IdentityPool(block, join(directory, name), setprivPath, perl);
  }

  /** Uids leased now. */
  get leased(): number {
    return this.#leased.size;
  }

  /** Uids never to be leased again by this process (see the module doc). */
  get quarantined(): number {
    return this.#quarantined.size;
  }

  /**
   * Leases a scrubbed uid no other job of this process holds.
   *
   * @throws {Error} when every uid of the block is leased or quarantined,
   * or the pool is closed.
   */
  async acquire(): Promise<JobIdentity> {
    let lastReason = "";
    for (let attempt = 1;; attempt++) {
      if (attempt > MAX_SCRUB_ATTEMPTS) {
        throw new Error(
          `no clean uid for a job: ${MAX_SCRUB_ATTEMPTS} fresh uids in a row could not be scrubbed, the last because ${lastReason}`,
        );
      }
      if (this.#closed) throw new Error("the uid pool is closed");
      let uid: number | undefined;
      if (this.#perl) uid = this.#ready.shift();
      if (uid === undefined && this.#fresh <= this.block.last) {
        uid = this.#fresh++;
        // Its first lease here: whatever a kiln process that died left.
        this.#leased.add(uid);
        const dirty = await this.#scrub(uid);
        if (dirty === null) return { uid, gid: uid };
        this.#leased.delete(uid);
        this.#quarantine(uid, dirty);
        lastReason = dirty;
        continue;
      }
      // Without a keyring clear, the least recently used uid, only now.
      uid ??= this.#ready.shift();
      if (uid === undefined) {
        throw new Error(
          `no uid left for a job: all ${
            this.block.last - this.block.first + 1
          } of ${this.block.first}-${this.block.last} are leased (${this.#leased.size}) or quarantined (${this.#quarantined.size})`,
        );
      }
      this.#leased.add(uid);
      return { uid, gid: uid };
    }
  }

  /**
   * Returns a uid once the job's processes are gone: scrubbed, then ready
   * for another job, or quarantined. Never throws. See
   * {@linkcode ReleaseOptions} for what a caller may vouch for to make the
   * scrub cheaper.
   */
  async release(
    identity: JobIdentity,
    { keyringsUntouched = false, processesGone = false }: ReleaseOptions = {},
  ): Promise<void> {
    const { uid } = identity;
    if (!this.#leased.has(uid)) return;
    const dirty = await this.#scrub(uid, {
      clear: !keyringsUntouched,
      lookForProcesses: !processesGone,
    });
    this.#leased.delete(uid);
    if (dirty === null) this.#ready.push(uid);
    else this.#quarantine(uid, dirty);
  }

  /** Gives the block back to the host. Never throws. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Deno.remove(this.#claim).catch(() => {});
  }

  /** Why `uid` cannot be leased yet, or null when it is clean. */
  async #scrub(
    uid: number,
    { clear = true, lookForProcesses = true } = {},
  ): Promise<string | null> {
    // The clearing process runs as the uid itself: it does not count.
    const clearing = this.#perl && clear
      ? clearKeyrings(uid, { setprivPath: this.#setpriv, perlPath: this.#perl })
      : { pid: -1, outcome: Promise.resolve(null) };
    // Looked for while the keyrings are cleared: clearing the keyrings of
    // a uid that turns out to be in use does no harm, it is quarantined.
    const left = lookForProcesses
      ? processesOfUser(uid).filter((pid) => pid !== clearing.pid)
      : [];
    const keyrings = await clearing.outcome;
    return left.length > 0
      ? `processes ${left.join(", ")} still run as it`
      : keyrings;
  }

  #quarantine(uid: number, reason: string): void {
    this.#quarantined.add(uid);
    log.warn("uid {uid} is never leased again by this node: {reason}", {
      uid,
      reason,
    });
  }
}

const log = getLogger(["kiln", "sandbox"]);

/**
 * Fresh uids one lease may try to scrub before it gives up: a failure that
 * repeats is the host's (no keyrings to clear, a broken perl), not a job's,
 * and must not walk the whole block.
 */
const MAX_SCRUB_ATTEMPTS = 4;

/** `keyctl`'s system call number per CPU (x86-64; arm64's is the generic one). */
const KEYCTL: Partial<Record<typeof Deno.build.arch, number>> = {
  x86_64: 250,
  aarch64: 219,
};

/**
 * Clears the user, user-session and persistent keyrings of the calling uid
 * and checks them empty (`ARGV[0]` is keyctl's number). A job may have
 * taken its own write permission away: the owner may set the permissions
 * back (unless the job also took away its setattr permission; then the
 * clear fails and the uid is quarantined). The persistent keyring grants
 * its owner no write, only its possessor: it is linked into the process
 * keyring of the clearing process, which possesses it and dies with it.
 * Numbers: KEYCTL_SETPERM 5, KEYCTL_CLEAR 7, KEYCTL_READ 11,
 * KEYCTL_GET_PERSISTENT 22; KEY_SPEC_PROCESS_KEYRING -2,
 * KEY_SPEC_USER_KEYRING -4, KEY_SPEC_USER_SESSION_KEYRING -5; 0x1f3f0000
 * is the kernel's default for the user keyrings.
 */
const CLEAR_KEYRINGS = String.raw`
use strict; use Errno;
my $nr = $ARGV[0];
sub clear {
  my ($ring, $name) = @_;
  syscall($nr, 5, $ring, 0x1f3f0000);
  syscall($nr, 7, $ring) == 0 or die "cannot clear the $name keyring: $!\n";
  my $size = syscall($nr, 11, $ring, 0, 0);
  $size == 0 or die "the $name keyring is not empty after a clear: $!\n";
}
clear(-4, "user");
clear(-5, "user session");
my $persistent = syscall($nr, 22, -1, -2);
if ($persistent >= 0) {
  clear($persistent, "persistent");
} elsif (!$!{EOPNOTSUPP}) {
  die "cannot reach the persistent keyring: $!\n";
}
`;

/**
 * Starts clearing the keyrings of `uid` as that uid (see the module doc):
 * the pid of the clearing process (`setpriv` execs perl, so it keeps its
 * pid), or -1 when it did not start, and why it failed, or null. Never
 * rejects.
 */
function clearKeyrings(
  uid: number,
  options: { setprivPath: string; perlPath: string },
): { pid: number; outcome: Promise<string | null> } {
  const failed = (why: unknown) =>
    `its keyrings cannot be cleared: ${
      why instanceof Error ? why.message : String(why)
    }`;
  const nr = KEYCTL[Deno.build.arch];
  if (nr === undefined) {
    return {
      pid: -1,
      outcome: Promise.resolve(
        failed(`keyctl's number on ${Deno.build.arch} is unknown`),
      ),
    };
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(options.setprivPath, {
      args: [
        `--reuid=${uid}`,
        `--regid=${uid}`,
        "--clear-groups",
        "--",
        options.perlPath,
        "-e",
        CLEAR_KEYRINGS,
        `${nr}`,
      ],
      cwd: "/",
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", LC_ALL: "C" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    return { pid: -1, outcome: Promise.resolve(failed(error)) };
  }
  const outcome = child.output().then(
    (output) =>
      output.success ? null : failed(
        new TextDecoder().decode(output.stderr).trim() ||
          `exit ${output.code}`,
      ),
    failed,
  );
  return { pid: child.pid, outcome };
}

/**
 * The first block of `size` uids of `range` (blocks start at `range.first`,
 * `size` apart) that meets none of `used`, or undefined. Each step passes
 * one of `used`: its cost does not grow with the range.
 */
function freeBlock(
  range: UidRange,
  size: number,
  used: readonly UidRange[],
): UidRange | undefined {
  let first = range.first;
  for (const ids of [...used].sort((a, b) => a.first - b.first)) {
    if (ids.last < first) continue;
    if (ids.first > first + size - 1) break;
    first = range.first + Math.ceil((ids.last + 1 - range.first) / size) * size;
  }
  return first + size - 1 <= range.last
    ? { first, last: first + size - 1 }
    : undefined;
}

/** A live process, told from a later one with the same pid by its start time. */
interface ProcessIdentity {
  readonly pid: number;
  readonly start: string;
}

/** `pid` with its start time (field 22 of its `stat`); throws when it is gone. */
async function processIdentity(pid: number): Promise<ProcessIdentity> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // The command name (field 2) may hold spaces and parentheses: count from
  // the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pid, start: fields[19] ?? "" };
}

/** The blocks of live claimants; the claims of dead ones are removed. */
async function liveClaims(directory: string): Promise<UidRange[]> {
  const live: UidRange[] = [];
  for await (const entry of Deno.readDir(directory)) {
    if (!entry.isFile || entry.name.startsWith(".")) continue;
    const path = join(directory, entry.name);
    let claim: ProcessIdentity & UidRange;
    try {
      claim = JSON.parse(await Deno.readTextFile(path));
    } catch {
      continue; // Not a claim kiln wrote: left alone, and not trusted.
    }
    let alive = false;
    try {
      alive = (await processIdentity(claim.pid)).start === claim.start;
    } catch {
      // The process is gone.
    }
    if (alive) live.push({ first: claim.first, last: claim.last });
    else await Deno.remove(path).catch(() => {});
  }
  return live;
}

/**
 * The ids the host uses: every uid of `/etc/passwd`, gid of `/etc/group`
 * and subordinate range of `/etc/subuid` and `/etc/subgid`. A missing file
 * holds none.
 */
async function hostIds(): Promise<UidRange[]> {
  const ranges: UidRange[] = [];
  const read = (path: string) => Deno.readTextFile(path).catch(() => "");
  for (const path of ["/etc/passwd", "/etc/group"]) {
    for (const line of (await read(path)).split("\n")) {
      const id = Number(line.split(":")[2]);
      if (line.trim() !== "" && Number.isSafeInteger(id)) {
        ranges.push({ first: id, last: id });
      }
    }
  }
  for (const path of ["/etc/subuid", "/etc/subgid"]) {
    for (const line of (await read(path)).split("\n")) {
      const [, start, count] = line.split(":").map(Number);
      if (Number.isSafeInteger(start) && Number.isSafeInteger(count)) {
        ranges.push({ first: start!, last: start! + Math.max(count!, 1) - 1 });
      }
    }
  }
  return ranges;
}

/** Makes `directory` (and its parent) root-only, refusing one another user could have planted. */
async function safeDirectory(directory: string): Promise<void> {
  for (const path of [join(directory, ".."), directory]) {
    await Deno.mkdir(path, { recursive: true, mode: 0o755 });
    const info = await Deno.lstat(path);
    if (!info.isDirectory || info.uid !== Deno.uid() || (info.mode! & 0o022)) {
      throw new Error(
        `cannot keep uid claims in ${path}: it must be a directory of uid ${Deno.uid()} that no one else may write`,
      );
    }
  }
  await Deno.chmod(directory, 0o700);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
