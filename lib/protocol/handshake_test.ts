import assert from "node:assert/strict";
import { Connection } from "./connection.ts";
import { ProtocolError } from "./errors.ts";
import { encodeFrame } from "./frame.ts";
import {
  clientHandshake,
  type ClientHandshakeOptions,
  serverHandshake,
  type ServerHandshakeOptions,
  type ServerHandshakeResult,
} from "./handshake.ts";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "./messages.ts";
import {
  dial,
  readFramesUntilEof,
  recordReads,
  socketPair,
} from "./_testing.ts";

const TOKEN = "correct-horse-battery-staple";

/** Checks that `error` is a ProtocolError with this code and a message matching `pattern`. */
function assertProtocolError(
  error: unknown,
  code: string,
  pattern: RegExp,
): ProtocolError {
  assert.ok(
    error instanceof ProtocolError,
    `expected a ProtocolError, got ${error}`,
  );
  assert.equal(error.code, code, error.message);
  assert.match(error.message, pattern);
  return error;
}

/** Runs both sides of a handshake over a fresh socket pair; both connections are closed after. */
async function handshake(
  server: ServerHandshakeOptions,
  client: ClientHandshakeOptions,
) {
  const pair = await socketPair();
  const master = new Connection(pair.server);
  const dialer = new Connection(pair.client);
  const [served, dialed] = await Promise.allSettled([
    serverHandshake(master, server),
    clientHandshake(dialer, client),
  ]);
  return { master, dialer, served, dialed };
}

function reason(outcome: PromiseSettledResult<unknown>): unknown {
  assert.equal(outcome.status, "rejected", "expected the handshake to fail");
  return (outcome as PromiseRejectedResult).reason;
}

Deno.test("handshake succeeds for both roles and names each peer", async () => {
  for (const role of ["client", "secondary"] as const) {
    const { master, dialer, served, dialed } = await handshake(
      { token: TOKEN, node: "master-1" },
      { role, token: TOKEN, name: "w1" },
    );
    assert.deepEqual(served, {
      status: "fulfilled",
      value: {
        role,
        version: PROTOCOL_VERSION,
        name: "w1",
        identity: "w1",
        quota: undefined,
      },
    });
    assert.deepEqual(dialed, {
      status: "fulfilled",
      value: { version: PROTOCOL_VERSION, node: "master-1" },
    });
    assert.equal(master.peerName, `${role} "w1"`);
    assert.equal(dialer.peerName, "master");
    // The link carries traffic afterwards.
    await dialer.send({ type: "cancel", jobId: "j1" });
    assert.deepEqual(await master.receive(), { type: "cancel", jobId: "j1" });
    await Promise.all([master.close(), dialer.close()]);
  }
});

Deno.test("handshake works with an empty token, and without a name", async () => {
  const { master, dialer, served, dialed } = await handshake({
    token: "",
    node: "dev",
  }, { role: "client", token: "" });
  assert.deepEqual(served, {
    status: "fulfilled",
    value: {
      role: "client",
      version: PROTOCOL_VERSION,
      name: undefined,
      identity: undefined,
      quota: undefined,
    },
  });
  assert.equal(dialed.status, "fulfilled");
  await Promise.all([master.close(), dialer.close()]);
});

Deno.test("handshake never sends the token", async () => {
  const pair = await socketPair();
  const fromClient = recordReads(pair.server);
  const fromMaster = recordReads(pair.client);
  const master = new Connection(pair.server);
  const dialer = new Connection(pair.client);
  await Promise.all([
    serverHandshake(master, { token: TOKEN, node: "m" }),
    clientHandshake(dialer, { role: "secondary", token: TOKEN }),
  ]);
  await Promise.all([master.close(), dialer.close()]);
  for (const bytes of [fromClient(), fromMaster()]) {
    assert.ok(bytes.length > 0);
    assert.ok(!new TextDecoder().decode(bytes).includes(TOKEN));
  }
});

Deno.test("a wrong token fails with auth_failed at both ends, whichever side has it wrong", async () => {
  for (
    const [masterToken, clientToken] of [[TOKEN, "wrong-token-0123456789"], [
      "wrong-token-0123456789",
      TOKEN,
    ], [
      TOKEN,
      "",
    ]]
  ) {
    const { master, dialer, served, dialed } = await handshake(
      { token: masterToken!, node: "m" },
      { role: "client", token: clientToken! },
    );
    assertProtocolError(
      reason(served),
      "auth_failed",
      /^authentication failed: wrong token$/,
    );
    const seen = assertProtocolError(
      reason(dialed),
      "auth_failed",
      /^master said: authentication failed: wrong token$/,
    );
    assert.equal(seen.peerCode, "auth_failed");
    await Promise.all([master.closed, dialer.closed]);
  }
});

