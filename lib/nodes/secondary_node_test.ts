/**
 * The secondary against a fake master made of the real protocol pieces
 * (`Deno.listen`, `Connection`, `serverHandshake`), over TCP on 127.0.0.1,
 * with real programs. Every wait is on a message or an event.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { ConnectionError } from "../client.ts";
import type { JobRequest, JobResult } from "../job.ts";
import type { ResourceSample } from "../monitor/resource_sampler.ts";
import { Connection } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { processesWithArg, processMarker } from "../../tests/_processes.ts";
import { serverHandshake, type VersionRange } from "../protocol/handshake.ts";
import {
  type Message,
  type MessageOf,
  PING_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../protocol/messages.ts";
import { BashRunner } from "../runners/bash_runner.ts";
import { RunnerRegistry } from "../runners/registry.ts";
import { Sandbox } from "../sandbox/sandbox.ts";
import type { LanguageRunner } from "../runners/runner.ts";
import {
  SecondaryNode,
  type SecondaryNodeEventMap,
  type SecondaryNodeOptions,
} from "./secondary_node.ts";

const TOKEN = "secondary-test-token";
/**
 * Whether this build speaks a protocol with pings: until it does, the
 * tests of a master's silence have nothing to watch and are skipped.
 */
const PINGS = PROTOCOL_VERSION >= PING_PROTOCOL_VERSION;
const SAMPLE: ResourceSample = {
  cpuPercent: 12.5,
  ramPercent: 40,
  ramUsedMb: 2048,
};

/** A language that runs its entry with /bin/sh, to have a second one besides bash. */
function shellRunner(name: string, available = true): LanguageRunner {
  return {
    name,
    aliases: [`${name}-alias`],
    extensions: [`.${name}`],
    detect: () =>
      Promise.resolve(
        available
          ? {
            available: true,
            version: `${name} 1.0`,
            executables: { interpreter: "/bin/sh" },
          }
          : { available: false, reason: `${name} is not installed` },
      ),
    run: (context) => ({
      command: context.toolchain.executables.interpreter!,
      args: [context.entry, ...context.args],
    }),
  };
}

function testRegistry(): RunnerRegistry {
  return new RunnerRegistry()
    .register(new BashRunner())
    .register(shellRunner("fake"));
}

function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "main.sh", content: script }] };
}

/** One secondary's connection, as the fake master holds it. */
class Link {
  readonly connection: Connection;
  readonly registration: MessageOf<"register">;
  readonly heartbeats: MessageOf<"heartbeat">[] = [];

  constructor(connection: Connection, registration: MessageOf<"register">) {
    this.connection = connection;
    this.registration = registration;
  }

  send(message: Message): Promise<void> {
    return this.connection.send(message);
  }

  /** The next message of `type` (about `jobId`, if given); heartbeats are recorded on the way. */
  async next<T extends Message["type"]>(
    type: T,
    jobId?: string,
  ): Promise<MessageOf<T>> {
    while (true) {
      const message = await this.connection.receive();
      if (message.type === "heartbeat") {
        this.heartbeats.push(message);
        if (type !== "heartbeat") continue;
      }
      if (
        message.type === type &&
        (jobId === undefined || !("jobId" in message) ||
          message.jobId === jobId)
      ) {
        return message as MessageOf<T>;
      }
      assert.fail(
        `expected ${type}, got ${JSON.stringify(message).slice(0, 300)}`,
      );
    }
  }

  /** Output chunks of `jobId` until its result. */
  async outputAndResult(
    jobId: string,
  ): Promise<{ output: MessageOf<"output">[]; result: JobResult }> {
    const output: MessageOf<"output">[] = [];
    while (true) {
      const message = await this.connection.receive();
      if (message.type === "heartbeat") continue;
      if (message.type === "output" && message.jobId === jobId) {
        output.push(message);
      } else if (message.type === "result" && message.jobId === jobId) {
        return { output, result: message.result };
      } else {
        assert.fail(`unexpected ${JSON.stringify(message).slice(0, 300)}`);
      }
    }
  }
}

