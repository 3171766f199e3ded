/**
 * `deno task master`: runs a kiln master until SIGINT or SIGTERM.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { MasterNode } from "../mod.ts";
import { DEFAULT_PORT, formatHostPort } from "../lib/address.ts";
import {
  CliError,
  integerFlag,
  parseFlags,
  percentFlag,
  runMain,
} from "./_cli.ts";
import { setupLogging } from "./_logging.ts";

const USAGE = `Usage: deno task master [options]

  --hostname H       address to listen on (default 127.0.0.1)
  --port P           port to listen on, 0 for any free one (default ${DEFAULT_PORT})
  --slots N          jobs run at once on the master itself; 0 = coordinator only
                     (default: number of CPUs)
  --max-cpu P        run no new job here above this CPU % (default 100)
  --max-ram P        run no new job here above this RAM % (default 95)
  --token T          shared cluster token (default: $KILN_TOKEN; prefer the variable,
                     a command line is visible to every local user)
  --name N           node name reported in results (default master)
  --time-limit MS    maximum wall time per job (default 10000)
  --output-limit B   maximum output bytes per job (default 1048576)
  --max-queue N      jobs that may wait for a slot; more are rejected (default 1000)
  --node-timeout MS  a secondary silent this long is lost; its jobs restart
                     elsewhere (default 5000, at least 2000)
  --log-level L      trace, debug, info, warning, error (default info)
  --log-format F     text or json (default text)
  --verbose          print stack traces of errors
  -h, --help         show this help`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    hostname: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: String(DEFAULT_PORT) },
    slots: { type: "string" },
    "max-cpu": { type: "string" },
    "max-ram": { type: "string" },
    token: { type: "string" },
    name: { type: "string", default: "master" },
    "time-limit": { type: "string" },
    "output-limit": { type: "string" },
    "max-queue": { type: "string" },
    "node-timeout": { type: "string" },
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
  const slots = integerFlag("slots", values.slots, 0);
  const maxCpu = percentFlag("max-cpu", values["max-cpu"]);
  const maxRam = percentFlag("max-ram", values["max-ram"]);
  const port = integerFlag("port", values.port, 0)!;
  if (port > 65535) throw new CliError(`--port must be 0-65535, got "${port}"`);
  const wallTimeMs = integerFlag("time-limit", values["time-limit"], 1);
  const outputBytes = integerFlag("output-limit", values["output-limit"], 1);
  const maxQueue = integerFlag("max-queue", values["max-queue"], 0);
  const nodeTimeoutMs = integerFlag(
    "node-timeout",
    values["node-timeout"],
    100,
  );

  const shutdown = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => shutdown.abort());
  }
  let master: MasterNode;
  try {
    master = new MasterNode({
      hostname: values.hostname,
      port,
      name: values.name,
      token: values.token ?? Deno.env.get("KILN_TOKEN") ?? "",
      signal: shutdown.signal,
      ...slots === undefined ? {} : { slots },
      ...maxCpu === undefined ? {} : { maxCpu },
      ...maxRam === undefined ? {} : { maxRam },
      ...maxQueue === undefined ? {} : { maxQueue },
      ...nodeTimeoutMs === undefined ? {} : { nodeTimeoutMs },
      limits: {
        ...wallTimeMs === undefined ? {} : { wallTimeMs },
        ...outputBytes === undefined ? {} : { outputBytes },
      },
    });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      throw new CliError(
        `cannot listen on ${values.hostname}:${port}: address already in use`,
        1,
      );
    }
    throw error;
  }
  await master.ready;
  console.log(`listening on ${formatHostPort(master.addr)}`);
  await master.finished;
  return 0;
}

if (import.meta.main) await runMain("kiln master", main);
