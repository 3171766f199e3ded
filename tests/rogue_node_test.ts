/**
 * A rogue secondary, past authentication, against a real master on
 * 127.0.0.1: it cannot touch jobs it was not given, a forbidden or
 * malformed message costs it its link and nobody else anything, and a
 * thousand fuzzed messages from rogue nodes leave the master serving.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import {
  type JobEvent,
  type JobRequest,
  MasterNode,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { blankResult } from "../lib/job.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { encodeFrame } from "../lib/protocol/frame.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";

const TOKEN = "rogue-test-token";

const bash = (script: string): JobRequest => ({
  language: "bash",
  files: [{ name: "main.sh", content: script }],
});

/**
 * A node that authenticates and registers, offering a language nobody asks
 * for. `raw` writes bytes the protocol's own encoder would never send.
 */
async function rogue(
  master: MasterNode,
  name = "rogue",
): Promise<Connection & { raw: (bytes: Uint8Array) => Promise<unknown> }> {
  const conn = await Deno.connect(master.addr);
  const connection = new Connection(conn);
  await clientHandshake(connection, { role: "secondary", token: TOKEN, name });
  await connection.send({
    type: "register",
    id: crypto.randomUUID(),
    name,
    languages: [{
      name: "cobol",
      version: "1",
      aliases: [],
      extensions: [".cob"],
    }],
    slots: 4,
    maxCpu: 100,
    maxRam: 100,
  });
  assert.equal((await connection.receive()).type, "registered");
  return Object.assign(connection, {
    raw: async (bytes: Uint8Array) => {
      for (let offset = 0; offset < bytes.length;) {
        offset += await conn.write(bytes.subarray(offset));
      }
    },
  });
}

/** A master with one honest secondary that runs bash. */
async function cluster() {
  const master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    // Rogue dialers would trip the per-address limits meant for strangers.
    maxConnectionsPerIp: 0,
    maxAuthFailures: 0,
  });
  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  const honest = new SecondaryNode({
    master: master.addr,
    name: "honest",
    token: TOKEN,
    slots: 2,
  });
  await joined.promise;
  return {
    master,
    async [Symbol.asyncDispose]() {
      await honest.shutdown();
      await master.shutdown();
    },
  };
}

Deno.test("rogue node: answers about jobs it was not given change nothing", async () => {
  await using c = await cluster();
  const liar = await rogue(c.master);
  const events: JobEvent[] = [];
  const forged = Promise.withResolvers<void>();
  const result = submitProgram(bash("echo genuine"), {
    master: c.master.addr,
    token: TOKEN,
    onEvent: async (event) => {
      events.push(event);
      if (event.type !== "accepted") return;
      // Somehow knowing the id, the rogue claims the job as its own.
      const jobId = event.jobId;
      await liar.send({
        type: "output",
        jobId,
        stream: "stdout",
        data: "forged",
      });
      await liar.send({
        type: "result",
        jobId,
        result: blankResult(jobId, { verdict: "ok", stdout: "forged\n" }),
      });
      await liar.send({ type: "refused", jobId, reason: "forged" });
      forged.resolve();
    },
  });
  await forged.promise;
  const ended = await result;
  assert.equal(ended.verdict, "ok");
  assert.equal(ended.node, "honest");
  assert.match(ended.stdout, /^genuine/);
  assert.ok(
    !events.some((e) => e.type === "output" && e.data.includes("forged")),
  );
  await liar.close();
});

Deno.test("rogue node: a forbidden message costs it its link, and nobody else anything", async () => {
  await using c = await cluster();
  const liar = await rogue(c.master);
  const left = Promise.withResolvers<string>();
  c.master.addEventListener(
    "nodeleave",
    (event) =>
      event.detail.name === "rogue" && left.resolve(event.detail.reason ?? ""),
  );
  // A node may not submit jobs.
  await liar.send({ type: "submit", ref: "x", job: bash("echo nope") });
  assert.match(await left.promise, /submit/);
  assert.deepEqual(c.master.status().nodes.map((n) => n.name), ["honest"]);
  const ok = await submitProgram(bash("echo still"), {
    master: c.master.addr,
    token: TOKEN,
  });
  assert.equal(ok.stdout, "still\n");
});

Deno.test("rogue node: a thousand fuzzed messages from rogue nodes leave the master serving", async () => {
  await using c = await cluster();
  const seed = Number(Deno.env.get("KILN_FUZZ_SEED") ?? Date.now() % 2 ** 31);
  console.log(`rogue node fuzz seed ${seed} (KILN_FUZZ_SEED replays it)`);
  const random = mulberry32(seed);
  const pick = <T>(items: readonly T[]): T =>
    items[Math.floor(random() * items.length)]!;
  const values = [
    -1,
    0,
    1,
    1e308,
    Number.NaN,
    "",
    "x".repeat(5000),
    null,
    true,
    [],
    {},
    crypto.randomUUID(),
  ];
  const types = [
    "heartbeat",
    "result",
    "output",
    "refused",
    "register",
    "submit",
    "cancel",
    "get_status",
    "welcome",
    "bogus",
  ];
  const fields = [
    "jobId",
    "cpuPercent",
    "ramPercent",
    "ramUsedMb",
    "running",
    "result",
    "stream",
    "data",
    "reason",
    "slots",
    "languages",
  ];
  const LINKS = 100;
  let left = 0;
  const allLeft = Promise.withResolvers<void>();
  c.master.addEventListener("nodeleave", (event) => {
    if (event.detail.name.startsWith("rogue-") && ++left === LINKS) {
      allLeft.resolve();
    }
  });
  let sent = 0;
  for (let link = 0; link < LINKS; link++) {
    const liar = await rogue(c.master, `rogue-${link}`);
    try {
      for (let i = 0; i < 10; i++) {
        const message: Record<string, unknown> = { type: pick(types) };
        for (let f = Math.floor(random() * 4); f > 0; f--) {
          message[pick(fields)] = pick(values);
        }
        // Raw frames: the typed `send` would refuse to send these.
        await liar.raw(encodeFrame(message));
        sent++;
      }
    } catch {
      // The master dropped this rogue: that is one right answer.
    } finally {
      await liar.close();
    }
  }
  assert.equal(sent > 0, true);
  const ok = await submitProgram(bash("echo survived"), {
    master: c.master.addr,
    token: TOKEN,
  });
  assert.equal(ok.verdict, "ok");
  assert.equal(ok.stdout, "survived\n");
  await allLeft.promise;
  assert.deepEqual(
    c.master.status().nodes.map((n) => n.name).filter((n) => n !== "honest"),
    [],
    "every rogue is gone once its link closed",
  );
});

/** A small seeded PRNG, so a failing run can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
