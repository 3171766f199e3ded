/**
 * Every job has an identity of its own (issue 11, item 5): jobs that run at
 * the same time never share a uid, nothing a job leaves tied to its uid (a
 * key in its user keyring) reaches a later job, a per-uid kernel limit one
 * job exhausts (inotify instances) is not another job's, the workdir is
 * still removed, and no process of any job's uid is left.
 *
 * Real jobs through `executeJob` in the host's real sandbox. Skipped, and
 * saying why, without the namespace layer (unless the CI demands it).
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDefaultRegistry,
  executeJob,
  type JobRequest,
  type JobResult,
} from "../mod.ts";
import type { ExecuteOptions } from "../lib/executor.ts";
import { DEFAULT_UID_RANGE, type UidRange } from "../lib/sandbox/identity.ts";
import { InputChannel } from "../lib/sandbox/input_channel.ts";
import { Sandbox } from "../lib/sandbox/sandbox.ts";

const required = Deno.env.get("KILN_TEST_REQUIRE_SANDBOX") === "1";
/**
 * A one-uid range of its own, away from the default block other kiln
 * processes on this host claim first: every job of `reusing` gets the same
 * uid, so what one job leaves in it meets the next, unless it is scrubbed.
 * Its seccomp filter, which denies the keyring calls, is left out: the
 * identity layer must hold on its own.
 */
const ONE_UID = DEFAULT_UID_RANGE.first + 65_536 * (16 + Deno.pid % 4000);
const [sandbox, reusing] = await Promise.all([
  Sandbox.detect({ require: required }),
  Sandbox.detect({
    uidRange: { first: ONE_UID, last: ONE_UID },
    without: ["seccomp"],
  }),
]);
const registry = createDefaultRegistry();
const python = await registry.resolve("python");
const bash = await registry.resolve("bash");
const workRoot = await Deno.makeTempDir({ prefix: "kiln-identity-test-" });

const missing = [
  sandbox.layers.includes("namespaces")
    ? undefined
    : `sandbox layer "namespaces" is missing: ${sandbox.report.missing.namespaces}`,
  python.ok ? undefined : "python is unavailable here",
  bash.ok ? undefined : "bash is unavailable here",
].filter((why) => why !== undefined).join("; ");
if (missing) console.log(`skipping the job identity tests: ${missing}`);

function identityTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: missing !== "", fn });
}

/** Runs one job in `box` and returns its result. */
function run(
  language: "python" | "bash",
  code: string,
  options: ExecuteOptions & { box?: Sandbox } = {},
): Promise<JobResult> {
  const resolved = language === "python" ? python : bash;
  if (!resolved.ok) throw new Error(resolved.reason);
  const request: JobRequest = {
    language,
    files: [{
      name: language === "python" ? "main.py" : "main.sh",
      content: code,
    }],
  };
  const { box = sandbox, ...rest } = options;
  return executeJob(resolved.resolved, request, {
    sandbox: box,
    workRoot,
    ...rest,
  });
}

/**
 * Starts a job that prints, then holds until its stdin ends: the returned
 * promise resolves with its first output line, while it still runs.
 */
function held(
  language: "python" | "bash",
  code: string,
  box: Sandbox = sandbox,
): { line: Promise<string>; release: () => Promise<JobResult> } {
  const input = new InputChannel();
  let printed = "";
  const { promise: line, resolve } = Promise.withResolvers<string>();
  const result = run(language, code, {
    box,
    input,
    onOutput: (stream, data) => {
      if (stream !== "stdout") return;
      printed += data;
      if (printed.includes("\n")) resolve(printed.split("\n")[0]!);
    },
  });
  // A job that ends before it prints must not leave the test waiting.
  result.then((done) => resolve(`ended: ${JSON.stringify(done)}`));
  return {
    line,
    release: () => {
      input.end();
      return result;
    },
  };
}

const explain = (result: JobResult) =>
  JSON.stringify({
    verdict: result.verdict,
    reason: result.reason,
    stdout: result.stdout.slice(0, 400),
    stderr: result.stderr.slice(0, 400),
  });

identityTest(
  "two jobs that run at the same time have different uids",
  async () => {
    const first = held("bash", "id -u; read -r _ || true");
    const firstUid = await first.line;
    // The first job is still running (it waits for its stdin).
    const second = await run("bash", "id -u");
    assert.equal(second.verdict, "ok", explain(second));
    const done = await first.release();
    assert.equal(done.verdict, "ok", explain(done));
    assert.match(firstUid, /^\d+$/);
    assert.notEqual(second.stdout.trim(), firstUid);
    for (const uid of [Number(firstUid), Number(second.stdout)]) {
      assert.notEqual(uid, 65534, "a job ran as the shared uid 65534");
      assert.ok(within(uid, sandbox.uidBlock!), `uid ${uid} is not the node's`);
    }
  },
);

