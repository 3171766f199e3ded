/**
 * kiln's speed targets, each measured beside its floor in this one run. The
 * floor is the same program run bare (no kiln, no sandbox) by the same
 * interpreter or compiler with the runner's own flags, spawned from the bench.
 * Python has a second floor, the sandbox floor (`_sandbox_floor.ts`): the
 * same command in the sandbox chain kiln runs a cold step in, built by
 * kiln's own builders and spawned from the bench, with no kiln process
 * involved. The gap between the two floors is what the sandbox itself costs
 * on this machine; kiln is shown beside both, and the system-wide CPU per
 * job (`_system_cpu.ts`) of bare, sandbox floor and kiln batches says what
 * each costs the machine.
 *
 * kiln runs the way an operator starts it: `cli/master.ts` and
 * `cli/secondary.ts` as separate processes on 127.0.0.1, a single master with
 * the full sandbox, and a coordinator (`--slots 0`) with one secondary. Jobs
 * go through the Piston-compatible `POST /api/v2/execute` over keep-alive
 * HTTP, the way a Piston client would send them.
 *
 * Every measurement is made once per variant of the nodes' flags: the
 * defaults, and `--prewarm 0` (pre-warmed sandboxes off) when the nodes have
 * that flag. The cluster bench's throughput target is read from that
 * section's numbers when it ran in the same invocation, not measured again.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import {
  type MasterProcess,
  type SecondaryProcess,
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import type { JobSummary } from "../lib/history/job_history.ts";
import type {
  PistonExecuteResponse,
  PistonRuntime,
} from "../lib/http/piston.ts";
import type { CommandSpec } from "../lib/runners/runner.ts";
import { createDefaultRegistry, type ResolvedRunner } from "../mod.ts";
import type { ClusterSection } from "./cluster_bench.ts";
import { SANDBOX_UID } from "../lib/sandbox/bubblewrap.ts";
import {
  type SandboxFloor,
  sandboxFloor,
  singleFileStep,
} from "./_sandbox_floor.ts";
import {
  alternatingPairs,
  type BenchSection,
  inRotation,
  percentile,
  processCpuMs,
  runPool,
} from "./_stats.ts";
import { type CpuPerJob, SystemCpu } from "./_system_cpu.ts";

const TITLE = "Speed targets";

/**
 * The `PATH` the nodes and the floors alike find their toolchains on, so both
 * run the same ones: the system's, not whatever a user's shell puts first
 * (pyenv's `python3`, where this bench was written, loads a site `.pth` that
 * costs about 50 ms a start, which would hide what kiln adds).
 */
const TOOLCHAIN_PATH = "/usr/local/bin:/usr/bin:/bin";

/** What every hello world below prints. */
const EXPECTED = "Hello, world!\n";

const PYTHON_HELLO = {
  language: "python",
  name: "hello.py",
  content: 'print("Hello, world!")\n',
};
const C_HELLO = {
  language: "c",
  name: "hello.c",
  content:
    '#include <stdio.h>\n\nint main(void) {\n  puts("Hello, world!");\n  return 0;\n}\n',
};
/** The job the CPU rows count over: as little work as a job can be. */
const ECHO = { language: "bash", name: "main.sh", content: "echo hi\n" };

/**
 * Python latency: bare, single master and cluster in rotation, one request
 * at a time after a lull of `pauseMs`: the latency of a node that is not
 * saturated (saturation is the throughput rows'). Without it, one node's
 * refill of its warm sandboxes after its job ran during the next subject's
 * run on this one machine, which separate machines would not share.
 */
const LATENCY = { rounds: 40, warmup: 3, pauseMs: 250 };
/** C compile + run: bare and single master in alternating pairs, likewise. */
const C_PAIRS = { pairs: 20, warmup: 2, pauseMs: 250 };
/**
 * Throughput: batches of hellos, kiln, bare and the sandbox floor in
 * rotating order, with an idle period per round for the background CPU rate.
 */
const BATCH = { jobs: 100, clients: 8, rounds: 5, idleMs: 2_000 };
/**
 * Share of the machine (of all its cores) that other work may keep busy
 * before the system-wide CPU rows are marked as meaning little.
 */
