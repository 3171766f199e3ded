/**
 * {@linkcode IdleTimer}: notices a connection that has gone quiet with
 * nothing left to wait for, so the master can close it instead of holding
 * its socket and buffers forever, and a secondary notices a master that
 * stopped speaking.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";

/** Closing an authenticated client that sends nothing and waits for no job, by default (5 minutes). */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

/** The time source of an {@linkcode IdleTimer}; tests replace it. */
export interface IdleClock {
  /** Milliseconds on a clock that never goes back. */
  now(): number;
  /** Calls `callback` once after `ms`; returns what `clearTimeout` takes. */
  setTimeout(callback: () => void, ms: number): unknown;
  /** Cancels a pending `setTimeout`. */
  clearTimeout(id: unknown): void;
}

/** Options of {@linkcode IdleTimer}. */
export interface IdleTimerOptions {
  /**
   * Whether the peer is waiting for something (a job's result): while it is,
   * silence is not idleness.
   *
   * @default {() => false}
   */
  isBusy?: () => boolean;
  /**
   * Once the timeout has passed, how much longer to wait before `onIdle`,
   * in ms; a `touch()` meanwhile starts the countdown again. The owner may
   * itself have been paused (a stalled event loop, SIGSTOP, a VM pause)
   * while the peer's messages waited unread, and timers fire before the
   * reader gets its turn: the grace lets it read them first.
   *
   * @default {0}
   */
  graceMs?: number;
  /** @default the real clock: `performance.now` and the global timers */
  clock?: IdleClock;
}

/**
 * Checks an idle timeout (milliseconds, 0 for none), naming it in the
 * `RangeError`, so that a node can refuse a bad one when it starts rather
 * than at its first connection.
 *
 * @example Checking an option
 * ```ts
 * import { checkIdleTimeout } from "./idle_timer.ts";
 *
 * const idleTimeoutMs = checkIdleTimeout(60_000);
 * ```
 */
export function checkIdleTimeout(timeoutMs: number): number {
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new RangeError(
      `Cannot use idle timeout ${timeoutMs}: expected milliseconds >= 0 (0 turns it off)`,
    );
  }
  return timeoutMs;
}

const REAL_CLOCK: IdleClock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, timerDelay(ms)),
  clearTimeout: (id) => clearTimeout(id as ReturnType<typeof setTimeout>),
};

/**
 * Calls `onIdle` once, when `timeoutMs` have passed since the last
 * {@linkcode IdleTimer.touch} and the peer is not busy. A busy peer's
 * countdown starts again when it stops being busy, which its owner marks
 * with `touch()` (a job's result sent, say).
 *
 * One timer runs at a time, whatever the traffic: `touch()` only records the
 * time, and the timer, when it fires early, sleeps for the rest.
 *
 * @example Closing a connection that went quiet
 * ```ts
 * import { IdleTimer } from "./idle_timer.ts";
 *
 * const idle = new IdleTimer(60_000, () => console.log("idle: closing"));
 * idle.touch(); // a message came in
 * idle[Symbol.dispose](); // the connection closed first
 * ```
 */
export class IdleTimer implements Disposable {
  readonly #timeoutMs: number;
  readonly #onIdle: (idleMs: number) => void;
  readonly #isBusy: () => boolean;
  readonly #graceMs: number;
  readonly #clock: IdleClock;
  #last: number;
  #timer: unknown;
  /** Whether the timeout passed and the grace runs. */
  #inGrace = false;
  #done = false;

  /** Starts counting now; `timeoutMs` 0 never calls `onIdle`. */
  constructor(
    timeoutMs: number,
    onIdle: (idleMs: number) => void,
    options: IdleTimerOptions = {},
  ) {
    this.#timeoutMs = checkIdleTimeout(timeoutMs);
    this.#onIdle = onIdle;
    this.#isBusy = options.isBusy ?? (() => false);
    const graceMs = options.graceMs ?? 0;
    if (!Number.isFinite(graceMs) || graceMs < 0) {
      throw new RangeError(
        `Cannot use idle grace ${graceMs}: expected milliseconds >= 0`,
      );
    }
    this.#graceMs = graceMs;
    this.#clock = options.clock ?? REAL_CLOCK;
    this.#last = this.#clock.now();
    if (timeoutMs === 0) this.#done = true;
    else this.#arm(timeoutMs);
  }

  /** The peer did something: the countdown starts again. */
  touch(): void {
    this.#last = this.#clock.now();
  }

  /** Stops the timer; `onIdle` is never called after this. */
  [Symbol.dispose](): void {
    this.#done = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(ms: number): void {
    this.#timer = this.#clock.setTimeout(() => this.#check(), ms);
  }

  #check(): void {
    this.#timer = undefined;
    if (this.#done) return;
    const now = this.#clock.now();
    if (this.#isBusy()) {
      this.#last = now;
      this.#inGrace = false;
      return this.#arm(this.#timeoutMs);
    }
    const idleMs = now - this.#last;
    if (idleMs < this.#timeoutMs) {
      this.#inGrace = false;
      return this.#arm(this.#timeoutMs - idleMs);
    }
    if (!this.#inGrace && this.#graceMs > 0) {
      this.#inGrace = true;
      return this.#arm(this.#graceMs);
    }
    this.#done = true;
    this.#onIdle(idleMs);
  }
}
