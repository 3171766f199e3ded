import assert from "node:assert/strict";
import { CRunner } from "./c_runner.ts";
import { runRunnerConformance } from "./conformance.ts";

await runRunnerConformance(() => new CRunner(), {
  hello:
    '#include <stdio.h>\n\nint main(void) {\n  puts("Hello, world!");\n  return 0;\n}\n',
  echo:
    "#include <stdio.h>\n\nint main(void) {\n  char buf[4096];\n  size_t n;\n" +
    "  while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);\n  return 0;\n}\n",
  args:
    '#include <stdio.h>\n\nint main(int argc, char **argv) {\n  for (int i = 1; i < argc; i++) printf("%s\\n", argv[i]);\n  return 0;\n}\n',
  exit3:
    '#include <stdio.h>\n\nint main(void) {\n  fputs("exiting with 3\\n", stderr);\n  return 3;\n}\n',
  crash:
    "#include <stdlib.h>\n\nint main(void) {\n  volatile int *p = NULL;\n  *p = 42;\n  return 0;\n}\n",
  compileError: "int main(void) {\n  return undefined_variable;\n}\n",
  multiFile: [
    {
      name: "main.c",
      content:
        '#include "greet.h"\n\nint main(void) {\n  greet();\n  return 0;\n}\n',
    },
    { name: "greet.h", content: "void greet(void);\n" },
    {
      name: "greet.c",
      content: '#include <math.h>\n#include <stdio.h>\n#include "greet.h"\n\n' +
        'void greet(void) {\n  if (sqrt(4.0) == 2.0) puts("Hello, world!");\n}\n',
    },
  ],
});

Deno.test("CRunner compiles every .c file, never headers, and links libm", () => {
  const spec = new CRunner().compile({
    workdir: "/w",
    entry: "main.c",
    files: ["main.c", "util.h", "util.C"],
    args: [],
    memoryMb: 256,
    toolchain: {
      available: true,
      version: "gcc 12",
      executables: { compiler: "/usr/bin/gcc" },
    },
  });
  assert.deepEqual(spec.args, [
    "-O2",
    "-std=gnu17",
    "-pipe",
    "-o",
    "main",
    "main.c",
    "util.C",
    "-lm",
  ]);
});
