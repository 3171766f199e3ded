/**
 * kiln on NATS JetStream as an operator runs it: real `nats-server`
 * processes on loopback (JetStream on, a temporary store), masters and
 * secondaries started by the real CLI with `--nats`, programs submitted
 * over TCP. Nodes and servers are killed and frozen for real; tests wait
 * on events and messages, never on time.
 */
import assert from "node:assert/strict";
import {
  type MasterProcess,
  readLines,
  type SecondaryProcess,
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import {
  type JobEvent,
  type JobResult,
  KilnClient,
  submitProgram,
} from "../mod.ts";
import { NatsCluster } from "../lib/nats/nats_cluster.ts";
import { readRecord } from "../lib/nats/job_record.ts";
import {
  NatsServer,
  natsSkipReason,
  startNatsCluster,
} from "../cli/_nats_server.ts";
import {
  bash,
  killLeftovers,
  stuckOn,
  track,
  unsandboxed,
} from "./_tracked_jobs.ts";

const ignore = natsSkipReason !== undefined;
// deno-lint-ignore no-console
if (ignore) console.log(`skipping: ${natsSkipReason}`);

/** A node silent this long loses its job to another: short, for tests. */
const ACK_WAIT_MS = "1500";

function master(nats: string, ...args: string[]): Promise<MasterProcess> {
  return startMasterProcess({
    args: ["--nats", nats, "--node-timeout", "3000", ...args],
    stderr: "null",
  });
}

/** The flags of a test secondary on NATS: 2 slots, bash, a short ack wait. */
function secondaryArgs(name: string, ...args: string[]): string[] {
  return [
    "--name",
    name,
    "--slots",
    "2",
    "--languages",
    "bash",
    "--nats-ack-wait",
    ACK_WAIT_MS,
    ...args,
  ];
}

function secondary(
  nats: string,
  name: string,
  ...args: string[]
): Promise<SecondaryProcess> {
  return startSecondaryProcess(nats, {
    args: secondaryArgs(name, ...args),
    stderr: "null",
  });
}

/** Waits until the master's status lists `count` nodes. */
async function nodesSeen(address: string, count: number): Promise<void> {
  const { getClusterStatus } = await import("../mod.ts");
  while ((await getClusterStatus({ master: address })).nodes.length < count) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test({
  name: "nats: a job submitted to a master runs on a secondary that pulls it",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    await using m = await master(server.url);
    await using _w = await secondary(server.url, "puller");
    await nodesSeen(m.address, 1);
    const job = track(m.address, bash("echo hello from nats"));
    const result = await job.result;
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "hello from nats\n");
    assert.equal(result.node, "puller");
    const types = job.events.map((event) => event.type);
    assert.deepEqual(types.slice(0, 2), ["accepted", "started"]);
    assert.equal(types.at(-1), "result");
  },
});

Deno.test({
  name:
    "nats: a secondary killed mid-job loses nothing: its jobs are delivered again and finish elsewhere",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    await using m = await master(server.url);
    await using doomed = await secondary(server.url, "doomed", ...unsandboxed);
    await nodesSeen(m.address, 1);
    // Only the doomed node runs at first: both jobs land on it.
    const jobs = [0, 1].map((i) =>
      track(m.address, stuckOn("doomed", `echo done ${i}`), `c${i}`)
    );
    await Promise.all(jobs.map((job) => job.next((e) => e.type === "output")));
    await using _survivor = await secondary(server.url, "survivor");
    doomed.child.kill("SIGKILL");
    try {
      const results = await Promise.all(jobs.map((job) => job.result));
      results.forEach((result, i) => {
        assert.equal(result.verdict, "ok", result.reason);
        assert.equal(result.stdout, `done ${i}\n`);
        assert.equal(result.node, "survivor");
      });
      for (const job of jobs) {
        const restarted = job.events.filter((e) => e.type === "restarted");
        assert.equal(restarted.length, 1, JSON.stringify(job.events));
        assert.equal(job.events.filter((e) => e.type === "result").length, 1);
      }
    } finally {
      killLeftovers(
        jobs.flatMap((job) =>
          job.events.flatMap((e) => e.type === "output" ? [e.data] : [])
        ),
      );
    }
  },
});

