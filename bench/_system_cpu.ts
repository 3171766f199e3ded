/**
 * CPU a batch of jobs costs the whole machine: every process and the
 * kernel, from the busy ticks of `/proc/stat`. A process's own counters
 * miss what a job costs elsewhere: namespace teardown (a network namespace
 * is cleaned up by kernel workers after its last process exits), cgroup
 * removal, the exec chain of short-lived processes that are gone before
 * anyone reads them. Whatever else the machine does runs through the same
 * counters, so the background's busy rate, measured idle in the same run,
 * is taken off each batch in proportion to its length.
 *
 * @module
 */
import { percentile, processCpuMs } from "./_stats.ts";

/** Length of one clock tick of `/proc/stat`, in ms (USER_HZ is 100 on Linux). */
const TICK_MS = 10;

/**
 * Busy time of all CPUs together since boot, in ms: user, nice, system,
 * irq, softirq and steal (everything but idle and iowait).
 */
export function systemBusyMs(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(
    /\s+/,
  ).slice(1).map(Number);
  return TICK_MS *
    (user! + nice! + system! + irq! + softirq! + (steal ?? 0));
}

/** What one batch cost. */
interface Sample {
  readonly jobs: number;
  readonly wallMs: number;
  readonly busyMs: number;
  /** The bench process's own share (its spawns, its HTTP clients). */
  readonly selfMs: number;
}

/** System-wide CPU per job of one kind of batch. */
export interface CpuPerJob {
  /** Every process and the kernel, less the background, per job (median batch). */
  readonly allMs: number;
  /** Of it, the bench process's own CPU per job (median batch). */
  readonly benchMs: number;
  readonly batches: number;
}

/**
 * Collects batches' system-wide CPU under labels, and idle periods for the
 * background rate taken off them.
 */
export class SystemCpu {
  readonly #samples = new Map<string, Sample[]>();
  #idleBusyMs = 0;
  #idleWallMs = 0;

  /** Runs `batch` of `jobs` jobs and records its cost under `label`; returns its wall time in ms. */
  async measure(
    label: string,
    jobs: number,
    batch: () => Promise<unknown>,
  ): Promise<number> {
    const [busy, self, started] = [
      systemBusyMs(),
      processCpuMs("self"),
      performance.now(),
    ];
    await batch();
    const wallMs = performance.now() - started;
    const sample = {
      jobs,
      wallMs,
      busyMs: systemBusyMs() - busy,
      selfMs: processCpuMs("self") - self,
    };
    const samples = this.#samples.get(label) ?? [];
    samples.push(sample);
    this.#samples.set(label, samples);
    return wallMs;
  }

  /** Waits `ms` doing nothing, counting what the machine did meanwhile as background. */
  async idle(ms: number): Promise<number> {
    const [busy, started] = [systemBusyMs(), performance.now()];
    await new Promise((resolve) => setTimeout(resolve, ms));
    const wallMs = performance.now() - started;
    this.#idleBusyMs += systemBusyMs() - busy;
    this.#idleWallMs += wallMs;
    return wallMs;
  }

  /** The background's busy time per ms of wall time, over every idle period so far (0 to the core count). */
  get backgroundRate(): number {
    return this.#idleWallMs === 0 ? 0 : this.#idleBusyMs / this.#idleWallMs;
  }

  /** CPU per job of the batches under `label`, or undefined when none ran. */
  perJob(label: string): CpuPerJob | undefined {
    const samples = this.#samples.get(label);
    if (samples === undefined) return undefined;
    const rate = this.backgroundRate;
    return {
      allMs: percentile(
        samples.map((s) => (s.busyMs - rate * s.wallMs) / s.jobs),
        50,
      ),
      benchMs: percentile(samples.map((s) => s.selfMs / s.jobs), 50),
      batches: samples.length,
    };
  }
}
