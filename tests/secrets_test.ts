/**
 * No token ever reaches a log line, whatever happens: a whole cluster of
 * real processes (master with `--auth`, a secondary, the CLI clients) runs
 * at the most verbose log level, in both log formats, through successes and
 * every kind of refusal, and everything each process printed is scanned.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  startMasterProcess,
  startSecondaryProcess,
} from "../cli/_processes.ts";

const SUBMIT = fileURLToPath(new URL("../cli/submit.ts", import.meta.url));
const STATUS = fileURLToPath(new URL("../cli/status.ts", import.meta.url));

const TOKENS = {
  alice: `alice-${crypto.randomUUID()}`,
  east: `east-${crypto.randomUUID()}`,
  wrong: `wrong-${crypto.randomUUID()}`,
};

/** Everything a process printed, to scan at the end. */
const printed: string[] = [];

async function collect(stream: ReadableStream<Uint8Array> | null) {
  if (!stream) return;
  printed.push(await new Response(stream).text());
}

/** Runs a CLI client with the token in a file, never on its command line. */
async function client(
  script: string,
  tokenFile: string,
  args: string[],
): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, "--token-file", tokenFile, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const output = new TextDecoder().decode(stdout) +
    new TextDecoder().decode(stderr);
  printed.push(output);
  return { code, output };
}

for (const format of ["text", "json"]) {
  Deno.test(`secrets: no token in any output of a cluster logging at trace level (${format})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiln-secrets-test-" });
    try {
      const auth = `${dir}/auth.json`;
      await Deno.writeTextFile(
        auth,
        JSON.stringify({
          credentials: [
            { name: "alice", role: "client", token: TOKENS.alice },
            { name: "east", role: "node", token: TOKENS.east },
          ],
        }),
        { mode: 0o600 },
      );
      const tokenFile = (name: keyof typeof TOKENS) => {
        const path = `${dir}/${name}.token`;
        Deno.writeTextFileSync(path, `${TOKENS[name]}\n`, { mode: 0o600 });
        return path;
      };
      const logging = ["--log-level", "trace", "--log-format", format];
      await using master = await startMasterProcess({
        args: [
          "--auth",
          auth,
          "--slots",
          "0",
          "--max-auth-failures",
          "0",
          ...logging,
        ],
        stderr: "piped",
      });
      const masterLog = collect(master.child.stderr);
      await using secondary = await startSecondaryProcess(master.address, {
        token: TOKENS.east,
        args: ["--name", "east", "--slots", "1", ...logging],
        stderr: "piped",
      });
      const secondaryLog = collect(secondary.child.stderr);

      const hello = `${dir}/hello.sh`;
      await Deno.writeTextFile(hello, "echo hello from east\n");
      const ok = await client(SUBMIT, tokenFile("alice"), [
        "--master",
        master.address,
        "--name",
        "alice",
        "--log-level",
        "trace",
        hello,
      ]);
      assert.equal(ok.code, 0, ok.output);
      assert.match(ok.output, /hello from east/);
      // Every kind of refusal: wrong token, unknown name, a node's token.
      for (
        const [name, token] of [
          ["alice", "wrong"],
          ["mallory", "alice"],
          ["east", "east"],
        ] as const
      ) {
        const refused = await client(SUBMIT, tokenFile(token), [
          "--master",
          master.address,
          "--name",
          name,
          "--verbose",
          hello,
        ]);
        assert.equal(refused.code, 106, refused.output);
        assert.match(refused.output, /authentication failed/);
      }
      const status = await client(STATUS, tokenFile("alice"), [
        "--master",
        master.address,
        "--name",
        "alice",
        "--json",
      ]);
      assert.equal(status.code, 0, status.output);
      assert.match(status.output, /"name":"east"/);

      await secondary.stop();
      await master.stop();
      await Promise.all([masterLog, secondaryLog]);
      const everything = printed.join("\n");
      assert.match(
        everything,
        /authentication failed/,
        "the refusals were logged",
      );
      // The nodes' own logs were read, not only the clients' output.
      assert.match(everything, /joined/, "the master's log was captured");
      assert.match(everything, /registered/, "the secondary's too");
      for (const [name, token] of Object.entries(TOKENS)) {
        assert.ok(
          !everything.includes(token),
          `${name}'s token was printed by some process`,
        );
      }
    } finally {
      printed.length = 0;
      await Deno.remove(dir, { recursive: true });
    }
  });
}
