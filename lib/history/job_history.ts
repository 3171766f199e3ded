/**
 * The record of finished jobs, kept in SQLite through `node:sqlite`: in
 * memory by default, or in a file (`--history FILE`) so the dashboard and
 * `GET /api/v1/jobs` survive a master restart.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import type { JobResult, Verdict } from "../job.ts";

/** What a list of jobs shows of one job: everything but its output. */
export interface JobSummary {
  /** The job's id. */
  jobId: string;
  /** Who submitted it. */
  client: string;
  /** Its language (canonical name), or "" while not yet known. */
  language: string;
  /** Where it is in its life. */
  state: "queued" | "running" | "finished";
  /** The node running or that ran it. */
  node?: string;
  /** Its place in the queue while queued; 1 runs next. */
  position?: number;
  /** How it ended, once finished. */
  verdict?: Verdict;
  /** Wall-clock time of its run step, in ms, once finished. */
  timeMs?: number;
  /** Time from acceptance to start, in ms, once finished. */
  queuedMs?: number;
  /** Peak memory of its run step, in KiB, when measured. */
  memoryKb?: number;
  /** When it finished, in ms since the epoch. */
  finishedAt?: number;
}

/** Which finished jobs {@linkcode JobHistory.list} returns. */
export interface JobHistoryFilter {
  /** At most this many, most recent first. @default 50 */
  limit?: number | undefined;
  /** Only this language. */
  language?: string | undefined;
  /** Only this verdict. */
  verdict?: string | undefined;
  /** Only this client's. */
  client?: string | undefined;
}

/** Options of {@linkcode JobHistory}. */
export interface JobHistoryOptions {
  /** The SQLite file; created when missing. @default ":memory:" */
  path?: string;
}

/** Most jobs one {@linkcode JobHistory.list} returns, whatever the filter asks. */
export const MAX_HISTORY_LIST = 1000;

/**
 * Finished jobs and their results.
 *
 * @example Recording a job and reading it back
 * ```ts
 * import { JobHistory } from "./job_history.ts";
 * import { blankResult } from "../job.ts";
 *
 * using history = new JobHistory();
 * history.record(blankResult("j1", { verdict: "ok", language: "bash", client: "alice" }));
 * console.log(history.get("j1")?.summary.verdict); // ok
 * console.log(history.list({ client: "alice" }).length); // 1
 * ```
 */
export class JobHistory implements Disposable {
  readonly #db: DatabaseSync;

  /** Opens (or creates) the history. */
  constructor(options: JobHistoryOptions = {}) {
    const { path = ":memory:" } = options;
    this.#db = new DatabaseSync(path);
    // WAL lets a crash lose at most the last job, not the file.
    if (path !== ":memory:") this.#db.exec("PRAGMA journal_mode = WAL");
    this.#db.exec(`CREATE TABLE IF NOT EXISTS jobs (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      job_id TEXT NOT NULL UNIQUE,
      client TEXT NOT NULL,
      language TEXT NOT NULL,
      verdict TEXT NOT NULL,
      node TEXT,
      time_ms REAL NOT NULL,
      queued_ms REAL NOT NULL,
      memory_kb REAL,
      finished_at INTEGER NOT NULL,
      result TEXT NOT NULL
    )`);
  }

  /** Records a finished job; `finishedAt` defaults to now. */
  record(result: JobResult, finishedAt: number = Date.now()): void {
    this.#db.prepare(
      `INSERT OR REPLACE INTO jobs (job_id, client, language, verdict, node,
        time_ms, queued_ms, memory_kb, finished_at, result)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      result.jobId,
      result.client ?? "",
      result.language ?? "",
      result.verdict,
      result.node,
      result.timeMs,
      result.queuedMs,
      result.memoryKb,
      finishedAt,
      JSON.stringify(result),
    );
  }

  /** A finished job's summary and full result, or undefined if unknown. */
  get(jobId: string): { summary: JobSummary; result: JobResult } | undefined {
    const row = this.#db.prepare("SELECT * FROM jobs WHERE job_id = ?").get(
      jobId,
    );
    if (row === undefined) return undefined;
    return {
      summary: toSummary(row),
      result: JSON.parse(String(row.result)) as JobResult,
    };
  }

  /** Finished jobs matching `filter`, most recent first. */
  list(filter: JobHistoryFilter = {}): JobSummary[] {
    const where: string[] = [];
    const params: string[] = [];
    for (
      const [column, value] of [
        ["language", filter.language],
        ["verdict", filter.verdict],
        ["client", filter.client],
      ] as const
    ) {
      if (value === undefined) continue;
      where.push(`${column} = ?`);
      params.push(value);
    }
    const limit = Math.max(0, Math.min(filter.limit ?? 50, MAX_HISTORY_LIST));
    const sql = `SELECT job_id, client, language, verdict, node, time_ms,
      queued_ms, memory_kb, finished_at FROM jobs
      ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY seq DESC LIMIT ${limit}`;
    return this.#db.prepare(sql).all(...params).map(toSummary);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  /** Closes the database; for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function toSummary(row: Record<string, unknown>): JobSummary {
  const summary: JobSummary = {
    jobId: String(row.job_id),
    client: String(row.client),
    language: String(row.language),
    state: "finished",
    verdict: String(row.verdict) as Verdict,
    timeMs: Number(row.time_ms),
    queuedMs: Number(row.queued_ms),
    finishedAt: Number(row.finished_at),
  };
  if (row.node !== null) summary.node = String(row.node);
  if (row.memory_kb !== null) summary.memoryKb = Number(row.memory_kb);
  return summary;
}
