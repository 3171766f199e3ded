/**
 * {@linkcode KilnClient} against a real master on 127.0.0.1 (and, where a
 * master must misbehave, a listener that speaks the real handshake): many
 * jobs on one connection, each with its own events, cancel and stdin; a
 * master that restarts; a link that drops; clear errors for a wrong token
 * or protocol version.
 */
import assert from "node:assert/strict";
import type { JobRequest, JobResult } from "./job.ts";
import {
  KilnClient,
  type KilnClientEventMap,
  type KilnClientOptions,
} from "./kiln_client.ts";
import { MasterNode, type MasterNodeOptions } from "./nodes/master_node.ts";
import { Connection } from "./protocol/connection.ts";
import { ProtocolError } from "./protocol/errors.ts";
import {
  type JobEvent,
  type Message,
  MIN_PROTOCOL_VERSION,
  type OutputEvent,
  PROTOCOL_VERSION,
} from "./protocol/messages.ts";
import { serverHandshake, type VersionRange } from "./protocol/handshake.ts";
import { blankResult } from "./job.ts";
import { InputChannel } from "./sandbox/input_channel.ts";

const TOKEN = "kiln-client-test-token";

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    ...options,
  });
}

function connect(
  master: { addr: Deno.NetAddr },
  options: KilnClientOptions = {},
): KilnClient {
  return new KilnClient({ master: master.addr, token: TOKEN, ...options });
}

function bash(script: string, extra: Partial<JobRequest> = {}): JobRequest {
  return {
    language: "bash",
    files: [{ name: "main.sh", content: script }],
    ...extra,
  };
}

/** Prints "ready", then echoes each line it reads until EOF, prefixed. */
const ECHO_LINES = bash(
  'echo ready; while read -r line; do echo "got $line"; done',
);

/** A stdout chunk of `jobId`. */
function output(jobId: string, data: string): OutputEvent {
  return { type: "output", jobId, stream: "stdout", data };
}

/** Resolves with the detail of the next `type` event of `client`. */
function next<K extends keyof KilnClientEventMap>(
  client: KilnClient,
  type: K,
): Promise<KilnClientEventMap[K]["detail"]> {
  return new Promise((resolve) =>
    client.addEventListener(type, (event) => resolve(event.detail), {
      once: true,
    })
  );
}

Deno.test("KilnClient runs 70 jobs at once on one connection, where the master takes one per address", async () => {
  await using master = startMaster({ slots: 2, maxConnectionsPerIp: 1 });
  // The master names a client without a name by its address and port:
  // one name means one connection.
  const connections = new Set<string>();
  master.addEventListener("jobaccepted", (event) => {
    connections.add(event.detail.client);
  });
  await using client = connect(master);
  await client.connect();
  assert.ok(client.connected);
  let deepest = 0;
  const results = await Promise.all(
    Array.from(
      { length: 70 },
      (_, i) =>
        client.submit(bash('echo "job $1"', { args: [String(i)] }), {
          onEvent: (event) => {
            if (event.type === "queued") {
              deepest = Math.max(deepest, event.position);
            }
          },
        }),
    ),
  );
  for (const [i, result] of results.entries()) {
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, `job ${i}\n`);
  }
  assert.equal(connections.size, 1, [...connections].join(", "));
  // They were in flight together: most waited behind the two slots.
  assert.ok(deepest >= 60, `the deepest queue position was ${deepest}`);
});

