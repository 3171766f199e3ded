/**
 * Sandbox overhead: a hello-world job per language through the real
 * executor, bare (`Sandbox.none()`) against the strongest sandbox this host
 * has (`Sandbox.detect()`), both in this one invocation.
 *
 * Runs go one at a time, so each job has the machine to itself, in pairs
 * that alternate which mode goes first (bare, sandboxed, sandboxed, bare,
 * ...): load that comes and goes then lands on both modes alike, and neither
 * always runs in the other's wake.
 *
 * @module
 */
import {
  createDefaultRegistry,
  executeJob,
  type JobResult,
  type ResolvedRunner,
  Sandbox,
  type SourceFile,
} from "../mod.ts";
import {
  alternatingPairs,
  type BenchSection,
  percentile,
  processCpuMs,
} from "./_stats.ts";

/** What every hello world below writes to stdout. */
const EXPECTED = "Hello, world!\n";

/** Pairs run and thrown away first: toolchain files into the page cache. */
const WARMUP_PAIRS = 2;

/**
 * A hello world per language (from the runners' conformance tests), with
 * how many bare+sandboxed pairs to measure. The counts keep the whole
 * section near 2.5 minutes on a 2-core machine: a pair costs about 0.1 s in
 * bash, 0.2 s in Python or JavaScript, 1.3 s in C++, 2 s in Java and 3.5 s
 * in TypeScript, so the compiled languages get fewer pairs.
 */
export const HELLO_WORLDS: readonly {
  readonly language: string;
  readonly source: string;
  readonly pairs: number;
}[] = [
  { language: "bash", source: 'echo "Hello, world!"\n', pairs: 100 },
  { language: "python", source: 'print("Hello, world!")\n', pairs: 50 },
  {
    language: "javascript",
    source: 'console.log("Hello, world!");\n',
    pairs: 50,
  },
  {
    language: "c",
    source:
      '#include <stdio.h>\n\nint main(void) {\n  puts("Hello, world!");\n  return 0;\n}\n',
    pairs: 30,
  },
  {
    language: "rust",
    source: 'fn main() {\n    println!("Hello, world!");\n}\n',
    pairs: 25,
  },
  {
    language: "cpp",
    source:
      '#include <iostream>\n\nint main() {\n  std::cout << "Hello, world!\\n";\n}\n',
    pairs: 15,
  },
  {
    language: "java",
    source:
      'public class Main {\n  public static void main(String[] args) {\n    System.out.println("Hello, world!");\n  }\n}\n',
    pairs: 15,
  },
  {
    language: "typescript",
    source:
      'const greeting: string = "Hello, world!";\nconsole.log(greeting);\n',
    pairs: 10,
  },
];

/** Runs the sandbox benchmark and returns its section. */
export async function benchSandbox(): Promise<BenchSection> {
  const title = "Sandbox overhead";
  const bare = Sandbox.none();
  const sandboxed = await Sandbox.detect();
  // Our own root for job workdirs, removed at the end: the executor's
  // default, `<tmp>/kiln-<pid>`, would outlive this process.
  const workRoot = await Deno.makeTempDir({ prefix: "kiln-bench-" });
  try {
    const { layers, backends, missing } = sandboxed.report;
    if (layers.length === 0) {
      // Both modes would be the same thing: nothing to measure.
      return {
        title,
        markdown: `Skipped: no sandbox layer works here (${
          Object.entries(missing).map(([l, why]) => `${l}: ${why}`).join("; ")
        }).\n`,
      };
    }
    const registry = createDefaultRegistry();
    const rows: string[] = [];
    const skipped: string[] = [];
    for (const { language, source, pairs } of HELLO_WORLDS) {
      const resolution = await registry.resolve(language);
      if (!resolution.ok) {
        skipped.push(`- ${language}: skipped, ${resolution.reason}`);
        continue;
      }
      const { resolved } = resolution;
      const file = {
        name: `prog${resolved.runner.extensions[0]}`,
        content: source,
      };
      const cpu = new Map<Sandbox, number>();
      const time = jobTimer(resolved, file, workRoot, cpu);
      const { first: bareMs, second: sandboxedMs } = await alternatingPairs(
        bare,
        sandboxed,
        { pairs, warmup: WARMUP_PAIRS },
        time,
      );
      const bareP50 = percentile(bareMs, 50);
      const sandboxedP50 = percentile(sandboxedMs, 50);
      const overhead = sandboxedP50 - bareP50;
      // Warm-up jobs were counted too: divide by every job run.
      const perJob = (sandbox: Sandbox) =>
        ((cpu.get(sandbox) ?? 0) / (pairs + WARMUP_PAIRS)).toFixed(1);
      rows.push(
        `| ${language} | ${pairs} | ${bareP50.toFixed(0)} | ${
          percentile(bareMs, 90).toFixed(0)
        } | ${sandboxedP50.toFixed(0)} | ${
          percentile(sandboxedMs, 90).toFixed(0)
        } | ${overhead.toFixed(0)} | ${
          (100 * overhead / bareP50).toFixed(0)
        }% | ${perJob(bare)} | ${perJob(sandboxed)} | ${layers.join(", ")} |`,
      );
    }
    return {
      title,
      markdown: [
        "A hello-world job per language through `executeJob`, bare (`Sandbox.none()`: no isolation) against",
        `the sandbox this host detects: ${
          layers.map((l) => `${l} (${backends[l]})`).join(", ")
        }.`,
        "Time is the whole job as a caller sees it: workdir, compile step where the language has one, run step,",
        "cleanup. Jobs run one at a time in bare/sandboxed pairs whose order alternates, after",
        `${WARMUP_PAIRS} warm-up pairs per language; every result was checked to be \`ok\` with stdout \`Hello, world!\`,`,
        "and the sandboxed ones to report those layers. Compiled languages get fewer pairs (`runs`) to keep the",
        "section short; their p90 rests on fewer samples. Overhead is sandboxed p50 minus bare p50.",
        "kiln CPU is the CPU time (user + system, from `/proc/self/stat`) of the bench's own process per job:",
        "what kiln itself spends on a job, not the job's processes.",
        "",
        "| language | runs | bare p50 ms | bare p90 ms | sandboxed p50 ms | sandboxed p90 ms | overhead ms | overhead | bare kiln CPU ms/job | sandboxed kiln CPU ms/job | layers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ...rows,
        ...(skipped.length > 0 ? ["", ...skipped] : []),
        "",
      ].join("\n"),
    };
  } finally {
    await Deno.remove(workRoot, { recursive: true });
    await sandboxed.close();
  }
}

