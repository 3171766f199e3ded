/**
 * `deno task master`: runs a kiln master until SIGINT or SIGTERM.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { MasterNode } from "../mod.ts";
import { DEFAULT_PORT, formatHostPort } from "../lib/address.ts";
import { CliError, integerFlag, parseFlags, runMain } from "./_cli.ts";
import {
  NODE_FLAGS,
  NODE_FLAGS_USAGE,
  readNodeFlags,
  shutdownSignal,
} from "./_node_flags.ts";

const USAGE = `Usage: deno task master [options]

  --hostname H       address to listen on (default 127.0.0.1)
  --port P           port to listen on, 0 for any free one (default ${DEFAULT_PORT})
  --name N           node name reported in results (default master)
  --slots N          jobs run at once on the master itself; 0 = coordinator only
                     (default: number of CPUs)
  --max-queue N      jobs that may wait for a slot; more are rejected (default 1000)
  --node-timeout MS  a secondary silent this long is lost; its jobs restart
                     elsewhere (default 5000, at least 2000)
${NODE_FLAGS_USAGE}`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    ...NODE_FLAGS,
    hostname: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: String(DEFAULT_PORT) },
    name: { type: "string", default: "master" },
    "max-queue": { type: "string" },
    "node-timeout": { type: "string" },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const node = await readNodeFlags(values, 0);
  const port = integerFlag("port", values.port, 0)!;
  if (port > 65535) throw new CliError(`--port must be 0-65535, got "${port}"`);
  const maxQueue = integerFlag("max-queue", values["max-queue"], 0);
  // Heartbeats come every second: a shorter deadline would lose every node.
  const nodeTimeoutMs = integerFlag(
    "node-timeout",
    values["node-timeout"],
    2000,
  );

  let master: MasterNode;
  try {
    master = new MasterNode({
      ...node,
      hostname: values.hostname,
      port,
      name: values.name,
      signal: shutdownSignal(),
      ...maxQueue === undefined ? {} : { maxQueue },
      ...nodeTimeoutMs === undefined ? {} : { nodeTimeoutMs },
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
