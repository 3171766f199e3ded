/**
 * Tells waiting jobs where they stand in the queue, at a cost bounded per
 * change of the queue however long it is.
 *
 * Telling every waiting job its new place after every change costs the
 * length of the queue per change, and N waiting jobs then cost N² messages
 * to drain. Here changes are coalesced, and each one pays for a bounded
 * number of positions:
 *
 * - at most one update per interval (250 ms by default), after a change;
 * - each update walks the first {@linkcode FRONT_POSITIONS} jobs, the ones
 *   a person watches count down;
 * - the whole queue is walked only once it has changed, since its last
 *   whole walk, at least as many times as it has jobs: a change pays for at
 *   most one position.
 *
 * So the positions computed (and the updates sent, which are fewer: only
 * moved jobs are told) are at most `FRONT_POSITIONS + 1` per change, and
 * a job hears at most one update per interval. A job further back still
 * sees its place move, as often as the queue turns over: a queue of N
 * that drains is walked whole when N/2 are left, then N/4, N/8... (N
 * positions in all); one that stays N long, once every N changes.
 *
 * @module
 */
import { positiveInteger } from "../_options.ts";
import type { JobQueue } from "./job_queue.ts";

/** How many jobs from the front hear every move, at most once per interval. */
export const FRONT_POSITIONS = 10;

/** The shortest time between two position updates, by default: four a second. */
export const DEFAULT_POSITION_INTERVAL_MS = 250;

/** The longest {@linkcode PositionAnnouncerOptions.intervalMs}: one minute. */
export const MAX_POSITION_INTERVAL_MS = 60_000;

/** Options of {@linkcode PositionAnnouncer}. */
export interface PositionAnnouncerOptions<T> {
  /** The queue whose jobs it tells: walked from the front, lazily. */
  readonly queue: Pick<JobQueue<T>, "length" | "values">;
  /**
   * Tells a job where it stands. Called for every job a walk reaches, moved
   * or not: the caller knows what it told each job last, and says nothing
   * when that has not changed.
   */
  readonly tell: (item: T, position: number) => void;
  /**
   * The shortest time between two updates, in ms, from 1 to
   * {@linkcode MAX_POSITION_INTERVAL_MS}.
   *
   * @default {DEFAULT_POSITION_INTERVAL_MS}
   */
  readonly intervalMs?: number | undefined;
}

/**
 * Coalesces queue changes into position updates of bounded cost.
 *
 * @example Draining a queue of 1,000 walks a few positions per change
 * ```ts
 * import assert from "node:assert/strict";
 * import { FifoQueue } from "./job_queue.ts";
 * import { PositionAnnouncer } from "./position_announcer.ts";
 *
 * const queue = new FifoQueue<string>();
 * for (let i = 0; i < 1000; i++) queue.push(`job-${i}`);
 * let walked = 0;
 * const announcer = new PositionAnnouncer({ queue, tell: () => walked++ });
 * while (queue.length > 0) {
 *   queue.shift();
 *   announcer.changed(true);
 *   announcer.announce(); // what the timer does, at most once per interval
 * }
 * assert.ok(walked <= 1000 * 11, `${walked}`);
 * announcer.close();
 * ```
 */
export class PositionAnnouncer<T> {
  readonly #queue: Pick<JobQueue<T>, "length" | "values">;
  readonly #tell: (item: T, position: number) => void;
  readonly #intervalMs: number;
  /** Changes that moved waiting jobs since the last whole walk. */
  #changes = 0;
  /** Counts every change, so that a walk notices one made under it. */
  #version = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /** @throws {RangeError} If `intervalMs` is not an integer from 1 to {@linkcode MAX_POSITION_INTERVAL_MS}. */
  constructor(options: PositionAnnouncerOptions<T>) {
    const { intervalMs = DEFAULT_POSITION_INTERVAL_MS } = options;
    this.#queue = options.queue;
    this.#tell = options.tell;
    this.#intervalMs = positiveInteger(
      "positionIntervalMs",
      intervalMs,
      MAX_POSITION_INTERVAL_MS,
    );
  }

  /**
   * The queue changed. `moved` says whether jobs already waiting moved: a
   * job left or was put back at the front, or joined ahead of others (a
   * job added at the very back moves no one, and its own place is told by
   * whoever added it).
   */
  changed(moved: boolean): void {
    this.#version++;
    if (!moved) return;
    this.#changes++;
    this.#schedule();
  }

  /**
   * Tells the waiting jobs where they stand now: the front ones always,
   * the whole queue when its changes have paid for it. The timer calls it
   * once per interval after a change; calling it sooner is allowed, and
   * costs the same.
   */
  announce(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    let last = FRONT_POSITIONS;
    if (this.#changes >= this.#queue.length) {
      last = this.#queue.length;
      this.#changes = 0;
    }
    const version = this.#version;
    let position = 0;
    for (const item of this.#queue.values()) {
      if (++position > last) break;
      this.#tell(item, position);
      // Someone told moved the queue (a listener cancelled a job): the
      // positions after it are stale. The next update starts afresh.
      if (this.#version !== version) {
        this.#schedule();
        break;
      }
    }
  }

  /** Stops the timer: nothing more is told. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer ??= setTimeout(() => this.announce(), this.#intervalMs);
  }
}
