/**
 * The machine's load as a node reports it: CPU busy %, RAM used (MB and %).
 * Sampled through `systeminformation`, which computes CPU load between two
 * consecutive calls, so a sampler is meant to be called periodically.
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
export async function sampleResources(): Promise<ResourceSample> {
  const [load, memory] = await Promise.all([si.currentLoad(), si.mem()]);
  const usedBytes = memory.total - memory.available;
  return {
    cpuPercent: round1(load.currentLoad),
    ramUsedMb: Math.round(usedBytes / 1024 / 1024),
    ramPercent: memory.total > 0 ? round1((usedBytes / memory.total) * 100) : 0,
  };
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
