import assert from "node:assert/strict";
import { assertCompletes } from "../_completes_testing.ts";
import {
  executableFor,
  fileArg,
  findExecutable,
  firstLine,
  JOB_PATH,
  locate,
  notFound,
  probe,
  sourcesWith,
  versionFrom,
} from "./detect.ts";

Deno.test("findExecutable searches PATH in order for executable regular files", async () => {
  const root = await Deno.makeTempDir({ prefix: "kiln-detect-" });
  try {
    for (const dir of ["first", "second"]) await Deno.mkdir(`${root}/${dir}`);
    await Deno.writeTextFile(`${root}/first/tool`, "#!/bin/sh\n", {
      mode: 0o644,
    }); // not executable
    await Deno.mkdir(`${root}/first/dir`); // a directory, even an executable one, is not a program
    await Deno.writeTextFile(`${root}/second/tool`, "#!/bin/sh\n", {
      mode: 0o755,
    });
    await Deno.writeTextFile(`${root}/second/dir`, "#!/bin/sh\n", {
      mode: 0o755,
    });
    const searchPath =
      `relative:${root}/missing::${root}/first:${root}/second/`;

    assert.equal(
      await findExecutable("tool", { searchPath }),
      `${root}/second/tool`,
    );
    assert.equal(
      await findExecutable("dir", { searchPath }),
      `${root}/second/dir`,
    );
    assert.equal(await findExecutable("nothing", { searchPath }), undefined);
    assert.equal(await findExecutable("", { searchPath }), undefined);
    assert.equal(
      await findExecutable(`${root}/second/tool`),
      `${root}/second/tool`,
      "an absolute path is checked as is",
    );
    assert.equal(await findExecutable(`${root}/first/tool`), undefined);
    assert.equal(
      await findExecutable("second/tool", { searchPath: root }),
      undefined,
      "no relative paths",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("findExecutable finds sh on the job PATH", async () => {
  const sh = await findExecutable("sh", { searchPath: JOB_PATH });
  assert.ok(sh?.endsWith("/sh"), sh);
});

Deno.test("probe captures output in the bare job environment", async () => {
  const result = await probe("/bin/sh", [
    "-c",
    'echo "$PATH|$LANG|${HOME-unset}"; echo err >&2',
  ]);
  assert.deepEqual(result, {
    ok: true,
    stdout: `${JOB_PATH}|C.UTF-8|unset\n`,
    stderr: "err\n",
  });
  const inherited = await probe("/bin/sh", ["-c", 'echo "${HOME-unset}"'], {
    inheritEnv: true,
  });
  assert.ok(
    inherited.ok && inherited.stdout !== "unset\n",
    "inheritEnv passes this process's environment",
  );
});

Deno.test("probe reports failures as reasons instead of throwing", async () => {
  assert.deepEqual(await probe("/bin/sh", ["-c", "echo nope >&2; exit 4"]), {
    ok: false,
    reason: '"/bin/sh -c echo nope >&2; exit 4" exited with code 4: nope',
  });
  const missing = await probe("/nonexistent/tool", ["--version"]);
  assert.ok(
    !missing.ok &&
      missing.reason.startsWith('cannot run "/nonexistent/tool --version": '),
    String(missing),
  );
  assert.deepEqual(
    await probe("/bin/sh", ["-c", "sleep 5 & wait"], { timeoutMs: 100 }),
    {
      ok: false,
      reason: '"/bin/sh -c sleep 5 & wait" timed out after 100 ms',
    },
  );
});

Deno.test("locate finds and probes an executable, or says why not", async () => {
  const found = await locate("sh", ["-c", "echo 1.2.3"], {
    searchPath: JOB_PATH,
  });
  assert.ok(
    found.ok && found.path.startsWith("/") && found.stdout === "1.2.3\n",
  );
  assert.deepEqual(
    await locate("kiln-no-such-tool", ["--version"], { searchPath: JOB_PATH }),
    {
      ok: false,
      reason: 'executable "kiln-no-such-tool" not found on PATH',
    },
  );
});

Deno.test("version banners are tidied", () => {
  assert.equal(firstLine("\n \n  javac 17.0.15 \nmore"), "javac 17.0.15");
  assert.equal(firstLine(" \n"), undefined);
  assert.equal(
    versionFrom(
      "bash",
      "GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n",
    ),
    "bash 5.2.15",
  );
  assert.equal(
    versionFrom("rustc", "rustc 1.95.0 (59807616e 2026-04-14)"),
    "rustc 1.95.0",
  );
  assert.equal(versionFrom("tool", "tool nightly\n"), "tool nightly");
  assert.equal(versionFrom("tool", ""), "tool");
});

Deno.test("small helpers", () => {
  assert.deepEqual(notFound("javac"), {
    available: false,
    reason: 'executable "javac" not found on PATH',
  });
  assert.equal(fileArg("main.c"), "main.c");
  assert.equal(fileArg("-o.c"), "./-o.c");
  assert.equal(fileArg("@opts.c"), "./@opts.c");
  assert.deepEqual(sourcesWith(["a.c", "b.h", "C.C", ".c", "d.cc"], [".c"]), [
    "a.c",
    "C.C",
  ]);
  const toolchain = {
    available: true,
    version: "x 1",
    executables: { compiler: "/bin/x" },
  } as const;
  assert.equal(executableFor(toolchain, "compiler"), "/bin/x");
  assert.throws(() => executableFor(toolchain, "runtime"), {
    name: "TypeError",
    message: /no "runtime" executable/,
  });
});

Deno.test("versionFrom reads a long banner in time linear in it", async () => {
  assert.equal(versionFrom("tool", "build 12345 of tool 1.2"), "tool 1.2");
  // A banner is a toolchain's output, read on the node's event loop. The old
  // /\d+(?:\.\d+)+/ took 5 s on 64 KiB of digits with no dot (11 minutes at
  // 1 MiB), far past the 60 s deadline of assertCompletes.
  const module = JSON.stringify(import.meta.resolve("./detect.ts"));
  await assertCompletes(`
    import { versionFrom } from ${module};
    versionFrom("tool", "1".repeat(1024 * 1024));
  `);
});
