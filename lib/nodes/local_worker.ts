/**
 * The master's own slots as a {@linkcode Worker}: jobs run in this process
 * through the executor, and the load is this machine's, sampled by the
 * master.
 *
 * @module
 */
import { executeJob } from "../executor.ts";
import { InputChannel } from "../sandbox/input_channel.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import type { LimitOverrides } from "../job.ts";
import type { ResourceSample } from "../monitor/resource_sampler.ts";
import type { NodeStatus, OfferedLanguage } from "../protocol/messages.ts";
import type { ResolvedRunner } from "../runners/registry.ts";
import { type NodeLoad, nodeState } from "../scheduler/placement.ts";
import type {
  Worker,
  WorkerJob,
  WorkerJobEvents,
} from "../scheduler/worker.ts";

/** The id of the master's own slots among its workers; no secondary may take it. */
export const LOCAL_WORKER_ID = "local";

/** Options of {@linkcode LocalWorker}. */
export interface LocalWorkerOptions {
  readonly name: string;
  readonly address: string;
  readonly slots: number;
  /** The runners this machine has, by canonical name. */
  readonly runners: ReadonlyMap<string, ResolvedRunner>;
  readonly limits: LimitOverrides;
  readonly maxCpu: number;
  readonly maxRam: number;
  readonly workRoot?: string | undefined;
  /** The sandbox every job runs in. */
  readonly sandbox: Sandbox;
  /** The machine's latest load, kept fresh by the master. */
  readonly sample: () => ResourceSample;
}

/**
 * Runs jobs on the master's own machine.
 *
 * @example Running a job on the master's own slots
 * ```ts ignore
 * const worker = new LocalWorker({ name: "master", address, slots: 2, runners, limits: {}, maxCpu: 100, maxRam: 95, sandbox: Sandbox.none(), sample });
 * worker.start({ id, request, language: "python" }, { output, result, failed });
 * ```
 */
export class LocalWorker implements Worker {
  readonly id = LOCAL_WORKER_ID;
  readonly name: string;
  readonly address: string;
  readonly languages: readonly OfferedLanguage[];
  #options: LocalWorkerOptions;
  /** Built once: every dispatch reads it. */
  readonly #languageNames: ReadonlySet<string>;
  #running = new Map<string, AbortController>();
  /** Stdin channels of the interactive jobs running here. */
  #inputs = new Map<string, InputChannel>();
  /** Every job's whole life, its cleanup included. */
  readonly #unfinished = new Set<Promise<void>>();

  constructor(options: LocalWorkerOptions) {
    this.#options = options;
    this.#languageNames = new Set(options.runners.keys());
    this.name = options.name;
    this.address = options.address;
    this.languages = [...options.runners.values()].map((
      { runner, toolchain },
    ) => ({
      name: runner.name,
      version: toolchain.version,
      aliases: [...runner.aliases],
      extensions: [...runner.extensions],
    }));
  }

  /** Jobs running now, and every job still to report: one set. */
  get running(): number {
    return this.#running.size;
  }

  load(): NodeLoad {
    const { cpuPercent, ramPercent } = this.#options.sample();
    return {
      id: this.id,
      name: this.name,
      local: true,
      languages: this.#languageNames,
      slots: this.#options.slots,
      assigned: this.#running.size,
      cpuPercent,
      ramPercent,
      maxCpu: this.#options.maxCpu,
      maxRam: this.#options.maxRam,
      draining: false,
      failingUntil: 0,
    };
  }

  start(job: WorkerJob, events: WorkerJobEvents): void {
    const resolved = this.#options.runners.get(job.language);
    if (!resolved) {
      // Placement only picks a node for a language it runs: a bug if reached.
      return queueMicrotask(() =>
        events.failed(`no ${job.language} runner here`, "refused")
      );
    }
    const abort = new AbortController();
    this.#running.set(job.id, abort);
    const input = job.request.interactive ? new InputChannel() : undefined;
    if (input) this.#inputs.set(job.id, input);
    const done = executeJob(resolved, job.request, {
      ...input ? { input } : {},
      jobId: job.id,
      nodeName: this.name,
      limits: this.#options.limits,
      sandbox: this.#options.sandbox,
      signal: abort.signal,
      onOutput: (stream, data) => events.output(stream, data),
      // The slot frees with the result; the cleanup that follows is the
      // sandbox's to finish (its close() waits for it).
      onResult: (result) => {
        this.#running.delete(job.id);
        this.#inputs.delete(job.id);
        events.result(result);
      },
      ...this.#options.workRoot ? { workRoot: this.#options.workRoot } : {},
    }).then(() => {});
    this.#unfinished.add(done);
    done.finally(() => this.#unfinished.delete(done));
  }

  /**
   * Resolves once every job started here is cleaned up, which may be after
   * its result: a master waits for it before it removes its work root.
   */
  async cleanedUp(): Promise<void> {
    while (this.#unfinished.size > 0) await Promise.all(this.#unfinished);
  }

  cancel(jobId: string, reason: string): void {
    this.#running.get(jobId)?.abort(reason);
  }

  input(jobId: string, data: string, eof: boolean): void {
    const input = this.#inputs.get(jobId);
    input?.push(data);
    if (eof) input?.end();
  }

  markFailing(): void {
    // The master's own slots do not refuse work: nothing to remember.
  }

  status(): NodeStatus {
    const load = this.load();
    return {
      id: this.id,
      name: this.name,
      address: this.address,
      state: nodeState(load, Date.now()),
      local: true,
      cpuPercent: load.cpuPercent,
      ramPercent: load.ramPercent,
      running: load.assigned,
      slots: this.#options.slots,
      languages: this.languages.map(({ name, version }) => ({ name, version })),
      lastSeenMs: 0,
      sandbox: this.#options.sandbox.report,
    };
  }
}
