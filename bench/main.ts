/**
 * `deno task bench`: runs every benchmark section and writes BENCHMARKS.md,
 * headed by the machine it ran on. Each section measures kiln against its
 * baseline in the same invocation, so the numbers compare like with like.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { fileURLToPath } from "node:url";
import { benchCluster } from "./cluster_bench.ts";
import { benchDispatch } from "./dispatch_bench.ts";
import { benchHistory } from "./history_bench.ts";
import { benchHop } from "./hop_bench.ts";
import { benchPrewarm } from "./prewarm_bench.ts";
import { benchHardening, benchSandbox } from "./sandbox_bench.ts";
import { type BenchSection, describeMachine } from "./_stats.ts";

const OUTPUT = fileURLToPath(new URL("../BENCHMARKS.md", import.meta.url));

const BENCHES = [
  ["cluster", benchCluster],
  ["dispatch", benchDispatch],
  ["hop", benchHop],
  ["history", benchHistory],
  ["sandbox", benchSandbox],
  ["hardening", benchHardening],
  ["prewarm", benchPrewarm],
] as const;

// Described before the benches run, so the load average is other work's, not ours.
const machine = await describeMachine();
const sections: BenchSection[] = [];
for (const [name, run] of BENCHES) {
  console.error(`bench: ${name}...`);
  const started = performance.now();
  const section = await run();
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `${section.markdown}\nbench: ${name} took ${seconds.toFixed(0)} s`,
  );
  sections.push(section);
}

const text = [
  "# Benchmarks",
  "",
  "Written by `deno task bench`; every number below comes from one run on this machine:",
  "",
  ...machine.map((line) => `- ${line}`),
  "",
  ...sections.flatMap((
    section,
  ) => [`## ${section.title}`, "", section.markdown]),
].join("\n");
await Deno.writeTextFile(OUTPUT, text);
console.error(`bench: wrote ${OUTPUT}`);
