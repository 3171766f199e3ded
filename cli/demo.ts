/**
 * `deno task demo`: starts a local cluster the way an operator would (a
 * coordinator-only master and two secondaries, each its own process),
 * submits every sample program in `examples/programs/` at once, prints a
 * table of the results with the node each ran on, and shuts the cluster
 * down. Languages whose toolchain this machine lacks are listed as skipped,
 * not failed.
 *
 * `deno task demo --nats` does the same on NATS JetStream: a local
 * `nats-server`, two masters and two secondaries; then it submits one more
 * job to the first master, kills that master (SIGKILL) while the job runs,
 * and shows the job's result arriving through the second.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { printable } from "./_terminal.ts";
import { basename, extname } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createDefaultRegistry,
  type JobResult,
  submitProgram,
} from "../mod.ts";
import { parseFlags, runMain } from "./_cli.ts";
import {
  type MasterProcess,
  type SecondaryProcess,
  startMasterProcess,
  startSecondaryProcess,
} from "./_processes.ts";
import { NatsServer, natsSkipReason } from "./_nats_server.ts";
import { KilnClient } from "../lib/kiln_client.ts";

const USAGE = `Usage: deno task demo [--nats]

Starts a local cluster (a master and two secondaries, each a process of its
own), runs every sample program in examples/programs/ on it, prints what each
did, and stops the cluster.

  --nats   the cluster on NATS JetStream instead: a local nats-server (it must
           be installed), two masters and two secondaries; then a job survives
           the loss (SIGKILL) of the master it was submitted to`;

const PROGRAMS_DIR = fileURLToPath(
  new URL("../examples/programs/", import.meta.url),
);

interface Row {
  language: string;
  program: string;
  verdict: string;
  timeMs: string;
  /** Peak memory of the run step, as the sandbox's cgroup measured it. */
  memory: string;
  node: string;
  /** The isolation layers the job ran under. */
  sandbox: string;
  output: string;
}

/** The demo's cluster: masters, secondaries, and on NATS the server. */
interface DemoCluster {
  readonly masters: MasterProcess[];
  readonly secondaries: SecondaryProcess[];
  readonly server: NatsServer | undefined;
  stop(): Promise<void>;
}

