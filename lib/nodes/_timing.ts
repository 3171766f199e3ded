/**
 * Waiting, for nodes: capped exponential back-off with jitter, and delays
 * that end early when the node shuts down, so no timer outlives it.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";

/**
 * The most time a node gives a silent peer past its deadline, in ms, to
 * read what the peer sent while the node itself was paused (a stalled
 * event loop, SIGSTOP, a VM pause): timers fire before the reader gets its
 * turn. The master grants it to its secondaries, a secondary to its
 * master, each capped at one heartbeat interval.
 */
export const DEFAULT_SILENCE_GRACE_MS = 1000;

/** Bounds of {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** The first delay, in milliseconds. */
  readonly minMs: number;
  /** No delay is longer, in milliseconds. */
  readonly maxMs: number;
  /** Source of jitter in [0, 1). @default {Math.random} */
  readonly random?: () => number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): doubling
 * from `minMs` up to `maxMs`, then randomly shortened by up to half (never
 * below `minMs`), so that nodes that lost the same master do not all come
 * back in the same millisecond.
 *
 * @example Delays of successive attempts
 * ```ts
 * import assert from "node:assert/strict";
 * import { backoffDelay } from "./_timing.ts";
 *
 * const noJitter = { minMs: 100, maxMs: 5000, random: () => 0.999999 };
 * assert.deepEqual(
 *   [0, 1, 2, 3, 10].map((attempt) => backoffDelay(attempt, noJitter)),
 *   [100, 200, 400, 800, 5000],
 * );
 * ```
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const { minMs, maxMs, random = Math.random } = options;
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 52));
  return Math.round(Math.max(minMs, ceiling * (0.5 + random() / 2)));
}

/**
 * Resolves after `ms`, or at once when `signal` aborts; never rejects, and
 * leaves no timer behind either way.
 *
 * @example Waiting unless told to stop
 * ```ts
 * import { abortableDelay } from "./_timing.ts";
 *
 * const stop = new AbortController();
 * const waiting = abortableDelay(60_000, stop.signal);
 * stop.abort();
 * await waiting; // at once
 * ```
 */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return settledWithin(new Promise<never>(() => {}), ms, signal);
}

/**
 * Resolves when `promise` settles (never rejecting, whatever it does), when
 * `ms` have passed, or when `signal` aborts, whichever comes first.
 *
 * @example Not waiting long for a slow call
 * ```ts
 * import { settledWithin } from "./_timing.ts";
 *
 * const slow = new Promise((resolve) => setTimeout(resolve, 50));
 * await settledWithin(slow, 10, new AbortController().signal); // after 10 ms
 * await slow;
 * ```
 */
export function settledWithin(
  promise: Promise<unknown>,
  ms: number,
  signal: AbortSignal,
): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, timerDelay(ms));
    signal.addEventListener("abort", done, { once: true });
    promise.then(done, done);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
