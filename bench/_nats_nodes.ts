/**
 * The NATS bench's simulated secondaries, as a process of their own: the
 * counterpart of `_scale_nodes.ts` for a cluster on NATS. Each one has its
 * own NATS connection, writes its entry in the nodes bucket every second,
 * and pulls jobs with the real {@linkcode JobPuller} (claims, events,
 * records and acks as a real secondary does), but runs nothing: every job
 * ends at once with the same fixed result (language `noop`).
 *
 * `deno run -A bench/_nats_nodes.ts SERVERS COUNT SLOTS`. Commands, one per
 * line on stdin: `count` (prints `{"runs":N,"unique":N}`), `stop`. Prints
 * `registered COUNT` once every node has written its entry.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { readLines } from "../cli/_processes.ts";
import { blankResult } from "../lib/job.ts";
import { JobPuller } from "../lib/nats/job_puller.ts";
import { NatsCluster } from "../lib/nats/nats_cluster.ts";
import type { NodeEntry } from "../lib/nats/wire.ts";

const [serversArg, countArg, slotsArg] = Deno.args;
const servers = serversArg!.split(",");
const count = Number(countArg);
const slots = Number(slotsArg);

let runs = 0;
const seen = new Set<string>();

async function startNode(index: number) {
  const name = `sim-${index}`;
  const id = crypto.randomUUID();
  const cluster = await NatsCluster.connect({ servers, name });
  let running = 0;
  const entry = (): NodeEntry => ({
    id,
    name,
    address: "127.0.0.1",
    slots,
    running,
    cpuPercent: 10,
    ramPercent: 10,
    maxCpu: 100,
    maxRam: 100,
    draining: false,
    languages: [{
      name: "noop",
      version: "noop 1",
      aliases: [],
      extensions: [".noop"],
    }],
    sandbox: null,
    at: Date.now(),
  });
  await cluster.nodes.put(id, JSON.stringify(entry()));
  const heartbeat = setInterval(
    () => void cluster.nodes.put(id, JSON.stringify(entry())).catch(() => {}),
    1000,
  );
  const puller: JobPuller = new JobPuller({
    cluster,
    languages: ["noop"],
    node: name,
    maxAttempts: 3,
    hasRoom: () => running < slots,
    run: (job) => {
      runs++;
      seen.add(job.id);
      running++;
      const done = job.finish(
        blankResult(job.id, {
          verdict: "ok",
          language: "noop",
          exitCode: 0,
          stdout: "ok\n",
          client: job.client,
          node: name,
        }),
      ).then(() => {
        running--;
      });
      return { controls: { cancel() {}, input() {} }, done };
    },
  });
  return {
    async stop() {
      clearInterval(heartbeat);
      await puller.stop();
      await cluster.nodes.delete(id).catch(() => {});
      await cluster.connection.close();
      await puller.finished;
    },
  };
}

const nodes = await Promise.all(
  Array.from({ length: count }, (_, i) => startNode(i)),
);
console.log(`registered ${nodes.length}`);

for await (const line of readLines(Deno.stdin.readable)) {
  const command = line.trim();
  if (command === "count") {
    console.log(JSON.stringify({ runs, unique: seen.size }));
  } else if (command === "stop") break;
}
await Promise.all(nodes.map((node) => node.stop()));
Deno.exit(0);
