/**
 * Following a KV bucket in a cluster of NATS servers that may lose one.
 *
 * A bucket's watch is an ordered consumer that lives on one server: when
 * that server dies, the watch may end, or stall without a word. So the
 * watch is started again whenever it ends, and while it has said nothing
 * for `quietMs` the bucket is read whole instead (its keys, then each
 * entry), until the watch speaks again. Whoever follows the bucket hears
 * each entry as the watch would give it, perhaps twice.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { KV, KvEntry } from "@nats-io/kv";

const log = getLogger(["kiln", "nats"]);

/** Options of {@linkcode followBucket}. */
export interface FollowBucketOptions {
  /** Read the bucket whole when the watch said nothing this long, in ms. */
  readonly quietMs: number;
  /** Ends the following. */
  readonly signal: AbortSignal;
  /** What the bucket is, for logs. */
  readonly name: string;
}

/**
 * Calls `onEntry` with every entry of `bucket` as it changes, until
 * `signal` aborts. Never rejects.
 */
export async function followBucket(
  bucket: KV,
  onEntry: (entry: KvEntry) => void,
  { quietMs, signal, name }: FollowBucketOptions,
): Promise<void> {
  let heardAt = performance.now();
  const poll = setInterval(() => {
    if (performance.now() - heardAt < quietMs) return;
    void readWhole(bucket, onEntry, signal).then((read) => {
      if (read) heardAt = performance.now();
    });
  }, quietMs);
  signal.addEventListener("abort", () => clearInterval(poll), { once: true });
  for (let failures = 0; !signal.aborted;) {
    try {
      const watcher = await bucket.watch();
      const stop = () => watcher.stop();
      signal.addEventListener("abort", stop, { once: true });
      try {
        for await (const entry of watcher) {
          heardAt = performance.now();
          failures = 0;
          onEntry(entry);
        }
      } finally {
        signal.removeEventListener("abort", stop);
      }
    } catch (error) {
      if (!signal.aborted && failures++ === 0) {
        log.warn("the watch of the {name} ended: {error}; watching again", {
          name,
          error,
        });
      }
    }
    if (signal.aborted) break;
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(2_000, 100 * 2 ** failures))
    );
  }
  clearInterval(poll);
}

/** Every entry of the bucket, once; false when it could not be read. */
async function readWhole(
  bucket: KV,
  onEntry: (entry: KvEntry) => void,
  signal: AbortSignal,
): Promise<boolean> {
  try {
    const keys: string[] = [];
    for await (const key of await bucket.keys()) keys.push(key);
    for (const key of keys) {
      if (signal.aborted) return false;
      const entry = await bucket.get(key);
      if (entry !== null) onEntry(entry);
    }
    return true;
  } catch {
    return false;
  }
}