const BUSY_BACKGROUND = 0.25;
/** Node CPU: over this many jobs from this many clients. */
const CPU = { jobs: 500, clients: 4 };

/**
 * CPU per job a node process may spend (issue 13): a coordinator 1 ms, a
 * node running the job 3 ms; a single master does both.
 */
const CPU_BUDGET_MS = { coordinator: 1, secondary: 3, single: 4 };

/** Flags added to every node's command line for one pass of the bench. */
interface Variant {
  readonly label: string;
  readonly args: readonly string[];
}

/** One kind of job, and how many of its runs failed so far. */
class Job {
  runs = 0;
  failures = 0;
  constructor(
    readonly label: string,
    /** Runs the job once; throws, saying why, unless it ended cleanly. */
    readonly attempt: () => Promise<void>,
  ) {}

  /** Runs the job once, counting a failure (and telling the first). */
  async run(): Promise<void> {
    this.runs++;
    try {
      await this.attempt();
    } catch (error) {
      if (this.failures++ === 0) {
        // deno-lint-ignore no-console
        console.error(`bench: speed: ${this.label} failed: ${error}`);
      }
    }
  }

  /** Wall time of one run, in ms. */
  async time(): Promise<number> {
    const started = performance.now();
    await this.run();
    return performance.now() - started;
  }

  /** Wall time of `jobs` runs, `parallelism` at a time, in ms. */
  async timeBatch(jobs: number, parallelism: number): Promise<number> {
    const started = performance.now();
    await runPool(Array.from({ length: jobs }), parallelism, () => this.run());
    return performance.now() - started;
  }
}

/** One row of the targets table. */
interface Target {
  readonly what: string;
  readonly variant: string;
  readonly kiln: string;
  readonly floor: string;
  readonly gap: string;
  readonly target: string;
  /** Undefined when there is nothing to judge (the cluster section did not run). */
  readonly met: boolean | undefined;
}

/** One row of the measurements table. */
interface Measurement {
  readonly job: Job;
  readonly variant: string;
  readonly p50: string;
  readonly p90: string;
}

