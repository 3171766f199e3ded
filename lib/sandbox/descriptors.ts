/**
 * The first link of every job step's command: a shell that closes every
 * descriptor above stderr, then execs the rest of the chain.
 *
 * kiln opens its own files close-on-exec, but a descriptor it *inherited*
 * without that flag (a master started with `7<secret`, or the pipe of a
 * supervisor that launched it) passes through `Deno.Command`, bubblewrap,
 * `setpriv` and `prlimit` alike, none of which closes anything: a job could
 * read it with `cat <&7` or write into whatever launched kiln. Deno cannot
 * close a descriptor it does not own, so the step's first process does.
 *
 * bash, not `/bin/sh`: dash only redirects descriptors 0 to 9, and would
 * read `exec 12>&-` as a command named `12`. The loop walks
 * `/proc/self/fd` (bash's own), so the cost does not grow with the
 * descriptor limit: about 1 ms, most of it bash's start.
 *
 * @module
 */
import { CGROUP_ENTER_FAILED } from "./cgroup.ts";

/** Where bash is looked for. */
export const BASH_PATH = "/bin/bash";

/**
 * Closes every descriptor above 2 (the directory the glob read is closed
 * already; closing it again is harmless), then execs its arguments.
 */
const CLOSE_SCRIPT = 'for fd in /proc/self/fd/*; do fd="${fd##*/}"; ' +
  'case "$fd" in ""|*[!0-9]*) continue;; esac; ' +
  '[ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec "$@"';

/**
 * The argument prefix that runs a command with no descriptor but 0, 1 and
 * 2: put the command and its arguments after it.
 *
 * @example Running `ls` with stdio only
 * ```ts
 * import { closeDescriptorsPrefix } from "./descriptors.ts";
 *
 * const [command, ...args] = [...closeDescriptorsPrefix(), "/bin/ls", "/proc/self/fd"];
 * const output = await new Deno.Command(command!, { args }).output();
 * console.log(new TextDecoder().decode(output.stdout)); // 0 1 2 and ls's own 3
 * ```
 */
export function closeDescriptorsPrefix(
  bashPath: string = BASH_PATH,
  options: CloseDescriptorsOptions = {},
): string[] {
  const { open, enterCgroups = [] } = options;
  if (
    open !== undefined &&
    (!Number.isInteger(open.fd) || open.fd < 3 || open.fd > 9)
  ) {
    throw new RangeError(
      `Cannot open a descriptor for the step: fd ${open.fd} is not 3 to 9`,
    );
  }
  // Only kiln's fixed text is script; the paths are arguments, shifted off
  // one by one before `exec "$@"`. The shell's own message for a failed
  // redirect is silenced, so that ours starts stderr.
  const enter = enterCgroups.map(() =>
    `{ echo "$$" > "$1"; } 2>/dev/null || { echo "kiln: cannot enter cgroup $1" >&2; exit ${CGROUP_ENTER_FAILED}; }; shift; `
  ).join("");
  const opening = open === undefined
    ? ""
    : `exec ${open.fd}<"$1" || { echo "kiln: cannot open $1" >&2; exit ${OPEN_FAILED}; }; shift; `;
  return [
    bashPath,
    "-c",
    CLOSE_SCRIPT.replace('exec "$@"', () => `${enter}${opening}exec "$@"`),
    "kiln-fds",
    ...enterCgroups,
    ...open === undefined ? [] : [open.path],
  ];
}

/**
 * Exit code of the prefix when it cannot open {@linkcode CloseDescriptorsOptions}'s
 * file (the command never ran); it also writes `kiln: cannot open <path>`
 * to stderr. 125, as the cgroup link uses.
 */
export const OPEN_FAILED = 125;

/** Options of {@linkcode closeDescriptorsPrefix}. */
export interface CloseDescriptorsOptions {
  /**
   * A file to open for reading on descriptor `fd` (3 to 9) once every
   * inherited descriptor is closed, for the next link to read: bubblewrap's
   * `--seccomp FD` (Deno cannot hand a child a descriptor beyond stdio).
   */
  readonly open?: { readonly fd: number; readonly path: string } | undefined;
  /**
   * `cgroup.procs` files to write the step's pid into, after the close and
   * before the open: the step joins its cgroup(s) here instead of through
   * one more shell (`JobCgroup.enterPrefix`). When one cannot be written,
   * the prefix writes `kiln: cannot enter cgroup <file>` to stderr and exits
   * with {@linkcode CGROUP_ENTER_FAILED}, as that shell does.
   */
  readonly enterCgroups?: readonly string[] | undefined;
}

let bash: Promise<string | null> | undefined;

/**
 * The path of bash when it is there (looked up once per process), else
 * null: the sandbox then warns that inherited descriptors stay open.
 */
export function findBash(): Promise<string | null> {
  bash ??= Deno.stat(BASH_PATH).then(
    (info) => info.isFile ? BASH_PATH : null,
    () => null,
  );
  return bash;
}
