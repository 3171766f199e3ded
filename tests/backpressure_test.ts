/**
 * Backpressure against a real master on 127.0.0.1: a client that does not
 * read, and a node that sends more output than its job may have, cannot
 * grow what the master holds. The master's send buffers are read through
 * {@linkcode MasterNode.bufferedBytes}, never guessed from RSS.
 */
import assert from "node:assert/strict";
import {
  type JobEvent,
  type JobRequest,
  MasterNode,
  type MasterNodeOptions,
  submitProgram,
} from "../mod.ts";
import { blankResult } from "../lib/job.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import type { MessageOf } from "../lib/protocol/messages.ts";

const TOKEN = "backpressure-token";

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    token: TOKEN,
    slots: 2,
    resourceLogIntervalMs: 0,
    ...options,
  });
}

/** A bash job that prints `bytes` bytes of `x`. */
function printing(bytes: number, extra: Partial<JobRequest> = {}): JobRequest {
  return {
    language: "bash",
    files: [{
      name: "main.sh",
      content: `head -c ${bytes} /dev/zero | tr '\\0' x`,
    }],
    ...extra,
  };
}

/**
 * A client past the handshake, on a real TCP socket. A `Connection` reads
 * from its socket only inside `receive()`: until a test calls it, this
 * client reads nothing, and TCP holds the master back.
 */
async function silentClient(master: MasterNode): Promise<Connection> {
  const connection = new Connection(await Deno.connect(master.addr));
  await clientHandshake(connection, { role: "client", token: TOKEN });
  return connection;
}

/** Resolves once `count` jobs completed, with the master's send buffers measured at each. */
function completions(
  master: MasterNode,
  count: number,
): Promise<number[]> {
  const buffered: number[] = [];
  const { promise, resolve } = Promise.withResolvers<number[]>();
  master.addEventListener("jobcomplete", () => {
    buffered.push(master.bufferedBytes);
    if (buffered.length === count) resolve(buffered);
  });
  return promise;
}

Deno.test("backpressure: a client that never reads cannot grow the master's send buffer past maxBufferedBytes", async () => {
  const maxBufferedBytes = 4 * 1024 * 1024;
  await using master = startMaster({
    highWaterBytes: 256 * 1024,
    maxBufferedBytes,
  });
  await master.ready;
  const jobs = 12;
  const done = completions(master, jobs);
  const client = await silentClient(master);
  // 12 jobs of 1 MB output, each repeated in its result: 24 MB for a
  // client that reads none of it (the kernel's buffers hold about 4 MB).
  for (let i = 0; i < jobs; i++) {
    await client.send({ type: "submit", ref: `r${i}`, job: printing(1e6) });
  }
  const buffered = await done;
  const peak = Math.max(...buffered);
  assert.ok(
    peak <= maxBufferedBytes,
    `the master buffered ${peak} bytes for one client`,
  );
  // The master closed it, and serves others as before.
  const error = await drain(client);
  assert.ok(error instanceof Error);
  await client.close();
  assert.equal(master.bufferedBytes, 0);
  const after = await submitProgram(printing(10), {
    master: master.addr,
    token: TOKEN,
  });
  assert.equal(after.verdict, "ok");
});

Deno.test("backpressure: live output a client does not read in time is dropped, and its result says truncated", async () => {
  const highWaterBytes = 64 * 1024;
  await using master = startMaster({
    slots: 1,
    highWaterBytes,
    limits: { outputBytes: 8 * 1024 * 1024 },
  });
  await master.ready;
  const done = completions(master, 1);
  const client = await silentClient(master);
  // 6 MB: more than the kernel's buffers and the high-water mark together.
  await client.send({ type: "submit", ref: "r", job: printing(6e6) });
  const [buffered] = await done;
  // Past the mark only the result waits: the output was not kept.
  assert.ok(
    buffered! < highWaterBytes + 6e6 + 4096,
    `${buffered} bytes buffered`,
  );

  let streamed = 0;
  let result: MessageOf<"result"> | undefined;
  for await (const message of client) {
    if (message.type === "output") streamed += message.data.length;
    if (message.type === "result") {
      result = message;
      break;
    }
  }
  assert.ok(result);
  assert.equal(result.result.verdict, "ok");
  assert.equal(result.result.truncated, true);
  assert.equal(result.result.stdout.length, 6e6);
  assert.ok(streamed < 6e6, `all ${streamed} characters were streamed`);
  await client.close();
});

Deno.test("backpressure: a node sending more output than its job may have is not relayed past the job's output limit", async () => {
  await using master = startMaster({ slots: 0 });
  const rogue = new Connection(await Deno.connect(master.addr));
  await clientHandshake(rogue, { role: "secondary", token: TOKEN });
  await rogue.send({
    type: "register",
    id: crypto.randomUUID(),
    name: "rogue",
    languages: [{ name: "bash", version: "5", aliases: [], extensions: [] }],
    slots: 1,
    maxCpu: 100,
    maxRam: 100,
  });
  assert.equal((await rogue.receive()).type, "registered");
  // Answers its job with 20 chunks of 256 KiB: 5 MiB for a 64 KiB limit.
  const answering = (async () => {
    for await (const message of rogue) {
      if (message.type !== "run") continue;
      const { jobId } = message;
      const data = "x".repeat(256 * 1024);
      for (let i = 0; i < 20; i++) {
        await rogue.send({ type: "output", jobId, stream: "stdout", data });
      }
      await rogue.send({
        type: "result",
        jobId,
        result: blankResult(jobId, { verdict: "ok", language: "bash" }),
      });
    }
  })();

  let relayed = 0;
  const outputBytes = 64 * 1024;
  const result = await submitProgram(printing(1, { limits: { outputBytes } }), {
    master: master.addr,
    token: TOKEN,
    onEvent: (event: JobEvent) => {
      if (event.type === "output") relayed += event.data.length;
    },
  });
  assert.equal(result.node, "rogue");
  assert.equal(relayed, outputBytes);
  assert.equal(result.truncated, true);
  await rogue.close();
  await answering;
});

/** Reads until the connection ends; resolves with how it ended. */
async function drain(connection: Connection): Promise<unknown> {
  try {
    while (true) await connection.receive();
  } catch (error) {
    return error;
  }
}
