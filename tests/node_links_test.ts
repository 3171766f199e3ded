/**
 * The links between a master and its secondaries under stress: a master
 * whose event loop stalls past the node timeout, a master process stopped
 * for good, secondaries that leave gracefully, and the master's pings.
 */
import assert from "node:assert/strict";
import {
  type JobEvent,
  MasterNode,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import type { NodeDetail } from "../lib/nodes/events.ts";
import type { SecondaryNodeEventMap } from "../lib/nodes/secondary_node.ts";
import {
  PING_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../lib/protocol/messages.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { ProtocolError } from "../lib/protocol/errors.ts";
import {
  clientHandshake,
  type VersionRange,
} from "../lib/protocol/handshake.ts";
import { startMasterProcess } from "../cli/_processes.ts";
import { processesWithArg, processMarker } from "./_processes.ts";

/** A secondary on its own thread (tests/_secondary_worker.ts). */
async function threadSecondary(
  master: string,
  name: string,
  slots: number,
) {
  const counters = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    new URL("./_secondary_worker.ts", import.meta.url),
    { type: "module" },
  );
  const registered = Promise.withResolvers<void>();
  const stopped = Promise.withResolvers<void>();
  worker.onmessage = (event) => {
    if (event.data.type === "registered") registered.resolve();
    if (event.data.type === "stopped") stopped.resolve();
  };
  worker.postMessage({ type: "start", master, name, slots, counters });
  await registered.promise;
  return {
    /** Jobs this secondary has completed so far. */
    get completed(): number {
      return Atomics.load(counters, 0);
    },
    /**
     * Blocks this thread (and so the master's event loop, when the master
     * runs here) until the secondary has completed `count` jobs and at
     * least `ms` have passed.
     */
    blockUntil(count: number, ms: number): void {
      const until = performance.now() + ms;
      while (true) {
        const seen = Atomics.load(counters, 0);
        const left = until - performance.now();
        if (seen >= count && left <= 0) return;
        Atomics.wait(counters, 0, seen, seen >= count ? left : 1000);
      }
    },
    async [Symbol.asyncDispose]() {
      worker.postMessage({ type: "stop" });
      await stopped.promise;
      worker.terminate();
    },
  };
}

Deno.test("links: a master stalled past the node timeout reads what its nodes sent before judging them", async () => {
  const nodeTimeoutMs = 600;
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    heartbeatIntervalMs: 100,
    nodeTimeoutMs,
    resourceLogIntervalMs: 0,
  });
  const left: string[] = [];
  master.addEventListener("nodeleave", (event) => {
    left.push(`${event.detail.name}: ${event.detail.reason}`);
  });
  await using secondary = await threadSecondary(
    `127.0.0.1:${master.addr.port}`,
    "steady",
    2,
  );
  const started = [
    Promise.withResolvers<void>(),
    Promise.withResolvers<void>(),
  ];
  const events: JobEvent[][] = [[], []];
  const jobs = [0, 1].map((i) =>
    submitProgram({
      language: "bash",
      files: [{ name: "main.sh", content: `sleep 0.3; echo done ${i}` }],
    }, {
      master: master.addr,
      onEvent: (event) => {
        events[i]!.push(event);
        if (event.type === "started") started[i]!.resolve();
      },
    })
  );
  await Promise.all(started.map((s) => s.promise));
  // The master's event loop stops, as under SIGSTOP or a long synchronous
  // task, until both jobs ended on the secondary and well past the node
  // timeout: results and heartbeats wait unread in the master's sockets.
  secondary.blockUntil(2, 3 * nodeTimeoutMs);

  const results = await Promise.all(jobs);
  for (const [i, result] of results.entries()) {
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, `done ${i}\n`);
    assert.equal(result.node, "steady");
    assert.deepEqual(
      events[i]!.filter((e) => e.type === "restarted"),
      [],
      "the job ran once",
    );
  }
  assert.deepEqual(left, [], "no node was declared lost");
  assert.deepEqual(master.status().nodes.map((n) => n.name), ["steady"]);
});

/** Stdin for an interactive job that holds it until `open()`. */
function gate() {
  const opened = Promise.withResolvers<void>();
  return {
    input: (async function* () {
      await opened.promise;
      yield "go\n";
    })(),
    open: () => opened.resolve(),
  };
}

