/**
 * The command-line runners as a user runs them: a real master process
 * started by `cli/master.ts`, programs submitted by `cli/submit.ts`, every
 * language, on 127.0.0.1.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type KilnProcess, startMasterProcess } from "../cli/_processes.ts";
import {
  createDefaultRegistry,
  type JobResult,
  MasterNode,
  SecondaryNode,
  submitProgram,
} from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { clientHandshake, serverHandshake } from "../lib/protocol/handshake.ts";

const SUBMIT_CLI = fileURLToPath(new URL("../cli/submit.ts", import.meta.url));
const TOKEN = "cli-test-token-0123456789";

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cli/submit.ts` with the given flags and files written to a temp dir. */
async function submitCli(
  master: KilnProcess | string,
  files: Record<string, string>,
  flags: string[] = [],
  options: { token?: string; stdin?: string } = {},
): Promise<CliRun> {
  const dir = await Deno.makeTempDir({ prefix: "kiln-cli-test-" });
  try {
    const paths = [];
    for (const [name, content] of Object.entries(files)) {
      await Deno.writeTextFile(`${dir}/${name}`, content);
      paths.push(`${dir}/${name}`);
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SUBMIT_CLI,
        "--master",
        typeof master === "string" ? master : master.address,
        ...flags,
        ...paths,
      ],
      env: { KILN_TOKEN: options.token ?? TOKEN, NO_COLOR: "1" },
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(options.stdin));
      await writer.close();
    }
    const { code, stdout, stderr } = await child.output();
    return {
      code,
      stdout: new TextDecoder().decode(stdout),
      stderr: new TextDecoder().decode(stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A program per language that greets the stdin line and lists its arguments. */
const GREETERS: Record<string, [file: string, source: string]> = {
  python: [
    "greet.py",
    `import sys
name = sys.stdin.readline().strip()
print(f"hello {name}")
print(",".join(sys.argv[1:]))
`,
  ],
  c: [
    "greet.c",
    `#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  char name[100];
  if (!fgets(name, sizeof name, stdin)) return 1;
  name[strcspn(name, "\\n")] = 0;
  printf("hello %s\\n", name);
  for (int i = 1; i < argc; i++) printf(i > 1 ? ",%s" : "%s", argv[i]);
  printf("\\n");
  return 0;
}
`,
  ],
  cpp: [
    "greet.cpp",
    `#include <iostream>
#include <string>
int main(int argc, char **argv) {
  std::string name;
  std::getline(std::cin, name);
  std::cout << "hello " << name << "\\n";
  for (int i = 1; i < argc; i++) std::cout << (i > 1 ? "," : "") << argv[i];
  std::cout << "\\n";
}
`,
  ],
  java: [
    "Greet.java",
    `import java.io.*;
public class Greet {
  public static void main(String[] args) throws IOException {
    String name = new BufferedReader(new InputStreamReader(System.in)).readLine();
    System.out.println("hello " + name);
    System.out.println(String.join(",", args));
  }
}
`,
  ],
  javascript: [
    "greet.js",
    `const input = await new Response(Deno.stdin.readable).text();
console.log("hello " + input.split("\\n")[0]);
console.log(Deno.args.join(","));
`,
  ],
  typescript: [
    "greet.ts",
    `const input: string = await new Response(Deno.stdin.readable).text();
const name: string = input.split("\\n")[0] ?? "";
console.log(\`hello \${name}\`);
console.log(Deno.args.join(","));
`,
  ],
  rust: [
    "greet.rs",
    `use std::io::BufRead;
fn main() {
    let mut name = String::new();
    std::io::stdin().lock().read_line(&mut name).unwrap();
    println!("hello {}", name.trim_end());
    println!("{}", std::env::args().skip(1).collect::<Vec<_>>().join(","));
}
`,
  ],
  bash: [
    "greet.sh",
    `read -r name
echo "hello $name"
(IFS=,; echo "$*")
`,
  ],
};

const statuses = await createDefaultRegistry().detect();
const available = new Set(
  statuses.filter((s) => s.toolchain.available).map((s) => s.name),
);
for (const status of statuses) {
  if (!status.toolchain.available) {
    console.log(`cli test skips ${status.name}: ${status.toolchain.reason}`);
  }
}

Deno.test("CLI: master and submit run every language with stdin and args", async (t) => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "2"],
    stderr: "null",
  });
  // Submit every language at once (two run, the rest queue), then check each.
  const languages = Object.keys(GREETERS).filter((language) =>
    available.has(language)
  );
  const runs = new Map(
    await Promise.all(languages.map(async (language) => {
      const [file, source] = GREETERS[language]!;
      const flags = [
        "--json",
        "--arg",
        "one two",
        "--arg",
        "3",
        "--stdin",
        "-",
      ];
      return [
        language,
        await submitCli(master, { [file]: source }, flags, {
          stdin: "kiln\nignored\n",
        }),
      ] as const;
    })),
  );
  for (const language of Object.keys(GREETERS)) {
    await t.step({
      name: language,
      ignore: !available.has(language),
      fn: () => {
        const run = runs.get(language)!;
        assert.equal(run.code, 0, run.stderr);
        const result: JobResult = JSON.parse(run.stdout);
        assert.deepEqual(Object.keys(result).sort(), [
          "client",
          "compile",
          "cpuTimeMs",
          "exitCode",
          "jobId",
          "language",
          "memoryKb",
          "node",
          "queuedMs",
          "sandbox",
          "signal",
          "stderr",
          "stdout",
          "timeMs",
          "truncated",
          "verdict",
        ]);
        assert.equal(result.verdict, "ok", result.stderr + result.reason);
        assert.equal(result.language, language);
        assert.equal(result.stdout, "hello kiln\none two,3\n");
        assert.equal(result.exitCode, 0);
        assert.equal(result.signal, null);
        assert.equal(result.truncated, false);
        assert.equal(result.node, "master");
        assert.match(result.jobId, /^[0-9a-f-]{36}$/);
        assert.ok(result.timeMs > 0 && result.queuedMs >= 0);
        const compiled = ["c", "cpp", "java", "typescript", "rust"].includes(
          language,
        );
        if (compiled) {
          assert.equal(result.compile?.verdict, "ok");
          assert.ok(result.compile.timeMs > 0);
          assert.deepEqual(Object.keys(result.compile).sort(), [
            "cpuTimeMs",
            "exitCode",
            "memoryKb",
            "stderr",
            "stdout",
            "timeMs",
            "verdict",
          ]);
        } else {
          assert.equal(result.compile, null);
        }
      },
    });
  }
});

