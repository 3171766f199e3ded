/**
 * `deno task bench [SECTION...]`: runs benchmark sections and writes them to
 * BENCHMARKS.md, headed by the machine they ran on. Each section measures
 * kiln against its baseline in the same invocation, so the numbers compare
 * like with like.
 *
 * Without names, every section runs and the file is written afresh. With
 * names (`deno task bench scale`), only those run, and each replaces its own
 * section of the file (or is added at its end), saying when and under what
 * load it was measured; the other sections stay as they were.
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
import { benchNats } from "./nats_bench.ts";
import { benchScale } from "./scale_bench.ts";
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
  ["scale", () => benchScale()],
  ["nats", benchNats],
];

const known: readonly string[] = BENCHES.map(([name]) => name);
const unknown = Deno.args.filter((name) => !known.includes(name));
if (unknown.length > 0) {
  console.error(
    `bench: no section ${unknown.join(", ")}; the sections are ${
      known.join(", ")
    }`,
  );
  Deno.exit(2);
}
const chosen = Deno.args.length === 0
  ? BENCHES
  : BENCHES.filter(([name]) => Deno.args.includes(name));

// Described before the benches run, so the load average is other work's, not ours.
const machine = await describeMachine();
const sections: BenchSection[] = [];
for (const [name, run] of chosen) {
  console.error(`bench: ${name}...`);
  const started = performance.now();
  const section = await run();
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `${section.markdown}\nbench: ${name} took ${seconds.toFixed(0)} s`,
  );
  sections.push(section);
}

if (chosen.length === BENCHES.length) {
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
} else {
  const note = `Measured on its own (\`deno task bench ${
    Deno.args.join(" ")
  }\`), not in the run above: ${machine.join("; ")}.`;
  const old = await Deno.readTextFile(OUTPUT).catch(() => "# Benchmarks\n");
  await Deno.writeTextFile(OUTPUT, replaceSections(old, sections, note));
}
console.error(`bench: wrote ${OUTPUT}`);

/**
 * `text` with each section's `## title` block (to the next `## ` heading)
 * replaced by the section with `note` under its title, or added at the end.
 */
function replaceSections(
  text: string,
  sections: readonly BenchSection[],
  note: string,
): string {
  for (const section of sections) {
    const block = `## ${section.title}\n\n${note}\n\n${section.markdown}`;
    const start = text.indexOf(`\n## ${section.title}\n`);
    if (start === -1) {
      text = `${text.trimEnd()}\n\n${block}`;
      continue;
    }
    const next = text.indexOf("\n## ", start + 1);
    text = text.slice(0, start + 1) + block +
      (next === -1 ? "" : `\n${text.slice(next + 1)}`);
  }
  return text;
}
