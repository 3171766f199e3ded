/**
 * Jobs waiting for a slot, in the order they will run. The queue sits behind
 * an interface so that fairer orders (per client) and shared queues (several
 * masters) can replace the plain FIFO without touching the master.
 *
 * @module
 */

/** Jobs waiting for a slot. Position 1 is the next to run. */
export interface JobQueue<T> {
  /** How many jobs wait. */
  readonly length: number;
  /** Adds a job at the back; returns its position. */
  push(item: T): number;
  /** Takes the job at the front. */
  shift(): T | undefined;
  /** Removes a job wherever it is (a cancelled or disconnected client); false if absent. */
  remove(item: T): boolean;
  /** Every waiting job with its position, front first. */
  entries(): IterableIterator<[position: number, item: T]>;
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
 */
export class FifoQueue<T> implements JobQueue<T> {
  // A Set keeps insertion order and removes from the middle in O(1).
  #items = new Set<T>();

  get length(): number {
    return this.#items.size;
  }

  push(item: T): number {
    if (this.#items.has(item)) throw new TypeError("Cannot queue a job twice");
    this.#items.add(item);
    return this.#items.size;
  }

  shift(): T | undefined {
    for (const item of this.#items) {
      this.#items.delete(item);
      return item;
    }
    return undefined;
  }

  remove(item: T): boolean {
    return this.#items.delete(item);
  }

  *entries(): IterableIterator<[number, T]> {
    let position = 0;
    for (const item of this.#items) yield [++position, item];
  }
}
