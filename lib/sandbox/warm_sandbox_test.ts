/**
 * Pre-warmed sandboxes, for real: bubblewrap chains started ahead with the
 * Perl stub waiting, taken by `executeJob`. The conformance test runs the
 * same programs cold and warm and compares everything a program can see of
 * itself; the others check that a warm sandbox is used once, that nothing
 * of one outlives its job or the sandbox, and that the limits still hold.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { createDefaultRegistry } from "../runners/registry.ts";
import { executeJob } from "../executor.ts";
import type { JobRequest, JobResult, LimitOverrides } from "../job.ts";
import { Sandbox } from "./sandbox.ts";
import { findPerl } from "./warm_stub.ts";
import { defaultWorkRoot } from "./work_root.ts";

const registry = createDefaultRegistry();
const probe = await Sandbox.detect();
const perl = await findPerl();
const skip = !probe.layers.includes("namespaces")
  ? "the namespace layer is missing: nothing is pre-warmed"
  : perl === null
  ? "no perl: nothing is pre-warmed"
  : undefined;
await probe.close();
if (skip) console.log(`skipping the pre-warmed sandbox tests: ${skip}`);

/** Runs one job and says whether its steps started warm. */
async function run(
  sandbox: Sandbox,
  request: JobRequest,
  limits: LimitOverrides = {},
): Promise<{ result: JobResult; warm: number; cold: number }> {
  const resolved = await registry.resolve(request.language);
  assert.ok(resolved.ok, `${request.language} is not available`);
  // A ready pool, so that whether the job finds one is not a race.
  await sandbox.warmSettled();
  const before = { ...sandbox.stepStarts };
  const result = await executeJob(resolved.resolved, request, {
    sandbox,
    limits,
  });
  return {
    result,
    warm: sandbox.stepStarts.warm - before.warm,
    cold: sandbox.stepStarts.cold - before.cold,
  };
}

/**
 * What a program shows of itself, with what differs between any two jobs
 * (the job's own uid and workdir, pipe inodes, times) made alike.
 */
function normalized(result: JobResult, uid: number | undefined): string {
  let text =
    `${result.verdict} ${result.exitCode}\n${result.stdout}\n--\n${result.stderr}`;
  text = text.replaceAll(/kiln-job-[0-9a-f]+/g, "JOB")
    .replaceAll(/kiln-\d+-[0-9a-f]+/g, "ROOT")
    .replaceAll(/(pipe|socket):\[\d+\]/g, "$1:[N]")
    .replaceAll(/\b\d{1,2}:\d{2}\b/g, "HH:MM")
    .replaceAll(/Dec|Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov/g, "MON");
  if (uid !== undefined) text = text.replaceAll(String(uid), "UID");
  return text;
}

/** The uid a job ran as, from its own `id -u` line. */
function uidOf(result: JobResult): number | undefined {
  const match = /^uid (\d+)$/m.exec(result.stdout);
  return match ? Number(match[1]) : undefined;
}

