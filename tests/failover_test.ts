/**
 * A client given several masters, against real masters on 127.0.0.1: the
 * master it submitted to is SIGKILLed mid-job and the job ends with exactly
 * one result through the other; `attach` as a standalone master answers
 * it; a client of protocol 3 is served as before.
 */
import assert from "node:assert/strict";
import { type MasterProcess, startMasterProcess } from "../cli/_processes.ts";
import {
  type JobEvent,
  type JobRequest,
  KilnClient,
  MasterNode,
  submitProgram,
} from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { InputChannel } from "../lib/sandbox/input_channel.ts";
import { sweepStaleWorkRoots } from "../lib/sandbox/work_root.ts";
import { processesWithArg, processMarker } from "./_processes.ts";

const TOKEN = "failover-test-token";

function masterProcess(name: string): Promise<MasterProcess> {
  return startMasterProcess({
    token: TOKEN,
    args: ["--name", name, "--slots", "1"],
    stderr: "null",
  });
}

function bash(script: string, args: string[] = []): JobRequest {
  return {
    language: "bash",
    files: [{ name: "main.sh", content: script }],
    args,
  };
}

/** A job's events as they come, and a way to wait for one. */
class EventLog {
  readonly events: JobEvent[] = [];
  #waiters: {
    test: (event: JobEvent, index: number) => boolean;
    resolve: (index: number) => void;
  }[] = [];

  readonly onEvent = (event: JobEvent): void => {
    const index = this.events.push(event) - 1;
    for (const waiter of [...this.#waiters]) {
      if (!waiter.test(event, index)) continue;
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.resolve(index);
    }
  };

  /** The index of the first event, seen or to come, that passes `test`. */
  find(test: (event: JobEvent, index: number) => boolean): Promise<number> {
    const seen = this.events.findIndex(test);
    if (seen >= 0) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }
}

Deno.test("failover: a client whose master is SIGKILLed mid-job gets its one result through the other master, stdin and all", async () => {
  const mark = processMarker();
  await using a = await masterProcess("a");
  await using b = await masterProcess("b");
  await using client = new KilnClient({
    master: `${a.address},${b.address}`,
    token: TOKEN,
  });
  const log = new EventLog();
  const input = new InputChannel();
  input.push("1\n");
  // It echoes its first line, then waits for the second: alive on "a"
  // when "a" dies. `$1` is the marker, in its command line on the host.
  const job = client.submit(
    bash('read x; echo "x=$x"; read y; echo "y=$y"', [mark]),
    { input, onEvent: log.onEvent },
  );
  try {
    await log.find((e) => e.type === "output");
    a.child.kill("SIGKILL");
    await a.child.status;
    const startedOnB = await log.find((e) =>
      e.type === "started" && e.node === "b"
    );
    // Its first line went to the new run again; the second follows.
    await log.find((e, i) =>
      i > startedOnB && e.type === "output" && e.data.includes("x=1")
    );
    input.push("2\n");
    input.end();
    const result = await job;
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.node, "b");
    assert.equal(result.stdout, "x=1\ny=2\n");
  } finally {
    // Bubblewrap's --die-with-parent ends the job on "a"; nothing may stay.
    for (const pid of await processesWithArg(mark)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
  }
  const kinds = log.events.map((event) =>
    event.type === "started" ? `started ${event.node}` : event.type
  );
  assert.deepEqual(kinds.filter((kind) => kind !== "output"), [
    "accepted",
    "started a",
    "restarted",
    "accepted",
    "started b",
    "result",
  ]);
  const [first, restarted, second] = log.events.filter((event) =>
    event.type === "accepted" || event.type === "restarted"
  );
  assert.ok(first?.type === "accepted" && second?.type === "accepted");
  assert.notEqual(first.jobId, second.jobId);
  assert.ok(restarted?.type === "restarted");
  assert.equal(restarted.jobId, first.jobId);
  assert.equal(restarted.attempt, 2);
  assert.match(
    restarted.reason,
    new RegExp(
      `^the connection to master "a" at ${a.address} ended before the result of job ${first.jobId}: .+; ` +
        `master "b" at ${b.address} does not know job ${first.jobId}: master "b" runs standalone, where a job ends with the connection that submitted it; ` +
        `submitted again to master "b" at ${b.address}$`,
    ),
  );
  // The dead master's workdirs go with the next sweep.
  await sweepStaleWorkRoots();
});

Deno.test("failover: submitProgram with two masters, the first gone, runs the job on the second", async () => {
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const goneAddress = `127.0.0.1:${gone.addr.port}`;
  gone.close();
  await using b = new MasterNode({
    port: 0,
    name: "b",
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const result = await submitProgram(bash("echo here"), {
    master: [goneAddress, b.addr],
    token: TOKEN,
  });
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.node, "b");
});

/** A raw client connection to `master`, speaking protocol versions `min..max`. */
async function rawClient(
  master: MasterNode,
  versions?: { min: number; max: number },
): Promise<{ connection: Connection; version: number }> {
  const connection = new Connection(await Deno.connect(master.addr));
  const { version } = await clientHandshake(connection, {
    role: "client",
    token: TOKEN,
    ...versions ? { versions } : {},
  });
  return { connection, version };
}

Deno.test("attach: a standalone master answers unknown_job, for a job it never had and for one that ended, and serves the link on", async () => {
  await using master = new MasterNode({
    port: 0,
    name: "solo",
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const finished = await submitProgram(bash("echo done"), {
    master: master.addr,
    token: TOKEN,
  });
  assert.equal(finished.verdict, "ok", finished.reason);
  const { connection, version } = await rawClient(master);
  try {
    assert.equal(version, 4);
    const reason =
      'master "solo" runs standalone, where a job ends with the connection that submitted it';
    for (const jobId of ["never-was", finished.jobId]) {
      await connection.send({ type: "attach", ref: jobId, jobId });
      assert.deepEqual(await connection.receive(), {
        type: "unknown_job",
        ref: jobId,
        jobId,
        reason,
      });
    }
    // The link goes on: a submit on it runs.
    await connection.send({ type: "submit", ref: "s", job: bash("echo on") });
    const accepted = await connection.receive();
    assert.equal(accepted.type, "accepted");
    let message = await connection.receive();
    while (message.type !== "result") message = await connection.receive();
    assert.equal(message.result.stdout, "on\n");
  } finally {
    await connection.close();
  }
});

Deno.test("attach: a client of protocol 3 submits and gets its result from a master of protocol 4", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const { connection, version } = await rawClient(master, { min: 3, max: 3 });
  try {
    assert.equal(version, 3);
    await connection.send({ type: "submit", ref: "1", job: bash("echo v3") });
    const types: string[] = [];
    let message = await connection.receive();
    for (; message.type !== "result"; message = await connection.receive()) {
      types.push(message.type);
    }
    assert.equal(types[0], "accepted");
    assert.equal(message.result.stdout, "v3\n");
  } finally {
    await connection.close();
  }
});