/** Adds a key to the user keyring (`added`), or says the kernel refused it (`denied`, as under seccomp). */
const ADD_KEY = String.raw`
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY = {"x86_64": 248, "aarch64": 217}[platform.machine()]
data = b"job-a-secret"
serial = libc.syscall(ADD_KEY, b"user", b"kiln-identity", data, len(data), ctypes.c_long(-4))
print("added" if serial > 0 else "denied %d" % ctypes.get_errno(), os.getuid())
`;

/** Looks for that key in the user keyring: `found` and its payload, or `absent`. */
const FIND_KEY = String.raw`
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
KEYCTL = {"x86_64": 250, "aarch64": 219}[platform.machine()]
serial = libc.syscall(KEYCTL, 10, ctypes.c_long(-4), b"user", b"kiln-identity", 0)
if serial > 0:
    buffer = ctypes.create_string_buffer(64)
    size = libc.syscall(KEYCTL, 11, ctypes.c_long(serial), buffer, 64)
    print("found", buffer.raw[:max(size, 0)].decode(), os.getuid())
else:
    print("absent", os.getuid())
`;

identityTest(
  "a key one job adds to its user keyring is not seen by a later job, even with the same uid",
  async () => {
    for (const box of [sandbox, reusing]) {
      const added = await run("python", ADD_KEY, { box });
      assert.equal(added.verdict, "ok", explain(added));
      assert.match(added.stdout, /^(added|denied \d+) \d+\n$/);
      const found = await run("python", FIND_KEY, { box });
      assert.equal(found.verdict, "ok", explain(found));
      assert.match(found.stdout, /^absent \d+\n$/, explain(found));
      if (box === reusing) {
        // No filter: the key was added. One uid only: the later job had
        // the same uid, scrubbed.
        assert.match(added.stdout, /^added /, explain(added));
        assert.equal(found.stdout, `absent ${ONE_UID}\n`);
        assert.equal(added.stdout, `added ${ONE_UID}\n`);
      }
    }
  },
);

/** Takes every inotify instance its uid may have, says how many, then holds them. */
const TAKE_INOTIFY = String.raw`
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
print("holding", len(fds), "then errno", ctypes.get_errno(), flush=True)
sys.stdin.read()
`;

const ONE_INOTIFY = String.raw`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print("ok" if fd >= 0 else "errno %d" % ctypes.get_errno())
`;

identityTest(
  "a job holding every inotify instance of its uid leaves a concurrent job its own",
  async () => {
    const hog = held("python", TAKE_INOTIFY);
    const line = await hog.line;
    // EMFILE (24) at the per-uid limit, not at the job's open files limit.
    const max = Number(
      (await Deno.readTextFile("/proc/sys/fs/inotify/max_user_instances"))
        .trim(),
    );
    const match = /^holding (\d+) then errno 24$/.exec(line);
    assert.ok(match, `the hog did not take every instance: ${line}`);
    assert.ok(Number(match[1]) <= max);
    const other = await run("python", ONE_INOTIFY);
    const done = await hog.release();
    assert.equal(other.verdict, "ok", explain(other));
    assert.equal(other.stdout, "ok\n", explain(other));
    assert.equal(done.verdict, "ok", explain(done));
  },
);

identityTest(
  "the workdir belongs to the job's uid and is removed, whatever the job made of it",
  async () => {
    const result = await run(
      "bash",
      [
        "id -u",
        "stat -c %u .",
        "mkdir -p a/b/c && echo x > a/b/c/f && chmod 000 a/b a",
        "ln -s / root-link",
      ].join("\n"),
    );
    assert.equal(result.verdict, "ok", explain(result));
    const [uid, owner] = result.stdout.trim().split("\n");
    assert.equal(owner, uid, "the workdir is not the job's");
    assert.notEqual(uid, "65534");
    assert.deepEqual(await entries(workRoot), [], "a workdir was left");
  },
);

identityTest(
  "nothing is left: no process of any job's uid, no workdir, no claim",
  async () => {
    const blocks = [sandbox.uidBlock!, reusing.uidBlock!];
    assert.deepEqual(await processesIn(blocks), []);
    assert.deepEqual(await entries(workRoot), []);
    // Other sandboxes of this process (other test files) may hold claims.
    const ours = async () =>
      (await entries("/run/kiln/uid-blocks")).filter((name) =>
        name.startsWith(`${Deno.pid}-`)
      );
    const before = await ours();
    await sandbox.close();
    await reusing.close();
    const after = await ours();
    assert.equal(before.length - after.length, 2, "a claim was not given back");
    await Deno.remove(workRoot);
  },
);

function within(uid: number, range: UidRange): boolean {
  return uid >= range.first && uid <= range.last;
}

async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names;
}

/** Live processes whose real uid is in one of `ranges`. */
async function processesIn(ranges: UidRange[]): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const status = await Deno.readTextFile(join("/proc", entry.name, "status"))
      .catch(() => "");
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    if (state !== "Z" && ranges.some((range) => within(uid, range))) {
      found.push(`${entry.name}: ${status.split("\n")[0]}`);
    }
  }
  return found;
}
