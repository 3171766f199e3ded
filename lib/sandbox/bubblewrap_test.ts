import assert from "node:assert/strict";
import { join } from "node:path";
import { createDefaultRegistry } from "../runners/registry.ts";
import {
  type BwrapOptions,
  bwrapPrefix,
  detectBubblewrap,
  prepareWorkdir,
  SANDBOX_UID,
  toolchainRoots,
  userNamespacesRefused,
} from "./bubblewrap.ts";
import { jobEnvironment } from "./environment.ts";
import { launch, type StepOutcome } from "./launcher.ts";
import { prlimitPrefix } from "./rlimits.ts";
import { detectPtyLimit, JobPtys } from "./pty_limit.ts";

const bwrap = await detectBubblewrap();
if (!bwrap.available) {
  // deno-lint-ignore no-console
  console.log(`skipping real sandbox tests: ${bwrap.reason}`);
}
const real = { ignore: !bwrap.available };
const TMP_SIZE = 4 << 20;

/** A fresh workdir owned by the sandbox uid, removed after `fn`. */
async function withWorkdir<T>(fn: (workdir: string) => Promise<T>): Promise<T> {
  const workdir = await Deno.makeTempDir({ prefix: "kiln-bwrap-test-" });
  try {
    await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
    return await fn(workdir);
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
}

function prefixFor(
  workdir: string,
  options: Partial<BwrapOptions> = {},
): string[] {
  if (!bwrap.available) throw new Error("bubblewrap is unavailable");
  return bwrapPrefix({
    bwrapPath: bwrap.path,
    setprivPath: bwrap.setprivPath,
    workdir,
    tmpSizeBytes: TMP_SIZE,
    uid: SANDBOX_UID,
    gid: SANDBOX_UID,
    env: jobEnvironment(workdir),
    ...options,
  });
}

/** Runs `argv` in the sandbox in `workdir` through the real launcher. */
function sandboxed(
  workdir: string,
  argv: string[],
  options: Partial<BwrapOptions> = {},
): Promise<StepOutcome> {
  const [command, ...args] = [...prefixFor(workdir, options), ...argv];
  return launch({ command: command!, args }, {
    cwd: "/",
    env: {},
    wallTimeMs: 30_000,
    outputBytes: 1 << 20,
  });
}

/** Runs a shell script in a fresh sandbox. */
function sh(script: string, options: Partial<BwrapOptions> = {}) {
  return withWorkdir((workdir) =>
    sandboxed(workdir, ["/bin/sh", "-c", script], options)
  );
}

const BASE = {
  bwrapPath: "/usr/bin/bwrap",
  workdir: "/tmp/kiln-job-1",
  tmpSizeBytes: 1024,
  uid: 65534,
  gid: 65534,
  env: { PATH: "/usr/bin:/bin" },
};

Deno.test("bwrapPrefix builds the whole prefix, ending in setpriv", () => {
  assert.deepEqual(bwrapPrefix(BASE), [
    "/usr/bin/bwrap",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--hostname",
    "kiln",
    "--ro-bind",
    "/usr",
    "/usr",
    "--ro-bind",
    "/etc",
    "/etc",
    ...["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"].flatMap(
      (path) => ["--ro-bind-try", path, path],
    ),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--perms",
    "1777",
    "--size",
    "1024",
    "--tmpfs",
    "/tmp",
    "--bind",
    "/tmp/kiln-job-1",
    "/tmp/kiln-job-1",
    "--chdir",
    "/tmp/kiln-job-1",
    "--clearenv",
    "--setenv",
    "PATH",
    "/usr/bin:/bin",
    "--cap-drop",
    "ALL",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
    "--cap-add",
    "CAP_SETPCAP",
    "--cap-add",
    "CAP_DAC_READ_SEARCH",
    "--",
    "/usr/bin/setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
  ]);
});

Deno.test("bwrapPrefix for a node that is not root: a user namespace of its own uid, no setpriv, no capability", () => {
  const prefix = bwrapPrefix({ ...BASE, uid: 1000, gid: 1000, rootless: true });
  assert.deepEqual(prefix.slice(0, 13), [
    "/usr/bin/bwrap",
    "--unshare-user",
    "--disable-userns",
    "--uid",
    "1000",
    "--gid",
    "1000",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
  ]);
  assert.deepEqual(prefix.slice(-4), [
    "/usr/bin:/bin",
    "--cap-drop",
    "ALL",
    "--",
  ]);
  assert.ok(!prefix.some((arg) => arg.includes("setpriv")));
  assert.ok(!prefix.includes("--cap-add"));
  // The same system, /tmp and workdir as root's sandbox.
  const rootful = bwrapPrefix(BASE);
  const between = (args: string[]) =>
    args.slice(args.indexOf("--hostname"), args.indexOf("--clearenv"));
  assert.deepEqual(between(prefix), between(rootful));
  assert.throws(
    () => bwrapPrefix({ ...BASE, uid: 0, gid: 0, rootless: true }),
    RangeError,
  );
});

Deno.test("userNamespacesRefused names the setting that refuses, and the one that allows", async () => {
  const sysctl = await Deno.makeTempDir({ prefix: "kiln-sysctl-" });
  try {
    await Deno.mkdir(join(sysctl, "kernel"));
    await Deno.mkdir(join(sysctl, "user"));
    const set = (name: string, value: string) =>
      Deno.writeTextFile(join(sysctl, name), `${value}\n`);
    assert.equal(await userNamespacesRefused(sysctl), null, "nothing says no");
    await set("kernel/unprivileged_userns_clone", "1");
    await set("user/max_user_namespaces", "15000");
    await set("kernel/apparmor_restrict_unprivileged_userns", "0");
    assert.equal(await userNamespacesRefused(sysctl), null);
    await set("kernel/apparmor_restrict_unprivileged_userns", "1");
    assert.match(
      (await userNamespacesRefused(sysctl))!,
      /AppArmor .*apparmor_restrict_unprivileged_userns = 1/,
    );
    await set("user/max_user_namespaces", "0");
    assert.match(
      (await userNamespacesRefused(sysctl))!,
      /user\.max_user_namespaces = 0; sysctl -w user\.max_user_namespaces=15000/,
    );
    await set("kernel/unprivileged_userns_clone", "0");
    assert.match(
      (await userNamespacesRefused(sysctl))!,
      /kernel\.unprivileged_userns_clone = 0; sysctl -w kernel\.unprivileged_userns_clone=1/,
    );
  } finally {
    await Deno.remove(sysctl, { recursive: true });
  }
});

Deno.test("bwrapPrefix makes world-searchable parents for binds outside the system dirs", () => {
  const prefix = bwrapPrefix({
    ...BASE,
    workdir: "/var/kiln/jobs/1",
    readOnlyPaths: [
      "/root/.pyenv/versions/3.11.7",
      "/root/.rustup/toolchains/stable/",
      "/usr/lib/jvm",
      "/root/.pyenv/versions/3.11.7/lib",
    ],
  });
  const text = prefix.join(" ");
  assert.match(
    text,
    / --perms 0755 --dir \/root --perms 0755 --dir \/root\/.pyenv --perms 0755 --dir \/root\/.pyenv\/versions --ro-bind \/root\/.pyenv\/versions\/3.11.7 \/root\/.pyenv\/versions\/3.11.7 --perms 0755 --dir \/root\/.rustup --perms 0755 --dir \/root\/.rustup\/toolchains --ro-bind \/root\/.rustup\/toolchains\/stable \/root\/.rustup\/toolchains\/stable --perms 0755 --dir \/var --perms 0755 --dir \/var\/kiln --perms 0755 --dir \/var\/kiln\/jobs --bind \/var\/kiln\/jobs\/1 \/var\/kiln\/jobs\/1 /,
  );
  assert.ok(!text.includes("/usr/lib/jvm"), "inside /usr: already bound");
  assert.ok(!text.includes("3.11.7/lib"), "inside a bound root");
});

Deno.test("bwrapPrefix covers bwrap's /dev/pts with the job's devpts, or with nothing", () => {
  const after = (args: string[]) =>
    args.slice(args.indexOf("/dev") + 1, args.indexOf("/dev") + 5);
  assert.deepEqual(after(bwrapPrefix({ ...BASE, ptsDir: "/w/kiln-pty-1/" })), [
    "--dev-bind",
    "/w/kiln-pty-1",
    "/dev/pts",
    "--perms",
  ]);
  assert.deepEqual(
    after(bwrapPrefix({ ...BASE, ptsDir: "/w/kiln-pty-1", noPtys: true })),
    ["--tmpfs", "/dev/pts", "--remount-ro", "/dev/pts"],
  );
  assert.throws(
    () => bwrapPrefix({ ...BASE, ptsDir: "kiln-pty-1" }),
    /ptsDir "kiln-pty-1" is not an absolute path/,
  );
});

Deno.test("bwrapPrefix rejects root, relative paths and bad env names", () => {
  assert.throws(() => bwrapPrefix({ ...BASE, uid: 0 }), RangeError);
  assert.throws(() => bwrapPrefix({ ...BASE, gid: 0 }), RangeError);
  assert.throws(() => bwrapPrefix({ ...BASE, tmpSizeBytes: 0 }), RangeError);
  assert.throws(() => bwrapPrefix({ ...BASE, workdir: "job" }), TypeError);
  assert.throws(
    () => bwrapPrefix({ ...BASE, readOnlyPaths: ["opt/x"] }),
    TypeError,
  );
  assert.throws(() => bwrapPrefix({ ...BASE, env: { "A=B": "c" } }), TypeError);
});

Deno.test("toolchainRoots keeps only outermost roots outside the system dirs", async () => {
  assert.deepEqual(
    await toolchainRoots([
      "/usr/bin/gcc",
      "/nonexistent/kiln/py/bin/python3",
      "/nonexistent/kiln/py/lib/tool",
      "/nonexistent/kiln/py/bin/pip",
      "/nonexistent/kiln/jdk/bin/java",
    ]),
    ["/nonexistent/kiln/jdk", "/nonexistent/kiln/py"],
  );
});

Deno.test("detectBubblewrap reports a missing bwrap by path", async () => {
  const detection = await detectBubblewrap({ bwrapPath: "/nonexistent/bwrap" });
  assert.equal(detection.available, false);
  if (Deno.uid() === 0) {
    assert.deepEqual(detection, {
      available: false,
      reason: 'executable "/nonexistent/bwrap" not found',
    });
  }
});

Deno.test({
  name: "a hello world runs in the sandbox",
  ...real,
  fn: async () => {
    const outcome = await sh("echo hello, world");
    assert.equal(outcome.stderr, "");
    assert.equal(outcome.stdout, "hello, world\n");
    assert.equal(outcome.exitCode, 0);
  },
});

Deno.test({
  name: "the program runs as uid and gid 65534 with no capabilities",
  ...real,
  fn: async () => {
    const outcome = await sh(
      "id -u; id -g; id -G; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status",
    );
    assert.equal(outcome.exitCode, 0, outcome.stderr);
    const lines = outcome.stdout.trim().split("\n");
    assert.deepEqual(lines.slice(0, 3), ["65534", "65534", "65534"]);
    for (const line of lines.slice(3, 8)) {
      assert.match(line, /^Cap\w+:\s+0+$/);
    }
    assert.match(lines[8]!, /^NoNewPrivs:\s+1$/);
  },
});

Deno.test({
  name: "/etc/shadow is unreadable",
  ...real,
  fn: async () => {
    const outcome = await sh("cat /etc/shadow");
    assert.notEqual(outcome.exitCode, 0);
    assert.equal(outcome.stdout, "");
    assert.match(outcome.stderr, /Permission denied/);
  },
});

Deno.test({
  name: "the system is read-only and only the workdir and /tmp are writable",
  ...real,
  fn: async () => {
    await withWorkdir(async (workdir) => {
      // /var/tmp is world-writable on the host, and /tmp/<marker> would be
      // the host's /tmp without the sandbox's own tmpfs.
      const marker = `kiln-bwrap-marker-${crypto.randomUUID()}`;
      const outcome = await sandboxed(workdir, [
        "/bin/sh",
        "-c",
        `for p in /usr/kiln-x /usr/bin/kiln-x /etc/kiln-x /kiln-x /root/kiln-x /var/tmp/kiln-x /dev/kiln-x /proc/kiln-x; do
           if touch "$p" 2>/dev/null; then echo "wrote $p"; fi
         done
         echo ok > ./written && echo ok > /tmp/${marker} && echo done`,
      ]);
      assert.equal(outcome.stdout, "done\n", outcome.stderr);
      const info = await Deno.stat(join(workdir, "written"));
      assert.equal(info.uid, SANDBOX_UID);
      assert.equal(info.gid, SANDBOX_UID);
      await assert.rejects(Deno.stat(`/tmp/${marker}`), Deno.errors.NotFound);
    });
  },
});

Deno.test({
  name: "/tmp is a tmpfs capped at tmpSizeBytes",
  ...real,
  fn: async () => {
    const outcome = await sh(
      `grep ' /tmp ' /proc/mounts; head -c ${
        TMP_SIZE + (1 << 20)
      } /dev/zero > /tmp/big; echo "rc=$?"`,
    );
    const [mount, rc] = outcome.stdout.trim().split("\n");
    assert.match(
      mount!,
      new RegExp(`^tmpfs /tmp tmpfs .*size=${TMP_SIZE / 1024}k`),
    );
    assert.notEqual(rc, "rc=0");
    assert.match(outcome.stderr, /No space left on device/);
  },
});

/** Opens ptys with os.openpty() until it fails, then runs `tty` under pty.fork(). */
const OPEN_PTYS = `
import os, pty
held = []
try:
    while len(held) < 64:
        held.append(os.openpty())
except OSError as error:
    print("opened", len(held), error.strerror)
for master, slave in held:
    os.close(master)
    os.close(slave)
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

const ptyLimit = await detectPtyLimit();

Deno.test({
  name: "bwrap's own devpts has no max=: the job's devpts is what bounds it",
  ...real,
  fn: async () => {
    const outcome = await sh("grep ' /dev/pts ' /proc/self/mountinfo");
    assert.match(outcome.stdout, / - devpts devpts .*ptmxmode=666/);
    assert.doesNotMatch(outcome.stdout, /max=/);
  },
});

Deno.test({
  name:
    "a job's devpts bound at /dev/pts holds it to its limit, and a pty works",
  ignore: !bwrap.available || !ptyLimit.available,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-pty-test-" });
    const ptys = await JobPtys.mount(dir, 3);
    try {
      const outcome = await withWorkdir((workdir) =>
        sandboxed(workdir, ["/usr/bin/python3", "-c", OPEN_PTYS], {
          ptsDir: dir,
        })
      );
      assert.equal(
        outcome.stdout,
        "opened 3 No space left on device\n/dev/pts/0\n",
        outcome.stderr,
      );
    } finally {
      await ptys.unmount();
      await Deno.remove(dir);
    }
  },
});

Deno.test({
  name: "noPtys: /dev/ptmx leads nowhere (ENOENT)",
  ...real,
  fn: async () => {
    const outcome = await withWorkdir((workdir) =>
      sandboxed(workdir, [
        "/usr/bin/python3",
        "-c",
        `import os
try:
    os.openpty()
except OSError as error:
    print(error.strerror)
try:
    open("/dev/pts/ptmx", "w")
except OSError as error:
    print(error.strerror)`,
      ], { noPtys: true })
    );
    assert.equal(
      outcome.stdout,
      "No such file or directory\nRead-only file system\n",
      outcome.stderr,
    );
  },
});

Deno.test({
  name: "only the loopback interface exists",
  ...real,
  fn: async () => {
    // Interfaces are only listed: no test sends traffic off loopback.
    const outcome = await sh("cat /proc/net/dev");
    assert.equal(outcome.exitCode, 0, outcome.stderr);
    const interfaces = outcome.stdout.trim().split("\n").slice(2).map((line) =>
      line.split(":")[0]!.trim()
    );
    assert.deepEqual(interfaces, ["lo"]);
  },
});

Deno.test({
  name: "the program sees only the sandbox's processes",
  ...real,
  fn: async () => {
    const outcome = await sh(
      "echo $$; for d in /proc/[0-9]*; do echo \"${d#/proc/} $(tr '\\0' ' ' < $d/cmdline 2>/dev/null)\"; done",
    );
    assert.equal(outcome.exitCode, 0, outcome.stderr);
    const [self, ...rows] = outcome.stdout.trim().split("\n");
    assert.ok(Number(self) <= 3, `the shell is pid ${self}`);
    const pids = rows.map((row) => Number(row.split(" ")[0]));
    // bwrap's init, the shell, and the subshells of the loop at most.
    assert.ok(Math.max(...pids) < 20, `pids ${pids}`);
    assert.ok(
      !rows.some((row) => row.includes(Deno.execPath())),
      `the test's own deno is visible:\n${rows.join("\n")}`,
    );
  },
});

