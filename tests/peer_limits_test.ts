/**
 * The master's limits on hostile peers, each with a real master on
 * 127.0.0.1: every limit answers with an `error` message that says what was
 * exceeded, then closes (or, for a job, ends it `rejected` with the reason).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  type JobRequest,
  MasterNode,
  type MasterNodeOptions,
  ProtocolError,
  submitProgram,
} from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { encodeFrame } from "../lib/protocol/frame.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { type Message, PROTOCOL_VERSION } from "../lib/protocol/messages.ts";
import { readFramesUntilEof } from "../lib/protocol/_testing.ts";

const TOKEN = "peer-limits-token";
const MASTER_CLI = fileURLToPath(new URL("../cli/master.ts", import.meta.url));

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    token: TOKEN,
    slots: 0,
    resourceLogIntervalMs: 0,
    ...options,
  });
}

function bash(script: string, extra: Partial<JobRequest> = {}): JobRequest {
  return {
    language: "bash",
    files: [{ name: "main.sh", content: script }],
    ...extra,
  };
}

/** A client connection to `master` that has passed the handshake. */
async function connectClient(
  master: MasterNode,
  options: { token?: string; maxFrameBytes?: number } = {},
): Promise<Connection> {
  const connection = new Connection(
    await Deno.connect(master.addr),
    options.maxFrameBytes === undefined
      ? {}
      : { maxFrameBytes: options.maxFrameBytes },
  );
  await clientHandshake(connection, {
    role: "client",
    token: options.token ?? TOKEN,
  });
  return connection;
}

/** A handshake that must fail: resolves with the master's error. */
async function refusedHandshake(
  master: MasterNode,
  token = TOKEN,
): Promise<ProtocolError> {
  const connection = new Connection(await Deno.connect(master.addr));
  try {
    await clientHandshake(connection, { role: "client", token });
  } catch (error) {
    assert.ok(error instanceof ProtocolError, String(error));
    return error;
  } finally {
    await connection.close();
  }
  assert.fail("the handshake succeeded");
}

/** What the peer said in its `error` message, from a receive that must fail. */
async function peerError(receiving: Promise<Message>): Promise<ProtocolError> {
  try {
    const message = await receiving;
    assert.fail(`expected an error, got ${JSON.stringify(message)}`);
  } catch (error) {
    assert.ok(error instanceof ProtocolError, String(error));
    return error;
  }
}

Deno.test("master drops a silent peer at the handshake timeout, and a stalled one, saying what it waited for", async () => {
  await using master = startMaster({ handshakeTimeoutMs: 200 });
  const silent = await Deno.connect(master.addr);
  assert.deepEqual(await readFramesUntilEof(silent), [{
    type: "error",
    code: "timeout",
    message: "handshake timed out after 200 ms waiting for hello",
  }]);

  const stalled = await Deno.connect(master.addr);
  await stalled.write(encodeFrame({
    type: "hello",
    role: "client",
    minVersion: PROTOCOL_VERSION,
    maxVersion: PROTOCOL_VERSION,
    nonce: btoa("n".repeat(32)),
  }));
  const frames = await readFramesUntilEof(stalled);
  assert.equal(frames.length, 2);
  assert.equal((frames[0] as { type: string }).type, "challenge");
  assert.deepEqual(frames[1], {
    type: "error",
    code: "timeout",
    message: "handshake timed out after 200 ms waiting for auth",
  });
});

Deno.test("master closes an idle client, but not one waiting for its job, and counts from the job's end", async () => {
  await using master = startMaster({ slots: 1, idleTimeoutMs: 300 });
  await master.ready;

  const idle = await connectClient(master);
  const closed = await peerError(idle.receive());
  assert.equal(closed.peerCode, "idle_timeout");
  assert.equal(
    closed.message,
    "master said: closing an idle connection: no message and no job pending for 300 ms",
  );
  await idle.close();

  // The job outlasts several idle timeouts; waiting for it is not idleness.
  const busy = await connectClient(master);
  await busy.send({
    type: "submit",
    ref: "r1",
    job: bash("sleep 1; echo done"),
  });
  let result: Message;
  do result = await busy.receive(); while (result.type !== "result");
  assert.equal(result.result.verdict, "ok");
  assert.equal(result.result.stdout, "done\n");
  // With the result out and nothing else pending, the countdown runs again.
  const after = await peerError(busy.receive());
  assert.equal(after.peerCode, "idle_timeout");
  await busy.close();
});

