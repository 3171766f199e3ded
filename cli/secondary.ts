/**
 * `deno task secondary`: runs a kiln secondary that registers with a master
 * and runs the jobs it is given, until SIGINT or SIGTERM. The first signal
 * drains it (no new job; the running ones finish, for up to
 * `--drain-timeout`), a second one stops it at once. Prints
 * `registered with HOST:PORT as NAME` each time the master accepts it. A
 * master silent for `--node-timeout` is taken for lost, as a closed link is.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { printable } from "./_terminal.ts";
import { DEFAULT_PORT } from "../lib/address.ts";
import { MAX_TIMER_MS } from "../lib/_timer.ts";
import {
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_MASTER_TIMEOUT_MS,
  MAX_DRAIN_TIMEOUT_MS,
  SecondaryNode,
} from "../lib/nodes/secondary_node.ts";
import { CliError, integerFlag, parseFlags, runMain } from "./_cli.ts";
import { NODE_FLAGS, NODE_FLAGS_USAGE, readNodeFlags } from "./_node_flags.ts";
import { readTlsDialFlags, TLS_DIAL_FLAGS } from "./_tls_flags.ts";
import { NATS_FLAGS, NATS_FLAGS_USAGE, readNatsFlags } from "./_nats_flags.ts";

/** A master pings every second: a shorter deadline would lose it between two pings. */
const MIN_NODE_TIMEOUT_MS = 2000;

const USAGE = `Usage: deno task secondary [options]

  --master HOST:PORT the master to register with (default 127.0.0.1:${DEFAULT_PORT})
  --name N           node name reported to the master and in results
                     (default: this machine's host name)
  --slots N          jobs run at once (default: number of CPUs)
  --languages a,b    offer only these languages (default: every one installed)
  --ca FILE          speak TLS to the master, trusting the CA certificate in
                     FILE (PEM, as deno task gen-certs makes)
  --tls              speak TLS to the master, trusting the default roots only
  --drain-timeout MS on SIGTERM or SIGINT, take no new job and wait this long
                     for the running ones before stopping them; a second
                     signal stops at once (default ${DEFAULT_DRAIN_TIMEOUT_MS},
                     at most ${MAX_DRAIN_TIMEOUT_MS})
  --node-timeout MS  a master that sends nothing this long (it pings every
                     second) is lost: running jobs stop and the node dials
                     again (default ${DEFAULT_MASTER_TIMEOUT_MS}, at least ${MIN_NODE_TIMEOUT_MS}, at most ${MAX_TIMER_MS})
${NATS_FLAGS_USAGE}${NODE_FLAGS_USAGE}`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    ...NODE_FLAGS,
    ...NATS_FLAGS,
    master: { type: "string" },
    name: { type: "string" },
    languages: { type: "string" },
    "drain-timeout": { type: "string" },
    "node-timeout": { type: "string" },
    ...TLS_DIAL_FLAGS,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const node = await readNodeFlags(values, 1);
  if (values.nats !== undefined && values.master !== undefined) {
    throw new CliError(
      "--master and --nats do not go together: a secondary on NATS pulls its jobs from the cluster",
    );
  }
  const tls = await readTlsDialFlags(values);
  const nats = await readNatsFlags(values);
  const languages = languagesFlag(values.languages);
  if (values.name !== undefined && values.name.trim() === "") {
    throw new CliError("--name must not be empty");
  }
  const drainTimeoutMs = integerFlag(
    "drain-timeout",
    values["drain-timeout"],
    0,
  );
  if (drainTimeoutMs !== undefined && drainTimeoutMs > MAX_DRAIN_TIMEOUT_MS) {
    throw new CliError(
      `--drain-timeout must be at most ${MAX_DRAIN_TIMEOUT_MS} (a day), got "${
        values["drain-timeout"]
      }"`,
    );
  }
  const masterTimeoutMs = integerFlag(
    "node-timeout",
    values["node-timeout"],
    MIN_NODE_TIMEOUT_MS,
    MAX_TIMER_MS,
  );

  let secondary: SecondaryNode;
  try {
    secondary = new SecondaryNode({
      ...node,
      ...nats
        ? { nats }
        : { master: values.master ?? `127.0.0.1:${DEFAULT_PORT}` },
      ...drainTimeoutMs === undefined ? {} : { drainTimeoutMs },
      ...masterTimeoutMs === undefined ? {} : { masterTimeoutMs },
      ...tls === undefined ? {} : { tls },
      ...values.name === undefined ? {} : { name: values.name },
      ...languages === undefined ? {} : { languages },
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
    console.log(
      `registered with ${printable(detail.master)} as ${
        printable(detail.name)
      }`,
    );
  });
  // The first signal drains, the next stops at once.
  let signals = 0;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (signals++ === 0) {
        console.error(
          `${signal}: draining (no new job; running ones finish); send it again to stop at once`,
        );
        void secondary.drain();
      } else void secondary.shutdown();
    });
  }
  try {
    await secondary.ready;
  } catch (error) {
    throw new CliError((error as Error).message, 1);
  }
  await secondary.finished;
  // Its warm sandboxes and uid block: nothing of the node outlives it.
  await node.sandbox?.close();
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