Deno.test({
  name: "kill -9 -1 inside reaches nothing outside, not even the same uid",
  ...real,
  fn: async () => {
    // A host process of the sandbox uid: kill(-1) would reach it without
    // the pid namespace.
    const neighbour = new Deno.Command("/usr/bin/setpriv", {
      args: [
        `--reuid=${SANDBOX_UID}`,
        `--regid=${SANDBOX_UID}`,
        "--clear-groups",
        "/bin/sleep",
        "60",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // kill(-1) spares the caller: the sandbox's other process dies.
      const outcome = await sh(
        '/bin/sleep 60 & kill -9 -1; wait $!; echo "sleep ended with $?"',
      );
      assert.equal(outcome.stdout, "sleep ended with 137\n", outcome.stderr);
      assert.equal(
        (await Deno.readTextFile(`/proc/${neighbour.pid}/stat`)).split(" ")[2],
        "S",
      );
    } finally {
      neighbour.kill("SIGKILL");
      await neighbour.status;
    }
  },
});

Deno.test({
  name:
    "no variable of the host reaches the program, nor any process it can read",
  ...real,
  fn: async () => {
    const secret = `kiln-secret-${crypto.randomUUID()}`;
    Deno.env.set("KILN_TOKEN", secret);
    try {
      await withWorkdir(async (workdir) => {
        const [command, ...args] = [
          ...prefixFor(workdir, {
            env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" },
          }),
          "/bin/sh",
          "-c",
          'env; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat "$f" 2>/dev/null; echo; done',
        ];
        // Unlike the launcher, bwrap is given the whole host environment here.
        const output = await new Deno.Command(command!, {
          args,
          stdin: "null",
        }).output();
        const stdout = new TextDecoder().decode(output.stdout);
        assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
        const env = stdout.split("\n").slice(0, 3).sort();
        assert.deepEqual(env, [
          "LANG=C.UTF-8",
          "PATH=/usr/bin:/bin",
          `PWD=${workdir}`,
        ]);
        assert.ok(!stdout.includes(secret), stdout);
        assert.ok(!stdout.includes("KILN_TOKEN"), stdout);
      });
    } finally {
      Deno.env.delete("KILN_TOKEN");
    }
  },
});

Deno.test({
  name: "killing bwrap's parent kills the sandboxed program",
  ...real,
  fn: async () => {
    await withWorkdir(async (workdir) => {
      // A shell stands in for kiln as bwrap's parent.
      const parent = new Deno.Command("/bin/sh", {
        args: [
          "-c",
          '"$@" & wait',
          "sh",
          ...prefixFor(workdir),
          "/bin/sh",
          "-c",
          "echo ready; exec /bin/sleep 1000",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = parent.stdout.getReader();
      const first = await reader.read();
      assert.equal(new TextDecoder().decode(first.value), "ready\n");
      // "ready" comes just before the shell execs sleep: wait for the exec.
      const sleeper = await waitForDescendant(parent.pid, "sleep");
      assert.ok(sleeper !== undefined, "the sandboxed sleep is running");

      Deno.kill(parent.pid, "SIGKILL");
      await parent.status;
      // The pipe closes once every process holding it, sleep included, is
      // dying; a dying process closes its files a moment before it is a
      // zombie, so its end is then awaited in /proc, for a bounded time.
      while (!(await reader.read()).done) { /* drain */ }
      const until = performance.now() + 10_000;
      while (await isLive(sleeper) && performance.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.ok(!(await isLive(sleeper)), `sleep ${sleeper} survived`);
    });
  },
});

for (const language of ["python", "java", "javascript"]) {
  const resolution = await createDefaultRegistry().resolve(language);
  if (!resolution.ok) {
    // deno-lint-ignore no-console
    console.log(
      `skipping ${language} in the sandbox: ${resolution.reason}`,
    );
  }
  Deno.test({
    name:
      `a ${language} hello world runs in the sandbox, toolchain bound read-only`,
    ignore: !bwrap.available || !resolution.ok,
    fn: async () => {
      if (!resolution.ok) return;
      const { runner, toolchain } = resolution.resolved;
      const source = HELLO[language]!;
      const { files, entry } = runner.arrange?.([source], source.name) ??
        { files: [source], entry: source.name };
      const readOnlyPaths = await toolchainRoots(
        Object.values(toolchain.executables),
      );
      await withWorkdir(async (workdir) => {
        for (const file of files) {
          await Deno.writeTextFile(join(workdir, file.name), file.content);
        }
        await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
        const context = {
          workdir,
          entry,
          files: files.map((f) => f.name),
          args: [],
          toolchain,
          memoryMb: 512,
        };
        const step = async (spec: ReturnType<typeof runner.run>) => {
          const [command, ...args] = [
            ...prefixFor(workdir, {
              readOnlyPaths,
              env: jobEnvironment(workdir, spec.env),
            }),
            // rlimits inside the sandbox, on the program only.
            ...prlimitPrefix({ cpuSeconds: 10, openFiles: 256 }),
            spec.command,
            ...spec.args,
          ];
          return await launch({ command: command!, args }, {
            cwd: "/",
            env: {},
            wallTimeMs: 30_000,
            outputBytes: 1 << 20,
          });
        };
        if (runner.compile) {
          const compiled = await step(runner.compile(context));
          assert.equal(compiled.exitCode, 0, compiled.stderr);
        }
        const outcome = await step(runner.run(context));
        assert.equal(outcome.stderr, "");
        assert.equal(outcome.stdout, "Hello, world!\n");
        assert.equal(outcome.exitCode, 0);
      });
    },
  });
}

const HELLO: Record<string, { name: string; content: string }> = {
  python: { name: "main.py", content: 'print("Hello, world!")\n' },
  java: {
    name: "prog.java",
    content:
      'public class Main { public static void main(String[] a) { System.out.println("Hello, world!"); } }\n',
  },
  javascript: { name: "main.js", content: 'console.log("Hello, world!");\n' },
};

/** The pid of a live descendant of `root` running `comm`, found through /proc. */
async function findDescendant(
  root: number,
  comm: string,
): Promise<number | undefined> {
  const children = new Map<number, number[]>();
  const names = new Map<number, string>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const close = stat.lastIndexOf(")");
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      const pid = Number(entry.name);
      names.set(pid, stat.slice(stat.indexOf("(") + 1, close));
      children.set(ppid, [...children.get(ppid) ?? [], pid]);
    } catch {
      // Exited while we looked.
    }
  }
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    if (pid !== root && names.get(pid) === comm) return pid;
    queue.push(...children.get(pid) ?? []);
  }
  return undefined;
}

/**
 * {@linkcode findDescendant}, asked again until it answers: the kernel has
 * no event for "this process exec'd", so /proc is read until it shows, for
 * at most `deadlineMs`.
 */
async function waitForDescendant(
  root: number,
  comm: string,
  deadlineMs = 10_000,
): Promise<number | undefined> {
  const until = performance.now() + deadlineMs;
  while (true) {
    const pid = await findDescendant(root, comm);
    if (pid !== undefined || performance.now() > until) return pid;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** True while `pid` exists and is not a zombie. */
async function isLive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !==
      "Z";
  } catch {
    return false;
  }
}
