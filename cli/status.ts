/**
 * `deno task status`: what a master knows of its cluster, as a table or JSON.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { printable } from "./_terminal.ts";
import {
  type ClusterStatus,
  ConnectionError,
  getClusterStatus,
  type NodeStatus,
  ProtocolError,
} from "../mod.ts";
import { DEFAULT_PORT } from "../lib/address.ts";
import { CliError, parseFlags, readToken, runMain } from "./_cli.ts";
import { readTlsDialFlags, TLS_DIAL_FLAGS } from "./_tls_flags.ts";
import { EXIT_CODES } from "./submit.ts";

const USAGE = `Usage: deno task status [options]

  --master HOST:PORT  master to ask (default 127.0.0.1:${DEFAULT_PORT})
  --token-file F      file holding the cluster token (default: $KILN_TOKEN)
  --ca FILE           speak TLS, trusting the CA certificate in FILE (PEM, as
                      deno task gen-certs makes)
  --tls               speak TLS, trusting the default roots only
  --name N            your credential's name on a master with --auth
                      (default: $KILN_NAME)
  --json              print the status as one JSON object
  --verbose           print stack traces of errors
  -h, --help          show this help`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    master: { type: "string", default: `127.0.0.1:${DEFAULT_PORT}` },
    "token-file": { type: "string" },
    ...TLS_DIAL_FLAGS,
    name: { type: "string" },
    json: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let status: ClusterStatus;
  try {
    status = await getClusterStatus({
      master: values.master,
      token: await readToken(values["token-file"]),
      tls: await readTlsDialFlags(values),
      name: values.name ?? Deno.env.get("KILN_NAME") ?? "status",
    });
  } catch (error) {
    if (error instanceof ConnectionError || error instanceof ProtocolError) {
      throw new CliError(error.message, EXIT_CODES.connection);
    }
    throw error;
  }
  if (values.json) {
    console.log(JSON.stringify(status));
  } else {
    console.log(formatStatus(status));
  }
  return 0;
}

/** The layers a node's jobs run under, `none`, or `?` when it did not say. */
function sandboxCell(sandbox: NodeStatus["sandbox"]): string {
  if (sandbox === null) return "?";
  return sandbox.layers.length === 0 ? "none" : sandbox.layers.join("+");
}

/** The status as a table of nodes and a summary line. */
export function formatStatus(status: ClusterStatus): string {
  const header = [
    "NODE",
    "ADDRESS",
    "STATE",
    "CPU",
    "RAM",
    "JOBS",
    "SANDBOX",
    "LANGUAGES",
  ];
  // Every cell is what a node said of itself: escaped, so that none can
  // move the cursor, clear the screen or forge a row.
  const rows = status.nodes.map((node) =>
    [
      node.local ? `${node.name} (master)` : node.name,
      node.address,
      node.state,
      `${node.cpuPercent.toFixed(1)}%`,
      `${node.ramPercent.toFixed(1)}%`,
      `${node.running}/${node.slots}`,
      sandboxCell(node.sandbox),
      node.languages.map((l) => l.name).join(","),
    ].map(printable)
  );
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => row[i]!.length))
  );
  const lines = [header, ...rows].map((row) =>
    row.map((
      cell,
      i,
    ) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")
  );
  lines.push(
    "",
    `master ${
      printable(status.master)
    }: ${status.running} running, ${status.queued} queued, ${status.nodes.length} nodes`,
  );
  return lines.join("\n");
}

if (import.meta.main) await runMain("kiln status", main);
