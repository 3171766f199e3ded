/**
 * The HTTP face of a real master on loopback, as an attacker meets it:
 * nested JSON bombs, foreign hosts and origins, plain-text posts, bad
 * percent-encodings, guessed tokens on every route, a process out of
 * descriptors.
 */
import assert from "node:assert/strict";
import { captureLogs, recordLine } from "../lib/_log_testing.ts";
import {
  Credentials,
  getClusterStatus,
  HttpApi,
  type HttpApiOptions,
  MasterNode,
  type MasterNodeOptions,
  submitProgram,
} from "../mod.ts";
import { bash, startHttpCluster } from "./_http_cluster.ts";
import { startSecondaryProcess } from "../cli/_processes.ts";

const TOKEN = `face-${crypto.randomUUID()}`;

/** Every log line of the test file, to check what is logged and that no token is. */
const records: string[] = [];
const logs = await captureLogs((record) => records.push(recordLine(record)));

/** The attacker's view needs one slot: a second job waits. */
function startCluster(
  masterOptions: MasterNodeOptions = {},
  apiOptions: HttpApiOptions = {},
) {
  return startHttpCluster({ slots: 1, ...masterOptions }, apiOptions);
}

interface RawAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/**
 * One request written by hand (so Host, Origin and the rest are exactly
 * what a browser or an attacker sends), with `Connection: close`.
 */
async function raw(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body = "",
): Promise<RawAnswer> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const all = {
      host: `127.0.0.1:${port}`,
      connection: "close",
      ...body === "" ? {} : { "content-length": String(body.length) },
      ...headers,
    };
    const head = `${method} ${path} HTTP/1.1\r\n` +
      Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
    await conn.write(new TextEncoder().encode(head + body));
    // Read the head, then as much body as it declares (a request that
    // asked to upgrade keeps its connection open after a refusal).
    let text = "";
    const reader = conn.readable.pipeThrough(new TextDecoderStream())
      .getReader();
    const complete = () => {
      const end = text.indexOf("\r\n\r\n");
      if (end === -1) return false;
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      return length === null || text.length >= end + 4 + Number(length[1]);
    };
    while (!complete()) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    await reader.cancel();
    const [statusLine = "", ...lines] = text.slice(0, text.indexOf("\r\n\r\n"))
      .split("\r\n");
    return {
      status: Number(statusLine.split(" ")[1]),
      headers: new Map(lines.map((line) => {
        const colon = line.indexOf(":");
        return [
          line.slice(0, colon).toLowerCase(),
          line.slice(colon + 1).trim(),
        ];
      })),
      body: text.slice(text.indexOf("\r\n\r\n") + 4),
    };
  } finally {
    try {
      conn.close();
    } catch { /* closed by reading to the end */ }
  }
}

const JSON_TYPE = { "content-type": "application/json" };

Deno.test("a nested JSON bomb at the body cap is refused naming the depth; heartbeats flow meanwhile", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    heartbeatIntervalMs: 250,
    nodeTimeoutMs: 1000,
  });
  await using api = new HttpApi(master, { port: 0 });
  const joined = Promise.withResolvers<void>();
  const left: string[] = [];
  master.addEventListener("nodejoin", () => joined.resolve());
  master.addEventListener(
    "nodeleave",
    ({ detail }) => left.push(String(detail.reason)),
  );
  await using _secondary = await startSecondaryProcess(
    `127.0.0.1:${master.addr.port}`,
    { token: TOKEN, args: ["--name", "east", "--slots", "1"], stderr: "null" },
  );
  await joined.promise;
  // The largest body the API reads: six bytes per program byte, and 64 KiB.
  const cap = 6 * master.maxProgramBytes + 64 * 1024;
  const half = Math.floor(cap / 2);
  const bomb = "[".repeat(half) + "]".repeat(half);
  for (const path of ["/api/v1/jobs", "/api/v2/execute", "/api/v1/jobs"]) {
    const response = await fetch(`http://127.0.0.1:${api.addr.port}${path}`, {
      method: "POST",
      headers: { ...JSON_TYPE, authorization: `Bearer ${TOKEN}` },
      body: bomb,
    });
    assert.equal(response.status, 400);
    const answer = await response.json();
    assert.match(
      answer.error ?? answer.message,
      /nested deeper than 64 levels of arrays and objects/,
    );
  }
  // One byte more than the cap is too large, before it is parsed.
  const over = await fetch(`http://127.0.0.1:${api.addr.port}/api/v1/jobs`, {
    method: "POST",
    headers: { ...JSON_TYPE, authorization: `Bearer ${TOKEN}` },
    body: " ".repeat(cap + 1),
  });
  assert.equal(over.status, 413);
  assert.match((await over.json()).error, new RegExp(`larger than ${cap}`));
  assert.deepEqual(left, [], "no node was dropped as silent");
  assert.equal(master.status().nodes.length, 1);
});

