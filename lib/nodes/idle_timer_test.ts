import assert from "node:assert/strict";
import { type IdleClock, IdleTimer } from "./idle_timer.ts";

/** A clock the test moves by hand; timers fire in order as it passes them. */
class ManualClock implements IdleClock {
  time = 0;
  #next = 1;
  #timers = new Map<number, { at: number; callback: () => void }>();

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): number {
    const id = this.#next++;
    this.#timers.set(id, { at: this.time + ms, callback });
    return id;
  }

  clearTimeout(id: unknown): void {
    this.#timers.delete(id as number);
  }

  get pending(): number {
    return this.#timers.size;
  }

  advance(ms: number): void {
    const end = this.time + ms;
    while (true) {
      const due = [...this.#timers].filter(([, t]) => t.at <= end)
        .sort(([, a], [, b]) => a.at - b.at)[0];
      if (due === undefined) break;
      const [id, timer] = due;
      this.#timers.delete(id);
      this.time = timer.at;
      timer.callback();
    }
    this.time = end;
  }
}

function watch(timeoutMs: number, isBusy = () => false, graceMs = 0) {
  const clock = new ManualClock();
  const fired: number[] = [];
  const timer = new IdleTimer(timeoutMs, (idleMs) => fired.push(idleMs), {
    isBusy,
    graceMs,
    clock,
  });
  return { clock, fired, timer };
}

Deno.test("IdleTimer fires once the timeout has passed without a touch", () => {
  const { clock, fired } = watch(1000);
  clock.advance(999);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [1000]);
  clock.advance(10_000);
  assert.deepEqual(fired, [1000], "once only");
  assert.equal(clock.pending, 0);
});

Deno.test("IdleTimer counts from the last touch, with one timer however often it is touched", () => {
  const { clock, fired, timer } = watch(1000);
  for (let i = 0; i < 50; i++) {
    clock.advance(100);
    timer.touch();
    assert.equal(clock.pending, 1);
  }
  clock.advance(999);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [1000]);
});

Deno.test("IdleTimer waits while the peer is busy, then counts from its last touch", () => {
  let busy = true;
  const { clock, fired, timer } = watch(1000, () => busy);
  clock.advance(5500);
  assert.deepEqual(fired, [], "a peer waiting for a job is not idle");
  busy = false;
  timer.touch(); // the job's result went out
  clock.advance(999);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [1000]);
});

Deno.test("IdleTimer gives a grace past the timeout, in which a touch starts the countdown again", () => {
  const { clock, fired, timer } = watch(1000, () => false, 200);
  clock.advance(1000);
  assert.deepEqual(fired, [], "the grace has begun");
  // What waited unread while the owner was paused is read in the grace.
  clock.advance(100);
  timer.touch();
  clock.advance(100);
  assert.deepEqual(fired, []);
  clock.advance(899);
  assert.deepEqual(fired, []);
  clock.advance(1); // a whole timeout since the touch: the grace again
  assert.deepEqual(fired, []);
  clock.advance(199);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [1200]);
  assert.equal(clock.pending, 0);
  assert.throws(
    () => new IdleTimer(1000, () => {}, { graceMs: -1 }),
    RangeError,
  );
});

Deno.test("IdleTimer never fires once disposed, nor with timeout 0", () => {
  const { clock, fired, timer } = watch(1000);
  clock.advance(500);
  timer[Symbol.dispose]();
  assert.equal(clock.pending, 0);
  clock.advance(5000);
  assert.deepEqual(fired, []);

  const off = watch(0);
  off.clock.advance(1_000_000);
  assert.deepEqual(off.fired, []);
  assert.equal(off.clock.pending, 0);
  assert.throws(() => new IdleTimer(-1, () => {}), RangeError);
});

Deno.test("IdleTimer runs on real timers by default", async () => {
  const fired = Promise.withResolvers<number>();
  using _timer = new IdleTimer(1, fired.resolve);
  assert.ok(await fired.promise >= 1);
});