Deno.test({
  name:
    "nats: a frozen secondary's jobs finish elsewhere after the ack wait, and its late results change nothing",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    await using m = await master(server.url);
    const frozen = await startSecondaryProcess(server.url, {
      args: secondaryArgs("frozen", ...unsandboxed),
      stderr: "piped",
    });
    const frozenLog = readLines(frozen.child.stderr!);
    try {
      await nodesSeen(m.address, 1);
      // On the frozen node a job waits for a file the test writes once
      // the job ran elsewhere, then ends "late"; elsewhere it ends at once.
      const gate = await Deno.makeTempFile();
      await Deno.remove(gate);
      const script = (i: number) =>
        `if tr '\\0' ' ' < /proc/$PPID/cmdline 2>/dev/null | grep -q -- "--name frozen "; then echo "pid $$"; while [ ! -e ${gate} ]; do sleep 0.05; done; echo late ${i}; exit 0; fi\necho done ${i}`;
      const jobs = [0, 1].map((i) =>
        track(m.address, bash(script(i)), `c${i}`)
      );
      await Promise.all(
        jobs.map((job) => job.next((e) => e.type === "output")),
      );
      frozen.child.kill("SIGSTOP");
      await using _survivor = await secondary(server.url, "survivor");
      const results = await Promise.all(jobs.map((job) => job.result));
      results.forEach((result, i) => {
        assert.equal(result.verdict, "ok", result.reason);
        assert.equal(result.stdout, `done ${i}\n`);
        assert.equal(result.node, "survivor");
      });
      // Resumed, the frozen node finishes its copies; their results are dropped.
      await Deno.writeTextFile(gate, "");
      frozen.child.kill("SIGCONT");
      let dropped = 0;
      for (let line = await frozenLog.next(); !line.done && dropped < 2;) {
        if (/its result is dropped/.test(line.value)) dropped++;
        if (dropped < 2) line = await frozenLog.next();
      }
      assert.equal(dropped, 2);
      await using cluster = await NatsCluster.connect({
        servers: [server.url],
      });
      for (const [i, result] of results.entries()) {
        const found = await readRecord(cluster.jobs, result.jobId);
        assert.equal(found?.record.state, "ended");
        assert.equal(found?.record.result?.stdout, `done ${i}\n`);
        assert.equal(found?.record.result?.node, "survivor");
      }
      await Deno.remove(gate);
    } finally {
      frozen.child.kill("SIGCONT");
      await frozen.stop();
      (async () => {
        for (
          let l = await frozenLog.next();
          !l.done;
          l = await frozenLog.next()
        );
      })();
    }
  },
});

Deno.test({
  name:
    "nats: a burst from one client does not starve another across two masters",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    await using m1 = await master(server.url, "--name", "m1");
    await using m2 = await master(server.url, "--name", "m2");
    await using _w = await secondary(server.url, "solo", "--slots", "1");
    await Promise.all([nodesSeen(m1.address, 1), nodesSeen(m2.address, 1)]);
    const finished: string[] = [];
    const run = (address: string, client: string, i: number) =>
      submitProgram(bash(`sleep 0.1; echo ${client} ${i}`), {
        master: address,
        name: client,
      }).then((result) => {
        assert.equal(result.verdict, "ok", result.reason);
        finished.push(`${client} ${i}`);
        return result;
      });
    const burst = Array.from(
      { length: 20 },
      (_, i) => run(m1.address, "greedy", i),
    );
    // The burst has begun: its first job runs.
    while (finished.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const modest = await run(m2.address, "modest", 0);
    assert.ok(modest);
    await Promise.all(burst);
    const place = finished.indexOf("modest 0");
    // Behind at most the jobs already in the stream or running: a window.
    assert.ok(place <= 4, `modest finished ${place + 1}th of 21: ${finished}`);
  },
});

