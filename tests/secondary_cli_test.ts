/**
 * `cli/secondary.ts` as an operator runs it: registering with a real master
 * process, waiting for a master that is not there yet, stopping cleanly on
 * SIGTERM, and refusing bad flags with one line.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  readLines,
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import { type JobEvent, MasterNode, submitProgram } from "../mod.ts";
import {
  PING_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../lib/protocol/messages.ts";

const SECONDARY_CLI = fileURLToPath(
  new URL("../cli/secondary.ts", import.meta.url),
);
const TOKEN = "secondary-cli-test-token";

/** Runs the secondary CLI to its end with these flags. */
async function runSecondary(...args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SECONDARY_CLI, ...args],
    env: { KILN_TOKEN: TOKEN, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return {
    code,
    stdout: new TextDecoder().decode(stdout),
    stderr: new TextDecoder().decode(stderr),
  };
}

/** A loopback port nobody listens on (taken, then freed). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("CLI: a secondary registers with a master process and prints the line", async () => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "1", "--log-level", "error"],
  });
  await using secondary = await startSecondaryProcess(master.address, {
    token: TOKEN,
    args: [
      "--name",
      "cli-w1",
      "--slots",
      "2",
      "--languages",
      "bash",
      "--log-level",
      "error",
    ],
    timeoutMs: 30_000,
  });
  assert.equal(secondary.address, master.address);
  assert.equal(secondary.name, "cli-w1");
  assert.equal(secondary.registrations, 1);
  const status = await secondary.stop();
  assert.equal(status.code, 0, "SIGTERM stops the secondary cleanly");
});

Deno.test("CLI: a secondary waits for an absent master, saying so, and exits 0 on SIGTERM", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SECONDARY_CLI, "--master", `127.0.0.1:${freePort()}`],
    env: { KILN_TOKEN: TOKEN, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = readLines(child.stderr);
  const seen: string[] = [];
  // LogTape's text format quotes string values: "127.0.0.1:1234".
  const waiting =
    /\[WRN\] kiln\.secondary: cannot reach the master at "?127\.0\.0\.1:\d+"?: "?connection refused \(is the master running\?\)"?; retrying in \d+ ms$/;
  for (let line = await lines.next(); !line.done; line = await lines.next()) {
    seen.push(line.value);
    if (waiting.test(line.value)) break;
  }
  assert.ok(seen.some((line) => waiting.test(line)), seen.join("\n"));
  child.kill("SIGTERM");
  const [status, stdout] = await Promise.all([
    child.status,
    new Response(child.stdout).text(),
    (async () => {
      for await (const _ of lines);
    })(),
  ]);
  assert.equal(status.code, 0);
  assert.equal(stdout, "", "it never claimed to be registered");
});

Deno.test("CLI: a secondary refuses bad flags with one line and exit code 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--slots", "zero"], /--slots must be an integer >= 1, got "zero"/],
    [
      ["--max-cpu", "120"],
      /--max-cpu must be a percentage from 0 to 100, got "120"/,
    ],
    [["--languages", "bash,cobol"], /unknown language "cobol" \(known: .*bash/],
    [["--languages", ","], /--languages must name at least one language/],
    [["--master", "host:99999"], /port must be 0-65535/],
    [["--log-level", "loud"], /unknown log level "loud"/],
    [["--bogus"], /Unknown option '--bogus'/],
    [
      ["--drain-timeout", "86400001"],
      /--drain-timeout must be at most 86400000 \(a day\), got "86400001"/,
    ],
    [["--drain-timeout=-1"], /--drain-timeout must be an integer >= 0/],
    [
      ["--node-timeout", "1999"],
      /--node-timeout must be an integer >= 2000, got "1999"/,
    ],
    [
      ["--node-timeout", "2147483648"],
      /--node-timeout must be at most 2147483647, got "2147483648"/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const { code, stdout, stderr } = await runSecondary(...args);
    assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
    assert.equal(stdout, "");
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${stderr}`);
    assert.match(lines[0]!, /^kiln secondary: /);
    assert.match(lines[0]!, pattern);
  }
  const help = await runSecondary("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--master HOST:PORT/);
});

Deno.test({
  name:
    "CLI: a secondary drops a master stopped past --node-timeout with a warning naming it, and registers again once the master runs on",
  // Masters ping from protocol 4 on; before, nothing tells a stopped one.
  ignore: PROTOCOL_VERSION < PING_PROTOCOL_VERSION,
  async fn() {
    await using master = await startMasterProcess({
      token: TOKEN,
      args: ["--slots", "0", "--log-level", "error"],
      stderr: "null",
    });
    await using secondary = await startSecondaryProcess(master.address, {
      token: TOKEN,
      args: ["--languages", "bash", "--slots", "1", "--node-timeout", "2000"],
      stderr: "piped",
      timeoutMs: 30_000,
    });
    const lines = readLines(secondary.child.stderr);
    const seen: string[] = [];
    const lost =
      /\[WRN\] kiln\.secondary: lost the master: "?the master sent nothing for \d+ ms, past the node timeout of 2000 ms"?; reconnecting in \d+ ms$/;
    Deno.kill(master.child.pid, "SIGSTOP");
    try {
      for (
        let line = await lines.next();
        !line.done;
        line = await lines.next()
      ) {
        seen.push(line.value);
        if (lost.test(line.value)) break;
      }
    } finally {
      Deno.kill(master.child.pid, "SIGCONT");
    }
    assert.ok(seen.some((line) => lost.test(line)), seen.join("\n"));
    // Read to the end, so the secondary never blocks on a full pipe.
    const drained = (async () => {
      for await (const _ of lines);
    })();
    await secondary.waitForRegistrations(2);
    assert.equal((await secondary.stop()).code, 0);
    await drained;
  },
});

/** Resolves with the master's next `type` event. */
function next(
  master: MasterNode,
  type: "nodedrain" | "nodeleave",
): Promise<{ name: string; reason?: string }> {
  return new Promise((resolve) =>
    master.addEventListener(type, (event) => resolve(event.detail), {
      once: true,
    })
  );
}

