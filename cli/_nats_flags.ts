/**
 * The flags of kiln on NATS JetStream, shared by `deno task master` and
 * `deno task secondary`: the servers, the NATS connection's own
 * credentials and CA (files read here, so the library sees text), and the
 * cluster's settings that the first node to start fixes.
 *
 * @module
 */
import {
  MAX_NATS_DURATION_MS,
  type NatsOptions,
} from "../lib/nats/nats_cluster.ts";
import { checkSecretFile, CliError, integerFlag } from "./_cli.ts";

/** `parseArgs` options of the NATS flags. */
export const NATS_FLAGS = {
  nats: { type: "string" },
  "nats-token-file": { type: "string" },
  "nats-creds": { type: "string" },
  "nats-ca": { type: "string" },
  "nats-replicas": { type: "string" },
  "nats-ack-wait": { type: "string" },
} as const;

/** The help text of {@linkcode NATS_FLAGS}. */
export const NATS_FLAGS_USAGE =
  `  --nats URL[,URL]   join a kiln cluster on NATS JetStream (nats://host:port):
                     masters become front doors, secondaries pull jobs; without
                     it, the standalone cluster (nothing to install)
  --nats-token-file F  file holding the NATS server's token
  --nats-creds F     a NATS .creds file (user JWT and nkey seed)
  --nats-ca F        speak TLS to NATS, trusting this CA certificate (PEM)
  --nats-replicas N  servers that keep each job and record, 1-5, at most the
                     servers in the NATS cluster; fixed by the first node to
                     start (default 1)
  --nats-ack-wait MS a node silent this long with a job loses it to another
                     node, 100-${MAX_NATS_DURATION_MS}; fixed by the first node
                     to start (default 10000)
`;

/** The NATS flags as parsed. */
export interface NatsFlagValues {
  nats?: string | undefined;
  "nats-token-file"?: string | undefined;
  "nats-creds"?: string | undefined;
  "nats-ca"?: string | undefined;
  "nats-replicas"?: string | undefined;
  "nats-ack-wait"?: string | undefined;
}

/** Reads the NATS flags; undefined without `--nats` (the others then refused). */
export async function readNatsFlags(
  values: NatsFlagValues,
): Promise<NatsOptions | undefined> {
  if (values.nats === undefined) {
    const stray = Object.keys(NATS_FLAGS).find((flag) =>
      flag !== "nats" && values[flag as keyof NatsFlagValues] !== undefined
    );
    if (stray) throw new CliError(`--${stray} needs --nats`);
    return undefined;
  }
  const servers = values.nats.split(",").map((url) => url.trim()).filter(
    (url) => url !== "",
  );
  if (servers.length === 0) {
    throw new CliError(`--nats must name at least one server, got ""`);
  }
  for (const server of servers) {
    if (!/^(nats|tls):\/\/[^\s/]+$|^[^\s/:]+:\d+$/.test(server)) {
      throw new CliError(
        `--nats takes URLs such as nats://127.0.0.1:4222 (or host:port), got "${server}"`,
      );
    }
  }
  const replicas = integerFlag("nats-replicas", values["nats-replicas"], 1, 5);
  const ackWaitMs = integerFlag(
    "nats-ack-wait",
    values["nats-ack-wait"],
    100,
    MAX_NATS_DURATION_MS,
  );
  const token = values["nats-token-file"] === undefined
    ? undefined
    : (await readSecret("nats-token-file", values["nats-token-file"]))
      .split("\n")[0]!.trim();
  const credentials = values["nats-creds"] === undefined
    ? undefined
    : await readSecret("nats-creds", values["nats-creds"]);
  const caCerts = values["nats-ca"] === undefined
    ? undefined
    : await readFile("nats-ca", values["nats-ca"]);
  return {
    servers,
    ...token === undefined ? {} : { token },
    ...credentials === undefined ? {} : { credentials },
    ...caCerts === undefined ? {} : { caCerts },
    ...replicas === undefined ? {} : { replicas },
    ...ackWaitMs === undefined ? {} : { ackWaitMs },
  };
}

/** A secret's file: refused when others may read it, as `--token-file` is. */
async function readSecret(flag: string, path: string): Promise<string> {
  await checkSecretFile(`--${flag}`, path);
  return await readFile(flag, path);
}

async function readFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new CliError(
      `cannot read --${flag} ${path}: ${(error as Error).message}`,
    );
  }
}
