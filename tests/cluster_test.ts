/**
 * The cluster as an operator runs it: a master process and secondary
 * processes started by the real CLI on 127.0.0.1, programs submitted over
 * TCP. Nodes are killed, frozen and restarted for real; every test waits on
 * events and messages, never on time.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  type KilnProcess,
  type SecondaryProcess,
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import {
  createDefaultRegistry,
  getClusterStatus,
  type JobRequest,
  type JobResult,
  submitProgram,
} from "../mod.ts";
import { processesWithArg, processMarker } from "./_processes.ts";
import {
  bash,
  isQueued,
  isStarted,
  killLeftovers,
  stuckOn,
  track as trackAs,
  unsandboxed,
} from "./_tracked_jobs.ts";
import { sweepStaleWorkRoots } from "../lib/sandbox/work_root.ts";
import { tmpdir } from "node:os";

const TOKEN = "cluster-test-token";

/** A submission to the test cluster, whose events can be awaited. */
function track(address: string, request: JobRequest, client = "tester") {
  return trackAs(address, request, client, TOKEN);
}

function master(...args: string[]): Promise<KilnProcess> {
  return startMasterProcess({
    token: TOKEN,
    args: ["--slots", "0", ...args],
    stderr: "null",
  });
}

function secondary(
  masterAddress: string,
  name: string,
  ...args: string[]
): Promise<SecondaryProcess> {
  return startSecondaryProcess(masterAddress, {
    token: TOKEN,
    args: ["--name", name, "--slots", "2", ...args],
    stderr: "null",
  });
}

Deno.test("cluster: jobs spread over both secondaries under load", async () => {
  await using m = await master();
  await using _a = await secondary(m.address, "alpha");
  await using _b = await secondary(m.address, "beta");
  const jobs = Array.from(
    { length: 4 },
    (_, i) => track(m.address, bash(`echo job ${i}; sleep 600`), `client-${i}`),
  );
  // Four jobs on four slots: all start at once, two on each node.
  const started = await Promise.all(jobs.map((job) => job.next(isStarted)));
  const nodes = started.map((e) => e.type === "started" ? e.node : "").sort();
  assert.deepEqual(nodes, ["alpha", "alpha", "beta", "beta"]);
  for (const job of jobs) job.abort();
  await Promise.allSettled(jobs.map((job) => job.result));
});

Deno.test("cluster: the queue is fair across clients and tells each client its position", async () => {
  await using m = await master();
  await using _only = await secondary(m.address, "solo", "--slots", "1");
  const holder = track(m.address, bash("sleep 600"), "holder");
  await holder.next(isStarted);
  // Each job prints when it started; with one slot they run one after another.
  const job = (client: string, name: string) =>
    track(m.address, bash(`echo ${name} $(date +%s%N)`), client);
  const a1 = job("alice", "a1");
  await a1.next(isQueued);
  const a2 = job("alice", "a2");
  await a2.next((e) => e.type === "queued" && e.position === 2);
  const b1 = job("bob", "b1");
  // Bob's first job goes ahead of Alice's second: a1, b1, a2.
  await b1.next((e) => e.type === "queued" && e.position === 2);
  await a2.next((e) => e.type === "queued" && e.position === 3);
  holder.abort();
  const results = await Promise.all([a1.result, b1.result, a2.result]);
  const order = results.map((r) => r.stdout.trim().split(" ")).sort((x, y) =>
    Number(BigInt(x[1]!) - BigInt(y[1]!))
  );
  assert.deepEqual(order.map(([name]) => name), ["a1", "b1", "a2"]);
  for (const tracked of [a1, b1, a2]) {
    const positions = tracked.events.flatMap((e) =>
      e.type === "queued" ? [e.position] : []
    );
    assert.equal(positions.at(-1), 1, `positions ${positions}`);
  }
  await holder.result.catch(() => {});
});

