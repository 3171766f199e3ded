/**
 * Deep directory trees for the tests of their removal, and a child process
 * to remove them in: removing such a tree used to abort the whole process
 * (a stack overflow in `Deno.remove`), so the removal runs in a child with a
 * deadline, where a regression fails the test instead of killing the test
 * runner.
 *
 * Run as a script, it is that child:
 *
 * - `job <workRoot> <canary> <depth> <default|none>`: runs a Python job
 *   that builds {@linkcode TREE_PROGRAM} in its workdir, and prints the
 *   result and what is left in `workRoot` as JSON;
 * - `sweep <parent>`: sweeps `parent` and prints the outcome as JSON.
 *
 * @module
 */
import { createDefaultRegistry } from "../lib/runners/registry.ts";
import { executeJob } from "../lib/executor.ts";
import { defaultSandbox, Sandbox } from "../lib/sandbox/sandbox.ts";
import { sweepStaleWorkRoots } from "../lib/sandbox/work_root.ts";

/** The real Python, not the slow pyenv shim on `PATH`. */
export const PYTHON = "/usr/bin/python3";

/**
 * A Python program that builds, in the directory it is given (argv[1], or
 * the working directory), a tree `depth` (argv[2]) levels deep through
 * directory descriptors (the path is far past `PATH_MAX`), with a `000`
 * directory every 1,000 levels and at the bottom, a wide `000` directory,
 * names that look like options or hold a newline, and a symlink to `canary`
 * (argv[3]), which a remover must not follow.
 */
export const TREE_PROGRAM = `
import os, sys
top, depth, canary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
for name in ["-rf", "@opts", "new\\nline", " ", "--no-preserve-root"]:
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o000, dir_fd=fd))
os.symlink(canary, "out", dir_fd=fd)
os.mkdir("wide", dir_fd=fd)
wide = os.open("wide", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
for i in range(2000):
    os.close(os.open("f%d" % i, os.O_CREAT | os.O_WRONLY, 0o000, dir_fd=wide))
os.fchmod(wide, 0)
os.close(wide)
for level in range(depth):
    os.mkdir("d", dir_fd=fd)
    child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    if level % 1000 == 999:
        os.fchmod(fd, 0)
    os.close(fd)
    fd = child
os.symlink(canary, "out", dir_fd=fd)
os.fchmod(fd, 0)
print("built", depth)
`;

/** Runs this file as a child with `args`, killed after `deadlineMs`. */
export async function runChild(
  args: string[],
  deadlineMs: number,
): Promise<
  { code: number; signal: Deno.Signal | null; stdout: string; stderr: string }
> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), deadlineMs);
  try {
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      signal: output.signal,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Writes the child's answer to stdout, as one JSON line. */
function print(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(`${JSON.stringify(value)}\n`));
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "job") {
    const [workRoot, canary, depth, sandboxName] = rest;
    const sandbox = sandboxName === "none"
      ? Sandbox.none()
      : await defaultSandbox();
    const python = await createDefaultRegistry().resolve("python");
    if (!python.ok) throw new Error(`no python: ${python.reason}`);
    const result = await executeJob(python.resolved, {
      language: "python",
      files: [{ name: "main.py", content: TREE_PROGRAM }],
      args: [".", depth!, canary!],
    }, {
      workRoot: workRoot!,
      sandbox,
      // The tree needs an inode a level: past the default disk file limit.
      limits: { wallTimeMs: 300_000, cpuTimeMs: 300_000, diskFiles: 40_000 },
    });
    const left = (await Array.fromAsync(Deno.readDir(workRoot!))).map((e) =>
      e.name
    );
    print({
      verdict: result.verdict,
      reason: result.reason ?? null,
      stdout: result.stdout,
      stderr: result.stderr.slice(0, 2000),
      left,
      removalFailures: sandbox.removalFailures,
    });
    await sandbox.close();
  } else if (mode === "sweep") {
    print(await sweepStaleWorkRoots(rest[0]!));
  } else {
    throw new Error(`unknown mode "${mode}"`);
  }
}
