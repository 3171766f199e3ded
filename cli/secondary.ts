/**
 * `deno task secondary`: runs a kiln secondary that registers with a master
 * and runs the jobs it is given, until SIGINT or SIGTERM. Prints
 * `registered with HOST:PORT as NAME` each time the master accepts it.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { DEFAULT_PORT } from "../lib/address.ts";
import { SecondaryNode } from "../lib/nodes/secondary_node.ts";
import {
  CliError,
  integerFlag,
  parseFlags,
  percentFlag,
  runMain,
} from "./_cli.ts";
import { setupLogging } from "./_logging.ts";

const USAGE = `Usage: deno task secondary [options]

  --master HOST:PORT  the master to register with (default 127.0.0.1:${DEFAULT_PORT})
  --name N            node name reported to the master and in results
                      (default: this machine's host name)
  --slots N           jobs run at once (default: number of CPUs)
  --max-cpu P         take no new job above this CPU % (default 100)
  --max-ram P         take no new job above this RAM % (default 95)
  --token T           shared cluster token (default: $KILN_TOKEN; prefer the variable,
                      a command line is visible to every local user)
  --languages a,b     offer only these languages (default: every one installed)
  --time-limit MS     maximum wall time per job (default 10000)
  --output-limit B    maximum output bytes per job (default 1048576)
  --log-level L       trace, debug, info, warning, error (default info)
  --log-format F      text or json (default text)
  --verbose           print stack traces of errors
  -h, --help          show this help`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    master: { type: "string", default: `127.0.0.1:${DEFAULT_PORT}` },
    name: { type: "string" },
    slots: { type: "string" },
    "max-cpu": { type: "string" },
    "max-ram": { type: "string" },
    token: { type: "string" },
    languages: { type: "string" },
    "time-limit": { type: "string" },
    "output-limit": { type: "string" },
    "log-level": { type: "string", default: "info" },
    "log-format": { type: "string", default: "text" },
    verbose: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    await setupLogging(values["log-level"], values["log-format"]);
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  const slots = integerFlag("slots", values.slots, 1);
  const maxCpu = percentFlag("max-cpu", values["max-cpu"]);
  const maxRam = percentFlag("max-ram", values["max-ram"]);
  const wallTimeMs = integerFlag("time-limit", values["time-limit"], 1);
  const outputBytes = integerFlag("output-limit", values["output-limit"], 1);
  const languages = languagesFlag(values.languages);
  if (values.name !== undefined && values.name.trim() === "") {
    throw new CliError("--name must not be empty");
  }

  const shutdown = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => shutdown.abort());
  }
  let secondary: SecondaryNode;
  try {
    secondary = new SecondaryNode({
      master: values.master,
      token: values.token ?? Deno.env.get("KILN_TOKEN") ?? "",
      signal: shutdown.signal,
      ...values.name === undefined ? {} : { name: values.name },
      ...slots === undefined ? {} : { slots },
      ...maxCpu === undefined ? {} : { maxCpu },
      ...maxRam === undefined ? {} : { maxRam },
      ...languages === undefined ? {} : { languages },
      limits: {
        ...wallTimeMs === undefined ? {} : { wallTimeMs },
        ...outputBytes === undefined ? {} : { outputBytes },
      },
    });
  } catch (error) {
    // A bad address, an unknown language, a name too long: flag mistakes.
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new CliError(
        error.message.replace(/^Cannot start secondary: /, ""),
      );
    }
    throw error;
  }
  secondary.addEventListener("registered", ({ detail }) => {
    console.log(`registered with ${detail.master} as ${detail.name}`);
  });
  try {
    await secondary.ready;
  } catch (error) {
    throw new CliError((error as Error).message, 1);
  }
  await secondary.finished;
  return 0;
}

/** Reads `--languages a,b`, naming the flag when the list is empty. */
function languagesFlag(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const languages = value.split(",").map((name) => name.trim()).filter(
    (name) => name !== "",
  );
  if (languages.length === 0) {
    throw new CliError(
      `--languages must name at least one language, got "${value}"`,
    );
  }
  return languages;
}

if (import.meta.main) await runMain("kiln secondary", main);
