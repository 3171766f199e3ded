import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { processesWithArg, processMarker } from "../tests/_processes.ts";
import { effectiveLimits, executeJob } from "./executor.ts";
import { defaultSandbox } from "./sandbox/sandbox.ts";
import { DEFAULT_LIMITS, type JobRequest } from "./job.ts";
import type { ResolvedRunner } from "./runners/registry.ts";
import { Sandbox } from "./sandbox/sandbox.ts";
import { defaultWorkRoot, removeWorkRoot } from "./sandbox/work_root.ts";
import type {
  CommandSpec,
  LanguageRunner,
  StepContext,
} from "./runners/runner.ts";

/**
 * A runner made only for these tests, so the executor is tested without
 * depending on any real language runner: the "program" is a bash script,
 * and an optional "compile step" is another script.
 */
function scriptRunner(compile?: string): ResolvedRunner {
  const runner: LanguageRunner = {
    name: "script",
    aliases: [],
    extensions: [".sh"],
    detect: () =>
      Promise.resolve({
        available: true,
        version: "bash",
        executables: { bash: "/bin/bash" },
      }),
    run: (ctx: StepContext): CommandSpec => ({
      command: "/bin/bash",
      args: [ctx.entry, ...ctx.args],
    }),
    ...compile === undefined ? {} : {
      compile: (): CommandSpec => ({
        command: "/bin/bash",
        args: ["-c", compile],
      }),
    },
  };
  return {
    runner,
    toolchain: {
      available: true,
      version: "bash",
      executables: { bash: "/bin/bash" },
    },
  };
}

/**
 * What the process-tree tests run under: the strongest sandbox this host
 * has, where the pid namespace and the cgroup also kill, and none at all,
 * where the launcher's own process-tree kill is all there is.
 */
const SANDBOXES = [
  ["the default sandbox", undefined],
  ["no sandbox", Sandbox.none()],
] as const;

function job(script: string, extra: Partial<JobRequest> = {}): JobRequest {
  return {
    language: "script",
    files: [{ name: "main.sh", content: script }],
    ...extra,
  };
}

/** A fresh directory to hold job workdirs, so a test can see that none is left. */
async function withWorkRoot(
  test: (workRoot: string) => Promise<void>,
): Promise<void> {
  const workRoot = await Deno.makeTempDir({ prefix: "kiln-test-" });
  try {
    await test(workRoot);
    assert.deepEqual(
      await Array.fromAsync(Deno.readDir(workRoot)),
      [],
      "a job workdir was left behind",
    );
  } finally {
    await Deno.remove(workRoot, { recursive: true });
  }
}

Deno.test("executeJob() runs a program with stdin and args, in a workdir it removes", async () => {
  await withWorkRoot(async (workRoot) => {
    const result = await executeJob(
      scriptRunner(),
      job(
        'read -r line; echo "got $line"; printf "%s|" "$@"; echo; echo oops >&2; pwd',
        {
          stdin: "hello\n",
          args: ["a b", "c"],
        },
      ),
      { workRoot, jobId: "j1", nodeName: "n1" },
    );
    assert.equal(result.verdict, "ok");
    assert.equal(result.jobId, "j1");
    assert.equal(result.node, "n1");
    assert.equal(result.exitCode, 0);
    assert.equal(result.compile, null);
    const [got, args, workdir] = result.stdout.split("\n");
    assert.equal(got, "got hello");
    assert.equal(args, "a b|c|");
    assert.ok(workdir!.startsWith(`${workRoot}/kiln-job-`), workdir);
    assert.equal(result.stderr, "oops\n");
    assert.equal(result.truncated, false);
  });
});

Deno.test("executeJob() makes a job's mount points on the work root's tmpfs where the disk layer works, and its workdir in the jobs directory otherwise", async () => {
  const withoutDisk = await Sandbox.detect({ without: ["disk"] });
  try {
    for (
      const sandbox of [await defaultSandbox(), withoutDisk, Sandbox.none()]
    ) {
      const result = await executeJob(scriptRunner(), job("pwd"), { sandbox });
      assert.equal(result.verdict, "ok", result.reason);
      const jobs = await defaultWorkRoot();
      const mounts = join(dirname(jobs), "mounts");
      const tmpfs = (await Deno.readTextFile("/proc/self/mountinfo"))
        .split("\n").some((line) =>
          line.split(" ")[4] === mounts &&
          line.includes(` - tmpfs kiln-${Deno.pid} `)
        );
      const label = `${sandbox.report.mode}, ${sandbox.layers}`;
      if (sandbox.layers.includes("disk")) {
        assert.ok(tmpfs, `${label}: ${mounts} is not a tmpfs`);
        assert.match(result.stdout, /\/mounts\/kiln-job-[^/]+\/work\n$/);
        assert.ok(result.stdout.startsWith(`${mounts}/`), label);
        assert.deepEqual(await Array.fromAsync(Deno.readDir(mounts)), []);
      } else {
        assert.match(result.stdout, /\/jobs\/kiln-job-[^/]+\n$/, label);
        assert.ok(result.stdout.startsWith(`${jobs}/`), label);
      }
    }
  } finally {
    await withoutDisk.close();
    await removeWorkRoot();
  }
});

