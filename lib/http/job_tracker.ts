/**
 * Every job the master has now, as the HTTP API shows it: a summary per job
 * (for the dashboard's live feed and `GET /api/v1/jobs/:id`), and the events
 * of each unfinished job so far (for a WebSocket that joins late). Finished
 * jobs move to the {@linkcode JobHistory}.
 *
 * @module
 */
import type { JobResult } from "../job.ts";
import type { JobHistory, JobSummary } from "../history/job_history.ts";
import type { MasterNode } from "../nodes/master_node.ts";
import type { JobEvent } from "../protocol/messages.ts";
import { positiveInteger } from "../_options.ts";

/** Events kept per unfinished job; past it the oldest output chunks go first. */
export const MAX_BUFFERED_EVENTS = 1000;
/**
 * Output kept per unfinished job, in UTF-16 code units (a JavaScript string
 * holds at most 2 bytes per unit: 4 MiB); past it the oldest output chunks
 * go first, and a late follower hears how much with a `truncated` event.
 */
export const MAX_BUFFERED_OUTPUT_UNITS = 2 * 1024 * 1024;

/** Said in place of output that was dropped before it reached this follower. */
export interface TruncatedEvent {
  /** The event type. */
  type: "truncated";
  /** The job this event is about. */
  jobId: string;
  /** How much output was dropped, in UTF-16 code units. */
  dropped: number;
}

/** What a follower of a job hears: its events, and where output was dropped. */
export type StreamEvent = JobEvent | TruncatedEvent;

/** Receives one event of one job. */
export type JobEventListener = (event: StreamEvent) => void;

/** Options of {@linkcode JobTracker}. */
export interface JobTrackerOptions {
  /**
   * Called when the history cannot record a finished job (a full disk, a
   * locked file). The job still ends for everyone following it.
   * @default logs nothing
   */
  onHistoryError?: ((error: unknown, result: JobResult) => void) | undefined;
  /** Output kept per unfinished job, in UTF-16 units, 1 to 2^30. @default {MAX_BUFFERED_OUTPUT_UNITS} */
  maxBufferedOutput?: number | undefined;
}

interface Live {
  summary: JobSummary;
  events: JobEvent[];
  /** Output units in `events`. */
  outputUnits: number;
  /** Output units dropped from the front of `events`. */
  dropped: number;
  listeners: Set<JobEventListener>;
  /** Whether its events come from `MasterNode.run` (with output), not rebuilt from the master's events. */
  fed: boolean;
}

/**
 * Follows a master's job events and keeps the state of every job.
 *
 * @example Following a master
 * ```ts ignore
 * const tracker = new JobTracker(master, history);
 * tracker.onChange((summary) => console.log(summary.jobId, summary.state));
 * ```
 */
export class JobTracker implements Disposable {
  readonly #history: JobHistory;
  readonly #live = new Map<string, Live>();
  readonly #changeListeners = new Set<(summary: JobSummary) => void>();
  readonly #abort = new AbortController();
  readonly #onHistoryError: (error: unknown, result: JobResult) => void;
  readonly #maxOutput: number;

