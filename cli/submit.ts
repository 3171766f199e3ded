/**
 * `deno task submit`: sends source files to a master, streams the program's
 * output live, and exits with the program's exit code.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { printable } from "./_terminal.ts";
import { constants } from "node:os";
import { basename } from "node:path";
import {
  ConnectionError,
  createDefaultRegistry,
  type JobEvent,
  type JobResult,
  ProtocolError,
  submitProgram,
} from "../mod.ts";
import { DEFAULT_PORT } from "../lib/address.ts";
import { LIMIT_MAXIMA } from "../lib/job.ts";
import {
  CliError,
  EXIT_USAGE,
  integerFlag,
  parseFlags,
  readToken,
  runMain,
} from "./_cli.ts";
import { readTlsDialFlags, TLS_DIAL_FLAGS } from "./_tls_flags.ts";
import { setupLogging } from "./_logging.ts";

/** Exit codes for what is not the program's own exit code. Documented in the README. */
export const EXIT_CODES = {
  compile_error: 100,
  time_limit: 101,
  memory_limit: 102,
  output_limit: 103,
  rejected: 104,
  internal_error: 105,
  /** No master is reachable, the token is wrong, or the link broke and could not be made again. */
  connection: 106,
} as const;

const USAGE = `Usage: deno task submit [options] FILE...

  --master HOST:PORT[,HOST:PORT...]
                      master to submit to (default 127.0.0.1:${DEFAULT_PORT}); given
                      several masters of one cluster, they are tried in turn,
                      and a connection lost mid-job goes on through the next
  --token-file F      file holding the cluster token (default: $KILN_TOKEN)
  --ca FILE           speak TLS, trusting the CA certificate in FILE (PEM, as
                      deno task gen-certs makes)
  --tls               speak TLS, trusting the default roots only
  --name N            your credential's name on a master with --auth
                      (default: $KILN_NAME)
  --lang L            language (default: inferred from the first file's extension)
  --entry NAME        entry file (default: the first FILE)
  --stdin FILE|-      give the program this file, or our own stdin, as stdin
  --arg A             a command-line argument for the program (repeatable)
  --time-limit MS     wall time limit, at most the master's
  --json              print one JSON object with the whole result instead of streaming
  --log-level L       trace, debug, info, warning, error (default warning)
  --verbose           print stack traces of errors
  -h, --help          show this help

Exit code: the program's own; 128+N when signal N killed it; ${EXIT_CODES.compile_error} compile error,
${EXIT_CODES.time_limit} time limit, ${EXIT_CODES.memory_limit} memory limit, ${EXIT_CODES.output_limit} output limit, ${EXIT_CODES.rejected} rejected,
${EXIT_CODES.internal_error} internal error, ${EXIT_CODES.connection} no master reachable or authentication failed, ${EXIT_USAGE} usage error.`;

async function main(args: string[]): Promise<number> {
  const { values, positionals: paths } = parseFlags(args, {
    master: { type: "string", default: `127.0.0.1:${DEFAULT_PORT}` },
    "token-file": { type: "string" },
    ...TLS_DIAL_FLAGS,
    name: { type: "string" },
    lang: { type: "string" },
    entry: { type: "string" },
    stdin: { type: "string" },
    arg: { type: "string", multiple: true, default: [] },
    "time-limit": { type: "string" },
    json: { type: "boolean", default: false },
    "log-level": { type: "string", default: "warning" },
    verbose: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  }, true);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (paths.length === 0) {
    throw new CliError(
      "no source file given; usage: deno task submit [options] FILE...",
    );
  }
  try {
    await setupLogging(values["log-level"]);
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  const wallTimeMs = integerFlag(
    "time-limit",
    values["time-limit"],
    1,
    LIMIT_MAXIMA.wallTimeMs,
  );
  const language = values.lang ?? inferLanguage(paths[0]!);
  const files = await Promise.all(
    paths.map(async (path) => ({
      name: basename(path),
      content: await readSource(path),
    })),
  );
  const stdin = values.stdin === undefined
    ? undefined
    : await readStdin(values.stdin);

  let result: JobResult;
  try {
    result = await submitProgram({
      language,
      files,
      args: values.arg,
      ...values.entry === undefined ? {} : { entry: values.entry },
      ...stdin === undefined ? {} : { stdin },
      ...wallTimeMs === undefined ? {} : { limits: { wallTimeMs } },
    }, {
      master: values.master,
      token: await readToken(values["token-file"]),
      tls: await readTlsDialFlags(values),
      name: values.name ?? Deno.env.get("KILN_NAME"),
      onEvent: values.json ? undefined : streamEvent,
    });
  } catch (error) {
    if (error instanceof ConnectionError || error instanceof ProtocolError) {
      throw new CliError(error.message, EXIT_CODES.connection);
    }
    throw error;
  }

  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    report(result);
  }
  return exitCodeOf(result);
}