/** Runs the speed benchmark and returns its section. */
export async function benchSpeed(
  cluster?: ClusterSection["throughput"],
): Promise<BenchSection> {
  const registry = createDefaultRegistry({ searchPath: TOOLCHAIN_PATH });
  const resolved = new Map<string, ResolvedRunner>();
  const skipped: string[] = [];
  for (const language of ["python", "c", "bash"]) {
    const resolution = await registry.resolve(language);
    if (resolution.ok) resolved.set(language, resolution.resolved);
    else skipped.push(`${language}: ${resolution.reason}`);
  }
  if (skipped.length > 0) {
    return { title: TITLE, markdown: `Skipped: ${skipped.join("; ")}.\n` };
  }
  const slots = navigator.hardwareConcurrency;
  const workdir = await Deno.makeTempDir({ prefix: "kiln-bench-speed-" });
  try {
    const floors = {
      python: await bareRunner(resolved.get("python")!, PYTHON_HELLO, workdir),
      c: await bareRunner(resolved.get("c")!, C_HELLO, workdir),
    };
    const sandbox = await sandboxFloor(
      resolved.get("python")!,
      PYTHON_HELLO,
      workdir,
      EXPECTED,
    );
    try {
      const report = new Report();
      for (const variant of await nodeVariants()) {
        // deno-lint-ignore no-console
        console.error(`bench: speed, nodes ${variant.label}...`);
        await measureVariant(variant, {
          slots,
          resolved,
          floors,
          sandbox,
          report,
        });
      }
      report.targets.push(clusterTarget(cluster));
      return {
        title: TITLE,
        markdown: describe(resolved, slots, sandbox, report),
      };
    } finally {
      if (sandbox.available) await sandbox.close();
    }
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
}

/** Python hello, kiln beside both floors: bare and the sandbox floor. */
interface FloorComparison {
  readonly what: string;
  readonly variant: string;
  /** What each took: ms per job (p50 latency, or batch wall time per job). */
  readonly bareMs: number;
  readonly sandboxMs: number;
  readonly kilnMs: number;
}

/** System-wide CPU per python hello of one kind of run. */
interface CpuRow {
  readonly what: string;
  readonly variant: string;
  readonly cpu: CpuPerJob;
}

/** The rows of the section's tables, as the variants add them. */
class Report {
  readonly targets: Target[] = [];
  readonly measurements: Measurement[] = [];
  readonly histories: string[] = [];
  readonly floorComparisons: FloorComparison[] = [];
  readonly cpuRows: CpuRow[] = [];
  /** Per variant, the background busy rate the CPU rows were taken off. */
  readonly backgroundRates: number[] = [];
  readonly backgroundLabels: string[] = [];

  /** Adds `job`'s row, from `times`, and returns their median. */
  measured(job: Job, variant: Variant, times: readonly number[]): number {
    this.measurements.push({
      job,
      variant: variant.label,
      p50: percentile(times, 50).toFixed(1),
      p90: percentile(times, 90).toFixed(1),
    });
    return percentile(times, 50);
  }
}

/** What every variant measures with. */
interface Setting {
  readonly slots: number;
  readonly resolved: ReadonlyMap<string, ResolvedRunner>;
  readonly floors: Readonly<Record<"python" | "c", () => Promise<void>>>;
  /** Python hello in kiln's sandbox chain, spawned from the bench. */
  readonly sandbox: SandboxFloor;
  readonly report: Report;
}

/** The node processes of one variant, and how to reach them. */
interface Nodes {
  readonly variant: Variant;
  readonly token: string;
  readonly single: MasterProcess;
  readonly coordinator: MasterProcess;
  readonly secondary: SecondaryProcess;
}

/** Starts the nodes with `variant`'s flags and measures every kiln target against its floor. */
async function measureVariant(
  variant: Variant,
  setting: Setting,
): Promise<void> {
  const token = crypto.randomUUID();
  const env = { PATH: TOOLCHAIN_PATH };
  const masterArgs = [
    "--http-port",
    "0",
    // Every job stays in the history, for the verdict count at the end.
    "--history-max-jobs",
    "1000000",
    "--log-level",
    "error",
    ...variant.args,
  ];
  await using single = await startMasterProcess({
    token,
    env,
    args: ["--slots", String(setting.slots), ...masterArgs],
  });
  await using coordinator = await startMasterProcess({
    token,
    env,
    args: ["--slots", "0", ...masterArgs],
  });
  await using secondary = await startSecondaryProcess(coordinator.address, {
    token,
    env,
    args: [
      "--name",
      "speed",
      "--slots",
      String(setting.slots),
      "--log-level",
      "error",
      ...variant.args,
    ],
  });
  const nodes = { variant, token, single, coordinator, secondary };
  await sameToolchains(single, token, setting.resolved);
  await sameToolchains(coordinator, token, setting.resolved);
  await pythonLatency(nodes, setting);
  await cCompileAndRun(nodes, setting);
  await throughput(nodes, setting);
  await nodeCpu(nodes, setting);
  for (
    const [name, master] of [["single master", single], [
      "coordinator",
      coordinator,
    ]] as const
  ) {
    const { recorded, notOk } = await historyVerdicts(master, token);
    setting.report.histories.push(
      `nodes ${variant.label}, ${name}: ${recorded} jobs in its history, ${notOk} of them not \`ok\``,
    );
  }
}

/** Met when `holds` and none of `jobs` failed a run. */
function judged(holds: boolean, ...jobs: Job[]): boolean {
  return holds && jobs.every((job) => job.failures === 0);
}

/**
 * Python hello one at a time: bare, single master, cluster and (where the
 * host has it) the sandbox floor in rotation.
 */
async function pythonLatency(nodes: Nodes, setting: Setting): Promise<void> {
  const { variant, token, single, coordinator } = nodes;
  const { report, sandbox } = setting;
  const jobs = [
    new Job("python hello, bare", setting.floors.python),
    new Job(
      "python hello, single master",
      () => viaPiston(single, token, PYTHON_HELLO),
    ),
    new Job(
      "python hello, coordinator + 1 secondary",
      () => viaPiston(coordinator, token, PYTHON_HELLO),
    ),
  ] as const;
  const floorJob = sandbox.available
    ? new Job("python hello, sandbox floor", sandbox.run)
    : undefined;
  const times = await inRotation(
    floorJob ? [...jobs, floorJob] : jobs,
    LATENCY,
    (job) => job.time(),
  );
  const [bare, singleP50, clusterP50] = jobs.map((job, i) =>
    report.measured(job, variant, times[i]!)
  ) as [number, number, number];
  const floorP50 = floorJob
    ? report.measured(floorJob, variant, times[jobs.length]!)
    : undefined;
  if (floorP50 !== undefined) {
    report.floorComparisons.push({
      what: "p50 latency, single master",
      variant: variant.label,
      bareMs: bare,
      sandboxMs: floorP50,
      kilnMs: singleP50,
    });
  }
  report.targets.push({
    what: "Python hello, HTTP, single master, p50",
    variant: variant.label,
    kiln: `${singleP50.toFixed(1)} ms`,
    floor: `${bare.toFixed(1)} ms (bare)${
      floorP50 === undefined ? "" : `; ${floorP50.toFixed(1)} ms (sandbox)`
    }`,
    gap: `${signed(singleP50 - bare)} ms${
      floorP50 === undefined ? "" : `; ${signed(singleP50 - floorP50)} ms`
    }`,
    target: "≤ floor + 3 ms",
    met: judged(singleP50 <= bare + 3, jobs[0], jobs[1]),
  }, {
    what: "Python hello, HTTP, coordinator + 1 secondary, p50",
    variant: variant.label,
    kiln: `${clusterP50.toFixed(1)} ms`,
    floor: `${singleP50.toFixed(1)} ms (single master)`,
    gap: `${signed(clusterP50 - singleP50)} ms`,
    target: "≤ single master + 2 ms",
    met: judged(clusterP50 <= singleP50 + 2, jobs[1], jobs[2]),
  });
}

/** C hello, compile + run: bare gcc and single master in alternating pairs. */
async function cCompileAndRun(nodes: Nodes, setting: Setting): Promise<void> {
  const { variant, token, single } = nodes;
  const { report } = setting;
  const bare = new Job("C hello compile + run, bare", setting.floors.c);
  const kiln = new Job(
    "C hello compile + run, single master",
    () => viaPiston(single, token, C_HELLO),
  );
  const times = await alternatingPairs(
    bare,
    kiln,
    C_PAIRS,
    (job) => job.time(),
  );
  const bareP50 = report.measured(bare, variant, times.first);
  const kilnP50 = report.measured(kiln, variant, times.second);
  report.targets.push({
    what: "C hello compile + run, HTTP, single master, p50",
    variant: variant.label,
    kiln: `${kilnP50.toFixed(1)} ms`,
    floor: `${bareP50.toFixed(1)} ms (bare gcc + run)`,
    gap: `${signed(kilnP50 - bareP50)} ms`,
    target: "≤ floor + 5 ms",
    met: judged(kilnP50 <= bareP50 + 5, bare, kiln),
  });
}

/**
 * Batches of Python hellos into the single master from several HTTP clients,
 * against the same batch spawned bare and (where the host has it) in the
 * sandbox floor at the node's slot count, in rotating order with an idle
 * period, so that each batch's system-wide CPU can be had less the
 * background's.
 */
async function throughput(nodes: Nodes, setting: Setting): Promise<void> {
  const { variant, token, single } = nodes;
  const { report, slots, sandbox } = setting;
  const kiln = new Job(
    `${BATCH.jobs} python hellos, ${BATCH.clients} HTTP clients, single master`,
    () => viaPiston(single, token, PYTHON_HELLO),
  );
  const bare = new Job(
    `${BATCH.jobs} python hellos, bare, ${slots} at a time`,
    setting.floors.python,
  );
  const floor = sandbox.available
    ? new Job(
      `${BATCH.jobs} python hellos, sandbox floor, ${slots} at a time`,
      sandbox.run,
    )
    : undefined;
  const cpu = new SystemCpu();
  const subjects = [kiln, bare, ...floor ? [floor] : [], "idle"] as const;
  const times = await inRotation(
    subjects,
    { rounds: BATCH.rounds, warmup: 0 },
    (subject) =>
      subject === "idle" ? cpu.idle(BATCH.idleMs) : cpu.measure(
        subject.label,
        BATCH.jobs,
        () =>
          subject.timeBatch(
            BATCH.jobs,
            subject === kiln ? BATCH.clients : slots,
          ),
      ),
  );
  const batchMs = (job: Job, i: number) =>
    report.measured(job, variant, times[i]!);
  const [kilnMs, bareMs] = [batchMs(kiln, 0), batchMs(bare, 1)];
  const floorMs = floor ? batchMs(floor, 2) : undefined;
  const rate = (ms: number) => BATCH.jobs / (ms / 1000);
  const [kilnRate, bareRate] = [rate(kilnMs), rate(bareMs)];
  for (
    const [what, job] of [
      ["bare", bare],
      ["sandbox floor", floor],
      ["kiln, single master", kiln],
    ] as const
  ) {
    const perJob = job && cpu.perJob(job.label);
    if (perJob) {
      report.cpuRows.push({ what, variant: variant.label, cpu: perJob });
    }
  }
  report.backgroundRates.push(cpu.backgroundRate);
  report.backgroundLabels.push(
    `nodes ${variant.label}: ${
      (100 * cpu.backgroundRate).toFixed(0)
    } % of one core`,
  );
  if (floorMs !== undefined) {
    report.floorComparisons.push({
      what: `wall time per job, batches of ${BATCH.jobs}`,
      variant: variant.label,
      bareMs: bareMs / BATCH.jobs,
      sandboxMs: floorMs / BATCH.jobs,
      kilnMs: kilnMs / BATCH.jobs,
    });
  }
  report.targets.push({
    what:
      `${BATCH.jobs} Python hellos from ${BATCH.clients} HTTP clients, single master, median of ${BATCH.rounds}`,
    variant: variant.label,
    kiln: `${kilnRate.toFixed(1)} jobs/s`,
    floor: `${bareRate.toFixed(1)} jobs/s (bare, ${slots} at a time)${
      floorMs === undefined
        ? ""
        : `; ${rate(floorMs).toFixed(1)} jobs/s (sandbox)`
    }`,
    gap: `${(100 * kilnRate / bareRate).toFixed(0)} %${
      floorMs === undefined
        ? ""
        : `; ${(100 * kilnRate / rate(floorMs)).toFixed(0)} %`
    }`,
    target: "≥ 90 % of floor",
    met: judged(kilnRate >= 0.9 * bareRate, kiln, bare),
  });
}

/**
 * Each node process's own CPU time (utime + stime) per job, over `CPU.jobs`
 * bash echo jobs from `CPU.clients` HTTP clients: the single master's, then
 * the coordinator's and the secondary's.
 */
async function nodeCpu(nodes: Nodes, setting: Setting): Promise<void> {
  const { variant, token, single, coordinator, secondary } = nodes;
  const { report } = setting;
  const perJob = async (job: Job, pids: readonly number[]) => {
    const before = pids.map(processCpuMs);
    report.measured(job, variant, [await job.timeBatch(CPU.jobs, CPU.clients)]);
    return pids.map((pid, i) => (processCpuMs(pid) - before[i]!) / CPU.jobs);
  };
  const singleEcho = new Job(
    "bash echo, single master (CPU rows)",
    () => viaPiston(single, token, ECHO, "hi\n"),
  );
  const [singleMs] = await perJob(singleEcho, [single.child.pid]);
  const clusterEcho = new Job(
    "bash echo, coordinator + 1 secondary (CPU rows)",
    () => viaPiston(coordinator, token, ECHO, "hi\n"),
  );
  const [coordinatorMs, secondaryMs] = await perJob(clusterEcho, [
    coordinator.child.pid,
    secondary.child.pid,
  ]);
  for (
    const [what, job, ms, budget] of [
      ["single master", singleEcho, singleMs!, CPU_BUDGET_MS.single],
      ["coordinator", clusterEcho, coordinatorMs!, CPU_BUDGET_MS.coordinator],
      ["secondary", clusterEcho, secondaryMs!, CPU_BUDGET_MS.secondary],
    ] as const
  ) {
    report.targets.push({
      what: `CPU of the ${what} process per job (${CPU.jobs} bash echo jobs)`,
      variant: variant.label,
      kiln: `${ms.toFixed(2)} ms`,
      floor: "—",
      gap: "—",
      target: `≤ ${budget} ms`,
      met: judged(ms <= budget, job),
    });
  }
}

/**
 * Runs one file through a master's `POST /api/v2/execute`; throws unless it
 * ran cleanly and printed `expected`.
 */
async function viaPiston(
  master: MasterProcess,
  token: string,
  program: { language: string; name: string; content: string },
  expected = EXPECTED,
): Promise<void> {
  const response = await fetch(`http://${master.httpAddress}/api/v2/execute`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({
      language: program.language,
      files: [{ name: program.name, content: program.content }],
    }),
  });
  if (!response.ok) {
    throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  }
  const answer: PistonExecuteResponse = await response.json();
  const { run, compile } = answer;
  const clean = run.code === 0 && run.signal === null &&
    run.stdout === expected && run.stderr === "" &&
    (compile === undefined || compile.code === 0);
  if (!clean) throw new Error(`answered ${JSON.stringify(answer)}`);
}

