import assert from "node:assert/strict";
import { FairQueue } from "./fair_queue.ts";

// Jobs are strings whose first letter is the client: "a1" belongs to "a".
function byLetter(): FairQueue<string> {
  return new FairQueue((job) => job.slice(0, 1));
}

function order<T>(queue: FairQueue<T>): T[] {
  return [...queue.entries()].map(([, item]) => item);
}

function drain<T>(queue: FairQueue<T>): T[] {
  const items: T[] = [];
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
    items.push(item);
  }
  return items;
}

Deno.test("FairQueue interleaves a later client with an earlier burst", () => {
  const queue = byLetter();
  assert.equal(queue.push("a1"), 1);
  assert.equal(queue.push("a2"), 2);
  assert.equal(queue.push("a3"), 3);
  assert.equal(queue.push("b1"), 2);
  assert.deepEqual([...queue.entries()], [
    [1, "a1"],
    [2, "b1"],
    [3, "a2"],
    [4, "a3"],
  ]);
  assert.equal(queue.length, 4);
  assert.deepEqual(drain(queue), ["a1", "b1", "a2", "a3"]);
  assert.equal(queue.length, 0);
  assert.equal(queue.shift(), undefined);
});

Deno.test("FairQueue rotates three clients with bursts", () => {
  const queue = byLetter();
  for (const job of ["a1", "a2", "a3", "a4"]) queue.push(job);
  for (const job of ["b1", "b2"]) queue.push(job);
  for (const job of ["c1", "c2", "c3"]) queue.push(job);
  const expected = ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "c3", "a4"];
  assert.deepEqual(order(queue), expected);
  // A later job of a short list slots into the round it belongs to.
  assert.equal(queue.push("b3"), 8);
  assert.deepEqual(order(queue), [
    "a1",
    "b1",
    "c1",
    "a2",
    "b2",
    "c2",
    "a3",
    "b3",
    "c3",
    "a4",
  ]);
  // A client served moves to the back of the rotation.
  assert.equal(queue.shift(), "a1");
  assert.deepEqual(order(queue).slice(0, 3), ["b1", "c1", "a2"]);
  assert.equal(queue.push("d1"), 4);
  assert.deepEqual(drain(queue), [
    "b1",
    "c1",
    "a2",
    "d1",
    "b2",
    "c2",
    "a3",
    "b3",
    "c3",
    "a4",
  ]);
});

Deno.test("FairQueue recomputes positions after removals in the middle", () => {
  const queue = byLetter();
  for (const job of ["a1", "a2", "a3", "b1", "b2", "c1"]) queue.push(job);
  assert.deepEqual(order(queue), ["a1", "b1", "c1", "a2", "b2", "a3"]);
  assert.equal(queue.remove("b1"), true);
  assert.deepEqual([...queue.entries()], [
    [1, "a1"],
    [2, "b2"],
    [3, "c1"],
    [4, "a2"],
    [5, "a3"],
  ]);
  assert.equal(queue.remove("a2"), true);
  assert.equal(queue.remove("a2"), false);
  assert.equal(queue.remove("zz"), false);
  assert.deepEqual(order(queue), ["a1", "b2", "c1", "a3"]);
  assert.equal(queue.length, 4);
  assert.deepEqual(drain(queue), ["a1", "b2", "c1", "a3"]);
});

Deno.test("FairQueue positions can move backwards", () => {
  const queue = byLetter();
  queue.push("a1");
  queue.push("a2");
  assert.deepEqual([...queue.entries()][1], [2, "a2"]);
  queue.push("b1");
  assert.deepEqual([...queue.entries()][2], [3, "a2"]);
});

Deno.test("FairQueue runs restarted jobs next, whatever their client, in the order they came back", () => {
  const queue = byLetter();
  for (const job of ["a1", "a2", "b1"]) queue.push(job);
  queue.pushFront("b0");
  queue.pushFront("c0");
  assert.equal(queue.length, 5);
  assert.deepEqual(order(queue), ["b0", "c0", "a1", "b1", "a2"]);
  assert.equal(queue.push("c1"), 5);
  assert.throws(() => queue.pushFront("a1"), TypeError);
  assert.throws(() => queue.push("b0"), TypeError);
  assert.equal(queue.remove("b0"), true);
  assert.equal(queue.remove("b0"), false);
  assert.equal(queue.shift(), "c0");
  // Restarted jobs did not move their clients in the rotation.
  assert.deepEqual(drain(queue), ["a1", "b1", "c1", "a2"]);
});

