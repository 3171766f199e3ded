/**
 * `deno task bench`: runs every benchmark section and writes BENCHMARKS.md,
 * headed by the machine it ran on. Each section measures kiln against its
 * baseline in the same invocation, so the numbers compare like with like.
 *
 * `deno task bench NAME...` runs only the sections named (in their usual
 * order) and prints them instead: BENCHMARKS.md is only ever written whole.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { fileURLToPath } from "node:url";
import { benchCluster, type ClusterSection } from "./cluster_bench.ts";
import { benchDequeue, benchDispatch } from "./dispatch_bench.ts";
import { benchHistory } from "./history_bench.ts";
import { benchHop } from "./hop_bench.ts";
import { benchPrewarm } from "./prewarm_bench.ts";
import { benchHardening, benchSandbox } from "./sandbox_bench.ts";
import { benchSpeed } from "./speed_bench.ts";
import { type BenchSection, describeMachine } from "./_stats.ts";

const OUTPUT = fileURLToPath(new URL("../BENCHMARKS.md", import.meta.url));

// The speed section judges the cluster section's throughput against its
// target when both run, rather than measuring it a second time.
let cluster: ClusterSection | undefined;
const BENCHES: readonly (readonly [string, () => Promise<BenchSection>])[] = [
  ["cluster", async () => cluster = await benchCluster()],
  ["dispatch", benchDispatch],
  ["dequeue", benchDequeue],
  ["hop", benchHop],
  ["history", benchHistory],
  ["sandbox", benchSandbox],
  ["hardening", benchHardening],
  ["prewarm", benchPrewarm],
  ["speed", () => benchSpeed(cluster?.throughput)],
];

const unknown = Deno.args.filter((name) =>
  !BENCHES.some(([known]) => known === name)
);
if (unknown.length > 0) {
  console.error(
    `bench: no section ${unknown.join(", ")}; the sections are ${
      BENCHES.map(([name]) => name).join(", ")
    }`,
  );
  Deno.exit(2);
}
const selected = Deno.args.length === 0
  ? BENCHES
  : BENCHES.filter(([name]) => Deno.args.includes(name));

// Described before the benches run, so the load average is other work's, not ours.
const machine = await describeMachine();
const sections: BenchSection[] = [];
for (const [name, run] of selected) {
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
if (selected === BENCHES) {
  await Deno.writeTextFile(OUTPUT, text);
  console.error(`bench: wrote ${OUTPUT}`);
} else {
  console.log(text);
}