  /** Starts following `master`, recording finished jobs in `history`. */
  constructor(
    master: MasterNode,
    history: JobHistory,
    options: JobTrackerOptions = {},
  ) {
    const {
      onHistoryError = () => {},
      maxBufferedOutput = MAX_BUFFERED_OUTPUT_UNITS,
    } = options;
    this.#history = history;
    this.#onHistoryError = onHistoryError;
    this.#maxOutput = positiveInteger(
      "maxBufferedOutput",
      maxBufferedOutput,
      2 ** 30,
    );
    const signal = this.#abort.signal;
    master.addEventListener("jobaccepted", ({ detail }) => {
      const live = this.#entry(detail.jobId);
      live.summary.client = detail.client;
      if (!live.fed) {
        this.#push(live, { type: "accepted", ref: "", jobId: detail.jobId });
      }
      this.#changed(live);
    }, { signal });
    master.addEventListener("jobqueued", ({ detail }) => {
      const live = this.#live.get(detail.jobId);
      if (!live) return;
      live.summary.position = detail.position;
      if (!live.fed) this.#push(live, { type: "queued", ...detail });
      this.#changed(live);
    }, { signal });
    master.addEventListener("jobstart", ({ detail }) => {
      const live = this.#live.get(detail.jobId);
      if (!live) return;
      live.summary.state = "running";
      live.summary.node = detail.node;
      live.summary.language = detail.language;
      delete live.summary.position;
      if (!live.fed) {
        this.#push(live, {
          type: "started",
          jobId: detail.jobId,
          node: detail.node,
        });
      }
      this.#changed(live);
    }, { signal });
    master.addEventListener("jobrestart", ({ detail }) => {
      const live = this.#live.get(detail.jobId);
      if (!live) return;
      live.summary.state = "queued";
      delete live.summary.node;
      if (!live.fed) this.#push(live, { type: "restarted", ...detail });
      this.#changed(live);
    }, { signal });
    master.addEventListener(
      "jobcomplete",
      ({ detail }) => this.#finish(detail),
      { signal },
    );
  }

  /** Passes an event of a job run through `MasterNode.run`, output included. */
  feed(event: JobEvent): void {
    if (event.type === "result") return; // `jobcomplete` follows at once.
    const live = this.#entry(event.jobId);
    live.fed = true;
    this.#push(live, event);
  }

  /** Sets the language a job asked for, until the node names the canonical one. */
  setRequestedLanguage(jobId: string, language: string): void {
    const live = this.#live.get(jobId);
    if (!live || live.summary.language !== "") return;
    live.summary.language = language;
    this.#changed(live);
  }

  /** Calls `listener` with a job's summary whenever it changes. Returns a function that stops it. */
  onChange(listener: (summary: JobSummary) => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  /** The summary of an unfinished job, or undefined. */
  summary(jobId: string): JobSummary | undefined {
    const live = this.#live.get(jobId);
    return live ? { ...live.summary } : undefined;
  }

  /** Unfinished jobs, oldest first. */
  unfinished(): JobSummary[] {
    return [...this.#live.values()].map((live) => ({ ...live.summary }));
  }

  /**
   * Replays a job's events so far to `listener` (a `truncated` event where
   * old output was dropped), then passes each new one, the result last.
   * Returns a function that stops it, or undefined when the job is not
   * running or waiting (finished ones are in the history).
   */
  follow(jobId: string, listener: JobEventListener): (() => void) | undefined {
    const live = this.#live.get(jobId);
    if (!live) return undefined;
    let told = live.dropped === 0;
    for (const event of live.events) {
      if (!told && event.type === "output") {
        listener({ type: "truncated", jobId, dropped: live.dropped });
        told = true;
      }
      listener(event);
    }
    if (!told) listener({ type: "truncated", jobId, dropped: live.dropped });
    live.listeners.add(listener);
    return () => live.listeners.delete(listener);
  }

  /** Stops following the master. */
  [Symbol.dispose](): void {
    this.#abort.abort();
  }

  #entry(jobId: string): Live {
    let live = this.#live.get(jobId);
    if (!live) {
      live = {
        summary: { jobId, client: "", language: "", state: "queued" },
        events: [],
        outputUnits: 0,
        dropped: 0,
        listeners: new Set(),
        fed: false,
      };
      this.#live.set(jobId, live);
    }
    return live;
  }

  #push(live: Live, event: JobEvent): void {
    live.events.push(event);
    if (event.type === "output") live.outputUnits += event.data.length;
    while (
      live.events.length > MAX_BUFFERED_EVENTS ||
      live.outputUnits > this.#maxOutput
    ) {
      // Drop old output rather than the events that say where the job is.
      const index = live.events.findIndex((e) => e.type === "output");
      const [gone] = live.events.splice(index === -1 ? 0 : index, 1);
      if (gone?.type === "output") {
        live.outputUnits -= gone.data.length;
        live.dropped += gone.data.length;
      }
      if (index === -1 && live.events.length <= MAX_BUFFERED_EVENTS) break;
    }
    for (const listener of live.listeners) listener(event);
  }

  #changed(live: Live): void {
    const summary = { ...live.summary };
    for (const listener of this.#changeListeners) listener(summary);
  }

  #finish(result: JobResult): void {
    const live = this.#entry(result.jobId);
    this.#live.delete(result.jobId);
    const client = result.client ?? live.summary.client;
    let summary: JobSummary;
    try {
      summary = this.#history.record({ ...result, client });
    } catch (error) {
      // The history is optional: its failure loses the record, not the job.
      this.#onHistoryError(error, result);
      summary = {
        ...live.summary,
        client,
        state: "finished",
        verdict: result.verdict,
        timeMs: result.timeMs,
        queuedMs: result.queuedMs,
        finishedAt: Date.now(),
      };
      delete summary.position;
    }
    for (const listener of live.listeners) {
      listener({ type: "result", jobId: result.jobId, result });
    }
    for (const listener of this.#changeListeners) listener(summary);
  }
}