Deno.test("CLI: verdicts and exit codes of failing programs", async (t) => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "2"],
    stderr: "null",
  });

  await t.step({
    name: "compile error",
    ignore: !available.has("c"),
    fn: async () => {
      const run = await submitCli(master, {
        "bad.c": "int main(void) { return missing; }\n",
      }, ["--json"]);
      assert.equal(run.code, 100);
      const result: JobResult = JSON.parse(run.stdout);
      assert.equal(result.verdict, "compile_error");
      assert.equal(result.compile?.verdict, "compile_error");
      assert.match(
        result.compile?.stderr ?? "",
        /'missing' undeclared|‘missing’ undeclared/,
      );
      const plain = await submitCli(master, {
        "bad.c": "int main(void) { return missing; }\n",
      });
      assert.equal(plain.code, 100);
      assert.match(plain.stderr, /undeclared[\s\S]*kiln: compile error/);
    },
  });

  await t.step({
    name: "uncaught exception",
    ignore: !available.has("python"),
    fn: async () => {
      const run = await submitCli(master, {
        "crash.py": "raise ValueError('boom')\n",
      }, ["--json"]);
      assert.equal(run.code, 1);
      const result: JobResult = JSON.parse(run.stdout);
      assert.equal(result.verdict, "runtime_error");
      assert.equal(result.exitCode, 1);
      assert.match(result.stderr, /ValueError: boom/);
    },
  });

  await t.step({
    name: "killed by a signal",
    ignore: !available.has("c"),
    fn: async () => {
      const run = await submitCli(master, {
        "segv.c": "int main(void) { volatile int *p = 0; return *p; }\n",
      });
      assert.equal(run.code, 128 + 11);
      // Killed by SIGSEGV, or under bubblewrap "exited with code 139, or
      // was killed by SIGSEGV": the sandbox reports both alike.
      assert.match(run.stderr, /kiln: program .*killed by SIGSEGV/);
    },
  });

  await t.step("exit code passes through", async () => {
    const run = await submitCli(master, {
      "exit.sh": "echo out; echo err >&2; exit 7\n",
    });
    assert.equal(run.code, 7);
    assert.equal(run.stdout, "out\n");
    assert.equal(run.stderr, "err\n");
  });

  await t.step("time limit", async () => {
    const run = await submitCli(
      master,
      { "loop.sh": "while :; do :; done\n" },
      ["--time-limit", "300"],
    );
    assert.equal(run.code, 101);
    assert.match(
      run.stderr,
      /kiln: time limit: program exceeded its wall time limit of 300 ms/,
    );
  });
});