/** How {@linkcode FakeMaster.accept} treats a secondary. */
interface AcceptOptions {
  /**
   * Ping it every heartbeat interval, as a real master does, when the
   * protocol version agreed on has pings. @default true
   */
  ping?: boolean;
  /** The protocol versions this master speaks. @default the build's */
  versions?: VersionRange;
}

/** A master that speaks just enough of the protocol to drive a secondary. */
class FakeMaster implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  readonly address: string;
  readonly token: string;
  readonly #connections = new Set<Connection>();
  readonly #pings = new Set<ReturnType<typeof setInterval>>();

  constructor(token = TOKEN, port = 0) {
    this.token = token;
    this.listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.address = `127.0.0.1:${this.listener.addr.port}`;
  }

  /**
   * Accepts the next secondary, reads its `register` and answers
   * `registered`; then pings it, as a real master does.
   */
  async accept(
    heartbeatIntervalMs = 20,
    { ping = true, versions }: AcceptOptions = {},
  ): Promise<Link> {
    const connection = new Connection(await this.listener.accept());
    this.#connections.add(connection);
    const { version } = await serverHandshake(connection, {
      token: this.token,
      node: "fake-master",
      roles: ["secondary"],
      ...versions ? { versions } : {},
    });
    const registration = await connection.receive();
    assert.equal(registration.type, "register");
    await connection.send({
      type: "registered",
      master: "fake-master",
      heartbeatIntervalMs,
    });
    if (ping && version >= PING_PROTOCOL_VERSION) {
      this.#pings.add(
        setInterval(
          () => connection.post({ type: "ping" }),
          heartbeatIntervalMs,
        ),
      );
    }
    return new Link(connection, registration as MessageOf<"register">);
  }

  /** Accepts the next connection and returns how its handshake failed. */
  async acceptFailing(): Promise<unknown> {
    const connection = new Connection(await this.listener.accept());
    this.#connections.add(connection);
    try {
      await serverHandshake(connection, {
        token: this.token,
        node: "fake-master",
        roles: ["secondary"],
      });
    } catch (error) {
      return error;
    }
    assert.fail("the handshake succeeded");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const pings of this.#pings) clearInterval(pings);
    this.listener.close();
    await Promise.all([...this.#connections].map((c) => c.close()));
  }
}

function startSecondary(
  master: FakeMaster | string,
  options: Partial<SecondaryNodeOptions> = {},
): SecondaryNode {
  return new SecondaryNode({
    master: typeof master === "string" ? master : master.address,
    token: TOKEN,
    name: "w1",
    slots: 2,
    registry: testRegistry(),
    sampleResources: () => Promise.resolve(SAMPLE),
    reconnectMinMs: 10,
    reconnectMaxMs: 50,
    ...options,
  });
}

/** The detail of the next event of `type`. */
function nextEvent<K extends keyof SecondaryNodeEventMap>(
  node: SecondaryNode,
  type: K,
): Promise<SecondaryNodeEventMap[K]["detail"]> {
  return new Promise((resolve) =>
    node.addEventListener(type, (event) => resolve(event.detail), {
      once: true,
    })
  );
}

/**
 * Starts a job that starts a `sleep 600`, says so and waits for it; resolves
 * with the marker its processes carry (see `tests/_processes.ts`), once they
 * are seen running.
 */
async function startSleeper(link: Link, jobId: string): Promise<string> {
  const mark = processMarker();
  await link.send({
    type: "run",
    jobId,
    job: {
      ...bash('(exec -a "$1" sleep 600) & echo started; wait'),
      args: [mark],
    },
  });
  const output = await link.next("output", jobId);
  assert.equal(output.data, "started\n");
  assert.notDeepEqual(await processesWithArg(mark), [], "the job is running");
  return mark;
}

Deno.test("SecondaryNode registers its id, name, slots, thresholds and languages with versions", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master, {
    slots: 3,
    maxCpu: 80,
    maxRam: 90,
  });
  const registered = nextEvent(secondary, "registered");
  const link = await master.accept();
  assert.deepEqual(await registered, { master: master.address, name: "w1" });
  assert.equal(secondary.registered, true);

  const { registration } = link;
  assert.equal(registration.id, secondary.id);
  assert.match(registration.id, /^[0-9a-f-]{36}$/);
  assert.equal(registration.name, "w1");
  assert.equal(registration.slots, 3);
  assert.equal(registration.maxCpu, 80);
  assert.equal(registration.maxRam, 90);
  assert.deepEqual(registration.languages.map((l) => l.name), [
    "bash",
    "fake",
  ]);
  const [bashOffer, fakeOffer] = registration.languages;
  assert.match(bashOffer!.version, /bash/i);
  assert.deepEqual(bashOffer!.aliases, ["sh"]);
  assert.deepEqual(bashOffer!.extensions, [".sh", ".bash"]);
  assert.deepEqual(fakeOffer, {
    name: "fake",
    version: "fake 1.0",
    aliases: ["fake-alias"],
    extensions: [".fake"],
  });
  assert.deepEqual(secondary.languages, registration.languages);
});

