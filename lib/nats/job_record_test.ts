import assert from "node:assert/strict";
import { blankResult } from "../job.ts";
import { NatsServer, natsSkipReason } from "../../cli/_nats_server.ts";
import {
  claimRecord,
  endQueued,
  finishRecord,
  readRecord,
  recordQueued,
} from "./job_record.ts";
import { NatsCluster } from "./nats_cluster.ts";

const ignore = natsSkipReason !== undefined;
// deno-lint-ignore no-console
if (ignore) console.log(`skipping: ${natsSkipReason}`);

async function withCluster(
  test: (cluster: NatsCluster) => Promise<void>,
): Promise<void> {
  await using server = await NatsServer.start();
  await using cluster = await NatsCluster.connect({ servers: [server.url] });
  await test(cluster);
}

function delivered(id = crypto.randomUUID()) {
  return { id, client: "alice", language: "bash", acceptedAt: Date.now() };
}

/** The record a master writes as it puts `job` in the stream. */
function putQueued(
  jobs: NatsCluster["jobs"],
  job: ReturnType<typeof delivered>,
): Promise<void> {
  return recordQueued(jobs, {
    ...job,
    state: "queued",
    attempt: 0,
    node: null,
    startedAt: 0,
  });
}

const ok = (id: string, stdout: string) =>
  blankResult(id, { verdict: "ok", stdout, exitCode: 0 });

Deno.test({
  name:
    "job record: only the attempt that started last may end a job, and only once",
  ignore,
  fn: () =>
    withCluster(async ({ jobs }) => {
      const job = delivered();
      await putQueued(jobs, job);
      const first = await claimRecord(jobs, job, "frozen", 3);
      assert.equal(first.kind, "claimed");
      // The frozen node's ack wait passed: another node takes the job.
      const second = await claimRecord(jobs, job, "survivor", 3);
      assert.equal(second.kind === "claimed" && second.record.attempt, 2);
      assert.equal(
        await finishRecord(jobs, job.id, 2, ok(job.id, "new")),
        true,
      );
      // The frozen node resumes: its result changes nothing.
      assert.equal(
        await finishRecord(jobs, job.id, 1, ok(job.id, "old")),
        false,
      );
      assert.equal(
        await finishRecord(jobs, job.id, 2, ok(job.id, "again")),
        false,
      );
      const found = await readRecord(jobs, job.id);
      assert.equal(found?.record.state, "ended");
      assert.equal(found?.record.result?.stdout, "new");
      assert.equal(found?.record.node, "survivor");
      // Delivered once more (its ack was lost): nothing to run.
      assert.equal((await claimRecord(jobs, job, "third", 3)).kind, "ended");
    }),
});

Deno.test({
  name:
    "job record: a job whose node was lost as many times as allowed ends with internal_error",
  ignore,
  fn: () =>
    withCluster(async ({ jobs }) => {
      const job = delivered();
      for (let attempt = 1; attempt <= 2; attempt++) {
        const claim = await claimRecord(jobs, job, `n${attempt}`, 2);
        assert.equal(claim.kind === "claimed" && claim.record.attempt, attempt);
      }
      const last = await claimRecord(jobs, job, "n3", 2);
      assert.equal(last.kind, "exhausted");
      assert.equal(
        last.kind === "exhausted" && last.result.verdict,
        "internal_error",
      );
      assert.match(
        last.kind === "exhausted" ? last.result.reason ?? "" : "",
        /lost 2 times \(last "n2"\)/,
      );
      assert.equal((await readRecord(jobs, job.id))?.record.state, "ended");
    }),
});

Deno.test({
  name:
    "job record: a cancel ends a waiting job, and a node that pulls it later runs nothing",
  ignore,
  fn: () =>
    withCluster(async ({ jobs }) => {
      const job = delivered();
      await putQueued(jobs, job);
      const cancelled = blankResult(job.id, { reason: "cancelled: by test" });
      assert.equal(await endQueued(jobs, job.id, cancelled), true);
      assert.equal((await claimRecord(jobs, job, "w1", 3)).kind, "ended");
      // Once running, a cancel cannot end it here: its node does.
      const other = delivered();
      await claimRecord(jobs, other, "w1", 3);
      assert.equal(await endQueued(jobs, other.id, cancelled), false);
    }),
});

Deno.test({
  name: "job record: many nodes claiming one job at once start it once",
  ignore,
  fn: () =>
    withCluster(async ({ jobs }) => {
      const job = delivered();
      const claims = await Promise.all(
        Array.from(
          { length: 8 },
          (_, i) => claimRecord(jobs, job, `n${i}`, 10),
        ),
      );
      const attempts = claims.map((c) =>
        c.kind === "claimed" ? c.record.attempt : 0
      );
      // Each claim is its own attempt: none shares a number with another.
      assert.equal(new Set(attempts).size, 8, `${attempts}`);
      const current = Math.max(...attempts);
      const wins = await Promise.all(
        attempts.map((a) => finishRecord(jobs, job.id, a, ok(job.id, `${a}`))),
      );
      assert.deepEqual(wins.filter(Boolean).length, 1);
      assert.equal(
        (await readRecord(jobs, job.id))?.record.result?.stdout,
        `${current}`,
      );
    }),
});

Deno.test({
  name:
    "job record: a result written on the claim's revision wins only while that revision holds",
  ignore,
  fn: () =>
    withCluster(async ({ jobs }) => {
      const job = delivered();
      const first = await claimRecord(jobs, job, "frozen", 3);
      assert.equal(first.kind, "claimed");
      if (first.kind !== "claimed") return;
      const second = await claimRecord(jobs, job, "survivor", 3);
      assert.equal(second.kind, "claimed");
      if (second.kind !== "claimed") return;
      // The frozen node's revision is stale: its write fails, and so does
      // the read that follows (another attempt runs).
      assert.equal(
        await finishRecord(jobs, job.id, 1, ok(job.id, "old"), first),
        false,
      );
      assert.equal(
        await finishRecord(jobs, job.id, 2, ok(job.id, "new"), second),
        true,
      );
      assert.equal(
        (await readRecord(jobs, job.id))?.record.result?.stdout,
        "new",
      );
    }),
});
