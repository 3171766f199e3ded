import assert from "node:assert/strict";
import {
  CGROUP_ENTER_FAILED,
  type CgroupDirectories,
  detectCgroups,
  type JobCgroup,
  NODE_LEAF,
} from "./cgroup.ts";
import type { LogRecord } from "@logtape/logtape";
import { captureLogs } from "../_log_testing.ts";
import { isProcessAlive } from "./process_tree.ts";

const PYTHON = "/usr/bin/python3";
const MIB = 1024 * 1024;

/** Allocates and touches 100 MiB (`b"x" * n` writes every byte). */
const ALLOCATE_100_MIB = "b = b'x' * (100 * 1024 * 1024); print(len(b))";

/**
 * Forks 200 times; children block forever on a pipe. Prints how many forks
 * succeeded and failed, then blocks too.
 */
const FORK_BOMB = `
import os
r, w = os.pipe()
ok = failed = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    ok += 1
print(ok, failed, flush=True)
os.read(r, 1)
`;

/**
 * Starts three grandchildren that escape: their own session, their parent
 * gone. Prints their pids, then blocks forever like them.
 */
const ESCAPE = `
import os
r, w = os.pipe()
pids = []
for _ in range(3):
    rr, ww = os.pipe()
    child = os.fork()
    if child == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.read(r, 1)
            os._exit(0)
        os.write(ww, str(pid).encode())
        os._exit(0)
    os.close(ww)
    pids.append(int(os.read(rr, 32)))
    os.waitpid(child, 0)
print(*pids, flush=True)
os.read(r, 1)
`;

/** Uses CPU for 300 ms, then prints the CPU seconds this process used. */
const BUSY_LOOP = `
import time
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
print(time.process_time())
`;

/** Reads a child's output line by line, and the rest to its end. */
class Lines {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  async next(): Promise<string> {
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`No line in output: "${this.#buffer}"`);
      this.#buffer += value;
    }
    const end = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, end);
    this.#buffer = this.#buffer.slice(end + 1);
    return line;
  }

  async rest(): Promise<string> {
    for (;;) {
      const { value, done } = await this.#reader.read();
      if (done) return this.#buffer;
      this.#buffer += value;
    }
  }
}

