/**
 * `deno task master`: runs a kiln master until SIGINT or SIGTERM.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { getLogger } from "@logtape/logtape";
import { HttpApi, JobHistory, MasterNode } from "../mod.ts";
import {
  DEFAULT_HISTORY_MAX_AGE_MS,
  DEFAULT_HISTORY_MAX_JOBS,
  type JobHistoryOptions,
  MAX_HISTORY_MAX_AGE_MS,
  MAX_HISTORY_MAX_JOBS,
} from "../lib/history/job_history.ts";
import { Credentials, CredentialsError } from "../lib/security/credentials.ts";
import { DEFAULT_PORT, formatHostPort } from "../lib/address.ts";
import { MAX_NODE_GRACE_MS } from "../lib/scheduler/dispatcher.ts";
import { MAX_TIMER_MS } from "../lib/_timer.ts";
import {
  DEFAULT_MAX_HTTP_CONNECTIONS,
  MAX_HTTP_CONNECTIONS,
} from "../lib/http/http_server.ts";
import {
  checkSecretFile,
  CliError,
  integerFlag,
  parseFlags,
  runMain,
} from "./_cli.ts";
import {
  NODE_FLAGS,
  NODE_FLAGS_USAGE,
  readNodeFlags,
  shutdownSignal,
} from "./_node_flags.ts";
import { readTlsListenFlags, TLS_LISTEN_FLAGS } from "./_tls_flags.ts";
import { NATS_FLAGS, NATS_FLAGS_USAGE, readNatsFlags } from "./_nats_flags.ts";
import {
  LIMIT_FLAGS,
  LIMIT_FLAGS_USAGE,
  readLimitFlags,
} from "./_limit_flags.ts";

const USAGE = `Usage: deno task master [options]

  --hostname H       address to listen on (default 127.0.0.1)
  --port P           port to listen on, 0 for any free one (default ${DEFAULT_PORT})
  --name N           node name reported in results (default master)
  --slots N          jobs run at once on the master itself; 0 = coordinator only
                     (default: number of CPUs)
  --max-queue N      jobs that may wait for a slot; more are rejected (default 1000)
  --node-timeout MS  a secondary silent this long is lost; its jobs restart
                     elsewhere (default 5000, at least 2000, at most
                     2147483647)
  --node-grace MS    jobs whose language no live node runs any more wait this
                     long for one to join, then fail (default 10000, 0-600000)
  --auth FILE        named client and node credentials with quotas (JSON, see
                     the README), reloaded on SIGHUP; replaces the shared token
  --tls-cert FILE    serve TLS with this certificate (PEM; deno task gen-certs
                     makes one); plain TCP without it
  --tls-key FILE     the certificate's private key (PEM); with --tls-cert
  --http-port P      serve the HTTP API, dashboard and playground on this port
                     (0 for any free one); off without it
  --http-hostname H  address of the HTTP API (default 127.0.0.1)
  --http-allowed-host NAME  a host name clients use to reach the HTTP API
                     (repeatable); IP addresses and localhost always work,
                     other names get 403 (DNS rebinding)
  --cors-origin ORIGIN  an origin (https://app.example) whose pages may call
                     the HTTP API (repeatable); other origins get 403
  --http-max-connections N  HTTP connections held at once, 1-${MAX_HTTP_CONNECTIONS};
                     more wait until one closes (default: half of ulimit -n,
                     at most ${DEFAULT_MAX_HTTP_CONNECTIONS}); --max-connections-per-ip
                     applies to HTTP too
  --history FILE     keep finished jobs in this SQLite file (default: in memory)
  --history-max-jobs N  finished jobs kept, the oldest dropped first
                     (default ${DEFAULT_HISTORY_MAX_JOBS}, at most ${MAX_HISTORY_MAX_JOBS})
  --history-max-age T   how long a finished job is kept: seconds, or with a
                     unit s, m, h or d (default ${
  DEFAULT_HISTORY_MAX_AGE_MS / 86_400_000
}d, at most ${MAX_HISTORY_MAX_AGE_MS / 86_400_000}d)
${LIMIT_FLAGS_USAGE}
${NATS_FLAGS_USAGE}${NODE_FLAGS_USAGE}`;

async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
    ...NODE_FLAGS,
    ...NATS_FLAGS,
    hostname: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: String(DEFAULT_PORT) },
    name: { type: "string", default: "master" },
    "max-queue": { type: "string" },
    "node-timeout": { type: "string" },
    "node-grace": { type: "string" },
    ...TLS_LISTEN_FLAGS,
    ...LIMIT_FLAGS,
    auth: { type: "string" },
    "http-port": { type: "string" },
    "http-hostname": { type: "string", default: "127.0.0.1" },
    "http-allowed-host": { type: "string", multiple: true, default: [] },
    "cors-origin": { type: "string", multiple: true, default: [] },
    "http-max-connections": { type: "string" },
    history: { type: "string" },
    "history-max-jobs": { type: "string" },
    "history-max-age": { type: "string" },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const node = await readNodeFlags(values, 0);
  const tls = await readTlsListenFlags(values);
  const nats = await readNatsFlags(values);
  const limits = readLimitFlags(values);
  const port = integerFlag("port", values.port, 0)!;
  if (port > 65535) throw new CliError(`--port must be 0-65535, got "${port}"`);
  const httpPort = integerFlag("http-port", values["http-port"], 0);
  if (httpPort !== undefined && httpPort > 65535) {
    throw new CliError(`--http-port must be 0-65535, got "${httpPort}"`);
  }
  const httpMaxConnections = integerFlag(
    "http-max-connections",
    values["http-max-connections"],
    1,
    MAX_HTTP_CONNECTIONS,
  );
  for (const origin of values["cors-origin"]) {
    if (!isOrigin(origin)) {
      throw new CliError(
        `--cors-origin must be an origin such as https://app.example (scheme, host and port only), got "${origin}"`,
      );
    }
  }
  if (
    httpPort === undefined &&
    (httpMaxConnections !== undefined || values["http-allowed-host"].length ||
      values["cors-origin"].length)
  ) {
    throw new CliError(
      "--http-max-connections, --http-allowed-host and --cors-origin need --http-port",
    );
  }
  for (const flag of ["history", "history-max-jobs", "history-max-age"]) {
    if (values[flag as "history"] !== undefined && httpPort === undefined) {
      throw new CliError(
        `--${flag} needs --http-port: only the HTTP API keeps history`,
      );
    }
  }
  const historyMaxJobs = integerFlag(
    "history-max-jobs",
    values["history-max-jobs"],
    1,
  );
  if (historyMaxJobs !== undefined && historyMaxJobs > MAX_HISTORY_MAX_JOBS) {
    throw new CliError(
      `--history-max-jobs must be at most ${MAX_HISTORY_MAX_JOBS}, got "${historyMaxJobs}"`,
    );
  }
  const historyMaxAgeMs = durationFlag(
    "history-max-age",
    values["history-max-age"],
    MAX_HISTORY_MAX_AGE_MS,
  );
  const maxQueue = integerFlag("max-queue", values["max-queue"], 0);
  // Heartbeats come every second: a shorter deadline would lose every node.
  const nodeTimeoutMs = integerFlag(
    "node-timeout",
    values["node-timeout"],
    2000,
    MAX_TIMER_MS,
  );
  const nodeGraceMs = integerFlag("node-grace", values["node-grace"], 0);
  if (nodeGraceMs !== undefined && nodeGraceMs > MAX_NODE_GRACE_MS) {
    throw new CliError(
      `--node-grace must be at most ${MAX_NODE_GRACE_MS}, got "${nodeGraceMs}"`,
    );
  }

  const credentials = values.auth === undefined
    ? undefined
    : await loadCredentials(values.auth);

  let master: MasterNode;
  try {
    master = new MasterNode({
      ...node,
      ...limits,
      ...tls === undefined ? {} : { tls },
      ...credentials ? { credentials } : {},
      ...nats ? { nats } : {},
      hostname: values.hostname,
      port,
      name: values.name,
      signal: shutdownSignal(),
      ...maxQueue === undefined ? {} : { maxQueue },
      ...nodeTimeoutMs === undefined ? {} : { nodeTimeoutMs },
      ...nodeGraceMs === undefined ? {} : { nodeGraceMs },
    });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      throw new CliError(
        `cannot listen on ${values.hostname}:${port}: address already in use`,
        1,
      );
    }
    // Not a certificate, not a key, or a key of another certificate.
    if (
      tls !== undefined &&
      (error instanceof Deno.errors.InvalidData ||
        /KeyMismatch/.test(String(error)))
    ) {
      throw new CliError(
        `cannot use --tls-cert/--tls-key: ${(error as Error).message}`,
        1,
      );
    }
    throw error;
  }
  if (values.auth !== undefined) reloadOnHangup(master, values.auth);
  try {
    await master.ready;
  } catch (error) {
    await master.shutdown();
    throw new CliError((error as Error).message, 1);
  }
  console.log(`listening on ${formatHostPort(master.addr)}`);
  if (httpPort !== undefined) {
    // The API shuts down with the master; the history closes after it.
    using history = openHistory({
      path: values.history,
      maxJobs: historyMaxJobs,
      maxAgeMs: historyMaxAgeMs,
    });
    let api: HttpApi;
    try {
      api = new HttpApi(master, {
        hostname: values["http-hostname"],
        port: httpPort,
        history,
        allowedHosts: values["http-allowed-host"],
        corsOrigins: values["cors-origin"],
        maxConnections: httpMaxConnections,
        maxConnectionsPerIp: limits.maxConnectionsPerIp,
      });
    } catch (error) {
      await master.shutdown();
      if (error instanceof Deno.errors.AddrInUse) {
        throw new CliError(
          `cannot listen on ${
            values["http-hostname"]
          }:${httpPort}: address already in use`,
          1,
        );
      }
      throw error;
    }
    console.log(`http on ${formatHostPort(api.addr)}`);
    await master.finished;
    await api.finished;
    // Its warm sandboxes and uid block: nothing of the node outlives it.
    await node.sandbox?.close();
    return 0;
  }
  await master.finished;
  await node.sandbox?.close();
  return 0;
}

/** The history, or a one-line error naming the file that cannot be opened. */
function openHistory(
  options: JobHistoryOptions,
): JobHistory {
  try {
    return new JobHistory(options);
  } catch (error) {
    throw new CliError(
      `cannot open --history ${options.path ?? ":memory:"}: ${
        (error as Error).message
      }`,
      1,
    );
  }
}

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A duration flag in seconds, or with a unit (`90s`, `30m`, `12h`, `7d`), in ms. */
function durationFlag(
  name: string,
  value: string | undefined,
  maxMs: number,
): number | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d{1,15})([smhd]?)$/.exec(value.trim());
  const ms = match
    ? Number(match[1]) * UNIT_MS[(match[2] || "s") as keyof typeof UNIT_MS]
    : NaN;
  if (!(ms >= 1000 && ms <= maxMs)) {
    throw new CliError(
      `--${name} must be a duration from 1s to ${
        maxMs / 86_400_000
      }d (seconds, or with a unit s, m, h or d), got "${value}"`,
    );
  }
  return ms;
}

/** Whether `text` is an origin as browsers send it: `scheme://host[:port]`, nothing more. */
function isOrigin(text: string): boolean {
  try {
    return new URL(text).origin === text;
  } catch {
    return false;
  }
}

/** The credentials file, or a one-line error naming what is wrong with it. */
async function loadCredentials(path: string): Promise<Credentials> {
  await checkSecretFile("--auth", path);
  try {
    return await Credentials.load(path);
  } catch (error) {
    if (error instanceof CredentialsError) throw new CliError(error.message, 1);
    throw error;
  }
}

/**
 * SIGHUP rereads the credentials file. A file that no longer parses is
 * logged and the credentials in use stay: a typo must not lock everyone out.
 */
function reloadOnHangup(master: MasterNode, path: string): void {
  const log = getLogger(["kiln", "master"]);
  Deno.addSignalListener("SIGHUP", async () => {
    try {
      await checkSecretFile("--auth", path);
      master.setCredentials(await Credentials.load(path));
    } catch (error) {
      log.error("SIGHUP: keeping the credentials in use: {message}", {
        message: error instanceof Error ? error.message : String(error),
      });
    }
  });
}

if (import.meta.main) await runMain("kiln master", main);
