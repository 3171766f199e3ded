/**
 * {@linkcode KilnClient}: one long-lived connection to a kiln master that
 * carries any number of jobs at once, each with its own events, cancel and
 * interactive stdin, dialing again (with back-off) when it is lost.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  DEFAULT_PORT,
  formatHostPort,
  type HostPort,
  parseHostPort,
} from "./address.ts";
import type { JobRequest, JobResult } from "./job.ts";
import { positiveInteger } from "./_options.ts";
import { MAX_TIMER_MS } from "./_timer.ts";
import { abortableDelay, backoffDelay } from "./nodes/_timing.ts";
import { TypedEventTarget } from "./nodes/typed_event_target.ts";
import { Connection } from "./protocol/connection.ts";
import { ConnectionError, ProtocolError } from "./protocol/errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./protocol/frame.ts";
import {
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
} from "./protocol/handshake.ts";
import type { ClusterStatus, JobEvent } from "./protocol/messages.ts";
import { dial, hintTls, type TlsDialOptions } from "./protocol/transport.ts";
import {
  ClientJob,
  ClientLink,
  ConnectRequest,
  type OutboxItem,
  StatusRequest,
} from "./_client_link.ts";

const log = getLogger(["kiln", "client"]);

/** The most masters one client is given. */
export const MAX_MASTERS = 64;

/** Where the masters are and how to talk to them: what every client call needs. */
export interface ConnectOptions {
  /**
   * The master, as `host:port` or an address object; or several masters of
   * one cluster, as a comma-separated `"a:7700,b:7700"` or a list (at most
   * {@linkcode MAX_MASTERS}). They are dialed in turn, from the first: a
   * master that cannot be reached is passed over for the next, and after a
   * connection is lost the next master is dialed first.
   *
   * @default "127.0.0.1:7700"
   */
  master?:
    | string
    | HostPort
    | readonly (string | HostPort)[]
    | undefined;
  /** Shared token of the cluster, or this client's credential token. @default "" */
  token?: string | undefined;
  /**
   * A name for the master's logs; with named credentials (`--auth`), the
   * name of the credential.
   */
  name?: string | undefined;
  /** Largest frame accepted from the master. @default 8 MiB */
  maxFrameBytes?: number | undefined;
  /** Time allowed for each handshake (and for the TLS handshake before it). @default 10000 */
  handshakeTimeoutMs?: number | undefined;
  /**
   * Speak TLS to the master and check its certificate: `true` trusts Deno's
   * default roots; `{ caCerts }` also trusts these CAs (PEM), such as the
   * one `deno task gen-certs` makes. Plain TCP when absent.
   */
  tls?: true | TlsDialOptions | undefined;
}

/** Options of {@linkcode KilnClient}. */
export interface KilnClientOptions extends ConnectOptions {
  /**
   * Rounds of dials in a row, each round dialing every master once in
   * turn, while submissions wait for a connection, before they fail with
   * a dial's error. Only a refused, reset or closed connection, or a
   * master with too many connections from this address, is dialed again
   * in another round; a wrong token or protocol version is not (with one
   * master, it fails at once). From 1 to 1000.
   *
   * @default 8
   */
  connectAttempts?: number | undefined;
  /**
   * Times one job may be submitted in all. A job whose connection was lost
   * before its result is attached again by its id on the next connection;
   * a master that does not know it (a standalone master always, as its
   * jobs end with the connection that submitted them) has it submitted
   * again, and the job's `onEvent` hears `restarted`. A job submitted this
   * many times, or whose connection was lost more often, ends with
   * `internal_error` instead, naming why. 1 never submits a job twice.
   * From 1 to 100.
   *
   * @default 3
   */
  maxSubmits?: number | undefined;
  /** The first pause before dialing again, in ms; each next one doubles. @default 100 */
  reconnectMinMs?: number | undefined;
  /** The longest pause before dialing again, in ms. @default 5000 */
  reconnectMaxMs?: number | undefined;
}