/** Resolves with the detail of the master's next `type` event. */
function next(
  master: MasterNode,
  type: "nodejoin" | "nodedrain" | "nodeleave",
): Promise<NodeDetail> {
  return new Promise((resolve) =>
    master.addEventListener(type, (event) => resolve(event.detail), {
      once: true,
    })
  );
}

Deno.test("links: a draining secondary takes no new job, finishes its running one, then leaves", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    resourceLogIntervalMs: 0,
  });
  let joined = next(master, "nodejoin");
  await using drainer = new SecondaryNode({
    master: master.addr,
    name: "drainer",
    slots: 2,
    languages: ["bash"],
  });
  await joined;
  const held = gate();
  const startedA = Promise.withResolvers<void>();
  const eventsA: JobEvent[] = [];
  // "ready" says it runs on the node: `started` only says the master sent
  // it, and a node told to drain before a job reaches it refuses the job.
  const jobA = submitProgram({
    language: "bash",
    files: [{
      name: "main.sh",
      content: 'echo ready; read line; echo "got $line"',
    }],
  }, {
    master: master.addr,
    input: held.input,
    onEvent: (event) => {
      eventsA.push(event);
      if (event.type === "output") startedA.resolve();
    },
  });
  await startedA.promise;

  const draining = next(master, "nodedrain");
  const left = next(master, "nodeleave");
  const drained = drainer.drain();
  assert.equal((await draining).name, "drainer");
  assert.equal(drainer.draining, true);
  assert.deepEqual(
    master.status().nodes.map((n) => [n.name, n.state]),
    [["drainer", "draining"]],
  );

  // A new job is not placed on it: it waits for another node.
  const queuedB = Promise.withResolvers<void>();
  const eventsB: JobEvent[] = [];
  const jobB = submitProgram({
    language: "bash",
    files: [{ name: "main.sh", content: "echo b" }],
  }, {
    master: master.addr,
    onEvent: (event) => {
      eventsB.push(event);
      if (event.type === "queued") queuedB.resolve();
    },
  });
  await queuedB.promise;
  joined = next(master, "nodejoin");
  await using _fresh = new SecondaryNode({
    master: master.addr,
    name: "fresh",
    slots: 1,
    languages: ["bash"],
  });
  await joined;
  const resultB = await jobB;
  assert.equal(resultB.verdict, "ok", resultB.reason);
  assert.equal(resultB.node, "fresh");
  assert.deepEqual(
    eventsB.filter((e) => e.type === "started").map((e) =>
      e.type === "started" && e.node
    ),
    ["fresh"],
  );

  // The running job finishes where it started, and its result gets out.
  held.open();
  const resultA = await jobA;
  assert.equal(resultA.verdict, "ok", resultA.reason);
  assert.equal(resultA.stdout, "ready\ngot go\n");
  assert.equal(resultA.node, "drainer");
  assert.deepEqual(eventsA.filter((e) => e.type === "restarted"), []);
  await drained;
  assert.equal((await left).reason, "it drained and left");
});

Deno.test("links: a drain is bounded by its timeout, and a shutdown during it stops at once", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    resourceLogIntervalMs: 0,
  });
  for (const ending of ["timeout", "shutdown"] as const) {
    const joined = next(master, "nodejoin");
    await using node = new SecondaryNode({
      master: master.addr,
      name: `drainer-${ending}`,
      slots: 1,
      languages: ["bash"],
      // Past its timeout at once, or (for the shutdown) never.
      drainTimeoutMs: ending === "timeout" ? 0 : 600_000,
    });
    await joined;
    const started = Promise.withResolvers<void>();
    const job = submitProgram({
      language: "bash",
      files: [{ name: "main.sh", content: "exec sleep 600" }],
    }, {
      master: master.addr,
      onEvent: (event) => event.type === "started" && started.resolve(),
    });
    await started.promise;
    const drained = node.drain();
    if (ending === "shutdown") {
      await next(master, "nodedrain");
      await node.shutdown();
    }
    await drained;
    // Its job was stopped; with no node left for bash, it ends.
    const result = await job;
    assert.equal(result.verdict, "internal_error");
    assert.match(result.reason ?? "", /was lost|no live node runs bash/);
  }
});

