/**
 * What the master pays on its event loop per finished job for the history:
 * `JobHistory.record` of a result whose stdout is 1 MiB of `\x01` (six bytes
 * each as JSON escapes), in memory and in a file. Its floor is the least any
 * history could pay: the same stdout inserted as text by one prepared
 * statement into a one-column table of the same kind of database. Each pair
 * runs alternately, in this one invocation.
 *
 * Run alone: `deno run -A bench/history_bench.ts`.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { DatabaseSync } from "node:sqlite";
import { JobHistory } from "../lib/history/job_history.ts";
import { blankResult } from "../lib/job.ts";
import { alternatingPairs, type BenchSection, percentile } from "./_stats.ts";

const JOBS = 40;
const WARMUP = 2;
const stdout = "\x01".repeat(1024 * 1024);

/** Runs the history benchmark and returns its section. */
export async function benchHistory(): Promise<BenchSection> {
  const rows: string[] = [];
  for (const where of ["memory", "file"] as const) {
    const dir = await Deno.makeTempDir();
    try {
      using history = new JobHistory(
        where === "file" ? { path: `${dir}/history.db` } : {},
      );
      const floorDb = new DatabaseSync(
        where === "file" ? `${dir}/floor.db` : ":memory:",
      );
      floorDb.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
      floorDb.exec("CREATE TABLE output (stdout TEXT)");
      const insert = floorDb.prepare("INSERT INTO output VALUES (?)");
      let job = 0;
      const times = await alternatingPairs(
        "record",
        "floor",
        { pairs: JOBS, warmup: WARMUP },
        (what) => {
          const result = blankResult(`j${job++}`, {
            verdict: "ok",
            language: "bash",
            stdout,
          });
          const start = performance.now();
          if (what === "record") history.record(result);
          else insert.run(result.stdout);
          return Promise.resolve(performance.now() - start);
        },
      );
      floorDb.close();
      const cells = (values: number[]) =>
        `${percentile(values, 50).toFixed(2)} | ${
          percentile(values, 90).toFixed(2)
        }`;
      rows.push(
        `| ${where} | ${cells(times.first)} | ${cells(times.second)} | ${
          (percentile(times.first, 50) / percentile(times.second, 50))
            .toFixed(1)
        }× |`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return {
    title: "History",
    markdown: [
      `\`JobHistory.record()\` of a result whose stdout is 1 MiB of \`\\x01\` (6 MiB as JSON escapes), ${JOBS} jobs`,
      `after ${WARMUP} warm-up pairs, against its floor: the same stdout inserted as text by one prepared statement`,
      "into a one-column table of the same database kind, alternating, in this one invocation.",
      "",
      "| database | record p50 ms | record p90 ms | floor p50 ms | floor p90 ms | record / floor |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      ...rows,
      "",
    ].join("\n"),
  };
}

if (import.meta.main) console.log((await benchHistory()).markdown);
