/**
 * A node's link to NATS JetStream: the connection (with its own
 * credentials and TLS), and the stream, consumers and buckets every master
 * and secondary of one cluster share. The first node to start creates them;
 * the others find them.
 *
 * @module
 */
import {
  connect,
  credsAuthenticator,
  type NatsConnection,
} from "@nats-io/transport-node";
import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { retrying } from "./_retry.ts";
import { guardStraySocketResets } from "./_stray_socket_errors.ts";
import {
  CLIENTS_BUCKET,
  JOB_SUBJECT_PREFIX,
  JOBS_BUCKET,
  JOBS_STREAM,
  languageConsumer,
  languageFilter,
  NODES_BUCKET,
} from "./subjects.ts";

/** How to reach NATS: `--nats URL[,URL...]` and its credentials. */
export interface NatsOptions {
  /** Server URLs, `nats://host:port` or `host:port`; tried in turn, and on reconnect. */
  servers: string[];
  /** A token the servers expect (`--nats-token-file`). */
  token?: string | undefined;
  /** The text of a `.creds` file: a user JWT and its nkey seed (`--nats-creds`). */
  credentials?: string | undefined;
  /** PEM text of the CA that signed the servers' certificates (`--nats-ca`); TLS is required with it. */
  caCerts?: string | undefined;
  /**
   * How many servers keep each job and record, in a NATS cluster: 1 to 5,
   * at most the number of servers. Set once, by the node that creates the
   * stream and buckets.
   * @default 1
   */
  replicas?: number | undefined;
  /**
   * How long a node may hold a job without a sign of life before it is
   * delivered to another, in ms. A node running a job says it is alive
   * several times within it. Set once, by the node that creates a
   * language's consumer.
   * @default {DEFAULT_ACK_WAIT_MS}
   */
  ackWaitMs?: number | undefined;
  /**
   * How long a job's record (and its result) stays after its last change,
   * in ms: a client may re-attach and read it that long.
   * @default {DEFAULT_RECORD_TTL_MS}
   */
  recordTtlMs?: number | undefined;
  /**
   * How long a node's entry stays after its last heartbeat, in ms; nodes
   * also look stale to masters after their own `nodeTimeoutMs`.
   * @default {DEFAULT_NODE_TTL_MS}
   */
  nodeTtlMs?: number | undefined;
  /** The name this connection shows on the servers' monitoring. */
  name?: string | undefined;
}

/** How long a job's node may be silent before another node gets the job: 10 s. */
export const DEFAULT_ACK_WAIT_MS = 10_000;
/** How long a job's record and result stay readable: one hour. */
export const DEFAULT_RECORD_TTL_MS = 3_600_000;
/** How long a node's entry stays after its last heartbeat: one minute. */
export const DEFAULT_NODE_TTL_MS = 60_000;
/** How long a master's counts of a client stay without being written again: 30 s. */
export const CLIENT_COUNTS_TTL_MS = 30_000;
/** The longest ack wait, record TTL or node TTL: one day. */
export const MAX_NATS_DURATION_MS = 86_400_000;

/** The connection and what a kiln cluster keeps on it. */
export class NatsCluster implements AsyncDisposable {
  /** The connection to the servers. */
  readonly connection: NatsConnection;
  /** Publishes and pulls jobs. */
  readonly jetstream: JetStreamClient;
  /** Job records: `queued`, `running`, `ended` with the result. */
  readonly jobs: KV;
  /** Live nodes, one entry each, written on every heartbeat. */
  readonly nodes: KV;
  /** Each client's jobs on each master (`lib/nats/cluster_counts.ts`). */
  readonly clients: KV;
  /** How long a held job may go without a sign of life, in ms. */
  readonly ackWaitMs: number;
  readonly #manager: JetStreamManager;
  readonly #consumers = new Map<string, Promise<Consumer>>();

  private constructor(
    connection: NatsConnection,
    manager: JetStreamManager,
    buckets: { jobs: KV; nodes: KV; clients: KV },
    ackWaitMs: number,
  ) {
    this.connection = connection;
    this.#manager = manager;
    this.jetstream = jetstream(connection);
    this.jobs = buckets.jobs;
    this.nodes = buckets.nodes;
    this.clients = buckets.clients;
    this.ackWaitMs = ackWaitMs;
  }

