import assert from "node:assert/strict";
import { countTimers } from "../_timer_testing.ts";
import {
  Connection,
  MAX_READ_BUFFER_BYTES,
  MIN_READ_BUFFER_BYTES,
} from "./connection.ts";
import { ProtocolError } from "./errors.ts";
import { encodeFrame } from "./frame.ts";
import type { Message } from "./messages.ts";
import { readFramesUntilEof, socketPair } from "./_testing.ts";

const CANCEL: Message = { type: "cancel", jobId: "j1" };

/** A Connection on the accepted end, and the raw dialing socket to misbehave with. */
async function connectionAndRawPeer(
  options = {},
): Promise<{ connection: Connection; peer: Deno.TcpConn }> {
  const { server, client } = await socketPair();
  return { connection: new Connection(server, options), peer: client };
}

async function connectionPair(): Promise<
  { server: Connection; client: Connection }
> {
  const { server, client } = await socketPair();
  return {
    server: new Connection(server, { peerName: "client" }),
    client: new Connection(client, { peerName: "master" }),
  };
}

/** Waits for `promise` to reject and returns the ProtocolError, checking its code. */
async function rejection(
  promise: Promise<unknown>,
  code: string,
  pattern?: RegExp,
): Promise<ProtocolError> {
  const error = await promise.then(
    (value) =>
      assert.fail(`expected a ${code} error, got ${JSON.stringify(value)}`),
    (error: unknown) => error,
  );
  assert.ok(
    error instanceof ProtocolError,
    `expected a ProtocolError, got ${error}`,
  );
  assert.equal(error.code, code, error.message);
  if (pattern) assert.match(error.message, pattern);
  return error;
}

function raw(body: string, declared?: number): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const frame = new Uint8Array(4 + bytes.length);
  new DataView(frame.buffer).setUint32(0, declared ?? bytes.length);
  frame.set(bytes, 4);
  return frame;
}

Deno.test("Connection sends and receives messages both ways, in order", async () => {
  const { server, client } = await connectionPair();
  assert.match(server.remoteAddr, /^127\.0\.0\.1:\d+$/);
  const outputs: Message[] = Array.from({ length: 50 }, (_, i) => ({
    type: "output",
    jobId: "j1",
    stream: "stdout",
    data: `${i}:${"x".repeat(20_000)}`,
  }));
  // Not awaited one by one: the write chain must keep frames whole and ordered.
  const sending = Promise.all(outputs.map((message) => client.send(message)));
  for (const expected of outputs) {
    assert.deepEqual(await server.receive(), expected);
  }
  await sending;
  await server.send(CANCEL);
  assert.deepEqual(await client.receive(), CANCEL);
  await Promise.all([server.close(), client.close()]);
});

Deno.test("Connection reads a frame written one byte at a time", async () => {
  const { connection, peer } = await connectionAndRawPeer();
  const received = connection.receive();
  for (const byte of encodeFrame(CANCEL)) {
    await peer.write(new Uint8Array([byte]));
  }
  assert.deepEqual(await received, CANCEL);
  peer.close();
  await connection.close();
});

Deno.test("Connection reads several frames written at once", async () => {
  const { connection, peer } = await connectionAndRawPeer();
  const messages: Message[] = [CANCEL, {
    type: "queued",
    jobId: "j1",
    position: 2,
    estimatedWaitMs: 1500,
  }, { type: "started", jobId: "j1", node: "m" }];
  await peer.write(
    new Uint8Array(messages.flatMap((message) => [...encodeFrame(message)])),
  );
  for (const message of messages) {
    assert.deepEqual(await connection.receive(), message);
  }
  peer.close();
  await connection.close();
});

Deno.test("Connection starts with a small read buffer and grows it only for a peer that sends much", async () => {
  const { server, client } = await connectionPair();
  // Thousands of idle clients each hold one: it must be small.
  assert.equal(server.readBufferBytes, MIN_READ_BUFFER_BYTES);
  await client.send(CANCEL);
  assert.deepEqual(await server.receive(), CANCEL);
  assert.equal(server.readBufferBytes, MIN_READ_BUFFER_BYTES);
  // A frame of 1 MiB fills read after read: the buffer doubles up to its cap.
  const stdin: Message = {
    type: "stdin",
    jobId: "j1",
    data: "x".repeat(1024 * 1024),
  };
  await Promise.all([client.send(stdin), client.send(CANCEL)]);
  assert.deepEqual(await server.receive(), stdin);
  assert.deepEqual(await server.receive(), CANCEL);
  assert.equal(server.readBufferBytes, MAX_READ_BUFFER_BYTES);
  await server.close();
  await client.close();
});