const PROGRAMS: Record<string, JobRequest> = {
  bash: {
    language: "bash",
    files: [{
      name: "main.sh",
      content: [
        'echo "uid $(id -u)"',
        'echo "args $# [$*]"',
        'pwd; umask; hostname; echo "pid $$ ppid $PPID"',
        "env",
        "ulimit -a",
        "ls -ln /proc/self/fd",
        "grep -E '^(Cap|NoNewPrivs|Seccomp|Sig(Ign|Blk|Cgt)|Groups|Umask)' /proc/self/status",
        "cat /proc/self/cgroup; cat /proc/self/oom_score_adj",
        'awk \'{print "pgrp-is-pid", ($5 == $1), "session-is-pgrp", ($6 == $5), "tty", $7, "nice", $19}\' /proc/self/stat',
        "ls -la .; ls -la /tmp",
        'echo "stdin [$(cat)]"',
      ].join("\n"),
    }, { name: "data.txt", content: "a file of the job\n" }],
    args: ["one", "two words"],
    stdin: "line one\nline two\n",
  },
  python: {
    language: "python",
    files: [{
      name: "main.py",
      content: [
        "import os, sys, resource",
        'print("uid", os.getuid())',
        "print(sys.argv, os.getcwd(), list(os.environ.items()))",
        "print(sorted(sys.modules))",
        "print(sys.flags, sys.path)",
        "print([(r, resource.getrlimit(getattr(resource, r))) for r in sorted(dir(resource)) if r.startswith('RLIMIT_')])",
        "print(os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0), os.umask(0))",
        "print(sorted(os.listdir('/proc/self/fd')), sys.stdin.read())",
      ].join("\n"),
    }],
    args: ["x"],
    stdin: "python stdin",
  },
  c: {
    language: "c",
    files: [{
      name: "main.c",
      content: [
        "#include <stdio.h>",
        "#include <unistd.h>",
        "#include <sys/resource.h>",
        "extern char **environ;",
        "int main(int argc, char **argv) {",
        '  printf("uid %d\\n", (int)getuid());',
        '  for (int i = 0; i < argc; i++) printf("argv %s\\n", argv[i]);',
        '  for (char **e = environ; *e; e++) printf("env %s\\n", *e);',
        "  struct rlimit r; for (int i = 0; i < 16; i++) { getrlimit(i, &r);",
        '    printf("rlimit %d %llu %llu\\n", i, (unsigned long long)r.rlim_cur, (unsigned long long)r.rlim_max); }',
        '  printf("pid %d ppid %d\\n", (int)getpid(), (int)getppid());',
        "  char b[64]; while (fgets(b, sizeof b, stdin)) fputs(b, stdout);",
        "  return 3;",
        "}",
      ].join("\n"),
    }],
    stdin: "c stdin\n",
  },
};

Deno.test({
  name:
    "a pre-warmed sandbox: what a program sees of itself is what it sees cold",
  ignore: skip !== undefined,
  async fn() {
    const cold = await Sandbox.detect({ prewarm: 0 });
    const warm = await Sandbox.detect({ prewarm: 1 });
    try {
      for (const [language, request] of Object.entries(PROGRAMS)) {
        if (!(await registry.resolve(language)).ok) {
          console.log(`conformance: ${language} is not available here`);
          continue;
        }
        const steps = language === "c" ? 2 : 1;
        // The first job of a language only makes the pool ask for it.
        const first = await run(warm, request);
        assert.equal(first.cold, steps, "the first job finds no warm sandbox");
        const hot = await run(warm, request);
        assert.equal(hot.warm, steps, `${language}: every step started warm`);
        assert.equal(hot.cold, 0);
        const baseline = await run(cold, request);
        assert.equal(baseline.warm, 0);
        assert.equal(
          normalized(hot.result, uidOf(hot.result)),
          normalized(baseline.result, uidOf(baseline.result)),
          `${language}: warm and cold differ`,
        );
        assert.equal(
          hot.result.verdict,
          language === "c" ? "runtime_error" : "ok",
        );
        assert.ok(hot.result.timeMs >= 0 && hot.result.cpuTimeMs !== undefined);
      }
    } finally {
      await warm.close();
      await cold.close();
    }
  },
});

