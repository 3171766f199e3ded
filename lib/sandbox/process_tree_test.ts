import assert from "node:assert/strict";
import { DEFAULT_UID_RANGE } from "./identity.ts";
import {
  isProcessAlive,
  killProcessTree,
  processesOfUids,
  processesOfUser,
} from "./process_tree.ts";

const PYTHON = "/usr/bin/python3";
const SETPRIV = "/usr/bin/setpriv";
const canSwitchUid = Deno.uid() === 0 && Deno.build.os === "linux" &&
  exists(SETPRIV) && exists(PYTHON);

/** A uid of its own per test process, far from any node's first block. */
const UID = DEFAULT_UID_RANGE.first + 65_536 * (7200 + Deno.pid % 3000);

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `code` (Python) as `uid` until its stdin closes; resolves once it
 * printed its first line, i.e. did what it does before it waits.
 */
async function runAs(
  uid: number,
  code: string,
): Promise<AsyncDisposable & { pid: number }> {
  const child = new Deno.Command(SETPRIV, {
    args: [
      `--reuid=${uid}`,
      `--regid=${uid}`,
      "--clear-groups",
      "--",
      PYTHON,
      "-c",
      code,
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  // The line may come in pieces (print writes "up" and "\n" apart).
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  assert.match(text, /^up\n/);
  return {
    pid: child.pid,
    async [Symbol.asyncDispose]() {
      await child.stdin.close();
      await child.status;
      reader.releaseLock();
      await child.stdout.cancel();
    },
  };
}

/** Python that waits for its stdin to close, reading it on a thread. */
const PRELUDE = `
import ctypes, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
`;

Deno.test({
  name:
    "processesOfUids() finds a process of the uid that made itself non-dumpable",
  ignore: !canSwitchUid,
  async fn() {
    // PR_SET_DUMPABLE 0: the files in /proc/<pid> turn root's.
    await using job = await runAs(
      UID,
      `${PRELUDE}
assert libc.prctl(4, 0, 0, 0, 0) == 0
print("up", flush=True)
sys.stdin.read()
`,
    );
    assert.equal(Deno.statSync(`/proc/${job.pid}/status`).uid, 0);
    assert.deepEqual(processesOfUser(UID), [job.pid]);
    assert.deepEqual(processesOfUids({ first: UID - 1, last: UID + 1 }), [
      job.pid,
    ]);
    assert.deepEqual(processesOfUids({ first: UID + 1, last: UID + 2 }), []);
  },
});

Deno.test({
  name:
    "processesOfUids() finds a process whose main thread exited while another runs",
  ignore: !canSwitchUid || Deno.build.arch !== "x86_64",
  async fn() {
    // exit(2) of the main thread alone (SYS_exit, 60 on x86-64): /proc
    // shows the process as a zombie, yet its other thread runs on.
    await using job = await runAs(
      UID,
      `${PRELUDE}
threading.Thread(target=sys.stdin.read).start()
print("up", flush=True)
libc.syscall(60, 0)
`,
    );
    let status = "";
    for (let i = 0; i < 200 && !/^State:\s+Z/m.test(status); i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      status = Deno.readTextFileSync(`/proc/${job.pid}/status`);
    }
    assert.match(status, /^State:\s+Z/m);
    assert.equal(await isProcessAlive(job.pid), false);
    assert.deepEqual(processesOfUser(UID), [job.pid]);
  },
});

Deno.test({
  name: "processesOfUids() leaves out a zombie of the uid",
  ignore: !canSwitchUid,
  async fn() {
    // A root shell that never reaps its child, which ran as the uid.
    const parent = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        `${SETPRIV} --reuid=${UID} --regid=${UID} --clear-groups /bin/true & echo $!; exec sleep 60`,
      ],
      stdout: "piped",
    }).spawn();
    const reader = parent.stdout.getReader();
    try {
      const { value } = await reader.read();
      const zombie = Number(new TextDecoder().decode(value).trim());
      let state = "";
      for (let i = 0; i < 200 && state !== "Z"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        state = /^State:\s+(\S)/m.exec(
          Deno.readTextFileSync(`/proc/${zombie}/status`),
        )?.[1] ?? "";
      }
      assert.equal(state, "Z");
      assert.equal(Deno.statSync(`/proc/${zombie}`).uid, UID);
      assert.deepEqual(processesOfUser(UID), []);
    } finally {
      reader.releaseLock();
      await killProcessTree(parent.pid);
      parent.kill("SIGKILL");
      await parent.status;
      await parent.stdout.cancel();
    }
  },
});