Deno.test("Connection writes the frames sent in one turn in one system call, in order", async () => {
  const { server, client } = await socketPair();
  let writes = 0;
  // The real socket, its writes counted.
  const counted = new Proxy(client, {
    get(target, key) {
      if (key === "write") {
        return (bytes: Uint8Array) => {
          writes++;
          return target.write(bytes);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const sender = new Connection(counted);
  const receiver = new Connection(server);
  const messages: Message[] = Array.from(
    { length: 100 },
    (_, i) => ({ type: "cancel", jobId: `j${i}` }),
  );
  await Promise.all(messages.map((message) => sender.send(message)));
  assert.equal(writes, 1);
  for (const message of messages) {
    assert.deepEqual(await receiver.receive(), message);
  }
  await sender.close();
  await receiver.close();
});

Deno.test("Connection watches for a stalled peer without a timer per message", async () => {
  const { server, client } = await connectionPair();
  const timers = await countTimers(async () => {
    // Each send waits until written: the send buffer empties every time.
    for (let i = 0; i < 200; i++) await client.send(CANCEL);
  });
  assert.equal(timers, 1);
  for (let i = 0; i < 200; i++) {
    assert.deepEqual(await server.receive(), CANCEL);
  }
  await server.close();
  await client.close();
});

Deno.test("Connection refuses an oversized frame from its header, without waiting for the body", async () => {
  const { connection, peer } = await connectionAndRawPeer();
  // A 4 GiB length and nothing more: a decoder waiting for the body would hang here.
  await peer.write(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  await rejection(
    connection.receive(),
    "frame_too_large",
    /4294967295 bytes exceeds the limit/,
  );
  await connection.closed;
  // The peer is told why before the connection closes.
  const [told] = await readFramesUntilEof(peer);
  assert.deepEqual(told, {
    type: "error",
    code: "frame_too_large",
    message: "frame of 4294967295 bytes exceeds the limit of 8388608 bytes",
  });
});

Deno.test("Connection closes on garbage bytes and tells the peer", async () => {
  const cases: [Uint8Array, string][] = [
    [
      new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      "frame_too_large",
    ],
    [raw("hello"), "malformed"],
    [new Uint8Array([0, 0, 0, 2, 0xff, 0xfe]), "malformed"],
  ];
  for (const [bytes, code] of cases) {
    const { connection, peer } = await connectionAndRawPeer();
    await peer.write(bytes);
    await rejection(connection.receive(), code);
    // Later calls keep failing the same way instead of reading on.
    await rejection(connection.receive(), code);
    await rejection(connection.send(CANCEL), "closed");
    assert.deepEqual(
      (await readFramesUntilEof(peer)).map((frame) =>
        (frame as { code: string }).code
      ),
      [code],
    );
  }
});

Deno.test("Connection reports a stream cut inside a frame as truncated", async () => {
  for (const bytes of [raw('{"type":', 100), new Uint8Array([0, 0])]) {
    const { connection, peer } = await connectionAndRawPeer();
    await peer.write(bytes);
    await peer.closeWrite();
    await rejection(
      connection.receive(),
      "truncated",
      /stream ended inside a frame/,
    );
    await connection.closed;
    peer.close();
  }
});

Deno.test("Connection ends cleanly at the peer's EOF: closed, and iteration stops", async () => {
  const { server, client } = await connectionPair();
  await client.send(CANCEL);
  await client.send({
    type: "queued",
    jobId: "j1",
    position: 1,
    estimatedWaitMs: 0,
  });
  await client.close();
  const seen: Message[] = [];
  for await (const message of server) seen.push(message);
  assert.deepEqual(seen.map((message) => message.type), ["cancel", "queued"]);
  await server.closed;
  await rejection(server.receive(), "closed", /client closed the connection/);
});

Deno.test("Connection rejects invalid messages readably and stays usable", async () => {
  const { connection, peer } = await connectionAndRawPeer();
  const cases: [unknown, RegExp][] = [
    [
      { type: "nope" },
      /^invalid message: ✖ Invalid discriminator value\. Expected 'hello' \| .* → at type$/,
    ],
    [
      { type: "cancel" },
      /^invalid message: ✖ Invalid input: expected string, received undefined → at jobId$/,
    ],
    [
      { type: "cancel", jobId: "j1", extra: 1 },
      /^invalid message: ✖ Unrecognized key: "extra"$/,
    ],
    [
      { type: "ping", jobId: "j1" },
      /^invalid message: ✖ Unrecognized key: "jobId"$/,
    ],
    [
      [1, 2],
      /^invalid message: ✖ Invalid input: expected object, received array$/,
    ],
  ];
  for (const [value, pattern] of cases) {
    await peer.write(encodeFrame(value));
    await rejection(connection.receive(), "invalid_message", pattern);
  }
  await peer.write(encodeFrame(CANCEL));
  assert.deepEqual(await connection.receive(), CANCEL);
  await peer.write(encodeFrame({ type: "ping" }));
  assert.deepEqual(await connection.receive(), { type: "ping" });
  peer.close();
  await connection.close();
});

Deno.test("Connection turns the peer's error message into a ProtocolError and closes", async () => {
  const { server, client } = await connectionPair();
  await server.close({
    code: "auth_failed",
    message: "authentication failed: wrong token",
  });
  const error = await rejection(
    client.receive(),
    "auth_failed",
    /^master said: authentication failed: wrong token$/,
  );
  assert.equal(error.peerCode, "auth_failed");
  await client.closed;

  // A code this build does not know is kept as peerCode; iteration throws it.
  const other = await connectionPair();
  await other.server.close({
    code: "shutting_down",
    message: "the master is shutting down",
  });
  const unknown = await rejection(
    (async () => {
      for await (const _ of other.client) assert.fail("no message expected");
    })(),
    "closed",
    /master said: the master is shutting down/,
  );
  assert.equal(unknown.peerCode, "shutting_down");
  await other.client.closed;
});

Deno.test("Connection.receive() times out and leaves the connection usable", async () => {
  const { server, client } = await connectionPair();
  await rejection(
    server.receive({ timeoutMs: 20 }),
    "timeout",
    /no message from client within 20 ms/,
  );
  await rejection(server.receive(20), "timeout");
  await client.send(CANCEL);
  assert.deepEqual(await server.receive(), CANCEL);
  await Promise.all([server.close(), client.close()]);
});

Deno.test("Connection closes a peer that stays silent past idleTimeoutMs, telling it", async () => {
  const { connection, peer } = await connectionAndRawPeer({
    idleTimeoutMs: 50,
    peerName: "secondary",
  });
  await rejection(
    connection.receive(),
    "timeout",
    /secondary was silent for 50 ms/,
  );
  await connection.closed;
  assert.deepEqual(await readFramesUntilEof(peer), [{
    type: "error",
    code: "timeout",
    message: "secondary was silent for 50 ms",
  }]);
});

Deno.test("Connection serves concurrent receive() calls in call order", async () => {
  const { server, client } = await connectionPair();
  const pending = [server.receive(), server.receive(), server.receive()];
  for (let position = 1; position <= 3; position++) {
    await client.send({
      type: "queued",
      jobId: "j",
      position,
      estimatedWaitMs: 0,
    });
  }
  const received = await Promise.all(pending);
  assert.deepEqual(
    received.map((message) => message.type === "queued" && message.position),
    [1, 2, 3],
  );
  await Promise.all([server.close(), client.close()]);
});

Deno.test("Connection.close() is idempotent, fails pending calls and later sends", async () => {
  const { server, client } = await connectionPair();
  const pending = server.receive();
  const closing = [
    server.close(),
    server.close({ code: "timeout", message: "ignored: already closing" }),
  ];
  await rejection(pending, "closed", /the connection is closed/);
  await Promise.all(closing);
  await server.closed;
  await rejection(server.send(CANCEL), "closed");
  await rejection(server.receive(), "closed");
  await rejection(client.receive(), "closed", /master closed the connection/); // no error message was sent
  await client.close();
});

Deno.test("Connection.close(reason) does not hang on a peer that never reads", async () => {
  const { connection, peer } = await connectionAndRawPeer({
    closeTimeoutMs: 100,
  });
  // More than the kernel buffers hold, so writes stall until the close cancels them.
  const big: Message = {
    type: "output",
    jobId: "j",
    stream: "stdout",
    data: "x".repeat(4 * 1024 * 1024),
  };
  const sends = Array.from(
    { length: 12 },
    () => connection.send(big).then(() => "sent", (error) => error),
  );
  await connection.close({ code: "timeout", message: "peer does not read" });
  const outcomes = await Promise.all(sends);
  assert.ok(
    outcomes.some((outcome) =>
      outcome instanceof ProtocolError && outcome.code === "closed"
    ),
  );
  peer.close();
});

Deno.test("Connection rejects bad options and messages over the frame limit", async () => {
  const { server, client } = await socketPair();
  assert.throws(
    () => new Connection(server, { idleTimeoutMs: -1 }),
    RangeError,
  );
  assert.throws(() => new Connection(server, { maxFrameBytes: 0 }), RangeError);
  const connection = new Connection(server, { maxFrameBytes: 64 });
  await rejection(
    connection.send({
      type: "output",
      jobId: "j",
      stream: "stdout",
      data: "x".repeat(64),
    }),
    "frame_too_large",
  );
  await assert.rejects(connection.receive(-5), RangeError);
  await connection.close();
  client.close();
});

Deno.test("Connection.maxFrameBytes can be raised after a small start", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [accepted, dialed] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  ]);
  await using server = new Connection(accepted, { maxFrameBytes: 1024 });
  await using client = new Connection(dialed);
  const big = {
    type: "output",
    jobId: "j",
    stream: "stdout",
    data: "x".repeat(2000),
  } as const;
  server.maxFrameBytes = 64 * 1024;
  assert.equal(server.maxFrameBytes, 64 * 1024);
  await client.send(big);
  assert.deepEqual(await server.receive({ timeoutMs: 1000 }), big);
  server.maxFrameBytes = 16;
  await client.send(big);
  await assert.rejects(
    server.receive({ timeoutMs: 1000 }),
    /exceeds the limit of 16 bytes/,
  );
});

/** A 64 KiB `output` message: many of them fill a peer that does not read. */
const CHUNK: Message = {
  type: "output",
  jobId: "j",
  stream: "stdout",
  data: "x".repeat(64 * 1024),
};
const CHUNK_FRAME_BYTES = encodeFrame(CHUNK).length;

Deno.test("Connection.offer drops messages past the high-water mark of a peer that does not read, and sends again once it reads", async () => {
  const highWaterBytes = 256 * 1024;
  const { connection, peer } = await connectionAndRawPeer({ highWaterBytes });
  // 12.5 MiB offered at once: nothing can be written in between.
  let queued = 0;
  for (let i = 0; i < 200; i++) {
    if (connection.offer(CHUNK)) queued++;
    assert.ok(
      connection.bufferedBytes <= highWaterBytes,
      `${connection.bufferedBytes} bytes buffered`,
    );
  }
  assert.ok(queued < 200, "nothing was dropped");
  assert.equal(connection.droppedMessages, 200 - queued);

  // The peer reads everything that was queued: the buffer empties.
  const reading = readFramesUntilEof(peer);
  await connection.send(CANCEL);
  assert.equal(connection.bufferedBytes, 0);
  assert.ok(connection.offer(CHUNK));
  await connection.send(CANCEL);
  await connection.close();
  const frames = await reading;
  assert.equal(frames.length, queued + 3);
  assert.deepEqual(frames[queued], CANCEL);
  assert.deepEqual(frames[queued + 1], CHUNK);
});

Deno.test("Connection closes a peer with slow_peer when a message would buffer more than maxBufferedBytes", async () => {
  const { connection, peer } = await connectionAndRawPeer({
    highWaterBytes: 64 * 1024,
    maxBufferedBytes: 1024 * 1024,
    closeTimeoutMs: 100,
  });
  const sends: Promise<unknown>[] = [];
  let refused: unknown;
  for (let i = 0; i < 200 && refused === undefined; i++) {
    sends.push(
      connection.send(CHUNK).catch((error) => refused ??= error),
    );
    assert.ok(connection.bufferedBytes <= 1024 * 1024);
    await Promise.resolve(); // lets a synchronous refusal land
  }
  const error = await rejection(
    connection.receive(),
    "slow_peer",
    new RegExp(
      `^peer is not reading: \\d+ bytes wait to be sent to it, and ${CHUNK_FRAME_BYTES} more would exceed the limit of 1048576 bytes$`,
    ),
  );
  assert.equal(refused, error);
  await connection.closed;
  await Promise.all(sends);
  assert.equal(connection.bufferedBytes, 0);
  peer.close();
});

Deno.test("Connection closes a peer with slow_peer when it takes no byte for stallTimeoutMs", async () => {
  const { connection, peer } = await connectionAndRawPeer({
    stallTimeoutMs: 200,
    closeTimeoutMs: 100,
  });
  const big: Message = { ...CHUNK, data: "x".repeat(4 * 1024 * 1024) };
  const sends = [big, big].map((message) =>
    connection.send(message).catch((error) => error)
  );
  await rejection(
    connection.receive(),
    "slow_peer",
    /^peer is not reading: it took none of the \d+ bytes waiting for it in 200 ms$/,
  );
  await connection.closed;
  assert.ok(
    (await Promise.all(sends)).some((outcome) =>
      outcome instanceof ProtocolError
    ),
  );
  assert.equal(connection.bufferedBytes, 0);
  peer.close();
});

Deno.test("Connection sends no frame larger than the peer takes, and stays up", async () => {
  const { server, client } = await connectionPair();
  assert.equal(client.maxSendFrameBytes, client.maxFrameBytes);
  client.peerMaxFrameBytes = 1024;
  assert.equal(client.maxSendFrameBytes, 1024);
  await rejection(
    client.send({ ...CHUNK, data: "x".repeat(2000) }),
    "frame_too_large",
    /exceeds the limit of 1024 bytes/,
  );
  assert.equal(client.offer({ ...CHUNK, data: "x".repeat(2000) }), false);
  await client.send(CANCEL);
  assert.deepEqual(await server.receive(), CANCEL);
  assert.throws(() => client.peerMaxFrameBytes = 0, RangeError);
  await Promise.all([server.close(), client.close()]);
});

Deno.test("Connection rejects send-buffer options it cannot honour", async () => {
  const { server, client } = await socketPair();
  for (
    const options of [
      { highWaterBytes: 2048, maxBufferedBytes: 1024 },
      { maxBufferedBytes: 0 },
      { stallTimeoutMs: 2 ** 31 },
      { stallTimeoutMs: -1 },
    ]
  ) {
    assert.throws(
      () => new Connection(server, options),
      RangeError,
      JSON.stringify(options),
    );
  }
  server.close();
  client.close();
});

/** `conn`, counting the bytes of each write Connection makes to it. */
function countingWrites(
  conn: Deno.TcpConn,
): { conn: Deno.Conn; writes: number[] } {
  const writes: number[] = [];
  const counted = {
    remoteAddr: conn.remoteAddr,
    localAddr: conn.localAddr,
    read: (buffer: Uint8Array) => conn.read(buffer),
    write: (bytes: Uint8Array) => {
      writes.push(bytes.length);
      return conn.write(bytes);
    },
    close: () => conn.close(),
  };
  return { conn: counted as unknown as Deno.Conn, writes };
}

Deno.test("Connection sends a burst of messages in one write, in order", async () => {
  const { server, client } = await socketPair();
  const { conn, writes } = countingWrites(server);
  const connection = new Connection(conn);
  const peer = new Connection(client);
  const messages: Message[] = [CANCEL, { type: "cancel", jobId: "j2" }, {
    type: "cancel",
    jobId: "j3",
  }];
  await Promise.all(messages.map((message) => connection.send(message)));
  const frameBytes = messages.map((m) => encodeFrame(m).length);
  assert.deepEqual(writes, [frameBytes.reduce((a, b) => a + b)]);
  for (const message of messages) {
    assert.deepEqual(await peer.receive({ timeoutMs: 1000 }), message);
  }
  // Alone, a message is a write of its own.
  await connection.send(CANCEL);
  assert.deepEqual(writes.slice(1), [frameBytes[0]]);
  assert.deepEqual(await peer.receive({ timeoutMs: 1000 }), CANCEL);
  assert.equal(connection.bufferedBytes, 0);
  await connection.close();
  await peer.close();
});

Deno.test("Connection writes large frames of a burst each on its own, in order", async () => {
  const { server, client } = await socketPair();
  const { conn, writes } = countingWrites(server);
  const connection = new Connection(conn);
  const peer = new Connection(client);
  const big: Message = { ...CHUNK, data: "x".repeat(80 * 1024) };
  const sent = Promise.all([connection.send(big), connection.send(CANCEL)]);
  assert.deepEqual(await peer.receive({ timeoutMs: 5000 }), big);
  assert.deepEqual(await peer.receive({ timeoutMs: 5000 }), CANCEL);
  await sent;
  // Frame by frame (a write may also take part of a frame).
  assert.ok(writes.length >= 2, JSON.stringify(writes));
  assert.equal(writes.at(-1), encodeFrame(CANCEL).length);
  assert.equal(connection.bufferedBytes, 0);
  await connection.close();
  await peer.close();
});

Deno.test("Connection.messages() reads the socket itself: receive() is refused meanwhile, and served first before", async () => {
  const { server, client } = await connectionPair();
  // A receive() already waiting gets the first message, in call order.
  const first = server.receive({ timeoutMs: 5000 });
  const iterator = server.messages();
  const next = iterator.next();
  await client.send(CANCEL);
  await client.send({ type: "cancel", jobId: "j2" });
  assert.deepEqual(await first, CANCEL);
  assert.deepEqual((await next).value, { type: "cancel", jobId: "j2" });
  // Suspended in the loop body, the iteration still owns the socket.
  await assert.rejects(server.receive(), TypeError);
  await iterator.return();
  // Once it has stopped, receive() reads again.
  await client.send({ type: "cancel", jobId: "j3" });
  assert.deepEqual(await server.receive({ timeoutMs: 5000 }), {
    type: "cancel",
    jobId: "j3",
  });
  await client.close();
  await server.close();
});

Deno.test("Connection.messages() throws an invalid message and stays usable; the peer's error ends it", async () => {
  const { connection, peer } = await connectionAndRawPeer();
  await peer.write(encodeFrame({ type: "nope" }));
  await peer.write(encodeFrame(CANCEL));
  await rejection(
    (async () => {
      for await (const _ of connection) assert.fail("nothing valid came first");
    })(),
    "invalid_message",
  );
  const after: Message[] = [];
  await peer.write(encodeFrame({ type: "error", code: "busy", message: "no" }));
  await rejection(
    (async () => {
      for await (const message of connection) after.push(message);
    })(),
    "closed",
    /peer said: no/,
  );
  assert.deepEqual(after, [CANCEL]);
  await connection.closed;
  peer.close();
});

Deno.test("Connection.close() ends an iteration waiting for the peer, quietly", async () => {
  const { server, client } = await connectionPair();
  const seen: Message[] = [];
  const iterating = (async () => {
    for await (const message of server) seen.push(message);
  })();
  await client.send(CANCEL);
  while (seen.length === 0) await new Promise((r) => setTimeout(r, 5));
  await server.close();
  await iterating;
  assert.deepEqual(seen, [CANCEL]);
  await client.close();
});

Deno.test("Connection.post() queues like send() with no promise, and says at once why it refuses", async () => {
  const { server, client } = await connectionPair();
  assert.equal(client.post(CANCEL), undefined);
  assert.equal(client.post({ type: "cancel", jobId: "j2" }), undefined);
  assert.deepEqual(await server.receive({ timeoutMs: 5000 }), CANCEL);
  assert.deepEqual(await server.receive({ timeoutMs: 5000 }), {
    type: "cancel",
    jobId: "j2",
  });
  client.maxFrameBytes = 64;
  const tooLarge = client.post({ type: "cancel", jobId: "x".repeat(100) });
  assert.ok(tooLarge instanceof ProtocolError);
  assert.equal(tooLarge.code, "frame_too_large");
  // The link is fine: the next message goes through.
  assert.equal(client.post(CANCEL), undefined);
  assert.deepEqual(await server.receive({ timeoutMs: 5000 }), CANCEL);
  await client.close();
  const closed = client.post(CANCEL);
  assert.ok(closed instanceof ProtocolError);
  assert.equal(closed.code, "closed");
  await server.close();
});
