/**
 * kiln on NATS through the library, in one process: a MasterNode and a
 * SecondaryNode given `nats`, a real `nats-server` on loopback. Stdin,
 * cancels, limits and hostile messages on the cluster's subjects.
 */
import assert from "node:assert/strict";
import {
  HttpApi,
  type JobEvent,
  type JobRequest,
  MasterNode,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { InputChannel } from "../lib/sandbox/input_channel.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import type { Message } from "../lib/protocol/messages.ts";
import { NatsCluster } from "../lib/nats/nats_cluster.ts";
import { NatsServer, natsSkipReason } from "../cli/_nats_server.ts";

const ignore = natsSkipReason !== undefined;
// deno-lint-ignore no-console
if (ignore) console.log(`skipping: ${natsSkipReason}`);

function bash(content: string): JobRequest {
  return { language: "bash", files: [{ name: "main.sh", content }] };
}

/** A NATS server, a master and one bash secondary, all ready. */
async function natsCluster(serverOptions = {}) {
  const server = await NatsServer.start(serverOptions);
  const nats = { servers: [server.url], ackWaitMs: 1500 };
  const master = new MasterNode({
    port: 0,
    nats,
    nodeTimeoutMs: 3000,
    resourceLogIntervalMs: 0,
  });
  await master.ready;
  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  const secondary = new SecondaryNode({
    nats,
    name: "east",
    slots: 2,
    languages: ["bash"],
  });
  await joined.promise;
  return {
    server,
    master,
    secondary,
    async [Symbol.asyncDispose]() {
      await secondary.shutdown();
      await master.shutdown();
      await server.stop();
    },
  };
}

Deno.test({
  name:
    "nats library: a line typed while the program runs reaches it through NATS",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    const input = new InputChannel();
    const output: string[] = [];
    const result = await submitProgram({
      ...bash('echo "name?"; read -r name; echo "hello $name"; cat; echo bye'),
      interactive: true,
    }, {
      master: cluster.master.addr,
      input,
      onEvent: (event) => {
        if (event.type !== "output") return;
        output.push(event.data);
        const seen = output.join("");
        if (seen === "name?\n") input.push("Ada\n");
        if (seen === "name?\nhello Ada\n") input.end();
      },
    });
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "name?\nhello Ada\nbye\n");
    assert.equal(result.node, "east");
  },
});

Deno.test({
  name:
    "nats library: a running job is cancelled on its node, and the slot is free again",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    const abort = new AbortController();
    const events: JobEvent[] = [];
    const result = await submitProgram(bash("echo up; sleep 600"), {
      master: cluster.master.addr,
      signal: abort.signal,
      onEvent: (event) => {
        events.push(event);
        if (event.type === "output") abort.abort(new Error("enough"));
      },
    }).catch((error) => error);
    assert.ok(result instanceof Error || result.verdict !== "ok");
    // The node ran nothing more: a new job gets a slot at once.
    const next = await submitProgram(bash("echo again"), {
      master: cluster.master.addr,
    });
    assert.equal(next.verdict, "ok", next.reason);
    while (cluster.secondary.running > 0) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(events.some((e) => e.type === "started"));
  },
});

Deno.test({
  name:
    "nats library: a job larger than the servers' max_payload is rejected, naming both sizes",
  ignore,
  async fn() {
    await using cluster = await natsCluster({ maxPayload: 64 * 1024 });
    const result = await submitProgram(
      bash(`echo ${"x".repeat(100 * 1024)}`),
      { master: cluster.master.addr },
    );
    assert.equal(result.verdict, "rejected");
    assert.match(
      result.reason ?? "",
      /takes \d+ bytes .* at most 65536 \(max_payload\)/,
    );
    const small = await submitProgram(bash("echo small"), {
      master: cluster.master.addr,
    });
    assert.equal(small.verdict, "ok", small.reason);
  },
});

Deno.test({
  name:
    "nats library: garbage on the cluster's subjects harms nothing, and a real job still runs",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    await using raw = await NatsCluster.connect({
      servers: [cluster.server.url],
    });
    const id = crypto.randomUUID();
    await raw.jetstream.publish(`kiln.jobs.bash.${id}`, "not json");
    await raw.jetstream.publish(
      `kiln.jobs.bash.${crypto.randomUUID()}`,
      JSON.stringify({ id: "../../etc", client: 1 }),
    );
    raw.connection.publish(`kiln.events.${id}`, "{");
    raw.connection.publish(
      `kiln.events.${id}`,
      JSON.stringify({ type: "result", attempt: 1, result: { stdout: 5 } }),
    );
    raw.connection.publish(`kiln.control.${id}`, "\u0000\u0001");
    await raw.connection.flush();
    const result = await submitProgram(bash("echo still here"), {
      master: cluster.master.addr,
    });
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "still here\n");
    // The garbage left the stream: dropped, not delivered again and again.
    while (await raw.waiting() > 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  },
});

Deno.test({
  name:
    "nats library: every node shows in the master's status, and one that leaves is gone from it",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    const status = cluster.master.status();
    assert.deepEqual(status.nodes.map((node) => node.name), ["east"]);
    assert.equal(status.nodes[0]!.slots, 2);
    assert.deepEqual(status.nodes[0]!.languages.map((l) => l.name), ["bash"]);
    const left = Promise.withResolvers<void>();
    cluster.master.addEventListener("nodeleave", () => left.resolve(), {
      once: true,
    });
    await cluster.secondary.shutdown();
    await left.promise;
    assert.deepEqual(cluster.master.status().nodes, []);
  },
});

