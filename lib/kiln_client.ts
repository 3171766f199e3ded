/**
 * {@linkcode KilnClient}: one long-lived connection to a kiln master that
 * carries any number of jobs at once, each with its own events, cancel and
 * interactive stdin, dialing again (with back-off) when it is lost.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { DEFAULT_PORT, type HostPort, parseHostPort } from "./address.ts";
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

/** Where the master is and how to talk to it: what every client call needs. */
export interface ConnectOptions {
  /** The master, as `host:port` or an address object. @default "127.0.0.1:7700" */
  master?: string | HostPort | undefined;
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
   * Dials in a row, while submissions wait for a connection, before they
   * fail with the last dial's error. Only a refused, reset or closed
   * connection, or a master with too many connections from this address,
   * is dialed again; a wrong token or protocol version fails at once.
   * From 1 to 1000.
   *
   * @default 8
   */
  connectAttempts?: number | undefined;
  /** The first pause before dialing again, in ms; each next one doubles. @default 100 */
  reconnectMinMs?: number | undefined;
  /** The longest pause before dialing again, in ms. @default 5000 */
  reconnectMaxMs?: number | undefined;
}

/** Options of one job: {@linkcode KilnClient.submit}. */
export interface JobOptions {
  /**
   * Receives every event of the job as it happens: accepted, queued,
   * started, output, restarted (output so far is void), result. If it
   * throws, the job is cancelled and its promise rejects with what it threw.
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
  /** Jobs that were on it without a result: each rejected, naming the reason. */
  readonly lostJobs: number;
}

/** A dial or handshake failed; another attempt follows. */
export interface ClientConnectFailedDetail {
  /** What went wrong: a {@linkcode ConnectionError} or a {@linkcode ProtocolError}. */
  readonly error: Error;
  /** When the next attempt starts, in ms from now. */
  readonly retryInMs: number;
}

/** Every event of a {@linkcode KilnClient}, by type. */
export interface KilnClientEventMap {
  /** The client is connected to the master (again, after a disconnection). */
  connected: CustomEvent<ClientConnectedDetail>;
  /** The connection to the master ended; the jobs on it were rejected. */
  disconnected: CustomEvent<ClientDisconnectedDetail>;
  /** A dial or handshake failed; another attempt follows. */
  connectfailed: CustomEvent<ClientConnectFailedDetail>;
}

/** Options resolved: what the client dials with. */
interface ResolvedOptions {
  readonly address: HostPort;
  readonly connect: ConnectOptions;
  readonly connectAttempts: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
}

/**
 * A client of a kiln master that keeps one connection and runs any number
 * of jobs on it at once: a CI runner with hundreds of jobs in flight holds
 * one socket (and one of the master's per-address connections), and pays
 * the handshake once.
 *
 * It dials on the first request, and again on the next request after the
 * connection was lost, retrying a refused or dropped dial with capped
 * exponential back-off (`connectAttempts`, `reconnectMinMs`,
 * `reconnectMaxMs`). Requests made meanwhile wait for the connection.
 *
 * **When the connection drops, every job on it rejects** with a
 * {@linkcode ProtocolError} `closed` that names the job and the reason; none
 * is sent again. The master cancels the jobs of a client that goes away,
 * so none of them will get a result; and a job may have run even when its
 * `accepted` never arrived (the answer was lost with the link), so only the
 * caller can know whether running it twice is safe. Submissions still
 * waiting for the connection, which the master never saw, are sent on the
 * next one.
 *
 * Close it (or use `await using`) when done: an open connection keeps the
 * process alive. Closing rejects the jobs still running; the master
 * cancels them.
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

  /** Checks the options (throws `RangeError`); dials nothing until the first request. */
  constructor(options: KilnClientOptions = {}) {
    super();
    const {
      master = `127.0.0.1:${DEFAULT_PORT}`,
      connectAttempts = 8,
      reconnectMinMs = 100,
      reconnectMaxMs = 5000,
      ...connect
    } = options;
    positiveInteger("connectAttempts", connectAttempts, 1000);
    positiveInteger("reconnectMinMs", reconnectMinMs, MAX_TIMER_MS);
    positiveInteger("reconnectMaxMs", reconnectMaxMs, MAX_TIMER_MS);
    if (reconnectMaxMs < reconnectMinMs) {
      throw new RangeError(
        `Cannot use reconnectMaxMs ${reconnectMaxMs}: it is shorter than reconnectMinMs ${reconnectMinMs}`,
      );
    }
    this.#options = {
      address: typeof master === "string" ? parseHostPort(master) : master,
      connect,
      connectAttempts,
      reconnectMinMs,
      reconnectMaxMs,
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
      for (const item of this.#outbox) item.fail(clientClosed("cannot send"));
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

  /** The caller gave the job up: it rejects now, wherever it is. */
  #abandon(job: ClientJob, reason: unknown): void {
    if (job.ended) return;
    this.#outbox.delete(job);
    job.fail(reason);
    job.link?.abandon(job);
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
            for (const item of this.#outbox) item.fail(error);
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
   * Dials and shakes hands, again after a pause while the failure is one
   * that passes (a master restarting, say) and someone still waits.
   */
  async #dialWithRetries(signal: AbortSignal): Promise<ClientLink> {
    const { connectAttempts, reconnectMinMs, reconnectMaxMs } = this.#options;
    for (let attempt = 1;; attempt++) {
      try {
        const { connection, node } = await connectToMaster(
          this.#options.address,
          this.#options.connect,
          signal,
        );
        const link = new ClientLink(
          connection,
          node,
          (reason, lostJobs) => this.#ended(link, reason, lostJobs),
        );
        this.#link = link;
        log.debug("connected to master {master}", { master: node });
        this.emit("connected", { master: node });
        return link;
      } catch (error) {
        if (this.#closed) throw clientClosed("the client was closed");
        if (
          attempt >= connectAttempts || !passes(error) ||
          this.#outbox.size === 0
        ) throw error;
        const retryInMs = backoffDelay(attempt - 1, {
          minMs: reconnectMinMs,
          maxMs: reconnectMaxMs,
        });
        log.info(
          "cannot reach the master: {reason}; dialing again in {ms} ms",
          {
            reason: (error as Error).message,
            ms: retryInMs,
          },
        );
        this.emit("connectfailed", { error: error as Error, retryInMs });
        await abortableDelay(retryInMs, signal);
      }
    }
  }

  #ended(link: ClientLink, reason: ProtocolError, lostJobs: number): void {
    if (this.#link === link) this.#link = undefined;
    if (this.#closed) return;
    if (lostJobs > 0) {
      log.warn("lost the master with {lostJobs} jobs on the link: {reason}", {
        lostJobs,
        reason: reason.message,
      });
    } else log.debug("connection ended: {reason}", { reason: reason.message });
    this.emit("disconnected", { reason: reason.message, lostJobs });
    // Requests made as it ended wait in the outbox for the next one.
    if (this.#outbox.size > 0) this.#flush();
  }
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
): Promise<{ connection: Connection; node: string }> {
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
    const { node } = await clientHandshake(connection, {
      role: "client",
      token,
      timeoutMs: handshakeTimeoutMs,
      signal,
      ...options.name === undefined ? {} : { name: options.name },
    });
    return { connection, node };
  } catch (error) {
    await connection.close();
    signal?.throwIfAborted();
    // Over TLS the master's hang-up means something else: let it speak.
    throw options.tls === undefined ? hintTls(error) : error;
  }
}