/** How many jobs a master's history holds, and how many of them did not end `ok`. */
async function historyVerdicts(
  master: MasterProcess,
  token: string,
): Promise<{ recorded: number; notOk: number }> {
  const response = await fetch(
    `http://${master.httpAddress}/api/v1/jobs?limit=1000000`,
    { headers: { authorization: `Bearer ${token}` } },
  );
  const { jobs }: { jobs: JobSummary[] } = await response.json();
  return {
    recorded: jobs.length,
    notOk: jobs.filter((job) => job.verdict !== "ok").length,
  };
}

/**
 * Stops the bench unless `master` offers Python and C at the versions the
 * floors run: a floor of another interpreter would compare nothing.
 */
async function sameToolchains(
  master: MasterProcess,
  token: string,
  resolved: ReadonlyMap<string, ResolvedRunner>,
): Promise<void> {
  const response = await fetch(
    `http://${master.httpAddress}/api/v2/runtimes`,
    { headers: { authorization: `Bearer ${token}` } },
  );
  const runtimes: PistonRuntime[] = await response.json();
  for (const language of ["python", "c"]) {
    const offered = runtimes.find((r) => r.language === language)?.version;
    const floor = resolved.get(language)!.toolchain.version;
    if (offered === undefined || !floor.includes(offered)) {
      throw new Error(
        `speed bench: the nodes offer ${language} ${offered}, the floor runs ${floor}`,
      );
    }
  }
}

