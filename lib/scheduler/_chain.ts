/**
 * An intrusive doubly linked list: the links are the caller's own objects
 * (a queued job, a client's turn), so adding and removing allocate nothing
 * and touch no `Map`.
 *
 * A `Map` or `Set` used as a queue reallocates its backing store as it
 * fills with deleted entries, and again each time it shrinks, down to the
 * last entry: with thousands of clients each cycling one job, that
 * churn was a large share of what the master's garbage collector copied.
 *
 * Removal is live-iteration safe, as a `Set`'s is: a removed link keeps its
 * `next`, so a walk standing on it goes on to the links that followed it.
 *
 * @module
 */

/** What a link in a {@linkcode Chain} carries. */
export interface Linked<L> {
  prev: L | undefined;
  next: L | undefined;
  /** Out of its chain (a walk standing on it still follows `next`). */
  removed: boolean;
}

/** The ends of a chain of links, and how many it holds. */
export interface Chain<L extends Linked<L>> {
  head: L | undefined;
  tail: L | undefined;
  size: number;
}

/** An empty chain. */
export function chain<L extends Linked<L>>(): Chain<L> {
  return { head: undefined, tail: undefined, size: 0 };
}

/**
 * Links `link` at the back of `list`. A link goes into a chain once: one
 * that was removed is not appended again (a walk may stand on it), a new
 * one is made.
 */
export function append<L extends Linked<L>>(list: Chain<L>, link: L): void {
  link.prev = list.tail;
  link.next = undefined;
  link.removed = false;
  if (list.tail === undefined) list.head = link;
  else list.tail.next = link;
  list.tail = link;
  list.size++;
}

/** Takes `link`, which is in `list`, out of it; its own `next` stays. */
export function unlink<L extends Linked<L>>(list: Chain<L>, link: L): void {
  link.removed = true;
  if (link.prev === undefined) list.head = link.next;
  else link.prev.next = link.next;
  if (link.next === undefined) list.tail = link.prev;
  else link.next.prev = link.prev;
  list.size--;
}

/** The first link still in its chain from `link` on (itself included). */
export function live<L extends Linked<L>>(link: L | undefined): L | undefined {
  while (link !== undefined && link.removed) link = link.next;
  return link;
}