/** Options of one job: {@linkcode KilnClient.submit}. */
export interface JobOptions {
  /**
   * Receives every event of the job as it happens: accepted, queued,
   * started, output, restarted (output so far is void), result. After its
   * connection was lost, `accepted` comes again with the same id when the
   * job is attached on the next one, or `restarted` then `accepted` with a
   * new id when it is submitted again. If it throws, the job is cancelled
   * and its promise rejects with what it threw.
   */
  onEvent?: ((event: JobEvent) => void) | undefined;
  /** Aborting it cancels the job on the master and rejects with the abort reason. */
  signal?: AbortSignal | undefined;
  /**
   * Stdin to send while the program runs, chunk by chunk as it comes (an
   * interactive program); EOF follows its end. Makes the job `interactive`.
   */
  input?: AsyncIterable<string> | undefined;
}

/** The client is connected to the master (again, after a disconnection). */
export interface ClientConnectedDetail {
  /** The master's node name. */
  readonly master: string;
}

/** The connection to the master ended. */
export interface ClientDisconnectedDetail {
  /** Why, e.g. `the master closed the connection`. */
  readonly reason: string;
  /** The master's node name. */
  readonly master: string;
  /**
   * Jobs that were on it without a result: each is attached again (or
   * submitted again) on the next connection, which is dialed at once.
   */
  readonly lostJobs: number;
}

/** A dial or handshake failed; another attempt follows. */
export interface ClientConnectFailedDetail {
  /** What went wrong: a {@linkcode ConnectionError} or a {@linkcode ProtocolError}. */
  readonly error: Error;
  /** The master that could not be reached, as `host:port`. */
  readonly address: string;
  /** When the next attempt starts, in ms from now: 0 when it dials the next master. */
  readonly retryInMs: number;
}

/** Every event of a {@linkcode KilnClient}, by type. */
export interface KilnClientEventMap {
  /** The client is connected to the master (again, after a disconnection). */
  connected: CustomEvent<ClientConnectedDetail>;
  /** The connection to the master ended; the jobs on it go on over the next one. */
  disconnected: CustomEvent<ClientDisconnectedDetail>;
  /** A dial or handshake failed; another attempt follows. */
  connectfailed: CustomEvent<ClientConnectFailedDetail>;
}

/** Options resolved: what the client dials with. */
interface ResolvedOptions {
  /** The masters, in the order given. */
  readonly addresses: readonly HostPort[];
  readonly connect: ConnectOptions;
  readonly connectAttempts: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly maxSubmits: number;
}