/**
 * A bare run of `program` as its runner would run it (compile step, then run
 * step, same executables and flags, in `parent`'s own directory for it) with
 * no kiln and no sandbox; it throws unless it printed hello world.
 */
async function bareRunner(
  resolved: ResolvedRunner,
  program: { name: string; content: string },
  parent: string,
): Promise<() => Promise<void>> {
  const context = await singleFileStep(resolved, program, parent, 512);
  const { workdir } = context;
  const compile = resolved.runner.compile?.(context);
  const run = resolved.runner.run(context);
  const spawn = async (spec: CommandSpec) => {
    const { success, stdout, stderr } = await new Deno.Command(spec.command, {
      args: [...spec.args],
      cwd: workdir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(spec.env === undefined ? {} : { env: { ...spec.env } }),
    }).output();
    const [out, err] = [stdout, stderr].map((b) => new TextDecoder().decode(b));
    if (!success) throw new Error(`${spec.command} failed: ${err}`);
    return out;
  };
  return async () => {
    if (compile !== undefined) await spawn(compile);
    const stdout = await spawn(run);
    if (stdout !== EXPECTED) {
      throw new Error(`printed ${JSON.stringify(stdout)}`);
    }
  };
}

/** The defaults, and pre-warming off when both node CLIs have `--prewarm`. */
async function nodeVariants(): Promise<Variant[]> {
  const variants: Variant[] = [{ label: "default", args: [] }];
  const helps = await Promise.all(
    ["master.ts", "secondary.ts"].map(async (cli) => {
      const { stdout } = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          fileURLToPath(new URL(`../cli/${cli}`, import.meta.url)),
          "--help",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).output();
      return new TextDecoder().decode(stdout);
    }),
  );
  if (helps.every((help) => help.includes("--prewarm"))) {
    variants.push({ label: "`--prewarm 0`", args: ["--prewarm", "0"] });
  }
  return variants;
}