Deno.test("the dialer refuses a master that cannot prove it knows the token", async () => {
  const pair = await socketPair();
  const impostor = new Connection(pair.server);
  const dialer = new Connection(pair.client);
  const impersonating = (async () => {
    const hello = await impostor.receive();
    assert.equal(hello.type, "hello");
    await impostor.send({
      type: "challenge",
      version: 3,
      nonce: "n".repeat(44),
      proof: "0".repeat(64),
    });
    assert.equal((await impostor.receive()).type, "auth");
    await impostor.send({ type: "welcome", version: 3, node: "evil" }); // a welcome must not fool it
    return await impostor.receive().catch((error: unknown) => error);
  })();
  const dialed = await clientHandshake(dialer, { role: "client", token: TOKEN })
    .catch((error: unknown) => error);
  assertProtocolError(
    dialed,
    "auth_failed",
    /^the master could not prove it knows the token \(wrong token\?\)$/,
  );
  // The impostor hears the same verdict.
  assertProtocolError(
    await impersonating,
    "auth_failed",
    /^peer said: the master could not prove it knows/,
  );
  await Promise.all([impostor.closed, dialer.closed]);
});

Deno.test("a version mismatch is refused with both ranges named", async () => {
  const { master, dialer, served, dialed } = await handshake(
    { token: TOKEN, node: "m" },
    {
      role: "client",
      token: TOKEN,
      versions: { min: PROTOCOL_VERSION + 1, max: PROTOCOL_VERSION + 2 },
    },
  );
  const message = `protocol version mismatch: client speaks ${
    PROTOCOL_VERSION + 1
  }..${
    PROTOCOL_VERSION + 2
  }, master speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`;
  assertProtocolError(
    reason(served),
    "version_mismatch",
    new RegExp(`^${message}$`),
  );
  assertProtocolError(
    reason(dialed),
    "version_mismatch",
    new RegExp(`^master said: ${message}$`),
  );
  await Promise.all([master.closed, dialer.closed]);
});

Deno.test("a client of protocol 2, whose strict schemas refuse queued.estimatedWaitMs, is refused at the handshake", async () => {
  const { master, dialer, served, dialed } = await handshake(
    { token: TOKEN, node: "m" },
    { role: "client", token: TOKEN, versions: { min: 2, max: 2 } },
  );
  assertProtocolError(
    reason(dialed),
    "version_mismatch",
    new RegExp(
      `^master said: protocol version mismatch: client speaks 2\\.\\.2, master speaks ${MIN_PROTOCOL_VERSION}\\.\\.${PROTOCOL_VERSION}$`,
    ),
  );
  assert.equal(served.status, "rejected");
  await Promise.all([master.closed, dialer.closed]);
});

Deno.test("the highest common version wins", async () => {
  const { master, dialer, served, dialed } = await handshake(
    { token: TOKEN, node: "m", versions: { min: 1, max: 4 } },
    { role: "secondary", token: TOKEN, versions: { min: 2, max: 3 } },
  );
  assert.equal(served.status === "fulfilled" && served.value.version, 3);
  assert.equal(dialed.status === "fulfilled" && dialed.value.version, 3);
  await Promise.all([master.close(), dialer.close()]);
});

Deno.test("a role the master does not accept is refused", async () => {
  const { master, dialer, served, dialed } = await handshake(
    { token: TOKEN, node: "m", roles: ["secondary"] },
    { role: "client", token: TOKEN },
  );
  const message =
    "this master does not accept client connections \\(it accepts: secondary\\)";
  assertProtocolError(
    reason(served),
    "role_refused",
    new RegExp(`^${message}$`),
  );
  assertProtocolError(
    reason(dialed),
    "role_refused",
    new RegExp(`^master said: ${message}$`),
  );
  await Promise.all([master.closed, dialer.closed]);
});

Deno.test("a silent peer hits the handshake timeout, on either side", async () => {
  const silentDialer = await socketPair();
  const master = new Connection(silentDialer.server);
  const served = await serverHandshake(master, {
    token: TOKEN,
    node: "m",
    timeoutMs: 200,
  }).catch((error) => error);
  assertProtocolError(
    served,
    "timeout",
    /^handshake timed out after 200 ms waiting for hello$/,
  );
  assert.deepEqual(await readFramesUntilEof(silentDialer.client), [
    {
      type: "error",
      code: "timeout",
      message: "handshake timed out after 200 ms waiting for hello",
    },
  ]);

  const silentMaster = await socketPair();
  const dialer = new Connection(silentMaster.client);
  const dialed = await clientHandshake(dialer, {
    role: "client",
    token: TOKEN,
    timeoutMs: 200,
  }).catch((error) => error);
  assertProtocolError(
    dialed,
    "timeout",
    /^handshake timed out after 200 ms waiting for challenge$/,
  );
  const [hello, told] = await readFramesUntilEof(silentMaster.server);
  assert.equal((hello as { type: string }).type, "hello");
  assert.deepEqual(told, {
    type: "error",
    code: "timeout",
    message: "handshake timed out after 200 ms waiting for challenge",
  });
});

