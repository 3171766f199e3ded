/**
 * Jobs waiting for a slot, in the order they will run. The queue sits behind
 * an interface so that fairer orders (per client) and shared queues (several
 * masters) can replace the plain FIFO without touching the master.
 *
 * @module
 */

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
   * Puts a job before everyone else: the next {@linkcode JobQueue.shift}
   * returns it. For a job that must restart because its node died.
   */
  pushFront(item: T): void;
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
 *
 * @example A restarted job goes before everyone
 * ```ts
 * import assert from "node:assert/strict";
 * import { FifoQueue } from "./job_queue.ts";
 *
 * const queue = new FifoQueue<string>();
 * queue.push("a");
 * queue.pushFront("restarted");
 * assert.equal(queue.shift(), "restarted");
 * assert.equal(queue.shift(), "a");
 * ```
 */
export class FifoQueue<T> implements JobQueue<T> {
  // A Set keeps insertion order and removes from the middle in O(1).
  #items = new Set<T>();
  // Restarted jobs, the last one pushed first (a Set cannot prepend).
  #front: T[] = [];

  get length(): number {
    return this.#front.length + this.#items.size;
  }

  push(item: T): number {
    this.#refuseTwice(item);
    this.#items.add(item);
    return this.length;
  }

  pushFront(item: T): void {
    this.#refuseTwice(item);
    this.#front.push(item);
  }

  shift(): T | undefined {
    if (this.#front.length > 0) return this.#front.pop();
    for (const item of this.#items) {
      this.#items.delete(item);
      return item;
    }
    return undefined;
  }

  take(item: T): boolean {
    return this.remove(item);
  }

  remove(item: T): boolean {
    const index = this.#front.lastIndexOf(item);
    if (index === -1) return this.#items.delete(item);
    this.#front.splice(index, 1);
    return true;
  }

  *entries(): IterableIterator<[number, T]> {
    let position = 0;
    for (let i = this.#front.length - 1; i >= 0; i--) {
      yield [++position, this.#front[i] as T];
    }
    for (const item of this.#items) yield [++position, item];
  }

  #refuseTwice(item: T): void {
    if (this.#items.has(item) || this.#front.includes(item)) {
      throw new TypeError("Cannot queue a job twice");
    }
  }
}