/** Starts the processes of the demo's cluster; on a failure, stops what started. */
async function startCluster(
  token: string,
  nats: boolean,
): Promise<DemoCluster> {
  const server = nats ? await NatsServer.start() : undefined;
  const natsArgs = server ? ["--nats", server.url] : [];
  const masters: MasterProcess[] = [];
  const secondaries: SecondaryProcess[] = [];
  const stop = async () => {
    await Promise.all(secondaries.map((secondary) => secondary.stop()));
    await Promise.all(masters.map((master) => master.stop()));
    await server?.stop();
  };
  try {
    for (const name of server ? ["m1", "m2"] : ["master"]) {
      masters.push(
        await startMasterProcess({
          token,
          args: [
            "--slots",
            "0",
            "--log-level",
            "error",
            "--name",
            name,
            ...natsArgs,
          ],
        }),
      );
    }
    const started = await Promise.allSettled(
      ["east", "west"].map((name) =>
        startSecondaryProcess(server ? server.url : masters[0]!.address, {
          token,
          args: ["--name", name, "--slots", "2", "--log-level", "error"],
        })
      ),
    );
    for (const s of started) {
      if (s.status === "fulfilled") secondaries.push(s.value);
    }
    const failure = started.find((s) => s.status === "rejected");
    // Stop the one that did start too: it would otherwise redial forever.
    if (failure) throw failure.reason;
    return { masters, secondaries, server, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    nats: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.nats && natsSkipReason) {
    console.error(`kiln demo: --nats needs a NATS server: ${natsSkipReason}`);
    return 1;
  }
  const token = crypto.randomUUID();
  const registry = createDefaultRegistry();
  const [cluster, statuses, programs] = await Promise.all([
    startCluster(token, values.nats),
    registry.detect(),
    listPrograms(),
  ]);
  const { masters, secondaries, server } = cluster;
  const addresses = masters.map((master) => master.address);
  console.log(
    `kiln demo: ${
      server
        ? `NATS at ${server.url}, masters ${addresses.join(" and ")}`
        : `master on ${addresses[0]}`
    } with secondaries ${
      secondaries.map((s) => s.name).join(" and ")
    }; ${programs.length} sample programs at once\n`,
  );

  try {
    const rows = await Promise.all(programs.map(async (path): Promise<Row> => {
      const program = basename(path);
      const runner = registry.forFile(program);
      const status = statuses.find((s) => s.name === runner?.name);
      if (!runner || !status) {
        return skipped("?", program, "no runner for this extension");
      }
      if (!status.toolchain.available) {
        return skipped(runner.name, program, status.toolchain.reason);
      }
      const stdin = await Deno.readTextFile(`${path}.stdin`).catch(() =>
        undefined
      );
      const result = await submitProgram({
        language: runner.name,
        files: [{ name: program, content: await Deno.readTextFile(path) }],
        ...stdin === undefined ? {} : { stdin },
      }, { master: addresses, token, name: "demo" });
      return row(
        runner.name,
        program + (stdin === undefined ? "" : " < stdin"),
        result,
      );
    }));
    printTable(rows);
    const failed = rows.filter((r) =>
      r.verdict !== "ok" && r.verdict !== "skipped"
    );
    const ran = rows.length -
      rows.filter((r) => r.verdict === "skipped").length;
    console.log(
      `\n${ran} ran, ${failed.length} failed, ${rows.length - ran} skipped`,
    );
    const survived = server ? await survive(masters, token) : true;
    return failed.length === 0 && survived ? 0 : 1;
  } finally {
    await cluster.stop();
  }
}

/**
 * On NATS: a job submitted to the first master outlives it. The master is
 * killed while the job runs; the client attaches to the job again through
 * the second master and gets its result from there.
 */
async function survive(
  masters: MasterProcess[],
  token: string,
): Promise<boolean> {
  const [first, second] = masters as [MasterProcess, MasterProcess];
  console.log(
    `\nA job submitted to ${first.address}, which is killed (SIGKILL) while the job runs:`,
  );
  await using client = new KilnClient({
    master: [first.address, second.address],
    token,
    name: "demo",
  });
  let killed = false;
  const result = await client.submit({
    language: "bash",
    files: [{
      name: "survivor.sh",
      content: 'echo "working"; sleep 1; echo "still here"',
    }],
  }, {
    onEvent: (event) => {
      if (event.type === "started") {
        console.log(`  started on ${printable(event.node)}`);
        if (killed) return;
        killed = true;
        first.child.kill("SIGKILL");
        console.log(`  master ${first.address} killed`);
      }
      if (event.type === "accepted") {
        console.log(`  accepted as job ${event.jobId}`);
      }
      if (event.type === "restarted") {
        console.log(`  restarted: ${printable(event.reason)}`);
      }
    },
  });
  console.log(
    `  result through ${second.address}: ${result.verdict}, on ${
      printable(result.node ?? "-")
    }: ${printable(result.stdout.trim().split("\n").join(" / "))}`,
  );
  return result.verdict === "ok";
}

async function listPrograms(): Promise<string[]> {
  const paths: string[] = [];
  for await (const entry of Deno.readDir(PROGRAMS_DIR)) {
    if (entry.isFile && extname(entry.name) !== ".stdin") {
      paths.push(PROGRAMS_DIR + entry.name);
    }
  }
  return paths.sort();
}

function row(language: string, program: string, result: JobResult): Row {
  const output = result.verdict === "ok"
    ? result.stdout
    : (result.reason ?? result.compile?.stderr ?? result.stderr);
  return {
    language,
    program,
    verdict: result.verdict,
    timeMs: `${result.timeMs + (result.compile?.timeMs ?? 0)} ms`,
    memory: result.memoryKb === null
      ? "-"
      : `${(result.memoryKb / 1024).toFixed(1)} MiB`,
    sandbox: result.sandbox.length === 0 ? "none" : result.sandbox.join("+"),
    node: result.node ?? "-",
    output: output.trim().split("\n").join(" / "),
  };
}

function skipped(language: string, program: string, reason: string): Row {
  return {
    language,
    program,
    verdict: "skipped",
    timeMs: "-",
    memory: "-",
    sandbox: "-",
    node: "-",
    output: reason,
  };
}

function printTable(given: Row[]): void {
  // Cells come from nodes and programs: escaped, so none moves the cursor.
  const rows = given.map((row) => {
    const safe = { ...row };
    for (const key of Object.keys(safe) as (keyof Row)[]) {
      safe[key] = printable(safe[key]);
    }
    return safe;
  });
  const columns: (keyof Row)[] = [
    "language",
    "program",
    "verdict",
    "timeMs",
    "memory",
    "node",
    "sandbox",
    "output",
  ];
  const titles: Row = {
    language: "LANGUAGE",
    program: "PROGRAM",
    verdict: "VERDICT",
    timeMs: "TIME",
    memory: "MEMORY",
    sandbox: "SANDBOX",
    node: "NODE",
    output: "OUTPUT",
  };
  const widths = columns.map((c) =>
    Math.max(titles[c].length, ...rows.map((r) => r[c].length))
  );
  for (const r of [titles, ...rows]) {
    console.log(
      columns.map((c, i) => c === "output" ? r[c] : r[c].padEnd(widths[i]!))
        .join("  "),
    );
  }
}

if (import.meta.main) await runMain("kiln demo", main);
