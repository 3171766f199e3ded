/**
 * A program's files can never add arguments to its compile: gcc, g++,
 * javac and rustc read `@file` arguments as argument files, so a source
 * named `@opts.c` next to an `opts.c` holding `-wrapper /bin/sh,-c,...` used
 * to run a shell in the compile step, under the compile limits. Each test
 * runs the real compiler in the real sandbox, where it is installed.
 */
import assert from "node:assert/strict";
import { executeJob } from "../executor.ts";
import type { JobRequest, JobResult } from "../job.ts";
import { createDefaultRegistry } from "./registry.ts";

const registry = createDefaultRegistry();

async function run(request: JobRequest): Promise<JobResult | undefined> {
  const resolution = await registry.resolve(request.language);
  if (!resolution.ok) return undefined;
  return await executeJob(resolution.resolved, request);
}

/** Everything the job printed, compile step included. */
function printed(result: JobResult): string {
  return [
    result.compile?.stdout,
    result.compile?.stderr,
    result.stdout,
    result.stderr,
  ].join("\n");
}

/**
 * A compile-step shell that prints INJECTED: the argument file's quotes
 * join `IN''JECTED`, so a compiler quoting the source never prints it whole.
 */
const SHELL = "/bin/sh,-c,echo${IFS}IN''JECTED>&2";

for (
  const [language, ext, program] of [
    [
      "c",
      "c",
      '#include <stdio.h>\nint main(void) { puts("ran"); return 0; }\n',
    ],
    [
      "cpp",
      "cpp",
      '#include <cstdio>\nint main() { std::puts("ran"); return 0; }\n',
    ],
  ] as const
) {
  Deno.test(`${language}: a file named @opts.${ext} is a source, never g++/gcc's argument file`, async () => {
    const injected = await run({
      language,
      files: [
        { name: `main.${ext}`, content: program },
        { name: `@opts.${ext}`, content: "" },
        { name: `opts.${ext}`, content: `-wrapper ${SHELL}\n` },
      ],
    });
    if (injected === undefined) return; // No compiler here.
    assert.doesNotMatch(printed(injected), /INJECTED/);
    // And such a name still works as an ordinary source file.
    const named = await run({
      language,
      files: [{ name: `@main.${ext}`, content: program }],
    });
    assert.equal(named?.verdict, "ok", JSON.stringify(named));
    assert.equal(named?.stdout, "ran\n");
  });
}

Deno.test("java: a file named @Opts.java is a source, never javac's argument file", async () => {
  const injected = await run({
    language: "java",
    files: [
      {
        name: "Main.java",
        content:
          'public class Main { public static void main(String[] a) { System.out.println("ran"); } }\n',
      },
      { name: "@Opts.java", content: "class Opts {}\n" },
      // Read as arguments, -version makes javac print its version.
      { name: "Opts.java", content: "-version\n" },
    ],
  });
  if (injected === undefined) return;
  assert.doesNotMatch(printed(injected), /javac \d/);
});

Deno.test("rust: an entry named @main.rs is a source, never rustc's argument file", async () => {
  const injected = await run({
    language: "rust",
    entry: "@main.rs",
    files: [
      { name: "@main.rs", content: 'fn main() { println!("ran"); }\n' },
      // Read as arguments, -V makes rustc print its version and stop.
      { name: "main.rs", content: "-V\n" },
    ],
  });
  if (injected === undefined) return;
  assert.doesNotMatch(printed(injected), /rustc \d/);
  assert.equal(injected.verdict, "ok", JSON.stringify(injected));
  assert.equal(injected.stdout, "ran\n");
});