Deno.test("a nested bomb on a job's WebSocket is answered with an error naming the depth", async () => {
  await using cluster = startCluster();
  const posted = await fetch(`${cluster.base}/api/v1/jobs`, {
    method: "POST",
    headers: JSON_TYPE,
    body: JSON.stringify({
      ...bash('echo ready; read -r line; echo "got $line"'),
      interactive: true,
      wait: false,
    }),
  });
  const { jobId } = await posted.json();
  const socket = new WebSocket(
    `ws://127.0.0.1:${cluster.port}/api/v1/jobs/${jobId}/stream`,
  );
  const messages: Record<string, unknown>[] = [];
  const errors: string[] = [];
  const closed = Promise.withResolvers<void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    messages.push(message);
    // The program waits for its line: first the bomb, then the line.
    if (message.type === "output" && message.data === "ready\n") {
      socket.send("[".repeat(1_000_000) + "]".repeat(1_000_000));
    }
    if (message.type === "error") {
      errors.push(message.message);
      socket.send(JSON.stringify({ type: "stdin", data: "hi\n", eof: true }));
    }
  };
  socket.onclose = () => closed.resolve();
  await closed.promise;
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /nested deeper than 64 levels/);
  const result = messages.find((m) => m.type === "result")?.result as {
    stdout: string;
  };
  assert.equal(result.stdout, "ready\ngot hi\n");
});

Deno.test("Host must name this master: IP literals, localhost and allowed names pass, others get 403", async () => {
  await using cluster = startCluster({}, { allowedHosts: ["Kiln.Example"] });
  const { port } = cluster;
  const get = (host: string) => raw(port, "GET", "/api/v1/nodes", { host });
  assert.equal((await get(`127.0.0.1:${port}`)).status, 200);
  assert.equal((await get(`localhost:${port}`)).status, 200);
  assert.equal((await get(`[::1]:${port}`)).status, 200);
  assert.equal((await get(`kiln.example:${port}`)).status, 200);
  const rebound = await get(`attacker.example:${port}`);
  assert.equal(rebound.status, 403);
  assert.match(
    rebound.body,
    /host \\"attacker.example\\" is not served here.*--http-allowed-host attacker.example/,
  );
  // The pages too: a rebinding page cannot read the dashboard's data.
  assert.equal(
    (await raw(port, "GET", "/", { host: "attacker.example" })).status,
    403,
  );
});

