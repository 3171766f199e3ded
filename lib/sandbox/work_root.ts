/**
 * Where job workdirs live: one directory per kiln process,
 * `<tmp>/kiln-<pid>/`, so that the workdirs of a process that was killed
 * before it could clean up (SIGKILL, a power cut) are found and removed by
 * the next kiln process that starts on the machine.
 *
 * @module
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isProcessAlive } from "./process_tree.ts";

const PREFIX = "kiln-";

/** This process's directory for job workdirs, made on first use. */
export async function defaultWorkRoot(): Promise<string> {
  const root = join(tmpdir(), `${PREFIX}${Deno.pid}`);
  await Deno.mkdir(root, { recursive: true, mode: 0o700 });
  return root;
}

/**
 * Removes the work roots of kiln processes that are gone, with whatever
 * workdirs they left. Returns how many it removed; never throws.
 *
 * @example Sweeping at start-up
 * ```ts
 * import { sweepStaleWorkRoots } from "./work_root.ts";
 *
 * const removed = await sweepStaleWorkRoots();
 * console.log(`removed ${removed} stale work roots`);
 * ```
 */
export async function sweepStaleWorkRoots(
  parent: string = tmpdir(),
): Promise<number> {
  let removed = 0;
  try {
    for await (const entry of Deno.readDir(parent)) {
      const pid = Number(entry.name.slice(PREFIX.length));
      if (
        !entry.isDirectory || !entry.name.startsWith(PREFIX) ||
        !Number.isInteger(pid) || pid <= 0
      ) continue;
      if (pid === Deno.pid || await isProcessAlive(pid)) continue;
      await Deno.remove(join(parent, entry.name), { recursive: true });
      removed++;
    }
  } catch {
    // An unreadable temp dir, or a root removed meanwhile: nothing to sweep.
  }
  return removed;
}