/** Jobs accepted so far (one, unless it was submitted again). */
const acceptedIds = new Set<string>();

/** Writes live events: the program's output to our own streams, the rest as `kiln:` lines. */
function streamEvent(event: JobEvent): void {
  if (event.type === "output") {
    const bytes = new TextEncoder().encode(event.data);
    (event.stream === "stdout" ? Deno.stdout : Deno.stderr).writeSync(bytes);
  } else if (event.type === "restarted") {
    // The output so far came from an attempt that was lost: what follows
    // starts over, and the reader must be able to tell where.
    console.error(
      `kiln: --- restarted (attempt ${event.attempt}): ${event.reason}; the output above is void ---`,
    );
  } else if (event.type === "accepted") {
    // The same id again: the connection was lost and the job attached
    // again on the next one; its output goes on where it was.
    if (acceptedIds.has(event.jobId)) {
      console.error(
        `kiln: the connection was lost; job ${event.jobId} goes on over another`,
      );
    }
    acceptedIds.add(event.jobId);
  } else if (event.type === "queued" && Deno.stderr.isTerminal()) {
    const seconds = Math.ceil(event.estimatedWaitMs / 1000);
    const wait = seconds > 0 ? ` (about ${seconds} s)` : "";
    console.error(`kiln: queued at position ${event.position}${wait}`);
  }
}

/** After streaming: say what the program's output cannot say itself. */
function report(result: JobResult): void {
  if (result.compile && result.compile.verdict !== "ok") {
    Deno.stderr.writeSync(
      new TextEncoder().encode(result.compile.stdout + result.compile.stderr),
    );
  }
  if (result.truncated) console.error("kiln: output truncated");
  if (result.verdict !== "ok" && result.verdict !== "runtime_error") {
    console.error(
      `kiln: ${result.verdict.replace("_", " ")}${
        result.reason ? `: ${printable(result.reason)}` : ""
      }`,
    );
  } else if (result.signal) {
    console.error(`kiln: program killed by ${printable(result.signal)}`);
  } else if (result.reason?.includes("or was killed by")) {
    // Under bubblewrap a code of 128 + n may be a signal or the program's
    // own choice: say both, as the result does.
    console.error(`kiln: program ${printable(result.reason)}`);
  }
}

function exitCodeOf(result: JobResult): number {
  if (result.verdict === "ok" || result.verdict === "runtime_error") {
    if (result.signal) {
      return 128 +
        ((constants.signals as Record<string, number>)[result.signal] ?? 0);
    }
    return result.exitCode ?? EXIT_CODES.internal_error;
  }
  return EXIT_CODES[result.verdict];
}

function inferLanguage(path: string): string {
  const runner = createDefaultRegistry().forFile(path);
  if (!runner) {
    throw new CliError(
      `cannot tell the language of "${
        basename(path)
      }" from its extension; pass --lang`,
    );
  }
  return runner.name;
}

async function readSource(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new CliError(`no such file: ${path}`);
    }
    if (error instanceof Deno.errors.IsADirectory) {
      throw new CliError(`${path} is a directory, not a source file`);
    }
    throw new CliError(`cannot read ${path}: ${(error as Error).message}`);
  }
}

async function readStdin(source: string): Promise<string> {
  if (source === "-") return await new Response(Deno.stdin.readable).text();
  return await readSource(source);
}

if (import.meta.main) await runMain("kiln", main);
