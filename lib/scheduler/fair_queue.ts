/**
 * A job queue fair across clients: round-robin between clients, first in first
 * out within each, so one client's burst does not starve the others.
 *
 * @module
 */

import type { JobQueue } from "./job_queue.ts";
import { append, type Chain, chain, live, unlink } from "./_chain.ts";

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
 * queue. The lists are linked through the queue's own small objects, with
 * one `Map` from job to its link and one from client to its lane: a job
 * coming and going allocates two objects and no `Map` backing store.
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
/** A waiting job, linked in its client's lane (or in the front). */
interface Node<T> {
  readonly item: T;
  /** Its client's lane; undefined for a job put back at the front. */
  readonly lane: Lane<T> | undefined;
  prev: Node<T> | undefined;
  next: Node<T> | undefined;
  removed: boolean;
}

/** One client's waiting jobs, in order, and its place in the rotation. */
interface Lane<T> extends Chain<Node<T>> {
  readonly key: string;
  /** Its turn in the rotation; there exactly while it has jobs. */
  turn: Turn<T> | undefined;
  /** The last walk that reached its first job (see `values()`). */
  walked: number;
}

/**
 * A lane's place in the rotation: a new one each time the lane goes to
 * the back, so that a walk standing on the old one still finds the lanes
 * that followed it.
 */
interface Turn<T> {
  readonly lane: Lane<T>;
  prev: Turn<T> | undefined;
  next: Turn<T> | undefined;
  removed: boolean;
}

/**
 * How many clients without a job keep their lane at least (see
 * `FairQueue.#remove`).
 */
const IDLE_LANES_KEPT = 1024;

export class FairQueue<T> implements JobQueue<T> {
  readonly #keyOf: (item: T) => string;
  // Every queued job's link. Each client's jobs are a lane, in the
  // rotation while it has jobs, and kept a while after.
  readonly #nodes = new Map<T, Node<T>>();
  readonly #lanes = new Map<string, Lane<T>>();
  /** Lanes without a job in `#lanes`. */
  #idleLanes = 0;
  // Clients with work, next first.
  readonly #rotation: Chain<Turn<T>> = chain();
  // Restarted jobs, in the order they came back.
  readonly #front: Chain<Node<T>> = chain();
  /** Counts walks, so that each marks the lanes it passed without a Set. */
  #walks = 0;

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
    return this.#nodes.size;
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
    let lane = this.#lanes.get(key);
    if (lane === undefined) {
      lane = { ...chain<Node<T>>(), key, turn: undefined, walked: 0 };
      this.#lanes.set(key, lane);
    } else if (lane.size === 0) this.#idleLanes--;
    if (lane.size === 0) {
      // A client with nothing else waiting joins the back of the rotation:
      // its job runs after the first job of every client ahead of it.
      this.#add(lane, item);
      this.#enterRotation(lane);
      return this.#front.size + this.#rotation.size;
    }
    this.#add(lane, item);
    // Dispatch runs in rounds over the rotation: round r takes the r-th job
    // of every client that has one. Our job, at index k of its list, runs
    // after every job in rounds before k, and after the clients ahead of its
    // own in round k.
    const k = lane.size - 1;
    let position = this.#front.size + 1;
    let ahead = true;
    for (let turn = this.#rotation.head; turn; turn = turn.next) {
      const other = turn.lane;
      if (other === lane) ahead = false;
      position += Math.min(other.size, k);
      if (ahead && other.size > k) position++;
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
    this.#add(undefined, item);
    return this.#front.size;
  }

  /** Takes the next job to dispatch; undefined when the queue is empty. */
  shift(): T | undefined {
    const node = this.#front.head ?? this.#rotation.head?.lane.head;
    if (node === undefined) return undefined;
    this.take(node.item);
    return node.item;
  }

  /**
   * Takes a job out to run it, wherever it stands (the jobs ahead of it may
   * fit no node yet): its client has been served, so it goes to the back of
   * the rotation, as {@linkcode shift} does.
   */
  take(item: T): boolean {
    const node = this.#nodes.get(item);
    if (node === undefined) return false;
    this.#remove(node);
    const lane = node.lane;
    if (lane?.turn !== undefined) {
      unlink(this.#rotation, lane.turn);
      this.#enterRotation(lane);
    }
    return true;
  }

  /** Removes a job wherever it is; false if it is not queued. */
  remove(item: T): boolean {
    const node = this.#nodes.get(item);
    if (node === undefined) return false;
    this.#remove(node);
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
    // Live iteration: what is removed meanwhile is skipped.
    for (let node = live(this.#front.head); node; node = live(node.next)) {
      yield node.item;
    }
    // Round 0 takes each client's first job in rotation order; the rounds
    // after it go on from the job each lane yielded last.
    const walk = ++this.#walks;
    let round: Node<T>[] = [];
    for (let turn = live(this.#rotation.head); turn; turn = live(turn.next)) {
      const lane = turn.lane;
      if (lane.walked === walk || passOver?.has(lane.key)) continue;
      lane.walked = walk;
      const head = lane.head;
      if (head === undefined) continue;
      const more = lane.size > 1; // Read before the caller can take the head.
      yield head.item;
      if (more) round.push(head);
    }
    while (round.length > 0) {
      const next: Node<T>[] = [];
      for (const last of round) {
        if (passOver?.has(last.lane!.key)) continue;
        const node = live(last.next);
        if (node === undefined) continue;
        yield node.item;
        next.push(node);
      }
      round = next;
    }
  }

  /** Links a new job at the back of its lane, or of the front. */
  #add(lane: Lane<T> | undefined, item: T): void {
    const node: Node<T> = {
      item,
      lane,
      prev: undefined,
      next: undefined,
      removed: false,
    };
    append(lane ?? this.#front, node);
    this.#nodes.set(item, node);
  }

  /**
   * Unlinks a job. A lane left empty leaves the rotation but stays, so that
   * a client cycling one job at a time (the usual client) reuses its lane
   * instead of adding and deleting a key of a large Map per job; empty
   * lanes are forgotten once there are more than
   * {@linkcode IDLE_LANES_KEPT} and they are most of the lanes, which
   * costs O(1) per job amortised.
   */
  #remove(node: Node<T>): void {
    this.#nodes.delete(node.item);
    const lane = node.lane;
    if (lane === undefined) return unlink(this.#front, node);
    unlink(lane, node);
    if (lane.size > 0) return;
    unlink(this.#rotation, lane.turn!);
    lane.turn = undefined;
    if (
      ++this.#idleLanes > IDLE_LANES_KEPT &&
      this.#idleLanes * 2 > this.#lanes.size
    ) {
      for (const [key, each] of this.#lanes) {
        if (each.size === 0) this.#lanes.delete(key);
      }
      this.#idleLanes = 0;
    }
  }

  /** Gives a lane a new turn, at the back of the rotation. */
  #enterRotation(lane: Lane<T>): void {
    lane.turn = { lane, prev: undefined, next: undefined, removed: false };
    append(this.#rotation, lane.turn);
  }

  #refuseTwice(item: T): void {
    if (this.#nodes.has(item)) throw new TypeError("Cannot queue a job twice");
  }
}
