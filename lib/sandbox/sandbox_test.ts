import assert from "node:assert/strict";
import { detectCgroups } from "./cgroup.ts";
import {
  Sandbox,
  type SandboxStepOptions,
  SandboxUnavailableError,
} from "./sandbox.ts";

const host = await Sandbox.detect();
const hasLayer = (layer: "namespaces" | "cgroups" | "rlimits") =>
  host.layers.includes(layer);

const LIMITS: SandboxStepOptions["limits"] = {
  wallTimeMs: 10_000,
  cpuTimeMs: 5_000,
  memoryMb: 128,
  processes: 32,
  outputBytes: 64 * 1024,
  fileSizeBytes: 1024 * 1024,
  openFiles: 64,
};

/** Runs `script` with bash in `sandbox`, in a fresh workdir it removes. */
async function runScript(
  sandbox: Sandbox,
  script: string,
  limits: Partial<SandboxStepOptions["limits"]> = {},
) {
  const workdir = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
  try {
    await sandbox.prepareWorkdir(workdir);
    return await sandbox.run({ command: "/bin/bash", args: ["-c", script] }, {
      workdir,
      env: { PATH: "/usr/bin:/bin", HOME: workdir },
      executables: ["/bin/bash"],
      limits: { ...LIMITS, ...limits },
    });
  } finally {
    await sandbox.removeWorkdir(workdir);
  }
}

Deno.test("Sandbox.none() runs programs unisolated and says so", async () => {
  const sandbox = Sandbox.none();
  assert.deepEqual(sandbox.layers, []);
  assert.match(sandbox.warnings.join("\n"), /--sandbox none/);
  const outcome = await runScript(sandbox, "id -u");
  assert.equal(outcome.stdout, `${Deno.uid()}\n`);
  assert.equal(outcome.cpuTimeMs, null);
  assert.equal(outcome.memoryKb, null);
});

Deno.test("--require-sandbox cannot be combined with --sandbox none", async () => {
  await assert.rejects(
    Sandbox.detect({ mode: "none", require: true }),
    SandboxUnavailableError,
  );
});

Deno.test("a missing layer is warned about, and refused when required", async () => {
  const noCgroups = { cgroupRoot: "/nonexistent/kiln-cgroup-root" };
  const sandbox = await Sandbox.detect(noCgroups);
  assert.ok(!sandbox.layers.includes("cgroups"));
  assert.match(sandbox.report.missing.cgroups ?? "", /not mounted/);
  assert.match(
    sandbox.warnings.join("\n"),
    /"cgroups" is missing: .*memory, processes and job-wide CPU time are not limited/,
  );
  await assert.rejects(
    Sandbox.detect({ ...noCgroups, require: true }),
    (error: unknown) =>
      error instanceof SandboxUnavailableError &&
      /--require-sandbox needs the "cgroups" layer/.test(error.message),
  );
});

