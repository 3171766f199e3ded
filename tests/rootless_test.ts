/**
 * A node that is not root, as a new user would start one: on a host where
 * a root node already made the kiln cgroups, as `nobody` (when the test
 * runs as root; else as the test's own user). Detection proves each layer
 * by using it: cgroups it cannot write are reported missing with the
 * reason instead of failing every job, and bubblewrap in an unprivileged
 * user namespace still gives the job namespaces, seccomp, no capability
 * and a read-only system.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { detectCgroups } from "../lib/sandbox/cgroup.ts";

/** The uid the node runs as: nobody when the test runs as root. */
const NODE_UID = Deno.uid() === 0 ? 65534 : Deno.uid()!;

/** The node: detects its sandbox, runs one bash job, prints what it saw. */
const NODE = `
import { createDefaultRegistry } from "${new URL(
  "../lib/runners/registry.ts",
  import.meta.url,
)}";
import { executeJob } from "${new URL("../lib/executor.ts", import.meta.url)}";
import { Sandbox } from "${new URL(
  "../lib/sandbox/sandbox.ts",
  import.meta.url,
)}";
import { detectBubblewrap } from "${new URL(
  "../lib/sandbox/bubblewrap.ts",
  import.meta.url,
)}";
import { removeWorkRoot } from "${new URL(
  "../lib/sandbox/work_root.ts",
  import.meta.url,
)}";
const [job, refusingSysctl] = Deno.args;
const sandbox = await Sandbox.detect();
const bash = await createDefaultRegistry().resolve("bash");
if (!bash.ok) throw new Error(bash.reason);
const result = await executeJob(bash.resolved, {
  language: "bash",
  files: [{ name: "main.sh", content: job }],
}, { sandbox });
// A pty limit of 0 needs no mount of the node's: a job then has no pty.
const noPtys = await executeJob(bash.resolved, {
  language: "bash",
  files: [{ name: "main.sh", content: "test -e /dev/ptmx || echo 'no pty'" }],
  limits: { ptys: 0 },
}, { sandbox });
const removalFailures = sandbox.removalFailures;
await sandbox.close();
await removeWorkRoot();
let required = null;
try {
  await (await Sandbox.detect({ require: true })).close();
} catch (error) {
  required = error.message;
}
const refused = await detectBubblewrap({ sysctlRoot: refusingSysctl });
Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify({
  report: sandbox.report, result, noPtys, required, refused, removalFailures,
})));
`;

/** The job: who it is, what the kernel lets it do, what it can see. */
const JOB = (secret: string) =>
  [
    "id -u",
    "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status",
    // EPERM is seccomp's answer (bwrap made its own user namespace before
    // loading the filter); --disable-userns alone would answer ENOSPC.
    "unshare -U true 2>&1 || true",
    "echo pid 1 is $(cat /proc/1/comm)",
    "cat /proc/[0-9]*/comm | grep -qx deno && echo 'node visible'",
    "echo interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1)",
    "touch /usr/kiln-rootless 2>/dev/null || echo 'system read-only'",
    `cat ${secret} 2>/dev/null || echo 'node file unseen'`,
    "mkdir locked && touch locked/file && chmod 000 locked && echo locked",
    "test -e /dev/ptmx && echo 'bwrap ptys'",
  ].join("\n");