Deno.test("CLI: mistakes get one clear line and a non-zero exit, no stack trace", async (t) => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "1"],
    stderr: "null",
  });
  const cases: [
    name: string,
    run: () => Promise<CliRun>,
    code: number,
    message: RegExp,
  ][] = [
    [
      "unknown language",
      () => submitCli(master, { "a.sh": "true" }, ["--lang", "cobol"]),
      104,
      /^kiln: rejected: unknown language "cobol"; this cluster offers .*bash.*\n$/,
    ],
    [
      "unknown extension",
      () => submitCli(master, { "a.xyz": "" }),
      2,
      /^kiln: cannot tell the language of "a.xyz" from its extension; pass --lang\n$/,
    ],
    [
      "missing file",
      () => submitCli(master, {}, ["/nonexistent/prog.py"]),
      2,
      /^kiln: no such file: \/nonexistent\/prog.py\n$/,
    ],
    [
      "no file at all",
      () => submitCli(master, {}),
      2,
      /^kiln: no source file given/,
    ],
    [
      "bad flag",
      () => submitCli(master, { "a.sh": "" }, ["--frobnicate"]),
      2,
      /^kiln: Unknown option '--frobnicate'/,
    ],
    [
      "wrong token",
      () => submitCli(master, { "a.sh": "true" }, [], { token: "wrong" }),
      106,
      /^kiln: .*authentication failed.*\n$/,
    ],
  ];
  for (const [name, run, code, message] of cases) {
    await t.step(name, async () => {
      const result = await run();
      assert.equal(result.code, code, result.stderr);
      assert.match(result.stderr, message);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    });
  }
  await t.step("unreachable master", async () => {
    // Port 1 on loopback: nothing listens there.
    const result = await submitCli("127.0.0.1:1", { "a.sh": "true" });
    assert.equal(result.code, 106);
    assert.match(
      result.stderr,
      /^kiln: Cannot connect to master at 127.0.0.1:1: connection refused/,
    );
  });
});

Deno.test("CLI: startMasterProcess gives the HTTP API's address and runs the master with the env it is given", async () => {
  // A PATH with no toolchain on it: the master offers no bash, which it
  // would with the PATH of this process (JavaScript it runs with Deno itself).
  const emptyDir = await Deno.makeTempDir({ prefix: "kiln-cli-test-" });
  try {
    await using master = await startMasterProcess({
      token: TOKEN,
      args: ["--slots", "1", "--sandbox", "none", "--http-port", "0"],
      env: { PATH: emptyDir },
      stderr: "null",
    });
    assert.ok(master.httpAddress, "no HTTP address");
    const response = await fetch(
      `http://${master.httpAddress}/api/v2/runtimes`,
      { headers: { authorization: `Bearer ${TOKEN}` } },
    );
    assert.equal(response.status, 200);
    const runtimes: { language: string }[] = await response.json();
    assert.ok(!runtimes.some((runtime) => runtime.language === "bash"));
  } finally {
    await Deno.remove(emptyDir, { recursive: true });
  }
});

Deno.test("CLI: master refuses bad flags and a busy port with one line", async () => {
  const master = fileURLToPath(new URL("../cli/master.ts", import.meta.url));
  const run = async (...args: string[]) => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", master, ...args],
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  };
  const slots = await run("--slots", "zero");
  assert.equal(slots.code, 2);
  assert.match(slots.stderr, /--slots must be an integer >= 0, got "zero"/);
  await using busy = await startMasterProcess({ token: TOKEN, stderr: "null" });
  const port = busy.address.split(":").at(-1)!;
  const taken = await run("--port", port);
  assert.equal(taken.code, 1);
  assert.match(taken.stderr, /address already in use/);
});

