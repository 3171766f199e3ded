/**
 * The hostile suite, run by `hostile_test.ts` (every step cold) and
 * `hostile_prewarm_test.ts` (this module imported as `?prewarm=2`: jobs
 * take pre-warmed sandboxes, whose waiting stubs the checks tell apart
 * from the leftovers of a job).
 *
 * Hostile programs against a real master over TCP on 127.0.0.1, each in the
 * sandbox the host gives (`KILN_TEST_SANDBOX=none` runs the suite without
 * one: every isolation case is then skipped, and says so; so is every case
 * whose layer this host lacks). Each case asserts
 * its verdict, then that the node still runs a normal job and that no
 * process of any job survived. The last test checks that nothing at all was
 * left: processes, workdirs, cgroups, job disks and devpts mounts.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import {
  createDefaultRegistry,
  type JobRequest,
  type JobResult,
  MasterNode,
  submitProgram,
} from "../mod.ts";
import { detectCgroups } from "../lib/sandbox/cgroup.ts";
import { processesOfUids } from "../lib/sandbox/process_tree.ts";
import { Sandbox, type SandboxMode } from "../lib/sandbox/sandbox.ts";
import { defaultWorkRoot, removeWorkRoot } from "../lib/sandbox/work_root.ts";

const TOKEN = crypto.randomUUID();
/** Pre-warmed sandboxes per language, from this module's `?prewarm=N`. */
const PREWARM = Number(
  new URL(import.meta.url).searchParams.get("prewarm") ?? 0,
);
/** Prefixed to every test's name, so that the two runs read apart. */
const LABEL = PREWARM > 0 ? "hostile (pre-warmed)" : "hostile";
const MODE = (Deno.env.get("KILN_TEST_SANDBOX") ?? "auto") as SandboxMode;
// CI sets KILN_TEST_REQUIRE_SANDBOX=1: there the suite must run sandboxed,
// and detection throws (failing the file) when it cannot.
const sandbox = await Sandbox.detect({
  mode: MODE,
  require: Deno.env.get("KILN_TEST_REQUIRE_SANDBOX") === "1" &&
    MODE !== "none",
  prewarm: PREWARM,
});
const registry = createDefaultRegistry();
const has = {
  namespaces: sandbox.layers.includes("namespaces"),
  cgroups: sandbox.layers.includes("cgroups"),
  rlimits: sandbox.layers.includes("rlimits"),
  seccomp: sandbox.layers.includes("seccomp"),
  disk: sandbox.layers.includes("disk"),
  ptys: sandbox.layers.includes("ptys"),
  python: (await registry.resolve("python")).ok,
  c: (await registry.resolve("c")).ok,
  java: (await registry.resolve("java")).ok,
  javascript: (await registry.resolve("javascript")).ok,
};

/** The limits of the suite's node: small, so every case ends quickly. */
const LIMITS = {
  wallTimeMs: 8_000,
  // V8 filling its heap to the memory limit takes 1.3-1.5 s of CPU here:
  // a CPU limit with room to spare, so that the case tests memory. Not a
  // whole second: the rlimit (whole seconds, rounded up) must come after
  // the cgroup's CPU watch, or the two race at the limit.
  cpuTimeMs: 2_500,
  memoryMb: 256,
  processes: 64,
  fileSizeBytes: 1024 * 1024,
  openFiles: 128,
  outputBytes: 256 * 1024,
  diskMb: 64,
  diskFiles: 2_000,
  ptys: 4,
};

/** Why a case is skipped, printed once; undefined runs it. */
function skipReason(
  needs: (keyof typeof has)[],
): string | undefined {
  const missing = needs.filter((need) => !has[need]);
  if (missing.length === 0) return undefined;
  return missing.map((need) =>
    need in sandbox.report.missing
      ? `sandbox layer "${need}" is missing: ${
        sandbox.report.missing[need as "namespaces"]
      }`
      : `language ${need} is unavailable here`
  ).join("; ");
}

const master = new MasterNode({
  port: 0,
  token: TOKEN,
  slots: 2,
  resourceLogIntervalMs: 0,
  limits: LIMITS,
  sandbox,
  registry,
});
await master.ready;

function submit(
  request: JobRequest,
  options: Parameters<typeof submitProgram>[1] = {},
): Promise<JobResult> {
  return submitProgram(request, {
    master: master.addr,
    token: TOKEN,
    ...options,
  });
}

