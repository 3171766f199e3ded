/**
 * Files that hold secrets or what clients sent: a token file or a
 * credentials file open to other users is refused, as ssh refuses such a
 * key; a history file is created private.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { JobHistory } from "../mod.ts";

const MASTER = fileURLToPath(new URL("../cli/master.ts", import.meta.url));
const STATUS = fileURLToPath(new URL("../cli/status.ts", import.meta.url));
const TOKEN = `files-${crypto.randomUUID()}`;

async function run(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stderr: string }> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("a --token-file or --auth file open to other users is refused, naming its mode; an opt-out accepts it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-secret-files-" });
  try {
    const tokenFile = `${dir}/token`;
    await Deno.writeTextFile(tokenFile, `${TOKEN}\n`);
    await Deno.chmod(tokenFile, 0o644);
    const open = await run(MASTER, ["--port", "0", "--token-file", tokenFile]);
    assert.equal(open.code, 2, open.stderr);
    assert.match(
      open.stderr,
      new RegExp(
        `--token-file ${tokenFile} is open to other users \\(mode 0644\\): make it private with chmod 600`,
      ),
    );
    assert.doesNotMatch(open.stderr, /\n\s+at /, "no stack trace");

    const auth = `${dir}/auth.json`;
    await Deno.writeTextFile(
      auth,
      JSON.stringify({
        credentials: [{ name: "alice", role: "client", token: TOKEN }],
      }),
    );
    await Deno.chmod(auth, 0o640);
    const openAuth = await run(MASTER, ["--port", "0", "--auth", auth]);
    assert.notEqual(openAuth.code, 0);
    assert.match(
      openAuth.stderr,
      /--auth .* is open to other users \(mode 0640\)/,
    );

    // Opted out, the same file is read: the status client then fails for
    // another reason (nobody listens on port 1).
    const accepted = await run(
      STATUS,
      ["--master", "127.0.0.1:1", "--token-file", tokenFile],
      { KILN_ALLOW_OPEN_SECRET_FILES: "1" },
    );
    assert.notEqual(accepted.code, 0);
    assert.doesNotMatch(accepted.stderr, /open to other users/);
    // A private file is fine without it.
    await Deno.chmod(tokenFile, 0o600);
    const private_ = await run(STATUS, [
      "--master",
      "127.0.0.1:1",
      "--token-file",
      tokenFile,
    ]);
    assert.doesNotMatch(private_.stderr, /open to other users/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a history file is created readable by its owner only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-history-mode-" });
  try {
    const path = `${dir}/history.db`;
    const history = new JobHistory({ path });
    history.close();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
