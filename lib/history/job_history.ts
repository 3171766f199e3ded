/**
 * The record of finished jobs, kept in SQLite through `node:sqlite`: in
 * memory by default, or in a file (`--history FILE`) so the dashboard and
 * `GET /api/v1/jobs` survive a master restart.
 *
 * Bounded three ways, each with a documented default and maximum: how many
 * jobs it keeps ({@linkcode JobHistoryOptions.maxJobs}), for how long
 * ({@linkcode JobHistoryOptions.maxAgeMs}), and how much of each output
 * stream ({@linkcode JobHistoryOptions.maxOutputBytes}). A job's summary sits
 * in columns of its own and its output in plain text columns, so that
 * listing never parses a result and a megabyte of control characters is
 * stored as a megabyte, not as six of JSON escapes.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { JobResult, Verdict } from "../job.ts";
import { positiveInteger } from "../_options.ts";

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

/** Jobs kept when no `maxJobs` is given. */
export const DEFAULT_HISTORY_MAX_JOBS = 1000;
/** The largest `maxJobs`. */
export const MAX_HISTORY_MAX_JOBS = 10_000_000;
/** How long a finished job is kept when no `maxAgeMs` is given: 7 days, in ms. */
export const DEFAULT_HISTORY_MAX_AGE_MS = 7 * 24 * 3600 * 1000;
/** The largest `maxAgeMs`: 3650 days, in ms. */
export const MAX_HISTORY_MAX_AGE_MS = 3650 * 24 * 3600 * 1000;
/** Bytes (UTF-8) kept of each output stream when no `maxOutputBytes` is given: 4 MiB. */
export const DEFAULT_HISTORY_MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** The largest `maxOutputBytes`: 64 MiB. */
export const MAX_HISTORY_MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/** Rows one {@linkcode JobHistory.record} deletes at most, so that no single job pays for a backlog. */
const PRUNE_BATCH = 256;

/** Options of {@linkcode JobHistory}. */
export interface JobHistoryOptions {
  /** The SQLite file; created when missing, readable by its owner only (0600). @default ":memory:" */
  path?: string | undefined;
  /**
   * Finished jobs kept; the oldest go first. 1 to
   * {@linkcode MAX_HISTORY_MAX_JOBS}. In memory, each job costs about the
   * size of its output.
   *
   * @default {DEFAULT_HISTORY_MAX_JOBS}
   */
  maxJobs?: number | undefined;
  /**
   * How long a finished job is kept, in ms. 1 to
   * {@linkcode MAX_HISTORY_MAX_AGE_MS}.
   *
   * @default {DEFAULT_HISTORY_MAX_AGE_MS}
   */
  maxAgeMs?: number | undefined;
  /**
   * Bytes (UTF-8) kept of each output stream of a job (stdout, stderr, and
   * the compiler's); past it the text is cut at a character boundary and
   * the stored result says `truncated`. 1 to
   * {@linkcode MAX_HISTORY_MAX_OUTPUT_BYTES}.
   *
   * @default {DEFAULT_HISTORY_MAX_OUTPUT_BYTES}
   */
  maxOutputBytes?: number | undefined;
  /** The clock, in ms since the epoch. @default {Date.now} */
  now?: (() => number) | undefined;
}

/** Most jobs one {@linkcode JobHistory.list} returns, whatever the filter asks. */
export const MAX_HISTORY_LIST = 1000;

/** The summary columns, in the order {@linkcode toSummary} reads them. */
const SUMMARY_COLUMNS =
  "job_id, client, language, verdict, node, time_ms, queued_ms, memory_kb, finished_at";

/**
 * Finished jobs and their results.
 *
 * @example Recording a job and reading it back
 * ```ts
 * import { JobHistory } from "./job_history.ts";
 * import { blankResult } from "../job.ts";
 *
 * using history = new JobHistory({ maxJobs: 100 });
 * history.record(blankResult("j1", { verdict: "ok", language: "bash", client: "alice" }));
 * console.log(history.summary("j1")?.verdict); // ok
 * console.log(history.get("j1")?.result.language); // bash
 * console.log(history.list({ client: "alice" }).length); // 1
 * ```
 */
export class JobHistory implements Disposable {
  readonly #db: DatabaseSync;
  readonly #maxJobs: number;
  readonly #maxAgeMs: number;
  readonly #maxOutputBytes: number;
  readonly #now: () => number;
  readonly #insert: StatementSync;
  readonly #selectOne: StatementSync;
  readonly #selectSummary: StatementSync;
  readonly #deleteUpTo: StatementSync;
  readonly #deleteBefore: StatementSync;
  readonly #count: StatementSync;
  /** `list` statements by filter shape: at most eight. */
  readonly #lists = new Map<string, StatementSync>();
  /** The last row's `seq`: rows at or below `#lastSeq - maxJobs` are past the count. */
  #lastSeq: number;
  /**
   * No row finished before this (a lower bound): until the age cutoff
   * passes it, there is nothing too old, and no delete to run for it.
   */
  #oldest = -Infinity;
  /** Scratch space to measure and cut output in UTF-8, made on first need. */
  #scratch: Uint8Array | undefined;