const python = (code: string): JobRequest => ({
  language: "python",
  files: [{ name: "main.py", content: code }],
});
const bash = (code: string): JobRequest => ({
  language: "bash",
  files: [{ name: "main.sh", content: code }],
});
const c = (code: string): JobRequest => ({
  language: "c",
  files: [{ name: "main.c", content: code }],
});

/** After every case: the node runs a normal job, and no job process lives on. */
async function assertHealthy(): Promise<void> {
  const result = await submit(bash("echo healthy"));
  assert.equal(result.verdict, "ok", JSON.stringify(result));
  assert.equal(result.stdout, "healthy\n");
  // The job's cleanup ends after its result, and the pool settles, so
  // that what is left and what the waiting sandboxes hold are known.
  await sandbox.settled();
  const waiting = sandbox.warmHoldings();
  if (has.namespaces) {
    const waitingUids = new Set(waiting.uids);
    const survivors = [];
    for (const pid of await ourJobProcesses()) {
      const uid = await uidOf(pid);
      if (uid === null || !waitingUids.has(uid)) survivors.push(pid);
    }
    assert.deepEqual(survivors, [], "a process of a job survived it");
  }
  const held = (mounts: string[]) =>
    mounts.filter((mount) => !waiting.mounts.includes(mount));
  assert.deepEqual(
    held(await ourJobDisks()),
    [],
    "a job disk is still mounted",
  );
  assert.deepEqual(
    held(await ourJobPtys()),
    [],
    "a job's devpts is still mounted",
  );
}

/** The real uid of a live process, or null when it is gone. */
async function uidOf(pid: number): Promise<number | null> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() =>
    null
  );
  const match = status && /^Uid:\s+(\d+)/m.exec(status);
  return match ? Number(match[1]) : null;
}

/** The mount points of this process's job disks still mounted (see `disk_limit.ts`). */
async function ourJobDisks(): Promise<string[]> {
  // Not the work root's own tmpfs of mount points (see `work_root.ts`).
  return (await ourMounts("tmpfs")).filter((mount) =>
    mount.includes("/kiln-job-")
  );
}

/** The mount points of this process's job devpts still mounted (see `pty_limit.ts`). */
async function ourJobPtys(): Promise<string[]> {
  return await ourMounts("devpts");
}

async function ourMounts(type: string): Promise<string[]> {
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
  return mountinfo.split("\n").filter((line) =>
    line.includes(` - ${type} kiln-${Deno.pid} `)
  ).map((line) => line.split(" ")[4]!);
}

/**
 * The live processes of this node's jobs: every job runs as a uid of the
 * sandbox's block, which no other kiln process on this host uses; with
 * cgroups, they are also in a step cgroup of this process (`p<pid>-…`),
 * which no process of a job can leave.
 */
async function ourJobProcesses(): Promise<number[]> {
  const all = await processesOfUids(sandbox.uidBlock!);
  if (!has.cgroups) return all;
  const ours: number[] = [];
  for (const pid of all) {
    const cgroups = await Deno.readTextFile(`/proc/${pid}/cgroup`).catch(
      () => "",
    );
    if (cgroups.includes(`/p${Deno.pid}-`)) ours.push(pid);
  }
  return ours;
}

function explain(result: JobResult): string {
  const { stdout, stderr, reason, verdict, signal, exitCode } = result;
  return JSON.stringify({
    verdict,
    reason,
    exitCode,
    signal,
    stdout: stdout.slice(0, 500),
    stderr: stderr.slice(0, 500),
  });
}

/** A hostile case: skipped (with the reason printed) when it needs what is missing. */
function hostile(
  name: string,
  needs: (keyof typeof has)[],
  fn: () => Promise<void>,
): void {
  const reason = skipReason(needs);
  if (reason) console.log(`skipping "${LABEL}: ${name}": ${reason}`);
  Deno.test({
    name: `${LABEL}: ${name}`,
    ignore: reason !== undefined,
    fn: async () => {
      await fn();
      await assertHealthy();
    },
  });
}

hostile("an infinite loop ends at the CPU time limit", [
  "python",
  "cgroups",
], async () => {
  const result = await submit(python("while True:\n    pass\n"));
  assert.equal(result.verdict, "time_limit", explain(result));
  assert.match(result.reason ?? "", /CPU time limit of 2500 ms/);
  assert.ok(result.cpuTimeMs! >= LIMITS.cpuTimeMs, explain(result));
});