Deno.test("cluster: a secondary killed mid-job loses nothing: its jobs restart elsewhere, one result each", async () => {
  await using m = await master();
  await using doomed = await secondary(m.address, "doomed", ...unsandboxed);
  await using _b = await secondary(m.address, "survivor");
  const jobs = Array.from(
    { length: 4 },
    (_, i) => track(m.address, stuckOn("doomed", `echo done ${i}`), `c${i}`),
  );
  const started = await Promise.all(jobs.map((job) => job.next(isStarted)));
  const onDoomed = jobs.filter((_, i) => {
    const event = started[i]!;
    return event.type === "started" && event.node === "doomed";
  });
  assert.equal(
    onDoomed.length,
    2,
    "two of four jobs ran on the node that dies",
  );
  // Kill it only once its two jobs are surely running there.
  await Promise.all(
    onDoomed.map((job) => job.next((e) => e.type === "output")),
  );
  doomed.child.kill("SIGKILL");
  try {
    const results = await Promise.all(jobs.map((job) => job.result));
    results.forEach((result, i) => {
      assert.equal(result.verdict, "ok", result.reason);
      assert.equal(result.node, "survivor");
      assert.equal(result.stdout, `done ${i}\n`);
      assert.equal(
        jobs[i]!.events.filter((e) => e.type === "result").length,
        1,
      );
    });
    for (const job of onDoomed) {
      const restarted = job.events.filter((e) => e.type === "restarted");
      assert.equal(restarted.length, 1);
      const [event] = restarted;
      assert.ok(
        event?.type === "restarted" &&
          /node "doomed" was lost/.test(event.reason) && event.attempt === 2,
      );
    }
  } finally {
    // The dead secondary could not kill its jobs, and without a sandbox
    // nothing else will (bubblewrap's --die-with-parent would).
    killLeftovers(
      jobs.flatMap((job) =>
        job.events.flatMap((e) => e.type === "output" ? [e.data] : [])
      ),
    );
  }
  // Nor remove their workdirs: the next kiln process to start sweeps them.
  await sweepStaleWorkRoots();
  assert.deepEqual(
    (await Array.fromAsync(Deno.readDir(tmpdir()))).filter((entry) =>
      entry.name.startsWith(`kiln-${doomed.child.pid}-`)
    ),
    [],
  );
});

Deno.test("cluster: a silent secondary is lost at the deadline and its jobs restart elsewhere", async () => {
  await using m = await master("--node-timeout", "2000");
  await using frozen = await secondary(
    m.address,
    "frozen",
    "--slots",
    "1",
    ...unsandboxed,
  );
  const job = track(m.address, stuckOn("frozen", "echo elsewhere"), "c");
  const first = await job.next(isStarted);
  assert.ok(first.type === "started" && first.node === "frozen");
  await job.next((e) => e.type === "output");
  await using _spare = await secondary(m.address, "spare", "--slots", "1");
  // Freeze the node: no heartbeat, no output, no result, until the master gives up on it.
  frozen.child.kill("SIGSTOP");
  try {
    const result = await job.result;
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.node, "spare");
    assert.equal(result.stdout, "elsewhere\n");
    const restarted = job.events.find((e) => e.type === "restarted");
    assert.ok(
      restarted?.type === "restarted" &&
        /silent for 2000 ms/.test(restarted.reason),
      JSON.stringify(restarted),
    );
  } finally {
    frozen.child.kill("SIGCONT");
    killLeftovers(
      job.events.flatMap((e) => e.type === "output" ? [e.data] : []),
    );
  }
});

Deno.test("cluster: a restarted master is healed by its secondaries reconnecting on their own", async () => {
  const first = await master();
  const port = first.address.split(":").at(-1)!;
  await using node = await secondary(first.address, "faithful");
  assert.equal(
    (await submitProgram(bash("echo before"), {
      master: first.address,
      token: TOKEN,
    })).node,
    "faithful",
  );
  await first.stop();
  await using second = await master("--port", port);
  await node.waitForRegistrations(2);
  const after = await submitProgram(bash("echo after"), {
    master: second.address,
    token: TOKEN,
  });
  assert.equal(after.verdict, "ok", after.reason);
  assert.equal(after.node, "faithful");
  assert.equal(after.stdout, "after\n");
});

Deno.test("cluster: a client that disconnects has its job killed on the secondary", async () => {
  await using m = await master();
  await using _node = await secondary(m.address, "worker", "--slots", "1");
  const mark = processMarker();
  const job = track(m.address, {
    ...bash('(exec -a "$1" sleep 600) & echo started; wait'),
    args: [mark],
  });
  await job.next((e) => e.type === "output");
  assert.notDeepEqual(await processesWithArg(mark), [], "the job is running");
  job.abort();
  await assert.rejects(job.result, /let go/);
  // The slot frees only once the job is dead, so the next job running proves it.
  const next = await submitProgram(bash("echo next"), {
    master: m.address,
    token: TOKEN,
  });
  assert.equal(next.stdout, "next\n");
  assert.deepEqual(
    await processesWithArg(mark),
    [],
    "the job outlived its client",
  );
});

