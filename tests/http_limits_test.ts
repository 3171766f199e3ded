/**
 * The HTTP API under pressure, on a real master on loopback: a history that
 * cannot write, clients that never read, a port already taken, tokens
 * guessed over HTTP and TCP alike, and credentials revoked mid-stream.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { Credentials, HttpApi, JobHistory, submitProgram } from "../mod.ts";
import { bash, startHttpCluster } from "./_http_cluster.ts";

const startCluster = startHttpCluster;

async function post(
  url: string,
  body: unknown,
  token?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: {
      "content-type": "application/json",
      ...token ? { authorization: `Bearer ${token}` } : {},
    },
  });
  return { status: response.status, body: await response.json() };
}

/** One sample of the API's /metrics, 0 when absent. */
async function metric(base: string, sample: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

/** Every message of a job's WebSocket stream, until the server closes it; and how it closed. */
function streamJob(
  url: string,
): Promise<
  { messages: Record<string, unknown>[]; code: number; reason: string }
> {
  const messages: Record<string, unknown>[] = [];
  const socket = new WebSocket(url);
  const { promise, resolve } = Promise.withResolvers<
    { messages: Record<string, unknown>[]; code: number; reason: string }
  >();
  socket.onmessage = (event) => messages.push(JSON.parse(String(event.data)));
  socket.onclose = (event) =>
    resolve({ messages, code: event.code, reason: event.reason });
  socket.onerror = () => {};
  return promise;
}

/**
 * A WebSocket client that upgrades by hand and then reads nothing until
 * told to: the slow consumer the server must not buffer for without bound.
 */
async function rawWebSocket(port: number, path: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\n`,
    ),
  );
  return conn;
}

/** Reads the upgrade answer, then every text frame until a close frame; closes `conn`. */
async function readFrames(conn: Deno.TcpConn): Promise<string[]> {
  const texts: string[] = [];
  let buffer = new Uint8Array(0);
  const chunk = new Uint8Array(1 << 20);
  const more = async () => {
    const n = await conn.read(chunk);
    if (n === null) throw new Error("the server closed before a close frame");
    const next = new Uint8Array(buffer.length + n);
    next.set(buffer);
    next.set(chunk.subarray(0, n), buffer.length);
    buffer = next;
  };
  try {
    const crlf = new TextEncoder().encode("\r\n\r\n");
    let end = -1;
    while (end === -1) {
      await more();
      end = buffer.findIndex((_, i) =>
        crlf.every((byte, j) => buffer[i + j] === byte)
      );
    }
    assert.match(new TextDecoder().decode(buffer.subarray(0, end)), / 101 /);
    buffer = buffer.subarray(end + 4);
    let message: Uint8Array[] = [];
    while (true) {
      while (buffer.length < 2) await more();
      const opcode = buffer[0]! & 0x0f;
      const fin = (buffer[0]! & 0x80) !== 0;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        while (buffer.length < 4) await more();
        length = (buffer[2]! << 8) | buffer[3]!;
        offset = 4;
      } else if (length === 127) {
        while (buffer.length < 10) await more();
        length = Number(
          new DataView(buffer.buffer, buffer.byteOffset + 2, 8).getBigUint64(0),
        );
        offset = 10;
      }
      while (buffer.length < offset + length) await more();
      const payload = buffer.slice(offset, offset + length);
      buffer = buffer.subarray(offset + length);
      if (opcode === 8) return texts;
      message.push(payload);
      if (fin) {
        const whole = new Uint8Array(
          message.reduce((sum, part) => sum + part.length, 0),
        );
        let at = 0;
        for (const part of message) {
          whole.set(part, at);
          at += part.length;
        }
        texts.push(new TextDecoder().decode(whole));
        message = [];
      }
    }
  } finally {
    conn.close();
  }
}

Deno.test("a history that cannot write is logged and counted; the master serves on", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    using history = new JobHistory({ path });
    await using cluster = startCluster({}, { history });
    const url = `${cluster.base}/api/v1/jobs`;
    const first = await post(url, bash("echo one"));
    assert.equal(first.body.verdict, "ok");
    // Another process's exclusive transaction: every write now fails with
    // "database is locked", as a full disk fails with "database or disk is full".
    {
      using other = new DatabaseSync(path);
      other.exec("BEGIN EXCLUSIVE");
      const locked = await post(url, bash("echo two"));
      assert.equal(locked.status, 200);
      assert.equal(locked.body.stdout, "two\n");
      assert.equal(
        await metric(cluster.base, 'kiln_failures_total{part="history"}'),
        1,
      );
      other.exec("ROLLBACK");
    }
    const three = await post(url, bash("echo three"));
    assert.equal(three.body.stdout, "three\n");
    // The job whose record failed is missing; those around it are kept.
    assert.deepEqual(
      history.list().map((job) => job.jobId),
      [three.body.jobId, first.body.jobId],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job stream that is not read drops output past its high-water mark, says how much, and still ends with the result", async () => {
  const total = 16 * 1024 * 1024;
  await using cluster = startCluster(
    { limits: { outputBytes: total } },
    { maxStreamBufferedBytes: 64 * 1024 },
  );
  // The job waits for its readers to be attached: it goes on a line of stdin.
  const { body } = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash(`echo -n r; read go; head -c ${total - 1} /dev/zero | tr '\\0' a`),
    interactive: true,
    limits: { outputBytes: total },
    wait: false,
  });
  const jobId = String(body.jobId);
  const path = `/api/v1/jobs/${jobId}/stream`;
  const slow = await rawWebSocket(cluster.api.addr.port, path);
  const ws = `ws://127.0.0.1:${cluster.api.addr.port}${path}`;
  // A reader that keeps up, to type the go-ahead and learn when it ended.
  const socket = new WebSocket(ws);
  const fast = Promise.withResolvers<void>();
  let asked = false;
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    if (message.type === "output" && !asked) {
      // The program is ready and waits: let it go.
      asked = true;
      socket.send(JSON.stringify({ type: "stdin", data: "go\n", eof: true }));
    }
    if (message.type === "result") fast.resolve();
  };
  const fastClosed = new Promise((resolve) => socket.onclose = resolve);
  await fast.promise;
  await fastClosed;
  assert.ok(
    await metric(
      cluster.base,
      'kiln_slow_client_total{kind="websocket",action="dropped"}',
    ) > 0,
    "output was dropped for the slow reader",
  );
  // Now it reads: what it got and what it was told it missed add up.
  const messages = (await readFrames(slow)).map((text) => JSON.parse(text));
  let received = 0;
  let dropped = 0;
  for (const message of messages) {
    if (message.type === "output") received += message.data.length;
    if (message.type === "truncated") dropped += message.dropped;
  }
  assert.ok(dropped > 0, "a truncated message says what was dropped");
  assert.equal(received + dropped, total);
  const result = messages.at(-1);
  assert.equal(result.type, "result");
  assert.equal(result.result.verdict, "ok");
  assert.equal(result.result.stdout.length, total);
});

