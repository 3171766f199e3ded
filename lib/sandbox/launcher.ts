/**
 * Launches one command of a job (a compile or a run step) and watches it to
 * the end: a cleared environment, its own process group, stdin fed, output
 * captured under a budget, a wall-time limit and cancellation that kill the
 * whole process tree.
 *
 * What the process-group kill cannot reach is a process that left the group
 * *and* lost its parent (`setsid` plus a double fork): it re-parents to init.
 * The launcher still returns on time, abandoning the pipes such a process
 * holds; the sandbox closes that gap through `killAll` (the step's cgroup)
 * and bubblewrap's pid namespace, which dies with its first process.
 *
 * The group comes from util-linux `setsid` as the first exec, not from
 * `Deno.Command`'s `detached`: with `detached`, Deno forks its whole
 * process (page tables of a V8 heap) instead of using `posix_spawn`, about
 * 4 ms of kiln's CPU per step. A `posix_spawn`ed child is never the leader
 * of a group, so `setsid` makes its own session and execs, without a fork:
 * the pid we spawned stays the program's pid and the group's leader.
 *
 * @module
 */
import { firstFile } from "./_first_file.ts";
import type { OutputStream } from "../job.ts";
import type { CommandSpec } from "../runners/runner.ts";
import { timerDelay } from "../_timer.ts";
import { OutputCapture } from "./output_capture.ts";
import { killProcessTree } from "./process_tree.ts";

/** How a launched step ended. */
export type StepEnding =
  | "exited"
  | "time_limit"
  | "cpu_limit"
  | "output_limit"
  | "cancelled";

/** A job-wide CPU time budget the launcher enforces by polling. */
export interface CpuBudget {
  /** CPU time the step may use, in milliseconds. */
  readonly limitMs: number;
  /** CPU time used so far by every process of the step, or null when unknown. */
  readonly read: () => Promise<number | null>;
  /**
   * The most CPUs the step's processes can run on at once: its CPU time
   * then grows by at most this many milliseconds per millisecond, and the
   * budget is first read when it could first be spent, not every
   * {@linkcode CPU_POLL_MS} from the start (each read wakes the node up:
   * a job shorter than its budget is never read). Undefined, every
   * {@linkcode CPU_POLL_MS}.
   * @default undefined
   */
  readonly cpus?: number | undefined;
}

/** How often a {@linkcode CpuBudget} is checked, at most. */
const CPU_POLL_MS = 50;

/**
 * How many CPUs this host can ever run a process on
 * (`/sys/devices/system/cpu/possible`, which counts CPUs that are offline
 * now too), read once; undefined where that cannot be read. An upper
 * bound for {@linkcode CpuBudget.cpus}, whatever affinity a job sets.
 *
 * @example Polling a step's CPU time only when it could be spent
 * ```ts
 * import { possibleCpus } from "./launcher.ts";
 *
 * console.log(possibleCpus()); // 2 on a host with CPUs 0-1
 * ```
 */
export function possibleCpus(): number | undefined {
  if (cpuCount === null) cpuCount = countPossibleCpus();
  return cpuCount;
}

let cpuCount: number | undefined | null = null;

function countPossibleCpus(): number | undefined {
  let list: string;
  try {
    list = Deno.readTextFileSync("/sys/devices/system/cpu/possible").trim();
  } catch {
    return undefined;
  }
  // "0-3,6,8-9": ranges and single CPUs.
  let count = 0;
  for (const part of list.split(",")) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!match) return undefined;
    const first = Number(match[1]);
    const last = Number(match[2] ?? match[1]);
    if (last < first) return undefined;
    count += last - first + 1;
  }
  return count > 0 ? count : undefined;
}

/** Options of {@linkcode launch}. */
export interface LaunchOptions {
  /** Working directory of the process. */
  readonly cwd: string;
  /** The whole environment of the process: nothing of ours leaks in. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Text written to the program's stdin, which is then closed (unless
   * `input` follows); none (and no `input`) means empty stdin.
   */
  readonly stdin?: string | undefined;
  /**
   * More stdin, written as it arrives while the program runs (an
   * interactive program); stdin closes when it ends. Abandoned (its
   * iterator returned) when the program exits first.
   */
  readonly input?: AsyncIterable<string> | undefined;
  /** Wall-clock limit in milliseconds; the process tree is killed after it. */
  readonly wallTimeMs: number;
  /** Bytes of stdout and stderr together to keep; more kills the process tree. */
  readonly outputBytes: number;
  /** Cancels the step: the process tree is killed. */
  readonly signal?: AbortSignal | undefined;
  /** Receives output chunks as they are produced. */
  readonly onOutput?:
    | ((stream: OutputStream, data: string) => void)
    | undefined;
  /** Ends the step with `cpu_limit` once its CPU time reaches the budget. */
  readonly cpu?: CpuBudget | undefined;
  /**
   * Kills what the process tree walk cannot see, e.g. every process in the
   * step's cgroup. Called with every kill and once more after the exit.
   */
  readonly killAll?: (() => Promise<void>) | undefined;
  /**
   * util-linux `setsid`, run first so that the step leads its own session
   * and process group; null spawns with `detached` instead (Deno then forks
   * itself: slower, same result).
   * @default {@linkcode findSetsid}'s answer
   */
  readonly setsidPath?: string | null | undefined;
}

