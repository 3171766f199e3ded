/**
 * The one rule every timer in kiln follows: `setTimeout` and `setInterval`
 * take at most 2^31 - 1 ms (about 24.8 days) and fire *at once* for more,
 * so a delay an operator or a user chose, or one summed from several, goes
 * through {@linkcode timerDelay} first.
 *
 * @module
 */

/** The longest delay a timer takes: 2^31 - 1 ms, about 24.8 days. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `ms` made safe for `setTimeout`: at most {@linkcode MAX_TIMER_MS} (which
 * then means "in 24.8 days", as good as never for a deadline), at least 0.
 * NaN, which a timer would also take as 0, becomes the maximum too: a
 * deadline that cannot be computed must not fire at once.
 *
 * @example A deadline summed from operator settings
 * ```ts
 * import { timerDelay } from "./_timer.ts";
 *
 * const nodeTimeoutMs = 2 ** 32; // "never", says the operator
 * const timer = setTimeout(() => {}, timerDelay(10_000 + nodeTimeoutMs));
 * clearTimeout(timer);
 * ```
 */
export function timerDelay(ms: number): number {
  if (Number.isNaN(ms)) return MAX_TIMER_MS;
  return Math.min(Math.max(ms, 0), MAX_TIMER_MS);
}
