// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import {
  awaitStubReady,
  encodeOrders,
  findPerl,
  isStubFailure,
  prlimitSyscall,
  WARM_STUB_FAILED,
  WARM_STUB_READY,
  type WarmOrders,
  warmStubCommand,
} from "./warm_stub.ts";

const perl = await findPerl();
if (perl === null) console.log("skipping the warm stub tests: no perl");

/** Starts the stub outside any sandbox, gives it `orders` then `stdin`. */
async function stub(
  orders: Uint8Array | null,
  stdin = "",
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [command, ...args] = warmStubCommand(perl!);
  const child = new Deno.Command(command!, {
    args,
    clearEnv: true,
    env: { PWD: "/", LEFTOVER: "of the stub's own environment" },
    cwd: "/",
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  if (orders) await writer.write(orders);
  await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const output = await child.output();
  const text = new TextDecoder();
  const stdout = text.decode(output.stdout);
  // The stub says it is ready first, whatever it is told after.
  assert.ok(stdout.startsWith(WARM_STUB_READY), JSON.stringify(stdout));
  return {
    code: output.code,
    stdout: stdout.slice(WARM_STUB_READY.length),
    stderr: text.decode(output.stderr),
  };
}

const base: WarmOrders = {
  nonce: "n0nce",
  stdin: "pipe",
  env: {},
  rlimits: [],
  argv: ["/bin/true"],
};

Deno.test({
  name:
    "the warm stub execs exactly the argv and environment it is told, PWD kept last",
  ignore: perl === null,
  async fn() {
    const result = await stub(
      encodeOrders({
        ...base,
        env: { B: "2", A: "x=y", EMPTY: "", UTF: "ü" },
        argv: ["/usr/bin/env"],
      }),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "B=2\nA=x=y\nEMPTY=\nUTF=ü\nPWD=/\n");
  },
});

Deno.test({
  name: "the warm stub reads its orders and not a byte of the program's stdin",
  ignore: perl === null,
  async fn() {
    const result = await stub(
      encodeOrders({ ...base, argv: ["/bin/cat"] }),
      "the program's own stdin\n",
    );
    assert.equal(result.stdout, "the program's own stdin\n");
    const none = await stub(
      encodeOrders({ ...base, stdin: "null", argv: ["/bin/cat"] }),
      "never read",
    );
    assert.equal(none.stdout, "", "stdin null reads /dev/null");
  },
});

Deno.test({
  name: "the warm stub sets the rlimits it is told before the exec",
  ignore: perl === null || prlimitSyscall() === null,
  async fn() {
    const result = await stub(
      encodeOrders({
        ...base,
        rlimits: [
          { flag: "--cpu", resource: 0, soft: 7, hard: 8 },
          { flag: "--nofile", resource: 7, soft: 40, hard: 40 },
        ],
        argv: ["/bin/sh", "-c", "ulimit -St; ulimit -Ht; ulimit -n"],
      }),
    );
    assert.equal(result.stdout, "7\n8\n40\n", result.stderr);
  },
});

Deno.test({
  name:
    "the warm stub exits quietly when it is closed without orders, and names its own failures",
  ignore: perl === null,
  async fn() {
    const unused = await stub(null);
    assert.deepEqual(unused, { code: 0, stdout: "", stderr: "" });

    const missing = await stub(encodeOrders({ ...base, argv: ["/no/such"] }));
    assert.equal(missing.code, WARM_STUB_FAILED);
    assert.ok(isStubFailure({ exitCode: missing.code, ...missing }, "n0nce"));
    // A program that prints the same words without the nonce is no failure of kiln's.
    const faked = await stub(
      encodeOrders({
        ...base,
        argv: [
          "/bin/sh",
          "-c",
          `echo "kiln: warm sandbox ?: cannot run" >&2; exit ${WARM_STUB_FAILED}`,
        ],
      }),
    );
    assert.equal(faked.code, WARM_STUB_FAILED);
    assert.ok(!isStubFailure({ exitCode: faked.code, ...faked }, "n0nce"));
  },
});

Deno.test("encodeOrders refuses what cannot cross to the stub", () => {
  assert.throws(
    () => encodeOrders({ ...base, argv: ["/bin/echo", "a\0b"] }),
    /NUL/,
  );
  assert.throws(
    () => encodeOrders({ ...base, env: { "A=B": "c" } }),
    /bad environment name/,
  );
  assert.throws(() => encodeOrders({ ...base, argv: [] }), /no command/);
});

Deno.test("awaitStubReady takes the ready line and not a byte more, and knows a chain that failed", async () => {
  const spawn = (script: string) =>
    new Deno.Command("/bin/sh", {
      args: ["-c", script],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  // Written at once with the program's output, as a fast program might.
  const ready = spawn(`printf '${WARM_STUB_READY.trim()}\\nthe program'`);
  await awaitStubReady(ready.stdout, 5000);
  let rest = "";
  for await (const chunk of ready.stdout) {
    rest += new TextDecoder().decode(chunk);
  }
  assert.equal(rest, "the program");
  await ready.status;

  const failed = spawn("echo 'bwrap: cannot do that' >&2; exit 1");
  await assert.rejects(awaitStubReady(failed.stdout, 5000), /ended before/);
  await failed.status;

  const other = spawn("echo something else entirely");
  await assert.rejects(awaitStubReady(other.stdout, 5000), /something else/);
  await other.stdout.cancel();
  await other.status;

  const silent = spawn("exec sleep 30");
  await assert.rejects(awaitStubReady(silent.stdout, 50), /within 50 ms/);
  silent.kill("SIGKILL");
  await silent.stdout.cancel();
  await silent.status;
});