Deno.test("executeJob() gives the program a cleared environment", async () => {
  Deno.env.set("KILN_TEST_SECRET", "do-not-leak");
  try {
    const result = await executeJob(scriptRunner(), job("env | sort"));
    assert.equal(result.verdict, "ok");
    assert.doesNotMatch(result.stdout, /KILN_TEST_SECRET/);
    assert.match(result.stdout, /^PATH=\/usr\/local\/bin:\/usr\/bin:\/bin$/m);
  } finally {
    Deno.env.delete("KILN_TEST_SECRET");
  }
});

Deno.test("executeJob() reports a non-zero exit and a fatal signal as runtime_error", async () => {
  const exited = await executeJob(scriptRunner(), job("exit 3"));
  assert.equal(exited.verdict, "runtime_error");
  assert.equal(exited.exitCode, 3);
  assert.equal(exited.signal, null);

  const killed = await executeJob(scriptRunner(), job("kill -SEGV $$"));
  assert.equal(killed.verdict, "runtime_error");
  assert.match(killed.reason ?? "", /SIGSEGV/);
  if ((await defaultSandbox()).layers.includes("namespaces")) {
    // bwrap reports the signal as 139, exactly as `exit 139` (see below).
    assert.equal(killed.exitCode, 139);
    assert.equal(killed.signal, null);
  } else {
    assert.equal(killed.exitCode, null);
    assert.equal(killed.signal, "SIGSEGV");
  }

  const unsandboxed = await executeJob(scriptRunner(), job("kill -SEGV $$"), {
    sandbox: Sandbox.none(),
  });
  assert.equal(unsandboxed.exitCode, null);
  assert.equal(unsandboxed.signal, "SIGSEGV");
  assert.equal(unsandboxed.reason, "killed by SIGSEGV");
});

Deno.test("executeJob() never takes a limit verdict from an exit code the program chose", async (t) => {
  for (const [name, sandbox] of SANDBOXES) {
    await t.step(name, async () => {
      const run = (script: string) =>
        executeJob(scriptRunner(), job(script), {
          limits: { cpuTimeMs: 2000, fileSizeBytes: 4096 },
          ...sandbox ? { sandbox } : {},
        });
      // 152 = 128 + SIGXCPU, 153 = 128 + SIGXFSZ, 137 = 128 + SIGKILL: what
      // bwrap reports for those signals, chosen here by a program that
      // used no CPU time, wrote no file and was killed by nobody.
      for (const code of [152, 153, 137]) {
        const result = await run(`exit ${code}`);
        assert.equal(result.verdict, "runtime_error", JSON.stringify(result));
        assert.equal(result.exitCode, code);
        assert.equal(result.signal, null);
        assert.match(
          result.reason ?? "",
          new RegExp(`^exited with code ${code}`),
        );
        assert.doesNotMatch(result.reason ?? "", /CPU time limit/);
      }
      const segv = await run("exit 139");
      assert.equal(segv.verdict, "runtime_error");
      assert.equal(segv.exitCode, 139);
      assert.equal(segv.signal, null);
    });
  }
});

Deno.test({
  name:
    "executeJob() still gives the CPU limit its verdict when the program spins past it",
  ignore: !(await defaultSandbox()).layers.includes("cgroups"),
  fn: async () => {
    const result = await executeJob(
      scriptRunner(),
      job("while :; do :; done"),
      {
        limits: { cpuTimeMs: 300 },
      },
    );
    assert.equal(result.verdict, "time_limit", JSON.stringify(result));
    assert.match(result.reason ?? "", /CPU time limit of 300 ms/);
    assert.ok(result.cpuTimeMs! >= 300);
  },
});