Deno.test("POST needs a JSON content type (415), and a foreign Origin is refused (403) unless --cors-origin allows it", async () => {
  await using cluster = startCluster({}, {
    corsOrigins: ["http://app.example"],
  });
  const { port } = cluster;
  const job = JSON.stringify(bash("echo hi"));
  // What a no-cors fetch or a form can send without a preflight.
  for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
    const answer = await raw(port, "POST", "/api/v1/jobs", {
      "content-type": type,
    }, job);
    assert.equal(answer.status, 415);
    assert.match(answer.body, /Content-Type: application\/json/);
  }
  const foreign = await raw(port, "POST", "/api/v1/jobs", {
    ...JSON_TYPE,
    origin: "http://evil.example",
  }, job);
  assert.equal(foreign.status, 403);
  assert.match(
    foreign.body,
    /cross-origin request from http:\/\/evil.example refused/,
  );
  const nullOrigin = await raw(port, "POST", "/api/v1/jobs", {
    ...JSON_TYPE,
    origin: "null",
  }, job);
  assert.equal(nullOrigin.status, 403);
  // The page's own origin, and an allowed one with its CORS headers.
  const same = await raw(port, "POST", "/api/v1/jobs", {
    ...JSON_TYPE,
    origin: `http://127.0.0.1:${port}`,
  }, job);
  assert.equal(same.status, 200);
  assert.match(same.body, /"stdout":"hi\\n"/);
  const preflight = await raw(port, "OPTIONS", "/api/v1/jobs", {
    origin: "http://app.example",
    "access-control-request-method": "POST",
  });
  assert.equal(preflight.status, 204);
  assert.equal(
    preflight.headers.get("access-control-allow-origin"),
    "http://app.example",
  );
  assert.match(
    preflight.headers.get("access-control-allow-headers") ?? "",
    /content-type/,
  );
  const allowed = await raw(port, "POST", "/api/v1/jobs", {
    ...JSON_TYPE,
    origin: "http://app.example",
  }, job);
  assert.equal(allowed.status, 200);
  assert.equal(
    allowed.headers.get("access-control-allow-origin"),
    "http://app.example",
  );
  // A cross-site WebSocket handshake carries its Origin too.
  const socket = await raw(port, "GET", "/api/v1/jobs/x/stream", {
    origin: "http://evil.example",
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
  });
  assert.equal(socket.status, 403);
});

Deno.test("a malformed percent-encoding is a 400, not a 500", async () => {
  await using cluster = startCluster();
  const answer = await raw(cluster.port, "GET", "/static/%E0%A4%A");
  assert.equal(answer.status, 400);
  assert.match(answer.body, /malformed percent-encoding/);
  assert.doesNotMatch(answer.body, /URIError|at /);
});

Deno.test("wrong tokens on every HTTP route count towards one back-off, each logged without the token", async () => {
  await using cluster = startCluster({
    token: TOKEN,
    maxAuthFailures: 5,
    authBackoffMs: 60_000,
  });
  const { port } = cluster;
  const wrong = `wrong-${crypto.randomUUID()}`;
  records.length = 0;
  const job = JSON.stringify(bash("echo hi"));
  const attempts = [
    raw(port, "POST", "/api/v1/jobs", {
      ...JSON_TYPE,
      authorization: `Bearer ${wrong}`,
    }, job),
    raw(port, "GET", `/api/v1/events?access_token=${wrong}`),
    raw(port, "GET", `/api/v1/jobs/x/stream?access_token=${wrong}`, {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    }),
    raw(port, "POST", "/api/v2/execute", {
      ...JSON_TYPE,
      authorization: `Bearer ${wrong}`,
    }, JSON.stringify({ language: "bash", files: [{ content: "echo" }] })),
    raw(port, "GET", "/api/v2/runtimes", { authorization: `Bearer ${wrong}` }),
  ];
  for (const attempt of attempts) assert.equal((await attempt).status, 401);
  // The address now serves a back-off, even with the right token.
  const refused = await raw(port, "GET", "/api/v1/nodes", {
    authorization: `Bearer ${TOKEN}`,
  });
  assert.equal(refused.status, 429);
  assert.match(refused.body, /too many failed authentications from 127.0.0.1/);
  const logged = records.filter((r) =>
    r.includes("HTTP authentication failed")
  );
  assert.equal(logged.length, 5);
  for (
    const path of [
      "/api/v1/jobs",
      "/api/v1/events",
      "/api/v1/jobs/x/stream",
      "/api/v2/execute",
      "/api/v2/runtimes",
    ]
  ) assert.ok(logged.some((r) => r.includes(`"path":"${path}"`)), path);
  for (const record of records) {
    assert.ok(!record.includes(wrong) && !record.includes(TOKEN), record);
  }
});

Deno.test("a shared token shorter than 16 characters is refused, naming the minimum", () => {
  assert.throws(
    () => new MasterNode({ port: 0, slots: 0, token: "change-me" }),
    /token is 9 characters: a shared token must be at least 16/,
  );
  assert.throws(
    () => Credentials.shared("short"),
    /a shared token must be at least 16/,
  );
});