/**
 * A client of a kiln master that keeps one connection and runs any number
 * of jobs on it at once: a CI runner with hundreds of jobs in flight holds
 * one socket (and one of the master's per-address connections), and pays
 * the handshake once.
 *
 * It dials on the first request, trying each master it was given in turn,
 * and again after the connection was lost, the next master first,
 * retrying refused or dropped dials with capped exponential back-off
 * between rounds (`connectAttempts`, `reconnectMinMs`, `reconnectMaxMs`).
 * Requests made meanwhile wait for the connection.
 *
 * **When the connection drops, its jobs go on over the next one.** Each
 * job with an id is attached again by it (`attach`): a master that still
 * has the job (one of a cluster on NATS) sends `accepted` with the same id,
 * then the rest of the job's events and its result. A master that does not
 * know it (a standalone master never does: its jobs end with the
 * connection that submitted them) answers `unknown_job`, and the job is
 * submitted again, its `onEvent` hearing `restarted` first and then a new
 * `accepted`; an interactive job's stdin is sent again from the start. A
 * job not yet accepted is simply submitted again. At most `maxSubmits`
 * submissions in all, and as many lost connections: then the job ends
 * with an `internal_error` result naming why. A job may thus run more than once (it may have run even when
 * its `accepted` was lost with the link): set `maxSubmits: 1` if running
 * it twice is not safe. A cancel or stdin for a job whose connection is
 * down waits for its next one. Only when no master can be reached does a
 * job reject, with the dial's error.
 *
 * Close it (or use `await using`) when done: an open connection keeps the
 * process alive. Closing rejects the jobs still running; the master
 * cancels them.
 *
 * @example Two masters of one cluster: the second takes over
 * ```ts ignore
 * import { KilnClient } from "./kiln_client.ts";
 *
 * await using client = new KilnClient({ master: "10.0.0.1:7700,10.0.0.2:7700" });
 * client.addEventListener("disconnected", ({ detail }) => {
 *   console.log(`lost ${detail.master} with ${detail.lostJobs} jobs: they go on elsewhere`);
 * });
 * const result = await client.submit({
 *   language: "bash",
 *   files: [{ name: "main.sh", content: "echo hi" }],
 * });
 * ```
 *
 * @example Many jobs on one connection
 * ```ts
 * import { KilnClient, MasterNode } from "../mod.ts";
 *
 * await using master = new MasterNode({ port: 0, slots: 2, resourceLogIntervalMs: 0 });
 * await using client = new KilnClient({ master: master.addr });
 * const results = await Promise.all(["a", "b", "c"].map((name) =>
 *   client.submit({
 *     language: "bash",
 *     files: [{ name: "main.sh", content: `echo ${name}` }],
 *   })
 * ));
 * console.log(results.map((result) => result.stdout)); // ["a\n", "b\n", "c\n"]
 * ```
 *
 * @example Cancelling one job, and typing into another
 * ```ts ignore
 * import { KilnClient } from "./kiln_client.ts";
 *
 * await using client = new KilnClient({ master: "127.0.0.1:7700" });
 * const stop = new AbortController();
 * const slow = client.submit(
 *   { language: "bash", files: [{ name: "a.sh", content: "sleep 60" }] },
 *   { signal: stop.signal },
 * );
 * stop.abort(new Error("not needed any more"));
 * await slow.catch((error) => console.log(error.message)); // not needed any more
 *
 * async function* lines() {
 *   yield "Ada\n";
 * }
 * const greeting = await client.submit(
 *   { language: "bash", files: [{ name: "b.sh", content: 'read -r n; echo "hi $n"' }] },
 *   { input: lines() },
 * );
 * console.log(greeting.stdout); // hi Ada
 * ```
 */
