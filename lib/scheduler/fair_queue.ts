/**
 * A job queue fair across clients: round-robin between clients, first in first
 * out within each, so one client's burst does not starve the others.
 *
 * @module
 */

import type { JobQueue } from "./job_queue.ts";
import { LinkedSet } from "./_linked_set.ts";

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
 * Any change can move a job, not only the front leaving.
 *
 * Costs: `shift`, `take`, `remove` and `pushFront` are O(1), and so is
 * `push` for a client with no other job waiting; a client's second and
 * later jobs cost O(clients) to place. Walks ({@linkcode FairQueue.entries},
 * {@linkcode FairQueue.values}) are lazy: reading the first k jobs costs
 * O(k), so a caller that needs only the front never pays for the whole
 * queue.
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
  // Each client's waiting jobs, in order, each removed in O(1) wherever
  // it is. A client is present here exactly when it is in the rotation.
  #lists = new Map<string, LinkedSet<T>>();
  // Clients with work, next first; delete then add moves one to the back.
  #rotation = new LinkedSet<string>();
  // Restarted jobs, in the order they came back.
  #front = new LinkedSet<T>();
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
    this.#keys.set(item, key);
    const list = this.#lists.get(key);
    if (list === undefined) {
      // A client with nothing else waiting joins the back of the rotation:
      // its job runs after the first job of every client ahead of it.
      this.#lists.set(key, new LinkedSet([item]));
      this.#rotation.add(key);
      return this.#front.size + this.#rotation.size;
    }
    list.add(item);
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
   * before it, whatever its client; returns its position.
   *
   * @throws {TypeError} If the job is already queued.
   */
  pushFront(item: T): number {
    this.#refuseTwice(item);
    this.#front.add(item);
    this.#keys.set(item, undefined);
    return this.#front.size;
  }

  /** Takes the next job to dispatch; undefined when the queue is empty. */
  shift(): T | undefined {
    if (this.#front.size > 0) {
      const item = this.#front.first() as T;
      this.#front.delete(item);
      this.#keys.delete(item);
      return item;
    }
    const key = this.#rotation.first();
    if (key === undefined) return undefined;
    const list = this.#lists.get(key) as LinkedSet<T>;
    const item = list.first() as T;
    list.delete(item);
    this.#keys.delete(item);
    this.#rotation.delete(key);
    if (list.size > 0) this.#rotation.add(key);
    else this.#lists.delete(key);
    return item;
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
    const list = this.#lists.get(key) as LinkedSet<T>;
    list.delete(item);
    if (list.size === 0) {
      this.#lists.delete(key);
      this.#rotation.delete(key);
    }
    return true;
  }

  /**
   * Every waiting job with its position, in the order successive
   * {@linkcode FairQueue.shift} calls would return them, walked lazily.
   * What changes during the walk is as {@linkcode FairQueue.values} says;
   * positions are those of the queue as the walk found it, so they are
   * only right until the queue changes.
   */
  *entries(): IterableIterator<[number, T]> {
    let position = 0;
    for (const item of this.values()) yield [++position, item];
  }

  /**
   * Every waiting job in dispatch order, walked lazily, skipping the
   * clients in `passOver` (which the caller may add to as it walks): a
   * client that may not run more now is passed over in O(1), however many
   * of its jobs wait. Restarted jobs belong to no client here and are
   * always walked.
   *
   * The caller may change the queue as it walks (start, cancel, add jobs):
   * a job taken or removed is not yielded afterwards (unless it is queued
   * again), a client served and so moved to the back of the rotation is
   * not walked twice, and a job added meanwhile may or may not be reached.
   */
  *values(passOver?: ReadonlySet<string>): IterableIterator<T> {
    // Live iteration: what is deleted meanwhile is skipped.
    yield* this.#front;
    // Round 0 takes each client's first job in rotation order, and keeps
    // the rest of the list for the rounds after it.
    const walked = new Set<string>();
    let round: [string, Iterator<T>][] = [];
    for (const key of this.#rotation) {
      if (walked.has(key) || passOver?.has(key)) continue;
      walked.add(key);
      const list = this.#lists.get(key) as LinkedSet<T>;
      const more = list.size > 1; // Read before the caller can take the head.
      const jobs = list.values();
      const head = jobs.next();
      if (head.done) continue;
      yield head.value;
      if (more) round.push([key, jobs]);
    }
    while (round.length > 0) {
      const next: typeof round = [];
      for (const [key, jobs] of round) {
        if (passOver?.has(key)) continue;
        const step = jobs.next();
        if (step.done) continue;
        yield step.value;
        next.push([key, jobs]);
      }
      round = next;
    }
  }

  *#rotationLists(): Generator<[string, LinkedSet<T>]> {
    for (const key of this.#rotation) {
      yield [key, this.#lists.get(key) as LinkedSet<T>];
    }
  }

  #refuseTwice(item: T): void {
    if (this.#keys.has(item)) throw new TypeError("Cannot queue a job twice");
  }
}
