import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { JobHistory, MAX_HISTORY_MAX_AGE_MS } from "./job_history.ts";
import { blankResult } from "../job.ts";

Deno.test("JobHistory lists most recent first and filters", () => {
  using history = new JobHistory();
  history.record(
    blankResult("a", { verdict: "ok", language: "bash", client: "x" }),
  );
  history.record(
    blankResult("b", { verdict: "runtime_error", language: "c", client: "y" }),
  );
  history.record(
    blankResult("c", {
      verdict: "ok",
      language: "c",
      client: "x",
      memoryKb: 12,
      node: "n1",
    }),
  );
  assert.deepEqual(history.list().map((s) => s.jobId), ["c", "b", "a"]);
  assert.deepEqual(history.list({ language: "c" }).map((s) => s.jobId), [
    "c",
    "b",
  ]);
  assert.deepEqual(
    history.list({ verdict: "ok", client: "x", limit: 1 }).map((s) => s.jobId),
    ["c"],
  );
  const c = history.get("c");
  assert.equal(c?.summary.memoryKb, 12);
  assert.equal(c?.summary.node, "n1");
  assert.equal(c?.result.verdict, "ok");
  assert.equal(history.get("nope"), undefined);
});

Deno.test("JobHistory in a file survives reopening", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    {
      using history = new JobHistory({ path });
      history.record(blankResult("kept", { verdict: "ok", language: "bash" }));
    }
    using again = new JobHistory({ path });
    assert.equal(again.get("kept")?.result.language, "bash");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobHistory keeps at most maxJobs, deleting the oldest rows", () => {
  using history = new JobHistory({ maxJobs: 3 });
  for (const id of ["a", "b", "c", "d", "e"]) {
    history.record(blankResult(id, { verdict: "ok", language: "bash" }));
  }
  assert.equal(history.size, 3);
  assert.deepEqual(history.list().map((s) => s.jobId), ["e", "d", "c"]);
  assert.equal(history.get("a"), undefined);
  assert.equal(history.summary("b"), undefined);
});

Deno.test("JobHistory deletes jobs older than maxAgeMs", () => {
  let now = 1_000_000;
  using history = new JobHistory({ maxAgeMs: 1000, now: () => now });
  history.record(blankResult("old", { verdict: "ok" }));
  now += 600;
  history.record(blankResult("newer", { verdict: "ok" }));
  now += 600; // "old" is 1200 ms old now, "newer" 600
  assert.deepEqual(history.list().map((s) => s.jobId), ["newer"]);
  assert.equal(history.get("old"), undefined);
  assert.equal(history.size, 2, "nothing deleted before the next write");
  history.record(blankResult("newest", { verdict: "ok" }));
  assert.equal(history.size, 2, "the expired row is deleted, not hidden");
  assert.deepEqual(history.list().map((s) => s.jobId), ["newest", "newer"]);
});

Deno.test("JobHistory trims a file from a run with larger bounds when opened", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    {
      using history = new JobHistory({ path });
      for (let i = 0; i < 10; i++) {
        history.record(blankResult(`j${i}`, { verdict: "ok" }));
      }
    }
    using again = new JobHistory({ path, maxJobs: 4 });
    assert.equal(again.size, 4);
    assert.deepEqual(again.list().map((s) => s.jobId), [
      "j9",
      "j8",
      "j7",
      "j6",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobHistory lists and summarises from columns, never parsing a result", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    using history = new JobHistory({ path });
    history.record(blankResult("big", { verdict: "ok", client: "x" }));
    // Another connection makes the stored result huge and unparsable: a
    // summary or listing that parsed it would throw (or stall).
    {
      using other = new DatabaseSync(path);
      other.prepare("UPDATE jobs SET result = ? WHERE job_id = 'big'").run(
        "{" + "\x01".repeat(4 * 1024 * 1024),
      );
    }
    assert.equal(history.summary("big")?.client, "x");
    assert.deepEqual(history.list().map((s) => s.jobId), ["big"]);
    assert.throws(() => history.get("big"), SyntaxError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobHistory stores output as text, cut at maxOutputBytes on a character boundary", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    using history = new JobHistory({ path, maxOutputBytes: 1024 });
    const control = "\x01".repeat(1000);
    history.record(blankResult("small", { verdict: "ok", stdout: control }));
    history.record(blankResult("cut", {
      verdict: "ok",
      stdout: "a".repeat(1022) + "€€",
      stderr: "e",
      compile: {
        verdict: "ok",
        exitCode: 0,
        stdout: "c",
        stderr: "w".repeat(5000),
        timeMs: 1,
        cpuTimeMs: null,
        memoryKb: null,
      },
    }));
    const small = history.get("small")!.result;
    assert.equal(small.stdout, control);
    assert.equal(small.truncated, false);
    const cut = history.get("cut")!.result;
    assert.equal(cut.stdout, "a".repeat(1022), "no half of a euro sign");
    assert.equal(cut.stderr, "e");
    assert.equal(cut.compile?.stdout, "c");
    assert.equal(cut.compile?.stderr, "w".repeat(1024));
    assert.equal(cut.truncated, true);
    // Stored as its own bytes, not as JSON's six-byte \u0001 escapes.
    using db = new DatabaseSync(path);
    const row = db.prepare(
      "SELECT length(CAST(stdout AS BLOB)) AS out, length(result) AS json FROM jobs WHERE job_id = 'small'",
    ).get()!;
    assert.equal(row.out, 1000);
    assert.ok(Number(row.json) < 1000, `result JSON of ${row.json} bytes`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobHistory reads a file of the earlier format, output inside the result", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    {
      using db = new DatabaseSync(path);
      db.exec(`CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE,
        client TEXT NOT NULL, language TEXT NOT NULL, verdict TEXT NOT NULL,
        node TEXT, time_ms REAL NOT NULL, queued_ms REAL NOT NULL,
        memory_kb REAL, finished_at INTEGER NOT NULL, result TEXT NOT NULL)`);
      const result = blankResult("legacy", { verdict: "ok", stdout: "hi\n" });
      db.prepare(
        `INSERT INTO jobs (job_id, client, language, verdict, node, time_ms,
          queued_ms, memory_kb, finished_at, result)
         VALUES ('legacy', 'x', 'bash', 'ok', NULL, 0, 0, NULL, ?, ?)`,
      ).run(Date.now(), JSON.stringify(result));
    }
    using history = new JobHistory({ path });
    assert.equal(history.get("legacy")?.result.stdout, "hi\n");
    history.record(blankResult("new", { verdict: "ok", stdout: "there\n" }));
    assert.equal(history.get("new")?.result.stdout, "there\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobHistory refuses bounds out of range, naming them", () => {
  assert.throws(() => new JobHistory({ maxJobs: 0 }), /maxJobs 0/);
  assert.throws(
    () => new JobHistory({ maxAgeMs: MAX_HISTORY_MAX_AGE_MS + 1 }),
    /maxAgeMs .*1 to/,
  );
  assert.throws(() => new JobHistory({ maxOutputBytes: 1.5 }), RangeError);
});
