/**
 * The README's quick start: `deno task demo` starts a whole local cluster as
 * real processes and runs one sample program per language. It must exit 0
 * with every available language ok, and say what the jobs ran under.
 */
import assert from "node:assert/strict";
import { Sandbox } from "../lib/sandbox/sandbox.ts";
import { natsSkipReason } from "../cli/_nats_server.ts";

/** Runs `cli/demo.ts` with `args`; its exit code and what it printed. */
async function runDemo(...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../cli/demo.ts", import.meta.url).pathname,
      ...args,
    ],
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

Deno.test("deno task demo runs every sample program, sandboxed where the host allows", async () => {
  const { code, stdout, stderr } = await runDemo();
  assert.equal(code, 0, `${stdout}\n${stderr}`);
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

Deno.test({
  name:
    "deno task demo --nats runs the samples on NATS, and a job outlives the master it was submitted to",
  ignore: natsSkipReason !== undefined,
  async fn() {
    const { code, stdout, stderr } = await runDemo("--nats");
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    assert.match(
      stdout,
      /^kiln demo: NATS at nats:\/\/127\.0\.0\.1:\d+, masters /m,
    );
    const summary = /(\d+) ran, (\d+) failed, (\d+) skipped/.exec(stdout);
    assert.equal(summary?.[2], "0", stdout);
    const killed = /master (\S+) killed/.exec(stdout)?.[1];
    assert.ok(killed, stdout);
    const through = /result through (\S+): ok, on \S+: working \/ still here/
      .exec(stdout)?.[1];
    assert.ok(through, stdout);
    assert.notEqual(through, killed);
  },
});

Deno.test("deno task demo --help prints its usage and runs nothing", async () => {
  const { code, stdout } = await runDemo("--help");
  assert.equal(code, 0);
  assert.match(stdout, /^Usage: deno task demo \[--nats\]/);
  assert.doesNotMatch(stdout, /LANGUAGE/);
});
