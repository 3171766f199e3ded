/**
 * Finding a job's processes from the host, whatever sandbox they run in.
 *
 * A pid a job prints is worthless to the test once the job has its own pid
 * namespace (it prints 3, which on the host is someone else), and a job
 * cannot see the host's processes either. So a test gives the job a unique
 * marker, the job puts it in the argv of every process it wants found
 * (`exec -a "$MARK" sleep 600`), and the test looks for that marker in the
 * host's `/proc/<pid>/cmdline`.
 *
 * Passing the marker as an argument of the job itself (`args: [mark]`, then
 * `exec -a "$1" …`) leaves no window in which a process is unmarked: a child
 * a shell forks carries its parent's argv until it `exec`s, and keeps the
 * marker after.
 *
 * @module
 */

/**
 * A marker no other process on the host carries.
 *
 * @example Marking a job's sleep
 * ```ts
 * import { processMarker } from "./_processes.ts";
 *
 * const mark = processMarker();
 * const script = `(exec -a "$1" sleep 600) & echo started; wait`;
 * const request = { language: "bash", files: [{ name: "main.sh", content: script }], args: [mark] };
 * ```
 */
export function processMarker(): string {
  return `kiln-mark-${crypto.randomUUID()}`;
}

/**
 * The pids of the host's live processes (zombies left out) one of whose
 * NUL-separated `argv` entries equals or contains `marker`. Never throws
 * for a process that exits while it looks.
 *
 * @example Checking that a job left nothing behind
 * ```ts
 * import { processesWithArg, processMarker } from "./_processes.ts";
 *
 * const mark = processMarker();
 * console.assert((await processesWithArg(mark)).length === 0);
 * ```
 */
export async function processesWithArg(marker: string): Promise<number[]> {
  const found: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      if (!cmdline.split("\0").some((arg) => arg.includes(marker))) continue;
      if (await isZombie(entry.name)) continue;
      found.push(Number(entry.name));
    } catch {
      // The process exited while we looked.
    }
  }
  return found;
}

async function isZombie(pid: string): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // `pid (comm) state …`: comm may hold spaces and parentheses, so the
  // state is the first field after the last ")".
  return stat.slice(stat.lastIndexOf(")") + 1).trimStart().startsWith("Z");
}
