import assert from "node:assert/strict";
import { JobHistory } from "./job_history.ts";
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
