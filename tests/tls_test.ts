/**
 * TLS on every link, with certificates `deno task gen-certs` makes once for
 * this file (removed at the end): a TLS cluster of real processes runs jobs
 * end to end; a peer that speaks plain TCP to a TLS master, or TLS to a
 * plain one, gets an error that says so, and the master stays healthy.
 * Every TLS link has Nagle off at both ends, and a peer that never starts
 * the TLS handshake loses its socket at the timeout. Everything on
 * 127.0.0.1.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";
import {
  ConnectionError,
  getClusterStatus,
  type JobRequest,
  MasterNode,
  type MasterNodeOptions,
  ProtocolError,
  SecondaryNode,
  type SecondaryNodeOptions,
  submitProgram,
  type TlsListenOptions,
} from "../mod.ts";
import { dial, listen, secureAccepted } from "../lib/protocol/transport.ts";
import { socketsOnPort } from "../lib/protocol/_nodelay_testing.ts";

const TOKEN = "tls-test-token-0123456789";
const cli = (name: string) =>
  fileURLToPath(new URL(`../cli/${name}.ts`, import.meta.url));

const openssl = await new Deno.Command("openssl", { args: ["version"] })
  .output().then((out) => out.success, () => false);
if (!openssl) {
  console.warn("tls_test: skipped: the openssl command is missing");
}

/** The certificates every test uses, made once by the real gen-certs CLI. */
let dir = "";
let ca = "";
let serverTls: TlsListenOptions = { cert: "", key: "" };
const path = (name: string) => join(dir, name);

Deno.test.beforeAll(async () => {
  if (!openssl) return;
  dir = await Deno.makeTempDir({ prefix: "kiln-tls-test-" });
  const made = await run("gen_certs", [dir, "--host", "kiln.test"]);
  assert.equal(made.code, 0, made.stderr);
  ca = await Deno.readTextFile(path("ca.pem"));
  serverTls = {
    cert: await Deno.readTextFile(path("master.pem")),
    key: await Deno.readTextFile(path("master-key.pem")),
  };
});

