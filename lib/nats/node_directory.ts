/**
 * The nodes of a NATS cluster as one master sees them: every live entry of
 * the nodes bucket, each a {@linkcode NatsNodeWorker} for the master's
 * dispatcher. Such a worker is a window, not a destination: a job placed
 * on it goes into the stream, and whichever node has room takes it. The
 * windows keep the stream short, so that the master's fair queue, not the
 * stream's order, decides whose job goes next; a node's window is its
 * slots, counted against the jobs this master put in the stream for it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { KvEntry } from "@nats-io/kv";
import { followBucket } from "./_bucket_watch.ts";
import type { NodeLoad } from "../scheduler/placement.ts";
import type {
  NodeStatus,
  OfferedLanguage,
  Worker,
  WorkerJob,
  WorkerJobEvents,
} from "../scheduler/worker.ts";
import type { ClusterJobs } from "./cluster_jobs.ts";
import type { NatsCluster } from "./nats_cluster.ts";
import { decode, type NodeEntry, NodeEntrySchema } from "./wire.ts";

const log = getLogger(["kiln", "nats"]);

/** A node of the NATS cluster, as a window for the master's dispatcher. */
export class NatsNodeWorker implements Worker {
  /** Its `started` comes from the node that takes the job, not from `start()`. */
  readonly reportsStart = true;
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly languages: readonly OfferedLanguage[];
  readonly #jobs: ClusterJobs;
  #entry: NodeEntry;
  /** When the master last read its entry, by the master's clock (performance.now). */
  #seenAt: number;
  /** Jobs this master put in the stream through this window and not yet ended. */
  #charged = 0;
  #failingUntil = 0;
  #load: NodeLoad | undefined;

  constructor(entry: NodeEntry, jobs: ClusterJobs) {
    this.id = entry.id;
    this.name = entry.name;
    this.address = entry.address;
    this.languages = entry.languages;
    this.#entry = entry;
    this.#jobs = jobs;
    this.#seenAt = performance.now();
  }

  /** The node's entry, as last read. */
  get entry(): NodeEntry {
    return this.#entry;
  }

  /** Milliseconds since its entry was last written, as this master saw it. */
  get silentMs(): number {
    return performance.now() - this.#seenAt;
  }

  /** A new heartbeat of the node. */
  update(entry: NodeEntry): void {
    this.#entry = entry;
    this.#seenAt = performance.now();
    this.#load = undefined;
  }

  load(): NodeLoad {
    return this.#load ??= {
      id: this.id,
      name: this.name,
      local: false,
      languages: new Set(this.languages.map(({ name }) => name)),
      slots: this.#entry.slots,
      assigned: this.#charged,
      cpuPercent: this.#entry.cpuPercent,
      ramPercent: this.#entry.ramPercent,
      maxCpu: this.#entry.maxCpu,
      maxRam: this.#entry.maxRam,
      draining: this.#entry.draining,
      failingUntil: this.#failingUntil,
    };
  }

  start(job: WorkerJob, events: WorkerJobEvents): void {
    this.#charge(1);
    let ended = false;
    this.#jobs.start({ ...job, client: job.client ?? "" }, {
      started: (node, attempt) => events.started?.(node, attempt),
      output: (stream, data) => events.output(stream, data),
      result: (result) => {
        if (ended) return;
        ended = true;
        this.#charge(-1);
        events.result(result);
      },
    });
  }

  cancel(jobId: string, reason: string): void {
    void this.#jobs.cancel(jobId, reason);
  }

  input(jobId: string, data: string, eof: boolean): void {
    this.#jobs.input(jobId, data, eof);
  }

  markFailing(until: number): void {
    this.#failingUntil = until;
    this.#load = undefined;
  }

  status(): NodeStatus {
    const entry = this.#entry;
    const full = entry.running >= entry.slots ||
      entry.cpuPercent > entry.maxCpu || entry.ramPercent > entry.maxRam;
    return {
      id: this.id,
      name: this.name,
      address: this.address,
      state: entry.draining ? "draining" : full ? "busy" : "ready",
      local: false,
      cpuPercent: entry.cpuPercent,
      ramPercent: entry.ramPercent,
      // The node's own count: every master's jobs, not only this one's.
      running: entry.running,
      slots: entry.slots,
      languages: this.languages.map(({ name, version }) => ({ name, version })),
      lastSeenMs: Math.round(this.silentMs),
      sandbox: entry.sandbox,
    };
  }

  #charge(delta: 1 | -1): void {
    this.#charged += delta;
    this.#load = undefined;
  }
}

