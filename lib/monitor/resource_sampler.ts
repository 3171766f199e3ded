/**
 * The machine's load as a node reports it: CPU busy %, RAM used (MB and %).
 * CPU load is computed between two consecutive calls, so a sampler is meant
 * to be called periodically.
 *
 * On Linux both come from the kernel directly: the first line of
 * `/proc/stat` (CPU time per state, summed over all CPUs) and
 * {@linkcode Deno.systemMemoryInfo} (`/proc/meminfo`'s `MemAvailable`).
 * `systeminformation`, used elsewhere, runs `cat /proc/stat | grep cpu`
 * through a shell with `execSync` on every call: a fork of the whole node
 * process, its event loop blocked meanwhile, once a second in every node
 * (about 10 ms of CPU each on a busy 2-core host, more than a whole job's
 * share of the node's work).
 *
 * @module
 */
import si from "systeminformation";

/** One reading of the machine's load. */
export interface ResourceSample {
  /** CPU busy since the previous sample, 0-100 over all cores. */
  readonly cpuPercent: number;
  /** RAM in use (total minus available), in MB. */
  readonly ramUsedMb: number;
  /** RAM in use, 0-100. */
  readonly ramPercent: number;
}

/** Where samples come from: the real machine by default, a fake in tests. */
export type ResourceSampler = () => Promise<ResourceSample>;

/**
 * Reads this machine's CPU and RAM use.
 *
 * @example Logging the machine's load
 * ```ts
 * import { sampleResources } from "./resource_sampler.ts";
 *
 * const { cpuPercent, ramUsedMb, ramPercent } = await sampleResources();
 * console.log(`cpu ${cpuPercent.toFixed(1)}%, ram ${ramUsedMb} MB (${ramPercent.toFixed(1)}%)`);
 * ```
 */
export function sampleResources(): Promise<ResourceSample> {
  return defaultSampler();
}

/** Options of {@linkcode createResourceSampler}. */
export interface ResourceSamplerOptions {
  /** Where CPU times are read on Linux. @default "/proc/stat" */
  readonly statFile?: string;
}

/**
 * A sampler with a CPU baseline of its own: its first sample's CPU % is
 * the average since boot, every later one covers the time since the one
 * before.
 *
 * @example Two samplers do not share their baseline
 * ```ts
 * import { createResourceSampler } from "./resource_sampler.ts";
 *
 * const sample = createResourceSampler();
 * await sample(); // since boot
 * console.log((await sample()).cpuPercent); // since the call above
 * ```
 */
export function createResourceSampler(
  options: ResourceSamplerOptions = {},
): ResourceSampler {
  const { statFile = "/proc/stat" } = options;
  let previous: CpuTimes = { busy: 0, total: 0 };
  return () => {
    let now: CpuTimes | null;
    try {
      now = Deno.build.os === "linux" ? readCpuTimes(statFile) : null;
    } catch {
      now = null;
    }
    // Not Linux, or no /proc: systeminformation's way.
    if (now === null) return sampleWithSystemInformation();
    const total = now.total - previous.total;
    const busy = now.busy - previous.busy;
    previous = now;
    return Promise.resolve({
      cpuPercent: total > 0 ? round1(clamp(busy / total * 100)) : 0,
      ...memoryUse(Deno.systemMemoryInfo()),
    });
  };
}

const defaultSampler = createResourceSampler();

/** CPU time of all CPUs so far, in clock ticks. */
interface CpuTimes {
  /** Time not idle and not waiting for I/O. */
  readonly busy: number;
  /** All of it. */
  readonly total: number;
}

/**
 * The `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq,
 * softirq, steal, guest, guest_nice. Guest time is already counted in user
 * (and guest_nice in nice), so it is left out of the sums.
 */
function readCpuTimes(statFile: string): CpuTimes | null {
  const text = Deno.readTextFileSync(statFile);
  const line = text.slice(0, text.indexOf("\n"));
  const fields = line.split(/\s+/);
  if (fields[0] !== "cpu") return null;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields
    .slice(1, 9).map((field) => Number(field) || 0);
  const idleTime = idle! + iowait!;
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { busy, total: busy + idleTime };
}

function memoryUse(
  memory: { total: number; available: number },
): Pick<ResourceSample, "ramUsedMb" | "ramPercent"> {
  const usedBytes = memory.total - memory.available;
  return {
    ramUsedMb: Math.round(usedBytes / 1024 / 1024),
    ramPercent: memory.total > 0 ? round1((usedBytes / memory.total) * 100) : 0,
  };
}

async function sampleWithSystemInformation(): Promise<ResourceSample> {
  const [load, memory] = await Promise.all([si.currentLoad(), si.mem()]);
  return { cpuPercent: round1(load.currentLoad), ...memoryUse(memory) };
}

function clamp(percent: number): number {
  return Math.min(100, Math.max(0, percent));
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
