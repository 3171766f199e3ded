/**
 * `submitProgram()` and `getClusterStatus()` against a real master and a
 * master that never finishes its handshake: a signal is obeyed at every
 * step, the dial and the handshake included.
 */
import assert from "node:assert/strict";
import { getClusterStatus, submitProgram } from "./client.ts";
import type { JobRequest } from "./job.ts";
import { MasterNode } from "./nodes/master_node.ts";
import { Connection } from "./protocol/connection.ts";

const echo: JobRequest = {
  language: "bash",
  files: [{ name: "main.sh", content: "echo hi" }],
};

Deno.test("submitProgram: a signal aborted while it dials submits nothing", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    resourceLogIntervalMs: 0,
  });
  const accepted: string[] = [];
  master.addEventListener("jobaccepted", (event) => {
    accepted.push(event.detail.jobId);
  });
  const abort = new AbortController();
  const running = submitProgram(echo, {
    master: master.addr,
    signal: abort.signal,
  });
  // submitProgram is dialing now: it has not awaited anything else yet.
  abort.abort(new Error("the user gave up"));
  await assert.rejects(running, /the user gave up/);

  // The link the aborted call may have opened is gone before this job's.
  const result = await submitProgram(echo, { master: master.addr });
  assert.equal(result.verdict, "ok", result.reason);
  assert.deepEqual(accepted, [result.jobId], "only the second job reached it");
});

/**
 * A listener that reads the dialer's `hello` and never answers it, as a
 * stalled master would; `hello` resolves when it came.
 */
function stalledMaster() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hello = Promise.withResolvers<void>();
  const served = (async () => {
    const connection = new Connection(await listener.accept());
    try {
      assert.equal((await connection.receive()).type, "hello");
      hello.resolve();
      // The dialer gives up and hangs up: that ends the wait.
      await connection.receive().catch(() => {});
    } finally {
      await connection.close();
    }
  })();
  return {
    addr: listener.addr,
    hello: hello.promise,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served;
    },
  };
}

Deno.test("submitProgram: a signal aborted during the handshake ends it at once", async () => {
  await using master = stalledMaster();
  const abort = new AbortController();
  const running = submitProgram(echo, {
    master: master.addr,
    signal: abort.signal,
    // Long enough that only the signal can end the wait within a test.
    handshakeTimeoutMs: 600_000,
  });
  await master.hello;
  abort.abort(new Error("cancelled during the handshake"));
  await assert.rejects(running, /cancelled during the handshake/);
});

Deno.test("getClusterStatus: a signal aborted during the handshake ends it at once", async () => {
  await using master = stalledMaster();
  const abort = new AbortController();
  const asking = getClusterStatus({
    master: master.addr,
    signal: abort.signal,
    handshakeTimeoutMs: 600_000,
  });
  await master.hello;
  abort.abort(new Error("no longer wanted"));
  await assert.rejects(asking, /no longer wanted/);
});

Deno.test("submitProgram dials the masters of a comma-separated list in turn, once each", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    resourceLogIntervalMs: 0,
  });
  const refused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gone = `127.0.0.1:${refused.addr.port}`;
  refused.close();
  const result = await submitProgram(echo, {
    master: `${gone},127.0.0.1:${master.addr.port}`,
  });
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "hi\n");
  // Every master gone: one dial each, then the last one's error.
  await assert.rejects(
    submitProgram(echo, { master: `${gone},${gone}` }),
    /connection refused/,
  );
  // Its own options reach the client it makes.
  await assert.rejects(
    submitProgram(echo, { master: master.addr, maxSubmits: 0 }),
    /^RangeError: .*maxSubmits/,
  );
});
