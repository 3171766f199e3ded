import assert from "node:assert/strict";
import { JobHistory } from "../history/job_history.ts";
import { MasterNode } from "../nodes/master_node.ts";
import { JobTracker, type StreamEvent } from "./job_tracker.ts";

Deno.test("JobTracker keeps a job's output within its bound and tells a late follower what it dropped", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    resourceLogIntervalMs: 0,
  });
  using history = new JobHistory();
  using tracker = new JobTracker(master, history, { maxBufferedOutput: 10 });
  tracker.feed({ type: "accepted", ref: "r", jobId: "j" });
  tracker.feed({ type: "started", jobId: "j", node: "n" });
  // A rogue node may send chunks past any limit: four of 4 units each.
  for (const data of ["aaaa", "bbbb", "cccc", "dddd"]) {
    tracker.feed({ type: "output", jobId: "j", stream: "stdout", data });
  }
  const heard: StreamEvent[] = [];
  tracker.follow("j", (event) => heard.push(event));
  assert.deepEqual(heard.map((e) => e.type), [
    "accepted",
    "started",
    "truncated",
    "output",
    "output",
  ]);
  assert.deepEqual(heard[2], { type: "truncated", jobId: "j", dropped: 8 });
  assert.deepEqual(
    heard.slice(3).map((e) => e.type === "output" && e.data),
    ["cccc", "dddd"],
  );
});
