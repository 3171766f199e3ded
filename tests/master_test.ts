/**
 * The master through its public API, over real TCP on 127.0.0.1 with real
 * programs: queueing, limits, cancellation, bad input and shutdown.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  getClusterStatus,
  type JobEvent,
  type JobRequest,
  type JobResult,
  MasterNode,
  type MasterNodeOptions,
  submitProgram,
} from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { encodeFrame } from "../lib/protocol/frame.ts";
import { processesWithArg, processMarker } from "./_processes.ts";

const TOKEN = "master-test-token-0123456789";

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    token: TOKEN,
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

function submit(
  master: MasterNode,
  request: JobRequest,
  onEvent?: (event: JobEvent) => void,
) {
  return submitProgram(request, {
    master: master.addr,
    token: TOKEN,
    ...onEvent ? { onEvent } : {},
  });
}

Deno.test("master runs 20 concurrent jobs on 2 slots, telling every queued client its position", async () => {
  await using master = startMaster({ slots: 2 });
  let running = 0;
  let maxRunning = 0;
  master.addEventListener(
    "jobstart",
    () => maxRunning = Math.max(maxRunning, ++running),
  );
  master.addEventListener("jobcomplete", () => running--);

  // Two jobs hold both slots until the test lets go, so the other 18 must queue.
  const holders = [0, 1].map(() => {
    const abort = new AbortController();
    const started = Promise.withResolvers<void>();
    const result = submitProgram(bash("sleep 600"), {
      master: master.addr,
      token: TOKEN,
      signal: abort.signal,
      onEvent: (event) => event.type === "started" && started.resolve(),
    }).catch(() => "released");
    return { abort, started: started.promise, result };
  });
  await Promise.all(holders.map((holder) => holder.started));

  const positions: number[][] = [];
  const queued: Promise<void>[] = [];
  const results = Array.from({ length: 18 }, (_, i) => {
    const seen: number[] = [];
    const firstPosition = Promise.withResolvers<void>();
    positions.push(seen);
    queued.push(firstPosition.promise);
    return submit(
      master,
      bash('read -r n; echo "job $n: $1"', {
        stdin: `${i}\n`,
        args: [`arg ${i}`],
      }),
      (event) => {
        if (event.type === "queued") {
          seen.push(event.position);
          firstPosition.resolve();
        }
      },
    );
  });
  await Promise.all(queued);
  assert.equal(master.queued, 18);
  for (const holder of holders) holder.abort.abort();

  for (const [i, result] of (await Promise.all(results)).entries()) {
    assert.equal(result.verdict, "ok", `job ${i}: ${result.reason}`);
    assert.equal(result.stdout, `job ${i}: arg ${i}\n`);
    assert.equal(result.node, "master");
    assert.ok(result.queuedMs > 0);
    const seen = positions[i]!;
    // Positions only move forward, and every queued job reaches the front.
    assert.deepEqual(
      seen,
      [...seen].sort((a, b) => b - a),
      `job ${i}: ${seen}`,
    );
    assert.equal(seen.at(-1), 1, `job ${i} never heard it was next: ${seen}`);
  }
  assert.equal(maxRunning, 2, "never more jobs at once than slots");
  await Promise.all(holders.map((holder) => holder.result));
});

Deno.test("master kills a program at its time limit, with the child it spawned, leaving no workdir", async () => {
  const workRoot = await Deno.makeTempDir({ prefix: "kiln-test-" });
  try {
    await using master = startMaster({
      slots: 1,
      workRoot,
      limits: { wallTimeMs: 2000 },
    });
    const mark = processMarker();
    const result = await submit(
      master,
      {
        language: "python",
        files: [{ name: "forever.py", content: FOREVER_PY }],
        args: [mark],
        limits: { wallTimeMs: 700 },
      },
    );
    assert.equal(result.verdict, "time_limit");
    assert.match(result.reason ?? "", /700 ms/);
    assert.equal(result.stdout, "started\n", "the program spawned its child");
    assert.deepEqual(
      await processesWithArg(mark),
      [],
      "the spawned child outlived the job",
    );
    assert.deepEqual(await Array.fromAsync(Deno.readDir(workRoot)), []);
  } finally {
    await Deno.remove(workRoot, { recursive: true });
  }
});

/** Spawns a `sleep` that carries the marker given as argument (see `./_processes.ts`), then spins. */
const FOREVER_PY = `
import shutil, subprocess, sys
subprocess.Popen([sys.argv[1], "600"], executable=shutil.which("sleep"))
print("started", flush=True)
while True:
    pass
`;