/** Everything known about a finished step. */
export interface StepOutcome {
  /** Why the step ended: on its own, or stopped at a limit or by cancellation. */
  readonly ending: StepEnding;
  /** Exit code, or null when a signal ended the process. */
  readonly exitCode: number | null;
  /** Signal that ended the process, or null. */
  readonly signal: Deno.Signal | null;
  /** What the process wrote to stdout, up to the output limit. */
  readonly stdout: string;
  /** What the process wrote to stderr, up to the output limit. */
  readonly stderr: string;
  /** Whether output was cut at the limit. */
  readonly truncated: boolean;
  /** Wall-clock time from spawn to exit, in milliseconds. */
  readonly timeMs: number;
}

/**
 * How long to keep reading output after the process died and its tree was
 * killed. Only a process that escaped the kill can hold a pipe open longer.
 */
const PIPE_GRACE_MS = 250;

/**
 * Runs `spec` to its end under the given limits.
 *
 * @example Running a command with a time limit
 * ```ts
 * import assert from "node:assert/strict";
 * import { launch } from "./launcher.ts";
 *
 * const outcome = await launch(
 *   { command: "/bin/sh", args: ["-c", "echo hello"] },
 *   { cwd: "/tmp", env: { PATH: "/usr/bin:/bin" }, wallTimeMs: 1000, outputBytes: 1024 },
 * );
 * assert.equal(outcome.stdout, "hello\n");
 * ```
 */
export async function launch(
  spec: CommandSpec,
  options: LaunchOptions,
): Promise<StepOutcome> {
  const child = await spawnStep(spec, {
    ...options,
    stdin: options.stdin === undefined && options.input === undefined
      ? "null"
      : "piped",
  });
  return await superviseStep(child, options);
}

/** Options of {@linkcode spawnStep}. */
export interface SpawnOptions
  extends Pick<LaunchOptions, "cwd" | "env" | "setsidPath"> {
  /** Whether the process gets a stdin pipe or `/dev/null`. */
  readonly stdin: "piped" | "null";
}

/**
 * Spawns `spec` as the leader of its own process group, with a cleared
 * environment and piped output, and returns it unwatched: hand it to
 * {@linkcode superviseStep}, which owns it from then on. {@linkcode launch}
 * does both at once; a pre-warmed sandbox spawns long before it supervises.
 */
export async function spawnStep(
  spec: CommandSpec,
  options: SpawnOptions,
): Promise<Deno.ChildProcess> {
  const setsid = options.setsidPath === undefined
    ? await findSetsid()
    : options.setsidPath;
  const argv = setsid === null
    ? [spec.command, ...spec.args]
    : [setsid, "--", spec.command, ...spec.args];
  return new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    cwd: options.cwd,
    env: { ...options.env },
    clearEnv: true,
    stdin: options.stdin,
    stdout: "piped",
    stderr: "piped",
    // Leader of a new process group, so one kill reaches every descendant:
    // through setsid when there is one (see the module's doc).
    detached: setsid === null,
  }).spawn();
}

/** Options of {@linkcode superviseStep}: a launch's, less how to spawn. */
export type SuperviseOptions =
  & Omit<LaunchOptions, "cwd" | "env" | "setsidPath">
  & {
    /**
     * Bytes written to stdin before `stdin`: what a waiting pre-warmed
     * sandbox reads as its orders before it execs the program.
     */
    readonly preamble?: Uint8Array | undefined;
  };

/**
 * Watches a spawned step to its end: feeds its stdin, captures its output,
 * enforces the wall time, CPU and output limits and cancellation, and
 * kills its whole tree at the end. Its time counts from this call.
 */
