/**
 * Named credentials against a real master over TCP on 127.0.0.1: each
 * client and node proves who it is, roles are kept apart, quotas hold, a
 * SIGHUP reloads the file, and no token ever reaches a log line.
 */
import assert from "node:assert/strict";
import { captureLogs, recordLine } from "../lib/_log_testing.ts";
import {
  type JobEvent,
  type JobRequest,
  type JobResult,
  MasterNode,
  ProtocolError,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { startMasterProcess } from "../cli/_processes.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import type { Message } from "../lib/protocol/messages.ts";
import { Credentials } from "../lib/security/credentials.ts";

const TOKENS = {
  alice: `alice-${crypto.randomUUID()}`,
  bob: `bob-${crypto.randomUUID()}`,
  east: `east-${crypto.randomUUID()}`,
  north: `north-${crypto.randomUUID()}`,
  carol: `carol-${crypto.randomUUID()}`,
};

const AUTH = {
  defaults: { maxRunning: 4, maxQueued: 8 },
  credentials: [
    { name: "alice", role: "client", token: TOKENS.alice },
    {
      name: "bob",
      role: "client",
      token: TOKENS.bob,
      maxRunning: 1,
      maxQueued: 1,
    },
    { name: "east", role: "node", token: TOKENS.east },
    { name: "north", role: "node", token: TOKENS.north },
  ],
};

const credentials = Credentials.parse(JSON.stringify(AUTH), "test");

/** Every log record of the test file, to scan for secrets at the end. */
const records: string[] = [];
const logs = await captureLogs((record) => records.push(recordLine(record)));

const bash = (script: string): JobRequest => ({
  language: "bash",
  files: [{ name: "main.sh", content: script }],
});

function startMaster(slots = 2): MasterNode {
  return new MasterNode({
    port: 0,
    slots,
    credentials,
    resourceLogIntervalMs: 0,
    // These tests fail authentication from 127.0.0.1 on purpose, again and
    // again: the back-off (tests/peer_limits_test.ts) would refuse the rest.
    maxAuthFailures: 0,
  });
}

function submitAs(
  master: MasterNode,
  name: string | undefined,
  token: string,
  request: JobRequest = bash("echo hi"),
  onEvent?: (event: JobEvent) => void,
): Promise<JobResult> {
  return submitProgram(request, {
    master: master.addr,
    token,
    ...name === undefined ? {} : { name },
    ...onEvent ? { onEvent } : {},
  });
}

Deno.test("auth: a named client runs jobs, and the result names it", async () => {
  await using master = startMaster();
  const result = await submitAs(master, "alice", TOKENS.alice);
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "hi\n");
  assert.equal(result.client, "alice");
});

Deno.test("auth: wrong, unknown and missing credentials are refused, each with a clear error", async () => {
  await using master = startMaster();
  const cases: [string | undefined, string, RegExp][] = [
    [
      "alice",
      TOKENS.bob,
      /master said: authentication failed for credential "alice": unknown name or wrong token$/,
    ],
    [
      "mallory",
      TOKENS.alice,
      /master said: authentication failed for credential "mallory": unknown name or wrong token$/,
    ],
    [
      undefined,
      TOKENS.alice,
      /authentication failed: this master authenticates named credentials/,
    ],
  ];
  for (const [name, token, expected] of cases) {
    await assert.rejects(
      submitAs(master, name, token),
      (error: unknown) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal(error.code, "auth_failed");
        assert.match(error.message, expected);
        return true;
      },
    );
  }
  // The master is fine after all of them.
  assert.equal((await submitAs(master, "alice", TOKENS.alice)).verdict, "ok");
});

Deno.test("auth: a node token cannot submit, a client token cannot register", async () => {
  await using master = startMaster(0);
  await assert.rejects(
    submitAs(master, "east", TOKENS.east),
    /"east" is a node credential: it cannot submit jobs/,
  );

  const failed = Promise.withResolvers<string>();
  await using impostor = new SecondaryNode({
    master: master.addr,
    name: "alice",
    token: TOKENS.alice,
    reconnectMinMs: 50,
    reconnectMaxMs: 50,
  });
  impostor.addEventListener(
    "connectfailed",
    (event) => failed.resolve(event.detail.error.message),
    { once: true },
  );
  assert.match(
    await failed.promise,
    /"alice" is a client credential: it cannot register as a node/,
  );
  assert.equal(master.status().nodes.length, 0);

  // A node credential registers under its own name only.
  const renamed = Promise.withResolvers<string>();
  await using wrongName = new SecondaryNode({
    master: master.addr,
    name: "west",
    token: TOKENS.east,
    reconnectMinMs: 50,
    reconnectMaxMs: 50,
  });
  wrongName.addEventListener(
    "connectfailed",
    (event) => renamed.resolve(event.detail.error.message),
    { once: true },
  );
  assert.match(
    await renamed.promise,
    /authentication failed for credential "west": unknown name or wrong token/,
  );

  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  await using _east = new SecondaryNode({
    master: master.addr,
    name: "east",
    token: TOKENS.east,
  });
  await joined.promise;
  const result = await submitAs(master, "alice", TOKENS.alice);
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.node, "east");
});