  /**
   * Connects and makes sure the stream and buckets exist.
   *
   * @throws {RangeError} If an option is out of range.
   * @throws {Error} If no server answers, or JetStream is not enabled on it.
   */
  static async connect(options: NatsOptions): Promise<NatsCluster> {
    const {
      servers,
      token,
      credentials,
      caCerts,
      replicas = 1,
      ackWaitMs = DEFAULT_ACK_WAIT_MS,
      recordTtlMs = DEFAULT_RECORD_TTL_MS,
      nodeTtlMs = DEFAULT_NODE_TTL_MS,
      name,
    } = options;
    if (servers.length === 0) {
      throw new RangeError("Cannot connect to NATS: no server given");
    }
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
      throw new RangeError(
        `Cannot connect to NATS: replicas must be an integer from 1 to 5, got ${replicas}`,
      );
    }
    for (
      const [what, value] of [
        ["ackWaitMs", ackWaitMs],
        ["recordTtlMs", recordTtlMs],
        ["nodeTtlMs", nodeTtlMs],
      ] as const
    ) {
      if (
        !Number.isInteger(value) || value < 100 || value > MAX_NATS_DURATION_MS
      ) {
        throw new RangeError(
          `Cannot connect to NATS: ${what} must be an integer from 100 to ${MAX_NATS_DURATION_MS}, got ${value}`,
        );
      }
    }
    guardStraySocketResets();
    let connection: NatsConnection;
    try {
      connection = await connect({
        servers,
        ...token !== undefined ? { token } : {},
        ...credentials !== undefined
          ? {
            authenticator: credsAuthenticator(
              new TextEncoder().encode(credentials),
            ),
          }
          : {},
        ...caCerts !== undefined ? { tls: { ca: caCerts } } : {},
        ...name !== undefined ? { name } : {},
        // A cluster outlives any one server: keep trying, never give up.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
      });
    } catch (error) {
      throw new Error(
        `Cannot connect to NATS (${servers.join(", ")}): ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
    }
    const setUp = async () => {
      const manager = await jetstreamManager(connection);
      await ensureStream(manager, replicas);
      const kvm = new Kvm(connection);
      const jobs = await kvm.create(JOBS_BUCKET, {
        ttl: recordTtlMs,
        replicas,
        history: 1,
      });
      const nodes = await kvm.create(NODES_BUCKET, {
        ttl: nodeTtlMs,
        replicas,
        history: 1,
      });
      const clients = await kvm.create(CLIENTS_BUCKET, {
        ttl: CLIENT_COUNTS_TTL_MS,
        replicas,
        history: 1,
      });
      return new NatsCluster(
        connection,
        manager,
        { jobs, nodes, clients },
        ackWaitMs,
      );
    };
    try {
      // A NATS cluster just started (or that just lost a server) elects its
      // JetStream leaders for a few seconds, answering nothing meanwhile.
      return await retrying(setUp);
    } catch (error) {
      await connection.close().catch(() => {});
      throw new Error(
        `Cannot set up kiln on NATS (${servers.join(", ")}): ${
          error instanceof Error ? error.message : String(error)
        }; is JetStream enabled (nats-server -js)?`,
        { cause: error },
      );
    }
  }

  /** The largest message the servers take, in bytes: a job must fit in one. */
  get maxPayload(): number {
    return this.connection.info?.max_payload ?? 1024 * 1024;
  }

  /**
   * The consumer every node that runs `language` pulls from: made by the
   * first that needs it, found by the others.
   */
  consumer(language: string): Promise<Consumer> {
    let consumer = this.#consumers.get(language);
    if (consumer === undefined) {
      consumer = this.#ensureConsumer(language);
      // A failure is not kept: the next pull tries again.
      consumer.catch(() => this.#consumers.delete(language));
      this.#consumers.set(language, consumer);
    }
    return consumer;
  }

  /** Jobs in the stream that no node has taken yet, over every language. */
  async waiting(): Promise<number> {
    const info = await this.#manager.streams.info(JOBS_STREAM);
    return info.state.messages;
  }

  /** Closes the connection, after what was published reached the server. */
  async close(): Promise<void> {
    if (this.connection.isClosed()) return;
    await this.connection.drain().catch(() => this.connection.close());
  }

  /** Closes the connection; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #ensureConsumer(language: string): Promise<Consumer> {
    const durable = languageConsumer(language);
    try {
      await this.#manager.consumers.info(JOBS_STREAM, durable);
    } catch {
      try {
        await this.#manager.consumers.add(JOBS_STREAM, {
          durable_name: durable,
          filter_subject: languageFilter(language),
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: this.ackWaitMs * 1_000_000,
          // Attempts are counted in the job's record, where a refusal (a
          // node whose slot another language took) costs none.
          max_deliver: -1,
          max_ack_pending: -1,
        });
      } catch (error) {
        // Another node made it meanwhile: use theirs.
        await this.#manager.consumers.info(JOBS_STREAM, durable).catch(() => {
          throw error;
        });
      }
    }
    return await this.jetstream.consumers.get(JOBS_STREAM, durable);
  }
}

/** The work-queue stream: each job is taken by one node, and gone once acked. */
async function ensureStream(
  manager: JetStreamManager,
  replicas: number,
): Promise<void> {
  try {
    await manager.streams.info(JOBS_STREAM);
    return;
  } catch {
    // Not there yet.
  }
  try {
    await manager.streams.add({
      name: JOBS_STREAM,
      subjects: [`${JOB_SUBJECT_PREFIX}.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
      // A master that publishes again after a lost answer adds no second copy.
      duplicate_window: 120 * 1_000_000_000,
    });
  } catch (error) {
    await manager.streams.info(JOBS_STREAM).catch(() => {
      throw error;
    });
  }
}