Deno.test("executeJob() kills the whole process tree at the time limit", async (t) => {
  for (const [name, sandbox] of SANDBOXES) {
    await t.step(name, async () => {
      await withWorkRoot(async (workRoot) => {
        const mark = processMarker();
        const chunks: string[] = [];
        const result = await executeJob(
          scriptRunner(),
          // A child in the job's process group, and one that left it with setsid.
          job(
            `(exec -a "$1" sleep 300) &
setsid bash -c 'exec -a "$0" sleep 300' "$1" &
echo started; wait`,
            { args: [mark] },
          ),
          {
            workRoot,
            limits: { wallTimeMs: 500 },
            onOutput: (_stream, data) => chunks.push(data),
            ...sandbox ? { sandbox } : {},
          },
        );
        assert.equal(result.verdict, "time_limit");
        assert.match(result.reason ?? "", /wall time limit of 500 ms/);
        assert.equal(result.stdout, "started\n");
        assert.deepEqual(
          await processesWithArg(mark),
          [],
          "a process of the job survived it",
        );
        assert.equal(
          chunks.join(""),
          result.stdout,
          "output was streamed as it was produced",
        );
      });
    });
  }
});

Deno.test("executeJob() kills what a program left running after it exited", async (t) => {
  for (const [name, sandbox] of SANDBOXES) {
    await t.step(name, async () => {
      const mark = processMarker();
      const result = await executeJob(
        scriptRunner(),
        job(`(exec -a "$1" sleep 300) & echo started`, { args: [mark] }),
        sandbox ? { sandbox } : {},
      );
      assert.equal(result.verdict, "ok");
      assert.equal(result.stdout, "started\n");
      assert.deepEqual(await processesWithArg(mark), []);
    });
  }
});

Deno.test("executeJob() caps output while it streams and stops the program", async () => {
  const streamed: string[] = [];
  const result = await executeJob(scriptRunner(), job("yes 'é kiln'"), {
    limits: { outputBytes: 100_000 },
    onOutput: (_stream, data) => streamed.push(data),
  });
  assert.equal(result.verdict, "output_limit");
  assert.equal(result.truncated, true);
  assert.match(result.reason ?? "", /100000 bytes/);
  assert.ok(new TextEncoder().encode(result.stdout).byteLength <= 100_000);
  assert.ok(result.stdout.startsWith("é kiln\né kiln\n"));
  assert.equal(streamed.join(""), result.stdout);
});

Deno.test("executeJob() keeps output exactly at the limit whole", async () => {
  const result = await executeJob(
    scriptRunner(),
    job("head -c 1000 /dev/zero | tr '\\0' x"),
    {
      limits: { outputBytes: 1000 },
    },
  );
  assert.equal(result.verdict, "ok");
  assert.equal(result.truncated, false);
  assert.equal(result.stdout, "x".repeat(1000));
});

Deno.test("executeJob() feeds large stdin while reading output", async () => {
  const input = "0123456789abcdef\n".repeat(64 * 1024); // 1 MiB, more than a pipe holds
  const result = await executeJob(scriptRunner(), job("cat"), {
    limits: { outputBytes: 2 * 1024 * 1024 },
  });
  assert.equal(result.stdout, "");
  const echoed = await executeJob(
    scriptRunner(),
    job("cat", { stdin: input }),
    {
      limits: { outputBytes: 2 * 1024 * 1024 },
    },
  );
  assert.equal(echoed.verdict, "ok");
  assert.equal(echoed.stdout.length, input.length);
  assert.equal(echoed.stdout, input);
});

Deno.test("executeJob() survives a program that ignores its stdin", async () => {
  const result = await executeJob(
    scriptRunner(),
    job("exit 0", { stdin: "x".repeat(1024 * 1024) }),
  );
  assert.equal(result.verdict, "ok");
});

Deno.test("executeJob() stops at a failed compile step with the compiler's output", async () => {
  const result = await executeJob(
    scriptRunner("echo 'main.sh:1: syntax error' >&2; exit 1"),
    job("echo never runs"),
  );
  assert.equal(result.verdict, "compile_error");
  assert.equal(result.exitCode, null);
  assert.equal(result.stdout, "");
  assert.equal(result.compile?.verdict, "compile_error");
  assert.equal(result.compile?.exitCode, 1);
  assert.equal(result.compile?.stderr, "main.sh:1: syntax error\n");
});

Deno.test("executeJob() runs the program after a successful compile step", async () => {
  const result = await executeJob(
    scriptRunner("echo built > artifact"),
    job("cat artifact"),
  );
  assert.equal(result.verdict, "ok");
  assert.equal(result.compile?.verdict, "ok");
  assert.equal(result.stdout, "built\n");
});