/**
 * Registers by hand, as a rogue or reconnecting node would: any id, any
 * secret. Resolves with the master's answer (`registered`), or rejects with
 * its refusal; the link stays open until the caller closes it.
 */
async function registerAs(
  master: MasterNode,
  credential: "east" | "north",
  id: string,
  secret?: string,
): Promise<{ connection: Connection; answer: Message }> {
  const connection = new Connection(await Deno.connect(master.addr));
  try {
    await clientHandshake(connection, {
      role: "secondary",
      token: TOKENS[credential],
      name: credential,
    });
    await connection.send({
      type: "register",
      id,
      ...secret === undefined ? {} : { secret },
      name: credential,
      languages: [{ name: "bash", version: "5", aliases: [], extensions: [] }],
      slots: 1,
      maxCpu: 100,
      maxRam: 100,
    });
    return { connection, answer: await connection.receive() };
  } catch (error) {
    await connection.close();
    throw error;
  }
}

Deno.test("auth: a node's public id cannot be used to evict it, by another credential or by a holder of its own", async () => {
  await using master = startMaster(0);
  const left: string[] = [];
  master.addEventListener("nodeleave", (event) => {
    left.push(`${event.detail.name}: ${event.detail.reason}`);
  });
  const joined = () =>
    new Promise<string>((resolve) =>
      master.addEventListener("nodejoin", (e) => resolve(e.detail.id), {
        once: true,
      })
    );
  let join = joined();
  await using east = new SecondaryNode({
    master: master.addr,
    name: "east",
    token: TOKENS.east,
    slots: 1,
    languages: ["bash"],
  });
  const eastId = await join;
  assert.equal(eastId, east.id, "the id is public: status shows it");

  // Another node credential, with the id read from the status.
  await assert.rejects(
    registerAs(master, "north", eastId, "a-guessed-secret-of-north"),
    new RegExp(
      `master said: node credential "north" cannot register as node ${eastId}: that id belongs to a live node of credential "east"`,
    ),
  );
  // The same credential (a second secondary holding it, say) without the
  // node's secret: with it or without any.
  for (const secret of ["another-secondary-secret", undefined]) {
    await assert.rejects(
      registerAs(master, "east", eastId, secret),
      new RegExp(
        `master said: node id ${eastId} is taken by a live node \\("east" from [^)]+\\) and this registration does not carry its secret`,
      ),
    );
  }
  assert.deepEqual(left, [], "no node was dropped");
  assert.deepEqual(master.status().nodes.map((n) => n.id), [eastId]);

  // Two secondaries sharing one credential are two nodes, told apart by id.
  join = joined();
  await using twin = new SecondaryNode({
    master: master.addr,
    name: "east",
    token: TOKENS.east,
    slots: 1,
    languages: ["bash"],
  });
  assert.equal(await join, twin.id);
  assert.deepEqual(
    master.status().nodes.map((n) => [n.name, n.id]).sort(),
    [["east", eastId], ["east", twin.id]].sort(),
  );
  const result = await submitAs(master, "alice", TOKENS.alice);
  assert.equal(result.verdict, "ok", result.reason);
  assert.deepEqual(left, []);

  // A node that reconnects before its old link timed out proves itself
  // with its secret, and replaces its own stale link.
  const id = crypto.randomUUID();
  const secret = crypto.randomUUID();
  const stale = await registerAs(master, "north", id, secret);
  assert.equal(stale.answer.type, "registered");
  const fresh = await registerAs(master, "north", id, secret);
  assert.equal(fresh.answer.type, "registered");
  await assert.rejects(
    stale.connection.receive(),
    /master closed the connection|connection is closed/,
  );
  await stale.connection.close();
  assert.deepEqual(left, ["north: it registered again"]);
  assert.equal(master.status().nodes.filter((n) => n.id === id).length, 1);
  await fresh.connection.close();
});

Deno.test("auth: a client over its quota is rejected with the quota named; others are not held up", async () => {
  await using master = startMaster();
  // bob may run 1 and queue 1: the first runs, the second waits, the third is refused.
  const started = Promise.withResolvers<void>();
  const first = submitAs(
    master,
    "bob",
    TOKENS.bob,
    bash("echo started; exec sleep 60"),
    (event) => event.type === "output" && started.resolve(),
  );
  await started.promise;
  const queued = Promise.withResolvers<number>();
  const second = submitAs(
    master,
    "bob",
    TOKENS.bob,
    bash("echo second"),
    (event) => event.type === "queued" && queued.resolve(event.position),
  );
  assert.equal(await queued.promise, 1);
  const third = await submitAs(master, "bob", TOKENS.bob);
  assert.equal(third.verdict, "rejected");
  assert.equal(third.client, "bob");
  assert.match(
    third.reason ?? "",
    /client "bob" is over its quota: 1 jobs waiting and 1 running, the most it may have waiting is 1 \(maxQueued\)/,
  );
  // A free slot exists, but it is not bob's to take: alice gets it at once.
  const alice = await submitAs(master, "alice", TOKENS.alice);
  assert.equal(alice.verdict, "ok");
  assert.equal(master.queued, 1, "bob's second job still waits");
  master.shutdown();
  await Promise.allSettled([first, second]);
});