Deno.test({
  name:
    "nats: a three-server NATS cluster loses no job when a server is killed mid-burst",
  ignore,
  async fn() {
    const servers = await startNatsCluster(3);
    try {
      const urls = servers.map((server) => server.url).join(",");
      await using m = await master(urls, "--nats-replicas", "3");
      await using _a = await secondary(urls, "a", "--nats-replicas", "3");
      await using _b = await secondary(urls, "b", "--nats-replicas", "3");
      await nodesSeen(m.address, 2);
      const results: Promise<JobResult>[] = [];
      for (let i = 0; i < 60; i++) {
        results.push(
          submitProgram(bash(`echo job ${i}`), {
            master: m.address,
            name: `c${i % 6}`,
          }),
        );
        if (i === 20) servers[1]!.kill("SIGKILL");
      }
      const ended = await Promise.all(results);
      ended.forEach((result, i) => {
        assert.equal(result.verdict, "ok", `job ${i}: ${result.reason}`);
        assert.equal(result.stdout, `job ${i}\n`);
      });
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
    }
  },
});

Deno.test({
  name:
    "nats: a master SIGKILLed mid-burst of 200 jobs loses none: each ends with one result, through the other master",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    const doomed = await master(server.url, "--name", "doomed");
    await using survivor = await master(server.url, "--name", "survivor");
    await using _a = await secondary(server.url, "a", "--slots", "4");
    await using _b = await secondary(server.url, "b", "--slots", "4");
    await Promise.all([
      nodesSeen(doomed.address, 2),
      nodesSeen(survivor.address, 2),
    ]);
    // The doomed master first: every job is submitted to it.
    await using client = new KilnClient({
      master: [doomed.address, survivor.address],
      name: "burst",
    });
    const events = new Map<number, JobEvent[]>();
    let ended = 0;
    const killedAt = Promise.withResolvers<void>();
    const jobs = Array.from({ length: 200 }, (_, i) => {
      events.set(i, []);
      return client.submit(bash(`sleep 0.05; echo job ${i}`), {
        onEvent: (event) => events.get(i)!.push(event),
      }).then((result) => {
        if (++ended === 20) killedAt.resolve();
        return result;
      });
    });
    await killedAt.promise;
    doomed.child.kill("SIGKILL");
    await doomed.child.status;
    const results = await Promise.all(jobs);
    results.forEach((result, i) => {
      assert.equal(result.verdict, "ok", `job ${i}: ${result.reason}`);
      assert.equal(result.stdout, `job ${i}\n`);
    });
    // Exactly one result each, and some came through the survivor: the
    // jobs the doomed master had put in the stream were attached there.
    for (const [i, seen] of events) {
      assert.equal(
        seen.filter((e) => e.type === "result").length,
        1,
        `job ${i}`,
      );
    }
    const attached = [...events.values()].filter((seen) =>
      seen.filter((e) => e.type === "accepted").length > 1
    );
    assert.ok(attached.length > 0, "no job was attached again");
    assert.ok(ended >= 200);
  },
});

Deno.test({
  name:
    "nats: the NATS connection's own token comes from --nats-token-file; a wrong one is named at start",
  ignore,
  async fn() {
    await using server = await NatsServer.start({ token: "nats-secret-token" });
    const dir = await Deno.makeTempDir();
    try {
      const good = `${dir}/good`;
      const bad = `${dir}/bad`;
      await Deno.writeTextFile(good, "nats-secret-token\n", { mode: 0o600 });
      await Deno.writeTextFile(bad, "wrong\n", { mode: 0o600 });
      await using m = await master(server.url, "--nats-token-file", good);
      await using _w = await secondary(
        server.url,
        "w",
        "--nats-token-file",
        good,
      );
      await nodesSeen(m.address, 1);
      const result = await submitProgram(bash("echo authorized"), {
        master: m.address,
      });
      assert.equal(result.stdout, "authorized\n");
      // A master with the wrong token does not start, and says why.
      const refused = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../cli/master.ts", import.meta.url).pathname,
          "--port",
          "0",
          "--nats",
          server.url,
          "--nats-token-file",
          bad,
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assert.equal(refused.code, 1);
      assert.match(
        new TextDecoder().decode(refused.stderr),
        /kiln master: Cannot connect to NATS \(nats:\/\/127\.0\.0\.1:\d+\): Authorization Violation/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