Deno.test("executeJob() limits the compile step by its own time limit", async () => {
  const result = await executeJob(scriptRunner("sleep 300"), job("true"), {
    limits: { compileWallTimeMs: 300 },
  });
  assert.equal(result.verdict, "time_limit");
  assert.equal(result.compile?.verdict, "time_limit");
  assert.match(
    result.reason ?? "",
    /compile step exceeded its wall time limit of 300 ms/,
  );
});

Deno.test("executeJob() ends a cancelled job as internal_error with the reason", async () => {
  const abort = new AbortController();
  const started = Promise.withResolvers<void>();
  const running = executeJob(scriptRunner(), job("echo up; sleep 300"), {
    signal: abort.signal,
    onOutput: () => started.resolve(),
  });
  await started.promise;
  abort.abort("the client disconnected");
  const result = await running;
  assert.equal(result.verdict, "internal_error");
  assert.equal(result.reason, "cancelled: the client disconnected");
});

Deno.test("executeJob() turns a missing executable into internal_error, leaving nothing behind", async () => {
  await withWorkRoot(async (workRoot) => {
    const broken: ResolvedRunner = {
      ...scriptRunner(),
      runner: {
        ...scriptRunner().runner,
        run: () => ({ command: "/nonexistent/kiln-interpreter", args: [] }),
      },
    };
    const result = await executeJob(broken, job("true"), { workRoot });
    assert.equal(result.verdict, "internal_error");
    assert.match(result.reason ?? "", /^cannot run job: .*nonexistent/);
  });
});

Deno.test("effectiveLimits() lets a request lower limits, never raise them", () => {
  assert.deepEqual(effectiveLimits(), DEFAULT_LIMITS);
  const node = { wallTimeMs: 5000, outputBytes: 4096 };
  assert.deepEqual(
    effectiveLimits(node, { wallTimeMs: 100, outputBytes: 1_000_000 }),
    {
      ...DEFAULT_LIMITS,
      wallTimeMs: 100,
      outputBytes: 4096,
    },
  );
});

Deno.test("executeJob() returns on time when an escaped process holds stdin and stdout", async () => {
  // `setsid` plus a subshell: the sleep leaves the process group and loses
  // its parent, the one case the kill cannot reach without the sandbox, so
  // this runs without one.
  const mark = processMarker();
  try {
    const result = await executeJob(
      scriptRunner(),
      job(`(setsid bash -c 'exec -a "$0" sleep 30' "$1" <&0 &)`, {
        stdin: "x".repeat(1024 * 1024),
        args: [mark],
      }),
      { limits: { wallTimeMs: 5000 }, sandbox: Sandbox.none() },
    );
    assert.equal(result.verdict, "ok");
  } finally {
    for (const pid of await processesWithArg(mark)) {
      Deno.kill(pid, "SIGKILL");
    }
  }
});

Deno.test("executeJob() says when a request asked for more than the node allows", async () => {
  const result = await executeJob(scriptRunner(), job("echo fine"), {
    limits: { memoryMb: 256, wallTimeMs: 5000 },
  });
  assert.equal(result.verdict, "ok");
  assert.equal(result.reason, undefined, "nothing was asked: nothing to say");

  const asking = await executeJob(
    scriptRunner(),
    job("echo fine", { limits: { memoryMb: 4096, wallTimeMs: 1000 } }),
    { limits: { memoryMb: 256, wallTimeMs: 5000 } },
  );
  assert.equal(asking.verdict, "ok");
  assert.equal(
    asking.reason,
    "the request asked for more than this node's maximum: memoryMb 4096 lowered to 256",
  );
});

Deno.test({
  name: "executeJob() gives the compile step its own memory limit",
  ignore: !(await defaultSandbox()).layers.includes("cgroups"),
  fn: async () => {
    // The "compiler" needs 200 MiB, the program is limited to 64 MiB.
    const grow =
      "exec python3 -c 'b = bytearray(200 << 20); b[::4096] = b\"x\" * len(b[::4096])'";
    const limits = { memoryMb: 64, compileMemoryMb: 512 };
    const compiled = await executeJob(scriptRunner(grow), job("echo ran"), {
      limits,
    });
    assert.equal(compiled.verdict, "ok", compiled.reason);
    assert.ok(compiled.compile!.memoryKb! > 200 * 1024);

    const tight = await executeJob(scriptRunner(grow), job("echo ran"), {
      limits: { ...limits, compileMemoryMb: 64 },
    });
    assert.equal(tight.verdict, "memory_limit");
    assert.match(
      tight.reason ?? "",
      /^compile step exceeded its memory limit of 64 MiB/,
    );
  },
});

