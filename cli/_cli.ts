/**
 * What every command-line runner shares: flag parsing that turns mistakes
 * into one clear line, and a single way to stop with an exit code.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs, type ParseArgsConfig } from "node:util";
import { flushLogs } from "./_logging.ts";

/** Exit code for a mistake on the command line. */
export const EXIT_USAGE = 2;

/** A problem to report in one line and exit with, no stack trace. */
export class CliError extends Error {
  override name = "CliError";
  readonly exitCode: number;

  constructor(message: string, exitCode: number = EXIT_USAGE) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** `parseArgs` in strict mode, its errors turned into {@linkcode CliError}s. */
export function parseFlags<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (error) {
    throw new CliError(error instanceof Error ? error.message : String(error));
  }
}

/**
 * Reads an integer flag, naming the flag when the value is not one or lies
 * outside `min`..`max`. Durations pass `MAX_TIMER_MS` as `max`.
 */
export function integerFlag(
  name: string,
  value: string | undefined,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isInteger(parsed) || parsed < min) {
    throw new CliError(
      `--${name} must be an integer >= ${min}, got "${value}"`,
    );
  }
  if (parsed > max) {
    throw new CliError(`--${name} must be at most ${max}, got "${value}"`);
  }
  return parsed;
}

/** The environment variable that lets secret files be readable by others. */
export const ALLOW_OPEN_SECRETS_ENV = "KILN_ALLOW_OPEN_SECRET_FILES";

/**
 * Refuses a secret file (`--token-file`, `--auth`) that users other than its
 * owner may read or write, as ssh refuses such a key: the mode is named,
 * and the fix. `KILN_ALLOW_OPEN_SECRET_FILES=1` skips the check (a secret
 * mounted read-only by an orchestrator at mode 0644, say). A file that
 * cannot be inspected is left to the read that follows, which says why.
 */
export async function checkSecretFile(
  flag: string,
  file: string,
): Promise<void> {
  if (Deno.env.get(ALLOW_OPEN_SECRETS_ENV) === "1") return;
  let mode: number | null;
  try {
    mode = (await Deno.stat(file)).mode;
  } catch {
    return;
  }
  if (mode === null || (mode & 0o077) === 0) return;
  const octal = (mode & 0o777).toString(8).padStart(4, "0");
  throw new CliError(
    `${flag} ${file} is open to other users (mode ${octal}): make it private with chmod 600 ${file}, or set ${ALLOW_OPEN_SECRETS_ENV}=1 to accept it`,
  );
}

/**
 * The cluster token: the first line of `file` when given, otherwise
 * `$KILN_TOKEN`, otherwise empty. Never a flag value: a command line is
 * readable by every process on the host, sandboxed programs included.
 */
export async function readToken(file: string | undefined): Promise<string> {
  if (file === undefined) return Deno.env.get("KILN_TOKEN") ?? "";
  await checkSecretFile("--token-file", file);
  try {
    return (await Deno.readTextFile(file)).split("\n")[0]!.trim();
  } catch (error) {
    throw new CliError(
      `cannot read --token-file ${file}: ${(error as Error).message}`,
    );
  }
}

/** Reads a percentage flag (0-100), naming the flag when the value is not one. */
export function percentFlag(
  name: string,
  value: string | undefined,
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (
    value.trim() === "" || !Number.isFinite(parsed) || parsed < 0 ||
    parsed > 100
  ) {
    throw new CliError(
      `--${name} must be a percentage from 0 to 100, got "${value}"`,
    );
  }
  return parsed;
}

/**
 * Runs a command's main function: a {@linkcode CliError} or any other error
 * becomes `kiln: message` on stderr (the stack only with `--verbose`), then
 * the process exits with the code main returned.
 */
export async function runMain(
  name: string,
  main: (args: string[]) => Promise<number>,
): Promise<never> {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    const verbose = Deno.args.includes("--verbose");
    const message = error instanceof Error ? error.message : String(error);
    console.error(`${name}: ${message}`);
    if (verbose && error instanceof Error && error.stack) {
      console.error(error.stack);
    }
    code = error instanceof CliError ? error.exitCode : 1;
  }
  await flushLogs().catch(() => {});
  Deno.exit(code);
}
