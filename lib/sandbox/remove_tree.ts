/**
 * Removing a directory tree that a program built: a job's workdir, or the
 * work root a killed kiln process left behind.
 *
 * A program can build any tree its uid may build: 30,000 levels deep (past
 * `PATH_MAX` many times over), a million entries wide, names holding
 * newlines or starting with `-`, directories it made `chmod 000`, symlinks
 * to host paths. `Deno.remove(path, { recursive: true })` recurses on
 * tokio's stack and aborts the whole process somewhere between 10,000 and
 * 15,000 levels, so the walk is handed to tools built for it, in a child
 * process: GNU `chmod -R`, `find -delete` and `rm -rf` walk with `fts`,
 * iteratively, through directory descriptors (no path length limit), and
 * never follow a symlink (they remove the link itself). The event loop only
 * waits for the child's exit, and nothing here ever throws.
 *
 * With the job's uid, the tree is emptied *as that uid* (through `setpriv`,
 * as the sandbox drops to it) by `find -delete`; where that fails (the
 * program `chmod`-ed a directory), by `chmod -R u+rwx`, which works top
 * down so that a `000` directory is opened only after it was made
 * readable, then `find -delete` again. The process starts in the workdir
 * (its parent belongs to root, mode 700), so it can reach nothing else.
 * kiln then removes the empty workdir itself. Whatever the job's uid could not remove (files root wrote
 * before the workdir was handed over) is removed by `rm -rf
 * --one-file-system` with kiln's own rights, which also handles a tree
 * whose `000` directories belong to another uid.
 *
 * Measured on a busy 2-core host: a workdir holding three files is removed
 * in about 3 ms as the job's uid (`setpriv` and `find`), 1.2 ms by `rm` as
 * root, 0.2 ms by `Deno.remove`; a tree 20,000 levels deep with `000`
 * directories takes seconds, all of them in the child.
 *
 * @module
 */

/** Options of {@linkcode removeTree}. */
export interface RemoveTreeOptions {
  /**
   * Empty the tree as this uid and gid (the job's), through `setpriv`,
   * before kiln removes what is left. Needs kiln to run as root.
   * @default kiln's own rights only
   */
  readonly asUser?: {
    readonly uid: number;
    readonly gid: number;
    /** Absolute path of util-linux `setpriv`. @default "/usr/bin/setpriv" */
    readonly setprivPath?: string;
  };
}

/** How {@linkcode removeTree} ended. */
export type RemoveTreeOutcome =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: string };

/** The `PATH` of the removal tools: system directories only. */
const TOOL_ENV = { PATH: "/usr/bin:/bin", LC_ALL: "C" };

/** Deletes everything below the working directory, bottom up, on its file system. */
const DELETE = ["/usr/bin/find", ".", "-xdev", "-mindepth", "1", "-delete"];

/**
 * What a program's `chmod` stopped {@linkcode DELETE} from reading: made
 * writable by its owner, top down, then deleted. Errors go to stderr, for
 * the reason.
 */
const CHMOD_THEN_DELETE = [
  "/bin/sh",
  "-c",
  `chmod -R u+rwx . 2>/dev/null; exec ${DELETE.join(" ")}`,
];

/**
 * Removes `path` and everything below it, without following any symlink
 * and without recursion in this process (see the module doc). A missing
 * `path` counts as removed. Never throws: a failure is returned with its
 * reason for the caller to log.
 *
 * @example Removing a job's workdir as the job's uid
 * ```ts
 * import { removeTree } from "./remove_tree.ts";
 *
 * const workdir = await Deno.makeTempDir({ prefix: "kiln-job-" });
 * const outcome = await removeTree(workdir);
 * if (!outcome.ok) console.warn(`cannot remove ${workdir}: ${outcome.reason}`);
 * ```
 */
export async function removeTree(
  path: string,
  options: RemoveTreeOptions = {},
): Promise<RemoveTreeOutcome> {
  try {
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { ok: true };
      throw error;
    }
    const { asUser } = options;
    let emptied: RemoveTreeOutcome = { ok: true };
    if (asUser && info.isDirectory) {
      const setpriv = [
        `--reuid=${asUser.uid}`,
        `--regid=${asUser.gid}`,
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
      ];
      const setprivPath = asUser.setprivPath ?? "/usr/bin/setpriv";
      // Most trees need no chmod: one process less for most jobs.
      emptied = await run(setprivPath, [...setpriv, ...DELETE], path);
      if (!emptied.ok) {
        emptied = await run(
          setprivPath,
          [...setpriv, ...CHMOD_THEN_DELETE],
          path,
        );
      }
      // Empty now, unless something belonged to another uid: then rm below.
      try {
        await Deno.remove(path);
        return { ok: true };
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return { ok: true };
      }
    }
    const rm = ["-rf", "--one-file-system", "--", path];
    let removed = await run("/bin/rm", rm, "/");
    // A node that is not root (its jobs run as its own uid) cannot open a
    // directory a job made `000` without making it readable first.
    if (!removed.ok && info.isDirectory && Deno.uid() !== 0) {
      await run(CHMOD_THEN_DELETE[0]!, CHMOD_THEN_DELETE.slice(1), path);
      removed = await run("/bin/rm", rm, "/");
    }
    return removed.ok || emptied.ok ? removed : {
      ok: false,
      reason: `${removed.reason} (as the job's uid: ${emptied.reason})`,
    };
  } catch (error) {
    return {
      ok: false,
      reason: error instanceof Error ? error.message : String(error),
    };
  }
}

/** Bytes of a tool's stderr kept for the reason; the rest is read and dropped. */
const STDERR_KEPT_BYTES = 4096;

/** Runs a removal tool to its end; the first line of its stderr becomes the reason. */
async function run(
  command: string,
  args: string[],
  cwd: string,
): Promise<RemoveTreeOutcome> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args,
      cwd,
      env: TOOL_ENV,
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    return {
      ok: false,
      reason: `cannot run ${command}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  }
  // A failing walk of a deep tree can print gigabytes of long paths: keep
  // the start, drain the rest so the tool never blocks on a full pipe.
  const kept = new Uint8Array(STDERR_KEPT_BYTES);
  let length = 0;
  for await (const chunk of child.stderr) {
    const room = kept.length - length;
    if (room > 0) {
      kept.set(chunk.subarray(0, room), length);
      length += Math.min(room, chunk.length);
    }
  }
  const status = await child.status;
  if (status.success) return { ok: true };
  const first = new TextDecoder().decode(kept.subarray(0, length))
    .split("\n", 1)[0]!;
  const line = first.length > 300 ? `${first.slice(0, 300)}…` : first;
  return {
    ok: false,
    reason: `${command} exited with code ${status.code}${
      line === "" ? "" : `: ${line}`
    }`,
  };
}