Deno.test({
  name:
    "a pre-warmed sandbox: limits hold, and CPU time counts from the program's start",
  ignore: skip !== undefined,
  async fn() {
    const sandbox = await Sandbox.detect({ prewarm: 1 });
    const bash = (content: string): JobRequest => ({
      language: "bash",
      files: [{ name: "main.sh", content }],
    });
    const limits = {
      wallTimeMs: 3000,
      cpuTimeMs: 1500,
      memoryMb: 64,
      outputBytes: 4096,
    };
    try {
      await run(sandbox, bash("true"), limits); // asks for the pool
      const quick = await run(sandbox, bash("true"), limits);
      assert.equal(quick.warm, 1);
      // The stub's own start (bwrap, setpriv, perl) is not the program's.
      const cpu = quick.result.cpuTimeMs;
      if (cpu !== null) {
        assert.ok(cpu < 50, `a bare "true" used ${cpu} ms of CPU`);
      }

      // A busy host may give the loop a fraction of a core: wall time to spare.
      const spin = await run(sandbox, bash("while :; do :; done"), {
        ...limits,
        wallTimeMs: 60_000,
      });
      assert.equal(spin.warm, 1);
      assert.equal(spin.result.verdict, "time_limit", spin.result.reason);
      assert.match(spin.result.reason ?? "", /CPU time limit of 1500 ms/);
      assert.ok(spin.result.cpuTimeMs! >= 1500, `${spin.result.cpuTimeMs}`);

      const sleep = await run(sandbox, bash("sleep 30"), limits);
      assert.equal(sleep.warm, 1);
      assert.equal(sleep.result.verdict, "time_limit");
      assert.match(sleep.result.reason ?? "", /wall time limit of 3000 ms/);

      const loud = await run(sandbox, bash("yes"), limits);
      assert.equal(loud.warm, 1);
      assert.equal(loud.result.verdict, "output_limit");

      const files = await run(sandbox, bash("ulimit -f; ulimit -n"), {
        ...limits,
        fileSizeBytes: 10240,
        openFiles: 33,
      });
      assert.equal(files.warm, 1, "rlimits are applied when the job arrives");
      assert.equal(files.result.stdout, "10\n33\n"); // -f counts KiB
    } finally {
      await sandbox.close();
    }
  },
});

Deno.test({
  name:
    "a pre-warmed sandbox is used once, and a job with other baked-in limits starts cold",
  ignore: skip !== undefined,
  async fn() {
    const sandbox = await Sandbox.detect({ prewarm: 2 });
    const job: JobRequest = {
      language: "bash",
      files: [{
        name: "main.sh",
        content: "cat /tmp/mark ./mark 2>/dev/null || echo fresh; " +
          "echo left > /tmp/mark; echo left > ./mark",
      }],
    };
    try {
      await run(sandbox, job);
      await sandbox.warmSettled();
      assert.equal(sandbox.warmSandboxes, 2);
      for (let i = 0; i < 4; i++) {
        const { result, warm } = await run(sandbox, job);
        assert.equal(warm, 1);
        assert.equal(result.verdict, "ok");
        assert.equal(result.stdout, "fresh\n", "a job found another's files");
      }
      // Memory is baked into a warm sandbox's cgroup: another value is cold.
      const other = await run(sandbox, job, { memoryMb: 100 });
      assert.equal(other.warm, 0);
      assert.equal(other.cold, 1);
      assert.equal(other.result.verdict, "ok");
    } finally {
      await sandbox.close();
    }
  },
});

Deno.test({
  name:
    "a pre-warmed sandbox: a failed compile destroys the waiting run step, and close leaves nothing",
  ignore: skip !== undefined || !(await registry.resolve("c")).ok,
  async fn() {
    const sandbox = await Sandbox.detect({ prewarm: 1 });
    const broken: JobRequest = {
      language: "c",
      files: [{ name: "main.c", content: "int main( {" }],
    };
    const root = await defaultWorkRoot();
    try {
      await run(sandbox, broken);
      const { result, warm } = await run(sandbox, broken);
      assert.equal(result.verdict, "compile_error");
      assert.equal(warm, 1, "the compile step started warm");
      await sandbox.warmSettled();
      assert.equal(sandbox.warmSandboxes, 1);
    } finally {
      await sandbox.close();
    }
    assert.equal(sandbox.warmSandboxes, 0);
    // Nothing of any warm sandbox is left: workdirs, disks, processes; and
    // the work root, with its tmpfs of mount points, went with the last.
    await assert.rejects(Deno.lstat(dirname(root)), Deno.errors.NotFound);
    // Under this root: other test modules in this process keep their own.
    const mounts = (await Deno.readTextFile("/proc/self/mountinfo"))
      .split("\n").filter((line) =>
        line.includes(` kiln-${Deno.pid} `) &&
        line.split(" ")[4]!.startsWith(`${dirname(root)}/`)
      );
    assert.deepEqual(
      mounts,
      [],
      "a job disk, devpts or the work root's tmpfs is still mounted",
    );
    const block = sandbox.uidBlock;
    if (block) {
      const { processesOfUids } = await import("./process_tree.ts");
      assert.deepEqual(await processesOfUids(block), []);
    }
  },
});

