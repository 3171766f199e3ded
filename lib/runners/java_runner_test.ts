import assert from "node:assert/strict";
import { assertCompletes } from "../_completes_testing.ts";
import { runRunnerConformance } from "./conformance.ts";
import { javaClasses, JavaRunner } from "./java_runner.ts";

await runRunnerConformance(() => new JavaRunner(), {
  // Submitted as prog.java: arrange() must rename it Main.java.
  hello:
    'public class Main {\n  public static void main(String[] args) {\n    System.out.println("Hello, world!");\n  }\n}\n',
  echo: "import java.io.IOException;\n\npublic class Echo {\n" +
    "  public static void main(String[] args) throws IOException {\n" +
    "    System.in.transferTo(System.out);\n    System.out.flush();\n  }\n}\n",
  args: "class Args {\n  public static void main(String[] args) {\n" +
    "    for (String arg : args) System.out.println(arg);\n  }\n}\n",
  exit3:
    'public class Main {\n  public static void main(String[] args) {\n    System.err.println("exiting with 3");\n' +
    "    System.exit(3);\n  }\n}\n",
  crash:
    'public class Main {\n  public static void main(String[] args) {\n    throw new IllegalStateException("boom");\n  }\n}\n',
  compileError:
    'public class Main {\n  public static void main(String[] args) {\n    int x = "not a number";\n  }\n}\n',
  multiFile: [
    {
      name: "Main.java",
      content:
        "public class Main {\n  public static void main(String[] args) {\n    Greeter.greet();\n  }\n}\n",
    },
    {
      name: "Greeter.java",
      content:
        'class Greeter {\n  static void greet() {\n    System.out.println("Hello, world!");\n  }\n}\n',
    },
  ],
});

Deno.test("javaClasses finds the public class and the class holding main", () => {
  assert.deepEqual(
    javaClasses("public class Main { public static void main(String[] a) {} }"),
    {
      publicClass: "Main",
      mainClass: "Main",
    },
  );
  assert.deepEqual(
    javaClasses(`
      import java.util.*; // public class InComment {}
      /* public class InBlock {} */
      class Helper { static class Nested { public static void main(String[] a) {} } }
      final class Solution {
        static String s = "public class InString { static void main(";
        static char c = '{';
        static String block = """
          } public class InTextBlock {
          """;
        public static void main(String... args) {}
      }
    `),
    { mainClass: "Solution" },
  );
  assert.deepEqual(javaClasses("final public record Point(int x, int y) {}"), {
    publicClass: "Point",
  });
  assert.deepEqual(javaClasses("// nothing here"), {});
});

Deno.test("JavaRunner.arrange renames the entry after its class, and only the entry", () => {
  const runner = new JavaRunner();
  const main = {
    name: "prog.java",
    content:
      "public class Main { public static void main(String[] a) { Util.x(); } }",
  };
  const util = {
    name: "Util.java",
    content: "class Util { static void x() {} }",
  };
  assert.deepEqual(runner.arrange([main, util], "prog.java"), {
    files: [{ ...main, name: "Main.java" }, util],
    entry: "Main.java",
  });
  // Already right, no class found, or the name taken: unchanged.
  const right = { name: "Main.java", content: main.content };
  assert.deepEqual(runner.arrange([right], "Main.java"), {
    files: [right],
    entry: "Main.java",
  });
  const none = { name: "x.java", content: "// empty" };
  assert.deepEqual(runner.arrange([none], "x.java"), {
    files: [none],
    entry: "x.java",
  });
  const taken = { name: "Main.java", content: "class Other {}" };
  assert.deepEqual(runner.arrange([main, taken], "prog.java"), {
    files: [main, taken],
    entry: "prog.java",
  });
});

Deno.test("JavaRunner runs the class its entry file is named after", () => {
  const toolchain = {
    available: true,
    version: "javac 17",
    executables: { compiler: "/usr/bin/javac", runtime: "/usr/bin/java" },
  } as const;
  const context = {
    workdir: "/w",
    entry: "Main.java",
    files: ["Main.java", "Util.java", "notes.txt"],
    args: ["x"],
    toolchain,
    memoryMb: 400,
  };
  const runner = new JavaRunner();
  assert.deepEqual(runner.compile(context).args.slice(-4), [
    "-d",
    ".",
    "Main.java",
    "Util.java",
  ]);
  assert.deepEqual(runner.run(context).args.slice(-2), ["Main", "x"]);
  // The heap is sized from the step's memory limit, not the machine's.
  assert.ok(runner.run(context).args.includes("-XX:MaxRAM=400m"));
  assert.ok(runner.compile(context).args.includes("-J-XX:MaxRAM=400m"));
});

Deno.test("javaClasses reads a 1 MiB source in one pass, whatever it holds", async () => {
  // Each input cost the old regular expressions quadratic time: minutes at
  // 1 MiB (18.7 s at 280 KB for "static "), which the 60 s deadline of
  // assertCompletes catches; a linear scan needs milliseconds.
  const module = JSON.stringify(import.meta.resolve("./java_runner.ts"));
  await assertCompletes(`
    import { javaClasses } from ${module};
    const MiB = 1024 * 1024;
    for (const unit of ["static ", "public ", '"\\\\', "'\\\\"]) {
      const source = "class A { " + unit.repeat(MiB / unit.length);
      if (source.length < MiB) throw new Error("the input is too small");
      javaClasses(source);
    }
  `);
  // The same scan still reads what follows a large body.
  const body = "static ".repeat(100_000);
  assert.deepEqual(
    javaClasses(
      `class A { ${body} }\npublic class B { static void main(String[] a) {} }`,
    ),
    { publicClass: "B", mainClass: "B" },
  );
});