/** Spawns `command` in `cgroup`, with its stdout piped and its stderr kept. */
function spawnIn(cgroup: JobCgroup, command: string[]): Deno.ChildProcess {
  const [program, ...args] = [...cgroup.enterPrefix(), ...command];
  return new Deno.Command(program!, {
    args,
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Runs `command` in `cgroup` to its end. */
async function runIn(
  cgroup: JobCgroup,
  command: string[],
): Promise<{ status: Deno.CommandStatus; stdout: string }> {
  const child = spawnIn(cgroup, command);
  const [status, stdout] = await Promise.all([
    child.status,
    new Lines(child.stdout).rest(),
  ]);
  return { status, stdout };
}

async function isGone(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}

Deno.test("cgroup v1 on this machine", async (t) => {
  // A parent of our own, so that nothing here meets a real node's jobs.
  const detected = await detectCgroups({ parent: `kiln-test-${Deno.pid}` });
  if (!detected.available) {
    // deno-lint-ignore no-console
    console.log(`skipped: cgroups unavailable: ${detected.reason}`);
    return;
  }
  if (detected.version !== 1) {
    // deno-lint-ignore no-console
    console.log(`skipped: this host has cgroup v${detected.version}, not v1`);
    return;
  }
  const backend = detected;
  try {
    assert.deepEqual(backend.controllers, ["memory", "pids", "cpuacct"]);

    await t.step(
      "a process entering with enterPrefix() is in every hierarchy, with its pid and arguments",
      async () => {
        await using cgroup = await backend.create("enter");
        assert.deepEqual(cgroup.paths.length, 3);
        const child = spawnIn(cgroup, [
          "/bin/sh",
          "-c",
          "echo $$; exec sleep 600",
        ]);
        const lines = new Lines(child.stdout);
        const pid = Number(await lines.next());
        // The prefix shell exec'd the command: the pid we spawned is the program's.
        assert.deepEqual(pid, child.pid);
        for (const path of cgroup.paths) {
          const procs = await Deno.readTextFile(`${path}/cgroup.procs`);
          assert.ok(
            procs.split("\n").includes(String(pid)),
            `${pid} not in ${path}: ${JSON.stringify(procs)}`,
          );
        }
        assert.deepEqual(await cgroup.processes(), [pid]);
        await cgroup.killAll();
        assert.deepEqual((await child.status).signal, "SIGKILL");
        assert.deepEqual(await lines.rest(), "");
        assert.deepEqual(await cgroup.processes(), []);

        const args = ["%s|", "a b", "$(echo no)", "'\"`;", "--", "", "x\ny"];
        const { status, stdout } = await runIn(cgroup, [
          "/usr/bin/printf",
          ...args,
        ]);
        assert.ok(status.success);
        assert.deepEqual(stdout, "a b|$(echo no)|'\"`;|--||x\ny|");
      },
    );

    await t.step(
      "signalAll() kills every process in it at once, without waiting for them",
      async () => {
        await using cgroup = await backend.create("signal");
        const child = spawnIn(cgroup, [
          "/bin/sh",
          "-c",
          "sleep 600 & echo $!; exec sleep 600",
        ]);
        const lines = new Lines(child.stdout);
        const orphan = Number(await lines.next());
        cgroup.signalAll();
        assert.deepEqual((await child.status).signal, "SIGKILL");
        // The background sleep got it too: the cgroup empties by itself.
        for (let i = 0; i < 100 && (await cgroup.processes()).length; i++) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        assert.deepEqual(await cgroup.processes(), []);
        // Dead: gone, or a zombie where this container's init reaps none.
        let state = "gone";
        try {
          state = Deno.readTextFileSync(`/proc/${orphan}/stat`)
            .replace(/^.*\) /s, "")[0]!;
        } catch {
          // Reaped.
        }
        assert.ok(state === "gone" || state === "Z", `the orphan is ${state}`);
        await lines.rest();
      },
    );

    await t.step(
      "peak memory of a program touching 100 MiB is within 20 %",
      async () => {
        await using cgroup = await backend.create("peak", {
          memoryBytes: 512 * MIB,
        });
        const { status, stdout } = await runIn(cgroup, [
          PYTHON,
          "-c",
          ALLOCATE_100_MIB,
        ]);
        assert.ok(status.success);
        assert.deepEqual(stdout, `${100 * MIB}\n`);
        const usage = await cgroup.usage();
        assert.deepEqual(usage.peakMemorySource, "memory.max_usage_in_bytes");
        assert.ok(usage.peakMemoryKb !== null);
        const ratio = usage.peakMemoryKb / (100 * 1024);
        assert.ok(
          ratio >= 0.8 && ratio <= 1.2,
          `peak ${usage.peakMemoryKb} KiB is not within 20 % of 100 MiB`,
        );
        assert.deepEqual(usage.oomKilled, false);
      },
    );

    await t.step(
      "the same program under a 50 MiB limit is OOM-killed",
      async () => {
        await using cgroup = await backend.create("oom", {
          memoryBytes: 50 * MIB,
        });
        const { status, stdout } = await runIn(cgroup, [
          PYTHON,
          "-c",
          ALLOCATE_100_MIB,
        ]);
        assert.deepEqual(status.signal, "SIGKILL");
        assert.deepEqual(stdout, "");
        const usage = await cgroup.usage();
        assert.ok(usage.oomKilled);
        // No swap escape: the peak never passed the limit.
        assert.ok(
          usage.peakMemoryKb !== null && usage.peakMemoryKb <= 50 * 1024,
        );
      },
    );

    await t.step(
      "a fork bomb cannot exceed pids 50, and killAll() leaves none",
      async () => {
        await using cgroup = await backend.create("forks", { pids: 50 });
        const child = spawnIn(cgroup, [PYTHON, "-c", FORK_BOMB]);
        const lines = new Lines(child.stdout);
        const [ok = NaN, failed = NaN] = (await lines.next()).split(" ").map(
          Number,
        );
        // The program itself is one of the 50.
        assert.ok(ok <= 49 && failed > 0, `${ok} forks, ${failed} failed`);
        assert.equal(ok + failed, 200);
        const pids = await cgroup.processes();
        assert.equal(pids.length, ok + 1);
        assert.ok(pids.length <= 50);
        await cgroup.killAll();
        assert.deepEqual(await cgroup.processes(), []);
        for (const pid of pids) {
          assert.ok(!(await isProcessAlive(pid)), `${pid} lives`);
        }
        assert.deepEqual((await child.status).signal, "SIGKILL");
        assert.deepEqual(await lines.rest(), "");
      },
    );

    await t.step("CPU time of a busy loop is measured", async () => {
      await using cgroup = await backend.create("cpu");
      const started = performance.now();
      const { status, stdout } = await runIn(cgroup, [PYTHON, "-c", BUSY_LOOP]);
      const wallMs = performance.now() - started;
      assert.ok(status.success);
      const ownMs = Number(stdout) * 1000;
      const { cpuTimeMs } = await cgroup.usage();
      assert.ok(cpuTimeMs !== null);
      // At least what the program counted itself; at most all CPUs all the time.
      assert.ok(cpuTimeMs >= ownMs * 0.95, `${cpuTimeMs} ms < ${ownMs} ms`);
      assert.ok(cpuTimeMs <= wallMs * navigator.hardwareConcurrency + 10);
    });

    await t.step(
      "remove() kills escaped processes and deletes every directory",
      async () => {
        const cgroup = await backend.create("remove", { pids: 20 });
        try {
          const child = spawnIn(cgroup, [PYTHON, "-c", ESCAPE]);
          const lines = new Lines(child.stdout);
          const escaped = (await lines.next()).split(" ").map(Number);
          assert.deepEqual(escaped.length, 3);
          for (const pid of escaped) assert.ok(await isProcessAlive(pid));
          await cgroup.remove();
          for (const path of cgroup.paths) {
            assert.ok(await isGone(path), `${path} left`);
          }
          for (const pid of escaped) {
            assert.ok(!(await isProcessAlive(pid)), `${pid} lives`);
          }
          assert.deepEqual((await child.status).signal, "SIGKILL");
          assert.deepEqual(await lines.rest(), "");
          // Idempotent, and reads nothing any more.
          await cgroup.remove();
          assert.deepEqual((await cgroup.usage()).peakMemoryKb, null);
        } finally {
          await cgroup.remove();
        }
      },
    );

    await t.step("a process cannot enter a removed cgroup", async () => {
      const cgroup = await backend.create("removed");
      await cgroup.remove();
      const [command, ...args] = [...cgroup.enterPrefix(), "/bin/echo", "no"];
      const { code, stdout, stderr } = await new Deno.Command(command!, {
        args,
        stdin: "null",
      }).output();
      assert.equal(code, CGROUP_ENTER_FAILED);
      assert.equal(stdout.length, 0);
      assert.match(
        new TextDecoder().decode(stderr),
        /kiln: cannot enter cgroup .*\/removed\/cgroup.procs/,
      );
    });

    await t.step(
      "bad names, bad limits and duplicates are rejected",
      async () => {
        for (const name of ["", ".", "..", "../x", "a/b", ".hidden", "a b"]) {
          await assert.rejects(() => backend.create(name), TypeError);
        }
        await assert.rejects(
          () => backend.create("zero", { pids: 0 }),
          RangeError,
        );
        await assert.rejects(
          () => backend.create("half", { memoryBytes: 1.5 }),
          RangeError,
        );
        await using _cgroup = await backend.create("twice");
        await assert.rejects(
          () => backend.create("twice"),
          Deno.errors.AlreadyExists,
        );
      },
    );
  } finally {
    await backend.removeParent();
  }
  for (const parent of backend.parentPaths) {
    assert.ok(await isGone(parent), `${parent} left behind`);
  }
});

/** Interface files of a fresh v2 cgroup, as the kernel lays them out. */
function v2Files(
  controllers: string,
  options: FakeOptions,
): Record<string, string> {
  return {
    "cgroup.controllers": controllers,
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
    "cgroup.kill": "",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "memory.current": "0\n",
    ...options.memoryPeak === false ? {} : { "memory.peak": "0\n" },
    "memory.max": "max\n",
    "memory.swap.max": "max\n",
    "memory.oom.group": "0\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    "pids.max": "max\n",
  };
}

interface FakeOptions {
  /** Whether the kernel has `memory.peak` (Linux 5.19). @default true */
  readonly memoryPeak?: boolean;
}

/**
 * A temporary directory laid out as a cgroup v2 filesystem, and directory
 * operations that behave like the kernel's: `mkdir` creates the interface
 * files (`cgroup.controllers` from the parent's `cgroup.subtree_control`),
 * `rmdir` refuses while processes or child cgroups remain and otherwise
 * takes the files with it, and a probe process leaves `cgroup.procs` when
 * it exits.
 */
async function fakeCgroupfs(
  rootControllers: string,
  options: FakeOptions = {},
): Promise<{ root: string; directories: CgroupDirectories } & AsyncDisposable> {
  const root = await Deno.makeTempDir({ prefix: "kiln-fake-cgroupfs-" });
  const populate = async (dir: string, controllers: string) => {
    for (
      const [file, content] of Object.entries(v2Files(controllers, options))
    ) {
      await Deno.writeTextFile(`${dir}/${file}`, content);
    }
  };
  await populate(root, rootControllers);
  const directories: CgroupDirectories = {
    async mkdir(path) {
      await Deno.mkdir(path);
      const parent = path.slice(0, path.lastIndexOf("/"));
      const enabled = await Deno.readTextFile(
        `${parent}/cgroup.subtree_control`,
      );
      await populate(path, enabled.replaceAll("+", ""));
    },
    async rmdir(path) {
      if ((await Deno.readTextFile(`${path}/cgroup.procs`)).trim() !== "") {
        throw new Deno.errors.Busy(`${path} holds processes`);
      }
      for await (const entry of Deno.readDir(path)) {
        if (entry.isDirectory) {
          throw new Deno.errors.Busy(`${path} has children`);
        }
      }
      await Deno.remove(path, { recursive: true });
    },
    async runProbe(prefix) {
      const [command, ...args] = [...prefix, "/bin/true"];
      const output = await new Deno.Command(command!, {
        args,
        clearEnv: true,
        stderr: "piped",
      }).output();
      // As the kernel does when the process exits.
      for (
        const file of prefix.filter((arg) => arg.endsWith("/cgroup.procs"))
      ) {
        await Deno.writeTextFile(file, "");
      }
      return {
        success: output.success,
        stderr: new TextDecoder().decode(output.stderr),
      };
    },
  };
  return {
    root,
    directories,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

Deno.test("cgroup v2 on a fake cgroupfs: detection enables controllers down to the parent", async () => {
  await using fake = await fakeCgroupfs("cpu io memory pids\n");
  const backend = await detectCgroups({
    root: fake.root,
    parent: "kiln/node-1",
    directories: fake.directories,
  });
  assert.ok(backend.available, backend.available ? "" : backend.reason);
  assert.deepEqual(backend.version, 2);
  assert.deepEqual(backend.controllers, ["memory", "pids", "cpu"]);
  assert.deepEqual(backend.parentPaths, [`${fake.root}/kiln/node-1`]);
  for (
    const dir of [fake.root, `${fake.root}/kiln`, `${fake.root}/kiln/node-1`]
  ) {
    assert.deepEqual(
      await Deno.readTextFile(`${dir}/cgroup.subtree_control`),
      "+memory +pids +cpu",
    );
  }
  // The job's cgroup has the controllers it needs.
  assert.deepEqual(
    await Deno.readTextFile(`${fake.root}/kiln/node-1/cgroup.controllers`),
    "memory pids cpu",
  );

  // removeParent() keeps a parent in use, removes it once empty, and
  // create() brings it back.
  const first = await backend.create("job-a");
  await backend.removeParent();
  assert.ok(!(await isGone(first.paths[0]!)));
  await first.remove();
  await backend.removeParent();
  assert.ok(await isGone(`${fake.root}/kiln`));
  await using second = await backend.create("job-b");
  assert.deepEqual(
    await Deno.readTextFile(`${second.paths[0]}/../cgroup.subtree_control`),
    "+memory +pids +cpu",
  );
});

Deno.test("cgroup v2 on a fake cgroupfs: create, enter, usage and remove", async () => {
  await using fake = await fakeCgroupfs("cpu memory pids\n");
  const backend = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
  });
  assert.ok(backend.available && backend.version === 2);
  const cgroup = await backend.create("job-1", {
    memoryBytes: 64 * MIB,
    pids: 32,
  });
  const path = `${fake.root}/kiln/job-1`;
  try {
    assert.deepEqual(cgroup.paths, [path]);
    const read = (file: string) => Deno.readTextFile(`${path}/${file}`);
    assert.deepEqual(await read("memory.max"), String(64 * MIB));
    assert.deepEqual(await read("memory.swap.max"), "0");
    assert.deepEqual(await read("memory.oom.group"), "1");
    assert.deepEqual(await read("pids.max"), "32");

    const prefix = cgroup.enterPrefix();
    assert.deepEqual(prefix.slice(-2), [`${path}/cgroup.procs`, "--"]);
    // The prefix really runs: it writes its pid and execs the command.
    const wrapped = cgroup.wrap({ command: "/bin/echo", args: ["a b", "$x"] });
    assert.deepEqual(wrapped.command, "/bin/sh");
    const child = new Deno.Command(wrapped.command, {
      args: [...wrapped.args],
      clearEnv: true,
      stdout: "piped",
    }).spawn();
    const { stdout } = await child.output();
    assert.deepEqual(new TextDecoder().decode(stdout), "a b $x\n");
    assert.deepEqual(await read("cgroup.procs"), `${child.pid}\n`);
    // As the kernel would at exit: never leave a dead (reusable) pid for
    // killAll() to signal.
    await Deno.writeTextFile(`${path}/cgroup.procs`, "");

    await Deno.writeTextFile(`${path}/memory.peak`, `${100 * MIB}\n`);
    await Deno.writeTextFile(`${path}/memory.current`, `${4 * MIB}\n`);
    await Deno.writeTextFile(
      `${path}/cpu.stat`,
      "usage_usec 1500400\nuser_usec 1000000\nsystem_usec 500400\n",
    );
    assert.deepEqual(await cgroup.usage(), {
      peakMemoryKb: 100 * 1024,
      peakMemorySource: "memory.peak",
      cpuTimeMs: 1500,
      oomKilled: false,
    });
    await Deno.writeTextFile(
      `${path}/memory.events`,
      "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    );
    assert.deepEqual((await cgroup.usage()).oomKilled, true);

    await cgroup.remove();
    assert.ok(await isGone(path));
    assert.ok(!(await isGone(`${fake.root}/kiln`)), "the parent stays");
    await cgroup.remove();
  } finally {
    await cgroup.remove();
  }
});

Deno.test("cgroup v2 on a fake cgroupfs: children() lists cgroups and open() reaches one left behind", async () => {
  await using fake = await fakeCgroupfs("memory pids\n");
  const backend = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
  });
  assert.ok(backend.available && backend.version === 2);
  await backend.create("p1-left", { pids: 8 });
  await backend.create("p2-live");
  assert.deepEqual((await backend.children()).sort(), ["p1-left", "p2-live"]);
  // Another process's cgroup, known only by its name: measured and removed.
  const left = backend.open("p1-left");
  assert.deepEqual(left.paths, [`${fake.root}/kiln/p1-left`]);
  assert.equal((await left.usage()).oomKilled, false);
  await left.remove();
  assert.deepEqual(await backend.children(), ["p2-live"]);
  assert.throws(() => backend.open("../escape"), TypeError);
  await backend.open("p2-live").remove();
});

Deno.test("cgroup v2 on a fake cgroupfs: without memory.peak, memory.current is sampled", async () => {
  await using fake = await fakeCgroupfs("memory pids\n", { memoryPeak: false });
  const backend = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
  });
  assert.ok(backend.available);
  assert.deepEqual(backend.controllers, ["memory", "pids"]);
  await using cgroup = await backend.create("job-2");
  const path = `${fake.root}/kiln/job-2`;
  // No limit asked, none written; swap is still refused.
  assert.deepEqual(await Deno.readTextFile(`${path}/memory.max`), "max\n");
  assert.deepEqual(await Deno.readTextFile(`${path}/memory.swap.max`), "0");
  await Deno.writeTextFile(`${path}/memory.current`, `${MIB}\n`);
  assert.deepEqual((await cgroup.usage()).peakMemoryKb, 1024);
  await Deno.writeTextFile(`${path}/memory.current`, `${MIB / 2}\n`);
  const usage = await cgroup.usage();
  assert.deepEqual(usage.peakMemoryKb, 1024);
  assert.deepEqual(usage.peakMemorySource, "memory.current");
  assert.deepEqual(usage.cpuTimeMs, 0);
});

