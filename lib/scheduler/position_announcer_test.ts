import assert from "node:assert/strict";
import { FairQueue } from "./fair_queue.ts";
import { FifoQueue } from "./job_queue.ts";
import { FRONT_POSITIONS, PositionAnnouncer } from "./position_announcer.ts";

/**
 * A queue of `length` jobs from `clients` clients (job `c3#17` is client
 * 3's), an announcer over it that records what it tells, and a drain that
 * serves the front job and updates after every change: the worst case, one
 * update per dequeue.
 */
function draining(length: number, clients: number) {
  const queue = new FairQueue<string>((job) => job.split("#")[0]!);
  for (let i = 0; i < length; i++) queue.push(`c${i % clients}#${i}`);
  /** How many positions the announcer computed (walked and handed over). */
  let computed = 0;
  /** What each job was told, in order, moves only, as a client hears it. */
  const heard = new Map<string, number[]>();
  let sent = 0;
  const announcer = new PositionAnnouncer({
    queue,
    tell: (job, position) => {
      computed++;
      const positions = heard.get(job) ?? [];
      if (positions.at(-1) === position) return;
      positions.push(position);
      heard.set(job, positions);
      sent++;
    },
  });
  const drain = () => {
    for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
      announcer.changed(true);
      announcer.announce();
    }
    announcer.close();
  };
  return {
    drain,
    heard,
    get computed() {
      return computed;
    },
    get sent() {
      return sent;
    },
  };
}

Deno.test("PositionAnnouncer: draining a queue computes a bounded number of positions per dequeue, however long the queue", () => {
  // Telling everyone after every dequeue, as before, computes n(n-1)/2.
  for (const length of [100, 1_000, 10_000]) {
    const run = draining(length, 7);
    run.drain();
    const perDequeue = run.computed / length;
    assert.ok(
      perDequeue <= FRONT_POSITIONS + 1,
      `${length} waiting: ${run.computed} positions computed, ${perDequeue} per dequeue`,
    );
    assert.ok(run.sent <= run.computed);
  }
});

Deno.test("PositionAnnouncer: a job at the back of a long queue sees its position fall, down to 1", () => {
  const run = draining(10_000, 10_000);
  run.drain();
  const last = run.heard.get("c9999#9999")!;
  // Told as the queue halves, then every move through the front.
  assert.deepEqual(last.slice(0, 3), [5000, 2500, 1250]);
  assert.deepEqual(last.slice(-FRONT_POSITIONS), [
    10,
    9,
    8,
    7,
    6,
    5,
    4,
    3,
    2,
    1,
  ]);
  assert.deepEqual(last, [...last].sort((a, b) => b - a));
  // Every job that waited reached the front and heard so.
  for (const [job, positions] of run.heard) {
    assert.equal(positions.at(-1), 1, `${job}: ${positions}`);
  }
});

Deno.test("PositionAnnouncer coalesces changes: one update per interval, after them", async () => {
  const queue = new FifoQueue<string>();
  for (const job of ["a", "b", "c"]) queue.push(job);
  const told: [string, number][] = [];
  const lastTold = Promise.withResolvers<void>();
  const announcer = new PositionAnnouncer({
    queue,
    intervalMs: 1,
    tell: (job, position) => {
      told.push([job, position]);
      if (job === "c") lastTold.resolve();
    },
  });
  for (let i = 0; i < 100; i++) announcer.changed(true);
  queue.remove("a");
  announcer.changed(true);
  assert.deepEqual(told, [], "nothing is told until the interval is over");
  await lastTold.promise;
  assert.deepEqual(told, [["b", 1], ["c", 2]]);
  announcer.close();
});

Deno.test("PositionAnnouncer walks the front at every update, and the whole queue once as many changes as jobs moved it", () => {
  const queue = new FifoQueue<number>();
  const walked: number[] = [];
  const announcer = new PositionAnnouncer<number>({
    queue,
    tell: (_, position) => walked.push(position),
  });
  // 30 jobs join at the back: they move no one, and pay for nothing.
  for (let i = 0; i < 30; i++) {
    queue.push(i);
    announcer.changed(false);
  }
  announcer.announce();
  assert.equal(walked.length, FRONT_POSITIONS);
  // 29 changes that moved jobs do not pay for a walk of 30...
  walked.length = 0;
  for (let i = 0; i < 29; i++) announcer.changed(true);
  announcer.announce();
  assert.equal(walked.length, FRONT_POSITIONS);
  // ...the 30th does, and the whole walk spends them all.
  walked.length = 0;
  announcer.changed(true);
  announcer.announce();
  assert.equal(walked.length, 30);
  walked.length = 0;
  announcer.changed(true);
  announcer.announce();
  assert.equal(walked.length, FRONT_POSITIONS);
  announcer.close();
});

Deno.test("PositionAnnouncer: a listener that moves the queue mid-update stops it; the next update tells the truth", async () => {
  const queue = new FifoQueue<string>();
  for (const job of ["a", "b", "c", "d"]) queue.push(job);
  const told = new Map<string, number>();
  let cancelled = false;
  const settled = Promise.withResolvers<void>();
  const announcer = new PositionAnnouncer<string>({
    queue,
    intervalMs: 1,
    tell: (job, position) => {
      told.set(job, position);
      // Told it is next, "b"'s client cancels "c" at once.
      if (job === "b" && !cancelled) {
        cancelled = true;
        queue.remove("c");
        announcer.changed(true);
      }
      if (cancelled && job === "d" && position === 2) settled.resolve();
    },
  });
  queue.shift();
  announcer.changed(true);
  announcer.announce();
  // It stopped after "b": "c" and "d" were not told stale positions.
  assert.deepEqual([...told], [["b", 1]]);
  await settled.promise;
  assert.deepEqual([...told], [["b", 1], ["d", 2]]);
  announcer.close();
});

Deno.test("PositionAnnouncer refuses an interval out of range, and tells nothing once closed", () => {
  const queue = new FifoQueue<string>();
  const tell = () => assert.fail("closed");
  for (const intervalMs of [0, -1, 1.5, 60_001]) {
    assert.throws(
      () => new PositionAnnouncer({ queue, tell, intervalMs }),
      RangeError,
    );
  }
  const announcer = new PositionAnnouncer({ queue, tell, intervalMs: 1 });
  queue.push("a");
  announcer.close();
  announcer.changed(true); // would schedule an update, were it open
});