Deno.test("SecondaryNode registers the sandbox its jobs run in", async () => {
  await using master = new FakeMaster();
  await using _secondary = startSecondary(master, {
    sandbox: Sandbox.none(),
  });
  const link = await master.accept();
  assert.deepEqual(link.registration.sandbox, Sandbox.none().report);
  assert.equal(link.registration.sandbox?.mode, "none");
  assert.deepEqual(link.registration.sandbox?.layers, []);
});

Deno.test("SecondaryNode sends a heartbeat at once and every interval, never sampling twice at a time", async () => {
  await using master = new FakeMaster();
  let samples = 0;
  const slowSample = Promise.withResolvers<ResourceSample>();
  await using _secondary = startSecondary(master, {
    sampleResources: () => {
      samples++;
      return samples === 1
        ? slowSample.promise
        : Promise.resolve({ cpuPercent: 150, ramPercent: -1, ramUsedMb: 100 });
    },
  });
  const link = await master.accept(10);

  // The first sample hangs: heartbeats still go out, with the last numbers.
  for (let i = 0; i < 3; i++) await link.next("heartbeat");
  assert.deepEqual(link.heartbeats[0], {
    type: "heartbeat",
    cpuPercent: 0,
    ramPercent: 0,
    ramUsedMb: 0,
    running: 0,
  });
  assert.equal(samples, 1, "a second sample started while one was pending");

  // Samples out of range are clamped to what the protocol accepts.
  slowSample.resolve(SAMPLE);
  let heartbeat = await link.next("heartbeat");
  while (heartbeat.cpuPercent !== 100) {
    heartbeat = await link.next("heartbeat");
  }
  assert.deepEqual(heartbeat, {
    type: "heartbeat",
    cpuPercent: 100,
    ramPercent: 0,
    ramUsedMb: 100,
    running: 0,
  });
});

Deno.test("SecondaryNode runs a job, streaming its output, then its result named after the node", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master);
  const link = await master.accept();
  const started = nextEvent(secondary, "jobstart");
  const completed = nextEvent(secondary, "jobcomplete");

  await link.send({
    type: "run",
    jobId: "j1",
    job: {
      ...bash('echo "hello $1"; echo oops >&2'),
      args: ["kiln"],
    },
  });
  const { output, result } = await link.outputAndResult("j1");
  assert.deepEqual(await started, {
    jobId: "j1",
    node: "w1",
    language: "bash",
  });
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.jobId, "j1");
  assert.equal(result.node, "w1");
  assert.equal(result.language, "bash");
  assert.equal(result.stdout, "hello kiln\n");
  assert.equal(result.stderr, "oops\n");
  const streamed = (stream: string) =>
    output.filter((o) => o.stream === stream).map((o) => o.data).join("");
  assert.equal(streamed("stdout"), "hello kiln\n");
  assert.equal(streamed("stderr"), "oops\n");
  assert.deepEqual(await completed, result);
  assert.equal(secondary.running, 0);

  // A job in another offered language, by its alias.
  await link.send({
    type: "run",
    jobId: "j2",
    job: {
      language: "fake-alias",
      files: [{ name: "a.fake", content: "echo fake" }],
    },
  });
  const fake = await link.outputAndResult("j2");
  assert.equal(fake.result.stdout, "fake\n");
  assert.equal(fake.result.language, "fake");
});