Deno.test("master refuses a frame over its maximum size from an authenticated client", async () => {
  await using master = startMaster({ maxFrameBytes: 64 * 1024 });
  const client = await connectClient(master, { maxFrameBytes: 1024 * 1024 });
  const jobId = "x".repeat(100_000);
  const bytes = JSON.stringify({ type: "cancel", jobId }).length;
  const refusing = client.receive();
  await client.send({ type: "cancel", jobId });
  const error = await peerError(refusing);
  assert.equal(error.peerCode, "frame_too_large");
  assert.equal(
    error.message,
    `master said: frame of ${bytes} bytes exceeds the limit of 65536 bytes`,
  );
  await client.close();
});

Deno.test("master rejects a program over its size limit and a job with too many files, naming the limit and the size", async () => {
  await using master = startMaster({
    slots: 1,
    maxProgramBytes: 1000,
    maxFiles: 2,
  });
  const submit = (request: JobRequest) =>
    submitProgram(request, { master: master.addr, token: TOKEN });

  const many = await submit({
    language: "bash",
    files: ["a.sh", "b.sh", "c.sh"].map((name) => ({ name, content: "" })),
  });
  assert.equal(many.verdict, "rejected");
  assert.equal(
    many.reason,
    "too many source files: this job has 3; a job may have at most 2 source files",
  );

  const script = "read -r line; echo ${#line} #";
  const big = await submit(
    bash(script.padEnd(600, "x"), { stdin: "y".repeat(500) }),
  );
  assert.equal(big.verdict, "rejected");
  assert.equal(
    big.reason,
    "program too large: 1107 bytes of source files and their names, stdin and arguments; a job may have at most 1000 bytes",
  );

  // Exactly at the limit, with an argument and the file name (7 bytes)
  // counted too: it runs.
  const fits = await submit(
    bash(script.padEnd(600, "x"), { stdin: "y".repeat(391), args: ["zz"] }),
  );
  assert.equal(fits.verdict, "ok", fits.reason);
  assert.equal(fits.stdout, "391\n");
});

Deno.test("master refuses connections over its per-address cap, and admits again once one is let go", async () => {
  await using master = startMaster({ maxConnectionsPerIp: 2 });
  const first = await connectClient(master);
  const second = await connectClient(master);

  const refused = await refusedHandshake(master);
  assert.equal(refused.peerCode, "too_many_connections");
  assert.equal(
    refused.message,
    "master said: too many connections from 127.0.0.1: at most 2 at once; close one and retry",
  );

  // The master closes the first for a message a client may not send; its
  // slot is free before the client hears why.
  const refusing = first.receive();
  await first.send({ type: "welcome", version: 2, node: "impostor" });
  assert.equal((await peerError(refusing)).peerCode, "unexpected_message");
  await first.close();
  const third = await connectClient(master);
  await Promise.all([second.close(), third.close()]);
});

Deno.test("master backs off an address after repeated wrong tokens, saying when to retry", async () => {
  const backoffStarted = Promise.withResolvers<string>();
  await configure({
    sinks: {
      watch: (record: LogRecord) => {
        const text = record.message.map(String).join("");
        if (text.startsWith("refusing connections from")) {
          backoffStarted.resolve(text);
        }
      },
    },
    loggers: [
      {
        category: ["kiln", "master"],
        lowestLevel: "warning",
        sinks: ["watch"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  try {
    await using master = startMaster({
      maxAuthFailures: 3,
      authBackoffMs: 60_000,
    });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const wrong = await refusedHandshake(master, "not-the-token");
      assert.equal(wrong.peerCode, "auth_failed", `attempt ${attempt}`);
    }
    // The master counts a failure after telling the peer: wait until it has.
    assert.equal(
      await backoffStarted.promise,
      "refusing connections from 127.0.0.1 for 60 s after 3 failed authentications",
    );
    // Now even the right token is refused, with the time to retry.
    const refused = await refusedHandshake(master);
    assert.equal(refused.peerCode, "auth_backoff");
    assert.match(
      refused.message,
      /^master said: too many failed authentications from 127\.0\.0\.1: connections are refused for \d+ s more; retry after \d{4}-\d\d-\d\dT[\d:.]+Z$/,
    );
    const retryAt = Date.parse(refused.message.split("retry after ")[1]!);
    assert.ok(retryAt > Date.now(), "the time to retry is in the future");
  } finally {
    await reset();
  }
});

Deno.test("deno task master refuses limit flags it cannot honour, naming them", async () => {
  for (
    const [flags, pattern] of [
      [["--max-files", "300"], /--max-files must be at most 256, got "300"/],
      [
        ["--max-program-size", "2000000", "--max-frame-size", "1000000"],
        /--max-program-size \(2000000\) must not exceed --max-frame-size \(1000000\)/,
      ],
      [
        ["--max-connections-per-ip=-1"],
        /--max-connections-per-ip must be an integer >= 0/,
      ],
    ] as const
  ) {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MASTER_CLI, "--port", "0", "--slots", "0", ...flags],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 2, flags.join(" "));
    assert.match(new TextDecoder().decode(stderr), pattern);
  }
});
