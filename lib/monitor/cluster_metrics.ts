/**
 * The cluster's Prometheus metrics, names prefixed `kiln_`, kept with
 * `prom-client` in a registry owned by the instance (never the library's
 * global one, so two masters in one process do not mix their numbers).
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { JobResult } from "../job.ts";
import type { ClusterStatus } from "../protocol/messages.ts";

/** Seconds: from instant to a compile-heavy or slow program. */
const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** A part of the master that may fail without ending it. */
export type OptionalPart = "history" | "metrics" | "listener";

/** Options of {@linkcode ClusterMetrics}. */
export interface ClusterMetricsOptions {
  /** Listeners of the master that threw so far, counted at each scrape. */
  listenerErrors?: (() => number) | undefined;
}

/**
 * Counters fed by finished jobs, gauges read from the cluster's status at
 * each scrape.
 *
 * @example Counting a job and scraping
 * ```ts
 * import { ClusterMetrics } from "./cluster_metrics.ts";
 * import { blankResult } from "../job.ts";
 *
 * const metrics = new ClusterMetrics(() => ({
 *   master: "m", nodes: [], queued: 0, running: 0,
 * }));
 * metrics.observe(blankResult("j", { verdict: "ok", language: "bash" }));
 * console.log((await metrics.text()).includes('kiln_jobs_total{language="bash",verdict="ok"} 1')); // true
 * ```
 */
export class ClusterMetrics {
  /** The `Content-Type` of {@linkcode ClusterMetrics.text}. */
  readonly contentType: string;
  readonly #registry = new Registry();
  readonly #jobs: Counter<"language" | "verdict">;
  readonly #queueWait: Histogram;
  readonly #duration: Histogram<"language">;
  readonly #failures: Counter<"part">;
  readonly #slowClients: Counter<"kind" | "action">;

  /** Metrics of the cluster whose status `status` returns. */
  constructor(
    status: () => ClusterStatus,
    options: ClusterMetricsOptions = {},
  ) {
    const { listenerErrors } = options;
    const registers = [this.#registry];
    this.contentType = this.#registry.contentType;
    this.#jobs = new Counter({
      name: "kiln_jobs_total",
      help: "Jobs finished, by language and verdict.",
      labelNames: ["language", "verdict"],
      registers,
    });
    this.#queueWait = new Histogram({
      name: "kiln_queue_wait_seconds",
      help: "Time from acceptance to start.",
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#duration = new Histogram({
      name: "kiln_job_duration_seconds",
      help: "Wall-clock time of the run step, by language.",
      labelNames: ["language"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    let listenerErrorsSeen = 0;
    this.#failures = new Counter({
      name: "kiln_failures_total",
      help:
        "Failures of optional parts (history, metrics, event listeners), each logged; the master carried on.",
      labelNames: ["part"],
      registers,
      collect() {
        const now = listenerErrors?.() ?? 0;
        if (now > listenerErrorsSeen) {
          this.inc({ part: "listener" }, now - listenerErrorsSeen);
          listenerErrorsSeen = now;
        }
      },
    });
    this.#slowClients = new Counter({
      name: "kiln_slow_client_total",
      help:
        "Streams that fell behind: output events dropped (action dropped) and streams closed (action closed), by kind (websocket, events).",
      labelNames: ["kind", "action"],
      registers,
    });
    new Gauge({
      name: "kiln_queue_depth",
      help: "Jobs waiting for a slot.",
      registers,
      collect() {
        this.set(status().queued);
      },
    });
    new Gauge({
      name: "kiln_jobs_running",
      help: "Jobs running anywhere in the cluster.",
      registers,
      collect() {
        this.set(status().running);
      },
    });
    const perNode: [
      string,
      string,
      (n: ClusterStatus["nodes"][0]) => number,
    ][] = [
      [
        "kiln_node_cpu_percent",
        "CPU busy on the node, 0-100.",
        (n) => n.cpuPercent,
      ],
      [
        "kiln_node_ram_percent",
        "RAM in use on the node, 0-100.",
        (n) => n.ramPercent,
      ],
      ["kiln_node_slots", "Jobs the node runs at once.", (n) => n.slots],
      ["kiln_node_running", "Jobs running on the node.", (n) => n.running],
    ];
    for (const [name, help, read] of perNode) {
      new Gauge({
        name,
        help,
        labelNames: ["node"],
        registers,
        collect() {
          // Reset first: a node that left must not linger with its last value.
          this.reset();
          for (const node of status().nodes) {
            this.set({ node: node.name }, read(node));
          }
        },
      });
    }
  }

  /** Counts a finished job. */
  observe(result: JobResult): void {
    const language = result.language ?? "unknown";
    this.#jobs.inc({ language, verdict: result.verdict });
    if (result.node === null) return; // It never ran: no wait, no duration.
    this.#queueWait.observe(result.queuedMs / 1000);
    this.#duration.observe({ language }, result.timeMs / 1000);
  }

  /** Counts a failure of an optional part (already logged by the caller). */
  countFailure(part: OptionalPart): void {
    this.#failures.inc({ part });
  }

  /** Counts what a slow stream cost: an output event dropped, or the stream closed. */
  countSlowClient(
    kind: "websocket" | "events",
    action: "dropped" | "closed",
  ): void {
    this.#slowClients.inc({ kind, action });
  }

  /** Every metric in the Prometheus text format. */
  text(): Promise<string> {
    return this.#registry.metrics();
  }
}