hostile("sleeping forever ends at the wall time limit", [], async () => {
  const result = await submit(bash("exec sleep infinity"));
  assert.equal(result.verdict, "time_limit", explain(result));
  assert.match(result.reason ?? "", /wall time limit of 8000 ms/);
});

hostile("a fork bomb is held to the process limit", [
  "python",
  "cgroups",
], async () => {
  const result = await submit(python(`
import os, time
forks = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forks += 1
except OSError as error:
    print("fork failed after", forks, "forks:", error.strerror)
`));
  assert.equal(result.verdict, "ok", explain(result));
  const forks = Number(/fork failed after (\d+)/.exec(result.stdout)?.[1]);
  assert.ok(forks > 0 && forks < LIMITS.processes, explain(result));
});

hostile("a shell fork bomb ends and leaves nothing", [
  "cgroups",
  "namespaces",
], async () => {
  const result = await submit(bash("bomb() { bomb | bomb & }; bomb; wait"));
  // The bomb's first shell returns at once; its children are all killed
  // with the job.
  assert.ok(
    ["ok", "runtime_error", "time_limit"].includes(result.verdict),
    explain(result),
  );
});

hostile("allocating 4 GB ends at the memory limit", [
  "python",
  "cgroups",
], async () => {
  const result = await submit(
    python(`data = b"x" * (4 << 30)\nprint(len(data))`),
  );
  assert.equal(result.verdict, "memory_limit", explain(result));
  assert.match(result.reason ?? "", /memory limit of 256 MiB/);
  assert.ok(result.memoryKb! <= 256 * 1024 * 1.05, explain(result));
});

hostile("the JVM stays inside its memory limit and reports OutOfMemoryError", [
  "java",
  "cgroups",
], async () => {
  const result = await submit({
    language: "java",
    files: [{
      name: "Main.java",
      content: `public class Main {
  public static void main(String[] args) {
    System.out.println("started");
    byte[][] chunks = new byte[64][];
    for (int i = 0; i < chunks.length; i++) chunks[i] = new byte[16 << 20];
    System.out.println(chunks.length);
  }
}`,
    }],
  });
  assert.equal(result.verdict, "memory_limit", explain(result));
  assert.equal(result.stdout, "started\n", explain(result));
  assert.match(result.reason ?? "", /OutOfMemoryError/);
});

hostile("V8 stays inside its memory limit and reports a full heap", [
  "javascript",
  "cgroups",
], async () => {
  const result = await submit({
    language: "javascript",
    files: [{
      name: "main.js",
      content: "const a = [];\nwhile (true) a.push(new Array(1e6).fill(1.5));",
    }],
  });
  assert.equal(result.verdict, "memory_limit", explain(result));
  assert.match(result.reason ?? "", /out of memory/);
});

hostile("printing 1 GB ends at the output limit", ["python"], async () => {
  const result = await submit(python(`
import sys
chunk = "x" * 65536
for _ in range(16384):
    sys.stdout.write(chunk)
`));
  assert.equal(result.verdict, "output_limit", explain(result));
  assert.equal(result.truncated, true);
  assert.ok(result.stdout.length <= LIMITS.outputBytes);
});

hostile("writing a 1 GB file is stopped at the file size limit", [
  "rlimits",
], async () => {
  const result = await submit(
    bash("exec head -c 1073741824 /dev/zero > big.bin"),
  );
  assert.equal(result.verdict, "runtime_error", explain(result));
  if (has.namespaces) {
    // bwrap reports SIGXFSZ as exit code 153, as it would `exit 153`.
    assert.equal(result.exitCode, 153, explain(result));
    assert.match(result.reason ?? "", /or was killed by SIGXFSZ/);
  } else {
    assert.equal(result.signal, "SIGXFSZ", explain(result));
  }
  assert.match(result.reason ?? "", /file size limit of 1048576 bytes/);
});

hostile("an exit code never fakes a limit verdict", [], async () => {
  // Under bwrap 152, 153 and 137 are what SIGXCPU, SIGXFSZ and SIGKILL
  // look like; this program chose them with no CPU time, file or kill.
  for (const code of [152, 153, 137]) {
    const result = await submit(bash(`exit ${code}`));
    assert.equal(result.verdict, "runtime_error", explain(result));
    assert.equal(result.exitCode, code, explain(result));
    assert.match(result.reason ?? "", new RegExp(`^exited with code ${code}`));
  }
});

