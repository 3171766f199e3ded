import assert from "node:assert/strict";
import { createDefaultRegistry, RunnerRegistry } from "./registry.ts";
import type { LanguageRunner, Toolchain } from "./runner.ts";

const READY: Toolchain = {
  available: true,
  version: "fake 1.0",
  executables: { interpreter: "/bin/true" },
};

/** A runner whose detect() is counted and answers `toolchain` (or what `detect` gives). */
function fakeRunner(
  name: string,
  {
    aliases = [],
    extensions = [`.${name}`],
    detect = () => Promise.resolve(READY),
  }: {
    aliases?: string[];
    extensions?: string[];
    detect?: () => Promise<Toolchain>;
  } = {},
): LanguageRunner & { detections: number } {
  const runner = {
    name,
    aliases,
    extensions,
    detections: 0,
    detect() {
      runner.detections++;
      return detect();
    },
    run: () => ({ command: "/bin/true", args: [] }),
  };
  return runner;
}

Deno.test("RunnerRegistry finds runners by name, alias and extension, in any case", () => {
  const python = fakeRunner("python", {
    aliases: ["py", "Python3"],
    extensions: [".py", ".PYW"],
  });
  const cpp = fakeRunner("cpp", {
    aliases: ["c++"],
    extensions: [".cpp", ".cc"],
  });
  const registry = new RunnerRegistry().register(python).register(cpp);

  assert.equal(registry.get("python"), python);
  assert.equal(registry.get("PY"), python);
  assert.equal(registry.get("python3"), python);
  assert.equal(registry.get(" C++ "), cpp);
  assert.equal(
    registry.get(".py"),
    undefined,
    "get() takes names, not extensions",
  );
  assert.equal(registry.get("cobol"), undefined);

  assert.equal(registry.forFile("main.py"), python);
  assert.equal(registry.forFile("GUI.pyw"), python);
  assert.equal(registry.forFile("a.b.CC"), cpp);
  assert.equal(
    registry.forFile(".py"),
    undefined,
    "a dot file has no extension",
  );
  assert.equal(registry.forFile("main.pyc"), undefined);
  assert.equal(registry.forFile("Makefile"), undefined);

  assert.deepEqual(registry.list(), [python, cpp]);
  registry.list().pop();
  assert.equal(registry.list().length, 2, "list() is a copy");
});

Deno.test("RunnerRegistry.forFile prefers the longest extension", () => {
  const ts = fakeRunner("typescript", { extensions: [".ts"] });
  const dts = fakeRunner("declarations", { extensions: [".d.ts"] });
  const registry = new RunnerRegistry().register(ts).register(dts);
  assert.equal(registry.forFile("main.ts"), ts);
  assert.equal(registry.forFile("lib.d.ts"), dts);
});

Deno.test("RunnerRegistry.register refuses clashes, naming both runners, and changes nothing", () => {
  const registry = new RunnerRegistry().register(
    fakeRunner("python", { aliases: ["py"], extensions: [".py"] }),
  );
  assert.throws(
    () => registry.register(fakeRunner("PYTHON")),
    {
      name: "RangeError",
      message:
        /"PYTHON".*"python" is already a name or alias of runner "python"/,
    },
  );
  assert.throws(
    () => registry.register(fakeRunner("pypy", { aliases: ["Py"] })),
    { name: "RangeError", message: /runner "pypy".*"py".*runner "python"/ },
  );
  assert.throws(
    () =>
      registry.register(fakeRunner("snake", { extensions: [".snake", ".PY"] })),
    {
      name: "RangeError",
      message:
        /runner "snake": extension "\.py" already belongs to runner "python"/,
    },
  );
  assert.equal(
    registry.get("snake"),
    undefined,
    "a refused runner leaves nothing behind",
  );
  assert.equal(registry.forFile("x.snake"), undefined);
  assert.equal(registry.list().length, 1);
});

Deno.test("RunnerRegistry.register refuses malformed names and extensions", () => {
  const registry = new RunnerRegistry();
  assert.throws(() => registry.register(fakeRunner("")), TypeError);
  assert.throws(() => registry.register(fakeRunner(" lua")), TypeError);
  assert.throws(
    () => registry.register(fakeRunner("lua", { aliases: [""] })),
    TypeError,
  );
  assert.throws(
    () => registry.register(fakeRunner("lua", { extensions: ["lua"] })),
    {
      name: "TypeError",
      message: /extension "lua" must start with one dot/,
    },
  );
  assert.throws(
    () => registry.register(fakeRunner("lua", { extensions: ["."] })),
    TypeError,
  );
  assert.throws(
    () => registry.register(fakeRunner("lua", { extensions: [".a/b"] })),
    TypeError,
  );
  // A runner repeating its own name as an alias is fine.
  registry.register(fakeRunner("lua", { aliases: ["lua", "LUA"] }));
  assert.equal(registry.get("Lua")?.name, "lua");
});