/** The cluster bench's throughput against its floor, when it ran in this invocation. */
function clusterTarget(cluster: ClusterSection["throughput"]): Target {
  const what =
    "Cluster bench (Cluster throughput section): coordinator + 2 secondaries";
  if (cluster === undefined) {
    return {
      what,
      variant: "default",
      kiln: "not run",
      floor: "—",
      gap: "—",
      target: "≥ 85 % of direct",
      met: undefined,
    };
  }
  const { clusterJobsPerSecond: kiln, directJobsPerSecond: direct } = cluster;
  return {
    what,
    variant: "default",
    kiln: `${kiln.toFixed(1)} jobs/s`,
    floor: `${direct.toFixed(1)} jobs/s (direct, at its slots)`,
    gap: `${(100 * kiln / direct).toFixed(0)} %`,
    target: "≥ 85 % of direct",
    met: kiln >= 0.85 * direct && cluster.failures === 0,
  };
}

function signed(ms: number): string {
  return `${ms >= 0 ? "+" : ""}${ms.toFixed(1)}`;
}

function describe(
  resolved: ReadonlyMap<string, ResolvedRunner>,
  slots: number,
  sandbox: SandboxFloor,
  report: Report,
): string {
  const { targets, measurements, histories } = report;
  const python = resolved.get("python")!.toolchain;
  const c = resolved.get("c")!.toolchain;
  const failures = measurements.reduce((sum, m) => sum + m.job.failures, 0);
  const verdict = (met: boolean | undefined) =>
    met === undefined ? "n/a" : met ? "yes" : "**no**";
  return [
    "Each kiln figure beside its floor, measured in this one run: the same program run bare (no kiln, no",
    "sandbox) by the same interpreter or compiler with the runner's own flags, spawned from the bench.",
    "kiln runs as separate processes on 127.0.0.1 (`cli/master.ts`, `cli/secondary.ts`): a single master",
    `(\`--slots ${slots}\`, full sandbox), and a coordinator (\`--slots 0\`) with one secondary (\`--slots ${slots}\`).`,
    "Jobs go through the Piston-compatible `POST /api/v2/execute` over keep-alive HTTP. Nodes and floors find",
    `toolchains on \`PATH=${TOOLCHAIN_PATH}\`: ${python.version} (\`${python.executables.interpreter}\`), ${c.version}.`,
    "",
    `Python: ${LATENCY.rounds} rounds after ${LATENCY.warmup} warm-up rounds, bare / single master / cluster / sandbox floor in rotating order, each after a lull of ${LATENCY.pauseMs} ms (the latency of a node that is not saturated; a node makes up its warm sandboxes in lulls).`,
    `C: ${C_PAIRS.pairs} bare/kiln pairs in alternating order after ${C_PAIRS.warmup} warm-up pairs, each run after a lull of ${C_PAIRS.pauseMs} ms.`,
    `Throughput: ${BATCH.rounds} rounds of batches of ${BATCH.jobs} hellos in rotating order, kiln from ${BATCH.clients} clients, bare and sandbox floor ${slots} at a time`,
    "(the node's slots); jobs/s of the median batch. CPU: utime + stime of each node process from",
    `\`/proc/<pid>/stat\` (10 ms ticks), before and after ${CPU.jobs} bash \`echo hi\` jobs from ${CPU.clients} HTTP clients, divided by`,
    `the jobs; the budget is ${CPU_BUDGET_MS.coordinator} ms for a coordinator, ${CPU_BUDGET_MS.secondary} ms for a node that runs the job, both for a single master.`,
    "Every answer was checked: exit code 0, no signal, the expected stdout, nothing on stderr; a target",
    "with a failed run is not met.",
    "",
    "| target | nodes | kiln | floor | kiln vs floor | target | met? |",
    "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ...targets.map((t) =>
      `| ${t.what} | ${t.variant} | ${t.kiln} | ${t.floor} | ${t.gap} | ${t.target} | ${
        verdict(t.met)
      } |`
    ),
    "",
    ...describeSandboxFloor(sandbox, report),
    "Each measurement (a batch row times whole batches):",
    "",
    "| measured | nodes | runs | p50 ms | p90 ms | failed |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...measurements.map((m) =>
      `| ${m.job.label} | ${m.variant} | ${m.job.runs} | ${m.p50} | ${m.p90} | ${m.job.failures} |`
    ),
    "",
    `Failed runs in all: ${failures}. Verdicts in the masters' job histories:`,
    "",
    ...histories.map((line) => `- ${line}`),
    "",
  ].join("\n");
}