Deno.test("FairQueue forgets a client that leaves and rotates it in again", () => {
  const queue = byLetter();
  for (const job of ["a1", "b1", "b2", "b3", "a2", "c1"]) queue.push(job);
  assert.deepEqual(order(queue), ["a1", "b1", "c1", "a2", "b2", "b3"]);
  // Client b disconnects: all its jobs go.
  for (const job of ["b1", "b2", "b3"]) assert.equal(queue.remove(job), true);
  assert.deepEqual(order(queue), ["a1", "c1", "a2"]);
  // It comes back and joins the back of the rotation.
  assert.equal(queue.push("b4"), 3);
  assert.equal(queue.push("b5"), 5);
  assert.deepEqual(order(queue), ["a1", "c1", "b4", "a2", "b5"]);
  assert.deepEqual(drain(queue), ["a1", "c1", "b4", "a2", "b5"]);
});

Deno.test("FairQueue accepts any value with any key", () => {
  interface Job {
    client: string;
  }
  const queue = new FairQueue<Job>((job) => job.client);
  const x1 = { client: "x" };
  const x2 = { client: "x" };
  const y1 = { client: "y" };
  queue.push(x1);
  queue.push(x2);
  queue.push(y1);
  assert.throws(() => queue.push(x1), TypeError);
  assert.deepEqual(order(queue), [x1, y1, x2]);
});

// The model the queue must agree with, written the obvious way: arrays,
// copied on clone, O(n) wherever that is simplest.
class ReferenceQueue {
  front: string[] = [];
  lists = new Map<string, string[]>();
  rotation: string[] = [];

  constructor(readonly keyOf: (item: string) => string) {}

  clone(): ReferenceQueue {
    const copy = new ReferenceQueue(this.keyOf);
    copy.front = [...this.front];
    for (const [key, list] of this.lists) copy.lists.set(key, [...list]);
    copy.rotation = [...this.rotation];
    return copy;
  }

  has(item: string): boolean {
    return this.front.includes(item) ||
      [...this.lists.values()].some((list) => list.includes(item));
  }

  push(item: string): void {
    const key = this.keyOf(item);
    const list = this.lists.get(key);
    if (list) list.push(item);
    else {
      this.lists.set(key, [item]);
      this.rotation.push(key);
    }
  }

  pushFront(item: string): void {
    this.front.push(item);
  }

  shift(): string | undefined {
    if (this.front.length > 0) return this.front.shift();
    const key = this.rotation.shift();
    if (key === undefined) return undefined;
    const list = this.lists.get(key)!;
    const item = list.shift();
    if (list.length > 0) this.rotation.push(key);
    else this.lists.delete(key);
    return item;
  }

  remove(item: string): boolean {
    const index = this.front.indexOf(item);
    if (index !== -1) {
      this.front.splice(index, 1);
      return true;
    }
    for (const [key, list] of this.lists) {
      const at = list.indexOf(item);
      if (at === -1) continue;
      list.splice(at, 1);
      if (list.length === 0) {
        this.lists.delete(key);
        this.rotation.splice(this.rotation.indexOf(key), 1);
      }
      return true;
    }
    return false;
  }

  /** What successive shifts would return, leaving this one untouched. */
  dispatchOrder(): string[] {
    const copy = this.clone();
    const items: string[] = [];
    for (let item = copy.shift(); item !== undefined; item = copy.shift()) {
      items.push(item);
    }
    return items;
  }
}