Deno.test("KilnClient cancels one job and leaves the others on the connection running", async () => {
  await using master = startMaster({ slots: 3 });
  await using client = connect(master);
  const jobIds = new Map<string, string>();
  const cancelled = Promise.withResolvers<JobResult>();
  master.addEventListener("jobcomplete", (event) => {
    if (event.detail.jobId === jobIds.get("b")) cancelled.resolve(event.detail);
  });
  const allReady = Promise.withResolvers<void>();
  let ready = 0;
  const inputs = new Map<string, InputChannel>();
  const stop = new AbortController();
  const jobs = ["a", "b", "c"].map((name) => {
    const input = new InputChannel();
    inputs.set(name, input);
    return client.submit(ECHO_LINES, {
      input,
      ...name === "b" ? { signal: stop.signal } : {},
      onEvent: (event) => {
        if (event.type === "accepted") jobIds.set(name, event.jobId);
        if (event.type === "output" && event.data === "ready\n") {
          if (++ready === 3) allReady.resolve();
        }
      },
    });
  });
  await allReady.promise; // all three run at once
  stop.abort(new Error("b is not needed"));
  await assert.rejects(jobs[1]!, /^Error: b is not needed$/);
  assert.match(
    (await cancelled.promise).reason ?? "",
    /cancelled by the client/,
  );
  for (const name of ["a", "c"]) {
    inputs.get(name)!.push(`${name}\n`);
    inputs.get(name)!.end();
  }
  assert.equal((await jobs[0]!).stdout, "ready\ngot a\n");
  assert.equal((await jobs[2]!).stdout, "ready\ngot c\n");
  assert.ok(client.connected);
});

Deno.test("KilnClient sends each job's stdin to that job alone, chunks of several jobs interleaved", async () => {
  await using master = startMaster({ slots: 4 });
  await using client = connect(master);
  const names = ["w", "x", "y", "z"];
  const inputs = names.map(() => new InputChannel());
  const allReady = Promise.withResolvers<void>();
  let ready = 0;
  const jobs = names.map((_, i) =>
    client.submit(ECHO_LINES, {
      input: inputs[i]!,
      onEvent: (event) => {
        if (event.type === "output" && event.data === "ready\n") {
          if (++ready === names.length) allReady.resolve();
        }
      },
    })
  );
  await allReady.promise;
  for (const round of [1, 2]) {
    names.forEach((name, i) => inputs[i]!.push(`${name}${round}\n`));
  }
  for (const input of inputs) input.end();
  const results = await Promise.all(jobs);
  names.forEach((name, i) => {
    assert.equal(results[i]!.verdict, "ok", results[i]!.reason);
    assert.equal(results[i]!.stdout, `ready\ngot ${name}1\ngot ${name}2\n`);
  });
});

Deno.test("KilnClient dials again, backing off, until a restarted master listens on its port", async () => {
  let master = startMaster({ slots: 1 });
  const addr = master.addr;
  await using client = connect(master, {
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
    connectAttempts: 1000,
  });
  try {
    let connects = 0;
    client.addEventListener("connected", () => connects++);
    const first = await client.submit(bash("echo one"));
    assert.equal(first.stdout, "one\n");

    const disconnected = next(client, "disconnected");
    await master.shutdown();
    assert.deepEqual(await disconnected, {
      reason: "the master closed the connection",
      master: "master",
      lostJobs: 0,
    });
    assert.ok(!client.connected);

    // Submitted while nothing listens: the dial is refused, and retried.
    const failed = next(client, "connectfailed");
    const second = client.submit(bash("echo two"));
    const { error, retryInMs } = await failed;
    assert.match(error.message, /connection refused/);
    assert.ok(retryInMs >= 20 && retryInMs <= 100, `${retryInMs} ms`);
    master = startMaster({ slots: 1, port: addr.port });
    assert.equal((await second).stdout, "two\n");
    assert.equal(connects, 2);
  } finally {
    await client.close();
    await master.shutdown();
  }
});

/**
 * A listener that completes the real handshake (with `versions`) and then
 * hands each connection to `serve`; `connections` counts them.
 */
function fakeMaster(
  serve: (connection: Connection, index: number) => Promise<void>,
  versions?: VersionRange,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving: Promise<void>[] = [];
  let connections = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      const index = connections++;
      serving.push((async () => {
        const connection = new Connection(conn);
        try {
          await serverHandshake(connection, {
            token: TOKEN,
            node: "fake",
            ...versions ? { versions } : {},
          });
          await serve(connection, index);
        } catch {
          // The test checks what the client saw.
        } finally {
          await connection.close();
        }
      })());
    }
  })();
  return {
    addr: listener.addr,
    get connections() {
      return connections;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(serving);
    },
  };
}

