import assert from "node:assert/strict";
import { runRunnerConformance } from "./conformance.ts";
import { PythonRunner } from "./python_runner.ts";

await runRunnerConformance(() => new PythonRunner(), {
  hello: 'print("Hello, world!")\n',
  echo: "import sys\nsys.stdout.write(sys.stdin.read())\n",
  args: "import sys\nfor arg in sys.argv[1:]:\n    print(arg)\n",
  exit3: 'import sys\nprint("exiting with 3", file=sys.stderr)\nsys.exit(3)\n',
  crash: 'raise RuntimeError("boom")\n',
  multiFile: [
    { name: "main.py", content: "from greeting import greet\n\ngreet()\n" },
    {
      name: "greeting.py",
      content: 'def greet():\n    print("Hello, world!")\n',
    },
  ],
});

Deno.test("PythonRunner reports a missing interpreter by name", async () => {
  const toolchain = await new PythonRunner({ searchPath: "/nonexistent" })
    .detect();
  assert.deepEqual(toolchain, {
    available: false,
    reason: 'executable "python3" not found on PATH',
  });
});

Deno.test("PythonRunner runs unbuffered, without .pyc files, and keeps args after the script", () => {
  const spec = new PythonRunner().run({
    workdir: "/w",
    entry: "-x.py",
    files: ["-x.py"],
    args: ["-c", "a b"],
    memoryMb: 256,
    toolchain: {
      available: true,
      version: "Python 3",
      executables: { interpreter: "/usr/bin/python3" },
    },
  });
  assert.deepEqual(spec, {
    command: "/usr/bin/python3",
    args: ["-u", "-B", "-E", "-s", "-X", "utf8", "./-x.py", "-c", "a b"],
  });
});
