import assert from "node:assert/strict";
import { ConnectionError, ProtocolError } from "./errors.ts";
import { dial, hintTls, listen } from "./transport.ts";
import { socketsOnPort } from "./_nodelay_testing.ts";

Deno.test("dial() gives up a TLS handshake the peer never answers, saying so", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const [silent, error] = await Promise.all([
    listener.accept(),
    dial({ hostname: "127.0.0.1", port }, { tls: true, timeoutMs: 100 })
      .then(() => undefined, (error) => error),
  ]);
  try {
    assert.ok(error instanceof ConnectionError, String(error));
    assert.equal(
      error.message,
      `Cannot connect to master at 127.0.0.1:${port}: no TLS handshake from the master within 100 ms (is it a TLS master?)`,
    );
    // Not read to its end: Deno holds a TLS socket whose handshake never
    // finished open until the peer hangs up (see secureAccepted), so the
    // silent peer closes first.
  } finally {
    silent.close();
  }
});

Deno.test("dial() gives up a TLS handshake when its signal aborts", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const abort = new AbortController();
  const dialing = dial({ hostname: "127.0.0.1", port }, {
    tls: true,
    signal: abort.signal,
  });
  using _accepted = await listener.accept();
  abort.abort();
  await assert.rejects(dialing, ConnectionError);
});

Deno.test("dial() says when nobody listens", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = taken.addr;
  taken.close();
  await assert.rejects(
    dial({ hostname: "127.0.0.1", port }, { tls: true }),
    (error) =>
      error instanceof ConnectionError &&
      /connection refused \(is the master running\?\)$/.test(error.message),
  );
});

Deno.test("hintTls() explains a bare hang-up, and leaves the master's own words alone", () => {
  for (
    const code of [
      "closed",
      "truncated",
      "malformed",
      "frame_too_large",
    ] as const
  ) {
    const hinted = hintTls(new ProtocolError(code, "whatever"));
    assert.ok(hinted instanceof ProtocolError);
    assert.equal(hinted.code, "closed");
    assert.match(hinted.message, /may require TLS/);
  }
  const said = new ProtocolError("auth_failed", "master said: wrong token", {
    peerCode: "auth_failed",
  });
  assert.equal(hintTls(said), said);
  const timeout = new ProtocolError("timeout", "handshake timed out");
  assert.equal(hintTls(timeout), timeout);
  const other = new Error("not a protocol error");
  assert.equal(hintTls(other), other);
});

Deno.test("listen() and dial() turn Nagle off on both ends of a plain link", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const [accepted, dialed] = await Promise.all([
    listener.accept(),
    dial({ hostname: "127.0.0.1", port }),
  ]);
  try {
    const sockets = socketsOnPort(port);
    assert.equal(sockets.length, 2, JSON.stringify(sockets));
    for (const socket of sockets) {
      assert.ok(socket.noDelay, `Nagle is on: ${JSON.stringify(socket)}`);
    }
  } finally {
    accepted.close();
    dialed.close();
  }
});

Deno.test("listen()'s connections also come with Nagle off through its async iterator", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  using dialed = await Deno.connect({ hostname: "127.0.0.1", port });
  for await (const accepted of listener) {
    using _accepted = accepted;
    const server = socketsOnPort(port).filter((s) => s.local === port);
    assert.deepEqual(server.map((s) => s.noDelay), [true]);
    break;
  }
  assert.ok(dialed);
});

Deno.test("listen() refuses a TLS certificate or key that is not PEM, at once", () => {
  assert.throws(
    () =>
      listen({
        hostname: "127.0.0.1",
        port: 0,
        tls: { cert: "not a certificate", key: "not a key" },
      }),
    Deno.errors.InvalidData,
  );
});
