/**
 * What the master pays on its event loop per finished job for the history:
 * `JobHistory.record` of a result whose stdout is 1 MiB of `\x01` (six bytes
 * each as JSON escapes), in memory and in a file, 40 jobs each.
 *
 * Run: `deno run -A bench/history_bench.ts`.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { JobHistory } from "../lib/history/job_history.ts";
import { blankResult } from "../lib/job.ts";

const JOBS = 40;
const stdout = "\x01".repeat(1024 * 1024);

for (const where of ["memory", "file"] as const) {
  const dir = await Deno.makeTempDir();
  try {
    using history = new JobHistory(
      where === "file" ? { path: `${dir}/history.db` } : {},
    );
    const times: number[] = [];
    for (let i = 0; i < JOBS; i++) {
      const result = blankResult(`j${i}`, {
        verdict: "ok",
        language: "bash",
        stdout,
      });
      const start = performance.now();
      history.record(result);
      times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    const at = (p: number) => times[Math.floor(p * (times.length - 1))]!;
    console.log(
      `history ${where}: record of a 1 MiB result: median ${
        at(0.5).toFixed(2)
      } ms, p90 ${at(0.9).toFixed(2)} ms; rss ${
        (Deno.memoryUsage().rss / 2 ** 20).toFixed(0)
      } MiB after ${JOBS} jobs`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