/** Resolves with the detail of the secondary's next `type` event. */
function nextOf<K extends keyof SecondaryNodeEventMap>(
  node: SecondaryNode,
  type: K,
): Promise<SecondaryNodeEventMap[K]["detail"]> {
  return new Promise((resolve) =>
    node.addEventListener(type, (event) => resolve(event.detail), {
      once: true,
    })
  );
}

Deno.test({
  name:
    "links: a secondary takes a master process stopped by SIGSTOP for lost within its timeout, stops its job, and registers again once it runs on",
  // Masters ping from protocol 4 on; before, nothing tells a stopped one.
  ignore: PROTOCOL_VERSION < PING_PROTOCOL_VERSION,
  async fn() {
    await using master = await startMasterProcess({
      args: ["--slots", "0", "--log-level", "error"],
      stderr: "null",
    });
    await using node = new SecondaryNode({
      master: master.address,
      name: "watchful",
      slots: 1,
      languages: ["bash"],
      masterTimeoutMs: 2000,
      reconnectMinMs: 50,
      reconnectMaxMs: 200,
    });
    await nextOf(node, "registered");
    const mark = processMarker();
    const client = new AbortController();
    const started = Promise.withResolvers<void>();
    const job = submitProgram({
      language: "bash",
      files: [{
        name: "main.sh",
        content: '(exec -a "$1" sleep 600) & echo started; wait',
      }],
      args: [mark],
    }, {
      master: master.address,
      signal: client.signal,
      onEvent: (event) => event.type === "output" && started.resolve(),
    }).catch(() => {}); // Given up below, with its master stopped.
    await started.promise;
    const disconnected = nextOf(node, "disconnected");
    const aborted = nextOf(node, "jobcomplete");

    Deno.kill(master.child.pid, "SIGSTOP");
    try {
      const { reason } = await disconnected;
      assert.match(
        reason,
        /^the master sent nothing for \d+ ms, past the node timeout of 2000 ms$/,
      );
      const result = await aborted;
      assert.equal(result.verdict, "internal_error");
      assert.match(result.reason ?? "", /connection to the master was lost/);
      assert.deepEqual(await processesWithArg(mark), [], "the job ran on");
      assert.equal(node.registered, false);
      client.abort();
    } finally {
      Deno.kill(master.child.pid, "SIGCONT");
    }
    // The master runs again: the node is back with it, by itself.
    await nextOf(node, "registered");
    await job;
  },
});

Deno.test("links: a master pings the secondaries whose protocol has pings, and only those", async (t) => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    heartbeatIntervalMs: 20,
    nodeTimeoutMs: 60_000,
    resourceLogIntervalMs: 0,
  });
  /** A secondary of these protocol versions, registered by hand. */
  async function register(name: string, versions: VersionRange) {
    const link = new Connection(
      await Deno.connect({ hostname: "127.0.0.1", port: master.addr.port }),
    );
    await clientHandshake(link, { role: "secondary", token: "", versions });
    await link.send({
      type: "register",
      id: crypto.randomUUID(),
      name,
      languages: [],
      slots: 1,
      maxCpu: 100,
      maxRam: 100,
    });
    assert.equal((await link.receive()).type, "registered");
    return link;
  }

  await t.step({
    name: `protocol ${PING_PROTOCOL_VERSION}: pinged every heartbeat interval`,
    ignore: PROTOCOL_VERSION < PING_PROTOCOL_VERSION,
    fn: async () => {
      await using link = await register("new", {
        min: PING_PROTOCOL_VERSION,
        max: PING_PROTOCOL_VERSION,
      });
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await link.receive(), { type: "ping" });
      }
    },
  });
  await t.step("protocol 3: never pinged, which it would refuse", async () => {
    await using link = await register("old", { min: 3, max: 3 });
    // Ten heartbeat intervals without a message.
    await assert.rejects(
      link.receive({ timeoutMs: 200 }),
      (error: unknown) =>
        error instanceof ProtocolError && error.code === "timeout",
    );
  });
});
