/**
 * What `deno task master` and `deno task secondary` share: the flags of a
 * node that runs jobs (capacity, limits, token, logging), read into the
 * library's options, and the signals that stop it.
 *
 * @module
 */
import type { LimitOverrides } from "../mod.ts";
import { CliError, integerFlag, percentFlag } from "./_cli.ts";
import { setupLogging } from "./_logging.ts";

/** `parseArgs` options of the flags every node runner has. */
export const NODE_FLAGS = {
  slots: { type: "string" },
  "max-cpu": { type: "string" },
  "max-ram": { type: "string" },
  token: { type: "string" },
  "time-limit": { type: "string" },
  "output-limit": { type: "string" },
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  verbose: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** The help text of {@linkcode NODE_FLAGS} that reads the same for both runners. */
export const NODE_FLAGS_USAGE =
  `  --max-cpu P        take no new job above this CPU % (default 100)
  --max-ram P        take no new job above this RAM % (default 95)
  --token T          shared cluster token (default: $KILN_TOKEN; prefer the variable,
                     a command line is visible to every local user)
  --time-limit MS    maximum wall time per job (default 10000)
  --output-limit B   maximum output bytes per job (default 1048576)
  --log-level L      trace, debug, info, warning, error (default info)
  --log-format F     text or json (default text)
  --verbose          print stack traces of errors
  -h, --help         show this help`;

/** The values of {@linkcode NODE_FLAGS} as `parseArgs` returns them. */
export interface NodeFlagValues {
  slots?: string | undefined;
  "max-cpu"?: string | undefined;
  "max-ram"?: string | undefined;
  token?: string | undefined;
  "time-limit"?: string | undefined;
  "output-limit"?: string | undefined;
  "log-level": string;
  "log-format": string;
}

/** The node options {@linkcode NODE_FLAGS} set; absent flags leave the library's defaults. */
export interface NodeFlagOptions {
  token: string;
  slots?: number;
  maxCpu?: number;
  maxRam?: number;
  limits: LimitOverrides;
}

/**
 * Sets up logging and reads the shared flags; a bad value becomes a
 * {@linkcode CliError} naming its flag. `minSlots` is 0 for a master (a pure
 * coordinator), 1 for a secondary.
 */
export async function readNodeFlags(
  values: NodeFlagValues,
  minSlots: number,
): Promise<NodeFlagOptions> {
  try {
    await setupLogging(values["log-level"], values["log-format"]);
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  const slots = integerFlag("slots", values.slots, minSlots);
  const maxCpu = percentFlag("max-cpu", values["max-cpu"]);
  const maxRam = percentFlag("max-ram", values["max-ram"]);
  const wallTimeMs = integerFlag("time-limit", values["time-limit"], 1);
  const outputBytes = integerFlag("output-limit", values["output-limit"], 1);
  return {
    token: values.token ?? Deno.env.get("KILN_TOKEN") ?? "",
    ...slots === undefined ? {} : { slots },
    ...maxCpu === undefined ? {} : { maxCpu },
    ...maxRam === undefined ? {} : { maxRam },
    limits: {
      ...wallTimeMs === undefined ? {} : { wallTimeMs },
      ...outputBytes === undefined ? {} : { outputBytes },
    },
  };
}

/** A signal that aborts on SIGINT or SIGTERM: the node shuts down cleanly. */
export function shutdownSignal(): AbortSignal {
  const shutdown = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => shutdown.abort());
  }
  return shutdown.signal;
}