Deno.test("a missing executable is the node's error, not the program's", async () => {
  const workdir = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
  try {
    await assert.rejects(
      host.run({ command: "/nonexistent/kiln-tool", args: [] }, {
        workdir,
        env: {},
        executables: [],
        limits: LIMITS,
      }),
      /cannot run \/nonexistent\/kiln-tool: no such file/,
    );
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
});

Deno.test({
  name:
    "inside bubblewrap a program runs as a uid of the node's block with its environment only",
  ignore: !hasLayer("namespaces"),
  fn: async () => {
    const outcome = await runScript(host, "id -u; echo $HOME; env | wc -l");
    const [uid, home, count] = outcome.stdout.trim().split("\n");
    const block = host.uidBlock!;
    assert.ok(
      Number(uid) >= block.first && Number(uid) <= block.last,
      `uid ${uid} is not of the block ${block.first}-${block.last}`,
    );
    assert.match(home!, /kiln-sandbox-test-/);
    // PATH, HOME, PWD, SHLVL and `_`, the last three bash's own.
    assert.ok(Number(count) <= 5, outcome.stdout);
  },
});

Deno.test({
  name:
    "inside bubblewrap an exit code that may stand for a signal is reported as ambiguous",
  ignore: !hasLayer("namespaces"),
  fn: async () => {
    // bwrap reports a death by signal n as exit code 128 + n, which a
    // program can choose as well: the two cannot be told apart.
    for (const script of ["kill -SEGV $$", "exit 139"]) {
      const outcome = await runScript(host, script);
      assert.equal(outcome.exitCode, 139, script);
      assert.equal(outcome.signal, null, script);
      assert.equal(outcome.ambiguousSignal, "SIGSEGV", script);
    }
    const exited = await runScript(host, "exit 3");
    assert.equal(exited.exitCode, 3);
    assert.equal(exited.signal, null);
    assert.equal(exited.ambiguousSignal, null);
    // A kill kiln itself made is known to be one.
    const slept = await runScript(host, "exec sleep 60", { wallTimeMs: 200 });
    assert.equal(slept.ending, "time_limit");
    assert.equal(slept.signal, "SIGKILL");
    assert.equal(slept.ambiguousSignal, null);
  },
});

Deno.test({
  name: "the cgroup ends a job at its CPU budget and measures it",
  ignore: !hasLayer("cgroups"),
  fn: async () => {
    const outcome = await runScript(host, "while :; do :; done", {
      cpuTimeMs: 300,
    });
    assert.equal(outcome.ending, "cpu_limit");
    assert.ok(outcome.cpuTimeMs! >= 300, `${outcome.cpuTimeMs} ms`);
    assert.ok(outcome.memoryKb! > 0);
  },
});

Deno.test({
  name:
    "sweepStale() removes the cgroups of dead kiln processes, not live ones",
  ignore: !hasLayer("cgroups"),
  fn: async () => {
    const cgroups = await detectCgroups();
    assert.ok(cgroups.available);
    // A pid that surely belonged to a process that is gone now.
    const dead = new Deno.Command("/bin/true").spawn();
    await dead.status;
    const stale = await cgroups.create(`p${dead.pid}-kiln-test`);
    const ours = await cgroups.create(`p${Deno.pid}-kiln-test`);
    try {
      assert.equal(await host.sweepStale(), 1);
      const left = await cgroups.children();
      assert.ok(!left.includes(stale.name));
      assert.ok(left.includes(ours.name));
    } finally {
      await stale.remove();
      await ours.remove();
    }
  },
});

Deno.test({
  name:
    "a job's workdir comes with a devpts of its pty limit, unmounted with it; a limit of 0 gives no pty",
  ignore: !host.layers.includes("ptys"),
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
    const ourDevpts = async () =>
      (await Deno.readTextFile("/proc/self/mountinfo")).split("\n").filter(
        (line) =>
          line.includes(` - devpts kiln-${Deno.pid} `) && line.includes(root),
      );
    try {
      for (
        const [ptys, error] of [
          [2, "No space left on device"],
          [0, "No such file or directory"],
        ] as const
      ) {
        const workdir = await host.makeWorkdir(root, {
          diskMb: 1,
          diskFiles: 10,
          ptys,
        });
        try {
          assert.equal((await ourDevpts()).length, ptys === 0 ? 0 : 1);
          await host.prepareWorkdir(workdir);
          const outcome = await host.run({
            command: "/bin/bash",
            args: ["-c", "exec 3</dev/ptmx 4</dev/ptmx 5</dev/ptmx"],
          }, {
            workdir,
            env: { PATH: "/usr/bin:/bin" },
            executables: ["/bin/bash"],
            limits: LIMITS,
          });
          assert.match(
            outcome.stderr,
            new RegExp(
              `line 1: /dev/ptmx: ${error}\n$`,
            ),
          );
        } finally {
          await host.removeWorkdir(workdir);
        }
        assert.deepEqual(await ourDevpts(), []);
        assert.deepEqual(await Array.fromAsync(Deno.readDir(root)), []);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

/**
 * Runs `echo` in a fresh workdir of `sandbox` and, before the workdir is
 * removed, leaves a process of the job's uid running outside every
 * cgroup, as no job of the sandbox could: whether the uid's release then
 * looks for processes shows in whether the next job gets the same uid.
 */
async function nextUidAfterSquatter(sandbox: Sandbox) {
  const uidOfJob = async (squat: boolean) => {
    const workdir = await Deno.makeTempDir({ prefix: "kiln-sandbox-test-" });
    let squatter: Deno.ChildProcess | undefined;
    try {
      await sandbox.prepareWorkdir(workdir);
      const outcome = await sandbox.run({ command: "/bin/echo", args: [] }, {
        workdir,
        env: { PATH: "/usr/bin:/bin" },
        executables: ["/bin/echo"],
        limits: LIMITS,
      });
      assert.equal(outcome.exitCode, 0);
      const { uid } = sandbox.identityOf(workdir)!;
      if (squat) {
        squatter = new Deno.Command("/usr/bin/setpriv", {
          args: [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "cat"],
          stdin: "piped",
          stdout: "null",
        }).spawn();
        // Running as the uid before the release could look for it.
        for (let i = 0; i < 400; i++) {
          const status = await Deno.readTextFile(
            `/proc/${squatter.pid}/status`,
          );
          if (/^Uid:\s+(\d+)/m.exec(status)?.[1] === String(uid)) break;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }
      return uid;
    } finally {
      await sandbox.removeWorkdir(workdir);
      await squatter?.stdin.close();
      await squatter?.status;
    }
  };
  try {
    return { first: await uidOfJob(true), next: await uidOfJob(false) };
  } finally {
    await sandbox.close();
  }
}

Deno.test({
  name:
    "a job whose steps' cgroups were all removed gives its uid back without a walk of /proc",
  ignore: !hasLayer("namespaces") || !hasLayer("cgroups"),
  fn: async () => {
    const { first, next } = await nextUidAfterSquatter(await Sandbox.detect());
    // The squatter was not looked for: no job's process can be outside
    // its cgroup, and a removed cgroup held none.
    assert.equal(next, first);
  },
});

Deno.test({
  name:
    "without cgroups a job's uid is looked for in /proc before it is given back",
  ignore: !hasLayer("namespaces"),
  fn: async () => {
    const sandbox = await Sandbox.detect({
      cgroupRoot: "/nonexistent/kiln-cgroup-root",
    });
    assert.ok(!sandbox.layers.includes("cgroups"));
    const { first, next } = await nextUidAfterSquatter(sandbox);
    // Found, so never leased again.
    assert.notEqual(next, first);
  },
});