Deno.test("SecondaryNode refuses a language it does not offer, an unknown one and an invalid job", async () => {
  await using master = new FakeMaster();
  await using _secondary = startSecondary(master, { languages: ["sh"] });
  const link = await master.accept();
  assert.deepEqual(link.registration.languages.map((l) => l.name), ["bash"]);

  await link.send({
    type: "run",
    jobId: "filtered",
    job: { language: "fake", files: [{ name: "a.fake", content: "" }] },
  });
  const filtered = await link.next("refused", "filtered");
  assert.match(
    filtered.reason,
    /language "fake" is not offered by "w1" \(it offers bash\)/,
  );

  await link.send({
    type: "run",
    jobId: "unknown",
    job: { language: "cobol", files: [{ name: "a.cob", content: "" }] },
  });
  const unknown = await link.next("refused", "unknown");
  assert.match(unknown.reason, /unknown language "cobol"; "w1" offers bash/);

  await link.send({
    type: "run",
    jobId: "invalid",
    job: { language: "bash", files: [] },
  });
  const invalid = await link.next("refused", "invalid");
  assert.match(invalid.reason, /invalid job: .*at least one source file/s);

  // Nothing of that took a slot.
  await link.send({ type: "run", jobId: "ok", job: bash("echo fine") });
  assert.equal((await link.outputAndResult("ok")).result.stdout, "fine\n");
});

Deno.test("SecondaryNode refuses a job beyond its slots, and takes one again once a slot frees", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master, { slots: 1 });
  const link = await master.accept();
  await startSleeper(link, "holder");
  assert.equal(secondary.running, 1);

  await link.send({ type: "run", jobId: "extra", job: bash("echo no") });
  const refused = await link.next("refused", "extra");
  assert.match(refused.reason, /^full: all 1 slots of "w1" are busy$/);
  let heartbeat = await link.next("heartbeat");
  assert.equal(heartbeat.running, 1);

  await link.send({ type: "cancel", jobId: "holder" });
  const holder = await link.next("result", "holder");
  assert.equal(holder.result.verdict, "internal_error");
  await link.send({ type: "run", jobId: "next", job: bash("echo yes") });
  assert.equal((await link.outputAndResult("next")).result.stdout, "yes\n");
  heartbeat = await link.next("heartbeat");
  assert.equal(heartbeat.running, 0);
});

Deno.test("SecondaryNode kills a cancelled job's whole process tree and still sends its result", async () => {
  await using master = new FakeMaster();
  await using _secondary = startSecondary(master);
  const link = await master.accept();
  const mark = await startSleeper(link, "j1");

  await link.send({ type: "cancel", jobId: "j1" });
  await link.send({ type: "cancel", jobId: "no-such-job" });
  const { result } = await link.next("result", "j1");
  assert.equal(result.verdict, "internal_error");
  assert.equal(result.reason, "cancelled: cancelled by the master");
  assert.deepEqual(
    await processesWithArg(mark),
    [],
    "a process of the job survived",
  );
});

Deno.test("SecondaryNode aborts its jobs when the master goes away, then registers again with the same id", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master);
  const first = await master.accept();
  const mark = await startSleeper(first, "j1");
  const disconnected = nextEvent(secondary, "disconnected");
  const aborted = nextEvent(secondary, "jobcomplete");
  const registeredAgain = nextEvent(secondary, "registered");

  await first.connection.close();
  assert.match((await disconnected).reason, /master closed the connection/);
  assert.equal(secondary.registered, false);
  const second = await master.accept();
  await registeredAgain;

  assert.equal(second.registration.id, first.registration.id);
  assert.equal(second.registration.id, secondary.id);
  assert.equal(secondary.registered, true);
  const result = await aborted;
  assert.equal(result.verdict, "internal_error");
  assert.match(result.reason ?? "", /connection to the master was lost/);
  assert.deepEqual(
    await processesWithArg(mark),
    [],
    "the job outlived its master",
  );
  assert.equal(secondary.running, 0);
  assert.ok(secondary.lastError instanceof ProtocolError);

  // The new link works like the first.
  await second.send({ type: "run", jobId: "j2", job: bash("echo again") });
  assert.equal((await second.outputAndResult("j2")).result.stdout, "again\n");
});

