/**
 * What kiln's own processes spend per job, in CPU time (user + system of
 * every thread, from `/proc/<pid>/stat`), not the job's:
 *
 * - `sandbox`: this process running `/bin/true` steps through the
 *   {@linkcode Sandbox} as a node does (makeWorkdir, prepareWorkdir, run,
 *   removeWorkdir), one at a time;
 * - `cluster`: a coordinator (`--slots 0`) and one secondary, separate
 *   processes on loopback, running sandboxed bash `echo` jobs from a few
 *   concurrent clients; the CPU of each node process over the jobs. Once
 *   with a connection per job (`submitProgram`), once with one connection
 *   per client for all its jobs, as a long-lived client does.
 *
 * Run: `deno run -A bench/node_cpu_bench.ts [sandbox|cluster|both] [jobs]`
 * (default both, 500 jobs). Linux only.
 *
 * @module
 */
import {
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import { submitProgram } from "../mod.ts";
import { DEFAULT_LIMITS, type JobRequest, type JobResult } from "../lib/job.ts";
import { parseHostPort } from "../lib/address.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { dial } from "../lib/protocol/transport.ts";
import { Sandbox } from "../lib/sandbox/sandbox.ts";
import { defaultWorkRoot } from "../lib/sandbox/work_root.ts";
import { runPool } from "./_stats.ts";

const CLIENTS = 4;
/** Jobs run before measuring: JIT, caches and pools warmed up. */
const WARMUP = 40;

/** CPU time (user + system, all threads) of `pid` so far, in milliseconds. */
export function cpuMs(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15: 12 and 13 after the state.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks * 1000 / CLOCK_TICKS;
}

/** `getconf CLK_TCK` is 100 on every Linux kiln runs on. */
const CLOCK_TICKS = 100;

/** ms of this process's CPU per `/bin/true` step through the sandbox. */
export async function benchSandbox(jobs: number): Promise<number> {
  const sandbox = await Sandbox.detect();
  // As the executor asks for it: mount points only, with a disk per job.
  const root = await defaultWorkRoot({
    mountPointsOnly: sandbox.layers.includes("disk"),
  });
  const step = async () => {
    const workdir = await sandbox.makeWorkdir(root, DEFAULT_LIMITS);
    await Deno.writeTextFile(`${workdir}/main.sh`, "echo hi\n");
    await sandbox.prepareWorkdir(workdir);
    const outcome = await sandbox.run({ command: "/bin/true", args: [] }, {
      workdir,
      env: { PATH: "/usr/bin:/bin" },
      executables: ["/bin/true"],
      limits: DEFAULT_LIMITS,
    });
    if (outcome.exitCode !== 0) throw new Error(JSON.stringify(outcome));
    await sandbox.removeWorkdir(workdir);
  };
  try {
    for (let i = 0; i < WARMUP; i++) await step();
    const before = cpuMs("self");
    for (let i = 0; i < jobs; i++) await step();
    return (cpuMs("self") - before) / jobs;
  } finally {
    await sandbox.close();
  }
}

/** How the bench's clients reach the master. */
export type ClientMode = "connection per job" | "connection per client";

/** ms of the master's and the secondary's CPU per sandboxed bash job. */
export async function benchCluster(
  jobs: number,
  mode: ClientMode,
): Promise<{ master: number; secondary: number; failures: number }> {
  const token = crypto.randomUUID();
  await using master = await startMasterProcess({
    token,
    args: ["--slots", "0", "--log-level", "error"],
    stderr: "null",
  });
  await using secondary = await startSecondaryProcess(master.address, {
    token,
    args: ["--name", "cpu-bench", "--slots", "2", "--log-level", "error"],
    stderr: "null",
  });
  let failures = 0;
  const job = (i: number): JobRequest => ({
    language: "bash",
    files: [{ name: "main.sh", content: `echo hi ${i}\n` }],
  });
  const run = async (count: number) => {
    if (mode === "connection per job") {
      await runPool(
        Array.from({ length: count }, (_, i) => i),
        CLIENTS,
        async (i) => {
          const result = await submitProgram(job(i), {
            master: master.address,
            token,
            name: `client-${i % CLIENTS}`,
          });
          if (result.verdict !== "ok") failures++;
        },
      );
      return;
    }
    let next = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        await using client = await connectClient(master.address, token);
        while (next < count) {
          const result = await client.run(job(next++));
          if (result.verdict !== "ok") failures++;
        }
      }),
    );
  };
  await run(WARMUP);
  failures = 0;
  const masterBefore = cpuMs(master.child.pid);
  const secondaryBefore = cpuMs(secondary.child.pid);
  await run(jobs);
  return {
    master: (cpuMs(master.child.pid) - masterBefore) / jobs,
    secondary: (cpuMs(secondary.child.pid) - secondaryBefore) / jobs,
    failures,
  };
}

/** A client that runs its jobs one after another on one connection. */
async function connectClient(
  master: string,
  token: string,
): Promise<AsyncDisposable & { run(job: JobRequest): Promise<JobResult> }> {
  const connection = new Connection(await dial(parseHostPort(master)));
  await clientHandshake(connection, { role: "client", token });
  return {
    async run(job) {
      await connection.send({ type: "submit", ref: "1", job });
      while (true) {
        const message = await connection.receive();
        if (message.type === "result") return message.result;
      }
    },
    [Symbol.asyncDispose]: () => connection.close(),
  };
}

if (import.meta.main) {
  const what = Deno.args[0] ?? "both";
  const jobs = Number(Deno.args[1] ?? 500);
  // deno-lint-ignore no-console
  const print = console.log;
  if (what === "sandbox" || what === "both") {
    print(`sandbox: ${(await benchSandbox(jobs)).toFixed(2)} ms CPU/job`);
  }
  if (what === "cluster" || what === "both") {
    for (
      const mode of ["connection per job", "connection per client"] as const
    ) {
      const { master, secondary, failures } = await benchCluster(jobs, mode);
      print(
        `cluster, ${mode}: master ${master.toFixed(2)} ms CPU/job, secondary ${
          secondary.toFixed(2)
        } ms CPU/job (${jobs} jobs, ${failures} failed)`,
      );
    }
  }
}