Deno.test("job streams past the total high-water mark are closed with 1013 and the reason", async () => {
  await using cluster = startCluster(
    { limits: { outputBytes: 2 * 1024 * 1024 } },
    { maxBufferedBytes: 1024 * 1024 },
  );
  const big = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash("head -c 2000000 /dev/zero | tr '\\0' a"),
    limits: { outputBytes: 2 * 1024 * 1024 },
  });
  assert.equal(big.body.verdict, "ok");
  const { messages, code, reason } = await streamJob(
    `ws://127.0.0.1:${cluster.api.addr.port}/api/v1/jobs/${big.body.jobId}/stream`,
  );
  assert.deepEqual(messages, [], "its result would pass the total");
  assert.equal(code, 1013);
  assert.match(
    reason,
    /too much unread: read faster, or GET \/api\/v1\/jobs\//,
  );
  assert.equal(
    await metric(
      cluster.base,
      'kiln_slow_client_total{kind="websocket",action="closed"}',
    ),
    1,
  );
  // The result is still there for the asking.
  const stored = await fetch(`${cluster.base}/api/v1/jobs/${big.body.jobId}`);
  assert.equal((await stored.json()).result.stdout.length, 2_000_000);
});

Deno.test("an HttpApi whose port is taken throws a clear AddrInUse and lets go of the master", async () => {
  await using cluster = startCluster();
  using other = new JobHistory();
  const port = cluster.api.addr.port;
  assert.throws(
    () => new HttpApi(cluster.master, { port, history: other }),
    (error: Error) =>
      error instanceof Deno.errors.AddrInUse &&
      error.message ===
        `Cannot serve the HTTP API on 127.0.0.1:${port}: address already in use`,
  );
  const done = await post(`${cluster.base}/api/v1/jobs`, bash("echo hi"));
  assert.equal(done.body.verdict, "ok");
  // A leaked tracker would have recorded the job in the failed API's history.
  assert.deepEqual(other.list(), []);
});

