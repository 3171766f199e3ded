/**
 * Cluster throughput and latency: 200 short Python jobs from 16 concurrent
 * clients into a coordinator-only master with two secondaries (real
 * processes on loopback), against the same 200 programs started directly,
 * with no cluster, in the same invocation.
 *
 * @module
 */
import {
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import { createDefaultRegistry, submitProgram } from "../mod.ts";
import { type BenchSection, percentile, runPool } from "./_stats.ts";

const JOBS = 200;
const CLIENTS = 16;
const PROGRAM = "import sys\nprint(sum(range(int(sys.argv[1]))))\n";

interface Measured {
  readonly label: string;
  readonly wallMs: number;
  readonly latenciesMs: readonly number[];
  readonly failures: number;
}

/** The cluster section, with the throughputs the speed section's target compares. */
export interface ClusterSection extends BenchSection {
  /** Jobs/s of the cluster and of direct runs at its slot count; absent when skipped. */
  readonly throughput?: {
    readonly clusterJobsPerSecond: number;
    readonly directJobsPerSecond: number;
    /** Jobs that did not end `ok` in the cluster or failed directly. */
    readonly failures: number;
  };
}

/** Runs the cluster benchmark and returns its section. */
export async function benchCluster(): Promise<ClusterSection> {
  const python = await createDefaultRegistry().resolve("python");
  if (!python.ok) {
    return {
      title: "Cluster throughput",
      markdown: `Skipped: ${python.reason}.\n`,
    };
  }
  const interpreter = python.resolved.toolchain.executables.interpreter!;
  const secondarySlots = navigator.hardwareConcurrency;
  const cluster = await measureCluster();
  const directSame = await measureDirect(
    interpreter,
    CLIENTS,
    `direct, ${CLIENTS} at a time`,
  );
  const directSlots = await measureDirect(
    interpreter,
    2 * secondarySlots,
    `direct, ${2 * secondarySlots} at a time (the cluster's slots)`,
  );
  const jobsPerSecond = (m: Measured) => JOBS / (m.wallMs / 1000);
  const rows = [cluster, directSame, directSlots].map((m) =>
    `| ${m.label} | ${m.wallMs.toFixed(0)} | ${jobsPerSecond(m).toFixed(1)} | ${
      percentile(m.latenciesMs, 50).toFixed(0)
    } | ${percentile(m.latenciesMs, 95).toFixed(0)} | ${
      percentile(m.latenciesMs, 99).toFixed(0)
    } | ${m.failures} |`
  );
  return {
    title: "Cluster throughput",
    throughput: {
      clusterJobsPerSecond: jobsPerSecond(cluster),
      directJobsPerSecond: jobsPerSecond(directSlots),
      failures: cluster.failures + directSlots.failures,
    },
    markdown: [
      `${JOBS} short Python jobs (\`print(sum(range(n)))\`) from ${CLIENTS} concurrent clients.`,
      `The cluster is a coordinator-only master (\`--slots 0\`) and two secondaries with ${secondarySlots} slots each,`,
      "all separate processes on this machine, talking TCP over loopback. Latency is what a client sees, from",
      "submit to result, queueing included; for the direct runs, from spawn to exit of the same program run by",
      "the same interpreter (no workdir, no cluster). All three were measured in this one invocation.",
      "",
      "| mode | wall ms | jobs/s | p50 ms | p95 ms | p99 ms | failed |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...rows,
      "",
    ].join("\n"),
  };

  async function measureCluster(): Promise<Measured> {
    const token = crypto.randomUUID();
    await using master = await startMasterProcess({
      token,
      args: ["--slots", "0", "--log-level", "error"],
      stderr: "null",
    });
    await using _a = await startSecondaryProcess(master.address, {
      token,
      args: [
        "--name",
        "bench-a",
        "--slots",
        String(secondarySlots),
        "--log-level",
        "error",
      ],
      stderr: "null",
    });
    await using _b = await startSecondaryProcess(master.address, {
      token,
      args: [
        "--name",
        "bench-b",
        "--slots",
        String(secondarySlots),
        "--log-level",
        "error",
      ],
      stderr: "null",
    });
    const jobs = Array.from({ length: JOBS }, (_, i) => i);
    let failures = 0;
    const started = performance.now();
    const latencies = await runPool(jobs, CLIENTS, async (i) => {
      const t0 = performance.now();
      const result = await submitProgram({
        language: "python",
        files: [{ name: "sum.py", content: PROGRAM }],
        args: [String(1000 + i)],
      }, { master: master.address, token, name: `client-${i % CLIENTS}` });
      if (result.verdict !== "ok") failures++;
      return performance.now() - t0;
    });
    return {
      label: "kiln cluster",
      wallMs: performance.now() - started,
      latenciesMs: latencies,
      failures,
    };
  }
}

async function measureDirect(
  interpreter: string,
  parallelism: number,
  label: string,
): Promise<Measured> {
  const dir = await Deno.makeTempDir({ prefix: "kiln-bench-" });
  try {
    await Deno.writeTextFile(`${dir}/sum.py`, PROGRAM);
    let failures = 0;
    const started = performance.now();
    const latencies = await runPool(
      Array.from({ length: JOBS }, (_, i) => i),
      parallelism,
      async (i) => {
        const t0 = performance.now();
        const { success } = await new Deno.Command(interpreter, {
          args: ["-u", "-B", `${dir}/sum.py`, String(1000 + i)],
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (!success) failures++;
        return performance.now() - t0;
      },
    );
    return {
      label,
      wallMs: performance.now() - started,
      latenciesMs: latencies,
      failures,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
