/**
 * NATS: end-to-end jobs/s of kiln on NATS JetStream with 1, 2 and 3
 * masters, against the standalone cluster, all in one run on the same
 * simulated secondaries.
 *
 * Every configuration has the same shape: {@linkcode NODES} simulated
 * secondaries with {@linkcode SLOTS_PER_NODE} slots, which run nothing (a
 * no-op runner answers each job at once with a fixed result), and
 * {@linkcode CLIENTS} `KilnClient`s keeping one job each in flight, spread
 * evenly over the masters. Standalone: the master CLI and `_scale_nodes.ts`
 * (the real TCP protocol). On NATS: one `nats-server -js` on loopback
 * (file storage), the master CLI with `--nats`, and `_nats_nodes.ts` (the
 * real puller: claims, records, events and acks). So the difference is
 * what a job costs on each path, not programs.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { type MasterProcess, startMasterProcess } from "../cli/_processes.ts";
import { NatsServer, natsSkipReason } from "../cli/_nats_server.ts";
import type { BenchSection } from "./_stats.ts";
import type { Totals } from "./_scale_clients.ts";
import { CLOCK_TICKS, cpuTicks, settle, spawnScript } from "./_scripts.ts";

const NODES = 20;
const SLOTS_PER_NODE = 2;
const CLIENTS = 120;
const WARMUP_MS = 2000;
const MEASURE_MS = 5000;

const script = (name: string) => fileURLToPath(new URL(name, import.meta.url));
const TCP_NODES = script("./_scale_nodes.ts");
const NATS_NODES = script("./_nats_nodes.ts");
const CLIENTS_SCRIPT = script("./_scale_clients.ts");

/** One configuration's numbers. */
interface NatsRun {
  readonly label: string;
  readonly jobsPerSecond: number;
  readonly mastersCpuUsPerJob: number;
  readonly serverCpuUsPerJob: number;
  readonly nodesCpuUsPerJob: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly jobs: number;
  readonly lost: number;
  readonly problems: string[];
}

/** Runs the NATS benchmark and returns its section. */
export async function benchNats(): Promise<BenchSection> {
  if (natsSkipReason) {
    return {
      title: "NATS",
      markdown: `Not measured: ${natsSkipReason}.\n`,
    };
  }
  const runs: NatsRun[] = [];
  // Alternating: standalone between the NATS runs, for a noisy machine.
  runs.push(await measure(0));
  for (const masters of [1, 2, 3]) runs.push(await measure(masters));
  const ms = (value: number) => Number.isNaN(value) ? "–" : value.toFixed(0);
  const base = runs[0]!.jobsPerSecond;
  const rows = runs.map((r) =>
    `| ${r.label} | ${r.jobsPerSecond.toFixed(0)} | ${
      (r.jobsPerSecond / base).toFixed(2)
    } | ${r.mastersCpuUsPerJob.toFixed(0)} | ${
      r.serverCpuUsPerJob ? r.serverCpuUsPerJob.toFixed(0) : "–"
    } | ${r.nodesCpuUsPerJob.toFixed(0)} | ${ms(r.p50Ms)} / ${
      ms(r.p99Ms)
    } | ${r.jobs} | ${r.lost} |`
  );
  const problems = runs.flatMap((r) =>
    r.problems.map((p) => `- ${r.label}: ${p}`)
  );
  return {
    title: "NATS",
    markdown: [
      `${NODES} simulated secondaries with ${SLOTS_PER_NODE} slots each that run nothing (a no-op runner answers`,
      `every job at once), and ${CLIENTS} \`KilnClient\`s each keeping one job in flight, spread evenly over the`,
      "masters. Standalone: the master CLI and the scale bench's TCP nodes. On NATS: one `nats-server -js`",
      "(file storage) on loopback, masters with `--nats`, nodes with the real puller (claim, events, record,",
      `ack). Throughput over ${MEASURE_MS / 1000} s after ${
        WARMUP_MS / 1000
      } s of warm-up; CPU from /proc/<pid>/stat over the`,
      "same window, per job: all masters together, the NATS server, the nodes' process. Everything shares",
      "this machine's cores, so more masters add CPU to the same two cores rather than capacity.",
      "Lost counts jobs without exactly one result, or run other than once.",
      "",
      "| cluster | jobs/s | × standalone | masters CPU µs/job | nats-server µs/job | nodes µs/job | p50 / p99 ms | jobs | lost |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...rows,
      "",
      ...problems.length > 0 ? ["Problems seen:", "", ...problems, ""] : [],
    ].join("\n"),
  };
}

