/**
 * Client quotas across the masters of a NATS cluster. Each master keeps
 * its own fair queue and counts; here it tells the others how many jobs of
 * each client with a quota it has running and waiting, and hears theirs,
 * so that `maxRunning` and `maxQueued` count a client's jobs on every
 * master, not once per master.
 *
 * The counts live in the KV bucket `kiln_clients`, one entry per client
 * and master, written at most four times a second per client that changed,
 * and written again before the bucket's TTL would drop them; a master that
 * dies stops writing, and its entries expire with the TTL. So a quota
 * holds across masters as of a fraction of a second ago: two masters that
 * take one client's jobs in the same instant may both start one.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { KvEntry } from "@nats-io/kv";
import { followBucket } from "./_bucket_watch.ts";
import type { ClientCounts, SharedCounts } from "../scheduler/dispatcher.ts";
import { CLIENT_COUNTS_TTL_MS, type NatsCluster } from "./nats_cluster.ts";

const log = getLogger(["kiln", "nats"]);

/** The shortest time between two writes of one client's counts. */
const FLUSH_MS = 250;

const NONE: Readonly<ClientCounts> = Object.freeze({ running: 0, queued: 0 });

/** What one master said of one client. */
interface Told {
  running: number;
  queued: number;
  /** When this master read it (performance.now()). */
  seenAt: number;
}

/** Options of {@linkcode ClusterCounts}. */
export interface ClusterCountsOptions {
  readonly cluster: NatsCluster;
  /** Called when another master's counts changed: waiting jobs may now fit their quota. */
  readonly changed: () => void;
}

/**
 * One master's side of the shared counts.
 *
 * @example
 * ```ts ignore
 * const counts = new ClusterCounts({ cluster, changed: () => dispatcher.dispatch() });
 * const dispatcher = new Dispatcher({ ...options, shared: counts });
 * ```
 */
export class ClusterCounts implements SharedCounts {
  readonly #cluster: NatsCluster;
  readonly #onChange: () => void;
  /** This master's name in the keys: new for every process. */
  readonly #self = crypto.randomUUID();
  /** This master's counts of clients that have some, as last written. */
  readonly #mine = new Map<string, ClientCounts>();
  /** Clients whose counts changed since the last write. */
  readonly #dirty = new Set<string>();
  /** Every other master's counts, by client key, then by master. */
  readonly #others = new Map<string, Map<string, Told>>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #refreshTimer: ReturnType<typeof setInterval>;
  #stopWatching: (() => void) | undefined;
  #closed = false;

  constructor({ cluster, changed }: ClusterCountsOptions) {
    this.#cluster = cluster;
    this.#onChange = changed;
    this.#refreshTimer = setInterval(
      () => this.#refresh(),
      CLIENT_COUNTS_TTL_MS / 3,
    );
    void this.#watch();
  }

  elsewhere(client: string): Readonly<ClientCounts> {
    const told = this.#others.get(clientKey(client));
    if (told === undefined) return NONE;
    let running = 0;
    let queued = 0;
    const now = performance.now();
    for (const counts of told.values()) {
      // A master that stopped writing is gone, whatever the bucket holds.
      if (now - counts.seenAt > CLIENT_COUNTS_TTL_MS) continue;
      running += counts.running;
      queued += counts.queued;
    }
    return running === 0 && queued === 0 ? NONE : { running, queued };
  }

  changed(client: string, counts: Readonly<ClientCounts>): void {
    if (this.#closed) return;
    if (counts.running === 0 && counts.queued === 0) this.#mine.delete(client);
    else this.#mine.set(client, { ...counts });
    this.#dirty.add(client);
    this.#flushTimer ??= setTimeout(() => void this.#flush(), FLUSH_MS);
  }

  /** Stops; this master's entries are removed, for the others to see at once. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    clearInterval(this.#refreshTimer);
    this.#stopWatching?.();
    await Promise.all(
      [...this.#mine.keys()].map((client) =>
        this.#cluster.clients.delete(this.#key(client)).catch(() => {})
      ),
    );
  }

  #key(client: string): string {
    return `${clientKey(client)}.${this.#self}`;
  }

  async #flush(): Promise<void> {
    this.#flushTimer = undefined;
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    await Promise.all(dirty.map((client) => this.#write(client)));
  }

  /** Writes again every count that is not zero, before the TTL drops it. */
  #refresh(): void {
    for (const client of this.#mine.keys()) this.#dirty.add(client);
    void this.#flush();
  }

  async #write(client: string): Promise<void> {
    const counts = this.#mine.get(client);
    try {
      if (counts === undefined) {
        await this.#cluster.clients.delete(this.#key(client));
      } else {
        await this.#cluster.clients.put(
          this.#key(client),
          JSON.stringify(counts),
        );
      }
    } catch (error) {
      log.warn("cannot share the counts of client {client}: {error}", {
        client,
        error,
      });
    }
  }

  async #watch(): Promise<void> {
    const stop = new AbortController();
    this.#stopWatching = () => stop.abort();
    if (this.#closed) stop.abort();
    await followBucket(this.#cluster.clients, (entry) => this.#onEntry(entry), {
      name: "client counts",
      quietMs: CLIENT_COUNTS_TTL_MS / 3,
      signal: stop.signal,
    });
  }

  #onEntry(entry: KvEntry): void {
    const dot = entry.key.indexOf(".");
    if (dot < 0) return;
    const client = entry.key.slice(0, dot);
    const master = entry.key.slice(dot + 1);
    if (master === this.#self) return;
    let told = this.#others.get(client);
    if (entry.operation !== "PUT") {
      told?.delete(master);
      if (told?.size === 0) this.#others.delete(client);
      this.#onChange();
      return;
    }
    let counts: Partial<ClientCounts>;
    try {
      counts = entry.json<Partial<ClientCounts>>();
    } catch {
      return;
    }
    const running = Number(counts.running);
    const queued = Number(counts.queued);
    if (!(running >= 0 && queued >= 0)) return;
    if (told === undefined) this.#others.set(client, told = new Map());
    told.set(master, { running, queued, seenAt: performance.now() });
    this.#onChange();
  }
}

/** A client's name as a key token: any name, a fixed short key. */
function clientKey(client: string): string {
  return createHash("sha256").update(client).digest("hex").slice(0, 32);
}