Deno.test("master rejects bad jobs with a reason, and still runs good ones", async () => {
  await using master = startMaster({ slots: 1 });
  const unknown = await submit(master, {
    language: "cobol",
    files: [{ name: "a.cob", content: "" }],
  });
  assert.equal(unknown.verdict, "rejected");
  assert.match(
    unknown.reason ?? "",
    /unknown language "cobol"; this cluster offers .*bash/,
  );

  const noFiles = await submit(master, { language: "bash", files: [] });
  assert.equal(noFiles.verdict, "rejected");
  assert.match(
    noFiles.reason ?? "",
    /invalid job: .*at least one source file/s,
  );

  const escape = await submit(master, {
    language: "bash",
    files: [{ name: "../evil.sh", content: "" }],
  });
  assert.equal(escape.verdict, "rejected");
  assert.match(escape.reason ?? "", /path separator/);

  const badEntry = await submit(master, bash("true", { entry: "other.sh" }));
  assert.equal(badEntry.verdict, "rejected");
  assert.match(badEntry.reason ?? "", /entry does not name one of the files/);

  const good = await submit(master, bash("echo fine"));
  assert.equal(good.verdict, "ok");
  assert.equal(good.stdout, "fine\n");
});

Deno.test("master cuts output at the limit while it streams, when a program prints 100 MB", async () => {
  await using master = startMaster({ slots: 1 });
  const chunks: string[] = [];
  const result = await submit(
    master,
    {
      language: "python",
      files: [{
        name: "flood.py",
        content:
          "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(line)\n",
      }],
    },
    (event) => event.type === "output" && chunks.push(event.data),
  );
  assert.equal(result.verdict, "output_limit");
  assert.equal(result.truncated, true);
  assert.ok(
    result.stdout.length <= 1024 * 1024,
    `kept ${result.stdout.length} bytes`,
  );
  assert.ok(result.stdout.startsWith("xxxx"));
  assert.equal(
    chunks.join(""),
    result.stdout,
    "streamed output is what the result keeps",
  );
});

Deno.test("master cancels a job whose client disconnects, and frees its slot", async () => {
  await using master = startMaster({ slots: 1 });
  const abort = new AbortController();
  const mark = processMarker();
  const running = Promise.withResolvers<number[]>();
  const completed = new Promise<JobResult>((resolve) =>
    master.addEventListener("jobcomplete", (event) => resolve(event.detail), {
      once: true,
    })
  );
  const job = bash('(exec -a "$1" sleep 600) & echo started; wait', {
    args: [mark],
  });
  const gone = submitProgram(job, {
    master: master.addr,
    token: TOKEN,
    signal: abort.signal,
    onEvent: (event) => {
      if (event.type !== "output") return;
      // Look while the job runs, then disconnect.
      processesWithArg(mark).then(running.resolve, running.reject).finally(() =>
        abort.abort(new Error("the user pressed Ctrl+C"))
      );
    },
  });
  await assert.rejects(gone, /Ctrl\+C/);
  assert.notDeepEqual(await running.promise, [], "the job was running");
  const result = await completed;
  assert.equal(result.verdict, "internal_error");
  assert.match(result.reason ?? "", /cancelled/);
  assert.deepEqual(
    await processesWithArg(mark),
    [],
    "the job's process survived its client",
  );
  const next = await submit(master, bash("echo next"));
  assert.equal(next.stdout, "next\n", "the slot was freed");
});

