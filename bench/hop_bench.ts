/**
 * What the network costs a job: a bash `echo hi` submitted with
 * `submitProgram` to a master that runs it in its own slot, and to a
 * coordinator (`slots: 0`) that hands it to one secondary, both in this
 * process on 127.0.0.1. Their floor is the same `executeJob` call with no
 * network at all. All three run bare (`Sandbox.none()`), so that the
 * difference between them is the links (frames, Nagle, dispatch), not the
 * sandbox, whose cost the sandbox section measures. The three alternate
 * in rotating order, so drift on a busy machine falls on each alike.
 *
 * @module
 */
import {
  createDefaultRegistry,
  executeJob,
  type JobRequest,
  MasterNode,
  Sandbox,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { type BenchSection, inRotation, percentile } from "./_stats.ts";

const ROUNDS = 60;
const WARMUP = 5;

const JOB: JobRequest = {
  language: "bash",
  files: [{ name: "main.sh", content: "echo hi" }],
};

/** Runs the cluster hop benchmark and returns its section. */
export async function benchHop(): Promise<BenchSection> {
  const sandbox = Sandbox.none();
  const resolution = await createDefaultRegistry().resolve("bash");
  if (!resolution.ok) {
    return {
      title: "Cluster hop",
      markdown: `Skipped: ${resolution.reason}\n`,
    };
  }
  const { resolved } = resolution;
  await using single = new MasterNode({
    port: 0,
    slots: 1,
    sandbox,
    resourceLogIntervalMs: 0,
  });
  await using coordinator = new MasterNode({
    port: 0,
    slots: 0,
    sandbox,
    resourceLogIntervalMs: 0,
  });
  const joined = Promise.withResolvers<void>();
  coordinator.addEventListener("nodejoin", () => joined.resolve(), {
    once: true,
  });
  await using _secondary = new SecondaryNode({
    master: coordinator.addr,
    name: "hop",
    slots: 1,
    sandbox,
  });
  await Promise.all([single.ready, joined.promise]);

  const subjects = [
    [
      "floor: `executeJob`, no network",
      () => executeJob(resolved, JOB, { sandbox }),
    ],
    [
      "single master (`slots: 1`)",
      () => submitProgram(JOB, { master: single.addr }),
    ],
    [
      "coordinator (`slots: 0`) + 1 secondary",
      () => submitProgram(JOB, { master: coordinator.addr }),
    ],
  ] as const;
  const times = await inRotation(
    subjects,
    { rounds: ROUNDS, warmup: WARMUP },
    async ([name, run]) => {
      const started = performance.now();
      const result = await run();
      const ms = performance.now() - started;
      if (result.verdict !== "ok") {
        throw new Error(
          `hop bench: ${name} gave ${result.verdict}: ${result.stderr}`,
        );
      }
      return ms;
    },
  );
  const p50 = times.map((ms) => percentile(ms, 50));
  const rows = subjects.map(([name], i) =>
    `| ${name} | ${p50[i]!.toFixed(2)} | ${
      percentile(times[i]!, 90).toFixed(2)
    } | ${(p50[i]! - p50[0]!).toFixed(2)} |`
  );
  return {
    title: "Cluster hop",
    markdown: [
      `A bash \`echo hi\` job, bare (\`Sandbox.none()\`), ${ROUNDS} of each in rotating order after ${WARMUP} warm-up rounds; nodes in this process on 127.0.0.1.`,
      "",
      "| path | p50 ms | p90 ms | p50 over the floor |",
      "|---|---|---|---|",
      ...rows,
      "",
      `The cluster hop (coordinator + secondary over single master), p50: ${
        (p50[2]! - p50[1]!).toFixed(2)
      } ms.`,
      "",
    ].join("\n"),
  };
}

if (import.meta.main) {
  // deno-lint-ignore no-console
  console.log((await benchHop()).markdown);
}
