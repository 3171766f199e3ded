/**
 * Scale: how many jobs a second one master dispatches end to end, what each
 * costs its CPU, and what each waiting job costs its memory, with 10, 1,000
 * and 10,000 jobs waiting.
 *
 * Three processes on loopback, so that the master's CPU and memory are its
 * own: the real master CLI (coordinator only), 100 simulated secondaries
 * (`_scale_nodes.ts`: the real protocol, a no-op runner that answers each
 * `run` at once with a fixed result) and the clients (`_scale_clients.ts`:
 * one {@linkcode KilnClient} connection per client, each keeping one job in
 * flight). For `W` jobs waiting there are `W + 100` clients: one job for
 * each of the 100 slots, the rest wait.
 *
 * Memory is measured while everything waits (the nodes say they are busy),
 * as the master's resident set over its own before the clients came; then
 * the nodes say they are idle and the clients loop. Every job must get
 * exactly one result: the clients count results, the nodes count `run`s and
 * distinct job ids.
 *
 * Set `KILN_BENCH_PROFILE=DIR` to run the master under `--cpu-prof` (its
 * profile lands in DIR when it exits); the numbers are then the profiler's.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { startMasterProcess } from "../cli/_processes.ts";
import {
  CLOCK_TICKS,
  cpuTicks,
  residentBytes,
  settle,
  spawnScript,
} from "./_scripts.ts";
import type { BenchSection } from "./_stats.ts";
import type { Totals } from "./_scale_clients.ts";

const NODES = 100;
const SLOTS_PER_NODE = 1;
const WAITING = [10, 1000, 10_000];
const WARMUP_MS = 1000;
const MEASURE_MS = 5000;

const NODES_SCRIPT = fileURLToPath(
  new URL("./_scale_nodes.ts", import.meta.url),
);
const CLIENTS_SCRIPT = fileURLToPath(
  new URL("./_scale_clients.ts", import.meta.url),
);

/** One run at one queue length. */
interface ScaleRun {
  readonly waiting: number;
  readonly clients: number;
  readonly jobsPerSecond: number;
  readonly masterCpuUsPerJob: number;
  readonly nodesCpuUsPerJob: number;
  readonly clientsCpuUsPerJob: number;
  readonly baseRssMb: number;
  readonly connectionKb: number;
  readonly waitingJobKb: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly jobs: number;
  /** Jobs without exactly one result, or run other than once; 0 expected. */
  readonly lost: number;
  readonly problems: string[];
}

/** Runs the scale benchmark and returns its section. */
export async function benchScale(
  waitingCounts: readonly number[] = WAITING,
): Promise<BenchSection> {
  const runs: ScaleRun[] = [];
  for (const waiting of waitingCounts) runs.push(await measure(waiting));
  const ms = (value: number) => Number.isNaN(value) ? "–" : value.toFixed(0);
  const rows = runs.map((r) =>
    `| ${r.waiting.toLocaleString("en")} (${
      r.clients.toLocaleString("en")
    } clients) | ${r.jobsPerSecond.toFixed(0)} | ${
      r.masterCpuUsPerJob.toFixed(0)
    } | ${r.nodesCpuUsPerJob.toFixed(0)} / ${
      r.clientsCpuUsPerJob.toFixed(0)
    } | ${r.connectionKb.toFixed(1)} + ${r.waitingJobKb.toFixed(1)} | ${
      ms(r.p50Ms)
    } / ${ms(r.p99Ms)} | ${r.jobs} | ${r.lost} |`
  );
  const problems = runs.flatMap((r) =>
    r.problems.map((p) => `- ${r.waiting} waiting: ${p}`)
  );
  const base = runs.map((r) => r.baseRssMb.toFixed(0)).join(", ");
  return {
    title: "Scale",
    markdown: [
      `One master (the CLI, \`--slots 0\`, \`--log-level warning\`) and ${NODES} simulated secondaries with ${SLOTS_PER_NODE} slot each,`,
      "which speak the real protocol but run nothing: a no-op runner answers every `run` at once with the same",
      "result, so this measures the master, not programs. Clients are `KilnClient`s, one connection each, each",
      `keeping one job in flight: W jobs waiting means W + ${
        NODES * SLOTS_PER_NODE
      } clients. Master, nodes and clients are three processes`,
      `on this machine, on loopback. Throughput over ${
        MEASURE_MS / 1000
      } s after ${WARMUP_MS / 1000} s of warm-up; CPU from`,
      "/proc/<pid>/stat over the same window. Memory is the master's resident set while every job waits (the",
      `nodes say they are busy), over its own before the clients connected (${base} MB): per client connection,`,
      "plus per waiting job on it. Latency is submit to result of the jobs the loop submitted (– when none of",
      "them ended within the window). Lost counts jobs without exactly one result, or run other than once.",
      "",
      "| waiting | jobs/s | master CPU µs/job | nodes / clients CPU µs/job | master KB per client + per waiting job | p50 / p99 ms | jobs | lost |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...rows,
      "",
      ...problems.length > 0 ? ["Problems seen:", "", ...problems, ""] : [],
    ].join("\n"),
  };
}