/**
 * What the sandbox floor is, kiln beside both floors with the share of
 * kiln's gap over bare that the sandbox floor accounts for, and the
 * system-wide CPU per job of each.
 */
function describeSandboxFloor(
  sandbox: SandboxFloor,
  { floorComparisons, cpuRows, backgroundRates, backgroundLabels }: Report,
): string[] {
  if (!sandbox.available) {
    return [`No sandbox floor on this host: ${sandbox.reason}.`, ""];
  }
  const { chain } = sandbox;
  const layers = [
    "setsid",
    "bash (closes descriptors" +
    (chain.cgroups ? ", joins the cgroup" : "") +
    (chain.seccompPath ? ", opens the seccomp filter)" : ")"),
    "bwrap (kiln's `bwrapPrefix`" + (chain.seccompPath ? ", seccomp)" : ")"),
    "setpriv",
    "prlimit",
    "python",
  ];
  const cores = navigator.hardwareConcurrency;
  const ms = (n: number) => n.toFixed(1);
  const share = (c: FloorComparison) => {
    const gap = c.kilnMs - c.bareMs;
    return gap <= 0
      ? "—"
      : `${(100 * (c.sandboxMs - c.bareMs) / gap).toFixed(0)} %`;
  };
  return [
    "Sandbox floor: python hello in the chain kiln runs a cold step in, built by kiln's own builders and",
    `spawned from the bench with no kiln process: ${layers.join(" → ")},`,
    `as uid ${SANDBOX_UID}, with the default limits${
      chain.cgroups
        ? `, in a cgroup of its own per run (v${chain.cgroups.version}, memory and pids limits; made and removed by kiln's cgroup module)`
        : ""
    }.`,
    "Not in it: the job's own disk and devpts mounts, a fresh uid and workdir per run. What kiln costs above",
    "bare that the sandbox floor accounts for is the last column: the rest is kiln's own. Above 100 %, kiln",
    "beats a cold sandbox: pre-warming makes the namespaces before the job arrives.",
    "",
    "| python hello | nodes | bare ms | sandbox floor ms | kiln ms | kiln − bare | sandbox − bare | share of kiln's gap in the sandbox |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...floorComparisons.map((c) =>
      `| ${c.what} | ${c.variant} | ${ms(c.bareMs)} | ${ms(c.sandboxMs)} | ${
        ms(c.kilnMs)
      } | ${signed(c.kilnMs - c.bareMs)} | ${
        signed(c.sandboxMs - c.bareMs)
      } | ${share(c)} |`
    ),
    "",
    "System-wide CPU per python hello in the throughput batches: busy ticks of `/proc/stat` (every process",
    "and the kernel, kernel workers included) over each batch, less the background busy rate times the",
    `batch's length (measured over a ${
      BATCH.idleMs / 1000
    } s idle period per round, same run: ${backgroundLabels.join("; ")}),`,
    "divided by the jobs; median batch. The bench process's own part (spawning the floors, the HTTP clients",
    "for kiln) is shown apart and included in the total.",
    ...backgroundRates.some((rate) => rate > BUSY_BACKGROUND * cores)
      ? [
        `**Other work kept more than ${
          100 * BUSY_BACKGROUND
        } % of the machine busy: these CPU rows mean little.** The busy ticks`,
        "cannot exceed the cores, so on a saturated machine a batch's CPU displaces the background's and the",
        "difference understates it; the latency and throughput rows above are slowed alike.",
      ]
      : [],
    "",
    "| python hello | nodes | CPU per job, ms | of it the bench process, ms | batches |",
    "| --- | --- | ---: | ---: | ---: |",
    ...cpuRows.map((r) =>
      `| ${r.what} | ${r.variant} | ${ms(r.cpu.allMs)} | ${
        ms(r.cpu.benchMs)
      } | ${r.cpu.batches} |`
    ),
    "",
  ];
}

if (import.meta.main) {
  // deno-lint-ignore no-console
  console.log((await benchSpeed()).markdown);
}
