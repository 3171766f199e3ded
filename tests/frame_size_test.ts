/**
 * Frame sizes across a real master and a real secondary, in process, on
 * 127.0.0.1, with small `maxFrameBytes` on one side or the other: a job
 * too large for a link fails alone, with a reason naming the sizes, and
 * output or results too large for the master's frames are cut to fit. The
 * secondary never loses its link over one job.
 */
import assert from "node:assert/strict";
import {
  type JobEvent,
  type JobRequest,
  type JobResult,
  MasterNode,
  type MasterNodeOptions,
  SecondaryNode,
  type SecondaryNodeOptions,
  submitProgram,
} from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { encodeFrame } from "../lib/protocol/frame.ts";

const TOKEN = "frame-size-token";

function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "main.sh", content: script }] };
}

/** A master without slots of its own and one secondary "w1", joined. */
async function cluster(
  masterOptions: MasterNodeOptions,
  secondaryOptions: Partial<SecondaryNodeOptions> = {},
) {
  const master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    ...masterOptions,
  });
  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  const left: string[] = [];
  master.addEventListener("nodeleave", (event) => {
    left.push(event.detail.reason ?? "");
  });
  const secondary = new SecondaryNode({
    master: master.addr,
    name: "w1",
    token: TOKEN,
    slots: 1,
    ...secondaryOptions,
  });
  await joined.promise;
  return {
    master,
    secondary,
    /** Why the secondary left the master, each time it did. */
    left,
    run(request: JobRequest, onEvent?: (event: JobEvent) => void) {
      return submitProgram(request, {
        master: master.addr,
        token: TOKEN,
        onEvent,
      });
    },
    async [Symbol.asyncDispose]() {
      await secondary.shutdown();
      await master.shutdown();
    },
  };
}

/** The node is still there, and still runs jobs. */
async function stillServes(
  c: Awaited<ReturnType<typeof cluster>>,
): Promise<void> {
  const result = await c.run(bash("echo fine"));
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.node, "w1");
  assert.equal(result.stdout, "fine\n");
  assert.deepEqual(c.left, []);
}

Deno.test("frame sizes: a job whose run message, escaped, would not fit the master's frames is rejected at admission, and the node stays", async () => {
  const maxFrameBytes = 64 * 1024;
  await using c = await cluster({ maxFrameBytes });
  // Control characters take six bytes of JSON each: the submit fits its
  // frame, with a few bytes to spare, but the larger `run` would not.
  const job = (n: number) => bash("\x01".repeat(n));
  const submitBytes = (n: number) =>
    encodeFrame({ type: "submit", ref: "r", job: job(n) }).length - 4;
  let n = 1;
  while (submitBytes(n + 1) <= maxFrameBytes) n++;
  const runBytes = encodeFrame({
    type: "run",
    jobId: crypto.randomUUID(),
    job: job(n),
  }).length - 4;
  assert.ok(runBytes > maxFrameBytes);

  const client = new Connection(await Deno.connect(c.master.addr));
  await clientHandshake(client, { role: "client", token: TOKEN });
  await client.send({ type: "submit", ref: "r", job: job(n) });
  let result: JobResult | undefined;
  for await (const message of client) {
    if (message.type === "result") {
      result = message.result;
      break;
    }
  }
  await client.close();
  assert.equal(result?.verdict, "rejected");
  assert.match(
    result.reason ?? "",
    new RegExp(
      `^program too large: passed on to a node as JSON .* this job takes ${runBytes} bytes; a frame carries at most ${maxFrameBytes} bytes$`,
    ),
  );
  await stillServes(c);
});

Deno.test("frame sizes: a job too large for a secondary's smaller frames fails alone, naming the sizes, and the node stays", async () => {
  await using c = await cluster({}, { maxFrameBytes: 64 * 1024 });
  const result = await c.run(bash(`# ${"x".repeat(100_000)}\necho never`));
  assert.equal(result.verdict, "rejected");
  assert.match(
    result.reason ?? "",
    /^program too large for node "w1" \(its run message: frame of 100\d{3} bytes exceeds the limit of 65536 bytes\)$/,
  );
  await stillServes(c);
});

Deno.test("frame sizes: a secondary with larger frames than the master's cuts its output and result to fit, and stays", async () => {
  await using c = await cluster({ maxFrameBytes: 64 * 1024 });
  // 60,000 control characters: 360 KB of JSON, in output and in the result.
  const bytes = 60_000;
  let streamed = "";
  const result = await c.run(
    bash(`head -c ${bytes} /dev/zero | tr '\\0' '\\001'`),
    (event) => {
      if (event.type === "output") streamed += event.data;
    },
  );
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.node, "w1");
  assert.equal(streamed, "\x01".repeat(bytes));
  // The result was cut to the master's frames, and says so.
  assert.equal(result.truncated, true);
  assert.ok(result.stdout.length < bytes);
  assert.equal(result.stdout, "\x01".repeat(result.stdout.length));
  await stillServes(c);
});