Deno.test("CLI: SIGTERM drains a secondary: its running job finishes there, then it exits 0", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  await using secondary = await startSecondaryProcess(
    `127.0.0.1:${master.addr.port}`,
    {
      token: TOKEN,
      args: ["--name", "cli-drainer", "--languages", "bash", "--slots", "1"],
      stderr: "null",
      timeoutMs: 30_000,
    },
  );
  // A job that holds its slot until the test sends its stdin. It says
  // "ready" first: `started` only says the master sent it to the node, and
  // a node told to drain before the job reaches it refuses the job.
  const opened = Promise.withResolvers<void>();
  const started = Promise.withResolvers<void>();
  const events: JobEvent[] = [];
  const job = submitProgram({
    language: "bash",
    files: [{
      name: "main.sh",
      content: 'echo ready; read line; echo "got $line"',
    }],
  }, {
    master: master.addr,
    token: TOKEN,
    input: (async function* () {
      await opened.promise;
      yield "go\n";
    })(),
    onEvent: (event) => {
      events.push(event);
      if (event.type === "output") started.resolve();
    },
  });
  await started.promise;
  const draining = next(master, "nodedrain");
  const left = next(master, "nodeleave");
  secondary.child.kill("SIGTERM");
  const first = await Promise.race([
    draining.then(({ name }) => `draining: ${name}`),
    secondary.child.status.then(({ code }) => `exited with code ${code}`),
  ]);
  assert.equal(first, "draining: cli-drainer", "SIGTERM drains, first");
  opened.resolve();
  const result = await job;
  assert.equal(result.verdict, "ok", result.reason);
  assert.equal(result.stdout, "ready\ngot go\n");
  assert.equal(result.node, "cli-drainer");
  assert.deepEqual(events.filter((e) => e.type === "restarted"), []);
  assert.equal((await left).reason, "it drained and left");
  assert.equal((await secondary.child.status).code, 0);
});

Deno.test("CLI: a second SIGTERM stops a draining secondary at once", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  await using secondary = await startSecondaryProcess(
    `127.0.0.1:${master.addr.port}`,
    {
      token: TOKEN,
      // Only the second signal can end this drain within the test.
      args: [
        "--languages",
        "bash",
        "--slots",
        "1",
        "--drain-timeout",
        "600000",
      ],
      stderr: "null",
      timeoutMs: 30_000,
    },
  );
  const started = Promise.withResolvers<void>();
  const job = submitProgram({
    language: "bash",
    files: [{ name: "main.sh", content: "exec sleep 600" }],
  }, {
    master: master.addr,
    token: TOKEN,
    onEvent: (event) => event.type === "started" && started.resolve(),
  });
  await started.promise;
  const draining = next(master, "nodedrain");
  secondary.child.kill("SIGTERM");
  await draining;
  secondary.child.kill("SIGTERM");
  assert.equal((await secondary.child.status).code, 0);
  const result = await job;
  assert.equal(result.verdict, "internal_error");
  assert.match(result.reason ?? "", /was lost|no live node runs bash/);
});