hostile("opening 10 000 files is stopped at the open files limit", [
  "python",
  "rlimits",
], async () => {
  const result = await submit(python(`
files = []
try:
    for i in range(10000):
        files.append(open(f"f{i}", "w"))
except OSError as error:
    print("opened", len(files), error.strerror)
`));
  assert.equal(result.verdict, "ok", explain(result));
  const opened = Number(/opened (\d+)/.exec(result.stdout)?.[1]);
  assert.ok(opened > 0 && opened < LIMITS.openFiles, explain(result));
});

hostile("the network holds loopback only, and the master's port is not there", [
  "python",
  "namespaces",
], async () => {
  const result = await submit(python(`
import socket
print(sorted(name for _, name in socket.if_nameindex()))
try:
    socket.create_connection(("127.0.0.1", ${master.addr.port}), timeout=2)
    print("connected")
except OSError as error:
    print("refused:", type(error).__name__)
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(
    result.stdout,
    "['lo']\nrefused: ConnectionRefusedError\n",
    explain(result),
  );
});

hostile("/etc/shadow and another job's workdir cannot be read", [
  "python",
  "namespaces",
], async () => {
  // Job A writes a secret into its workdir and waits; job B looks for it.
  const stop = new AbortController();
  const ready = Promise.withResolvers<string>();
  const a = submit(
    python(`
import os, sys, time
open("secret.txt", "w").write("hunter2")
print(os.getcwd(), flush=True)
time.sleep(60)
`),
    {
      signal: stop.signal,
      onEvent: (event) => {
        if (event.type === "output") ready.resolve(event.data.trim());
      },
    },
  ).catch(() => null);
  const workdirOfA = await ready.promise;
  const b = await submit(python(`
import os
for path in ["/etc/shadow", ${JSON.stringify(`${workdirOfA}/secret.txt`)}]:
    try:
        print(path, open(path).read())
    except OSError as error:
        print(path, type(error).__name__)
print(sorted(os.listdir(os.path.dirname(os.getcwd()))) == [os.path.basename(os.getcwd())])
`));
  stop.abort();
  await a;
  assert.equal(b.verdict, "ok", explain(b));
  assert.equal(
    b.stdout,
    `/etc/shadow PermissionError\n${workdirOfA}/secret.txt FileNotFoundError\nTrue\n`,
    explain(b),
  );
});

hostile("nothing outside the workdir can be written", [
  "python",
  "namespaces",
], async () => {
  const escape = `kiln-escape-${crypto.randomUUID()}`;
  const result = await submit(python(`
import os
for path in ["/usr/${escape}", "/etc/${escape}", "/${escape}", "/root/${escape}", "/var/${escape}"]:
    try:
        open(path, "w").write("x")
        print(path, "written")
    except OSError as error:
        print(path, type(error).__name__)
open("/tmp/${escape}", "w").write("private")
open("inside.txt", "w").write("fine")
print("ok")
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.doesNotMatch(result.stdout, /written/, explain(result));
  assert.match(result.stdout, /ok\n$/);
  // The sandbox's /tmp is its own: nothing reached the host's.
  for (const dir of ["/usr", "/etc", "", "/root", "/var", "/tmp"]) {
    await assert.rejects(Deno.stat(`${dir}/${escape}`), Deno.errors.NotFound);
  }
});

hostile("filling the disk ends at the disk limit, and the disk is freed", [
  "python",
  "disk",
], async () => {
  // 1000 files of 1 MiB (the suite's file size limit): 1 GiB.
  const result = await submit(python(`
written = 0
try:
    for i in range(1000):
        with open(f"fill{i}", "wb") as f:
            f.write(b"x" * (1 << 20))
        written += 1
except OSError as error:
    print("written", written, error.strerror, flush=True)
    raise
`));
  assert.equal(result.verdict, "runtime_error", explain(result));
  assert.match(
    result.reason ?? "",
    /^program reached its disk limit of 64 MiB and 2000 files \(workdir and \/tmp together\): no space left; exited with code 1$/,
  );
  const written = Number(
    /^written (\d+) No space left on device\n$/.exec(
      result.stdout,
    )?.[1],
  );
  assert.ok(written > 32 && written < 64, explain(result));
  // assertHealthy() then checks that the job disk is unmounted.
});

hostile("a million empty files end at the file limit", [
  "python",
  "disk",
], async () => {
  const result = await submit(python(`
import os
made = 0
try:
    for i in range(1_000_000):
        os.close(os.open(f"/tmp/e{i}" if i % 2 else f"e{i}", os.O_CREAT | os.O_WRONLY))
        made += 1
except OSError as error:
    print("made", made, error.strerror)
`));
  assert.equal(result.verdict, "ok", explain(result));
  const made = Number(
    /^made (\d+) No space left on device$/m.exec(
      result.stdout,
    )?.[1],
  );
  // The source file counts too.
  assert.equal(made, LIMITS.diskFiles - 1, explain(result));
  assert.match(result.reason ?? "", /disk limit .*: no file left$/);
});

/** Runs `tty` under `pty.fork()`: a program on a terminal, as `script` or `expect` run one. */
const ON_A_TERMINAL = `
import os, pty
pid, fd = pty.fork()
if pid == 0:
    os.execv("/usr/bin/tty", ["tty"])
out = b""
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
print(out.decode().strip())
`;

hostile("a job holding every pty it can leaves a concurrent job its own", [
  "python",
  "ptys",
], async () => {
  // Job A opens ptys until it cannot, forking a new process whenever one
  // runs out of descriptors, and holds them. Unbounded, it took every pty
  // of the host's sandboxes (about 3,000); now it stops at its limit.
  const stop = new AbortController();
  const held = Promise.withResolvers<string>();
  let output = "";
  const a = submit(
    python(`
import os, time
r, w = os.pipe()
total, why = 0, ""
while True:
    if os.fork() == 0:
        os.close(r)
        ptys, error = [], "none"
        try:
            while True:
                ptys.append(os.openpty())
        except OSError as e:
            error = e.strerror
        os.write(w, f"{len(ptys)} {error}\\n".encode())
        time.sleep(60)
        os._exit(0)
    line = b""
    while not line.endswith(b"\\n"):
        line += os.read(r, 1)
    count, why = line.decode().strip().split(" ", 1)
    total += int(count)
    if why != "Too many open files":
        break
print("opened", total, why, flush=True)
time.sleep(60)
`),
    {
      signal: stop.signal,
      onEvent: (event) => {
        if (event.type !== "output") return;
        output += event.data;
        if (output.endsWith("\n")) held.resolve(output);
      },
    },
  ).catch(() => null);
  const opened = await held.promise;
  // Job B, while A holds its ptys: a program on a terminal of its own,
  // numbered from 0 in a devpts of its own.
  const b = await submit(python(ON_A_TERMINAL));
  stop.abort();
  await a;
  assert.equal(b.verdict, "ok", explain(b));
  assert.equal(b.stdout, "/dev/pts/0\n", explain(b));
  assert.equal(
    opened,
    `opened ${LIMITS.ptys} No space left on device\n`,
    "job A was not held to its pty limit",
  );
  // assertHealthy() then checks that no devpts stays mounted.
});

hostile("a pty limit of 0 leaves a job no pty at all", [
  "python",
  "namespaces",
], async () => {
  const result = await submit({
    ...python(`
import os
try:
    os.openpty()
    print("opened")
except OSError as error:
    print(error.strerror)
`),
    limits: { ptys: 0 },
  });
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(result.stdout, "No such file or directory\n", explain(result));
});

hostile("a user namespace cannot be made: unshare -U -r is denied", [
  "seccomp",
], async () => {
  const result = await submit(bash("unshare -U -r id"));
  assert.equal(result.verdict, "runtime_error", explain(result));
  assert.equal(result.stdout, "", explain(result));
  assert.match(result.stderr, /Operation not permitted/, explain(result));
});

hostile("the kernel's riskiest doors answer EPERM, and threads still work", [
  "python",
  "seccomp",
], async () => {
  // x86-64 numbers, with arguments that would succeed unfiltered where
  // they can (an unprivileged user may make a user namespace, a keyring,
  // an io_uring).
  const calls = Deno.build.arch === "x86_64"
    ? {
      unshare: [272, 0x10000000],
      setns: [308, 0, 0],
      clone_newuser: [56, 0x10000000 | 17, 0, 0, 0, 0],
      keyctl: [250, 0, -3],
      add_key: [248, 0, 0, 0, 0, 0],
      bpf: [321, 0, 0, 0],
      mount: [165, 0, 0, 0, 0, 0],
      umount2: [166, 0, 0],
      io_uring_setup: [425, 1, 0],
      perf_event_open: [298, 0, 0, -1, -1, 0],
      userfaultfd: [323, 0],
      process_vm_readv: [310, 1, 0, 0, 0, 0, 0],
    }
    : {
      unshare: [97, 0x10000000],
      keyctl: [219, 0, -3],
      bpf: [280, 0, 0, 0],
      mount: [40, 0, 0, 0, 0, 0],
      io_uring_setup: [425, 1, 0],
    };
  const result = await submit(python(`
import ctypes, errno, threading
libc = ctypes.CDLL(None, use_errno=True)
calls = ${JSON.stringify(calls)}
for name, (nr, *args) in calls.items():
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    print(name, ret, errno.errorcode.get(ctypes.get_errno(), "none"))
box = []
thread = threading.Thread(target=lambda: box.append("thread ran"))
thread.start(); thread.join()
print(box[0])
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(
    result.stdout,
    Object.keys(calls).map((name) => `${name} -1 EPERM\n`).join("") +
      "thread ran\n",
    explain(result),
  );
});

hostile("a sibling cannot be traced", ["python", "seccomp"], async () => {
  const result = await submit(python(`
import ctypes, errno, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
PTRACE_ATTACH = 16
ret = libc.ptrace(PTRACE_ATTACH, child, None, None)
print("ptrace", ret, errno.errorcode.get(ctypes.get_errno(), "none"))
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(result.stdout, "ptrace -1 EPERM\n", explain(result));
});

hostile("a daemon that tries to outlive its job is killed with it", [
  "python",
  "namespaces",
], async () => {
  const result = await submit(python(`
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        # Holds a file on the job's disk: its unmount must not wait for it.
        held = open("/tmp/daemon.log", "w")
        time.sleep(120)
    os._exit(0)
print("parent done")
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(result.stdout, "parent done\n");
  // assertHealthy() then checks that no process of the job is left.
});

hostile("kill(-1) reaches only the job's own processes", [
  "python",
  "namespaces",
], async () => {
  // kill(-1) signals every process the caller may signal but itself: here
  // only its own child, never the node or another job.
  const result = await submit(python(`
import os, signal, time
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
os.kill(-1, signal.SIGKILL)
_, status = os.waitpid(child, 0)
print("child killed by", os.WTERMSIG(status))
`));
  assert.equal(result.verdict, "ok", explain(result));
  assert.equal(result.stdout, "child killed by 9\n", explain(result));
});

hostile("peak memory of 100 MB touched is reported within 20 %", [
  "c",
  "cgroups",
], async () => {
  const result = await submit(c(`
#include <stdlib.h>
#include <stdio.h>
int main(void) {
  size_t size = 100u << 20;
  /* volatile: the compiler may not drop the allocation or the writes. */
  volatile char *data = malloc(size);
  if (!data) return 1;
  for (size_t i = 0; i < size; i += 4096) data[i] = 1;
  printf("%d\\n", data[size - 1]);
  return 0;
}`));
  assert.equal(result.verdict, "ok", explain(result));
  const mb = result.memoryKb! / 1024;
  assert.ok(mb >= 80 && mb <= 120, `peak ${mb} MiB`);
  assert.ok(result.cpuTimeMs !== null);
  assert.deepEqual(result.sandbox, sandbox.layers);
});

Deno.test(`${LABEL}: afterwards nothing of any job is left`, async () => {
  try {
    await assertHealthy();
    // The node's end takes its waiting sandboxes with it.
    await master.shutdown();
    await sandbox.close();
    for (const mountPointsOnly of [false, true]) {
      assert.deepEqual(
        await Array.fromAsync(
          Deno.readDir(await defaultWorkRoot({ mountPointsOnly })),
        ),
        [],
        "a job workdir was left",
      );
    }
    // Made afresh by the look when the node removed its own: not left.
    await removeWorkRoot();
    const cgroups = await detectCgroups();
    if (has.cgroups && cgroups.available) {
      const ours = (await cgroups.children()).filter((name) =>
        name.startsWith(`p${Deno.pid}-`)
      );
      assert.deepEqual(ours, [], "a job cgroup was left");
    }
    assert.deepEqual(await ourJobDisks(), [], "a job disk was left mounted");
    assert.deepEqual(await ourJobPtys(), [], "a job devpts was left mounted");
  } finally {
    await master.shutdown();
  }
});
