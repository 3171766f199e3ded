import assert from "node:assert/strict";
import { FifoQueue } from "./job_queue.ts";

Deno.test("FifoQueue runs jobs in arrival order", () => {
  const queue = new FifoQueue<string>();
  assert.equal(queue.push("a"), 1);
  assert.equal(queue.push("b"), 2);
  assert.equal(queue.push("c"), 3);
  assert.equal(queue.shift(), "a");
  assert.equal(queue.shift(), "b");
  assert.equal(queue.length, 1);
});

Deno.test("FifoQueue moves everyone behind a removed job up", () => {
  const queue = new FifoQueue<string>();
  for (const item of ["a", "b", "c", "d"]) queue.push(item);
  assert.equal(queue.remove("b"), true);
  assert.equal(queue.remove("zz"), false);
  assert.deepEqual([...queue.entries()], [[1, "a"], [2, "c"], [3, "d"]]);
});

Deno.test("FifoQueue refuses the same job twice and empties cleanly", () => {
  const queue = new FifoQueue<object>();
  const job = {};
  queue.push(job);
  assert.throws(() => queue.push(job), TypeError);
  assert.equal(queue.shift(), job);
  assert.equal(queue.shift(), undefined);
  assert.equal(queue.length, 0);
});

Deno.test("FifoQueue puts restarted jobs before everyone, in the order they came back", () => {
  const queue = new FifoQueue<string>();
  queue.push("a");
  queue.push("b");
  queue.pushFront("r1");
  queue.pushFront("r2");
  assert.equal(queue.length, 4);
  assert.deepEqual([...queue.entries()], [[1, "r1"], [2, "r2"], [3, "a"], [
    4,
    "b",
  ]]);
  assert.equal(queue.push("c"), 5);
  assert.throws(() => queue.pushFront("a"), TypeError);
  assert.throws(() => queue.push("r1"), TypeError);
  assert.equal(queue.remove("r1"), true);
  assert.equal(queue.remove("r1"), false);
  assert.equal(queue.shift(), "r2");
  assert.equal(queue.shift(), "a");
  assert.deepEqual([...queue.entries()], [[1, "b"], [2, "c"]]);
});