const TOKENS = {
  alice: `alice-${crypto.randomUUID()}`,
  bob: `bob-${crypto.randomUUID()}`,
};
const AUTH = {
  credentials: [
    { name: "alice", role: "client", token: TOKENS.alice },
    { name: "bob", role: "client", token: TOKENS.bob },
  ],
};

Deno.test("HTTP bearer failures count towards the address's back-off, shared with TCP", async () => {
  await using cluster = startCluster({
    credentials: Credentials.parse(JSON.stringify(AUTH), "test"),
    maxAuthFailures: 2,
    authBackoffMs: 60_000,
  });
  const url = `${cluster.base}/api/v1/jobs`;
  // A missing token is not a guess; two wrong ones are.
  assert.equal((await post(url, bash("echo x"))).status, 401);
  assert.equal((await post(url, bash("echo x"), "wrong-0")).status, 401);
  assert.equal((await post(url, bash("echo x"), "wrong-1")).status, 401);
  const refused = await post(url, bash("echo x"), TOKENS.alice);
  assert.equal(refused.status, 429);
  assert.match(
    String(refused.body.error),
    /too many failed authentications from 127\.0\.0\.1: connections are refused for \d+ s more/,
  );
  await assert.rejects(
    submitProgram(bash("echo x"), {
      master: cluster.master.addr,
      name: "alice",
      token: TOKENS.alice,
    }),
    /too many failed authentications from 127\.0\.0\.1/,
  );
});

Deno.test("a reload that revokes a credential closes its job streams and events feeds", async () => {
  await using cluster = startCluster({
    credentials: Credentials.parse(JSON.stringify(AUTH), "test"),
  });
  const port = cluster.api.addr.port;
  const { body } = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash("echo started; exec sleep 5"),
    wait: false,
  }, TOKENS.bob);
  const jobId = String(body.jobId);
  const socket = new WebSocket(
    `ws://127.0.0.1:${port}/api/v1/jobs/${jobId}/stream?access_token=${TOKENS.bob}`,
  );
  const opened = Promise.withResolvers<void>();
  socket.onmessage = () => opened.resolve(); // the replay: it follows the job
  const ended = new Promise<CloseEvent>((resolve) => socket.onclose = resolve);
  // Each feed is open once its first event arrives.
  const feed = await fetch(
    `${cluster.base}/api/v1/events?access_token=${TOKENS.bob}`,
  );
  const reader = feed.body!.getReader();
  assert.ok((await reader.read()).value, "bob's feed started");
  const aliceFeed = await fetch(
    `${cluster.base}/api/v1/events?access_token=${TOKENS.alice}`,
  );
  const aliceReader = aliceFeed.body!.getReader();
  assert.ok((await aliceReader.read()).value, "alice's feed started");
  await opened.promise;
  cluster.master.setCredentials(
    Credentials.parse(
      JSON.stringify({ credentials: [AUTH.credentials[0]] }),
      "reloaded",
    ),
  );
  const { code, reason } = await ended;
  assert.equal(code, 1008, "closed for the revocation, not by the job's end");
  assert.match(reason, /credential was revoked/);
  // bob's feed ends; alice's goes on.
  let done = false;
  while (!done) done = (await reader.read()).done;
  assert.ok((await aliceReader.read()).value, "alice's feed goes on");
  await aliceReader.cancel();
});
