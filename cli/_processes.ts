/**
 * Starting kiln's own command-line runners as child processes, the way an
 * operator would: used by the demo and by the end-to-end tests, which must
 * exercise the real CLI rather than the library behind it.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** A kiln process that printed `listening on HOST:PORT`. */
export interface KilnProcess extends AsyncDisposable {
  /** The address from its `listening on` line. */
  readonly address: string;
  readonly child: Deno.ChildProcess;
  /** Sends SIGTERM, waits for the exit (SIGKILL after `graceMs`), returns the status. */
  stop(graceMs?: number): Promise<Deno.CommandStatus>;
}

/** Options of {@linkcode startMasterProcess}. */
export interface StartMasterOptions {
  /** Given through `KILN_TOKEN`, never on the command line. */
  token?: string;
  /** More flags for `cli/master.ts`; `--port 0` is already there. */
  args?: string[];
  /** Where the master's logs go. @default "inherit" */
  stderr?: "inherit" | "piped" | "null";
}

const MASTER_CLI = fileURLToPath(new URL("./master.ts", import.meta.url));

/** Starts `cli/master.ts` on a free port and waits for its `listening on` line. */
export async function startMasterProcess(
  options: StartMasterOptions = {},
): Promise<KilnProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MASTER_CLI, "--port", "0", ...options.args ?? []],
    env: { KILN_TOKEN: options.token ?? "", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: options.stderr ?? "inherit",
  }).spawn();
  // Read with next(), not for-await: leaving a for-await loop would close
  // the generator, and with it the pipe the master still writes to.
  const lines = readLines(child.stdout);
  for (let line = await lines.next(); !line.done; line = await lines.next()) {
    const match = /^listening on (\S+)$/.exec(line.value);
    if (!match) continue;
    // Keep reading stdout so the process never blocks on a full pipe.
    (async () => {
      for await (const _ of lines);
    })();
    return kilnProcess(match[1]!, child);
  }
  const status = await child.status;
  throw new Error(
    `the master exited with code ${status.code} before it was listening`,
  );
}

function kilnProcess(address: string, child: Deno.ChildProcess): KilnProcess {
  const stop = async (graceMs = 10_000) => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited in the meantime.
      }
    }, graceMs);
    try {
      return await child.status;
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    address,
    child,
    stop,
    [Symbol.asyncDispose]: async () => void await stop(),
  };
}

/** Splits a byte stream into text lines. */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (pending + text).split("\n");
    pending = parts.pop()!;
    yield* parts;
  }
  if (pending) yield pending;
}