  /**
   * Opens (or creates) the history and drops what is past its bounds.
   * Throws `RangeError` for a bound out of range.
   */
  constructor(options: JobHistoryOptions = {}) {
    const {
      path = ":memory:",
      maxJobs = DEFAULT_HISTORY_MAX_JOBS,
      maxAgeMs = DEFAULT_HISTORY_MAX_AGE_MS,
      maxOutputBytes = DEFAULT_HISTORY_MAX_OUTPUT_BYTES,
      now = Date.now,
    } = options;
    this.#maxJobs = positiveInteger("maxJobs", maxJobs, MAX_HISTORY_MAX_JOBS);
    this.#maxAgeMs = positiveInteger(
      "maxAgeMs",
      maxAgeMs,
      MAX_HISTORY_MAX_AGE_MS,
    );
    this.#maxOutputBytes = positiveInteger(
      "maxOutputBytes",
      maxOutputBytes,
      MAX_HISTORY_MAX_OUTPUT_BYTES,
    );
    this.#now = now;
    // Programs, their output and who sent them: readable by the owner only.
    // SQLite gives its -wal and -shm files the database file's mode.
    if (path !== ":memory:" && !path.startsWith("file:")) createPrivate(path);
    this.#db = new DatabaseSync(path);
    try {
      if (path !== ":memory:") {
        // WAL lets a crash lose at most the last job, not the file; NORMAL
        // syncs at checkpoints, not at every job, which the event loop would
        // wait for (a power cut may lose the last jobs, never the file).
        this.#db.exec("PRAGMA journal_mode = WAL");
        this.#db.exec("PRAGMA synchronous = NORMAL");
      }
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
      // Files of earlier versions keep the whole result, output included, in
      // `result`; their rows have NULL output columns and read as before.
      const columns = new Set(
        this.#db.prepare("PRAGMA table_info(jobs)").all().map((row) =>
          String(row.name)
        ),
      );
      for (
        const column of ["stdout", "stderr", "compile_stdout", "compile_stderr"]
      ) {
        if (!columns.has(column)) {
          this.#db.exec(`ALTER TABLE jobs ADD COLUMN ${column} TEXT`);
        }
      }
      this.#db.exec(
        "CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at)",
      );
      this.#insert = this.#db.prepare(
        `INSERT OR REPLACE INTO jobs (job_id, client, language, verdict, node,
          time_ms, queued_ms, memory_kb, finished_at, result, stdout, stderr,
          compile_stdout, compile_stderr)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      this.#selectOne = this.#db.prepare(
        `SELECT ${SUMMARY_COLUMNS}, result, stdout, stderr, compile_stdout,
          compile_stderr FROM jobs WHERE job_id = ? AND finished_at >= ?`,
      );
      this.#selectSummary = this.#db.prepare(
        `SELECT ${SUMMARY_COLUMNS} FROM jobs WHERE job_id = ? AND finished_at >= ?`,
      );
      this.#deleteUpTo = this.#db.prepare(
        `DELETE FROM jobs WHERE seq IN
          (SELECT seq FROM jobs WHERE seq <= ? ORDER BY seq LIMIT ?)`,
      );
      this.#deleteBefore = this.#db.prepare(
        `DELETE FROM jobs WHERE seq IN
          (SELECT seq FROM jobs WHERE finished_at < ? LIMIT ?)`,
      );
      this.#count = this.#db.prepare("SELECT COUNT(*) AS n FROM jobs");
      this.#lastSeq = Number(
        this.#db.prepare("SELECT MAX(seq) AS seq FROM jobs").get()?.seq ?? 0,
      );
      // A file from a run with larger bounds: trim it all now, at start.
      while (this.prune(PRUNE_BATCH * 16) > 0) { /* until within bounds */ }
    } catch (error) {
      this.#db.close();
      throw error;
    }
  }

  /** Jobs kept now. */
  get size(): number {
    return Number(this.#count.get()?.n ?? 0);
  }

  /**
   * Records a finished job (`finishedAt` defaults to now) and returns its
   * summary; drops the jobs now past the history's bounds. Output longer
   * than `maxOutputBytes` is cut, and the stored result says `truncated`.
   * Throws what SQLite throws (a full disk, a locked file): the caller
   * decides what a lost record costs.
   */
  record(result: JobResult, finishedAt: number = this.#now()): JobSummary {
    const { stdout, stderr, compile, ...rest } = result;
    let cut = false;
    const keep = (text: string): string => {
      const kept = this.#bound(text);
      if (kept.length < text.length) cut = true;
      return kept;
    };
    const out = keep(stdout);
    const err = keep(stderr);
    const compileOut = compile === null ? null : keep(compile.stdout);
    const compileErr = compile === null ? null : keep(compile.stderr);
    // The output travels in its own columns: the JSON keeps the rest only.
    const json = JSON.stringify({
      ...rest,
      truncated: result.truncated || cut,
      compile: compile === null ? null : { ...compile, stdout: "", stderr: "" },
    });
    const client = result.client ?? "";
    const language = result.language ?? "";
    const { lastInsertRowid } = this.#insert.run(
      result.jobId,
      client,
      language,
      result.verdict,
      result.node,
      result.timeMs,
      result.queuedMs,
      result.memoryKb,
      finishedAt,
      json,
      out,
      err,
      compileOut,
      compileErr,
    );
    this.#lastSeq = Math.max(this.#lastSeq, Number(lastInsertRowid));
    this.#oldest = Math.min(this.#oldest, finishedAt);
    this.prune();
    return toSummary({
      job_id: result.jobId,
      client,
      language,
      verdict: result.verdict,
      node: result.node,
      time_ms: result.timeMs,
      queued_ms: result.queuedMs,
      memory_kb: result.memoryKb,
      finished_at: finishedAt,
    });
  }

  /**
   * Deletes up to `batch` jobs past the bounds (the oldest beyond `maxJobs`,
   * and those older than `maxAgeMs`); returns how many. {@linkcode record}
   * calls it, so a history that is written to stays within its bounds.
   */
  prune(batch: number = PRUNE_BATCH): number {
    let deleted = 0;
    const upTo = this.#lastSeq - this.#maxJobs;
    if (upTo > 0) {
      deleted += Number(this.#deleteUpTo.run(upTo, batch).changes);
    }
    const cutoff = this.#cutoff();
    if (deleted < batch && cutoff > this.#oldest) {
      const room = batch - deleted;
      const old = Number(this.#deleteBefore.run(cutoff, room).changes);
      deleted += old;
      // All of them gone: every row left finished at the cutoff or later.
      if (old < room) this.#oldest = cutoff;
    }
    return deleted;
  }

  /** A finished job's summary, read from its columns alone; undefined if unknown. */
  summary(jobId: string): JobSummary | undefined {
    const row = this.#selectSummary.get(jobId, this.#cutoff());
    return row === undefined ? undefined : toSummary(row);
  }

  /** A finished job's summary and full result, or undefined if unknown. */
  get(jobId: string): { summary: JobSummary; result: JobResult } | undefined {
    const row = this.#selectOne.get(jobId, this.#cutoff());
    if (row === undefined) return undefined;
    const result = JSON.parse(String(row.result)) as JobResult;
    if (row.stdout !== null) result.stdout = String(row.stdout);
    if (row.stderr !== null) result.stderr = String(row.stderr);
    if (result.compile && row.compile_stdout !== null) {
      result.compile.stdout = String(row.compile_stdout);
    }
    if (result.compile && row.compile_stderr !== null) {
      result.compile.stderr = String(row.compile_stderr);
    }
    return { summary: toSummary(row), result };
  }

  /** Finished jobs matching `filter`, most recent first, from their summary columns. */
  list(filter: JobHistoryFilter = {}): JobSummary[] {
    const where = ["finished_at >= ?"];
    const params: (string | number)[] = [this.#cutoff()];
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
    const key = where.join(" AND ");
    let statement = this.#lists.get(key);
    if (statement === undefined) {
      statement = this.#db.prepare(
        `SELECT ${SUMMARY_COLUMNS} FROM jobs WHERE ${key}
         ORDER BY seq DESC LIMIT ?`,
      );
      this.#lists.set(key, statement);
    }
    return statement.all(...params, limit).map(toSummary);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  /** Closes the database; for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Jobs that finished before this are past `maxAgeMs`. */
  #cutoff(): number {
    return this.#now() - this.#maxAgeMs;
  }

  /** `text`, or its longest prefix of whole characters that fits `maxOutputBytes` in UTF-8. */
  #bound(text: string): string {
    // A UTF-16 unit is at most three bytes of UTF-8: short text fits as it is.
    if (text.length * 3 <= this.#maxOutputBytes) return text;
    this.#scratch ??= new Uint8Array(this.#maxOutputBytes);
    const { read } = new TextEncoder().encodeInto(text, this.#scratch);
    return read === text.length ? text : text.slice(0, read);
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
  if (row.node !== null && row.node !== undefined) {
    summary.node = String(row.node);
  }
  if (row.memory_kb !== null && row.memory_kb !== undefined) {
    summary.memoryKb = Number(row.memory_kb);
  }
  return summary;
}

/** Creates `path` empty with mode 0600 unless it exists (an existing file keeps its mode). */
function createPrivate(path: string): void {
  try {
    Deno.openSync(path, { createNew: true, write: true, mode: 0o600 }).close();
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
}