Deno.test("auth: deno task master --auth reloads the file on SIGHUP, keeping the old one when the new is broken", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-auth-test-" });
  const path = `${dir}/auth.json`;
  try {
    await Deno.writeTextFile(path, JSON.stringify(AUTH), { mode: 0o600 });
    await using master = await startMasterProcess({
      args: ["--auth", path, "--slots", "1"],
      stderr: "piped",
    });
    const log = lines(master.child.stderr);
    const run = (name: string, token: string) =>
      submitProgram(bash("echo hi"), { master: master.address, token, name });
    assert.equal((await run("alice", TOKENS.alice)).verdict, "ok");
    await assert.rejects(
      run("carol", TOKENS.carol),
      /authentication failed for credential "carol": unknown name or wrong token/,
    );

    await Deno.writeTextFile(
      path,
      JSON.stringify({
        credentials: [
          ...AUTH.credentials,
          { name: "carol", role: "client", token: TOKENS.carol },
        ],
      }),
    );
    Deno.kill(master.child.pid, "SIGHUP");
    await waitForLine(
      log,
      /credentials from .*auth\.json.*: 3 clients, 2 nodes/,
    );
    assert.equal((await run("carol", TOKENS.carol)).verdict, "ok");

    await Deno.writeTextFile(path, "{ broken");
    Deno.kill(master.child.pid, "SIGHUP");
    await waitForLine(
      log,
      /SIGHUP: keeping the credentials in use: .*not JSON/,
    );
    assert.equal((await run("carol", TOKENS.carol)).verdict, "ok");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auth: a reload that revokes a credential ends its links, and its running job with them", async () => {
  await using master = startMaster();
  const started = Promise.withResolvers<void>();
  const running = submitAs(
    master,
    "bob",
    TOKENS.bob,
    bash("echo started; exec sleep 60"),
    (event) => event.type === "output" && started.resolve(),
  );
  await started.promise;
  const ended = Promise.withResolvers<string>();
  master.addEventListener(
    "jobcomplete",
    (event) => ended.resolve(event.detail.reason ?? ""),
    { once: true },
  );
  // bob is gone from the file; alice stays, with the same token.
  master.setCredentials(
    Credentials.parse(
      JSON.stringify({
        credentials: [AUTH.credentials[0], AUTH.credentials[2]],
      }),
      "reloaded",
    ),
  );
  await assert.rejects(running, /credential "bob" was revoked or changed/);
  assert.match(await ended.promise, /cancelled: the client disconnected/);
  await assert.rejects(
    submitAs(master, "bob", TOKENS.bob),
    /authentication failed for credential "bob": unknown name or wrong token/,
  );
  assert.equal((await submitAs(master, "alice", TOKENS.alice)).verdict, "ok");
});

Deno.test("auth: no token appears in any log line of this file", async () => {
  try {
    assert.ok(records.length > 0, "the tests logged something");
    for (const record of records) {
      for (const [name, token] of Object.entries(TOKENS)) {
        assert.ok(!record.includes(token), `${name}'s token logged: ${record}`);
      }
    }
  } finally {
    await logs[Symbol.asyncDispose]();
  }
});

/** The lines of a stream, read on demand. */
function lines(stream: ReadableStream<Uint8Array>): AsyncIterator<string> {
  return stream.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream<string, string>(
      {
        buffer: "",
        transform(chunk, controller) {
          const parts = (this.buffer + chunk).split("\n");
          this.buffer = parts.pop()!;
          for (const part of parts) controller.enqueue(part);
        },
      } as Transformer<string, string> & { buffer: string },
    ),
  )[Symbol.asyncIterator]();
}

/** Reads log lines until one matches; the master's own stderr, so no secret check here. */
async function waitForLine(
  log: AsyncIterator<string>,
  pattern: RegExp,
): Promise<string> {
  const seen: string[] = [];
  for (let line = await log.next(); !line.done; line = await log.next()) {
    for (const token of Object.values(TOKENS)) {
      assert.ok(
        !line.value.includes(token),
        `a token in the log: ${line.value}`,
      );
    }
    if (pattern.test(line.value)) return line.value;
    seen.push(line.value);
  }
  throw new Error(
    `the master's log ended without ${pattern}:\n${seen.join("\n")}`,
  );
}