Deno.test("executeJob() rejects a file name that leaves the workdir, writing nothing", async () => {
  const root = await Deno.makeTempDir({ prefix: "kiln-test-" });
  try {
    const workRoot = `${root}/jobs`;
    await Deno.mkdir(workRoot);
    const result = await executeJob(
      scriptRunner(),
      {
        language: "script",
        files: [
          { name: "main.sh", content: "echo hi" },
          { name: "../../escaped.txt", content: "out" },
        ],
      },
      { workRoot },
    );
    assert.equal(result.verdict, "rejected");
    assert.match(result.reason ?? "", /^invalid job: .*path separator/s);
    const names = async (dir: string) =>
      (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name);
    assert.deepEqual(await names(root), ["jobs"]);
    assert.deepEqual(await names(workRoot), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("executeJob() checks its request as the protocol does, and its language", async () => {
  const overLimit = await executeJob(
    scriptRunner(),
    job("echo hi", { limits: { wallTimeMs: 2 ** 31 } }),
  );
  assert.equal(overLimit.verdict, "rejected");
  assert.match(overLimit.reason ?? "", /wallTimeMs must be at most 86400000/);

  const wrongLanguage = await executeJob(scriptRunner(), {
    ...job("echo hi"),
    language: "java",
  });
  assert.equal(wrongLanguage.verdict, "rejected");
  assert.equal(
    wrongLanguage.reason,
    'the job is for language "java", but it was given to the runner of "script"',
  );
  // Its name, an alias or an extension, as the registry resolves them.
  for (const language of ["SCRIPT", "sh", ".sh"]) {
    const result = await executeJob(scriptRunner(), {
      ...job("echo hi"),
      language,
    });
    assert.equal(result.verdict, "ok", `${language}: ${result.reason}`);
  }

  const badNode = await executeJob(scriptRunner(), job("echo hi"), {
    limits: { wallTimeMs: 2 ** 31 },
  });
  assert.equal(badNode.verdict, "internal_error");
  assert.equal(
    badNode.reason,
    "Cannot use the node's limits: wallTimeMs must be at most 86400000",
  );
});

Deno.test("executeJob() never writes a file name a runner made outside the workdir", async () => {
  await withWorkRoot(async (workRoot) => {
    const renaming: ResolvedRunner = {
      ...scriptRunner(),
      runner: {
        ...scriptRunner().runner,
        arrange: (files) => ({
          files: files.map((f) => ({ ...f, name: `../${f.name}` })),
          entry: "../main.sh",
        }),
      },
    };
    const result = await executeJob(renaming, job("echo hi"), { workRoot });
    assert.equal(result.verdict, "internal_error");
    assert.match(result.reason ?? "", /made the file name "..\/main.sh"/);
    await assert.rejects(Deno.stat(`${workRoot}/main.sh`));
  });
});

Deno.test("executeJob() tells the result before its cleanup, then resolves with it once nothing is left", async (t) => {
  for (const [name, sandbox] of SANDBOXES) {
    await t.step(name, async () => {
      await withWorkRoot(async (workRoot) => {
        const mark = processMarker();
        const told: { workdirThere: boolean; result: unknown }[] = [];
        const result = await executeJob(
          scriptRunner(),
          // A leftover process, so there is something to clean up.
          job(`(exec -a "$1" sleep 300) & pwd`, { args: [mark] }),
          {
            workRoot,
            ...sandbox ? { sandbox } : {},
            onResult: (early) => {
              told.push({
                // The job's workdir (its cwd) is still there to remove.
                workdirThere: (() => {
                  try {
                    return Deno.statSync(early.stdout.trim()).isDirectory;
                  } catch {
                    return false;
                  }
                })(),
                result: early,
              });
            },
          },
        );
        assert.equal(result.verdict, "ok", result.reason);
        assert.equal(told.length, 1, "onResult is called once");
        assert.equal(told[0]!.result, result, "with the result resolved");
        assert.ok(told[0]!.workdirThere, "the result came after the cleanup");
        assert.throws(() => Deno.statSync(result.stdout.trim()));
        assert.deepEqual(await processesWithArg(mark), []);
      });
    });
  }
});
