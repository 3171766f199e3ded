/**
 * Pre-warmed sandboxes: a hello-world job per language through the real
 * executor, in the full sandbox started cold (`prewarm: 0`) against the
 * same sandbox taking a pre-warmed one (`prewarm: 1`), with the floor
 * beside them: the same job bare (`Sandbox.none()`). All three in this one
 * invocation, one job at a time, in rounds whose order rotates.
 *
 * Before every job the warm pool is let settle, so that each warm job finds
 * its sandbox ready (as on a node that is not saturated) and no refill runs
 * beside a timed job; the CPU a refill costs is still counted, as kiln's CPU
 * for the warm job that caused it.
 *
 * @module
 */
import {
  createDefaultRegistry,
  executeJob,
  type ResolvedRunner,
  Sandbox,
} from "../mod.ts";
import { type BenchSection, percentile, processCpuMs } from "./_stats.ts";
import { HELLO_WORLDS } from "./sandbox_bench.ts";

const EXPECTED = "Hello, world!\n";
const WARMUP_ROUNDS = 2;

/** Rounds per language: fewer where a job takes longer (see `HELLO_WORLDS`). */
const ROUNDS: Readonly<Record<string, number>> = {
  bash: 60,
  python: 40,
  javascript: 30,
  c: 20,
  java: 8,
};

type Mode = "bare" | "cold" | "warm";
const MODES: readonly Mode[] = ["bare", "cold", "warm"];

/** Runs the pre-warm benchmark and returns its section. */
export async function benchPrewarm(): Promise<BenchSection> {
  const title = "Pre-warmed sandboxes";
  const sandboxes: Record<Mode, Sandbox> = {
    bare: Sandbox.none(),
    cold: await Sandbox.detect({ prewarm: 0 }),
    warm: await Sandbox.detect({ prewarm: 1 }),
  };
  const workRoot = await Deno.makeTempDir({ prefix: "kiln-bench-" });
  try {
    if (!sandboxes.warm.layers.includes("namespaces")) {
      return {
        title,
        markdown:
          "Skipped: without the namespace layer nothing is pre-warmed.\n",
      };
    }
    const registry = createDefaultRegistry();
    const rows: string[] = [];
    const skipped: string[] = [];
    for (const { language, source } of HELLO_WORLDS) {
      const rounds = ROUNDS[language];
      if (rounds === undefined) continue;
      const resolution = await registry.resolve(language);
      if (!resolution.ok) {
        skipped.push(`- ${language}: skipped, ${resolution.reason}`);
        continue;
      }
      const times: Record<Mode, number[]> = { bare: [], cold: [], warm: [] };
      const cpu: Record<Mode, number> = { bare: 0, cold: 0, warm: 0 };
      for (let round = 0; round < WARMUP_ROUNDS + rounds; round++) {
        // Rotate which mode goes first: drift falls on all three alike.
        const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]!);
        for (const mode of order) {
          const { ms, cpuMs } = await timeJob(
            resolution.resolved,
            source,
            sandboxes[mode],
            workRoot,
            mode,
          );
          if (round < WARMUP_ROUNDS) continue;
          times[mode].push(ms);
          cpu[mode] += cpuMs;
        }
      }
      const p50 = (mode: Mode) => percentile(times[mode], 50);
      const started = sandboxes.warm.stepStarts;
      rows.push(
        `| ${language} | ${rounds} | ${p50("bare").toFixed(0)} | ${
          p50("cold").toFixed(0)
        } | ${p50("warm").toFixed(0)} | ${
          percentile(times.warm, 90).toFixed(0)
        } | ${(p50("cold") - p50("warm")).toFixed(0)} | ${
          (p50("warm") - p50("bare")).toFixed(0)
        } | ${(cpu.cold / rounds).toFixed(1)} | ${
          (cpu.warm / rounds).toFixed(1)
        } | ${started.warm}/${started.warm + started.cold} |`,
      );
    }
    return {
      title,
      markdown: [
        "A hello-world job per language through `executeJob`: bare (`Sandbox.none()`, the floor), the full",
        "sandbox started cold (`prewarm: 0`), and the same sandbox taking a pre-warmed one (`prewarm: 1`),",
        `in rounds of one job each whose order rotates, after ${WARMUP_ROUNDS} warm-up rounds; every result checked`,
        "to be `ok` with stdout `Hello, world!`. The warm pool is let settle before each job, so each warm job",
        "finds a sandbox ready and no refill runs beside a timed job. kiln CPU is the bench process's own CPU",
        "per job (`/proc/self/stat`), the warm job's refill included. Warm steps counts the steps the warm",
        "sandbox started warm, over all it started (the first job of a language runs cold).",
        "",
        "| language | rounds | bare p50 ms | cold p50 ms | warm p50 ms | warm p90 ms | saved ms | warm over bare ms | cold kiln CPU ms/job | warm kiln CPU ms/job | warm steps |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ...rows,
        ...(skipped.length > 0 ? ["", ...skipped] : []),
        "",
      ].join("\n"),
    };
  } finally {
    // The warm sandboxes' disks are mounted in the root: closed first.
    await sandboxes.cold.close();
    await sandboxes.warm.close();
    await Deno.remove(workRoot, { recursive: true });
  }
}

/** One hello world as a caller sees it, and this process's CPU for it. */
async function timeJob(
  resolved: ResolvedRunner,
  source: string,
  sandbox: Sandbox,
  workRoot: string,
  mode: Mode,
): Promise<{ ms: number; cpuMs: number }> {
  const language = resolved.runner.name;
  await sandbox.warmSettled();
  const cpu0 = processCpuMs("self");
  const t0 = performance.now();
  const result = await executeJob(resolved, {
    language,
    files: [{ name: `prog${resolved.runner.extensions[0]}`, content: source }],
  }, { sandbox, workRoot });
  const ms = performance.now() - t0;
  await sandbox.warmSettled();
  const cpuMs = processCpuMs("self") - cpu0;
  if (result.verdict !== "ok" || result.stdout !== EXPECTED) {
    throw new Error(
      `Pre-warm bench: ${language} ${mode} job did not print hello world: ${result.verdict} ${
        JSON.stringify(result.stdout)
      } ${result.reason ?? ""}\n${
        result.compile?.stderr ?? ""
      }${result.stderr}`,
    );
  }
  return { ms, cpuMs };
}