// mulberry32: a tiny seeded PRNG, so a failure replays exactly.
function seededRandom(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("FairQueue entries() always match what shift() would return", () => {
  for (const seed of [1, 2, 3, 42, 2024]) {
    const random = seededRandom(seed);
    const pick = <T>(items: readonly T[]): T =>
      items[Math.floor(random() * items.length)]!;
    const keyOf = (job: string) => job.split("#")[0]!;
    const queue = new FairQueue<string>(keyOf);
    const reference = new ReferenceQueue(keyOf);
    const clients = ["a", "b", "c", "d", "e"];
    let next = 0;
    for (let step = 0; step < 1000; step++) {
      const roll = random();
      const context = `seed ${seed}, step ${step}`;
      if (roll < 0.45) {
        const item = `${pick(clients)}#${next++}`;
        reference.push(item);
        const position = reference.dispatchOrder().indexOf(item) + 1;
        assert.equal(queue.push(item), position, context);
      } else if (roll < 0.5) {
        const item = `${pick(clients)}#${next++}`;
        reference.pushFront(item);
        const position = reference.dispatchOrder().indexOf(item) + 1;
        assert.equal(queue.pushFront(item), position, context);
      } else if (roll < 0.75) {
        assert.equal(queue.shift(), reference.shift(), context);
      } else if (roll < 0.85) {
        // A client leaves: every job it has goes.
        const client = pick(clients);
        for (const item of reference.dispatchOrder()) {
          if (keyOf(item) !== client) continue;
          assert.equal(queue.remove(item), reference.remove(item), context);
        }
      } else {
        // Remove one job, queued or not (already gone, or never pushed).
        const item = `${pick(clients)}#${Math.floor(random() * (next + 3))}`;
        assert.equal(queue.remove(item), reference.remove(item), context);
      }
      const expected = reference.dispatchOrder();
      assert.deepEqual(order(queue), expected, context);
      assert.deepEqual(
        [...queue.entries()].map(([position]) => position),
        expected.map((_, index) => index + 1),
        context,
      );
      assert.equal(queue.length, expected.length, context);
    }
    assert.deepEqual(drain(queue), reference.dispatchOrder());
  }
});

Deno.test("FairQueue.take() serves a client: it goes to the back of the rotation", () => {
  const queue = new FairQueue<string>((item) => item[0]!);
  for (const item of ["a1", "a2", "b1"]) queue.push(item);
  assert.deepEqual([...queue.entries()].map(([, item]) => item), [
    "a1",
    "b1",
    "a2",
  ]);
  // a1 runs (taken, not removed): Bob's turn comes before Alice's next job.
  assert.equal(queue.take("a1"), true);
  assert.deepEqual([...queue.entries()].map(([, item]) => item), ["b1", "a2"]);
  assert.equal(queue.take("a1"), false);
  // A plain remove (a cancelled job) gives no turn away.
  queue.push("a3");
  queue.remove("b1");
  assert.deepEqual([...queue.entries()].map(([, item]) => item), ["a2", "a3"]);
});

Deno.test("FairQueue.values() may be walked while it starts jobs: each once, in dispatch order, a client at its quota passed over", () => {
  const queue = byLetter();
  for (const job of ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3"]) {
    queue.push(job);
  }
  queue.pushFront("r0");
  assert.deepEqual(order(queue), [
    "r0",
    "a1",
    "b1",
    "c1",
    "a2",
    "b2",
    "c2",
    "a3",
    "c3",
  ]);
  // The dispatcher's walk: it takes what it starts (serving the client,
  // who moves to the back of the rotation), and passes over "b" once it
  // is at its quota, after b1.
  const atQuota = new Set<string>();
  const walked: string[] = [];
  for (const job of queue.values(atQuota)) {
    walked.push(job);
    if (job === "b1") atQuota.add("b");
    if (job !== "c2") queue.take(job); // c2 fits no node: it keeps its place.
    if (job === "a2") queue.push("d1"); // a job joins mid-walk
  }
  assert.deepEqual(walked.slice(0, 7), [
    "r0",
    "a1",
    "b1",
    "c1",
    "a2",
    "c2",
    "a3",
  ]);
  assert.equal(new Set(walked).size, walked.length, `walked twice: ${walked}`);
  assert.ok(!walked.includes("b2"), "b was passed over");
  for (const job of walked) {
    assert.equal(queue.remove(job), job === "c2", job);
  }
  assert.deepEqual(order(queue).filter((job) => job !== "d1"), ["b2"]);
});

Deno.test("FairQueue.entries() is live: a job removed before the walk reaches it is not yielded", () => {
  const queue = byLetter();
  for (let i = 0; i < 1000; i++) queue.push(`a${i}`);
  const walk = queue.entries();
  assert.deepEqual(walk.next().value, [1, "a0"]);
  assert.deepEqual(walk.next().value, [2, "a1"]);
  queue.remove("a2");
  assert.deepEqual(walk.next().value, [3, "a3"]);
});

Deno.test("FairQueue keeps its order while thousands of one-job clients come and go", () => {
  const keyOf = (job: string) => job.split("#")[0]!;
  const queue = new FairQueue<string>(keyOf);
  for (const job of ["a#1", "a#2", "a#3", "b#1", "b#2"]) queue.push(job);
  // Each comes, is served and leaves: their empty lanes pile up and are
  // forgotten on the way.
  for (let i = 0; i < 3000; i++) {
    assert.equal(queue.push(`c${i}#1`), 3);
    if (i % 2 === 0) assert.equal(queue.take(`c${i}#1`), true);
    else assert.equal(queue.remove(`c${i}#1`), true);
  }
  assert.equal(queue.length, 5);
  // One of them comes back, and joins the back of the rotation.
  assert.equal(queue.push("c7#2"), 3);
  assert.equal(queue.push("c7#3"), 6);
  // Those that stayed kept their lanes.
  assert.equal(queue.push("a#4"), 8);
  assert.deepEqual(drain(queue), [
    "a#1",
    "b#1",
    "c7#2",
    "a#2",
    "b#2",
    "c7#3",
    "a#3",
    "a#4",
  ]);
});