/**
 * Times one hello-world job as a caller sees it, in `sandbox`: workdir,
 * compile, run, cleanup, adding this process's CPU time for it to `cpu`.
 * Any result but a clean hello world stops the bench.
 */
function jobTimer(
  resolved: ResolvedRunner,
  file: SourceFile,
  workRoot: string,
  cpu: Map<Sandbox, number>,
): (sandbox: Sandbox) => Promise<number> {
  const language = resolved.runner.name;
  return async (sandbox) => {
    const cpu0 = processCpuMs("self");
    const t0 = performance.now();
    const result = await executeJob(resolved, { language, files: [file] }, {
      sandbox,
      workRoot,
    });
    const ms = performance.now() - t0;
    cpu.set(sandbox, (cpu.get(sandbox) ?? 0) + processCpuMs("self") - cpu0);
    check(language, sandbox, result);
    return ms;
  };
}

/** Throws unless `result` is a clean hello world run under `sandbox`'s layers. */
function check(language: string, sandbox: Sandbox, result: JobResult): void {
  const layersOk = result.sandbox.join() === sandbox.layers.join();
  if (result.verdict === "ok" && result.stdout === EXPECTED && layersOk) return;
  throw new Error(
    `Sandbox bench: ${language} ${
      sandbox.layers.length === 0 ? "bare" : "sandboxed"
    } job did not print hello world: verdict ${result.verdict}, stdout ${
      JSON.stringify(result.stdout)
    }, layers [${result.sandbox}]${
      result.reason === undefined ? "" : `, reason: ${result.reason}`
    }\n${result.compile?.stderr ?? ""}${result.stderr}`,
  );
}

/**
 * What the seccomp filter, the job disk and the job's devpts cost: the
 * same hello worlds through `executeJob` under the full sandbox, against
 * the same sandbox with those layers left out (`without`), in alternating
 * pairs in this one run. A job of a compiled language has two steps and
 * one disk and devpts: the cost per step is the difference divided by the
 * steps.
 */
export async function benchHardening(): Promise<BenchSection> {
  const title = "Seccomp, disk and pty limit overhead";
  const full = await Sandbox.detect();
  const without = await Sandbox.detect({
    without: ["seccomp", "disk", "ptys"],
  });
  const workRoot = await Deno.makeTempDir({ prefix: "kiln-bench-" });
  try {
    const missing = (["seccomp", "disk", "ptys"] as const).filter((layer) =>
      !full.layers.includes(layer)
    );
    if (missing.length > 0) {
      return {
        title,
        markdown: `Skipped: ${
          missing.map((l) => `${l}: ${full.report.missing[l]}`).join("; ")
        }.\n`,
      };
    }
    const registry = createDefaultRegistry();
    const rows: string[] = [];
    for (
      const { language, pairs, steps } of [
        { language: "bash", pairs: 150, steps: 1 },
        { language: "python", pairs: 80, steps: 1 },
        { language: "c", pairs: 30, steps: 2 },
      ]
    ) {
      const resolution = await registry.resolve(language);
      if (!resolution.ok) continue;
      const { resolved } = resolution;
      const program = HELLO_WORLDS.find((p) => p.language === language)!;
      const file = {
        name: `prog${resolved.runner.extensions[0]}`,
        content: program.source,
      };
      const cpu = new Map<Sandbox, number>();
      const time = jobTimer(resolved, file, workRoot, cpu);
      const { first: baseMs, second: fullMs } = await alternatingPairs(
        without,
        full,
        { pairs, warmup: WARMUP_PAIRS },
        time,
      );
      const base = percentile(baseMs, 50);
      const withBoth = percentile(fullMs, 50);
      rows.push(
        `| ${language} | ${steps} | ${pairs} | ${base.toFixed(1)} | ${
          withBoth.toFixed(1)
        } | ${(withBoth - base).toFixed(1)} | ${
          ((withBoth - base) / steps).toFixed(1)
        } |`,
      );
    }
    return {
      title,
      markdown: [
        `A hello-world job through \`executeJob\` under every layer (${
          full.layers.join(", ")
        }) against the same sandbox`,
        "without `seccomp`, `disk` and `ptys` (`Sandbox.detect({ without })`), in alternating pairs after",
        `${WARMUP_PAIRS} warm-up pairs. The disk is one tmpfs and the ptys one devpts mounted and unmounted per job, the filter one`,
        "descriptor opened per step; medians (p50) of the whole job, in ms.",
        "",
        "| language | steps | pairs | without p50 | with p50 | difference per job | per step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ...rows,
        "",
      ].join("\n"),
    };
  } finally {
    await Deno.remove(workRoot, { recursive: true });
    await full.close();
    await without.close();
  }
}