const toolchains = await createDefaultRegistry().detect();
const missing = ["c", "python"].filter((name) =>
  !toolchains.find((t) => t.name === name)?.toolchain.available
);

Deno.test({
  name: "cluster: a python-only secondary never receives a C job",
  ignore: missing.length > 0,
  fn: async () => {
    await using m = await master();
    await using _py = await secondary(
      m.address,
      "py-only",
      "--languages",
      "python",
    );
    const c = {
      language: "c",
      files: [{
        name: "a.c",
        content: '#include <stdio.h>\nint main(void) { puts("c"); }',
      }],
    };
    const rejected = await submitProgram(c, {
      master: m.address,
      token: TOKEN,
    });
    assert.equal(rejected.verdict, "rejected");
    assert.match(
      rejected.reason ?? "",
      /language "c" is not offered by any live node; this cluster offers python$/,
    );
    await using _all = await secondary(m.address, "all-languages");
    const jobs = [
      ...[1, 2, 3].map((i) => track(m.address, c, `c-client-${i}`)),
      track(m.address, {
        language: "python",
        files: [{ name: "a.py", content: "print('py')" }],
      }),
    ];
    const results = await Promise.all(jobs.map((job) => job.result));
    for (const [i, job] of jobs.entries()) {
      assert.equal(results[i]!.verdict, "ok", results[i]!.reason);
      // Never sent to py-only: a refusal there would show as a restart.
      assert.deepEqual(job.events.filter((e) => e.type === "restarted"), []);
      const started = job.events.filter((e) => e.type === "started").map((e) =>
        e.type === "started" && e.node
      );
      if (i < 3) assert.deepEqual(started, ["all-languages"]);
    }
  },
});
if (missing.length > 0) {
  console.log(
    `skipping the language-filter cluster test: no toolchain for ${
      missing.join(", ")
    }`,
  );
}

Deno.test("cluster: a full queue rejects with a reason and a retry hint", async () => {
  await using m = await master("--max-queue", "1");
  await using _node = await secondary(m.address, "narrow", "--slots", "1");
  const running = track(m.address, bash("sleep 600"), "a");
  await running.next(isStarted);
  const waiting = track(m.address, bash("sleep 600"), "b");
  await waiting.next(isQueued);
  const rejected: JobResult = await submitProgram(bash("echo no"), {
    master: m.address,
    token: TOKEN,
  });
  assert.equal(rejected.verdict, "rejected");
  assert.match(
    rejected.reason ?? "",
    /^the queue is full \(1 jobs waiting\); retry in \d+ s$/,
  );
  assert.ok((rejected.retryAfterMs ?? 0) >= 1000);
  running.abort();
  waiting.abort();
  await Promise.allSettled([running.result, waiting.result]);
});

Deno.test("cluster: deno task status shows live numbers", async () => {
  await using m = await master();
  await using _node = await secondary(m.address, "observed", "--slots", "1");
  const statusCli = fileURLToPath(new URL("../cli/status.ts", import.meta.url));
  const status = async () => {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", statusCli, "--master", m.address, "--json"],
      env: { KILN_TOKEN: TOKEN },
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    return JSON.parse(new TextDecoder().decode(stdout));
  };
  const idle = await status();
  assert.equal(idle.running, 0);
  assert.equal(idle.nodes.length, 1);
  const [node] = idle.nodes;
  assert.equal(node.name, "observed");
  assert.equal(node.slots, 1);
  assert.ok(node.languages.some((l: { name: string }) => l.name === "bash"));
  assert.match(node.address, /^127\.0\.0\.1:\d+$/);
  const job = track(m.address, bash("sleep 600"));
  await job.next(isStarted);
  const busy = await status();
  assert.equal(busy.running, 1);
  assert.equal(busy.nodes[0].running, 1);
  job.abort();
  // One slot: this job runs only once the cancelled one is gone.
  await submitProgram(bash("true"), { master: m.address, token: TOKEN });
  const library = await getClusterStatus({ master: m.address, token: TOKEN });
  assert.equal(library.nodes[0]?.running, 0);
  const table = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", statusCli, "--master", m.address],
    env: { KILN_TOKEN: TOKEN },
  }).output();
  assert.match(
    new TextDecoder().decode(table.stdout),
    /^NODE\s+ADDRESS\s+STATE\s+CPU\s+RAM\s+JOBS\s+SANDBOX\s+LANGUAGES\nobserved\s+127\.0\.0\.1:\d+\s+ready/,
  );
});
