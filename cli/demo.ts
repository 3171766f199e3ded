/**
 * `deno task demo`: starts a local cluster the way an operator would (a
 * coordinator-only master and two secondaries, each its own process),
 * submits every sample program in `examples/programs/` at once, prints a
 * table of the results with the node each ran on, and shuts the cluster
 * down. Languages whose toolchain this machine lacks are listed as skipped,
 * not failed.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { printable } from "./_terminal.ts";
import { basename, extname } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createDefaultRegistry,
  type JobResult,
  submitProgram,
} from "../mod.ts";
import { runMain } from "./_cli.ts";
import { startMasterProcess, startSecondaryProcess } from "./_processes.ts";

const PROGRAMS_DIR = fileURLToPath(
  new URL("../examples/programs/", import.meta.url),
);

interface Row {
  language: string;
  program: string;
  verdict: string;
  timeMs: string;
  /** Peak memory of the run step, as the sandbox's cgroup measured it. */
  memory: string;
  node: string;
  /** The isolation layers the job ran under. */
  sandbox: string;
  output: string;
}

async function main(): Promise<number> {
  const token = crypto.randomUUID();
  const registry = createDefaultRegistry();
  const [master, statuses, programs] = await Promise.all([
    startMasterProcess({
      token,
      args: ["--slots", "0", "--log-level", "error"],
    }),
    registry.detect(),
    listPrograms(),
  ]);
  const started = await Promise.allSettled(
    ["east", "west"].map((name) =>
      startSecondaryProcess(master.address, {
        token,
        args: ["--name", name, "--slots", "2", "--log-level", "error"],
      })
    ),
  );
  const secondaries = started.flatMap((s) =>
    s.status === "fulfilled" ? [s.value] : []
  );
  const failure = started.find((s) => s.status === "rejected");
  if (failure) {
    // Stop the one that did start too: it would otherwise redial forever.
    await Promise.all(secondaries.map((secondary) => secondary.stop()));
    await master.stop();
    throw failure.reason;
  }
  console.log(
    `kiln demo: master on ${master.address} with secondaries ${
      secondaries.map((s) => s.name).join(" and ")
    }; ${programs.length} sample programs at once\n`,
  );

  try {
    const rows = await Promise.all(programs.map(async (path): Promise<Row> => {
      const program = basename(path);
      const runner = registry.forFile(program);
      const status = statuses.find((s) => s.name === runner?.name);
      if (!runner || !status) {
        return skipped("?", program, "no runner for this extension");
      }
      if (!status.toolchain.available) {
        return skipped(runner.name, program, status.toolchain.reason);
      }
      const stdin = await Deno.readTextFile(`${path}.stdin`).catch(() =>
        undefined
      );
      const result = await submitProgram({
        language: runner.name,
        files: [{ name: program, content: await Deno.readTextFile(path) }],
        ...stdin === undefined ? {} : { stdin },
      }, { master: master.address, token, name: "demo" });
      return row(
        runner.name,
        program + (stdin === undefined ? "" : " < stdin"),
        result,
      );
    }));
    printTable(rows);
    const failed = rows.filter((r) =>
      r.verdict !== "ok" && r.verdict !== "skipped"
    );
    const ran = rows.length -
      rows.filter((r) => r.verdict === "skipped").length;
    console.log(
      `\n${ran} ran, ${failed.length} failed, ${rows.length - ran} skipped`,
    );
    return failed.length === 0 ? 0 : 1;
  } finally {
    await Promise.all(secondaries.map((secondary) => secondary.stop()));
    await master.stop();
  }
}

async function listPrograms(): Promise<string[]> {
  const paths: string[] = [];
  for await (const entry of Deno.readDir(PROGRAMS_DIR)) {
    if (entry.isFile && extname(entry.name) !== ".stdin") {
      paths.push(PROGRAMS_DIR + entry.name);
    }
  }
  return paths.sort();
}

function row(language: string, program: string, result: JobResult): Row {
  const output = result.verdict === "ok"
    ? result.stdout
    : (result.reason ?? result.compile?.stderr ?? result.stderr);
  return {
    language,
    program,
    verdict: result.verdict,
    timeMs: `${result.timeMs + (result.compile?.timeMs ?? 0)} ms`,
    memory: result.memoryKb === null
      ? "-"
      : `${(result.memoryKb / 1024).toFixed(1)} MiB`,
    sandbox: result.sandbox.length === 0 ? "none" : result.sandbox.join("+"),
    node: result.node ?? "-",
    output: output.trim().split("\n").join(" / "),
  };
}

function skipped(language: string, program: string, reason: string): Row {
  return {
    language,
    program,
    verdict: "skipped",
    timeMs: "-",
    memory: "-",
    sandbox: "-",
    node: "-",
    output: reason,
  };
}

function printTable(given: Row[]): void {
  // Cells come from nodes and programs: escaped, so none moves the cursor.
  const rows = given.map((row) => {
    const safe = { ...row };
    for (const key of Object.keys(safe) as (keyof Row)[]) {
      safe[key] = printable(safe[key]);
    }
    return safe;
  });
  const columns: (keyof Row)[] = [
    "language",
    "program",
    "verdict",
    "timeMs",
    "memory",
    "node",
    "sandbox",
    "output",
  ];
  const titles: Row = {
    language: "LANGUAGE",
    program: "PROGRAM",
    verdict: "VERDICT",
    timeMs: "TIME",
    memory: "MEMORY",
    sandbox: "SANDBOX",
    node: "NODE",
    output: "OUTPUT",
  };
  const widths = columns.map((c) =>
    Math.max(titles[c].length, ...rows.map((r) => r[c].length))
  );
  for (const r of [titles, ...rows]) {
    console.log(
      columns.map((c, i) => c === "output" ? r[c] : r[c].padEnd(widths[i]!))
        .join("  "),
    );
  }
}

if (import.meta.main) await runMain("kiln demo", main);