Deno.test({
  name:
    "SecondaryNode takes a master silent for masterTimeoutMs for lost: it stops its jobs, tells the master why and registers again",
  ignore: !PINGS,
  async fn() {
    await using master = new FakeMaster();
    await using secondary = startSecondary(master, { masterTimeoutMs: 300 });
    // A master that stopped: the link stays open, and nothing comes.
    const silent = await master.accept(20, { ping: false });
    const mark = await startSleeper(silent, "j1");
    const disconnected = nextEvent(secondary, "disconnected");
    const aborted = nextEvent(secondary, "jobcomplete");
    const registeredAgain = nextEvent(secondary, "registered");

    const { reason } = await disconnected;
    assert.match(
      reason,
      /^the master sent nothing for \d+ ms, past the node timeout of 300 ms$/,
    );
    const lastError = secondary.lastError;
    assert.ok(lastError instanceof ProtocolError);
    assert.equal(lastError.code, "timeout");
    assert.equal(lastError.message, reason);
    // Should the master wake up, it reads why the node left.
    await assert.rejects(
      silent.next("result", "j1"),
      (error: unknown) =>
        error instanceof ProtocolError && error.peerCode === "timeout" &&
        error.message === `secondary "w1" said: ${reason}`,
    );
    const result = await aborted;
    assert.equal(result.verdict, "internal_error");
    assert.match(result.reason ?? "", /connection to the master was lost/);
    assert.deepEqual(await processesWithArg(mark), [], "the job outlived it");

    // It dials again, as after any lost link, and stays with a master
    // that pings.
    const second = await master.accept();
    await registeredAgain;
    assert.equal(second.registration.id, secondary.id);
    await second.send({ type: "run", jobId: "j2", job: bash("echo again") });
    assert.equal((await second.outputAndResult("j2")).result.stdout, "again\n");
  },
});

Deno.test({
  name:
    "SecondaryNode stays with a master that pings, for many times its timeout, and the pings leave its jobs alone",
  ignore: !PINGS,
  async fn() {
    await using master = new FakeMaster();
    await using secondary = startSecondary(master, { masterTimeoutMs: 300 });
    const lost: string[] = [];
    secondary.addEventListener("disconnected", ({ detail }) => {
      lost.push(detail.reason);
    });
    const link = await master.accept(20);
    // About four timeouts long: pings are all the master sends meanwhile.
    await link.send({
      type: "run",
      jobId: "j1",
      job: bash('for i in 1 2 3 4; do echo "tick $i"; sleep 0.3; done'),
    });
    const { output, result } = await link.outputAndResult("j1");
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "tick 1\ntick 2\ntick 3\ntick 4\n");
    assert.equal(output.map((o) => o.data).join(""), result.stdout);
    assert.deepEqual(lost, []);
    assert.equal(secondary.registered, true);
  },
});

Deno.test({
  name:
    "SecondaryNode stretches a master timeout shorter than two pings to two, saying so",
  ignore: !PINGS,
  async fn() {
    const warnings: string[] = [];
    await configure({
      sinks: {
        memory: (record: LogRecord) => {
          if (record.level === "warning") {
            warnings.push(record.message.map(String).join(""));
          }
        },
      },
      loggers: [
        {
          category: ["kiln", "secondary"],
          lowestLevel: "warning",
          sinks: ["memory"],
        },
        {
          category: ["logtape", "meta"],
          lowestLevel: "warning",
          sinks: ["memory"],
        },
      ],
      reset: true,
    });
    try {
      await using master = new FakeMaster();
      await using secondary = startSecondary(master, { masterTimeoutMs: 30 });
      const registered = nextEvent(secondary, "registered");
      await master.accept(100);
      await registered;
      assert.ok(
        warnings.includes(
          "the master pings every 100 ms: waiting 200 ms for it before taking it for lost, not 30 ms",
        ),
        warnings.join("\n"),
      );
    } finally {
      await reset();
    }
  },
});

