import assert from "node:assert/strict";
import { runRunnerConformance } from "./conformance.ts";
import { JavaScriptRunner } from "./javascript_runner.ts";
import { executeJob } from "../executor.ts";

await runRunnerConformance(() => new JavaScriptRunner(), {
  hello: 'console.log("Hello, world!");\n',
  echo: "await Deno.stdin.readable.pipeTo(Deno.stdout.writable);\n",
  args: "for (const arg of Deno.args) console.log(arg);\n",
  exit3: 'console.error("exiting with 3");\nDeno.exit(3);\n',
  crash: 'throw new Error("boom");\n',
  multiFile: [
    {
      name: "main.mjs",
      content: 'import { greet } from "./greet.js";\n\ngreet();\n',
    },
    {
      name: "greet.js",
      content:
        'export function greet() {\n  console.log("Hello, world!");\n}\n',
    },
  ],
});

Deno.test("JavaScriptRunner reports a Deno CLI that is not there", async () => {
  const toolchain = await new JavaScriptRunner({
    denoPath: "/nonexistent/deno",
  }).detect();
  assert.equal(toolchain.available, false);
  assert.match(
    !toolchain.available ? toolchain.reason : "",
    /cannot run "\/nonexistent\/deno --version"/,
  );
});

const runner = new JavaScriptRunner();
const toolchain = await runner.detect();
Deno.test({
  name:
    "JavaScriptRunner gives programs no permissions, no network and no config",
  ignore: !toolchain.available,
  async fn() {
    if (!toolchain.available) return;
    const probes = [
      'Deno.readTextFileSync("/etc/hostname")',
      'Deno.writeTextFileSync("x", "y")',
      'Deno.env.get("HOME")',
      'new Deno.Command("true").outputSync()',
      "Deno.listen({ port: 0 })",
      'await fetch("http://127.0.0.1:9")',
      'await import("https://example.com/x.js")',
      'await import("npm:left-pad")',
      'await import("jsr:@std/assert")',
    ];
    const content = probes.map((code) =>
      `try { ${code}; console.log("allowed: " + ${
        JSON.stringify(code)
      }); } catch (e) { console.log("denied"); }`
    ).join("\n");
    const result = await executeJob({ runner, toolchain }, {
      language: "js",
      files: [{ name: "main.js", content }],
    });
    assert.equal(result.verdict, "ok", result.stderr);
    assert.equal(result.stdout, "denied\n".repeat(probes.length));
  },
});