Deno.test("master removes a queued job whose client disconnects, moving the others up", async () => {
  await using master = startMaster({ slots: 1 });
  // Each job holds its place until the test aborts it: no timing involved.
  const hold = (
    name: string,
    onEvent: (event: JobEvent) => void = () => {},
  ) => {
    const abort = new AbortController();
    const result = submitProgram(bash(`echo ${name}; sleep 600`), {
      master: master.addr,
      token: TOKEN,
      signal: abort.signal,
      onEvent,
    }).catch((error: Error) => error.message);
    return { abort: (why: string) => abort.abort(new Error(why)), result };
  };
  const firstStarted = Promise.withResolvers<void>();
  const first = hold(
    "first",
    (event) => event.type === "started" && firstStarted.resolve(),
  );
  await firstStarted.promise;
  const secondQueued = Promise.withResolvers<void>();
  const second = hold(
    "second",
    (event) => event.type === "queued" && secondQueued.resolve(),
  );
  await secondQueued.promise;
  const thirdPositions: number[] = [];
  const thirdQueued = Promise.withResolvers<void>();
  const thirdStarted = Promise.withResolvers<void>();
  const third = hold("third", (event) => {
    if (event.type === "queued") {
      thirdPositions.push(event.position);
      if (event.position === 2) thirdQueued.resolve();
      if (event.position === 1) thirdStarted.resolve(); // moved up
    }
  });
  await thirdQueued.promise;
  assert.equal(master.queued, 2);

  second.abort("second gave up");
  assert.equal(await second.result, "second gave up");
  await thirdStarted.promise;
  assert.deepEqual(thirdPositions, [2, 1]);
  assert.equal(master.queued, 1);

  const runs = new Promise<string>((resolve) =>
    master.addEventListener(
      "jobstart",
      (event) => resolve(event.detail.jobId),
      { once: true },
    )
  );
  first.abort("first done");
  await runs;
  assert.equal(master.queued, 0);
  third.abort("third done");
  await Promise.all([first.result, third.result]);
});

Deno.test("master closes a connection that sends garbage, and keeps serving", async () => {
  await using master = startMaster({ slots: 1 });
  for (
    const garbage of [
      new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
      encodeFrame({ type: "hello", role: "client" }),
    ]
  ) {
    const conn = await Deno.connect(master.addr);
    await conn.write(garbage);
    // The master answers with an error frame (or nothing) and closes: reading reaches EOF.
    const buffer = new Uint8Array(4096);
    while ((await conn.read(buffer)) !== null);
    conn.close();
  }
  const result = await submit(master, bash("echo still here"));
  assert.equal(result.stdout, "still here\n");
});

Deno.test("master refuses messages a client may not send after the handshake", async () => {
  await using master = startMaster({ slots: 1 });
  const connection = new Connection(await Deno.connect(master.addr));
  await clientHandshake(connection, { role: "client", token: TOKEN });
  await connection.send({ type: "welcome", version: 2, node: "impostor" });
  await assert.rejects(connection.receive(), /may not send "welcome"/);
  await connection.close();
});

Deno.test("master ends queued and running jobs with a result when it shuts down", async () => {
  const master = startMaster({ slots: 1 });
  const started = Promise.withResolvers<void>();
  const running = submit(
    master,
    bash("echo up; sleep 600"),
    (event) => event.type === "output" && started.resolve(),
  );
  await started.promise;
  const waiting = Promise.withResolvers<void>();
  const queued = submit(
    master,
    bash("echo never"),
    (event) => event.type === "queued" && waiting.resolve(),
  );
  await waiting.promise;
  await master.shutdown();
  const [a, b] = await Promise.all([running, queued]);
  assert.equal(a.verdict, "internal_error");
  assert.match(a.reason ?? "", /shutting down/);
  assert.equal(b.verdict, "internal_error");
  assert.match(b.reason ?? "", /shut down before the job started/);
  await master.finished;
});

Deno.test("master shuts down when its signal aborts", async () => {
  const abort = new AbortController();
  const master = startMaster({ signal: abort.signal });
  abort.abort();
  await master.finished;
  // Refused, or reset when the connection raced the closing listener.
  await assert.rejects(Deno.connect(master.addr), /refused|reset/i);
});