Deno.test("cgroup v2 on a fake cgroupfs: a missing controller is reported", async () => {
  await using fake = await fakeCgroupfs("cpu io\n");
  const detected = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
  });
  assert.ok(!detected.available);
  assert.match(detected.reason, /lacks the memory and pids controller/);
});

Deno.test("detectCgroups() reports a missing or empty root instead of throwing", async () => {
  const missing = await detectCgroups({ root: "/nonexistent/kiln-cgroup" });
  assert.ok(!missing.available);
  assert.match(missing.reason, /not mounted/);

  const empty = await Deno.makeTempDir();
  try {
    const detected = await detectCgroups({ root: empty });
    assert.ok(!detected.available);
    assert.match(detected.reason, /neither cgroup v2/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("detectCgroups() rejects a bad parent before touching anything", async () => {
  for (const parent of ["", "..", "kiln/../x", "/kiln", "kiln/"]) {
    await assert.rejects(
      () => detectCgroups({ parent, root: "/nonexistent" }),
      TypeError,
    );
  }
});

Deno.test("a cgroup still busy after every rmdir retry is logged at warn with its path, counted, and not reported removed", async () => {
  await using fake = await fakeCgroupfs("cpu memory pids\n");
  // The kernel keeps saying EBUSY, as for a process stuck in D state.
  const directories: CgroupDirectories = {
    ...fake.directories,
    rmdir: (path) =>
      path.endsWith("/stuck")
        ? Promise.reject(new Deno.errors.Busy(`${path} holds processes`))
        : fake.directories.rmdir(path),
  };
  const backend = await detectCgroups({ root: fake.root, directories });
  assert.ok(backend.available);
  const warnings: LogRecord[] = [];
  const logs = await captureLogs((record) => warnings.push(record), {
    category: ["kiln", "sandbox"],
    lowestLevel: "warning",
  });
  try {
    const stuck = await backend.create("stuck");
    // Its processes may still live: a caller must not take them for gone.
    assert.equal(await stuck.remove(), false);
    assert.equal(backend.leaked, 1);
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]!.level, "warning");
    assert.equal(warnings[0]!.properties.path, stuck.paths[0]);
    assert.match(
      warnings[0]!.message.map(String).join(""),
      /^cannot remove cgroup .*\/stuck, left behind \(1 so far\): .*holds processes$/,
    );
    // One that goes is neither logged nor counted.
    assert.equal(await (await backend.create("fine")).remove(), true);
    assert.equal(backend.leaked, 1);
    assert.equal(warnings.length, 1);
  } finally {
    await logs[Symbol.asyncDispose]();
    await Deno.remove(`${fake.root}/kiln/stuck`, { recursive: true });
  }
});

Deno.test("a cgroup busy for a moment is removed once it is empty, told busy as Deno tells it", async () => {
  await using fake = await fakeCgroupfs("cpu memory pids\n");
  // Deno 2.9 reports EBUSY as a plain Error with code "EBUSY".
  let busy = 2;
  const directories: CgroupDirectories = {
    ...fake.directories,
    rmdir: (path) => {
      if (path.endsWith("/exiting") && busy-- > 0) {
        return Promise.reject(
          Object.assign(new Error("Device or resource busy (os error 16)"), {
            code: "EBUSY",
          }),
        );
      }
      return fake.directories.rmdir(path);
    },
  };
  const backend = await detectCgroups({ root: fake.root, directories });
  assert.ok(backend.available);
  const cgroup = await backend.create("exiting");
  assert.equal(await cgroup.remove(), true);
  assert.equal(backend.leaked, 0);
  assert.ok(await isGone(cgroup.paths[0]!));
});

/** Lays out `<root>/<path>` as systemd delegates a service's cgroup. */
async function delegatedService(
  fake: { root: string; directories: CgroupDirectories },
  path: string,
  enabled: string,
): Promise<{ dir: string; selfCgroupFile: string }> {
  await Deno.writeTextFile(`${fake.root}/cgroup.subtree_control`, enabled);
  const dir = `${fake.root}${path}`;
  await fake.directories.mkdir(dir);
  // This process runs in it, as a service's main process does.
  await Deno.writeTextFile(`${dir}/cgroup.procs`, `${Deno.pid}\n`);
  const selfCgroupFile = `${fake.root}/self-cgroup`;
  await Deno.writeTextFile(selfCgroupFile, `0::${path}\n`);
  return { dir, selfCgroupFile };
}

Deno.test("cgroup v2 on a fake cgroupfs: a delegated subtree takes the node into a leaf and its jobs below", async () => {
  await using fake = await fakeCgroupfs("cpu io memory pids\n");
  const { dir, selfCgroupFile } = await delegatedService(
    fake,
    "/kiln.service",
    "+cpu +memory +pids",
  );
  const backend = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
    placement: "own",
    selfCgroupFile,
  });
  assert.ok(backend.available, backend.available ? "" : backend.reason);
  assert.equal(backend.delegated, "/kiln.service");
  assert.deepEqual(backend.parentPaths, [`${dir}/kiln`]);
  // The node left the subtree's root for a leaf (no internal processes),
  // so that the subtree could give its controllers to the jobs' parent.
  assert.equal(
    await Deno.readTextFile(`${dir}/${NODE_LEAF}/cgroup.procs`),
    String(Deno.pid),
  );
  assert.equal(
    await Deno.readTextFile(`${dir}/cgroup.subtree_control`),
    "+memory +pids +cpu",
  );
  assert.equal(
    await Deno.readTextFile(`${dir}/kiln/cgroup.controllers`),
    "memory pids cpu",
  );
  // The probe cgroup is gone; a job's cgroup goes below the parent.
  assert.deepEqual(await backend.children(), []);
  await using job = await backend.create("p1-job", { pids: 8 });
  assert.deepEqual(job.paths, [`${dir}/kiln/p1-job`]);
  assert.equal(await Deno.readTextFile(`${job.paths[0]}/pids.max`), "8");

  // Detected again from the leaf, it finds the same subtree.
  await Deno.writeTextFile(selfCgroupFile, `0::/kiln.service/${NODE_LEAF}\n`);
  const again = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
    placement: "own",
    selfCgroupFile,
  });
  assert.ok(again.available && again.delegated === "/kiln.service");
});

