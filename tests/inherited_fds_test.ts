/**
 * Descriptors kiln inherited never reach a job: a node started with fd 7
 * open on a root-only file and fd 12 open for writing on its launcher's
 * log runs a job that tries to read the one and write the other.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

/** The node: runs one bash job in the named sandbox and prints its result. */
const NODE = (sandbox: string) => `
import { createDefaultRegistry } from "${new URL(
  "../mod.ts",
  import.meta.url,
)}";
import { executeJob } from "${new URL("../lib/executor.ts", import.meta.url)}";
import { defaultSandbox, Sandbox } from "${new URL(
  "../lib/sandbox/sandbox.ts",
  import.meta.url,
)}";
const sandbox = ${
  sandbox === "none" ? "Sandbox.none()" : "await defaultSandbox()"
};
const bash = await createDefaultRegistry().resolve("bash");
if (!bash.ok) throw new Error(bash.reason);
const result = await executeJob(bash.resolved, {
  language: "bash",
  files: [{ name: "main.sh", content: ${JSON.stringify(JOB)} }],
}, { sandbox, workRoot: Deno.args[0] });
Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(result)));
await sandbox.close();
`;

/** The job: what it can see, read and write through fds 7 and 12. */
const JOB = [
  'for fd in 7 12; do [ -e /proc/self/fd/$fd ] && echo "fd $fd open"; done',
  "cat <&7",
  "echo written-by-the-job >&12",
  "echo end",
].join("\n");

for (const sandbox of ["default", "none"]) {
  Deno.test(`a job in the ${sandbox} sandbox gets no descriptor kiln inherited`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-fds-test-" });
    try {
      const secret = join(dir, "secret");
      const launcherLog = join(dir, "launcher.log");
      await Deno.writeTextFile(secret, "the-root-only-secret\n", {
        mode: 0o600,
      });
      await Deno.writeTextFile(launcherLog, "");
      const workRoot = join(dir, "jobs");
      await Deno.mkdir(workRoot, { mode: 0o700 });
      // The launcher opens fds 7 and 12 and execs the node with them.
      const output = await new Deno.Command("/bin/bash", {
        args: [
          "-c",
          'exec 7<"$1" 12>>"$2"; shift 2; exec "$@"',
          "launcher",
          secret,
          launcherLog,
          Deno.execPath(),
          "eval",
          NODE(sandbox),
          workRoot,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.ok(output.success, stderr);
      const result = JSON.parse(new TextDecoder().decode(output.stdout));
      assert.doesNotMatch(result.stdout, /secret|fd \d+ open/, result.stdout);
      assert.match(result.stdout, /end\n$/);
      assert.match(result.stderr, /Bad file descriptor/);
      assert.equal(await Deno.readTextFile(launcherLog), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
