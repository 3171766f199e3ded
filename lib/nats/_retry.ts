/**
 * Retrying a request to NATS through the seconds a cluster of servers needs
 * to fail over (a server lost, JetStream leaders elected again), when every
 * request times out or answers that JetStream is not there.
 *
 * @module
 */

/** How long a request is tried again by default: longer than a failover. */
export const FAILOVER_MS = 30_000;

/**
 * Runs `request` until it succeeds, waiting 100 ms, then twice as long up
 * to 2 s, between tries; after `withinMs`, the last error is thrown.
 * `signal` ends the waiting early (the last error is thrown then too).
 */
export async function retrying<T>(
  request: () => Promise<T>,
  { withinMs = FAILOVER_MS, signal }: {
    withinMs?: number;
    signal?: AbortSignal | undefined;
  } = {},
): Promise<T> {
  const giveUpAt = performance.now() + withinMs;
  for (let delayMs = 100;; delayMs = Math.min(2_000, delayMs * 2)) {
    try {
      return await request();
    } catch (error) {
      if (signal?.aborted || performance.now() + delayMs > giveUpAt) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