/** Runs `script` as the node's user, with a home and a DENO_DIR of its own. */
async function runAsNode(
  home: string,
  script: string,
  args: string[],
): Promise<Deno.CommandOutput> {
  // The npm packages the script imports, from the test's own cache (a
  // root-only directory): the node user may not read it, and there is no
  // network to fetch them.
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
  }).output();
  const npmCache = JSON.parse(new TextDecoder().decode(info.stdout)).npmCache;
  const registry = join(home, "deno", "npm", "registry.npmjs.org");
  await Deno.mkdir(registry, { recursive: true });
  for (const name of ["@logtape", "zod"]) {
    const copied = await new Deno.Command("/bin/cp", {
      args: ["-r", join(npmCache, "registry.npmjs.org", name), registry],
    }).output();
    assert.ok(copied.success, new TextDecoder().decode(copied.stderr));
  }
  await Deno.writeTextFile(join(home, "node.ts"), script);
  if (Deno.uid() === 0) {
    const owned = await new Deno.Command("/bin/chown", {
      args: ["-R", `${NODE_UID}:${NODE_UID}`, home],
    }).output();
    assert.ok(owned.success);
  }
  const deno = [
    Deno.execPath(),
    "run",
    "-A",
    "--cached-only",
    "--no-lock",
    "--config",
    new URL("../deno.json", import.meta.url).pathname,
    join(home, "node.ts"),
    ...args,
  ];
  const [command, ...rest] = Deno.uid() === 0
    ? [
      "/usr/bin/setpriv",
      `--reuid=${NODE_UID}`,
      `--regid=${NODE_UID}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--",
      ...deno,
    ]
    : deno;
  return await new Deno.Command(command!, {
    args: rest,
    cwd: home,
    clearEnv: true,
    env: {
      PATH: "/usr/bin:/bin",
      HOME: home,
      TMPDIR: home,
      DENO_DIR: join(home, "deno"),
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("a node that is not root, where root made the kiln cgroups, reports no cgroups and runs its jobs in a user namespace", async () => {
  // What a root node leaves behind: the kiln parent cgroups.
  const root = await detectCgroups();
  const home = await Deno.makeTempDir({ prefix: "kiln-rootless-test-" });
  try {
    await Deno.chmod(home, 0o700);
    const secret = join(home, "secret");
    await Deno.writeTextFile(secret, "the node's own file\n", { mode: 0o600 });
    // A kernel that refuses user namespaces, as Debian's sysctl says it.
    const sysctl = join(home, "sysctl");
    await Deno.mkdir(join(sysctl, "kernel"), { recursive: true });
    await Deno.writeTextFile(
      join(sysctl, "kernel", "unprivileged_userns_clone"),
      "0\n",
    );
    const output = await runAsNode(home, NODE, [JOB(secret), sysctl]);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.ok(output.success, stderr);
    const { report, result, noPtys, required, refused, removalFailures } = JSON
      .parse(
        new TextDecoder().decode(output.stdout),
      );

    // Cgroups it cannot use are missing, with the reason, never "working".
    assert.ok(!report.layers.includes("cgroups"), JSON.stringify(report));
    assert.match(report.missing.cgroups, new RegExp(`uid ${NODE_UID}`));
    if (root.available && root.version === 1) {
      assert.match(
        report.missing.cgroups,
        /cannot create a cgroup with limits in .*\/kiln.*Permission denied/,
      );
    }
    // ... and --require-sandbox refuses to start with that reason.
    assert.match(required, /--require-sandbox needs the "cgroups" layer: /);

    // The job runs, in fewer layers, instead of ending internal_error.
    assert.equal(result.verdict, "ok", JSON.stringify(result));
    assert.deepEqual(result.sandbox, report.layers);
    assert.ok(report.layers.includes("namespaces"), JSON.stringify(report));
    assert.ok(report.layers.includes("seccomp"), JSON.stringify(report));
    assert.ok(report.layers.includes("rlimits"), JSON.stringify(report));
    assert.match(report.backends.namespaces, /rootless/);
    const lines: string[] = result.stdout.trim().split("\n");
    assert.deepEqual(lines, [
      `${NODE_UID}`,
      "CapEff:\t0000000000000000",
      "CapBnd:\t0000000000000000",
      "NoNewPrivs:\t1",
      "Seccomp:\t2",
      "unshare: unshare failed: Operation not permitted",
      "pid 1 is bwrap",
      "interfaces lo",
      "system read-only",
      "node file unseen",
      "locked",
      "bwrap ptys",
    ]);
    // No devpts of its own per job without root; none at all at a limit of 0.
    assert.match(
      report.missing.ptys,
      new RegExp(
        `devpts with max= per job needs root \\(running as uid ${NODE_UID}\\)`,
      ),
    );
    assert.equal(noPtys.verdict, "ok", JSON.stringify(noPtys));
    assert.equal(noPtys.stdout, "no pty\n", JSON.stringify(noPtys));

    // A kernel that refuses user namespaces is named, with the setting.
    assert.equal(refused.available, false);
    assert.match(refused.reason, /kernel\.unprivileged_userns_clone = 0/);

    // The job's workdir, chmod-ed as it was, is gone; nothing left behind.
    assert.equal(removalFailures, 0);
    const left: string[] = [];
    for await (const entry of Deno.readDir(home)) left.push(entry.name);
    assert.deepEqual(left.sort(), ["deno", "node.ts", "secret", "sysctl"]);
  } finally {
    await Deno.remove(home, { recursive: true });
    if (root.available) await root.removeParent();
  }
});
