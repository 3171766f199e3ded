/**
 * The README's quick start: `deno task demo` starts a whole local cluster as
 * real processes and runs one sample program per language. It must exit 0
 * with every available language ok, and say what the jobs ran under.
 */
import assert from "node:assert/strict";
import { Sandbox } from "../lib/sandbox/sandbox.ts";

Deno.test("deno task demo runs every sample program, sandboxed where the host allows", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../cli/demo.ts", import.meta.url).pathname],
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, `${stdout}\n${stderr}`);
  assert.match(
    stdout,
    /^LANGUAGE +PROGRAM +VERDICT +TIME +MEMORY +NODE +SANDBOX +OUTPUT$/m,
  );
  const summary = /(\d+) ran, (\d+) failed, (\d+) skipped/.exec(stdout);
  assert.ok(summary, stdout);
  assert.equal(summary[2], "0", stdout);
  assert.ok(Number(summary[1]) > 0, stdout);
  // Every program that ran had the layers this host gives.
  const { layers } = await Sandbox.detect();
  const expected = layers.length === 0 ? "none" : layers.join("+");
  const ran = stdout.split("\n").filter((line) => / ok /.test(line));
  assert.equal(ran.length, Number(summary[1]), stdout);
  for (const line of ran) assert.ok(line.includes(` ${expected} `), line);
});