export class KilnClient extends TypedEventTarget<KilnClientEventMap>
  implements AsyncDisposable {
  readonly #options: ResolvedOptions;
  /**
   * Jobs and status requests waiting for a connection, or for room in its
   * send buffer, in the order they were made.
   */
  readonly #outbox = new Set<OutboxItem>();
  #link: ClientLink | undefined;
  #connecting: Promise<ClientLink> | undefined;
  #flushing = false;
  #closed = false;
  /**
   * Set while a dial is under way, and aborted by {@linkcode close}: it
   * ends the dial, its handshake or a back-off. A connected client holds
   * none (a client process may hold thousands of clients).
   */
  #dialing: AbortController | undefined;
  /** The index of the master dialed first at the next dial. */
  #nextMaster = 0;

  /**
   * Checks the options (throws `RangeError`, or `TypeError` for an address
   * that does not parse); dials nothing until the first request.
   */
  constructor(options: KilnClientOptions = {}) {
    super();
    const {
      master = `127.0.0.1:${DEFAULT_PORT}`,
      connectAttempts = 8,
      reconnectMinMs = 100,
      reconnectMaxMs = 5000,
      maxSubmits = 3,
      ...connect
    } = options;
    positiveInteger("connectAttempts", connectAttempts, 1000);
    positiveInteger("maxSubmits", maxSubmits, 100);
    positiveInteger("reconnectMinMs", reconnectMinMs, MAX_TIMER_MS);
    positiveInteger("reconnectMaxMs", reconnectMaxMs, MAX_TIMER_MS);
    if (reconnectMaxMs < reconnectMinMs) {
      throw new RangeError(
        `Cannot use reconnectMaxMs ${reconnectMaxMs}: it is shorter than reconnectMinMs ${reconnectMinMs}`,
      );
    }
    this.#options = {
      addresses: parseMasters(master),
      connect,
      connectAttempts,
      reconnectMinMs,
      reconnectMaxMs,
      maxSubmits,
    };
  }

  /** Whether a connection to the master is up now. */
  get connected(): boolean {
    return this.#link !== undefined && !this.#link.ended;
  }

  /**
   * Connects now, if not connected yet, rather than at the first request:
   * a wrong token or an unreachable master then shows at once. Rejects as
   * {@linkcode submit} does when no connection can be made.
   */
  connect(): Promise<void> {
    if (this.#closed) return Promise.reject(clientClosed("cannot connect"));
    const request = new ConnectRequest();
    this.#post(request);
    return request.done;
  }

  /**
   * Runs a program and resolves with its result. A job the cluster refuses
   * still resolves, with verdict `rejected` and a reason. The promise
   * rejects when the master cannot be reached ({@linkcode ConnectionError}),
   * a handshake fails ({@linkcode ProtocolError}: a wrong token, another
   * protocol version), the connection drops before the result
   * ({@linkcode ProtocolError} `closed`: see the class), the client is
   * closed, `signal` aborts (with its reason), or `onEvent` throws.
   */
  submit(request: JobRequest, options: JobOptions = {}): Promise<JobResult> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closed) return Promise.reject(clientClosed("cannot submit"));
    const job = new ClientJob(request, options);
    if (signal !== undefined) {
      const onAbort = () => this.#abandon(job, signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      job.whenEnded(() => signal.removeEventListener("abort", onAbort));
    }
    this.#post(job);
    return job.outcome;
  }

  /**
   * Asks the master for the state of its cluster: every node with its load
   * and languages, and the queue. Rejects as {@linkcode submit} does.
   */
  status(options: { signal?: AbortSignal | undefined } = {}): Promise<
    ClusterStatus
  > {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closed) return Promise.reject(clientClosed("cannot ask"));
    const request = new StatusRequest();
    // An answer names no request: one given up still takes its answer, so
    // it only stops waiting.
    const onAbort = () => {
      this.#outbox.delete(request);
      request.fail(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#post(request);
    return request.answer.finally(() =>
      signal?.removeEventListener("abort", onAbort)
    );
  }

  /**
   * Closes the connection: jobs without a result reject (the master
   * cancels them), and so does anything submitted later. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#dialing?.abort(clientClosed("the client was closed"));
      for (const item of this.#outbox) {
        item.cannotSend(clientClosed("cannot send"));
      }
      this.#outbox.clear();
    }
    await this.#connecting?.catch(() => {});
    await this.#link?.close(clientClosed("the client was closed"));
  }

  /** Same as {@linkcode close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Sends a request at once when the connection is up with room to spare
   * and nothing waits ahead of it (the common case: no outbox, no flush);
   * otherwise queues it behind those waiting and sends what can be sent.
   */
  #post(item: OutboxItem): void {
    if (this.#outbox.size === 0 && !this.#flushing) {
      const link = this.#live();
      if (link !== undefined && !link.backlogged) return item.sendOn(link);
    }
    this.#outbox.add(item);
    this.#flush();
  }

  /**
   * The caller gave the job up: it rejects now, wherever it is. A master
   * that accepted it is told to cancel it: at once over a connection that
   * is up; otherwise the job stays in the outbox, to be attached on the
   * next connection only so that its cancel follows.
   */
  #abandon(job: ClientJob, reason: unknown): void {
    if (job.ended) return;
    const link = job.link;
    job.fail(reason);
    if (job.jobId === undefined) {
      this.#outbox.delete(job);
      link?.abandon(job); // cancelled when `accepted` comes, if it does
    } else if (link !== undefined && !link.ended) link.abandon(job);
    else if (!this.#closed) this.#post(job);
  }

  /**
   * Sends what waits in the outbox, in order, dialing when there is no
   * connection and pausing while the connection's send buffer is full.
   * One flush runs at a time. Never rejects.
   */
  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#outbox.size > 0 && !this.#closed) {
        let link = this.#live();
        if (link === undefined) {
          try {
            link = await this.#connect();
          } catch (error) {
            for (const item of this.#outbox) item.cannotSend(error);
            this.#outbox.clear();
            return;
          }
        }
        for (const item of this.#outbox) {
          if (link.ended || link.backlogged) break;
          this.#outbox.delete(item);
          item.sendOn(link);
        }
        if (!link.ended && link.backlogged) await link.drained();
      }
    } finally {
      this.#flushing = false;
    }
  }

  /** The connection, while it is up. */
  #live(): ClientLink | undefined {
    return this.#link?.ended === false ? this.#link : undefined;
  }

  /** Dials unless a dial is under way; resolves with the new connection. */
  #connect(): Promise<ClientLink> {
    if (this.#connecting === undefined) {
      const dialing = new AbortController();
      this.#dialing = dialing;
      this.#connecting = this.#dialWithRetries(dialing.signal).finally(() => {
        this.#connecting = undefined;
        this.#dialing = undefined;
      });
    }
    return this.#connecting;
  }

  /**
   * Dials the masters in turn, from the one due first, and shakes hands.
   * After a round in which every dial failed, pauses and goes round again
   * while some failure is one that passes (a master restarting, say) and
   * someone still waits.
   */
  async #dialWithRetries(signal: AbortSignal): Promise<ClientLink> {
    const { addresses, connectAttempts, reconnectMinMs, reconnectMaxMs } =
      this.#options;
    for (let round = 1;; round++) {
      /** The first failure that would not pass: it says most of what is wrong. */
      let lasting: unknown;
      let last: unknown;
      let lastAddress = "";
      /** Whether some dial failed in a way that may pass. */
      let passing = false;
      for (let turn = 0; turn < addresses.length; turn++) {
        const index = (this.#nextMaster + turn) % addresses.length;
        const address = addresses[index]!;
        try {
          const peer = await connectToMaster(
            address,
            this.#options.connect,
            signal,
          );
          return this.#linkUp(index, peer);
        } catch (error) {
          if (this.#closed) throw clientClosed("the client was closed");
          last = error;
          lastAddress = formatHostPort(address);
          if (passes(error)) passing = true;
          else lasting ??= error;
          if (turn + 1 === addresses.length) break;
          log.info("cannot reach master {address}: {reason}; dialing {next}", {
            address: lastAddress,
            reason: (error as Error).message,
            next: formatHostPort(addresses[(index + 1) % addresses.length]!),
          });
          this.emit("connectfailed", {
            error: error as Error,
            address: lastAddress,
            retryInMs: 0,
          });
        }
      }
      if (
        round >= connectAttempts || !passing || this.#outbox.size === 0
      ) throw lasting ?? last;
      const retryInMs = backoffDelay(round - 1, {
        minMs: reconnectMinMs,
        maxMs: reconnectMaxMs,
      });
      log.info(
        "cannot reach {masters}: {reason}; dialing again in {ms} ms",
        {
          masters: addresses.length === 1 ? "the master" : "any master",
          reason: (last as Error).message,
          ms: retryInMs,
        },
      );
      this.emit("connectfailed", {
        error: last as Error,
        address: lastAddress,
        retryInMs,
      });
      await abortableDelay(retryInMs, signal);
    }
  }

  /** A connection to master `index` is up: its link serves the client from now on. */
  #linkUp(
    index: number,
    peer: { connection: Connection; node: string; version: number },
  ): ClientLink {
    const { connection, node, version } = peer;
    const address = formatHostPort(this.#options.addresses[index]!);
    const link = new ClientLink(
      connection,
      { node, address, version, maxSubmits: this.#options.maxSubmits },
      (reason, orphans) => this.#ended(link, index, reason, orphans),
    );
    this.#link = link;
    this.#nextMaster = index;
    log.debug("connected to master {master} at {address}", {
      master: node,
      address,
    });
    this.emit("connected", { master: node });
    return link;
  }

  /**
   * A link ended: the jobs it leaves without a result go first in the
   * outbox, and whatever waits there is sent on the next connection, to
   * the next master first.
   */
  #ended(
    link: ClientLink,
    index: number,
    reason: ProtocolError,
    orphans: ClientJob[],
  ): void {
    if (this.#link === link) this.#link = undefined;
    this.#nextMaster = (index + 1) % this.#options.addresses.length;
    if (this.#closed) {
      for (const job of orphans) {
        job.cannotSend(clientClosed("the client was closed"));
      }
      return;
    }
    if (orphans.length > 0) {
      log.warn(
        "lost {link} with {lostJobs} jobs on it: {reason}; they go on over the next connection",
        {
          link: String(link),
          lostJobs: orphans.length,
          reason: reason.message,
        },
      );
      // They were sent before anything still waiting: they go first.
      const waiting = [...this.#outbox];
      this.#outbox.clear();
      for (const job of orphans) this.#outbox.add(job);
      for (const item of waiting) this.#outbox.add(item);
    } else log.debug("connection ended: {reason}", { reason: reason.message });
    this.emit("disconnected", {
      reason: reason.message,
      master: link.node,
      lostJobs: orphans.length,
    });
    if (this.#outbox.size > 0) this.#flush();
  }
}

/**
 * The masters `master` names, in order: a comma-separated string, an
 * address, or a list of either. Throws `TypeError` for an address that
 * does not parse, `RangeError` for none or more than {@linkcode MAX_MASTERS}.
 */
function parseMasters(
  master: NonNullable<ConnectOptions["master"]>,
): HostPort[] {
  const entries: readonly (string | HostPort)[] = Array.isArray(master)
    ? master
    : [master as string | HostPort];
  const addresses = entries.flatMap((entry) =>
    typeof entry === "string"
      ? entry.split(",").map((text) => {
        if (text.trim() === "") {
          throw new TypeError(
            `Cannot use master "${entry}": an address in the list is empty`,
          );
        }
        return parseHostPort(text);
      })
      : [entry]
  );
  if (addresses.length === 0 || addresses.length > MAX_MASTERS) {
    throw new RangeError(
      `Cannot use ${addresses.length} masters: give from 1 to ${MAX_MASTERS}`,
    );
  }
  return addresses;
}

/**
 * Whether a failed dial may succeed if tried again soon: the master was
 * not listening or hung up during the handshake (both seen while it
 * restarts), or it holds as many connections from this address as it
 * takes. A wrong token, another protocol version, a TLS mismatch or an
 * authentication back-off would fail again the same way.
 */
function passes(error: unknown): boolean {
  if (error instanceof ConnectionError) {
    const cause = error.cause;
    return cause instanceof Deno.errors.ConnectionRefused ||
      cause instanceof Deno.errors.ConnectionReset ||
      cause instanceof Deno.errors.ConnectionAborted;
  }
  if (!(error instanceof ProtocolError)) return false;
  if (error.code === "too_many_connections") return true;
  // A plain dialer's hang-up comes wrapped in a hint about TLS; a TLS
  // master's answer reads as a broken frame instead, and does not pass.
  const hangUp = error.cause instanceof ProtocolError ? error.cause : error;
  return hangUp.code === "closed" && hangUp.peerCode === undefined;
}

function clientClosed(what: string): ProtocolError {
  return new ProtocolError(
    "closed",
    what === "the client was closed" ? what : `${what}: the client is closed`,
  );
}

/**
 * Dials the master and completes the client handshake. Once `signal` has
 * aborted, rejects with its reason, whatever step it stopped.
 */
export async function connectToMaster(
  address: HostPort,
  options: ConnectOptions,
  signal?: AbortSignal,
): Promise<{ connection: Connection; node: string; version: number }> {
  const {
    token = "",
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
  } = options;
  signal?.throwIfAborted();
  let conn: Deno.Conn;
  try {
    conn = await dial(address, {
      tls: options.tls,
      timeoutMs: handshakeTimeoutMs,
      signal,
    });
  } catch (error) {
    signal?.throwIfAborted();
    throw error;
  }
  const connection = new Connection(conn, { maxFrameBytes });
  try {
    const { node, version } = await clientHandshake(connection, {
      role: "client",
      token,
      timeoutMs: handshakeTimeoutMs,
      signal,
      ...options.name === undefined ? {} : { name: options.name },
    });
    return { connection, node, version };
  } catch (error) {
    await connection.close();
    signal?.throwIfAborted();
    // Over TLS the master's hang-up means something else: let it speak.
    throw options.tls === undefined ? hintTls(error) : error;
  }
}
