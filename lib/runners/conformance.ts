/**
 * The behaviour every {@linkcode LanguageRunner} must have, as one suite of
 * `Deno.test` cases that compile and run real programs through the real
 * executor. Each runner's test file calls {@linkcode runRunnerConformance}
 * with a factory and the runner's programs, the way Hono's routers share
 * `runTest({ newRouter })`.
 *
 * When the runner's toolchain is missing, every case is registered as ignored
 * and the reason is printed once, so a machine without `javac` reports
 * skipped tests instead of failures.
 *
 * @module
 */
import assert from "node:assert/strict";
import { executeJob } from "../executor.ts";
import type { JobRequest, JobResult, SourceFile } from "../job.ts";
import type { ResolvedRunner } from "./registry.ts";
import type { LanguageRunner, StepContext } from "./runner.ts";

/** Programs in the runner's language, one per case of {@linkcode runRunnerConformance}. */
export interface ConformancePrograms {
  /** Writes exactly `Hello, world!\n` to stdout. */
  readonly hello: string;
  /** Copies all of stdin to stdout, unchanged (UTF-8, no newline added). */
  readonly echo: string;
  /** Writes each command-line argument on a line of its own. */
  readonly args: string;
  /** Writes `exiting with 3\n` to stderr, then exits with code 3. */
  readonly exit3: string;
  /** Dies of an uncaught exception, a panic or a signal. */
  readonly crash: string;
  /** Fails to compile. Used only when the runner has a compile step, and required then. */
  readonly compileError?: string;
  /**
   * Several files, the entry first, that together write `Hello, world!\n`,
   * for languages where a program can span files.
   */
  readonly multiFile?: readonly SourceFile[];
}

/** Input of the stdin case: several lines, a blank one, non-ASCII text, no final newline. */
const ECHO_INPUT =
  "first line\nsecond line\n\nnon-ASCII: héllo wörld — ✓ 日本語 🦕\nno newline at the end";

/** Arguments of the args case: one with a space, one that looks like a flag, one non-ASCII. */
const ARGS = ["one", "two words", "--help", "ünï"];

/**
 * Registers the conformance cases for the runner `newRunner` makes.
 *
 * Call it at the top level of a test file and await it: it detects the
 * toolchain first, to know whether the cases can run.
 *
 * @example A runner's test file
 * ```ts ignore
 * import { runRunnerConformance } from "./conformance.ts";
 * import { PythonRunner } from "./python_runner.ts";
 *
 * await runRunnerConformance(() => new PythonRunner(), {
 *   hello: 'print("Hello, world!")',
 *   echo: "import sys\nsys.stdout.write(sys.stdin.read())",
 *   args: "import sys\nfor arg in sys.argv[1:]: print(arg)",
 *   exit3: 'import sys\nprint("exiting with 3", file=sys.stderr)\nsys.exit(3)',
 *   crash: 'raise RuntimeError("boom")',
 * });
 * ```
 */
