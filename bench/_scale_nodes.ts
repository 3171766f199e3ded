/**
 * The scale bench's simulated secondaries, as a process of their own: each
 * one dials the master, shakes hands and registers over a connection of its
 * own, heartbeats, and answers every `run` at once with the same fixed
 * result. They speak the real secondary protocol; the runner is a no-op
 * (language `noop`), so the bench measures the master, not programs.
 *
 * `deno run -A bench/_scale_nodes.ts MASTER COUNT SLOTS`, token in
 * `KILN_TOKEN`. Commands, one per line on stdin: `busy` (heartbeat a CPU
 * over the registered maximum, so the master places nothing here), `free`
 * (heartbeat an idle CPU: the master dispatches), `count` (prints
 * `{"runs":N,"unique":N}`: the `run` messages received, and how many
 * distinct job ids they named), `stop`. Prints `registered COUNT` once all
 * have registered, and `ok` after each `busy` or `free` has been sent.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { readLines } from "../cli/_processes.ts";
import { parseHostPort } from "../lib/address.ts";
import { blankResult, type JobResult } from "../lib/job.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import type { Message } from "../lib/protocol/messages.ts";

/** The language the simulated nodes offer. */
const NOOP_LANGUAGE = "noop";

const [masterArg, countArg, slotsArg] = Deno.args;
const address = parseHostPort(masterArg!);
const count = Number(countArg);
const slots = Number(slotsArg);
const token = Deno.env.get("KILN_TOKEN") ?? "";

/** Over `maxCpu` (50): the master places nothing on a node that says it. */
const BUSY_CPU = 100;
let cpuPercent = BUSY_CPU;
let runs = 0;
const seen = new Set<string>();

/** One simulated secondary: its link and what it has been given. */
interface Node {
  readonly name: string;
  readonly connection: Connection;
  running: number;
}

function heartbeat(node: Node): Promise<void> {
  return node.connection.send({
    type: "heartbeat",
    cpuPercent,
    ramPercent: 10,
    ramUsedMb: 100,
    running: node.running,
  });
}

async function startNode(index: number): Promise<Node> {
  const name = `sim-${index}`;
  const conn = await Deno.connect(address);
  conn.setNoDelay(true);
  const connection = new Connection(conn);
  await clientHandshake(connection, { role: "secondary", token, name });
  await connection.send({
    type: "register",
    id: crypto.randomUUID(),
    secret: crypto.randomUUID(),
    name,
    languages: [{
      name: NOOP_LANGUAGE,
      version: "1",
      aliases: [],
      extensions: [".noop"],
    }],
    slots,
    maxCpu: 50,
    maxRam: 100,
  });
  const registered = await connection.receive();
  if (registered.type !== "registered") {
    throw new Error(`${name}: expected registered, got ${registered.type}`);
  }
  const node: Node = { name, connection, running: 0 };
  await heartbeat(node);
  setInterval(
    () => heartbeat(node).catch(() => {}),
    registered.heartbeatIntervalMs,
  );
  serve(node);
  return node;
}

/** Answers every `run` at once with the fixed result. */
async function serve(node: Node): Promise<void> {
  try {
    for await (const message of node.connection) answer(node, message);
  } catch (error) {
    console.error(`${node.name}: ${(error as Error).message}`);
  }
}

function answer(node: Node, message: Message): void {
  if (message.type !== "run") return; // cancel, stdin: nothing runs to stop
  runs++;
  seen.add(message.jobId);
  const result: JobResult = blankResult(message.jobId, {
    verdict: "ok",
    language: NOOP_LANGUAGE,
    exitCode: 0,
    stdout: "ok\n",
    node: node.name,
  });
  node.connection.post({ type: "result", jobId: message.jobId, result });
}

const nodes: Node[] = [];
for (let i = 0; i < count; i += 20) {
  const batch = Array.from(
    { length: Math.min(20, count - i) },
    (_, j) => startNode(i + j),
  );
  nodes.push(...await Promise.all(batch));
}
console.log(`registered ${nodes.length}`);

for await (const line of readLines(Deno.stdin.readable)) {
  const command = line.trim();
  if (command === "busy" || command === "free") {
    cpuPercent = command === "busy" ? BUSY_CPU : 0;
    await Promise.all(nodes.map(heartbeat));
    console.log("ok");
  } else if (command === "count") {
    console.log(JSON.stringify({ runs, unique: seen.size }));
  } else if (command === "stop") break;
}
await Promise.all(nodes.map((node) => node.connection.close()));
Deno.exit(0);