Deno.test("an unexpected or invalid message during the handshake is refused", async () => {
  const cases: [unknown, string, RegExp][] = [
    [
      { type: "cancel", jobId: "j1" },
      "unexpected_message",
      /^expected hello during the handshake, got cancel$/,
    ],
    [
      { type: "hello", role: "client", minVersion: 2, maxVersion: 2 },
      "invalid_message",
      /→ at nonce$/,
    ],
    [
      {
        type: "hello",
        role: "admin",
        minVersion: 2,
        maxVersion: 2,
        nonce: "n".repeat(44),
      },
      "invalid_message",
      /→ at role$/,
    ],
  ];
  for (const [first, code, pattern] of cases) {
    const pair = await socketPair();
    const master = new Connection(pair.server);
    await pair.client.write(encodeFrame(first));
    const served = await serverHandshake(master, { token: TOKEN, node: "m" })
      .catch((error) => error);
    assertProtocolError(served, code, pattern);
    const [told] = await readFramesUntilEof(pair.client);
    assert.equal((told as { code: string }).code, code);
  }
});

Deno.test("bad handshake options are a RangeError and close the connection", async () => {
  const pair = await socketPair();
  const master = new Connection(pair.server);
  await assert.rejects(
    serverHandshake(master, {
      token: "",
      node: "m",
      versions: { min: 2, max: 1 },
    }),
    RangeError,
  );
  await master.closed;
  const dialer = new Connection(pair.client);
  await assert.rejects(
    clientHandshake(dialer, { role: "client", token: "", timeoutMs: 0 }),
    RangeError,
  );
  await dialer.closed;
});

/** A master accepting on 127.0.0.1 until disposed, reporting each handshake's outcome in order. */
function serveMaster(options: ServerHandshakeOptions) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const outcomes: Promise<PromiseSettledResult<ServerHandshakeResult>>[] = [];
  const waiting: ((
    outcome: Promise<PromiseSettledResult<ServerHandshakeResult>>,
  ) => void)[] = [];
  const connections: Connection[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      const connection = new Connection(conn);
      connections.push(connection);
      const outcome = serverHandshake(connection, options).then(
        (value) => ({ status: "fulfilled", value }) as const,
        (reason: unknown) => ({ status: "rejected", reason }) as const,
      );
      const waiter = waiting.shift();
      if (waiter) waiter(outcome);
      else outcomes.push(outcome);
    }
  })();
  return {
    port: listener.addr.port,
    /** The outcome of the next connection's handshake. */
    next(): Promise<PromiseSettledResult<ServerHandshakeResult>> {
      const ready = outcomes.shift();
      return ready ?? new Promise((resolve) => waiting.push(resolve));
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(connections.map((connection) => connection.close()));
    },
  };
}

Deno.test("the master keeps accepting after every kind of bad peer", async () => {
  await using master = serveMaster({
    token: TOKEN,
    node: "m",
    roles: ["secondary"],
    timeoutMs: 200,
  });
  const dialAndShake = async (options: ClientHandshakeOptions) => {
    const connection = new Connection(await dial(master.port));
    return await clientHandshake(connection, options).catch((error: unknown) =>
      error
    );
  };

  assertProtocolError(
    await dialAndShake({ role: "secondary", token: "wrong" }),
    "auth_failed",
    /wrong token/,
  );
  assertProtocolError(
    reason(await master.next()),
    "auth_failed",
    /wrong token/,
  );

  assertProtocolError(
    await dialAndShake({
      role: "secondary",
      token: TOKEN,
      versions: { min: 9, max: 9 },
    }),
    "version_mismatch",
    /9\.\.9/,
  );
  assertProtocolError(
    reason(await master.next()),
    "version_mismatch",
    /9\.\.9/,
  );

  assertProtocolError(
    await dialAndShake({ role: "client", token: TOKEN }),
    "role_refused",
    /does not accept client/,
  );
  assertProtocolError(
    reason(await master.next()),
    "role_refused",
    /does not accept client/,
  );

  const silent = await dial(master.port);
  assertProtocolError(
    reason(await master.next()),
    "timeout",
    /waiting for hello/,
  );
  await readFramesUntilEof(silent);

  const garbage = await dial(master.port);
  await garbage.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
  assertProtocolError(
    reason(await master.next()),
    "frame_too_large",
    /exceeds the limit/,
  );
  await readFramesUntilEof(garbage);

  const truncated = await dial(master.port);
  await truncated.write(encodeFrame({ type: "hello" }).subarray(0, 8));
  await truncated.closeWrite();
  assertProtocolError(
    reason(await master.next()),
    "truncated",
    /inside a frame/,
  );
  await readFramesUntilEof(truncated);

  const hangUp = await dial(master.port);
  hangUp.close();
  assertProtocolError(
    reason(await master.next()),
    "closed",
    /closed the connection/,
  );

  // And a good peer still gets in.
  const good = new Connection(await dial(master.port));
  assert.deepEqual(
    await clientHandshake(good, {
      role: "secondary",
      token: TOKEN,
      name: "w9",
    }),
    { version: PROTOCOL_VERSION, node: "m" },
  );
  assert.deepEqual(await master.next(), {
    status: "fulfilled",
    value: {
      role: "secondary",
      version: PROTOCOL_VERSION,
      name: "w9",
      identity: "w9",
      quota: undefined,
    },
  });
  await good.close();
});
