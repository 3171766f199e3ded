/**
 * Jobs waiting for a slot, in the order they will run. The queue sits behind
 * an interface so that fairer orders (per client) and shared queues (several
 * masters) can replace the plain FIFO without touching the master.
 *
 * @module
 */
import { LinkedSet } from "./_linked_set.ts";

/**
 * Jobs waiting for a slot. Position 1 is the next to run.
 *
 * @example The master holds any order behind this interface
 * ```ts
 * import assert from "node:assert/strict";
 * import { FifoQueue, type JobQueue } from "./job_queue.ts";
 *
 * const queue: JobQueue<string> = new FifoQueue();
 * queue.push("a");
 * queue.pushFront("restarted");
 * assert.deepEqual([...queue.entries()], [[1, "restarted"], [2, "a"]]);
 * ```
 */
export interface JobQueue<T> {
  /** How many jobs wait. */
  readonly length: number;
  /** Adds a job at the back; returns its position. */
  push(item: T): number;
  /**
   * Puts a job back ahead of every job that waits its first turn, behind
   * those put back before it: for jobs that must restart because their node
   * died. Several put back at once keep their order (a queue, not a stack).
   * Returns its position.
   */
  pushFront(item: T): number;
  /** Takes the job at the front. */
  shift(): T | undefined;
  /**
   * Takes a job out to run it, wherever it stands. Unlike {@linkcode remove}
   * (a job that leaves unserved), this counts as serving its client, which
   * a fair queue sends to the back of its turn.
   */
  take(item: T): boolean;
  /** Removes a job wherever it is (a cancelled or disconnected client); false if absent. */
  remove(item: T): boolean;
  /**
   * Every waiting job with its position, front first, walked lazily:
   * reading the first k costs O(k). The positions are those of the queue
   * as the walk found it.
   */
  entries(): IterableIterator<[position: number, item: T]>;
  /**
   * Every waiting job, front first, walked lazily. The caller may change
   * the queue as it walks: a job taken or removed is not yielded
   * afterwards (unless it is queued again), and one added meanwhile may or
   * may not be reached. Jobs of the clients in `passOver` may be left out, a
   * hint the caller may add to as it walks (a queue that does not tell
   * clients apart walks them all).
   */
  values(passOver?: ReadonlySet<string>): IterableIterator<T>;
}

/**
 * First in, first out.
 *
 * @example Positions move as the front leaves
 * ```ts
 * import { FifoQueue } from "./job_queue.ts";
 *
 * const queue = new FifoQueue<string>();
 * queue.push("a");
 * queue.push("b"); // position 2
 * queue.shift(); // "a"
 * [...queue.entries()]; // [[1, "b"]]
 * ```
 *
 * @example Restarted jobs go before everyone, in the order they came back
 * ```ts
 * import assert from "node:assert/strict";
 * import { FifoQueue } from "./job_queue.ts";
 *
 * const queue = new FifoQueue<string>();
 * queue.push("a");
 * queue.pushFront("r1");
 * queue.pushFront("r2");
 * assert.equal(queue.shift(), "r1");
 * assert.equal(queue.shift(), "r2");
 * assert.equal(queue.shift(), "a");
 * ```
 */
export class FifoQueue<T> implements JobQueue<T> {
  // Insertion order, and removal from the middle in O(1).
  #items = new LinkedSet<T>();
  // Restarted jobs, in the order they came back.
  #front = new LinkedSet<T>();

  get length(): number {
    return this.#front.size + this.#items.size;
  }

  push(item: T): number {
    this.#refuseTwice(item);
    this.#items.add(item);
    return this.length;
  }

  pushFront(item: T): number {
    this.#refuseTwice(item);
    this.#front.add(item);
    return this.#front.size;
  }

  shift(): T | undefined {
    const items = this.#front.size > 0 ? this.#front : this.#items;
    if (items.size === 0) return undefined;
    const item = items.first() as T;
    items.delete(item);
    return item;
  }

  take(item: T): boolean {
    return this.remove(item);
  }

  remove(item: T): boolean {
    return this.#front.delete(item) || this.#items.delete(item);
  }

  *entries(): IterableIterator<[number, T]> {
    let position = 0;
    for (const item of this.values()) yield [++position, item];
  }

  // Every job is its own turn here: there is no client to pass over.
  *values(): IterableIterator<T> {
    yield* this.#front;
    yield* this.#items;
  }

  #refuseTwice(item: T): void {
    if (this.#items.has(item) || this.#front.has(item)) {
      throw new TypeError("Cannot queue a job twice");
    }
  }
}