Deno.test("a file name of 400 bytes is rejected at admission, naming the 255-byte limit", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 1,
    resourceLogIntervalMs: 0,
  });
  const name = "é".repeat(198) + ".sh"; // 199 characters, 399 bytes
  const result = await submitProgram({
    language: "bash",
    files: [{ name, content: "echo hi" }],
  }, { master: master.addr });
  assert.equal(result.verdict, "rejected");
  assert.match(result.reason ?? "", /file name is longer than 255 bytes/);
});

/** `cli/master.ts` under `prlimit`, its stderr watched for a line. */
async function startLimitedMaster(nofile: number, args: string[]) {
  const child = new Deno.Command("prlimit", {
    args: [
      // Soft and hard: Deno raises its soft limit to the hard one at start.
      `--nofile=${nofile}`,
      Deno.execPath(),
      "run",
      "-A",
      new URL("../cli/master.ts", import.meta.url).pathname,
      "--port",
      "0",
      ...args,
    ],
    env: { KILN_TOKEN: TOKEN, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const watched: { pattern: RegExp; resolve: () => void }[] = [];
  let stderr = "";
  const readingErr = (async () => {
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      stderr += text;
      for (const watch of [...watched]) {
        if (!watch.pattern.test(stderr)) continue;
        watched.splice(watched.indexOf(watch), 1);
        watch.resolve();
      }
    }
  })();
  let stdout = "";
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!/http on \S+/.test(stdout)) {
    const { value, done } = await out.read();
    if (done) throw new Error(`the master exited early: ${stderr}`);
    stdout += value;
  }
  const readingOut = (async () => {
    while (!(await out.read()).done);
  })();
  return {
    tcp: /listening on (\S+)/.exec(stdout)![1]!,
    httpPort: Number(/http on \S+:(\d+)/.exec(stdout)![1]),
    /** Resolves once stderr matches; rejects if the master exits first. */
    waitForStderr(pattern: RegExp): Promise<void> {
      if (pattern.test(stderr)) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      watched.push({ pattern, resolve });
      return Promise.race([
        promise,
        child.status.then((status) => {
          throw new Error(`the master exited (${status.code}): ${stderr}`);
        }),
      ]);
    },
    async stop(): Promise<Deno.CommandStatus> {
      try {
        child.kill("SIGTERM");
      } catch { /* it already exited */ }
      const status = await child.status;
      await readingErr;
      await readingOut;
      return status;
    },
    get stderr() {
      return stderr;
    },
  };
}

Deno.test("deno task master under a low descriptor limit keeps HTTP below it by default", async () => {
  // The default cap is half the limit: idle connections from many peers
  // wait in the listen queue; the master keeps descriptors for its work.
  const master = await startLimitedMaster(128, [
    "--slots",
    "0",
    "--http-port",
    "0",
    "--max-connections-per-ip",
    "0",
  ]);
  let exit: Deno.CommandStatus | undefined;
  try {
    const held: Deno.TcpConn[] = [];
    for (let i = 0; i < 200; i++) {
      held.push(
        await Deno.connect({ hostname: "127.0.0.1", port: master.httpPort }),
      );
    }
    // A job over TCP runs while HTTP holds all it may.
    const status = await getClusterStatus({ master: master.tcp, token: TOKEN });
    assert.equal(status.master, "master");
    for (const conn of held) conn.close();
    const health = await fetch(`http://127.0.0.1:${master.httpPort}/healthz`);
    assert.deepEqual(await health.json(), { ok: true });
    assert.doesNotMatch(master.stderr, /cannot accept/);
  } finally {
    exit = await master.stop();
  }
  assert.equal(exit.code, 0, `the master exited cleanly:\n${master.stderr}`);
});

Deno.test("no token appears in any log line of this file", async () => {
  try {
    for (const record of records) assert.ok(!record.includes(TOKEN), record);
  } finally {
    await logs[Symbol.asyncDispose]();
  }
});