Deno.test("cgroup v2 on a fake cgroupfs: a subtree that is not delegated, or lacks a controller, is reported", async () => {
  await using fake = await fakeCgroupfs("cpu io memory pids\n");
  const { dir, selfCgroupFile } = await delegatedService(
    fake,
    "/session.scope",
    "+pids",
  );
  const lacking = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
    placement: "own",
    selfCgroupFile,
  });
  assert.ok(!lacking.available);
  assert.match(
    lacking.reason,
    /cgroup v2 at .*\/session\.scope lacks the memory controller/,
  );
  assert.ok(await isGone(`${dir}/${NODE_LEAF}`), "the node did not move");

  await Deno.writeTextFile(selfCgroupFile, "0::/\n");
  const atRoot = await detectCgroups({
    root: fake.root,
    directories: fake.directories,
    placement: "own",
    selfCgroupFile,
  });
  assert.ok(!atRoot.available);
  assert.match(atRoot.reason, /not in a subtree of its own/);

  // A subtree this process may not write (a fake mkdir refusing as the
  // kernel does for a cgroup root owns).
  await Deno.writeTextFile(selfCgroupFile, "0::/session.scope\n");
  await Deno.writeTextFile(`${dir}/cgroup.controllers`, "memory pids");
  const closed = await detectCgroups({
    root: fake.root,
    directories: {
      ...fake.directories,
      mkdir: (path) =>
        Promise.reject(
          new Deno.errors.PermissionDenied(`Permission denied: ${path}`),
        ),
    },
    placement: "own",
    selfCgroupFile,
  });
  assert.ok(!closed.available);
  assert.match(closed.reason, /not writable .*not delegated to uid/);
});

Deno.test("cgroup v2 on a fake cgroupfs: a hierarchy a process cannot join fails its probe, with the reason, and nothing is left", async () => {
  await using fake = await fakeCgroupfs("cpu memory pids\n");
  // As when the node's cgroup and the jobs' share no writable ancestor.
  const directories: CgroupDirectories = {
    ...fake.directories,
    runProbe: (prefix) =>
      Promise.resolve({
        success: false,
        stderr: `/bin/sh: 1: cannot create ${prefix.at(-2)}: ` +
          `Permission denied\nkiln: cannot enter cgroup ${prefix.at(-2)}\n`,
      }),
  };
  const detected = await detectCgroups({ root: fake.root, directories });
  assert.ok(!detected.available);
  assert.match(
    detected.reason,
    /^cgroup v2 at .* fails for uid \d+: cannot put a process into .*\/kiln\/p\d+-probe-[0-9a-f]+: .*Permission denied/,
  );
  assert.ok(await isGone(`${fake.root}/kiln`), "the parent is removed");
});
