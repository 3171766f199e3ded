/**
 * The HTTP API against a real master on loopback: jobs over REST and
 * WebSocket, the events feed, auth, Piston compatibility, metrics, history.
 */
import assert from "node:assert/strict";
import { Credentials, JobHistory, type JobResult } from "../mod.ts";
import { bash, startHttpCluster } from "./_http_cluster.ts";

const startCluster = startHttpCluster;

async function json(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.json() };
}

function post(url: string, body: unknown, token?: string) {
  return json(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: {
      "content-type": "application/json",
      ...token ? { authorization: `Bearer ${token}` } : {},
    },
  });
}

/** Every message of a job's WebSocket stream, until the server closes it. */
function streamJob(
  url: string,
  onMessage: (message: Record<string, unknown>, socket: WebSocket) => void =
    () => {},
): Promise<Record<string, unknown>[]> {
  const messages: Record<string, unknown>[] = [];
  const socket = new WebSocket(url);
  const closed = Promise.withResolvers<Record<string, unknown>[]>();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    messages.push(message);
    onMessage(message, socket);
  };
  socket.onclose = () => closed.resolve(messages);
  socket.onerror = () => {};
  return closed.promise;
}

/** Reads Server-Sent Events until `until` says stop, then cancels the stream. */
async function readEvents(
  response: Response,
  until: (event: string, data: Record<string, unknown>) => boolean,
): Promise<{ event: string; data: Record<string, unknown> }[]> {
  const seen: { event: string; data: Record<string, unknown> }[] = [];
  const reader = response.body!.pipeThrough(new TextDecoderStream())
    .getReader();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return seen;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
        seen.push({ event, data });
        if (until(event, data)) return seen;
      }
    }
  } finally {
    await reader.cancel();
  }
}

