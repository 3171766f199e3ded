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
  /** Flags for `deno run` itself, such as `--cpu-prof`; `-A` is already there. */
  runtimeArgs?: string[];
  /** More environment variables (a `PATH` to find toolchains on, say). */
  env?: Record<string, string>;
}

/** A master process; with `--http-port` among its flags, also its HTTP API's. */
export interface MasterProcess extends KilnProcess {
  /** The address from its `http on` line, when it serves the HTTP API. */
  readonly httpAddress: string | undefined;
}

const MASTER_CLI = fileURLToPath(new URL("./master.ts", import.meta.url));

/**
 * Starts `cli/master.ts` on a free port and waits for its `listening on`
 * line, and for its `http on` line too when its flags have `--http-port`.
 */
export async function startMasterProcess(
  options: StartMasterOptions = {},
): Promise<MasterProcess> {
  const args = options.args ?? [];
  const servesHttp = args.some((arg) =>
    arg === "--http-port" || arg.startsWith("--http-port=")
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...options.runtimeArgs ?? [],
      MASTER_CLI,
      "--port",
      "0",
      ...args,
    ],
    env: { ...options.env, KILN_TOKEN: options.token ?? "", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: options.stderr ?? "inherit",
  }).spawn();
  // Read with next(), not for-await: leaving a for-await loop would close
  // the generator, and with it the pipe the master still writes to.
  const lines = readLines(child.stdout);
  let address: string | undefined;
  for (let line = await lines.next(); !line.done; line = await lines.next()) {
    address ??= /^listening on (\S+)$/.exec(line.value)?.[1];
    const httpAddress = /^http on (\S+)$/.exec(line.value)?.[1];
    if (address === undefined || (servesHttp && httpAddress === undefined)) {
      continue;
    }
    // Keep reading stdout so the process never blocks on a full pipe.
    (async () => {
      for await (const _ of lines);
    })();
    return { ...kilnProcess(address, child), httpAddress };
  }
  const status = await child.status;
  throw new Error(
    `the master exited with code ${status.code} before it was listening`,
  );
}

/** Options of {@linkcode startSecondaryProcess}. */
export interface StartSecondaryOptions {
  /** Given through `KILN_TOKEN`, never on the command line. */
  token?: string;
  /** More flags for `cli/secondary.ts`; `--master` is already there. */
  args?: string[];
  /** Where the secondary's logs go. @default "inherit" */
  stderr?: "inherit" | "piped" | "null";
  /** More environment variables (a `PATH` to find toolchains on, say). */
  env?: Record<string, string>;
  /**
   * Give up (killing the process) when it has not registered within this
   * many milliseconds: a secondary with a wrong token retries forever.
   *
   * @default {60000}
   */
  timeoutMs?: number;
}

/** A secondary process that printed `registered with HOST:PORT as NAME`. */
export interface SecondaryProcess extends KilnProcess {
  /** The master's address, from its `registered with` line. */
  readonly address: string;
  /** The name it registered under. */
  readonly name: string;
  /** How many times it has printed its `registered with` line so far. */
  readonly registrations: number;
  /**
   * Resolves once the process has registered `count` times in all (2 after
   * the master was restarted once); rejects if it exits first.
   */
  waitForRegistrations(count: number): Promise<void>;
}

const SECONDARY_CLI = fileURLToPath(
  new URL("./secondary.ts", import.meta.url),
);

/**
 * Starts `cli/secondary.ts` against `master` (`host:port`, or
 * `nats://host:port[,...]` for a cluster on NATS) and waits for its first
 * `registered with` line.
 */
export async function startSecondaryProcess(
  master: string,
  options: StartSecondaryOptions = {},
): Promise<SecondaryProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      SECONDARY_CLI,
      // A NATS URL: the secondary pulls from that cluster instead.
      master.startsWith("nats://") ? "--nats" : "--master",
      master,
      ...options.args ?? [],
    ],
    env: { ...options.env, KILN_TOKEN: options.token ?? "", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: options.stderr ?? "inherit",
  }).spawn();
  let registrations = 0;
  let first: { address: string; name: string } | undefined;
  const firstSeen = Promise.withResolvers<void>();
  const waiters: { count: number; resolve: () => void }[] = [];
  const exited = child.status.then((status) => {
    firstSeen.resolve();
    return status;
  });
  // Read every line to the end, so the process never blocks on a full pipe.
  const reading = (async () => {
    for await (const line of readLines(child.stdout)) {
      const match = /^registered with (\S+) as (.+)$/.exec(line);
      if (!match) continue;
      registrations++;
      first ??= { address: match[1]!, name: match[2]! };
      firstSeen.resolve();
      for (const waiter of waiters.filter((w) => w.count <= registrations)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  })();
  const timeoutMs = options.timeoutMs ?? 60_000;
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, timeoutMs);
  try {
    await firstSeen.promise;
  } finally {
    clearTimeout(timer);
  }
  if (first === undefined) {
    const status = await exited;
    await reading;
    throw new Error(
      status.signal === "SIGKILL"
        ? `the secondary did not register with ${master} within ${timeoutMs} ms`
        : `the secondary exited with code ${status.code} before it registered`,
    );
  }
  const kiln = kilnProcess(first.address, child);
  return {
    ...kiln,
    name: first.name,
    get registrations() {
      return registrations;
    },
    waitForRegistrations(count: number): Promise<void> {
      if (registrations >= count) return Promise.resolve();
      const waiting = Promise.withResolvers<void>();
      waiters.push({ count, resolve: waiting.resolve });
      return Promise.race([
        waiting.promise,
        exited.then((status) => {
          throw new Error(
            `the secondary exited with code ${status.code} after ${registrations} registrations, before ${count}`,
          );
        }),
      ]);
    },
  };
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