export async function runRunnerConformance(
  newRunner: () => LanguageRunner,
  programs: ConformancePrograms,
): Promise<void> {
  const runner = newRunner();
  const toolchain = await runner.detect();
  const resolved: ResolvedRunner | undefined = toolchain.available
    ? { runner, toolchain }
    : undefined;
  if (!toolchain.available) {
    // deno-lint-ignore no-console
    console.log(`skipping ${runner.name} conformance: ${toolchain.reason}`);
  }
  const entry = `prog${runner.extensions[0] ?? ""}`;

  const test = (
    name: string,
    fn: (resolved: ResolvedRunner) => Promise<void> | void,
    skip = false,
  ) => {
    Deno.test({
      name: `${runner.name} conformance: ${name}`,
      ignore: resolved === undefined || skip,
      fn: () => fn(resolved!),
    });
  };
  const run = (
    resolved: ResolvedRunner,
    content: string,
    request: Partial<JobRequest> = {},
  ): Promise<JobResult> =>
    executeJob(resolved, {
      language: runner.name,
      files: [{ name: entry, content }],
      ...request,
    });

  test("describes itself", () => {
    assert.match(runner.name, /^[a-z0-9+#-]+$/, "name is lower-case");
    assert.ok(runner.extensions.length > 0, "has at least one extension");
    for (const ext of runner.extensions) {
      assert.match(ext, /^\.[a-z0-9]+$/, `extension ${ext}`);
    }
    assert.equal(
      newRunner().name,
      runner.name,
      "every instance has the same name",
    );
  });

  test("resolves absolute executables and builds absolute commands", ({ toolchain }) => {
    assert.ok(toolchain.version.length > 0, "has a version");
    const executables = Object.entries(toolchain.executables);
    assert.ok(executables.length > 0, "names at least one executable");
    for (const [role, path] of executables) {
      assert.ok(path.startsWith("/"), `${role} ${path} is absolute`);
    }
    const context: StepContext = {
      workdir: "/tmp/kiln-conformance",
      entry,
      files: [entry],
      args: ["a"],
      toolchain,
      memoryMb: 512,
    };
    for (const spec of [runner.compile?.(context), runner.run(context)]) {
      if (spec) {
        assert.ok(spec.command.startsWith("/"), `${spec.command} is absolute`);
      }
    }
  });

  test("prints hello world", async (resolved) => {
    const result = await run(resolved, programs.hello);
    assert.equal(result.verdict, "ok", explain(result));
    assert.equal(result.stdout, "Hello, world!\n", explain(result));
    assert.equal(result.exitCode, 0);
    assert.equal(result.signal, null);
    assert.equal(result.language, runner.name);
    assert.equal(
      result.compile === null,
      runner.compile === undefined,
      "a compile result iff a compile step",
    );
  });

  test("echoes stdin, non-ASCII included", async (resolved) => {
    const result = await run(resolved, programs.echo, { stdin: ECHO_INPUT });
    assert.equal(result.verdict, "ok", explain(result));
    assert.equal(result.stdout, ECHO_INPUT, explain(result));
  });

  test("receives command-line arguments", async (resolved) => {
    const result = await run(resolved, programs.args, { args: ARGS });
    assert.equal(result.verdict, "ok", explain(result));
    assert.equal(
      result.stdout,
      ARGS.map((arg) => `${arg}\n`).join(""),
      explain(result),
    );
  });

  test("reports a non-zero exit code as runtime_error", async (resolved) => {
    const result = await run(resolved, programs.exit3);
    assert.equal(result.verdict, "runtime_error", explain(result));
    assert.equal(result.exitCode, 3, explain(result));
    assert.equal(result.signal, null);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /exiting with 3/, explain(result));
  });

  test("reports a crash as runtime_error", async (resolved) => {
    const result = await run(resolved, programs.crash);
    assert.equal(result.verdict, "runtime_error", explain(result));
    assert.ok(
      result.signal !== null ||
        (result.exitCode !== null && result.exitCode !== 0),
      explain(result),
    );
  });

  const compileName = runner.compile === undefined
    ? "reports a compile error (no compile step)"
    : "reports a compile error as compile_error";
  test(compileName, async (resolved) => {
    assert.ok(
      programs.compileError !== undefined,
      `${runner.name} has a compile step: give a compileError program`,
    );
    const result = await run(resolved, programs.compileError);
    assert.equal(result.verdict, "compile_error", explain(result));
    assert.equal(result.compile?.verdict, "compile_error", explain(result));
    assert.match(
      result.compile?.stderr ?? "",
      /error/i,
      "the compiler's message is in compile.stderr",
    );
    assert.equal(result.exitCode, null, "the program never ran");
    assert.equal(result.stdout, "");
  }, runner.compile === undefined);

  test(
    `runs a multi-file program${programs.multiFile ? "" : " (not given)"}`,
    async (resolved) => {
      const files = programs.multiFile!;
      const result = await executeJob(resolved, {
        language: runner.name,
        files: [...files],
      });
      assert.equal(result.verdict, "ok", explain(result));
      assert.equal(result.stdout, "Hello, world!\n", explain(result));
    },
    programs.multiFile === undefined,
  );
}

/** The parts of a result that say what went wrong, for assertion messages. */
function explain(result: JobResult): string {
  const { verdict, exitCode, signal, stdout, stderr, compile, reason } = result;
  return JSON.stringify(
    { verdict, exitCode, signal, stdout, stderr, compile, reason },
    null,
    2,
  );
}
