/**
 * Counting the timers code arms, for tests that show a path sets no timer
 * per message.
 *
 * @module
 */

/**
 * Runs `fn` with `setTimeout` counted, and returns how many timers it
 * armed (timers `fn` itself waits on, through `realSetTimeout`, are not).
 */
export async function countTimers(
  fn: (realSetTimeout: typeof setTimeout) => Promise<void>,
): Promise<number> {
  const realSetTimeout = globalThis.setTimeout;
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return realSetTimeout(...args);
  }) as typeof setTimeout;
  try {
    await fn(realSetTimeout);
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  return timers;
}