Deno.test({
  name:
    "nats library: a job submitted over HTTP to one master is found, and streamed to its result, on another",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    const nats = { servers: [cluster.server.url] };
    await using other = new MasterNode({
      port: 0,
      name: "other",
      nats,
      resourceLogIntervalMs: 0,
    });
    await other.ready;
    await using first = new HttpApi(cluster.master, { port: 0 });
    await using second = new HttpApi(other, { port: 0 });
    const response = await fetch(
      `http://127.0.0.1:${first.addr.port}/api/v1/jobs`,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          ...bash("read -r go; echo $go done"),
          interactive: true,
          wait: false,
        }),
      },
    );
    assert.equal(response.status, 202);
    const { jobId } = await response.json() as { jobId: string };
    // The stream on the other master, while the job waits for its stdin.
    const socket = new WebSocket(
      `ws://127.0.0.1:${second.addr.port}/api/v1/jobs/${jobId}/stream`,
    );
    const messages: Record<string, unknown>[] = [];
    const closed = Promise.withResolvers<void>();
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      messages.push(message);
      if (message.type === "started") {
        // Typed on the first master's stream, which the job was submitted to.
        const typing = new WebSocket(
          `ws://127.0.0.1:${first.addr.port}/api/v1/jobs/${jobId}/stream`,
        );
        typing.onopen = () =>
          typing.send(
            JSON.stringify({ type: "stdin", data: "go\n", eof: true }),
          );
        typing.onmessage = (e) => {
          if (JSON.parse(String(e.data)).type === "result") typing.close();
        };
      }
    };
    socket.onclose = () => closed.resolve();
    await closed.promise;
    assert.equal(messages[0]?.type, "started");
    const last = messages.at(-1)!;
    assert.equal(last.type, "result");
    assert.equal((last.result as { stdout: string }).stdout, "go done\n");
    const got = await fetch(
      `http://127.0.0.1:${second.addr.port}/api/v1/jobs/${jobId}`,
    );
    const summary = await got.json() as Record<string, unknown>;
    assert.equal(summary.state, "finished");
    assert.equal(summary.node, "east");
    assert.equal(summary.verdict, "ok");
    const unknown = await fetch(
      `http://127.0.0.1:${second.addr.port}/api/v1/jobs/${crypto.randomUUID()}`,
    );
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
  },
});

/** A raw client link to a master, as `name`. */
async function rawClient(master: MasterNode, name: string) {
  const connection = new Connection(await Deno.connect(master.addr));
  await clientHandshake(connection, { role: "client", token: "", name });
  return connection;
}

/** The next message of `type` on a raw link, skipping the others. */
async function next(connection: Connection, type: string): Promise<Message> {
  while (true) {
    const message = await connection.receive();
    if (message.type === type) return message;
  }
}

Deno.test({
  name:
    "nats library: a client that drops its link leaves its job running, and gets the result by attaching again",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    const first = await rawClient(cluster.master, "alice");
    await first.send({
      type: "submit",
      ref: "r1",
      // Long enough to outlive its client's link; were it cancelled, its
      // result would say so and hold no output.
      job: bash("sleep 1; echo survived"),
    });
    const accepted = await next(first, "accepted");
    const jobId = accepted.type === "accepted" ? accepted.jobId : "";
    await next(first, "started");
    await first.close();
    // Another client may not take it over by its id.
    const mallory = await rawClient(cluster.master, "mallory");
    await mallory.send({ type: "attach", ref: "m", jobId });
    const refused = await next(mallory, "unknown_job");
    assert.equal(refused.type === "unknown_job" && refused.jobId, jobId);
    await mallory.close();
    // The job was not cancelled: it runs to its end.
    const again = await rawClient(cluster.master, "alice");
    await again.send({ type: "attach", ref: "r2", jobId });
    const reattached = await next(again, "accepted");
    assert.deepEqual(reattached, { type: "accepted", ref: "r2", jobId });
    const result = await next(again, "result");
    assert.equal(
      result.type === "result" && result.result.stdout,
      "survived\n",
    );
    await again.close();
  },
});

Deno.test({
  name:
    "nats library: an id no job could have is answered as unknown at once, by TCP and HTTP alike",
  ignore,
  async fn() {
    await using cluster = await natsCluster();
    await using api = new HttpApi(cluster.master, { port: 0 });
    const link = await rawClient(cluster.master, "alice");
    for (const jobId of ["kiln.>", "*", "a b", "../x", "x".repeat(128)]) {
      await link.send({ type: "attach", ref: "r", jobId });
      const answer = await next(link, "unknown_job");
      assert.equal(answer.type === "unknown_job" && answer.jobId, jobId);
      const response = await fetch(
        `http://127.0.0.1:${api.addr.port}/api/v1/jobs/${
          encodeURIComponent(jobId)
        }`,
      );
      assert.equal(response.status, 404);
      await response.body?.cancel();
    }
    await link.close();
  },
});
