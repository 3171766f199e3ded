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

/** The intervals set and not yet cleared while {@linkcode trackIntervals} runs. */
export interface TrackedIntervals extends Disposable {
  /** How many intervals are set and not cleared. */
  readonly live: number;
}

/**
 * Counts the intervals code sets and clears until disposed, for tests that
 * show an interval ends with what it served (Deno's test sanitizers do
 * not report a leaked interval).
 */
export function trackIntervals(): TrackedIntervals {
  const realSetInterval = globalThis.setInterval;
  const realClearInterval = globalThis.clearInterval;
  const live = new Set<unknown>();
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const id = realSetInterval(...args);
    live.add(id);
    return id;
  }) as typeof setInterval;
  globalThis.clearInterval = ((id?: number) => {
    live.delete(id);
    realClearInterval(id);
  }) as typeof clearInterval;
  return {
    get live() {
      return live.size;
    },
    [Symbol.dispose]() {
      globalThis.setInterval = realSetInterval;
      globalThis.clearInterval = realClearInterval;
    },
  };
}