export async function superviseStep(
  child: Deno.ChildProcess,
  options: SuperviseOptions,
): Promise<StepOutcome> {
  const started = performance.now();

  let ending: StepEnding = "exited";
  /** Set once the program exited: a limit or a cancel that fires later did not end it. */
  let exited = false;
  const killEverything = () =>
    Promise.all([
      killProcessTree(child.pid).then(() => {
        // Before setsid has run, the child leads no group yet and the group
        // kill misses it. Only after the tree walk: killing the parent first
        // would hide the descendants that left the group. Deno knows
        // whether the child was reaped, so no stray pid is hit.
        if (exited) return;
        try {
          child.kill("SIGKILL");
        } catch {
          // Already exited.
        }
      }),
      options.killAll?.(),
    ]);
  const stop = (why: StepEnding) => {
    if (ending !== "exited") return;
    // Output still in the pipes after the exit counts; a timer does not.
    if (exited && why !== "output_limit") return;
    ending = why;
    killEverything();
  };
  const timer = setTimeout(
    () => stop("time_limit"),
    timerDelay(options.wallTimeMs),
  );
  const cpuWatch = options.cpu &&
    watchCpu(options.cpu, () => stop("cpu_limit"));
  const onAbort = () => stop("cancelled");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();

  const capture = new OutputCapture({
    limitBytes: options.outputBytes,
    onOutput: options.onOutput,
    onLimit: () => stop("output_limit"),
  });
  const captured = capture.drain(child.stdout, child.stderr);
  const inputs = options.input?.[Symbol.asyncIterator]();
  const fed = options.stdin === undefined && inputs === undefined &&
      options.preamble === undefined
    ? Promise.resolve()
    : feed(child.stdin, options.stdin ?? "", inputs, options.preamble);

  try {
    const status = await child.status;
    const timeMs = performance.now() - started;
    exited = true;
    clearTimeout(timer);
    cpuWatch?.stop();
    // Nobody reads stdin any more: stop waiting for input to give it.
    inputs?.return?.();
    // The program is gone, but anything it left running must go too: that
    // also closes the pipes those leftovers hold.
    await killEverything();
    // Only a process that escaped the kill can still hold a pipe now: give
    // it a moment, then stop reading its output and stop waiting to write
    // the stdin it never reads.
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => {
      graceTimer = setTimeout(() => {
        capture.cancel();
        resolve();
      }, PIPE_GRACE_MS);
    });
    const [text] = await Promise.all([
      captured,
      Promise.race([fed, grace]),
    ]).finally(() => clearTimeout(graceTimer));
    return {
      ending,
      exitCode: status.signal === null ? status.code : null,
      signal: status.signal,
      ...text,
      timeMs: Math.round(timeMs),
    };
  } finally {
    clearTimeout(timer);
    cpuWatch?.stop();
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** Where util-linux `setsid` is looked for, in order. */
const SETSID_PATHS = ["/usr/bin/setsid", "/bin/setsid"];

let setsid: Promise<string | null> | undefined;

/**
 * The path of util-linux `setsid` (looked up once per process), or null
 * when there is none: {@linkcode launch} then spawns with `detached`.
 *
 * @example Finding setsid
 * ```ts
 * import { findSetsid } from "./launcher.ts";
 *
 * console.log(await findSetsid()); // "/usr/bin/setsid" on Debian
 * ```
 */
export function findSetsid(): Promise<string | null> {
  setsid ??= firstFile(SETSID_PATHS);
  return setsid;
}

/**
 * Polls `budget` until stopped, calling `onExceeded` once when it is spent:
 * never before it could be spent (see {@linkcode CpuBudget.cpus}), then at
 * least every {@linkcode CPU_POLL_MS}.
 */
function watchCpu(budget: CpuBudget, onExceeded: () => void) {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const { cpus } = budget;
  const delayAfter = (used: number | null) =>
    cpus === undefined || used === null
      ? CPU_POLL_MS
      : timerDelay(Math.max(CPU_POLL_MS, (budget.limitMs - used) / cpus));
  const poll = async () => {
    const used = await budget.read().catch(() => null);
    if (stopped) return;
    if (used !== null && used >= budget.limitMs) return onExceeded();
    timer = setTimeout(poll, delayAfter(used));
  };
  timer = setTimeout(poll, delayAfter(0));
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/**
 * Writes the preamble, stdin, then whatever `inputs` yields, and closes
 * it; a program that exits without reading it is fine.
 */
async function feed(
  stdin: WritableStream<Uint8Array>,
  text: string,
  inputs: AsyncIterator<string> | undefined,
  preamble: Uint8Array | undefined,
): Promise<void> {
  const writer = stdin.getWriter();
  const encoder = new TextEncoder();
  try {
    if (preamble !== undefined) await writer.write(preamble);
    if (text !== "") await writer.write(encoder.encode(text));
    while (inputs) {
      const next = await inputs.next();
      if (next.done) break;
      await writer.write(encoder.encode(next.value));
    }
    await writer.close();
  } catch {
    // Broken pipe: the program closed stdin or died. Not our error to report.
    writer.abort().catch(() => {});
  }
}