Deno.test.afterAll(async () => {
  if (dir) await Deno.remove(dir, { recursive: true });
});

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cli/NAME.ts` to its end. */
async function run(
  name: string,
  args: string[],
  files: Record<string, string> = {},
): Promise<CliRun> {
  const work = await Deno.makeTempDir({ prefix: "kiln-tls-cli-" });
  try {
    const paths = [];
    for (const [file, content] of Object.entries(files)) {
      await Deno.writeTextFile(join(work, file), content);
      paths.push(join(work, file));
    }
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli(name), ...args, ...paths],
      env: { KILN_TOKEN: TOKEN, NO_COLOR: "1" },
      stdin: "null",
    }).output();
    const text = new TextDecoder();
    return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "job.sh", content: script }] };
}

function startMaster(options: MasterNodeOptions = {}): MasterNode {
  return new MasterNode({
    port: 0,
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
    ...options,
  });
}

/** An in-process secondary; resolves with the error of its first failed attempt. */
async function firstFailure(options: SecondaryNodeOptions): Promise<Error> {
  await using secondary = new SecondaryNode({
    slots: 1,
    token: TOKEN,
    languages: ["bash"],
    ...options,
  });
  const failed = Promise.withResolvers<Error>();
  secondary.addEventListener(
    "connectfailed",
    ({ detail }) => failed.resolve(detail.error),
    { once: true },
  );
  return await failed.promise;
}

/** Captures the master's log lines; `waitFor` resolves once one matches. */
async function captureMasterLog() {
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  await configure({
    sinks: {
      memory: (record: LogRecord) => {
        const line = record.message.map(String).join("");
        lines.push(line);
        for (const waiter of [...waiters]) {
          if (!waiter.pattern.test(line)) continue;
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      },
    },
    loggers: [
      { category: ["kiln", "master"], lowestLevel: "info", sinks: ["memory"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
    ],
    reset: true,
  });
  return {
    lines,
    waitFor(pattern: RegExp): Promise<string> {
      const found = lines.find((line) => pattern.test(line));
      if (found !== undefined) return Promise.resolve(found);
      const { promise, resolve } = Promise.withResolvers<string>();
      waiters.push({ pattern, resolve });
      return promise;
    },
  };
}

Deno.test({
  name: "gen-certs makes a CA and a master certificate that openssl verifies",
  ignore: !openssl,
  fn: async () => {
    const verify = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", path("ca.pem"), path("master.pem")],
    }).output();
    assert.equal(
      new TextDecoder().decode(verify.stdout).trim(),
      `${path("master.pem")}: OK`,
    );
    const text = await new Deno.Command("openssl", {
      args: [
        "x509",
        "-in",
        path("master.pem"),
        "-noout",
        "-ext",
        "subjectAltName",
      ],
    }).output();
    assert.match(
      new TextDecoder().decode(text.stdout),
      /DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, DNS:kiln\.test/,
    );
    for (const key of ["ca-key.pem", "master-key.pem"]) {
      assert.equal((await Deno.stat(path(key))).mode! & 0o777, 0o600, key);
    }
    // A second run keeps the CA every certificate was signed with.
    const again = await run("gen_certs", [dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /ca-key\.pem already exists; pass --force/);
  },
});

Deno.test({
  name: "a TLS cluster of real processes runs jobs end to end",
  ignore: !openssl,
  fn: async () => {
    await using master = await startMasterProcess({
      token: TOKEN,
      args: [
        "--slots",
        "0",
        "--tls-cert",
        path("master.pem"),
        "--tls-key",
        path("master-key.pem"),
      ],
      stderr: "null",
    });
    await using _secondary = await startSecondaryProcess(master.address, {
      token: TOKEN,
      args: ["--name", "tls-node", "--slots", "2", "--ca", path("ca.pem")],
      stderr: "null",
    });

    const result = await submitProgram(bash("echo over tls"), {
      master: master.address,
      token: TOKEN,
      tls: { caCerts: [ca] },
    });
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "over tls\n");
    assert.equal(result.node, "tls-node");

    const submitted = await run("submit", [
      "--master",
      master.address,
      "--ca",
      path("ca.pem"),
    ], { "hello.sh": "echo hello from the CLI\n" });
    assert.equal(submitted.code, 0, submitted.stderr);
    assert.equal(submitted.stdout, "hello from the CLI\n");

    const status = await run("status", [
      "--master",
      master.address,
      "--ca",
      path("ca.pem"),
      "--json",
    ]);
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(
      JSON.parse(status.stdout).nodes.map((n: { name: string }) => n.name),
      ["tls-node"],
    );
  },
});

Deno.test({
  name:
    "a TLS master refuses a plain client with a clear error, logs it and serves TLS jobs after",
  ignore: !openssl,
  fn: async () => {
    const log = await captureMasterLog();
    try {
      await using master = startMaster({ tls: serverTls });
      const address = `127.0.0.1:${master.addr.port}`;

      const refused = await submitProgram(bash("echo plain"), {
        master: master.addr,
        token: TOKEN,
      }).then(() => undefined, (error) => error);
      assert.ok(refused instanceof ProtocolError, String(refused));
      assert.equal(refused.code, "closed");
      assert.match(
        refused.message,
        /^the master closed the connection during the handshake; it may require TLS \(--tls, or --ca FILE/,
      );
      assert.match(
        await log.waitFor(/^TLS handshake failed from /),
        /^TLS handshake failed from 127\.0\.0\.1:\d+: .*\(a client without TLS\?\)$/,
      );

      // The CLI says the same, with the exit code of an unreachable master.
      const cliRun = await run("submit", ["--master", address], {
        "plain.sh": "echo plain\n",
      });
      assert.equal(cliRun.code, 106);
      assert.match(cliRun.stderr, /may require TLS \(--tls, or --ca FILE/);

      const result = await submitProgram(bash("echo still here"), {
        master: address,
        token: TOKEN,
        tls: { caCerts: [ca] },
      });
      assert.equal(result.stdout, "still here\n");
      // The name dialed is checked against the certificate: localhost is in it.
      const status = await getClusterStatus({
        master: `localhost:${master.addr.port}`,
        token: TOKEN,
        tls: { caCerts: [ca] },
      });
      assert.equal(status.master, "master");
    } finally {
      await reset();
    }
  },
});

Deno.test({
  name:
    "a TLS client against a plain master, or one that does not trust the certificate, is told why",
  ignore: !openssl,
  fn: async () => {
    await using plain = startMaster();
    const error = await submitProgram(bash("echo"), {
      master: plain.addr,
      token: TOKEN,
      tls: { caCerts: [ca] },
    }).then(() => undefined, (error) => error);
    assert.ok(error instanceof ConnectionError, String(error));
    assert.match(
      error.message,
      /^Cannot connect to master at 127\.0\.0\.1:\d+: the master did not answer with TLS \(is it a TLS master\?\)/,
    );
    const cliRun = await run("status", [
      "--master",
      `127.0.0.1:${plain.addr.port}`,
      "--ca",
      path("ca.pem"),
    ]);
    assert.equal(cliRun.code, 106);
    assert.match(
      cliRun.stderr,
      /did not answer with TLS \(is it a TLS master\?\)/,
    );
    // The plain master still serves plain clients.
    const result = await submitProgram(bash("echo plain"), {
      master: plain.addr,
      token: TOKEN,
    });
    assert.equal(result.stdout, "plain\n");

    // Deno's default roots do not include our development CA.
    await using secure = startMaster({ tls: serverTls });
    const untrusted = await getClusterStatus({
      master: secure.addr,
      token: TOKEN,
      tls: true,
    }).then(() => undefined, (error) => error);
    assert.ok(untrusted instanceof ConnectionError, String(untrusted));
    assert.match(
      untrusted.message,
      /the master's TLS certificate is not trusted: .*UnknownIssuer/,
    );
  },
});

Deno.test({
  name: "a secondary that speaks the wrong transport is told why",
  ignore: !openssl,
  fn: async () => {
    await using plain = startMaster({ slots: 0 });
    const tlsToPlain = await firstFailure({
      master: plain.addr,
      tls: { caCerts: [ca] },
    });
    assert.ok(tlsToPlain instanceof ConnectionError, String(tlsToPlain));
    assert.match(tlsToPlain.message, /did not answer with TLS/);

    await using secure = startMaster({ slots: 0, tls: serverTls });
    const plainToTls = await firstFailure({ master: secure.addr });
    assert.ok(plainToTls instanceof ProtocolError, String(plainToTls));
    assert.match(plainToTls.message, /may require TLS/);
  },
});

Deno.test({
  name:
    "a TLS master closes a peer that never starts the TLS handshake, freeing its socket",
  ignore: !openssl,
  fn: async () => {
    const log = await captureMasterLog();
    try {
      await using master = startMaster({
        tls: serverTls,
        handshakeTimeoutMs: 200,
      });
      const { port } = master.addr;
      using silent = await Deno.connect(master.addr);
      assert.match(
        await log.waitFor(/^TLS handshake failed from /),
        /: no TLS handshake within 200 ms$/,
      );
      // The master hung up, though the peer never sent a byte: its end of
      // the socket is closed, its descriptor gone from this process.
      assert.equal(await readUnlessHung(silent), null);
      assert.deepEqual(socketsOnPort(port).filter((s) => s.local === port), []);
      // No job afterwards: 200 ms is too tight a handshake for a busy
      // machine; the plain-client test shows the master serving on.
    } finally {
      await reset();
    }
  },
});

Deno.test({
  name: "every link of a TLS cluster has Nagle off at both ends",
  ignore: !openssl,
  fn: async () => {
    await using master = startMaster({ slots: 0, tls: serverTls });
    const joined = Promise.withResolvers<void>();
    master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
    await using _secondary = new SecondaryNode({
      master: master.addr,
      slots: 1,
      token: TOKEN,
      languages: ["bash"],
      tls: { caCerts: [ca] },
    });
    await joined.promise;
    // Read while the job runs, so that the client's link is open too.
    let seen: ReturnType<typeof socketsOnPort> = [];
    const result = await submitProgram(bash("echo hi"), {
      master: master.addr,
      token: TOKEN,
      tls: { caCerts: [ca] },
      onEvent: (event) => {
        if (event.type === "started") seen = socketsOnPort(master.addr.port);
      },
    });
    assert.equal(result.verdict, "ok", result.reason);
    // Both ends of the client's link and of the secondary's.
    assert.equal(seen.length, 4, JSON.stringify(seen));
    for (const socket of seen) {
      assert.ok(socket.noDelay, `Nagle is on: ${JSON.stringify(socket)}`);
    }
  },
});

Deno.test({
  name:
    "a TLS listener's connection ends with TLS's goodbye: the dialer reads every byte, then a clean end",
  ignore: !openssl,
  fn: async () => {
    using listener = listen({ hostname: "127.0.0.1", port: 0, tls: serverTls });
    const { port } = listener.addr as Deno.NetAddr;
    const accepting = listener.accept().then(async (conn) => {
      await secureAccepted(conn, 10_000);
      return conn;
    });
    using dialed = await dial({ hostname: "localhost", port }, {
      tls: { caCerts: [ca] },
    });
    const accepted = await accepting;
    const sent = new Uint8Array(1 << 20).map((_, i) => i % 251);
    for (let offset = 0; offset < sent.length;) {
      offset += await accepted.write(sent.subarray(offset));
    }
    accepted.close();
    const received = new Uint8Array(sent.length);
    let length = 0;
    while (true) {
      const n = await dialed.read(received.subarray(length));
      if (n === null) break; // not UnexpectedEof: the goodbye came
      length += n;
      if (length === received.length) {
        assert.equal(await dialed.read(new Uint8Array(1)), null);
        break;
      }
    }
    assert.equal(length, sent.length);
    assert.deepEqual(received, sent);
  },
});

Deno.test({
  name:
    "a TLS listener refuses, at once, a certificate and key that do not belong together",
  ignore: !openssl,
  fn: async () => {
    const otherKey = await Deno.readTextFile(path("ca-key.pem"));
    assert.throws(
      () =>
        listen({
          hostname: "127.0.0.1",
          port: 0,
          tls: { cert: serverTls.cert, key: otherKey },
        }),
      /KeyMismatch/,
    );
  },
});

/**
 * The next read of `conn`. A guard, not a measure: it fails, rather than
 * hangs the suite, if nothing comes in 30 s, as when the master never
 * hangs up.
 */
async function readUnlessHung(conn: Deno.Conn): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("the peer still holds the socket after 30 s")),
      30_000,
    );
  });
  try {
    return await Promise.race([conn.read(new Uint8Array(1)), hung]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "TLS flags are checked before anything starts",
  ignore: !openssl,
  fn: async () => {
    const halfPair = await run("master", [
      "--port",
      "0",
      "--tls-cert",
      path("master.pem"),
    ]);
    assert.equal(halfPair.code, 2);
    assert.match(halfPair.stderr, /--tls-cert and --tls-key go together/);

    const swapped = await run("master", [
      "--port",
      "0",
      "--tls-cert",
      path("master-key.pem"),
      "--tls-key",
      path("master.pem"),
    ]);
    assert.equal(swapped.code, 2);
    assert.match(
      swapped.stderr,
      /--tls-cert .*master-key\.pem holds no PEM certificate/,
    );

    const missing = await run("submit", ["--ca", path("nope.pem")], {
      "x.sh": "true\n",
    });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read --ca .*nope\.pem/);
  },
});