/** A tiny Prometheus text parser: `name{labels}` to value, comments checked. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      assert.match(line, /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$/);
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(match, `not a Prometheus sample: ${line}`);
    const value = Number(match[2]!.replace("+Inf", "Infinity"));
    assert.ok(!Number.isNaN(value), `not a number: ${line}`);
    samples.set(match[1]!, value);
  }
  return samples;
}

Deno.test("POST /api/v1/jobs waits for the result; GET finds the job and lists it", async () => {
  await using cluster = startCluster();
  const { status, body } = await post(
    `${cluster.base}/api/v1/jobs`,
    bash("echo hello"),
  );
  assert.equal(status, 200);
  const result = body as JobResult;
  assert.equal(result.verdict, "ok");
  assert.equal(result.stdout, "hello\n");
  assert.equal(result.client, "http");

  const one = await json(`${cluster.base}/api/v1/jobs/${result.jobId}`);
  assert.equal(one.status, 200);
  const job = one.body as Record<string, unknown>;
  assert.equal(job.state, "finished");
  assert.equal(job.verdict, "ok");
  assert.equal(job.language, "bash");
  assert.equal((job.result as JobResult).stdout, "hello\n");

  const list = await json(`${cluster.base}/api/v1/jobs?language=bash&limit=5`);
  const jobs = (list.body as { jobs: { jobId: string }[] }).jobs;
  assert.equal(jobs[0]?.jobId, result.jobId);
  const none = await json(`${cluster.base}/api/v1/jobs?verdict=time_limit`);
  assert.deepEqual(none.body, { jobs: [] });
  assert.equal((await json(`${cluster.base}/api/v1/jobs/nope`)).status, 404);
});

Deno.test("POST /api/v1/jobs with wait false answers 202 at once; the WebSocket streams the job to its result", async () => {
  await using cluster = startCluster();
  const { status, body } = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash("echo out; echo err >&2"),
    wait: false,
  });
  assert.equal(status, 202);
  const { jobId } = body as { jobId: string };
  const ws =
    `ws://127.0.0.1:${cluster.api.addr.port}/api/v1/jobs/${jobId}/stream`;
  const messages = await streamJob(ws);
  const last = messages.at(-1)!;
  assert.equal(last.type, "result");
  const result = last.result as JobResult;
  assert.equal(result.jobId, jobId);
  assert.equal(result.stdout, "out\n");
  assert.equal(result.stderr, "err\n");
  // Whatever was replayed or live, the output chunks add up to the result's.
  const stdout = messages.filter((m) =>
    m.type === "output" && m.stream === "stdout"
  )
    .map((m) => m.data).join("");
  assert.ok(stdout === "" || stdout === "out\n");

  const again = await json(`${cluster.base}/api/v1/jobs/${jobId}`);
  assert.equal((again.body as { state: string }).state, "finished");
});

Deno.test("the WebSocket carries stdin typed while an interactive job runs", async () => {
  await using cluster = startCluster();
  const { body } = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash('echo "name?"; read -r name; echo "hello $name"'),
    interactive: true,
    wait: false,
  });
  const { jobId } = body as { jobId: string };
  let asked = false;
  const messages = await streamJob(
    `ws://127.0.0.1:${cluster.api.addr.port}/api/v1/jobs/${jobId}/stream`,
    (message, socket) => {
      if (message.type === "output" && !asked) {
        // The program asked and waits: answer it, then end its stdin.
        asked = true;
        socket.send(
          JSON.stringify({ type: "stdin", data: "Ada\n", eof: true }),
        );
      }
    },
  );
  const result = messages.at(-1)!.result as JobResult;
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "name?\nhello Ada\n");
});

Deno.test("the WebSocket replays a running job's events and cancels it", async () => {
  await using cluster = startCluster();
  const { body } = await post(`${cluster.base}/api/v1/jobs`, {
    ...bash("echo started; exec sleep 60"),
    wait: false,
  });
  const { jobId } = body as { jobId: string };
  let asked = false;
  const messages = await streamJob(
    `ws://127.0.0.1:${cluster.api.addr.port}/api/v1/jobs/${jobId}/stream`,
    (message, socket) => {
      if (message.type === "output" && !asked) {
        asked = true;
        socket.send(JSON.stringify({ type: "bogus" }));
      }
      if (message.type === "error") {
        assert.match(String(message.message), /unknown message/);
        socket.send(JSON.stringify({ type: "cancel" }));
      }
    },
  );
  const types = messages.map((m) => m.type);
  assert.equal(types[0], "accepted");
  assert.ok(types.includes("started"));
  assert.ok(types.includes("error"));
  const result = messages.at(-1)!.result as JobResult;
  assert.notEqual(result.verdict, "ok");
  assert.match(result.reason ?? "", /cancel/);
});

Deno.test("GET /api/v1/events sends the status at once and every job change", async () => {
  await using cluster = startCluster();
  const response = await fetch(`${cluster.base}/api/v1/events`);
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  let jobId = "";
  const seen = await readEvents(response, (event, data) => {
    if (event === "status" && jobId === "") {
      jobId = "pending";
      post(`${cluster.base}/api/v1/jobs`, bash("echo sse")).then(({ body }) =>
        assert.equal((body as JobResult).verdict, "ok")
      );
    }
    return event === "job" && data.state === "finished";
  });
  assert.equal(seen[0]?.event, "status");
  assert.equal(typeof seen[0]?.data.master, "string");
  assert.equal(seen[0]?.data.type, undefined); // the status, not the wire message
  const finished = seen.at(-1)!.data;
  assert.equal(finished.verdict, "ok");
  assert.equal(finished.client, "http");
  assert.equal(finished.language, "bash");
  assert.ok(typeof finished.timeMs === "number");
});

Deno.test("runtimes, nodes and healthz describe the cluster", async () => {
  await using cluster = startCluster();
  await cluster.master.ready;
  const runtimes = (await json(`${cluster.base}/api/v1/runtimes`)).body as {
    language: string;
    version: string;
    aliases: string[];
  }[];
  const bashRuntime = runtimes.find((r) => r.language === "bash");
  assert.ok(bashRuntime);
  assert.ok(Array.isArray(bashRuntime.aliases));
  const piston = (await json(`${cluster.base}/api/v2/runtimes`)).body as {
    language: string;
    version: string;
    aliases: string[];
  }[];
  assert.match(
    piston.find((r) => r.language === "bash")!.version,
    /^\d+\.\d+\.\d+$/,
  );
  const nodes = (await json(`${cluster.base}/api/v1/nodes`)).body as {
    type?: string;
    master: string;
    nodes: unknown[];
  };
  assert.equal(typeof nodes.master, "string");
  assert.equal(nodes.type, undefined); // the status, not the wire message
  assert.equal(nodes.nodes.length, 1);
  assert.deepEqual(await json(`${cluster.base}/healthz`), {
    status: 200,
    body: { ok: true },
  });
});

Deno.test("named credentials: no or bad token is 401, a node token 403, a client token runs as that client", async () => {
  const credentials = Credentials.parse(
    JSON.stringify({
      credentials: [
        { name: "alice", role: "client", token: "alice-token-0123456789" },
        { name: "east", role: "node", token: "east-token-0123456789" },
      ],
    }),
    "test",
  );
  await using cluster = startCluster({ credentials });
  const url = `${cluster.base}/api/v1/jobs`;
  const none = await post(url, bash("echo x"));
  assert.equal(none.status, 401);
  assert.ok(typeof (none.body as { error: string }).error === "string");
  assert.equal(
    (await post(url, bash("echo x"), "wrong-token-0123456789")).status,
    401,
  );
  const node = await post(url, bash("echo x"), "east-token-0123456789");
  assert.equal(node.status, 403);
  const alice = await post(url, bash("echo x"), "alice-token-0123456789");
  assert.equal(alice.status, 200);
  assert.equal((alice.body as JobResult).client, "alice");
  // EventSource and WebSocket cannot set headers: the query parameter works.
  const byQuery = await json(
    `${cluster.base}/api/v1/nodes?access_token=alice-token-0123456789`,
  );
  assert.equal(byQuery.status, 200);
  assert.equal((await json(`${cluster.base}/healthz`)).status, 200);
});

Deno.test("named credentials: a client sees only its own jobs", async () => {
  const ALICE = "alice-token-0123456789";
  const BOB = "bob-token-01234567890";
  const credentials = Credentials.parse(
    JSON.stringify({
      credentials: [
        { name: "alice", role: "client", token: ALICE },
        { name: "bob", role: "client", token: BOB },
      ],
    }),
    "test",
  );
  await using cluster = startCluster({ credentials });
  const bobs = await post(
    `${cluster.base}/api/v1/jobs`,
    bash("echo bob's secret"),
    BOB,
  );
  const { jobId } = bobs.body as JobResult;
  const as = (token: string) => ({
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(
    (await json(`${cluster.base}/api/v1/jobs/${jobId}`, as(BOB))).status,
    200,
  );
  const peek = await json(`${cluster.base}/api/v1/jobs/${jobId}`, as(ALICE));
  assert.equal(peek.status, 404);
  const list = await json(
    `${cluster.base}/api/v1/jobs?client=bob`,
    as(ALICE),
  );
  assert.deepEqual((list.body as { jobs: unknown[] }).jobs, []);
  const stream = await fetch(
    `${cluster.base}/api/v1/jobs/${jobId}/stream?access_token=${ALICE}`,
  );
  assert.equal(stream.status, 404);
  await stream.body?.cancel();
});

Deno.test("a shared token is the bearer token, and its jobs run as client http", async () => {
  await using cluster = startCluster({ token: "shared-secret-0123456789" });
  assert.equal(
    (await post(`${cluster.base}/api/v1/jobs`, bash("echo x"))).status,
    401,
  );
  const ok = await post(
    `${cluster.base}/api/v1/jobs`,
    bash("echo x"),
    "shared-secret-0123456789",
  );
  assert.equal(ok.status, 200);
  assert.equal((ok.body as JobResult).client, "http");
});

Deno.test("Piston's documented execute example gets a Piston-shaped answer", async () => {
  await using cluster = startCluster();
  // The request of Piston's docs/api-v2.md, word for word.
  const { status, body } = await post(`${cluster.base}/api/v2/execute`, {
    language: "js",
    version: "24.16.0",
    files: [{ name: "my_cool_code.js", content: "console.log(process.argv)" }],
    stdin: "",
    args: ["1", "2", "3"],
    compile_timeout: 10000,
    run_timeout: 3000,
    compile_memory_limit: -1,
    run_memory_limit: -1,
  });
  assert.equal(status, 200, JSON.stringify(body));
  const answer = body as {
    language: string;
    version: string;
    run: Record<string, unknown>;
  };
  assert.equal(answer.language, "javascript");
  assert.match(answer.version, /^\d+\.\d+\.\d+$/);
  assert.deepEqual(Object.keys(answer.run).sort(), [
    "code",
    "output",
    "signal",
    "stderr",
    "stdout",
  ]);
  assert.equal(answer.run.code, 0);
  assert.equal(answer.run.signal, null);
  assert.match(
    String(answer.run.stdout),
    /["']1["'],\s+["']2["'],\s+["']3["']/,
  );
  assert.equal(answer.run.output, answer.run.stdout);

  const compiled = await post(`${cluster.base}/api/v2/execute`, {
    language: "c",
    version: "*",
    files: [{
      content: '#include <stdio.h>\nint main(){puts("hi");return 3;}',
    }],
  });
  const c = compiled.body as {
    run: { stdout: string; code: number };
    compile: { code: number };
  };
  assert.equal(c.run.stdout, "hi\n");
  assert.equal(c.run.code, 3);
  assert.equal(c.compile.code, 0);

  const bad = await post(`${cluster.base}/api/v2/execute`, { language: "js" });
  assert.equal(bad.status, 400);
  assert.equal(typeof (bad.body as { message: string }).message, "string");
  const unknown = await post(`${cluster.base}/api/v2/execute`, {
    language: "brainfudge",
    version: "*",
    files: [{ content: "+" }],
  });
  assert.equal(unknown.status, 400);
  assert.match((unknown.body as { message: string }).message, /brainfudge/);
});

Deno.test("/metrics parses as Prometheus text and its job counter moves after a job", async () => {
  await using cluster = startCluster();
  const scrape = async () => {
    const response = await fetch(`${cluster.base}/metrics`);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
    return parsePrometheus(await response.text());
  };
  const counter = 'kiln_jobs_total{language="bash",verdict="ok"}';
  const before = await scrape();
  assert.equal(before.get(counter), undefined);
  assert.equal(before.get("kiln_queue_depth"), 0);
  await post(`${cluster.base}/api/v1/jobs`, bash("echo m"));
  const after = await scrape();
  assert.equal(after.get(counter), 1);
  assert.equal(after.get("kiln_queue_wait_seconds_count"), 1);
  assert.equal(
    after.get('kiln_job_duration_seconds_count{language="bash"}'),
    1,
  );
  assert.equal(after.get('kiln_node_slots{node="master"}'), 2);
});

Deno.test("with a history file, finished jobs survive a master restart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history.db`;
    let jobId: string;
    {
      using history = new JobHistory({ path });
      await using cluster = startCluster({}, { history });
      const { body } = await post(
        `${cluster.base}/api/v1/jobs`,
        bash("echo kept"),
      );
      jobId = (body as JobResult).jobId;
    }
    using history = new JobHistory({ path });
    await using cluster = startCluster({}, { history });
    const { status, body } = await json(`${cluster.base}/api/v1/jobs/${jobId}`);
    assert.equal(status, 200);
    assert.equal((body as { result: JobResult }).result.stdout, "kept\n");
    const list = await json(`${cluster.base}/api/v1/jobs`);
    assert.equal(
      (list.body as { jobs: { jobId: string }[] }).jobs[0]?.jobId,
      jobId,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a small JSON answer goes out uncompressed, a large one still compressed, to a client that accepts both", async () => {
  await using cluster = startCluster();
  const run = async (script: string) => {
    const response = await fetch(`${cluster.base}/api/v1/jobs`, {
      method: "POST",
      body: JSON.stringify(bash(script)),
      headers: {
        "content-type": "application/json",
        "accept-encoding": "br, gzip",
      },
    });
    const result: JobResult = await response.json();
    return { encoding: response.headers.get("content-encoding"), result };
  };
  const small = await run("echo hi");
  assert.equal(small.result.stdout, "hi\n");
  assert.equal(small.encoding, null);
  // 20,000 bytes of output: compression pays for itself here.
  const large = await run("head -c 20000 /dev/zero | tr '\\0' a");
  assert.equal(large.result.stdout, "a".repeat(20_000));
  assert.ok(
    large.encoding === "br" || large.encoding === "gzip",
    `${large.encoding}`,
  );
});
