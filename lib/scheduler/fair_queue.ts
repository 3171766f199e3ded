/**
 * A job queue fair across clients: round-robin between clients, first in first
 * out within each, so one client's burst does not starve the others.
 *
 * @module
 */

import type { JobQueue } from "./job_queue.ts";

/**
 * Round-robin across clients, FIFO within a client.
 *
 * The queue holds one FIFO list per client and a rotation of the clients that
 * have work. {@linkcode FairQueue.shift} takes the head of the first client in
 * the rotation and moves that client to the back (or drops it when its list is
 * empty); a client that newly has work joins the back of the rotation. Jobs put
 * back with {@linkcode FairQueue.pushFront} go before every client, in the
 * order they came back.
 *
 * Positions are the dispatch order as it stands now, so unlike a plain FIFO a
 * job's position can move backwards: when another client (or a new client)
 * pushes, its job may be interleaved ahead of jobs that were already waiting.
 * Send position updates after every change, not only when the front leaves.
 *
 * Costs: `push` is O(clients), `shift`, `remove` and `pushFront` are O(1)
 * (amortised), `entries` is O(jobs).
 *
 * @example One client's burst does not starve another
 * ```ts
 * import assert from "node:assert/strict";
 * import { FairQueue } from "./fair_queue.ts";
 *
 * const queue = new FairQueue<string>((job) => job[0]!);
 * queue.push("a1");
 * queue.push("a2");
 * queue.push("a3");
 * assert.equal(queue.push("b1"), 2); // ahead of a2 and a3
 * assert.deepEqual([...queue.entries()], [
 *   [1, "a1"],
 *   [2, "b1"],
 *   [3, "a2"],
 *   [4, "a3"],
 * ]);
 * ```
 *
 * @example Restarted jobs run next, whoever sent them, in the order they came back
 * ```ts
 * import assert from "node:assert/strict";
 * import { FairQueue } from "./fair_queue.ts";
 *
 * const queue = new FairQueue<string>((job) => job[0]!);
 * queue.push("a1");
 * queue.pushFront("b0");
 * queue.pushFront("c0");
 * assert.equal(queue.shift(), "b0");
 * assert.equal(queue.shift(), "c0");
 * assert.equal(queue.shift(), "a1");
 * ```
 */
export class FairQueue<T> implements JobQueue<T> {
  readonly #keyOf: (item: T) => string;
  // Each client's waiting jobs; a Set keeps order and removes in O(1).
  // A client is present here exactly when it is in the rotation.
  #lists = new Map<string, Set<T>>();
  // Clients with work, next first; delete then add moves one to the back.
  #rotation = new Set<string>();
  // Restarted jobs, in the order they came back.
  #front = new Set<T>();
  // Every queued job: its client, or undefined when it sits in #front.
  #keys = new Map<T, string | undefined>();

  /**
   * Makes an empty queue.
   *
   * @param keyOf The client a job belongs to; called once, when it is pushed.
   */
  constructor(keyOf: (item: T) => string) {
    this.#keyOf = keyOf;
  }

  /** How many jobs wait. */
  get length(): number {
    return this.#keys.size;
  }

  /**
   * Adds a job at the back of its client's list; returns its position in
   * dispatch order (1-based).
   *
   * @throws {TypeError} If the job is already queued.
   */
  push(item: T): number {
    this.#refuseTwice(item);
    const key = this.#keyOf(item);
    let list = this.#lists.get(key);
    if (list === undefined) {
      list = new Set();
      this.#lists.set(key, list);
      this.#rotation.add(key);
    }
    list.add(item);
    this.#keys.set(item, key);
    // Dispatch runs in rounds over the rotation: round r takes the r-th job
    // of every client that has one. Our job, at index k of its list, runs
    // after every job in rounds before k, and after the clients ahead of its
    // own in round k.
    const k = list.size - 1;
    let position = this.#front.size + 1;
    let ahead = true;
    for (const [other, otherList] of this.#rotationLists()) {
      if (other === key) ahead = false;
      position += Math.min(otherList.size, k);
      if (ahead && otherList.size > k) position++;
    }
    return position;
  }

  /**
   * Puts a restarted job before every client's jobs, behind those put back
   * before it, whatever its client.
   *
   * @throws {TypeError} If the job is already queued.
   */
  pushFront(item: T): void {
    this.#refuseTwice(item);
    this.#front.add(item);
    this.#keys.set(item, undefined);
  }

  /** Takes the next job to dispatch; undefined when the queue is empty. */
  shift(): T | undefined {
    for (const item of this.#front) {
      this.#front.delete(item);
      this.#keys.delete(item);
      return item;
    }
    for (const key of this.#rotation) {
      const list = this.#lists.get(key) as Set<T>;
      const item = first(list) as T;
      list.delete(item);
      this.#keys.delete(item);
      this.#rotation.delete(key);
      if (list.size > 0) this.#rotation.add(key);
      else this.#lists.delete(key);
      return item;
    }
    return undefined;
  }

  /**
   * Takes a job out to run it, wherever it stands (the jobs ahead of it may
   * fit no node yet): its client has been served, so it goes to the back of
   * the rotation, as {@linkcode shift} does.
   */
  take(item: T): boolean {
    const key = this.#keys.get(item);
    if (!this.remove(item)) return false;
    if (key !== undefined && this.#rotation.has(key)) {
      this.#rotation.delete(key);
      this.#rotation.add(key);
    }
    return true;
  }

  /** Removes a job wherever it is; false if it is not queued. */
  remove(item: T): boolean {
    if (!this.#keys.has(item)) return false;
    const key = this.#keys.get(item);
    this.#keys.delete(item);
    if (key === undefined) {
      this.#front.delete(item);
      return true;
    }
    const list = this.#lists.get(key) as Set<T>;
    list.delete(item);
    if (list.size === 0) {
      this.#lists.delete(key);
      this.#rotation.delete(key);
    }
    return true;
  }

  /**
   * Every waiting job with its position, in the order successive
   * {@linkcode FairQueue.shift} calls would return them. A snapshot: the
   * queue may change while it is iterated.
   */
  entries(): IterableIterator<[number, T]> {
    const order: [number, T][] = [];
    for (const item of this.#front) order.push([order.length + 1, item]);
    let active = [...this.#rotationLists()].map(([, list]) => list.values());
    while (active.length > 0) {
      const next: typeof active = [];
      for (const iterator of active) {
        const step = iterator.next();
        if (step.done) continue;
        order.push([order.length + 1, step.value]);
        next.push(iterator);
      }
      active = next;
    }
    return order.values();
  }

  *#rotationLists(): Generator<[string, Set<T>]> {
    for (const key of this.#rotation) {
      yield [key, this.#lists.get(key) as Set<T>];
    }
  }

  #refuseTwice(item: T): void {
    if (this.#keys.has(item)) throw new TypeError("Cannot queue a job twice");
  }
}

function first<T>(items: Iterable<T>): T | undefined {
  for (const item of items) return item;
  return undefined;
}