Deno.test("RunnerRegistry.detect runs every detect() once, concurrently, and caches the results", async () => {
  const bStarted = Promise.withResolvers<void>();
  // a's detection can only finish once b's has started: a sequential detect() would hang.
  const a = fakeRunner("a", {
    detect: () => bStarted.promise.then(() => READY),
  });
  const b = fakeRunner("b", {
    detect: () => {
      bStarted.resolve();
      return Promise.resolve({ available: false, reason: "b is missing" });
    },
  });
  const registry = new RunnerRegistry().register(a).register(b);

  const [first, second] = await Promise.all([
    registry.detect(),
    registry.detect(),
  ]);
  assert.deepEqual(first, [
    { name: "a", aliases: [], extensions: [".a"], toolchain: READY },
    {
      name: "b",
      aliases: [],
      extensions: [".b"],
      toolchain: { available: false, reason: "b is missing" },
    },
  ]);
  assert.deepEqual(second, first);
  await registry.resolve("a");
  await registry.available();
  assert.equal(a.detections, 1);
  assert.equal(b.detections, 1);

  // A runner registered later is detected on the next call; the others are not again.
  const c = fakeRunner("c");
  registry.register(c);
  assert.equal((await registry.detect()).length, 3);
  assert.deepEqual([a.detections, b.detections, c.detections], [1, 1, 1]);
});

Deno.test("RunnerRegistry.detect turns a throwing detect() into an unavailable toolchain", async () => {
  const registry = new RunnerRegistry()
    .register(fakeRunner("sync", {
      detect: () => {
        throw new Error("kaput");
      },
    }))
    .register(
      fakeRunner("async", {
        detect: () => Promise.reject(new Error("broken")),
      }),
    );
  const statuses = await registry.detect();
  assert.deepEqual(statuses.map((s) => s.toolchain), [
    { available: false, reason: "detect() failed: kaput" },
    { available: false, reason: "detect() failed: broken" },
  ]);
});

Deno.test("RunnerRegistry.resolve tells an unknown language from a missing toolchain", async () => {
  const python = fakeRunner("python", { aliases: ["py"], extensions: [".py"] });
  const java = fakeRunner("java", {
    detect: () =>
      Promise.resolve({
        available: false,
        reason: 'executable "javac" not found on PATH',
      }),
  });
  const js = fakeRunner("javascript", {
    aliases: ["js"],
    extensions: [".js", ".mjs"],
  });
  const registry = new RunnerRegistry().register(python).register(java)
    .register(js);

  assert.deepEqual(await registry.resolve("Py"), {
    ok: true,
    resolved: { runner: python, toolchain: READY },
  });
  assert.deepEqual(await registry.resolve("cobol"), {
    ok: false,
    problem: "unknown_language",
    reason: 'unknown language "cobol"',
  });
  assert.deepEqual(await registry.resolve("java"), {
    ok: false,
    problem: "toolchain_unavailable",
    runner: java,
    reason:
      'language "java" is unavailable: executable "javac" not found on PATH',
  });
  // Extensions, with or without their dot, resolve too.
  for (const language of [".mjs", "MJS", ".py"]) {
    const resolution = await registry.resolve(language);
    assert.ok(resolution.ok, language);
  }
  assert.deepEqual((await registry.available()).map((r) => r.runner), [
    python,
    js,
  ]);
});

Deno.test("createDefaultRegistry holds the eight built-in runners", () => {
  const registry = createDefaultRegistry();
  assert.deepEqual(
    registry.list().map((runner) => runner.name),
    ["python", "c", "cpp", "java", "javascript", "typescript", "rust", "bash"],
  );
  const expected: Record<string, string> = {
    python3: "python",
    py: "python",
    "c++": "cpp",
    cxx: "cpp",
    js: "javascript",
    ts: "typescript",
    rs: "rust",
    sh: "bash",
  };
  for (const [alias, name] of Object.entries(expected)) {
    assert.equal(registry.get(alias)?.name, name, alias);
  }
  const files: Record<string, string> = {
    "a.py": "python",
    "a.c": "c",
    "a.cpp": "cpp",
    "a.cc": "cpp",
    "A.java": "java",
    "a.js": "javascript",
    "a.mjs": "javascript",
    "a.ts": "typescript",
    "a.rs": "rust",
    "a.sh": "bash",
  };
  for (const [file, name] of Object.entries(files)) {
    assert.equal(registry.forFile(file)?.name, name, file);
  }
});

Deno.test("createDefaultRegistry reports every missing executable by name", async () => {
  const registry = createDefaultRegistry({ searchPath: "/nonexistent" });
  const reasons = Object.fromEntries(
    (await registry.detect()).map((
      s,
    ) => [s.name, s.toolchain.available ? "available" : s.toolchain.reason]),
  );
  assert.deepEqual(reasons, {
    python: 'executable "python3" not found on PATH',
    c: 'executable "gcc" not found on PATH',
    cpp: 'executable "g++" not found on PATH',
    java: 'executable "javac" not found on PATH',
    // Deno runners use the Deno CLI running this test, whatever PATH says.
    javascript: "available",
    typescript: "available",
    rust: 'executable "rustc" not found on PATH',
    bash: 'executable "bash" not found on PATH',
  });
});