/** One configuration: 0 masters means standalone (one master, TCP nodes). */
async function measure(natsMasters: number): Promise<NatsRun> {
  const token = crypto.randomUUID();
  await using server = natsMasters > 0 ? await NatsServer.start() : undefined;
  const masterArgs = [
    "--slots",
    "0",
    "--max-queue",
    String(CLIENTS),
    "--max-connections-per-ip",
    "0",
    "--log-level",
    "warning",
    ...server ? ["--nats", server.url] : [],
  ];
  const masters: MasterProcess[] = [];
  try {
    for (let i = 0; i < Math.max(1, natsMasters); i++) {
      masters.push(
        await startMasterProcess({
          token,
          args: [...masterArgs, "--name", `m${i + 1}`],
          stderr: "inherit",
        }),
      );
    }
    await using nodes = spawnScript(
      server ? NATS_NODES : TCP_NODES,
      [
        server ? server.url : masters[0]!.address,
        String(NODES),
        String(SLOTS_PER_NODE),
      ],
      token,
    );
    await nodes.expect(/^registered /);
    if (!server) await nodes.send("free", /^ok$/);
    await settle();
    const perMaster = Math.ceil(CLIENTS / masters.length);
    const clientProcesses = masters.map((master) =>
      spawnScript(CLIENTS_SCRIPT, [master.address, String(perMaster)], token)
    );
    try {
      await Promise.all(
        clientProcesses.map((c) => c.send("connect", /^connected$/)),
      );
      // Each client's first job; then every result submits the next.
      await Promise.all(
        clientProcesses.map((c) => c.send("fill", /^filled$/)),
      );
      for (const c of clientProcesses) {
        c.write(`run ${WARMUP_MS} ${MEASURE_MS}`);
      }
      await Promise.all(clientProcesses.map((c) => c.expect(/^mark$/)));
      const pids = [
        ...masters.map((m) => m.child.pid),
        ...server ? [server.pid] : [],
        nodes.pid,
      ];
      const before = await Promise.all(pids.map(cpuTicks));
      await Promise.all(clientProcesses.map((c) => c.expect(/^mark$/)));
      const after = await Promise.all(pids.map(cpuTicks));
      const totals: Totals[] = await Promise.all(
        clientProcesses.map(async (c) => JSON.parse(await c.expect(/^\{/))),
      );
      const counted: { runs: number; unique: number } = JSON.parse(
        await nodes.send("count", /^\{/),
      );
      const sum = (pick: (t: Totals) => number) =>
        totals.reduce((total, t) => total + pick(t), 0);
      const windowJobs = sum((t) => t.windowJobs);
      const windowMs = Math.max(...totals.map((t) => t.windowMs));
      const results = sum((t) => t.ok + t.otherResults);
      const submitted = sum((t) => t.submitted);
      const unique = sum((t) => t.uniqueJobIds);
      const problems = totals.flatMap((t) => t.samples);
      const lost = Math.abs(submitted - results) +
        Math.abs(counted.runs - results) + (counted.runs - counted.unique) +
        (results - unique);
      if (lost > 0) {
        problems.push(
          `submitted ${submitted}, results ${results} (${unique} distinct), runs ${counted.runs} (${counted.unique} distinct)`,
        );
      }
      const ticks = (from: number, to: number) => {
        let total = 0;
        for (let i = from; i < to; i++) total += after[i]! - before[i]!;
        return total * (1e6 / CLOCK_TICKS) / windowJobs;
      };
      const m = masters.length;
      // Latency: the median of the client processes' own percentiles.
      const middle = (values: number[]) => {
        const known = values.filter((v) => Number.isFinite(v)).sort((a, b) =>
          a - b
        );
        return known[Math.floor(known.length / 2)] ?? NaN;
      };
      return {
        label: server
          ? `NATS, ${m} master${m > 1 ? "s" : ""}`
          : "standalone, 1 master",
        jobsPerSecond: windowJobs / (windowMs / 1000),
        mastersCpuUsPerJob: ticks(0, m),
        serverCpuUsPerJob: server ? ticks(m, m + 1) : 0,
        nodesCpuUsPerJob: ticks(pids.length - 1, pids.length),
        p50Ms: middle(totals.map((t) => t.p50Ms ?? NaN)),
        p99Ms: middle(totals.map((t) => t.p99Ms ?? NaN)),
        jobs: results,
        lost,
        problems,
      };
    } finally {
      for (const c of clientProcesses) c.write("stop");
      await Promise.all(clientProcesses.map((c) => c[Symbol.asyncDispose]()));
    }
  } finally {
    await Promise.all(masters.map((master) => master.stop()));
  }
}

if (import.meta.main) {
  const section = await benchNats();
  // deno-lint-ignore no-console
  console.log(section.markdown);
}