Deno.test("KilnClient sends submissions in the order they were made: those that waited for the connection first, then those sent at once", async () => {
  const received: string[] = [];
  await using master = fakeMaster(async (connection) => {
    for (let i = 0; i < 10; i++) {
      const submit = await connection.receive();
      assert.equal(submit.type, "submit");
      const name = (submit.job as JobRequest).args?.[0] ?? "";
      received.push(name);
      const jobId = `job-${name}`;
      await connection.send({ type: "accepted", ref: submit.ref, jobId });
      await connection.send({
        type: "result",
        jobId,
        result: blankResult(jobId, { verdict: "ok", stdout: `${name}\n` }),
      });
    }
    await connection.receive().catch(() => {}); // until the client hangs up
  });
  await using client = connect(master);
  const submitNumbered = (i: number) =>
    client.submit(bash('echo "$1"', { args: [String(i)] }));
  // Made before the connection is up: they wait in the outbox for it.
  const early = [0, 1, 2, 3, 4].map(submitNumbered);
  await client.connect();
  // Made on a connection with room: they go out at once.
  const late = [5, 6, 7, 8, 9].map(submitNumbered);
  const results = await Promise.all([...early, ...late]);
  const names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
  assert.deepEqual(received, names);
  assert.deepEqual(
    results.map((result) => result.stdout),
    names.map((name) => `${name}\n`),
  );
});

Deno.test("KilnClient lets go of a job's signal once the job has its outcome, a result or a failure", async () => {
  await using master = startMaster({ slots: 1 });
  await using client = connect(master);
  /** A signal that records each listener removed from it. */
  const watched = () => {
    const controller = new AbortController();
    const removed: string[] = [];
    const { signal } = controller;
    const remove = signal.removeEventListener.bind(signal);
    signal.removeEventListener = (
      type: string,
      listener: EventListenerOrEventListenerObject,
      options?: boolean | EventListenerOptions,
    ) => {
      removed.push(type);
      remove(type, listener, options);
    };
    return { controller, removed };
  };
  const done = watched();
  const result = await client.submit(bash("echo once"), {
    signal: done.controller.signal,
  });
  assert.equal(result.stdout, "once\n");
  assert.deepEqual(done.removed, ["abort"]);
  // Too late to cancel anything: the job and the connection are untouched.
  done.controller.abort(new Error("too late"));

  const broken = watched();
  await assert.rejects(
    client.submit(bash("echo hi"), {
      signal: broken.controller.signal,
      onEvent: () => {
        throw new Error("listener bug");
      },
    }),
    /^Error: listener bug$/,
  );
  assert.deepEqual(broken.removed, ["abort"]);
  assert.equal((await client.submit(bash("echo again"))).stdout, "again\n");
  assert.ok(client.connected);
});

Deno.test("KilnClient: close() during a back-off between dials ends it at once; the waiting job rejects", async () => {
  // A port nothing listens on: every dial is refused.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const addr = listener.addr;
  listener.close();
  const client = new KilnClient({
    master: addr,
    token: TOKEN,
    // Long enough that only close() can end the pause within a test.
    reconnectMinMs: 600_000,
    reconnectMaxMs: 600_000,
  });
  const failed = next(client, "connectfailed");
  const waiting = client.submit(bash("true"));
  const { retryInMs } = await failed;
  assert.equal(retryInMs, 600_000);
  const rejected = assert.rejects(
    waiting,
    /^ProtocolError: cannot send: the client is closed$/,
  );
  await client.close();
  await rejected;
  assert.ok(!client.connected);
});

/** Sends `jobId` its result, with `stdout`. */
function sendResult(
  connection: Connection,
  jobId: string,
  stdout: string,
): Promise<void> {
  return connection.send({
    type: "result",
    jobId,
    result: blankResult(jobId, { verdict: "ok", stdout }),
  });
}

/** Waits until the client hangs up. */
async function untilHangUp(connection: Connection): Promise<void> {
  await connection.receive().catch(() => {});
}

