import { runRunnerConformance } from "./conformance.ts";
import { TypeScriptRunner } from "./typescript_runner.ts";

await runRunnerConformance(() => new TypeScriptRunner(), {
  hello: 'const greeting: string = "Hello, world!";\nconsole.log(greeting);\n',
  echo: "await Deno.stdin.readable.pipeTo(Deno.stdout.writable);\n",
  args: "for (const arg of Deno.args) console.log(arg);\n",
  exit3: 'console.error("exiting with 3");\nDeno.exit(3);\n',
  crash: 'function fail(): never {\n  throw new Error("boom");\n}\nfail();\n',
  compileError: 'const n: number = "not a number";\nconsole.log(n);\n',
  multiFile: [
    {
      name: "main.ts",
      content: 'import { greet } from "./greet.ts";\n\ngreet("world");\n',
    },
    {
      name: "greet.ts",
      content:
        "export function greet(who: string): void {\n  console.log(`Hello, ${who}!`);\n}\n",
    },
  ],
});
