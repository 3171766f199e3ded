/**
 * Killing a job means killing every process it started, not only the one we
 * spawned: `child.kill()` leaves grandchildren alive, still holding the
 * output pipes open. Each job is spawned as the leader of its own process
 * group, and descendants that left the group (`setsid`) are found by walking
 * `/proc` while their parent still lives.
 *
 * A process that double-forks out of the group after its parent died
 * re-parents to init and cannot be found this way; the cgroup layer of the
 * sandbox closes that gap.
 *
 * @module
 */

/** How many times to sweep for processes forked while we were killing. */
const MAX_SWEEPS = 8;

/** One row of `/proc`: the fields needed to find a job's processes. */
interface ProcessInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly pgrp: number;
  /** Single-letter state; `Z` is a zombie, already dead. */
  readonly state: string;
}

/**
 * Sends SIGKILL to the process group led by `pid` and to every live
 * descendant of `pid` that is still reachable through its parents, sweeping
 * until none is left. Never throws.
 *
 * @example Killing a shell and the sleep it started
 * ```ts
 * import { killProcessTree } from "./process_tree.ts";
 *
 * const child = new Deno.Command("sh", { args: ["-c", "sleep 60 & wait"], detached: true }).spawn();
 * await killProcessTree(child.pid);
 * await child.status;
 * ```
 */
export async function killProcessTree(pid: number): Promise<void> {
  // The common case: the program exited (and was reaped) leaving nothing in
  // its group. Its descendants could then only be found through group
  // members, so there is nothing to sweep for.
  if (!(await isProcessAlive(pid)) && !groupExists(pid)) return;
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    // Read the tree while it is still whole: a descendant that left the
    // group is found through its parent, which the kill below takes away.
    // (No SIGSTOP first: if this process died between stopping and
    // killing, the job would be left frozen forever.)
    const processes = readProcesses();
    const targets = processes === undefined
      ? []
      : findJobProcesses(pid, processes);
    signal(-pid, "SIGKILL");
    for (const target of targets) signal(target, "SIGKILL");
    // No /proc (not Linux): the group kill is all there is.
    if (processes === undefined || targets.length === 0) return;
    // Let the kernel deliver the signals before the next sweep looks again.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * The live (non-zombie) processes that belong to the job led by `root`:
 * members of its process group and descendants through their parents.
 */
export function findJobProcesses(
  root: number,
  processes: readonly ProcessInfo[],
): number[] {
  const children = new Map<number, ProcessInfo[]>();
  for (const info of processes) {
    const siblings = children.get(info.ppid);
    if (siblings) siblings.push(info);
    else children.set(info.ppid, [info]);
  }
  const found = new Set<number>();
  for (const info of processes) {
    if (info.pgrp === root && info.state !== "Z") found.add(info.pid);
  }
  const pending = [root];
  while (pending.length > 0) {
    for (const child of children.get(pending.pop()!) ?? []) {
      if (child.state !== "Z") found.add(child.pid);
      pending.push(child.pid);
    }
  }
  return [...found];
}

/**
 * Every process in `/proc`, or undefined where there is no `/proc`. Read
 * synchronously: `/proc` is in memory, and each async read would cost a
 * hop to another thread and back.
 */
export function readProcesses(): ProcessInfo[] | undefined {
  const processes: ProcessInfo[] = [];
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const info = readProcess(entry.name);
      if (info) processes.push(info);
    }
  } catch {
    return undefined;
  }
  return processes;
}

/**
 * Whether a process is alive. A zombie is not: it is dead, only waiting for
 * its parent to collect its exit status.
 *
 * @example Checking on a process
 * ```ts
 * import assert from "node:assert/strict";
 * import { isProcessAlive } from "./process_tree.ts";
 *
 * assert.equal(await isProcessAlive(Deno.pid), true);
 * ```
 */
export function isProcessAlive(pid: number): Promise<boolean> {
  const info = readProcess(String(pid));
  return Promise.resolve(info !== undefined && info.state !== "Z");
}

function readProcess(pid: string): ProcessInfo | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name (field 2) may contain spaces and parentheses, so
    // fields are counted from the last ")": state, ppid, pgrp.
    const [state = "", ppid, pgrp] = stat.slice(stat.lastIndexOf(")") + 2)
      .split(" ");
    return { pid: Number(pid), ppid: Number(ppid), pgrp: Number(pgrp), state };
  } catch {
    return undefined; // The process exited while we looked.
  }
}

/** Whether any process is still in process group `pgid` (zombies included). */
function groupExists(pgid: number): boolean {
  try {
    // Signal 0 checks for existence without sending anything.
    Deno.kill(-pgid, 0 as unknown as Deno.Signal);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch {
    // Already gone (ESRCH), which is what we want.
  }
}

/**
 * The live processes whose uid is `uid`, read from `/proc`: the processes
 * of the job that has that uid (see `identity.ts`). Zombies are left out
 * (they hold nothing and die with their parent).
 *
 * @example Checking that no job process is left
 * ```ts
 * import { processesOfUser } from "./process_tree.ts";
 *
 * console.log(processesOfUser(65534)); // [] when no job runs as nobody
 * ```
 */
export function processesOfUser(uid: number): number[] {
  return processesOfUids({ first: uid, last: uid });
}

/**
 * The live processes whose uid is in `first`–`last`, read from `/proc`:
 * e.g. of every job of a node, whose uids are its block. Zombies are left
 * out.
 *
 * The uid is the owner of the `/proc/<pid>` directory: one `stat` per
 * process, where reading its `status` costs several times more and, for a
 * Deno async read, a hop to another thread. The directory is owned by the
 * process's effective uid even when the process made itself non-dumpable
 * (`prctl(PR_SET_DUMPABLE, 0)`; the files in it are then root's). A job's
 * process cannot make its effective uid differ from its real uid: it holds
 * no `CAP_SETUID` and runs with `no_new_privs`, which makes a set-user-ID
 * bit do nothing. Only the processes found are read further, to leave out
 * zombies.
 *
 * @example Checking that no job of a node is left
 * ```ts
 * import { processesOfUids } from "./process_tree.ts";
 *
 * console.log(processesOfUids({ first: 1879048192, last: 1879113727 })); // []
 * ```
 */
export function processesOfUids(
  uids: { readonly first: number; readonly last: number },
): number[] {
  const found: number[] = [];
  // Synchronous: /proc is in memory, and a few hundred small calls cost
  // less on this thread than the thread hops of as many async ones.
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let owner: number | null;
    try {
      owner = Deno.statSync(`/proc/${entry.name}`).uid;
    } catch {
      continue; // The process exited while we looked.
    }
    if (owner === null || owner < uids.first || owner > uids.last) continue;
    if (!isDead(entry.name)) found.push(Number(entry.name));
  }
  return found;
}

/**
 * Whether the process `pid` is a zombie with nothing left alive in it. A
 * zombie whose threads still run is alive: its main thread exited (a
 * `pthread_exit` in `main`) and `/proc` shows the whole process as `Z`.
 */
function isDead(pid: string): boolean {
  let status: string;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return true; // Gone since.
  }
  const state = /^State:\s+(\S)/m.exec(status)?.[1];
  // The dead main thread still counts until the whole process is reaped.
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]);
  return state === "Z" && threads <= 1;
}
