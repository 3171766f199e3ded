/**
 * Real `nats-server` processes, for `deno task demo --nats`, the benches
 * and the tests: JetStream on, loopback only, random ports, a temporary
 * store removed at the end. One server, or a cluster of several routed to
 * each other.
 *
 * @module
 */

import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { retrying } from "../lib/nats/_retry.ts";

/** The `nats-server` binary, if this host has one. */
export const NATS_SERVER_BINARY: string | undefined = findBinary();

/** Why kiln cannot start a NATS server here, or undefined when it can. */
export const natsSkipReason: string | undefined = NATS_SERVER_BINARY
  ? undefined
  : "nats-server is not installed (apt-get install nats-server)";

function findBinary(): string | undefined {
  for (const path of ["/usr/sbin/nats-server", "/usr/bin/nats-server"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

/** Options of {@linkcode NatsServer.start}. */
export interface NatsServerOptions {
  /** Largest message, in bytes. @default 8 MiB (kiln's largest frame) */
  maxPayload?: number;
  /** Join a cluster: this server's name and the route URLs of the others. */
  cluster?: {
    name: string;
    serverName: string;
    listenPort: number;
    routes: string[];
  };
  /** A token clients must give. */
  token?: string;
  /** A store to reuse (a restarted server); made and removed by the server otherwise. */
  storeDir?: string;
}

/** One running `nats-server`. */
export class NatsServer implements AsyncDisposable {
  /** Where clients connect: `nats://127.0.0.1:PORT`. */
  readonly url: string;
  /** Where other servers route to it, in a cluster. */
  readonly routeUrl: string | undefined;
  readonly #child: Deno.ChildProcess;
  readonly #storeDir: string;
  readonly #ownsStore: boolean;
  readonly #exited: Promise<Deno.CommandStatus>;

  private constructor(
    child: Deno.ChildProcess,
    urls: { client: string; route: string | undefined },
    store: { dir: string; owned: boolean },
  ) {
    this.#child = child;
    this.url = urls.client;
    this.routeUrl = urls.route;
    this.#storeDir = store.dir;
    this.#ownsStore = store.owned;
    this.#exited = child.status;
  }

  /** The server's pid, for signals. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Starts a server and waits until it accepts clients (and routes). */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    if (!NATS_SERVER_BINARY) throw new Error(natsSkipReason);
    const owned = options.storeDir === undefined;
    const storeDir = options.storeDir ??
      await Deno.makeTempDir({ prefix: "kiln-nats-" });
    const lines = [
      `host: "127.0.0.1"`,
      `port: -1`,
      `max_payload: ${options.maxPayload ?? 8 * 1024 * 1024}`,
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
      ...options.token === undefined
        ? []
        : [`authorization { token: ${JSON.stringify(options.token)} }`],
    ];
    if (options.cluster) {
      const { name, serverName, listenPort, routes } = options.cluster;
      lines.push(
        `server_name: ${JSON.stringify(serverName)}`,
        `cluster { name: ${
          JSON.stringify(name)
        }, listen: "127.0.0.1:${listenPort}", routes: ${
          JSON.stringify(routes)
        } }`,
      );
    }
    const config = `${storeDir}.conf`;
    await Deno.writeTextFile(config, lines.join("\n") + "\n");
    const child = new Deno.Command(NATS_SERVER_BINARY, {
      args: ["-c", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const urls = await readListening(child, options.cluster !== undefined);
    await Deno.remove(config).catch(() => {});
    return new NatsServer(child, urls, { dir: storeDir, owned });
  }

  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT). */
  kill(signal: Deno.Signal): void {
    try {
      Deno.kill(this.#child.pid, signal);
    } catch {
      // Gone already.
    }
  }

  /** Stops the server and removes its store (one it made). */
  async stop(): Promise<void> {
    this.kill("SIGCONT");
    this.kill("SIGKILL");
    await this.#exited;
    if (this.#ownsStore) {
      await Deno.remove(this.#storeDir, { recursive: true }).catch(() => {});
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts `size` servers routed into one JetStream cluster; resolves once
 * each accepts clients (JetStream's own leader election may take a few
 * seconds more: the first requests retry).
 */
export async function startNatsCluster(size: number): Promise<NatsServer[]> {
  // JetStream in a cluster needs its routes from the start, so the route
  // ports are picked first (free now; a clash makes a server fail loudly).
  const routePorts = Array.from({ length: size }, () => freePort());
  const routes = routePorts.map((port) => `nats-route://127.0.0.1:${port}`);
  const servers: NatsServer[] = [];
  try {
    for (let i = 0; i < size; i++) {
      servers.push(
        await NatsServer.start({
          cluster: {
            name: "kiln-test",
            serverName: `n${i + 1}`,
            listenPort: routePorts[i]!,
            routes: routes.filter((_, j) => j !== i),
          },
        }),
      );
    }
    await jetStreamReady(servers[0]!.url);
    return servers;
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()));
    throw error;
  }
}

/**
 * Waits until the servers have elected their JetStream leaders and answer
 * JetStream requests (a new cluster takes a few seconds): a test that
 * kills a server before then tests the election, not kiln.
 */
async function jetStreamReady(url: string): Promise<void> {
  const connection = await connect({ servers: url });
  try {
    await retrying(async () => {
      const manager = await jetstreamManager(connection);
      await manager.getAccountInfo();
    }, { withinMs: 60_000 });
  } finally {
    await connection.close();
  }
}

/** A loopback port free at this moment. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Reads the server's log until it says where it listens; keeps draining it after. */
async function readListening(
  child: Deno.ChildProcess,
  routes: boolean,
): Promise<{ client: string; route: string | undefined }> {
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let client: string | undefined;
  let route: string | undefined;
  while (client === undefined || (routes && route === undefined)) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`nats-server exited before it listened:\n${text}`);
    }
    text += value;
    client ??= text.match(
      /Listening for client connections on (\S+:\d+)/,
    )?.[1];
    route ??= text.match(/Listening for route connections on (\S+:\d+)/)?.[1];
  }
  // The rest of its log goes nowhere, so that the pipe never fills.
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return {
    client: `nats://${client}`,
    route: route === undefined ? undefined : `nats-route://${route}`,
  };
}