Deno.test("CLI: nodes refuse a sandbox they cannot have, and a token on the command line", async () => {
  const run = async (script: string, ...args: string[]) => {
    const path = fileURLToPath(new URL(`../cli/${script}`, import.meta.url));
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      // The master never gets to listen, but if it did: on any free port.
      args: [
        "run",
        "-A",
        path,
        ...script === "master.ts" ? ["--port", "0"] : [],
        ...args,
      ],
      stdin: "null",
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  };
  for (const node of ["master.ts", "secondary.ts"]) {
    const mode = await run(node, "--sandbox", "docker");
    assert.equal(mode.code, 2, mode.stderr);
    assert.match(
      mode.stderr,
      /--sandbox must be one of auto, bwrap, none, got "docker"/,
    );
    const none = await run(node, "--sandbox", "none", "--require-sandbox");
    assert.equal(none.code, 1, none.stderr);
    assert.match(
      none.stderr,
      /cannot start: --require-sandbox cannot be combined with --sandbox none/,
    );
    const uids = await run(node, "--uid-range", "0-100");
    assert.equal(uids.code, 2, uids.stderr);
    assert.match(uids.stderr, /--uid-range: uid 0 cannot be a job's/);
    // The token is secret: a command line is readable by every process.
    const token = await run(node, "--token", "s3cret");
    assert.equal(token.code, 2, token.stderr);
    assert.doesNotMatch(token.stderr, /s3cret/);
  }
});

Deno.test("CLI: nodes refuse a limit or a duration past its maximum, naming both", async () => {
  const run = async (script: string, ...args: string[]) => {
    const path = fileURLToPath(new URL(`../cli/${script}`, import.meta.url));
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", path, "--port", "0", ...args],
      stdin: "null",
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  };
  // Each is read before anything starts: a flag error exits at once.
  for (
    const [flags, message] of [
      [["--time-limit", "2147483648"], /--time-limit must be at most 86400000/],
      [["--cpu-limit", "86400001"], /--cpu-limit must be at most 86400000/],
      [["--memory-limit", "1048577"], /--memory-limit must be at most 1048576/],
      [["--disk-limit", "1048577"], /--disk-limit must be at most 1048576/],
      [
        ["--disk-file-limit", "16777217"],
        /--disk-file-limit must be at most 16777216/,
      ],
      [["--pty-limit", "1048577"], /--pty-limit must be at most 1048576/],
      [["--pty-limit=-1"], /--pty-limit must be an integer >= 0, got "-1"/],
      [
        ["--node-timeout", "2147483648"],
        /--node-timeout must be at most 2147483647/,
      ],
      [
        ["--node-timeout", "4294967296"],
        /--node-timeout must be at most 2147483647/,
      ],
      [
        ["--idle-timeout", "2147483648"],
        /--idle-timeout must be at most 2147483647/,
      ],
      [
        ["--auth-backoff-max", "1e10"],
        /--auth-backoff-max must be at most 2147483647/,
      ],
      [["--slots", "5000"], /--slots must be at most 4096/],
    ] as const
  ) {
    const result = await run("master.ts", ...flags);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, message);
  }
});

/** Peak resident memory of a process, in MB, from /proc. */
async function peakRssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) / 1024;
}

Deno.test("CLI: 20 concurrent jobs against --slots 2 all complete; queued ones get positions", async () => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "2"],
    stderr: "null",
  });
  const positions: number[][] = [];
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => {
    const seen: number[] = [];
    positions.push(seen);
    return submitProgram({
      language: "bash",
      files: [{ name: "job.sh", content: 'read -r n; echo "$((n * n))"' }],
      stdin: `${i}\n`,
    }, {
      master: master.address,
      token: TOKEN,
      onEvent: (e) => e.type === "queued" && seen.push(e.position),
    });
  }));
  results.forEach((result, i) =>
    assert.equal(result.stdout, `${i * i}\n`, result.reason)
  );
  const queued = positions.filter((seen) => seen.length > 0);
  assert.ok(queued.length >= 16, `${queued.length} of 20 were queued`);
  for (const seen of queued) {
    assert.equal(seen.at(-1), 1, `positions ${seen} never reached the front`);
  }
});

Deno.test("CLI: a program printing 100 MB is truncated and the master's memory stays bounded", async () => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "1"],
    stderr: "null",
  });
  const before = await peakRssMb(master.child.pid);
  const run = await submitCli(master, {
    "flood.sh": "head -c 104857600 /dev/zero | tr '\\0' 'x'\necho done\n",
  }, ["--json"]);
  const result: JobResult = JSON.parse(run.stdout);
  assert.equal(result.verdict, "output_limit");
  assert.equal(result.truncated, true);
  assert.equal(
    result.stdout.length,
    1024 * 1024,
    "exactly the output limit is kept",
  );
  const after = await peakRssMb(master.child.pid);
  assert.ok(
    after - before < 64,
    `the master's peak memory grew from ${before} MB to ${after} MB`,
  );
});