/** One queue length, from fresh processes to their exit. */
async function measure(waiting: number): Promise<ScaleRun> {
  const token = crypto.randomUUID();
  const clients = waiting + NODES * SLOTS_PER_NODE;
  const profileDir = Deno.env.get("KILN_BENCH_PROFILE");
  await using master = await startMasterProcess({
    token,
    args: [
      "--slots",
      "0",
      "--max-queue",
      String(clients),
      "--max-connections-per-ip",
      "0",
      "--log-level",
      "warning",
    ],
    stderr: "inherit",
    runtimeArgs: profileDir === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`],
  });
  const masterPid = master.child.pid;
  await using nodes = spawnScript(NODES_SCRIPT, [
    master.address,
    String(NODES),
    String(SLOTS_PER_NODE),
  ], token);
  await nodes.expect(/^registered /);
  await settle();
  const baseRss = await residentBytes(masterPid);

  await using clientProcess = spawnScript(CLIENTS_SCRIPT, [
    master.address,
    String(clients),
  ], token);
  await clientProcess.send("connect", /^connected$/);
  await settle();
  const connectedRss = await residentBytes(masterPid);
  await clientProcess.send("fill", /^filled$/);
  await settle();
  const filledRss = await residentBytes(masterPid);

  clientProcess.write(`run ${WARMUP_MS} ${MEASURE_MS}`);
  await nodes.send("free", /^ok$/);
  await clientProcess.expect(/^mark$/);
  const before = await Promise.all(
    [masterPid, nodes.pid, clientProcess.pid].map(cpuTicks),
  );
  await clientProcess.expect(/^mark$/);
  const after = await Promise.all(
    [masterPid, nodes.pid, clientProcess.pid].map(cpuTicks),
  );
  const totals: Totals = JSON.parse(await clientProcess.expect(/^\{/));
  if (Deno.env.get("KILN_BENCH_VERBOSE")) {
    await Deno.stderr.write(
      new TextEncoder().encode(JSON.stringify(totals) + "\n"),
    );
  }
  const counted: { runs: number; unique: number } = JSON.parse(
    await nodes.send("count", /^\{/),
  );
  // The master goes first, so that it does not log every node leaving.
  clientProcess.write("stop");
  await master.stop();

  const results = totals.ok + totals.otherResults;
  const problems = [...totals.samples];
  if (totals.unfinished > 0) {
    problems.push(
      `${totals.unfinished} jobs still had no result two minutes after the window`,
    );
  }
  // Every job submitted got one result, ran once, and no result came twice.
  const lost = Math.abs(totals.submitted - results) +
    Math.abs(counted.runs - results) + (counted.runs - counted.unique) +
    (results - totals.uniqueJobIds);
  if (lost > 0) {
    problems.push(
      `submitted ${totals.submitted}, results ${results} (${totals.uniqueJobIds} distinct), errors ${totals.errors}, runs ${counted.runs} (${counted.unique} distinct)`,
    );
  }
  const usPerJob = (i: number) =>
    (after[i]! - before[i]!) * (1e6 / CLOCK_TICKS) / totals.windowJobs;
  return {
    waiting,
    clients,
    jobsPerSecond: totals.windowJobs / (totals.windowMs / 1000),
    masterCpuUsPerJob: usPerJob(0),
    nodesCpuUsPerJob: usPerJob(1),
    clientsCpuUsPerJob: usPerJob(2),
    baseRssMb: baseRss / 1024 / 1024,
    connectionKb: (connectedRss - baseRss) / clients / 1024,
    waitingJobKb: (filledRss - connectedRss) / clients / 1024,
    // JSON has no NaN: a window without latencies reads back as null.
    p50Ms: totals.p50Ms ?? NaN,
    p99Ms: totals.p99Ms ?? NaN,
    jobs: results,
    lost,
    problems,
  };
}

// Run alone with queue lengths of its own: `deno run -A bench/scale_bench.ts 10 1000`.
if (import.meta.main) {
  const waiting = Deno.args.map(Number);
  const section = await benchScale(waiting.length > 0 ? waiting : WAITING);
  // deno-lint-ignore no-console
  console.log(section.markdown);
}