/** What {@linkcode NodeDirectory} tells the master. */
export interface NodeDirectoryOptions {
  readonly cluster: NatsCluster;
  readonly jobs: ClusterJobs;
  /** A node whose entry is older than this is gone, in ms. */
  readonly nodeTimeoutMs: number;
  /** A node appeared (or came back with other languages). */
  readonly joined: (worker: NatsNodeWorker) => void;
  /** A node's load changed. */
  readonly changed: (worker: NatsNodeWorker) => void;
  /** A node left, or went silent. */
  readonly left: (worker: NatsNodeWorker, reason: string) => void;
}

/**
 * Watches the nodes bucket and keeps one worker per live node.
 *
 * @example
 * ```ts ignore
 * const directory = new NodeDirectory({ cluster, jobs, nodeTimeoutMs: 5000, joined, changed, left });
 * await directory.ready;
 * directory.close();
 * ```
 */
export class NodeDirectory {
  readonly #options: NodeDirectoryOptions;
  readonly #workers = new Map<string, NatsNodeWorker>();
  readonly #sweep: ReturnType<typeof setInterval>;
  #stopWatching: (() => void) | undefined;
  #closed = false;
  /** Resolves once the watch of the bucket began. */
  readonly ready: Promise<void>;

  constructor(options: NodeDirectoryOptions) {
    this.#options = options;
    this.#sweep = setInterval(
      () => this.#dropSilent(),
      Math.max(100, Math.floor(options.nodeTimeoutMs / 4)),
    );
    this.ready = this.#watch();
  }

  /** The live nodes. */
  get workers(): NatsNodeWorker[] {
    return [...this.#workers.values()];
  }

  /** Stops watching. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#stopWatching?.();
  }

  async #watch(): Promise<void> {
    const stop = new AbortController();
    this.#stopWatching = () => stop.abort();
    if (this.#closed) stop.abort();
    void followBucket(
      this.#options.cluster.nodes,
      (entry) => this.#onEntry(entry),
      {
        name: "nodes",
        quietMs: Math.max(500, Math.floor(this.#options.nodeTimeoutMs / 2)),
        signal: stop.signal,
      },
    );
    await Promise.resolve();
  }

  #onEntry(entry: KvEntry): void {
    if (this.#closed) return;
    const existing = this.#workers.get(entry.key);
    if (entry.operation !== "PUT") {
      if (existing) this.#remove(existing, "it left");
      return;
    }
    const node = decode(NodeEntrySchema, entry.value);
    if (node === undefined || node.id !== entry.key) {
      log.warn("ignoring an invalid entry {key} in the nodes bucket", {
        key: entry.key,
      });
      return;
    }
    // Written long ago (its node died, the entry not yet expired).
    if (Date.now() - node.at > this.#options.nodeTimeoutMs) return;
    if (existing && sameLanguages(existing.entry, node)) {
      existing.update(node);
      this.#options.changed(existing);
      return;
    }
    if (existing) this.#remove(existing, "it came back with other languages");
    const worker = new NatsNodeWorker(node, this.#options.jobs);
    this.#workers.set(worker.id, worker);
    this.#options.joined(worker);
  }

  #dropSilent(): void {
    for (const worker of this.#workers.values()) {
      if (worker.silentMs > this.#options.nodeTimeoutMs) {
        this.#remove(
          worker,
          `no heartbeat for ${Math.round(worker.silentMs)} ms`,
        );
      }
    }
  }

  #remove(worker: NatsNodeWorker, reason: string): void {
    if (this.#workers.get(worker.id) !== worker) return;
    this.#workers.delete(worker.id);
    this.#options.left(worker, reason);
  }
}

function sameLanguages(a: NodeEntry, b: NodeEntry): boolean {
  return JSON.stringify(a.languages) === JSON.stringify(b.languages);
}