Deno.test({
  name:
    "a pre-warmed sandbox that died while it waited is not used: the job starts cold",
  ignore: skip !== undefined,
  async fn() {
    const sandbox = await Sandbox.detect({ prewarm: 1 });
    const job: JobRequest = {
      language: "bash",
      files: [{ name: "main.sh", content: "echo fine" }],
    };
    try {
      await run(sandbox, job);
      await sandbox.warmSettled();
      assert.equal(sandbox.warmSandboxes, 1);
      // Kill every waiting stub from outside, as the OOM killer might.
      const block = sandbox.uidBlock;
      if (block) {
        const { processesOfUids } = await import("./process_tree.ts");
        for (const pid of await processesOfUids(block)) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch {
            // Gone.
          }
        }
      } else return; // rootless: the stubs run as our own uid, not told apart
      // Their bwrap sees them die and exits: then the pool counts none.
      for (let i = 0; i < 200 && sandbox.warmSandboxes > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(sandbox.warmSandboxes, 0, "the dead sandbox still counts");
      const { result, warm, cold } = await run(sandbox, job);
      assert.equal(result.verdict, "ok", result.reason);
      assert.equal(result.stdout, "fine\n");
      assert.deepEqual({ warm, cold }, { warm: 0, cold: 1 });
      // And the pool made a new one.
      const next = await run(sandbox, job);
      assert.equal(next.warm, 1);
    } finally {
      await sandbox.close();
    }
  },
});

Deno.test({
  name:
    "a taken pre-warmed sandbox is made up only once its job has ended, not beside it",
  ignore: skip !== undefined,
  async fn() {
    const sandbox = await Sandbox.detect({ prewarm: 2 });
    const resolved = await registry.resolve("bash");
    assert.ok(resolved.ok);
    const job: JobRequest = {
      language: "bash",
      // Runs until told to end on stdin: the pool is looked at meanwhile.
      files: [{ name: "main.sh", content: "read line; echo got $line" }],
      interactive: true,
    };
    try {
      await run(sandbox, { ...job, interactive: false, stdin: "x\n" });
      await sandbox.warmSettled();
      assert.equal(sandbox.warmSandboxes, 2);
      const input = {
        queue: [] as string[],
        wake: () => {},
        async *[Symbol.asyncIterator]() {
          while (true) {
            while (this.queue.length === 0) {
              await new Promise<void>((resolve) => this.wake = resolve);
            }
            yield this.queue.shift()!;
            return;
          }
        },
      };
      let told = 0;
      const warmBefore = sandbox.stepStarts.warm;
      const running = executeJob(resolved.resolved, job, {
        sandbox,
        input,
        onResult: () => told++,
      });
      // Until the program has started, its sandbox leaves the pool...
      while (sandbox.stepStarts.warm === warmBefore) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await sandbox.warmSettled();
      // ...and no other is made while it runs.
      assert.equal(sandbox.warmSandboxes, 1, "one was made beside the job");
      input.queue.push("done\n");
      input.wake();
      const result = await running;
      assert.equal(result.stdout, "got done\n");
      assert.equal(told, 1, "onResult is called once");
      await sandbox.warmSettled();
      assert.equal(sandbox.warmSandboxes, 2, "not made up after the job");
    } finally {
      await sandbox.close();
    }
  },
});
