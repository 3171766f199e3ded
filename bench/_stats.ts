/**
 * Numbers a benchmark reports: percentiles over latencies, and a description
 * of the machine, so results are read against where they were measured.
 *
 * @module
 */

/** What one benchmark section contributes to BENCHMARKS.md. */
export interface BenchSection {
  readonly title: string;
  readonly markdown: string;
}

/** The p-th percentile (0-100) of `values`, nearest-rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(
    sorted.length,
    Math.max(1, Math.ceil((p / 100) * sorted.length)),
  );
  return sorted[rank - 1]!;
}

/** One line per fact about this machine and runtime, and how busy it is now. */
export async function describeMachine(): Promise<string[]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown CPU";
  const memoryGiB = Deno.systemMemoryInfo().total / 1024 ** 3;
  // Other work on the machine inflates every number: say how busy it was.
  const [one, five, fifteen] = Deno.loadavg().map((n) => n.toFixed(2));
  return [
    `date: ${new Date().toISOString()}`,
    `machine: ${model}, ${navigator.hardwareConcurrency} cores, ${
      memoryGiB.toFixed(1)
    } GiB RAM`,
    `os: ${Deno.build.os} ${Deno.osRelease()} (${Deno.build.arch})`,
    `deno: ${Deno.version.deno} (v8 ${Deno.version.v8})`,
    `load average before the bench: ${one} ${five} ${fifteen} (1, 5, 15 min)`,
  ];
}

/** Runs `task` over `items` with at most `parallelism` at once, in order of start. */
export async function runPool<T, R>(
  items: readonly T[],
  parallelism: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!);
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(parallelism, items.length) }, lane),
  );
  return results;
}

/**
 * Times every subject once per round, each round starting one further
 * along the list (a, b, c; b, c, a; ...), so that drift on a noisy machine
 * falls on all alike and none always runs in another's wake; the first
 * `warmup` rounds are dropped. Returns each subject's times, in round order.
 */
export async function inRotation<T>(
  subjects: readonly T[],
  options: { rounds: number; warmup: number; pauseMs?: number },
  time: (subject: T) => Promise<number>,
): Promise<number[][]> {
  const times: number[][] = subjects.map(() => []);
  for (let round = 0; round < options.warmup + options.rounds; round++) {
    for (let k = 0; k < subjects.length; k++) {
      const index = (round + k) % subjects.length;
      // A lull before each: what the last subject set off in the background
      // (a node making up its warm sandboxes) is not the next one's cost.
      if (options.pauseMs) {
        await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
      }
      const ms = await time(subjects[index]!);
      if (round >= options.warmup) times[index]!.push(ms);
    }
  }
  return times;
}

/**
 * Times `first` and `second` in pairs whose order alternates, so that drift
 * on a noisy machine falls on both alike; the first `warmup` pairs are
 * dropped. Returns each side's times, in pair order.
 */
export async function alternatingPairs<T>(
  first: T,
  second: T,
  options: { pairs: number; warmup: number; pauseMs?: number },
  time: (subject: T) => Promise<number>,
): Promise<{ first: number[]; second: number[] }> {
  const [firstTimes, secondTimes] = await inRotation(
    [first, second],
    {
      rounds: options.pairs,
      warmup: options.warmup,
      ...options.pauseMs ? { pauseMs: options.pauseMs } : {},
    },
    time,
  );
  return { first: firstTimes!, second: secondTimes! };
}

/**
 * CPU time (user + system) a process has used so far, in milliseconds, from
 * `/proc/<pid>/stat`: its own threads, not its children's. Clock ticks of
 * 10 ms, so only sums over many jobs mean anything.
 */
export function processCpuMs(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name's last ")": utime and stime are 12 and 13.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
