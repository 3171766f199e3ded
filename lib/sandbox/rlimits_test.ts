import assert from "node:assert/strict";
import { join } from "node:path";
import { detectPrlimit, prlimitPrefix, type Rlimits } from "./rlimits.ts";

const prlimit = await detectPrlimit();
if (!prlimit.available) {
  // deno-lint-ignore no-console
  console.log(`skipping real rlimit tests: ${prlimit.reason}`);
}
const real = { ignore: !prlimit.available };

/** Runs `command` under `limits`, returning its status and output. */
async function runLimited(
  limits: Rlimits,
  command: string,
  args: string[],
  cwd?: string,
) {
  const [cmd, ...rest] = [...prlimitPrefix(limits), command, ...args];
  const output = await new Deno.Command(cmd!, {
    args: rest,
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin" },
    stdin: "null",
    ...cwd ? { cwd } : {},
  }).output();
  return {
    ...output,
    stdoutText: new TextDecoder().decode(output.stdout),
    stderrText: new TextDecoder().decode(output.stderr),
  };
}

Deno.test("prlimitPrefix sets soft and hard limits alike, core 0 by default", () => {
  assert.deepEqual(
    prlimitPrefix({ cpuSeconds: 3, fileSizeBytes: 1024, openFiles: 64 }),
    [
      "/usr/bin/prlimit",
      "--cpu=3:4",
      "--fsize=1024:1024",
      "--nofile=64:64",
      "--core=0:0",
      "--",
    ],
  );
  assert.deepEqual(prlimitPrefix({}, "/opt/prlimit"), [
    "/opt/prlimit",
    "--core=0:0",
    "--",
  ]);
  assert.deepEqual(prlimitPrefix({ coreBytes: 4096 }), [
    "/usr/bin/prlimit",
    "--core=4096:4096",
    "--",
  ]);
});

Deno.test("prlimitPrefix never limits the address space", () => {
  const prefix = prlimitPrefix({
    cpuSeconds: 1,
    fileSizeBytes: 1,
    openFiles: 1,
    coreBytes: 1,
  });
  assert.ok(!prefix.some((arg) => arg.startsWith("--as")));
});

Deno.test("prlimitPrefix rejects limits that are not usable integers", () => {
  for (
    const limits of [
      { cpuSeconds: 0 },
      { cpuSeconds: 1.5 },
      { fileSizeBytes: -1 },
      { openFiles: 0 },
      { openFiles: Number.NaN },
      { coreBytes: Infinity },
    ]
  ) {
    assert.throws(() => prlimitPrefix(limits), RangeError);
  }
});

Deno.test("detectPrlimit reports a missing executable by path", async () => {
  assert.deepEqual(await detectPrlimit("/nonexistent/prlimit"), {
    available: false,
    reason: 'executable "/nonexistent/prlimit" not found',
  });
});

Deno.test({
  name: "a CPU-burning loop gets SIGXCPU at its CPU limit",
  ...real,
  fn: async () => {
    const result = await runLimited({ cpuSeconds: 1 }, "/bin/sh", [
      "-c",
      "while :; do :; done",
    ]);
    assert.equal(result.signal, "SIGXCPU", `exit ${result.code}`);
  },
});

Deno.test({
  name: "writing past fileSizeBytes fails",
  ...real,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-rlimits-test-" });
    try {
      const limit = 64 * 1024;
      const result = await runLimited({ fileSizeBytes: limit }, "/bin/dd", [
        "if=/dev/zero",
        `of=${join(dir, "big")}`,
        "bs=16k",
        "count=16",
      ], dir);
      assert.ok(
        result.signal === "SIGXFSZ" ||
          (!result.success && /too large/i.test(result.stderrText)),
        `expected SIGXFSZ or EFBIG, got signal ${result.signal}, exit ${result.code}: ${result.stderrText}`,
      );
      assert.equal((await Deno.stat(join(dir, "big"))).size, limit);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "opening more than openFiles files fails",
  ...real,
  fn: async () => {
    // bash puts `{fd}` redirections at fd 10 and up: with 16 allowed, the
    // seventh open must fail.
    const result = await runLimited({ openFiles: 16 }, "/bin/bash", [
      "-c",
      'ulimit -n; n=0; while [ $n -lt 100 ]; do exec {fd}</dev/null 2>/dev/null || break; n=$((n+1)); done; echo "$n"',
    ]);
    assert.equal(result.code, 0, result.stderrText);
    const [limit, opened] = result.stdoutText.trim().split("\n").map(Number);
    assert.equal(limit, 16);
    assert.ok(opened! < 16, `opened ${opened} files`);
  },
});

Deno.test({
  name: "core dumps are off, soft and hard",
  ...real,
  fn: async () => {
    const result = await runLimited({}, "/bin/sh", [
      "-c",
      "ulimit -c; ulimit -Hc; grep 'core file size' /proc/self/limits",
    ]);
    assert.equal(result.code, 0, result.stderrText);
    const [soft, hard, row] = result.stdoutText.trim().split("\n");
    assert.equal(soft, "0");
    assert.equal(hard, "0");
    assert.match(row!, /core file size\s+0\s+0\s+bytes/);
  },
});

Deno.test({
  name: "prlimit execs the command: the spawned pid is the program's",
  ...real,
  fn: async () => {
    const [cmd, ...args] = [
      ...prlimitPrefix({ cpuSeconds: 5 }),
      "/bin/sh",
      "-c",
      "echo $$",
    ];
    const child = new Deno.Command(cmd!, {
      args,
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).spawn();
    const output = await child.output();
    assert.equal(
      new TextDecoder().decode(output.stdout).trim(),
      `${child.pid}`,
    );
  },
});