Deno.test("master logs a resource line with CPU, RAM and programs running", async () => {
  const records: string[] = [];
  const logged = Promise.withResolvers<void>();
  await configure({
    sinks: {
      memory: (record: LogRecord) => {
        const text = record.message.map(String).join("");
        records.push(text);
        if (text.startsWith("resources:")) logged.resolve();
      },
    },
    loggers: [
      { category: ["kiln", "master"], lowestLevel: "info", sinks: ["memory"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
    ],
    reset: true,
  });
  try {
    await using _master = startMaster({
      slots: 3,
      resourceLogIntervalMs: 20,
      sampleResources: () =>
        Promise.resolve({ cpuPercent: 12.5, ramUsedMb: 2048, ramPercent: 8.3 }),
    });
    await logged.promise;
    assert.ok(
      records.includes(
        "resources: cpu 12.5%, ram 2048 MB (8.3%), programs 0/3, queued 0, nodes 0",
      ),
      records.join("\n"),
    );
  } finally {
    await reset();
  }
});

Deno.test("master rejects a job with too many files or a NUL in an argument", async () => {
  await using master = startMaster({ slots: 1 });
  const files = Array.from(
    { length: 257 },
    (_, i) => ({ name: `f${i}.sh`, content: "" }),
  );
  const many = await submit(master, { language: "bash", files });
  assert.equal(many.verdict, "rejected");
  assert.match(many.reason ?? "", /at most 256 source files/);
  const nul = await submit(master, bash("true", { args: ["a\0b"] }));
  assert.equal(nul.verdict, "rejected");
  assert.match(nul.reason ?? "", /argument contains NUL/);
});

Deno.test("master delivers a result whose escaped output would not fit in a frame", async () => {
  await using master = startMaster({
    slots: 1,
    maxFrameBytes: 64 * 1024,
    limits: { outputBytes: 60 * 1024 },
  });
  // Control characters take six bytes each in JSON: 60 KB of them is 360 KB.
  const result = await submit(
    master,
    bash("head -c 100000 /dev/zero | tr '\\0' '\\001'"),
  );
  assert.equal(result.verdict, "output_limit");
  assert.equal(result.truncated, true);
  assert.ok(result.stdout.length > 1000);
  assert.equal(result.stdout, "\u0001".repeat(result.stdout.length));
});

Deno.test("master rejects a job when its queue is full, with a retry hint", async () => {
  await using master = startMaster({ slots: 1, maxQueue: 1 });
  const holds: AbortController[] = [];
  const hold = (event: "started" | "queued") => {
    const abort = new AbortController();
    holds.push(abort);
    const reached = Promise.withResolvers<void>();
    submitProgram(bash("sleep 600"), {
      master: master.addr,
      token: TOKEN,
      signal: abort.signal,
      onEvent: (e) => e.type === event && reached.resolve(),
    }).catch(() => {});
    return reached.promise;
  };
  await hold("started");
  await hold("queued");
  const rejected = await submit(master, bash("echo no room"));
  assert.equal(rejected.verdict, "rejected");
  assert.match(
    rejected.reason ?? "",
    /queue is full \(1 jobs waiting\); retry in \d+ s/,
  );
  assert.ok(
    rejected.retryAfterMs! >= 1000 && rejected.retryAfterMs! <= 60_000,
    `${rejected.retryAfterMs}`,
  );
  for (const abort of holds) abort.abort();
});

Deno.test("master, once ready, queues a client's job in the turn it accepts it, so both go out in one write; master.run() still returns first", async () => {
  await using master = startMaster({ slots: 1 });
  await master.ready;
  const hold = new AbortController();
  const held = Promise.withResolvers<void>();
  const holder = submitProgram(bash("sleep 600"), {
    master: master.addr,
    token: TOKEN,
    signal: hold.signal,
    onEvent: (event) => event.type === "started" && held.resolve(),
  }).catch(() => "released");
  await held.promise;
  // Whatever runs one turn after `jobaccepted` comes after `jobqueued`.
  const order: string[] = [];
  master.addEventListener("jobaccepted", () => {
    order.push("accepted");
    queueMicrotask(() => order.push("next turn"));
  });
  master.addEventListener("jobqueued", () => order.push("queued"));
  const waiter = new AbortController();
  const queued = Promise.withResolvers<void>();
  const waiting = submitProgram(bash("echo waits"), {
    master: master.addr,
    token: TOKEN,
    signal: waiter.signal,
    onEvent: (event) => event.type === "queued" && queued.resolve(),
  }).catch(() => "released");
  await queued.promise;
  assert.deepEqual(order, ["accepted", "queued", "next turn"]);
  // An in-process caller hears nothing after `accepted` before run()
  // returns its handle.
  const heard: string[] = [];
  const stop = new AbortController();
  const run = master.run(bash("echo waits too"), {
    client: "http:bob",
    signal: stop.signal,
    onEvent: (event) => heard.push(event.type),
  });
  assert.deepEqual(heard, ["accepted"]);
  stop.abort();
  waiter.abort();
  hold.abort();
  assert.equal((await run.result).verdict, "internal_error");
  assert.equal(await waiting, "released");
  assert.equal(await holder, "released");
});

Deno.test("master refuses a big frame from a peer that has not authenticated", async () => {
  await using master = startMaster({ slots: 1 });
  const raw = await Deno.connect(master.addr);
  // 100 000 bytes declared: allowed after the handshake, too big before it.
  await raw.write(new Uint8Array([0, 1, 0x86, 0xa0]));
  const buffer = new Uint8Array(4096);
  const read = await raw.read(buffer);
  assert.match(
    new TextDecoder().decode(buffer.subarray(4, read ?? 4)),
    /frame_too_large/,
  );
  raw.close();
});

Deno.test("master without a token warns, serves clients that have none, and logs its sandbox", async () => {
  const records: string[] = [];
  await configure({
    sinks: {
      memory: (record: LogRecord) =>
        records.push(record.message.map(String).join("")),
    },
    loggers: [
      {
        category: ["kiln", "master"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
      {
        category: ["kiln", "sandbox"],
        lowestLevel: "info",
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
    await using master = new MasterNode({
      port: 0,
      slots: 1,
      resourceLogIntervalMs: 0,
    });
    const result = await submitProgram(bash("echo open"), {
      master: master.addr,
    });
    assert.equal(result.stdout, "open\n");
    assert.ok(
      records.some((line) =>
        line.startsWith("no token set: anyone who can reach 127.0.0.1")
      ),
      records.join("\n"),
    );
    // What jobs run under is said at start, whatever this host has.
    assert.ok(
      records.some((line) => /^sandbox \(auto\): /.test(line)),
      records.join("\n"),
    );
  } finally {
    await reset();
  }
});

Deno.test("master.run() serves an in-process caller like a TCP client: events, result, rejection, cancellation", async () => {
  await using master = startMaster({ slots: 1 });
  const events: string[] = [];
  const ok = master.run(bash("echo in-process"), {
    client: "http:alice",
    onEvent: (event) => events.push(event.type),
  });
  assert.match(ok.jobId, /^[0-9a-f-]{36}$/);
  const result = await ok.result;
  assert.equal(result.verdict, "ok");
  assert.equal(result.stdout, "in-process\n");
  assert.equal(result.client, "http:alice");
  assert.deepEqual(events.filter((type) => type !== "output"), [
    "accepted",
    "started",
    "result",
  ]);

  const invalid = await master.run({ language: "bash", files: [] }, {
    client: "http:alice",
  }).result;
  assert.equal(invalid.verdict, "rejected");
  assert.match(invalid.reason ?? "", /at least one source file/);

  const stop = new AbortController();
  const started = Promise.withResolvers<void>();
  const long = master.run(bash("echo up; exec sleep 60"), {
    client: "http:alice",
    signal: stop.signal,
    onEvent: (event) => event.type === "output" && started.resolve(),
  });
  await started.promise;
  stop.abort();
  const cancelled = await long.result;
  assert.equal(cancelled.verdict, "internal_error");
  assert.match(cancelled.reason ?? "", /cancelled by the client/);
});

Deno.test("master.run(): a listener that cancels a queued job while another starts gives it exactly one result, unstarted", async () => {
  // The master's own load reads 100 % CPU until the test lets it go, so
  // both jobs wait; then one sample frees both slots in one dispatch.
  let cpuPercent = 100;
  await using master = startMaster({
    slots: 2,
    maxCpu: 50,
    heartbeatIntervalMs: 50,
    sampleResources: () =>
      Promise.resolve({ cpuPercent, ramPercent: 0, ramUsedMb: 0 }),
  });
  const completions = new Map<string, number>();
  master.addEventListener("jobcomplete", ({ detail }) => {
    completions.set(detail.jobId, (completions.get(detail.jobId) ?? 0) + 1);
  });
  const bothQueued = Promise.withResolvers<void>();
  let queued = 0;
  master.addEventListener(
    "jobqueued",
    () => ++queued === 2 && bothQueued.resolve(),
  );

  const giveUp = new AbortController();
  const first = master.run(bash("echo first"), {
    client: "http:alice",
    // Runs synchronously inside the start of `first`.
    onEvent: (event) => event.type === "started" && giveUp.abort(),
  });
  const secondEvents: string[] = [];
  const second = master.run(bash("echo second"), {
    client: "http:alice",
    signal: giveUp.signal,
    onEvent: (event) => secondEvents.push(event.type),
  });
  await bothQueued.promise;
  cpuPercent = 0;
  const [ran, cancelled] = await Promise.all([first.result, second.result]);
  assert.equal(ran.verdict, "ok");
  assert.equal(ran.stdout, "first\n");
  assert.equal(cancelled.verdict, "internal_error");
  assert.equal(cancelled.reason, "cancelled: cancelled by the client");
  assert.deepEqual(secondEvents, ["accepted", "queued", "result"]);
  assert.equal(completions.get(second.jobId), 1);
  assert.equal(master.running + master.queued, 0);
});

Deno.test("master.run() with a signal aborted before the call, or in the same tick, ends the job cancelled and never runs it", async () => {
  await using master = startMaster({ slots: 1 });
  const started: string[] = [];
  master.addEventListener(
    "jobstart",
    ({ detail }) => started.push(detail.jobId),
  );
  const completions: string[] = [];
  master.addEventListener(
    "jobcomplete",
    ({ detail }) => completions.push(detail.jobId),
  );

  const beforeEvents: string[] = [];
  const before = master.run(bash("echo ran"), {
    client: "http:alice",
    signal: AbortSignal.abort(),
    onEvent: (event) => beforeEvents.push(event.type),
  });
  const sameTick = new AbortController();
  const sameTickEvents: string[] = [];
  const during = master.run(bash("echo ran"), {
    client: "http:alice",
    signal: sameTick.signal,
    onEvent: (event) => sameTickEvents.push(event.type),
  });
  sameTick.abort();
  for (const result of [await before.result, await during.result]) {
    assert.equal(result.verdict, "internal_error");
    assert.equal(result.reason, "cancelled: cancelled by the client");
    assert.equal(result.stdout, "");
  }
  assert.deepEqual(beforeEvents, ["accepted", "result"]);
  assert.deepEqual(sameTickEvents, ["accepted", "result"]);
  assert.deepEqual(started, []);
  assert.deepEqual(completions, [before.jobId, during.jobId]);
  // The master still runs the next job.
  const next = await master.run(bash("echo next"), { client: "http:alice" })
    .result;
  assert.equal(next.stdout, "next\n");
});

Deno.test("master.status() and getClusterStatus() give the cluster's status, not the wire message", async () => {
  await using master = startMaster({ slots: 1 });
  await master.ready;
  const local = master.status();
  assert.equal("type" in local, false);
  assert.deepEqual(Object.keys(local).sort(), [
    "master",
    "nodes",
    "queued",
    "running",
  ]);
  const remote = await getClusterStatus({ master: master.addr, token: TOKEN });
  assert.equal("type" in remote, false);
  assert.deepEqual(Object.keys(remote).sort(), Object.keys(local).sort());
  assert.equal(remote.master, local.master);
});
