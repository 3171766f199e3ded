import assert from "node:assert/strict";
import { WarmPool } from "./prewarm.ts";

/** A sandbox of the books: a number, with whether it was destroyed. */
interface Made {
  readonly id: number;
  readonly key: string;
  dead: boolean;
  destroyed: boolean;
}

function books(options: {
  perKey: number;
  maxKeys?: number;
  idleMs?: number;
  fail?: (key: string) => boolean;
  quiet?: () => boolean;
}) {
  const made: Made[] = [];
  const pool = new WarmPool<string, Made>({
    ...options,
    make: (key) => {
      if (options.fail?.(key)) {
        return Promise.reject(new Error(`cannot make ${key}`));
      }
      const job = { id: made.length + 1, key, dead: false, destroyed: false };
      made.push(job);
      return Promise.resolve(job);
    },
    destroy: (job) => {
      job.destroyed = true;
      return Promise.resolve();
    },
    usable: (job) => !job.dead,
  });
  return { pool, made };
}

Deno.test("WarmPool makes a key's sandboxes only once the key is asked for, up to perKey", async () => {
  const { pool, made } = books({ perKey: 2 });
  assert.equal(pool.size, 0);
  assert.equal(pool.take("python", "python"), undefined);
  await pool.settled();
  assert.equal(made.length, 2);
  assert.equal(pool.size, 2);
  const first = pool.take("python", "python");
  assert.equal(first?.id, 1);
  await pool.settled();
  assert.equal(made.length, 3, "one made again for the one taken");
  assert.equal(pool.size, 2);
  await pool.close();
});

Deno.test("WarmPool never hands out a sandbox twice, nor one that died", async () => {
  const { pool, made } = books({ perKey: 2 });
  pool.take("c", "c");
  await pool.settled();
  made[0]!.dead = true;
  const taken = pool.take("c", "c");
  assert.equal(taken?.id, 2, "the dead one is skipped");
  assert.ok(made[0]!.destroyed, "and destroyed");
  await pool.settled();
  const seen = new Set<number>();
  for (let i = 0; i < 5; i++) {
    const job = pool.take("c", "c");
    assert.ok(job);
    assert.ok(!seen.has(job.id));
    seen.add(job.id);
    await pool.settled();
  }
  await pool.close();
});

Deno.test("WarmPool with perKey 0 keeps nothing", async () => {
  const { pool, made } = books({ perKey: 0 });
  assert.equal(pool.take("bash", "bash"), undefined);
  await pool.settled();
  assert.equal(made.length, 0);
  await pool.close();
  assert.throws(() => books({ perKey: -1 }), /perKey -1/);
});

Deno.test("WarmPool keeps at most maxKeys keys, dropping the least recently asked for", async () => {
  const { pool, made } = books({ perKey: 1, maxKeys: 2 });
  for (const key of ["a", "b", "a", "c"]) {
    pool.take(key, key);
    await pool.settled();
  }
  // "b" was asked for least recently when "c" came.
  const byKey = (key: string) => made.filter((job) => job.key === key);
  assert.ok(byKey("b").every((job) => job.destroyed));
  assert.ok(byKey("c").some((job) => !job.destroyed));
  assert.equal(pool.size, 2);
  await pool.close();
});

Deno.test("WarmPool drops the sandboxes of a key nobody asked for in idleMs", async () => {
  const { pool, made } = books({ perKey: 1, idleMs: 1 });
  pool.take("java", "java");
  await pool.settled();
  assert.equal(pool.size, 1);
  // The sweep runs every second at the least; wait for it.
  for (let i = 0; i < 40 && pool.size > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(pool.size, 0);
  await pool.settled();
  assert.ok(made[0]!.destroyed);
  await pool.close();
});

Deno.test("WarmPool stops warming a key that keeps failing", async () => {
  let attempts = 0;
  const { pool } = books({
    perKey: 2,
    fail: () => {
      attempts++;
      return true;
    },
  });
  for (let i = 0; i < 5; i++) {
    assert.equal(pool.take("rust", "rust"), undefined);
    await pool.settled();
  }
  assert.equal(attempts, 3, "three failures in a row, then no more tries");
  await pool.close();
});

Deno.test("WarmPool tries a resting key again after idleMs", async () => {
  let failing = true;
  const { pool, made } = books({ perKey: 1, idleMs: 50, fail: () => failing });
  for (let i = 0; i < 3; i++) {
    pool.take("go", "go");
    await pool.settled();
  }
  failing = false;
  pool.take("go", "go");
  await pool.settled();
  assert.equal(made.length, 0, "still resting");
  await new Promise((resolve) => setTimeout(resolve, 60));
  pool.take("go", "go");
  await pool.settled();
  assert.equal(made.length, 1, "tried again once rested");
  await pool.close();
});

Deno.test("WarmPool.close destroys every ready sandbox and any made after", async () => {
  const { pool, made } = books({ perKey: 3 });
  pool.take("go", "go");
  await pool.close();
  assert.equal(made.length > 0, true);
  assert.ok(made.every((job) => job.destroyed));
  assert.equal(pool.take("go", "go"), undefined);
  assert.equal(pool.size, 0);
});

Deno.test("WarmPool makes nothing while the node is busy, and makes up on a nudge once quiet", async () => {
  let busy = true;
  const { pool, made } = books({ perKey: 2, quiet: () => !busy });
  assert.equal(pool.take("python", "python"), undefined);
  await pool.settled();
  assert.equal(made.length, 0, "made while a job ran");
  pool.nudge();
  await pool.settled();
  assert.equal(made.length, 0, "a nudge while busy makes nothing");
  busy = false;
  pool.nudge();
  await pool.settled();
  assert.equal(made.length, 2);
  busy = true;
  assert.equal(pool.take("python", "python")?.id, 1);
  await pool.settled();
  assert.equal(pool.size, 1, "the taken one is made up beside the job");
  busy = false;
  pool.nudge();
  await pool.settled();
  assert.equal(pool.size, 2);
  await pool.close();
});

Deno.test("WarmPool stops making between sandboxes when a job starts", async () => {
  let busy = false;
  let made = 0;
  const pool = new WarmPool<string, number>({
    perKey: 3,
    make: () => {
      made++;
      busy = true; // a job arrives while the first one is made
      return Promise.resolve(made);
    },
    destroy: () => Promise.resolve(),
    usable: () => true,
    quiet: () => !busy,
  });
  pool.take("c", "c");
  await pool.settled();
  assert.equal(made, 1, "went on making while a job ran");
  busy = false;
  pool.nudge();
  await pool.settled();
  assert.equal(made, 2, "one at a time: the job that came stops the rest");
  await pool.close();
});
