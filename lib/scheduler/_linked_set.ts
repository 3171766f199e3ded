/**
 * An ordered set for queues: a `Set` whose front is found in O(1).
 *
 * A V8 `Set` keeps deleted entries as holes until it shrinks, and iteration
 * steps over every hole from the start: taking the first element of a Set
 * that was used as a queue costs O(elements taken before), so draining N
 * costs O(N²) (100,000 take about 5 s). Here a doubly linked list keeps the
 * order and a Map finds each element's link, so `add` (at the back),
 * `delete` (anywhere) and `first` are O(1).
 *
 * @module
 */

interface Link<T> {
  readonly value: T;
  prev: Link<T> | undefined;
  next: Link<T> | undefined;
  removed: boolean;
}

/**
 * Insertion-ordered unique values, like `Set`, with an O(1) {@linkcode
 * LinkedSet.first}.
 *
 * Iteration is live, as a `Set`'s is: a value deleted before the iterator
 * reaches it is skipped, and one deleted and added again comes again at
 * the back. A value added while an iterator stands on a deleted last value
 * is not reached (a `Set`'s iterator would reach it).
 *
 * @example A queue of clients, served in turn
 * ```ts
 * import assert from "node:assert/strict";
 * import { LinkedSet } from "./_linked_set.ts";
 *
 * const rotation = new LinkedSet<string>();
 * rotation.add("alice").add("bob");
 * const next = rotation.first()!;
 * rotation.delete(next);
 * rotation.add(next); // to the back
 * assert.deepEqual([...rotation], ["bob", "alice"]);
 * ```
 */
export class LinkedSet<T> implements Iterable<T> {
  readonly #links = new Map<T, Link<T>>();
  #head: Link<T> | undefined;
  #tail: Link<T> | undefined;

  /** Makes a set of `values`, in their order. */
  constructor(values: Iterable<T> = []) {
    for (const value of values) this.add(value);
  }

  /** How many values it holds. */
  get size(): number {
    return this.#links.size;
  }

  /** Whether it holds `value`. */
  has(value: T): boolean {
    return this.#links.has(value);
  }

  /** Adds `value` at the back, unless it is there already. */
  add(value: T): this {
    if (this.#links.has(value)) return this;
    // Always a new link: an iterator standing on a deleted one must still
    // find the values that followed it.
    const link: Link<T> = {
      value,
      prev: this.#tail,
      next: undefined,
      removed: false,
    };
    if (this.#tail === undefined) this.#head = link;
    else this.#tail.next = link;
    this.#tail = link;
    this.#links.set(value, link);
    return this;
  }

  /** Removes `value`; false if it was not there. */
  delete(value: T): boolean {
    const link = this.#links.get(value);
    if (link === undefined) return false;
    this.#links.delete(value);
    link.removed = true;
    // Its own `next` stays, for an iterator standing on it.
    if (link.prev === undefined) this.#head = link.next;
    else link.prev.next = link.next;
    if (link.next === undefined) this.#tail = link.prev;
    else link.next.prev = link.prev;
    return true;
  }

  /** The value at the front; undefined when empty. */
  first(): T | undefined {
    return this.#head?.value;
  }

  /** The values, front first, live. */
  *values(): IterableIterator<T> {
    for (let link = this.#head; link !== undefined; link = link.next) {
      if (!link.removed) yield link.value;
    }
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.values();
  }
}