Deno.test("CLI: master --max-queue 0 rejects a job that would have to wait", async () => {
  await using master = await startMasterProcess({
    token: TOKEN,
    args: ["--slots", "1", "--max-queue", "0"],
    stderr: "null",
  });
  const abort = new AbortController();
  const started = Promise.withResolvers<void>();
  const holder = submitProgram({
    language: "bash",
    files: [{ name: "hold.sh", content: "sleep 600" }],
  }, {
    master: master.address,
    token: TOKEN,
    signal: abort.signal,
    onEvent: (event) => event.type === "started" && started.resolve(),
  }).catch(() => "released");
  await started.promise;
  const run = await submitCli(master, { "wait.sh": "echo never" });
  assert.equal(run.code, 104);
  assert.match(
    run.stderr,
    /kiln: rejected: the queue is full \(0 jobs waiting\); retry in \d+ s/,
  );
  abort.abort();
  await holder;
});

Deno.test("CLI: submit marks where a job restarted on another node, on stderr", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const joined = () =>
    new Promise((resolve) =>
      master.addEventListener("nodejoin", resolve, { once: true })
    );
  // A node that prints a line of the job, then vanishes mid-run.
  let join = joined();
  const doomed = new Connection(await Deno.connect(master.addr));
  await clientHandshake(doomed, {
    role: "secondary",
    token: TOKEN,
    name: "doomed",
  });
  await doomed.send({
    type: "register",
    id: crypto.randomUUID(),
    name: "doomed",
    languages: [{ name: "bash", version: "5", aliases: [], extensions: [] }],
    slots: 1,
    maxCpu: 100,
    maxRam: 100,
  });
  assert.equal((await doomed.receive()).type, "registered");
  await join;
  const ran = (async () => {
    while (true) {
      const message = await doomed.receive();
      if (message.type !== "run") continue;
      await doomed.send({
        type: "output",
        jobId: message.jobId,
        stream: "stdout",
        data: "from the lost attempt\n",
      });
      return;
    }
  })();
  const submitted = submitCli(`127.0.0.1:${master.addr.port}`, {
    "a.sh": "echo from the second attempt",
  });
  await ran;
  join = joined();
  await using _survivor = new SecondaryNode({
    master: master.addr,
    name: "survivor",
    slots: 1,
    token: TOKEN,
    languages: ["bash"],
  });
  await join;
  await doomed.close();

  const run = await submitted;
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "from the lost attempt\nfrom the second attempt\n");
  assert.match(
    run.stderr,
    /^kiln: --- restarted \(attempt 2\): node "doomed" was lost: .+; the output above is void ---$/m,
  );
});

Deno.test("CLI: submit --master A,B,C passes over a master that refuses, and goes on through the next when one is lost mid-job", async () => {
  const refused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gone = `127.0.0.1:${refused.addr.port}`;
  refused.close();
  // A master that takes the job, shows a line of it, and is lost.
  const lost = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const connection = new Connection(await lost.accept());
    try {
      await serverHandshake(connection, { token: TOKEN, node: "lost" });
      const submit = await connection.receive();
      assert.equal(submit.type, "submit");
      await connection.send({ type: "accepted", ref: submit.ref, jobId: "j0" });
      await connection.send({
        type: "output",
        jobId: "j0",
        stream: "stdout",
        data: "from the lost master\n",
      });
    } finally {
      await connection.close();
      lost.close();
    }
  })();
  await using survivor = new MasterNode({
    port: 0,
    name: "survivor",
    slots: 1,
    token: TOKEN,
    resourceLogIntervalMs: 0,
  });
  const lostAddress = `127.0.0.1:${(lost.addr as Deno.NetAddr).port}`;
  const survivorAddress = `127.0.0.1:${survivor.addr.port}`;
  const run = await submitCli(
    [gone, lostAddress, survivorAddress].join(","),
    { "a.sh": "echo from the survivor" },
  );
  await served;
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "from the lost master\nfrom the survivor\n");
  assert.match(
    run.stderr,
    new RegExp(
      `^kiln: --- restarted \\(attempt 2\\): the connection to master "lost" at ${lostAddress} ended before the result of job j0: the master closed the connection; ` +
        `master "survivor" at ${survivorAddress} does not know job j0: .+; submitted again to master "survivor" at ${survivorAddress}; the output above is void ---$`,
      "m",
    ),
  );
});
