/**
 * `deno task bench`: runs every benchmark section and writes BENCHMARKS.md,
 * headed by the machine it ran on. Each section measures kiln against its
 * baseline in the same invocation, so the numbers compare like with like.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { fileURLToPath } from "node:url";
import { benchCluster, type BenchSection } from "./cluster_bench.ts";
import { describeMachine } from "./_stats.ts";

const OUTPUT = fileURLToPath(new URL("../BENCHMARKS.md", import.meta.url));

const sections: BenchSection[] = [];
for (const [name, run] of [["cluster", benchCluster]] as const) {
  console.error(`bench: ${name}...`);
  const section = await run();
  console.error(section.markdown);
  sections.push(section);
}

const machine = await describeMachine();
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