Deno.test("SecondaryNode does not watch the silence of a master of protocol 3, which never pings", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master, { masterTimeoutMs: 50 });
  const lost: string[] = [];
  secondary.addEventListener("disconnected", ({ detail }) => {
    lost.push(detail.reason);
  });
  const link = await master.accept(20, { versions: { min: 3, max: 3 } });
  // Ten timeouts of silence, with a job running.
  await link.send({
    type: "run",
    jobId: "j1",
    job: bash("sleep 0.5; echo still here"),
  });
  const { result } = await link.outputAndResult("j1");
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "still here\n");
  assert.deepEqual(lost, []);
  assert.equal(secondary.registered, true);
});

Deno.test("SecondaryNode with a wrong token logs an error on every attempt, exposes it, and keeps trying", async () => {
  const errors: string[] = [];
  await configure({
    sinks: {
      memory: (record: LogRecord) => {
        if (record.level === "error") {
          errors.push(record.message.map(String).join(""));
        }
      },
    },
    loggers: [
      {
        category: ["kiln", "secondary"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
    ],
    reset: true,
  });
  try {
    await using master = new FakeMaster("the-right-token-for-this-master");
    await using secondary = startSecondary(master, {
      token: "a-wrong-one-of-enough-length",
    });
    const failures: Error[] = [];
    const threeFailures = Promise.withResolvers<void>();
    secondary.addEventListener("connectfailed", ({ detail }) => {
      failures.push(detail.error);
      if (failures.length === 3) threeFailures.resolve();
    });
    for (let i = 0; i < 3; i++) {
      const refused = await master.acceptFailing();
      assert.ok(refused instanceof ProtocolError, String(refused));
      assert.equal(refused.code, "auth_failed");
    }
    await threeFailures.promise;
    for (const failure of failures) {
      assert.ok(failure instanceof ProtocolError);
      assert.equal(failure.code, "auth_failed");
    }
    assert.equal(secondary.lastError, failures.at(-1));
    assert.equal(secondary.registered, false);
    assert.equal(errors.length, 3, errors.join("\n"));
    for (const line of errors) {
      assert.match(
        line,
        new RegExp(
          `^cannot register with ${master.address}: master said: authentication failed: wrong token; retrying in \\d+ ms$`,
        ),
      );
    }
  } finally {
    await reset();
  }
});

Deno.test("SecondaryNode dials again until the master is there, backing off", async () => {
  // A port nobody listens on: take one, then free it.
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  taken.close();
  await using secondary = startSecondary(`127.0.0.1:${port}`);
  const delays: number[] = [];
  const failedThrice = Promise.withResolvers<void>();
  secondary.addEventListener("connectfailed", ({ detail }) => {
    assert.ok(detail.error instanceof ConnectionError);
    assert.match(detail.error.message, /connection refused/);
    delays.push(detail.retryInMs);
    if (delays.length === 3) failedThrice.resolve();
  });
  await failedThrice.promise;
  assert.ok(delays.every((ms) => ms >= 10 && ms <= 50), `${delays}`);
  assert.ok(delays[2]! >= delays[0]!, `backs off: ${delays}`);
  assert.equal(secondary.registered, false);
  assert.ok(secondary.lastError instanceof ConnectionError);

  // The master comes up on that port: the secondary gets in by itself.
  await using master = new FakeMaster(TOKEN, port);
  const registered = nextEvent(secondary, "registered");
  await master.accept();
  assert.deepEqual(await registered, { master: master.address, name: "w1" });
});

Deno.test("SecondaryNode retries a master that refuses its registration, exposing the reason", async () => {
  await using master = new FakeMaster();
  await using secondary = startSecondary(master);
  for (let i = 0; i < 2; i++) {
    const failed = nextEvent(secondary, "connectfailed");
    const connection = new Connection(await master.listener.accept());
    await serverHandshake(connection, {
      token: TOKEN,
      node: "fake-master",
      roles: ["secondary"],
    });
    assert.equal((await connection.receive()).type, "register");
    await connection.close({
      code: "duplicate_node",
      message: 'a node named "w1" is already registered',
    });
    const { error } = await failed;
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.peerCode, "duplicate_node");
    assert.equal(
      error.message,
      'master said: a node named "w1" is already registered',
    );
    assert.equal(secondary.lastError, error);
  }
  const registered = nextEvent(secondary, "registered");
  await master.accept();
  await registered;
});

Deno.test("SecondaryNode shutdown kills running jobs, closes the link and resolves finished", async () => {
  await using master = new FakeMaster();
  const secondary = startSecondary(master);
  const link = await master.accept();
  const mark = await startSleeper(link, "j1");

  await secondary.shutdown();
  await secondary.finished;
  assert.equal(secondary.registered, false);
  assert.equal(secondary.running, 0);
  assert.deepEqual(await processesWithArg(mark), []);
  // The master sees the link close, without a result: it places the job again.
  await assert.rejects(
    link.next("result", "j1"),
    (error: unknown) =>
      error instanceof ProtocolError && error.code === "closed",
  );
  await secondary.shutdown(); // idempotent
});

Deno.test("SecondaryNode shuts down when its signal aborts, or at once when it already has", async () => {
  await using master = new FakeMaster();
  const abort = new AbortController();
  const secondary = startSecondary(master, { signal: abort.signal });
  await master.accept();
  abort.abort();
  await secondary.finished;
  assert.equal(secondary.registered, false);

  const aborted = new AbortController();
  aborted.abort();
  await startSecondary(master, { signal: aborted.signal }).finished;
});

Deno.test("SecondaryNode refuses to start with no language to offer, saying why", async () => {
  const none = new SecondaryNode({
    master: "127.0.0.1:1",
    registry: new RunnerRegistry().register(shellRunner("fake", false)),
    sampleResources: () => Promise.resolve(SAMPLE),
  });
  await assert.rejects(
    none.ready,
    /Cannot start secondary ".+": no language to offer \(fake: fake is not installed\)/,
  );
  await none.finished;
  assert.match(none.lastError?.message ?? "", /no language to offer/);

  const filtered = new SecondaryNode({
    master: "127.0.0.1:1",
    registry: new RunnerRegistry()
      .register(new BashRunner())
      .register(shellRunner("fake", false)),
    languages: ["fake"],
    sampleResources: () => Promise.resolve(SAMPLE),
  });
  await assert.rejects(
    filtered.ready,
    /no language to offer among fake \(fake: fake is not installed\)/,
  );
  await filtered.finished;
});

Deno.test("SecondaryNode rejects bad options at once", () => {
  const base = {
    master: "127.0.0.1:7700",
    registry: testRegistry(),
  };
  assert.throws(
    () => new SecondaryNode({ ...base, languages: ["bash", "cobol", "lua"] }),
    {
      name: "RangeError",
      message:
        'Cannot start secondary: unknown languages "cobol", "lua" (known: bash, fake)',
    },
  );
  assert.throws(() => new SecondaryNode({ ...base, slots: 0 }), RangeError);
  assert.throws(() => new SecondaryNode({ ...base, maxCpu: 101 }), RangeError);
  assert.throws(
    () => new SecondaryNode({ ...base, reconnectMinMs: 10, reconnectMaxMs: 5 }),
    RangeError,
  );
  assert.throws(() => new SecondaryNode({ ...base, name: "" }), RangeError);
  for (const masterTimeoutMs of [0, 2 ** 31, Number.NaN]) {
    assert.throws(() => new SecondaryNode({ ...base, masterTimeoutMs }), {
      name: "RangeError",
      message:
        `Cannot start secondary: masterTimeoutMs must be a number from 1 to 2147483647, got ${masterTimeoutMs}`,
    });
  }
  assert.throws(
    () => new SecondaryNode({ ...base, limits: { wallTimeMs: 2 ** 31 } }),
    {
      name: "RangeError",
      message:
        "Cannot use secondary limits: wallTimeMs must be at most 86400000",
    },
  );
  assert.throws(
    () => new SecondaryNode({ ...base, master: "host:99999" }),
    TypeError,
  );
});