/** Each event's type, with the job id it names: `accepted job-0`. */
function eventLine(event: JobEvent): string {
  return `${event.type} ${event.jobId}`;
}

Deno.test("KilnClient: a job whose connection drops is attached again by its id, and its events go on to the same handle", async () => {
  const received: Message[] = [];
  await using master = fakeMaster(async (connection, index) => {
    if (index === 0) {
      const submit = await connection.receive();
      received.push(submit);
      assert.equal(submit.type, "submit");
      await connection.send({ type: "accepted", ref: submit.ref, jobId: "j" });
      await connection.send(output("j", "before\n"));
      return; // the link drops, the job still running
    }
    const attach = await connection.receive();
    received.push(attach);
    assert.equal(attach.type, "attach");
    await connection.send({ type: "accepted", ref: attach.ref, jobId: "j" });
    await connection.send(output("j", "after\n"));
    await sendResult(connection, "j", "before\nafter\n");
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const disconnected = next(client, "disconnected");
  const events: JobEvent[] = [];
  const result = await client.submit(bash("echo"), {
    onEvent: (event) => events.push(event),
  });
  assert.equal(result.stdout, "before\nafter\n");
  assert.deepEqual(events.map(eventLine), [
    "accepted j",
    "output j",
    "accepted j",
    "output j",
    "result j",
  ]);
  assert.deepEqual(received.map((message) => message.type), [
    "submit",
    "attach",
  ]);
  assert.equal(received[1]!.type === "attach" && received[1]!.jobId, "j");
  assert.deepEqual(await disconnected, {
    reason: "the master closed the connection",
    master: "fake",
    lostJobs: 1,
  });
});

Deno.test("KilnClient: a master that does not know the job has it submitted again, the handle told `restarted` and the new id", async () => {
  await using master = fakeMaster(async (connection, index) => {
    const first = await connection.receive();
    if (index === 0) {
      assert.equal(first.type, "submit");
      await connection.send({ type: "accepted", ref: first.ref, jobId: "j0" });
      return;
    }
    assert.equal(first.type, "attach");
    await connection.send({
      type: "unknown_job",
      ref: first.ref,
      jobId: first.jobId,
      reason: "no such job here",
    });
    const again = await connection.receive();
    assert.equal(again.type, "submit");
    assert.deepEqual(again.job, bash("echo again"));
    await connection.send({ type: "accepted", ref: again.ref, jobId: "j1" });
    await sendResult(connection, "j1", "again\n");
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const events: JobEvent[] = [];
  const result = await client.submit(bash("echo again"), {
    onEvent: (event) => events.push(event),
  });
  assert.equal(result.stdout, "again\n");
  assert.equal(result.jobId, "j1");
  assert.deepEqual(events.map(eventLine), [
    "accepted j0",
    "restarted j0",
    "accepted j1",
    "result j1",
  ]);
  const restarted = events[1]!;
  assert.ok(restarted.type === "restarted");
  assert.equal(restarted.attempt, 2);
  const fake = `master "fake" at 127.0.0.1:${master.addr.port}`;
  assert.equal(
    restarted.reason,
    `the connection to ${fake} ended before the result of job j0: the master closed the connection; ` +
      `${fake} does not know job j0: no such job here; submitted again to ${fake}`,
  );
});

Deno.test("KilnClient: a job is submitted at most maxSubmits times, then ends with internal_error naming why", async () => {
  let submits = 0;
  await using master = fakeMaster(async (connection) => {
    // Every master takes the job, then drops the link; none knows it later.
    for (;;) {
      const message = await connection.receive();
      if (message.type === "attach") {
        await connection.send({
          type: "unknown_job",
          ref: message.ref,
          jobId: message.jobId,
          reason: "lost with its master",
        });
        continue;
      }
      assert.equal(message.type, "submit");
      submits++;
      await connection.send({
        type: "accepted",
        ref: message.ref,
        jobId: `j${submits}`,
      });
      return;
    }
  });
  await using client = connect(master);
  const events: JobEvent[] = [];
  const result = await client.submit(bash("echo doomed"), {
    onEvent: (event) => events.push(event),
  });
  assert.equal(submits, 3);
  assert.equal(result.verdict, "internal_error");
  assert.equal(result.jobId, "j3");
  assert.match(
    result.reason ?? "",
    /^the connection to master "fake" at \S+ ended before the result of job j3: the master closed the connection; master "fake" at \S+ does not know job j3: lost with its master; not submitted again: submitted 3 times already, as many as the client allows \(maxSubmits 3\)$/,
  );
  assert.deepEqual(events.map(eventLine), [
    "accepted j1",
    "restarted j1",
    "accepted j2",
    "restarted j2",
    "accepted j3",
    "result j3",
  ]);
  assert.equal(master.connections, 4);
});

Deno.test("KilnClient: a job whose connection is lost more than maxSubmits times ends with internal_error, even if never submitted again", async () => {
  await using master = fakeMaster(async (connection, index) => {
    const message = await connection.receive();
    if (index > 0) return; // takes the attach, then drops the link
    assert.equal(message.type, "submit");
    await connection.send({ type: "accepted", ref: message.ref, jobId: "j" });
  });
  await using client = connect(master, { maxSubmits: 2 });
  const result = await client.submit(bash("true"));
  assert.equal(result.verdict, "internal_error");
  assert.match(
    result.reason ?? "",
    /^the connection to master "fake" at \S+ ended before the result of job j: the master closed the connection; not sent again: its connection was lost 3 times, more than the client allows \(maxSubmits 2\)$/,
  );
  assert.equal(master.connections, 3);
});

Deno.test("KilnClient: a job not yet accepted when the connection drops is submitted again on the next one", async () => {
  const refs: string[] = [];
  await using master = fakeMaster(async (connection, index) => {
    const submit = await connection.receive();
    assert.equal(submit.type, "submit");
    refs.push(submit.ref);
    if (index === 0) return; // dropped before `accepted`
    await connection.send({ type: "accepted", ref: submit.ref, jobId: "j" });
    await sendResult(connection, "j", "second\n");
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const events: JobEvent[] = [];
  const result = await client.submit(bash("echo second"), {
    onEvent: (event) => events.push(event),
  });
  assert.equal(result.stdout, "second\n");
  // The caller never heard of the first: nothing restarted.
  assert.deepEqual(events.map(eventLine), ["accepted j", "result j"]);
  assert.equal(refs.length, 2);
});

Deno.test("KilnClient: stdin typed while a job's connection is down goes out once it is attached again, and only what the master lacks", async () => {
  const stdin: string[] = [];
  const gotLate = Promise.withResolvers<void>();
  const cancel = Promise.withResolvers<Message>();
  await using master = fakeMaster(async (connection, index) => {
    if (index === 0) {
      const submit = await connection.receive();
      assert.equal(submit.type, "submit");
      await connection.send({ type: "accepted", ref: submit.ref, jobId: "j" });
      const early = await connection.receive();
      assert.ok(early.type === "stdin");
      stdin.push(`0:${early.data}`);
      return;
    }
    const attach = await connection.receive();
    assert.equal(attach.type, "attach");
    await connection.send({ type: "accepted", ref: attach.ref, jobId: "j" });
    const late = await connection.receive();
    assert.ok(late.type === "stdin");
    stdin.push(`1:${late.data}`);
    gotLate.resolve();
    cancel.resolve(await connection.receive());
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const input = new InputChannel();
  input.push("early\n");
  // Typed while the link is down: the job waits in the outbox.
  client.addEventListener("disconnected", () => input.push("late\n"), {
    once: true,
  });
  const stop = new AbortController();
  const job = client.submit(bash("cat"), { input, signal: stop.signal });
  await gotLate.promise;
  stop.abort(new Error("not needed"));
  await assert.rejects(job, /^Error: not needed$/);
  assert.deepEqual(await cancel.promise, { type: "cancel", jobId: "j" });
  // Each chunk once: the master that attached the job kept the early one.
  assert.deepEqual(stdin, ["0:early\n", "1:late\n"]);
});

Deno.test("KilnClient: a job submitted again gets its stdin again from the start", async () => {
  const stdin: string[] = [];
  await using master = fakeMaster(async (connection, index) => {
    const first = await connection.receive();
    if (index === 0) {
      assert.equal(first.type, "submit");
      await connection.send({ type: "accepted", ref: first.ref, jobId: "j0" });
      const early = await connection.receive();
      assert.ok(early.type === "stdin");
      stdin.push(`j0:${early.data}`);
      return;
    }
    assert.equal(first.type, "attach");
    await connection.send({
      type: "unknown_job",
      ref: first.ref,
      jobId: first.jobId,
      reason: "gone",
    });
    const again = await connection.receive();
    assert.equal(again.type, "submit");
    await connection.send({ type: "accepted", ref: again.ref, jobId: "j1" });
    for (;;) {
      const chunk = await connection.receive();
      assert.ok(chunk.type === "stdin");
      stdin.push(`j1:${chunk.data}${chunk.eof ? "<eof>" : ""}`);
      if (chunk.eof) break;
    }
    await sendResult(connection, "j1", "early\nlate\n");
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const input = new InputChannel();
  input.push("early\n");
  client.addEventListener("disconnected", () => {
    input.push("late\n");
    input.end();
  }, { once: true });
  const result = await client.submit(bash("cat"), { input });
  assert.equal(result.stdout, "early\nlate\n");
  assert.deepEqual(stdin, [
    "j0:early\n",
    "j1:early\n",
    "j1:late\n",
    "j1:<eof>",
  ]);
});

Deno.test("KilnClient: a job given up while its connection is down is attached on the next one only to be cancelled", async () => {
  const received: Message[] = [];
  const cancelled = Promise.withResolvers<void>();
  await using master = fakeMaster(async (connection, index) => {
    const first = await connection.receive();
    if (index === 0) {
      assert.equal(first.type, "submit");
      await connection.send({ type: "accepted", ref: first.ref, jobId: "j" });
      return;
    }
    received.push(first);
    assert.equal(first.type, "attach");
    await connection.send({ type: "accepted", ref: first.ref, jobId: "j" });
    await connection.send(output("j", "too late\n"));
    received.push(await connection.receive());
    cancelled.resolve();
    await untilHangUp(connection);
  });
  await using client = connect(master);
  const stop = new AbortController();
  client.addEventListener(
    "disconnected",
    () => stop.abort(new Error("given up")),
    { once: true },
  );
  const events: JobEvent[] = [];
  const job = client.submit(bash("sleep 600"), {
    signal: stop.signal,
    onEvent: (event) => events.push(event),
  });
  await assert.rejects(job, /^Error: given up$/);
  await cancelled.promise;
  assert.deepEqual(received, [
    { type: "attach", ref: "1", jobId: "j" },
    { type: "cancel", jobId: "j" },
  ]);
  // Nothing after its outcome reaches the caller.
  assert.deepEqual(events.map(eventLine), ["accepted j"]);
});

Deno.test("KilnClient: a master of protocol 3 is not sent attach: the job is submitted there again", async () => {
  const received: string[] = [];
  await using master = fakeMaster(async (connection, index) => {
    const message = await connection.receive();
    received.push(message.type);
    assert.equal(message.type, "submit");
    const jobId = `j${index}`;
    await connection.send({ type: "accepted", ref: message.ref, jobId });
    if (index === 0) return;
    await sendResult(connection, jobId, "fine\n");
    await untilHangUp(connection);
  }, { min: 3, max: 3 });
  await using client = connect(master);
  const events: JobEvent[] = [];
  const result = await client.submit(bash("echo fine"), {
    onEvent: (event) => events.push(event),
  });
  assert.equal(result.stdout, "fine\n");
  assert.deepEqual(received, ["submit", "submit"]);
  const restarted = events.find((event) => event.type === "restarted");
  assert.match(
    restarted?.type === "restarted" ? restarted.reason : "",
    /master "fake" at \S+ does not know job j0: it speaks protocol version 3, which cannot attach a job; submitted again/,
  );
});

Deno.test("KilnClient: a job given up while its connection is down sends nothing to a master of protocol 3, which cannot have it", async () => {
  const received: string[] = [];
  await using master = fakeMaster(async (connection, index) => {
    const message = await connection.receive();
    received.push(`${index}:${message.type}`);
    if (index > 0) {
      await connection.send({
        type: "cluster_status",
        master: "fake",
        nodes: [],
        queued: 0,
        running: 0,
      });
      return await untilHangUp(connection);
    }
    assert.equal(message.type, "submit");
    await connection.send({ type: "accepted", ref: message.ref, jobId: "j" });
  }, { min: 3, max: 3 });
  await using client = connect(master);
  const stop = new AbortController();
  client.addEventListener(
    "disconnected",
    () => stop.abort(new Error("given up")),
    { once: true },
  );
  const job = client.submit(bash("sleep 600"), { signal: stop.signal });
  await assert.rejects(job, /^Error: given up$/);
  // The next connection carries only what is asked of it after.
  assert.equal((await client.status()).master, "fake");
  assert.deepEqual(received, ["0:submit", "1:get_status"]);
});

Deno.test("KilnClient dials the next master first after a lost connection, though the lost one still listens", async () => {
  await using a = fakeMaster(async (connection, index) => {
    if (index > 0) return await untilHangUp(connection);
    const submit = await connection.receive();
    assert.equal(submit.type, "submit");
    await connection.send({ type: "accepted", ref: submit.ref, jobId: "j" });
  });
  await using b = fakeMaster(async (connection) => {
    const attach = await connection.receive();
    assert.equal(attach.type, "attach");
    await connection.send({ type: "accepted", ref: attach.ref, jobId: "j" });
    await sendResult(connection, "j", "via b\n");
    await untilHangUp(connection);
  });
  await using client = new KilnClient({
    master: [a.addr, b.addr],
    token: TOKEN,
  });
  const result = await client.submit(bash("true"));
  assert.equal(result.stdout, "via b\n");
  assert.equal(a.connections, 1);
  assert.equal(b.connections, 1);
});

Deno.test("KilnClient passes over a master that refuses for the next, and says which it passed over", async () => {
  // A port nothing listens on: every dial is refused.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refusing = `127.0.0.1:${listener.addr.port}`;
  listener.close();
  await using master = startMaster({ slots: 1 });
  for (
    const given of [
      `${refusing},127.0.0.1:${master.addr.port}`,
      [refusing, master.addr],
    ]
  ) {
    await using client = new KilnClient({ master: given, token: TOKEN });
    const failed = next(client, "connectfailed");
    const result = await client.submit(bash("echo second"));
    assert.equal(result.stdout, "second\n");
    const { address, retryInMs, error } = await failed;
    assert.equal(address, refusing);
    assert.equal(retryInMs, 0);
    assert.match(error.message, /connection refused/);
  }
});

Deno.test("KilnClient: with every master refusing, a job rejects after its rounds of dials", async () => {
  const ports = [0, 1].map(() => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    listener.close();
    return listener.addr.port;
  });
  await using client = new KilnClient({
    master: ports.map((port) => `127.0.0.1:${port}`).join(","),
    token: TOKEN,
    connectAttempts: 2,
    reconnectMinMs: 1,
    reconnectMaxMs: 1,
  });
  const dials: string[] = [];
  client.addEventListener("connectfailed", ({ detail }) => {
    dials.push(`${detail.address} ${detail.retryInMs === 0 ? "next" : "wait"}`);
  });
  await assert.rejects(client.submit(bash("true")), /connection refused/);
  const [a, b] = ports.map((port) => `127.0.0.1:${port}`);
  // Two rounds, each dialing both; a pause between them, none after.
  assert.deepEqual(dials, [`${a} next`, `${b} wait`, `${a} next`]);
});

Deno.test("KilnClient checks its masters: an empty address, none, or too many", () => {
  assert.throws(
    () => new KilnClient({ master: "127.0.0.1:1,,127.0.0.1:2" }),
    (error) =>
      error instanceof TypeError &&
      error.message ===
        'Cannot use master "127.0.0.1:1,,127.0.0.1:2": an address in the list is empty',
  );
  assert.throws(() => new KilnClient({ master: [] }), RangeError);
  assert.throws(
    () =>
      new KilnClient({
        master: Array.from({ length: 65 }, (_, i) => `h${i}:7700`),
      }),
    /^RangeError: Cannot use 65 masters: give from 1 to 64$/,
  );
  assert.throws(() => new KilnClient({ maxSubmits: 0 }), RangeError);
  assert.throws(() => new KilnClient({ maxSubmits: 101 }), RangeError);
});

Deno.test("KilnClient fails at once, without dialing again, for a wrong token or another protocol version", async () => {
  {
    await using master = startMaster({ slots: 0 });
    await using client = connect(master, { token: "not-the-token" });
    client.addEventListener("connectfailed", () => assert.fail("retried"));
    // Connecting ahead of the first job shows it as soon.
    await assert.rejects(client.connect(), /wrong token/);
    await assert.rejects(client.submit(bash("true")), (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.code, "auth_failed");
      assert.equal(
        error.message,
        "master said: authentication failed: wrong token",
      );
      return true;
    });
  }
  {
    // A master from the future: it speaks only the version after ours.
    const future = PROTOCOL_VERSION + 1;
    await using master = fakeMaster(() => Promise.resolve(), {
      min: future,
      max: future,
    });
    await using client = connect(master);
    client.addEventListener("connectfailed", () => assert.fail("retried"));
    await assert.rejects(client.submit(bash("true")), (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.code, "version_mismatch");
      assert.equal(
        error.message,
        `master said: protocol version mismatch: client speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}, master speaks ${future}..${future}`,
      );
      return true;
    });
    assert.equal(master.connections, 1);
  }
});

Deno.test("KilnClient holds back submissions while its send buffer is full, instead of overrunning it", async () => {
  await using master = startMaster({ slots: 0 });
  await using client = connect(master);
  // 80 programs of 1 MiB, submitted in one go: more than the 64 MiB a
  // connection lets wait to be written. Each is one byte too large, so the
  // master answers each at once.
  const big = bash("x".repeat(1024 * 1024 + 1 - "main.sh".length));
  const results = await Promise.all(
    Array.from({ length: 80 }, () => client.submit(big)),
  );
  for (const result of results) {
    assert.equal(result.verdict, "rejected");
    assert.match(result.reason ?? "", /^program too large/);
  }
});

Deno.test("KilnClient: a throwing onEvent fails its own job; status shares the connection; close rejects the rest", async () => {
  await using master = startMaster({ slots: 1 });
  const connections = new Set<string>();
  master.addEventListener("jobaccepted", (event) => {
    connections.add(event.detail.client);
  });
  const client = connect(master);
  const broken = client.submit(bash("echo hi"), {
    onEvent: (event) => {
      if (event.type === "accepted") throw new Error("listener bug");
    },
  });
  const fine = client.submit(bash("echo fine"));
  await assert.rejects(broken, /^Error: listener bug$/);
  assert.equal((await fine).stdout, "fine\n");
  const status = await client.status();
  assert.equal(status.master, "master");
  assert.equal(connections.size, 1);

  const started = Promise.withResolvers<void>();
  const waiting = client.submit(bash("echo ready; sleep 60"), {
    onEvent: (event) => {
      if (event.type === "output") started.resolve();
    },
  });
  await started.promise;
  const rejected = assert.rejects(
    waiting,
    /^ProtocolError: the client was closed before the result of job [-0-9a-f]+$/,
  );
  await client.close();
  await rejected;
  await assert.rejects(
    client.submit(bash("true")),
    /^ProtocolError: cannot submit: the client is closed$/,
  );
});
