/**
 * An HTTP/1.1 server that owns its accept loop, so that every connection is
 * counted and bounded before a byte of it is read: a total cap kept below
 * the process's descriptor limit, a per-address cap (the master's
 * {@linkcode PeerGuard}), and a deadline for each request head. `Deno.serve`
 * accepts inside the runtime and offers none of these; at the descriptor
 * limit its accept error even rejects a promise nobody holds, which ends the
 * process. Here the server stops accepting at its cap, and a failed accept
 * is logged and retried after a growing pause, as the master's TCP port
 * does.
 *
 * Each accepted connection is handed to `Deno.serveHttp` (hyper underneath,
 * the same parser `Deno.serve` uses); its requests are the standard
 * `Request`, and WebSocket upgrades work through
 * {@linkcode HttpServer.upgradeWebSocket}.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { MAX_TIMER_MS } from "../_timer.ts";
import { abortableDelay } from "../nodes/_timing.ts";
import { PeerGuard } from "../nodes/peer_guard.ts";
import { listen } from "../protocol/transport.ts";
import { positiveInteger } from "../_options.ts";

const log = getLogger(["kiln", "http"]);

/** Connections the server holds at once at most, by default (see {@linkcode defaultMaxConnections}). */
export const DEFAULT_MAX_HTTP_CONNECTIONS = 1024;
/** The largest `maxConnections`. */
export const MAX_HTTP_CONNECTIONS = 1_000_000;
/** Time for a request head to arrive, by default: 10 s. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;

const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/** The part of `Deno.serveHttp` used here; Deno 2 still ships it, untyped. */
interface RequestEvent {
  readonly request: Request;
  respondWith(response: Response | Promise<Response>): Promise<void>;
}
interface HttpConn {
  nextRequest(): Promise<RequestEvent | null>;
  close(): void;
}
type ServeHttp = (conn: Deno.Conn) => HttpConn;

/** Where a request came from. */
export interface HttpRequestInfo {
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
}

/** Answers one request; a throw becomes a plain `500 internal error`, logged. */
export type HttpHandler = (
  request: Request,
  info: HttpRequestInfo,
) => Response | Promise<Response>;

/** Options of {@linkcode HttpServer}. */
export interface HttpServerOptions {
  /** Address to listen on. @default "127.0.0.1" */
  hostname?: string | undefined;
  /** Port to listen on; 0 picks a free one. @default 0 */
  port?: number | undefined;
  /**
   * Sockets held at once, 1 to {@linkcode MAX_HTTP_CONNECTIONS}: served,
   * upgraded to WebSockets, or being refused. At the cap nothing more is
   * accepted: newcomers wait in the kernel's listen queue until a socket
   * closes. Keep it well below the descriptor limit (`ulimit -n`): jobs,
   * the TCP port and the history need descriptors too.
   * @default {defaultMaxConnections}()
   */
  maxConnections?: number | undefined;
  /**
   * Connections one address (IPv6: one /64) holds at once; more are
   * answered `429` and closed. 0 means no limit.
   * @default 64
   */
  maxConnectionsPerIp?: number | undefined;
  /**
   * Time a connection has to deliver a complete request head, in ms,
   * counted from its accept or from the end of its previous response (so
   * it bounds idle keep-alive connections too); past it the connection is
   * closed. 1 to 2^31 - 1.
   * @default {DEFAULT_HEADERS_TIMEOUT_MS}
   */
  headersTimeoutMs?: number | undefined;
  /** Aborting it shuts the server down, like {@linkcode HttpServer.shutdown}. */
  signal?: AbortSignal | undefined;
  /**
   * Makes the listener, given the address: a seam for tests of the accept
   * loop (an accept that fails as it does out of descriptors).
   * @default {listen}
   */
  listen?:
    | ((address: { hostname: string; port: number }) => Deno.Listener)
    | undefined;
}

/** One accepted connection. */
interface Served {
  /** Closes it now (an idle one) or after its response (a busy one). */
  close(): void;
  /** Whether a request is being answered. */
  busy: boolean;
}

/**
 * A bounded HTTP server. It listens when constructed, like `Deno.serve`.
 *
 * @example A server that answers every request, shut down
 * ```ts
 * import { HttpServer } from "./http_server.ts";
 *
 * const server = new HttpServer(() => new Response("hi"), { port: 0, maxConnections: 8 });
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * console.log(await response.text()); // hi
 * await server.shutdown();
 * ```
 */
export class HttpServer implements AsyncDisposable {
  /** The address the server listens on. */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has shut down and every connection is closed. */
  readonly finished: Promise<void>;

  readonly #handler: HttpHandler;
  readonly #serveHttp: ServeHttp;
  readonly #listener: Deno.Listener;
  readonly #maxConnections: number;
  readonly #headersTimeoutMs: number;
  readonly #peers: PeerGuard;
  readonly #served = new Set<Served>();
  readonly #serving = new Set<Promise<void>>();
  /** The WebSocket each upgrade response hands its connection to. */
  readonly #upgrades = new WeakMap<Response, WebSocket>();
  readonly #stopping = new AbortController();
  #closing: Promise<void> | undefined;
  #refused = 0;
  /** Accepted sockets not yet closed: served, upgraded or being refused. */
  #held = 0;
  /** Resolved when a held socket closes, for an accept loop waiting for room. */
  #room: PromiseWithResolvers<void> | undefined;

  /**
   * Starts listening at once. Throws `RangeError` for an option out of
   * range, `Deno.errors.AddrInUse` and the like from `Deno.listen`.
   */
  constructor(handler: HttpHandler, options: HttpServerOptions = {}) {
    const {
      hostname = "127.0.0.1",
      port = 0,
      maxConnections = defaultMaxConnections(),
      maxConnectionsPerIp,
      headersTimeoutMs = DEFAULT_HEADERS_TIMEOUT_MS,
      signal,
      listen: makeListener = listen,
    } = options;
    positiveInteger("maxConnections", maxConnections, MAX_HTTP_CONNECTIONS);
    positiveInteger("headersTimeoutMs", headersTimeoutMs, MAX_TIMER_MS);
    const serveHttp = (Deno as unknown as { serveHttp?: ServeHttp }).serveHttp;
    if (typeof serveHttp !== "function") {
      throw new Error(
        `Cannot serve HTTP: this Deno (${Deno.version.deno}) has no Deno.serveHttp`,
      );
    }
    this.#serveHttp = serveHttp;
    this.#handler = handler;
    this.#maxConnections = maxConnections;
    this.#headersTimeoutMs = headersTimeoutMs;
    // Connections only: the back-off is the master's, checked per request.
    this.#peers = new PeerGuard({ maxConnectionsPerIp, maxAuthFailures: 0 });
    // Through kiln's transport: its connections get TCP_NODELAY on accept.
    this.#listener = makeListener({ hostname, port });
    this.addr = this.#listener.addr as Deno.NetAddr;
    const accepting = this.#acceptLoop();
    this.finished = (async () => {
      await accepting;
      while (this.#serving.size > 0) await Promise.all(this.#serving);
    })();
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
  }

  /** Connections open now (WebSockets included). */
  get connections(): number {
    return this.#served.size;
  }

  /** Connections refused so far, over the per-address cap. */
  get refused(): number {
    return this.#refused;
  }

  /**
   * `Deno.upgradeWebSocket`, with the connection kept counted until the
   * socket closes. Return `response` from the handler.
   */
  upgradeWebSocket(
    request: Request,
  ): { socket: WebSocket; response: Response } {
    const upgrade = Deno.upgradeWebSocket(request);
    this.#upgrades.set(upgrade.response, upgrade.socket);
    return upgrade;
  }

  /**
   * Stops accepting; closes idle connections now and busy ones after their
   * response (an open WebSocket or stream is its owner's to close).
   */
  shutdown(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping.abort();
      this.#room?.resolve();
      try {
        this.#listener.close();
      } catch { /* already closed */ }
      for (const served of this.#served) served.close();
      await this.finished;
    })();
    return this.#closing;
  }

  /** Shuts the server down; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  /**
   * Accepts until shutdown. A failed accept (out of descriptors, say) is
   * logged and retried after a growing pause: the server must neither die
   * nor spin.
   */
  async #acceptLoop(): Promise<void> {
    let backoffMs = ACCEPT_BACKOFF_MIN_MS;
    while (!this.#stopping.signal.aborted) {
      // At the cap, accept nothing: newcomers wait in the kernel's listen
      // queue until a socket closes, and no descriptor is spent on them.
      if (this.#held >= this.#maxConnections) {
        this.#room = Promise.withResolvers();
        await this.#room.promise;
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping.signal.aborted) return;
        log.error(
          "cannot accept an HTTP connection, retrying in {backoffMs} ms: {error}",
          { backoffMs, error },
        );
        await abortableDelay(backoffMs, this.#stopping.signal);
        backoffMs = Math.min(backoffMs * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      backoffMs = ACCEPT_BACKOFF_MIN_MS;
      this.#held++;
      const serving = this.#admit(conn).finally(() => {
        this.#held--;
        this.#room?.resolve();
        this.#serving.delete(serving);
      });
      this.#serving.add(serving);
    }
  }

  /** Counts `conn` against both caps, then serves it, or tells it why not. Never throws. */
  async #admit(conn: Deno.Conn): Promise<void> {
    const remoteAddr = conn.remoteAddr as Deno.NetAddr;
    let admitted: Disposable;
    try {
      admitted = this.#peers.admit(remoteAddr.hostname);
    } catch (error) {
      this.#refused++;
      const message = error instanceof Error ? error.message : String(error);
      log.warn("refusing an HTTP connection from {addr}: {message}", {
        addr: remoteAddr.hostname,
        message,
      });
      await refuse(conn, message);
      return;
    }
    try {
      await this.#serve(conn, remoteAddr);
    } finally {
      admitted[Symbol.dispose]();
    }
  }

  /** The requests of one connection, one at a time (HTTP/1.1), until it closes. */
  async #serve(conn: Deno.Conn, remoteAddr: Deno.NetAddr): Promise<void> {
    let http: HttpConn;
    try {
      http = this.#serveHttp(conn);
    } catch (error) {
      log.warn("cannot serve HTTP to {addr}: {error}", {
        addr: remoteAddr.hostname,
        error,
      });
      closeQuietly(conn);
      return;
    }
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      try {
        http.close();
      } catch { /* already closed */ }
    };
    const served: Served = {
      busy: false,
      close: () => {
        if (!served.busy) close();
      },
    };
    this.#served.add(served);
    try {
      while (!closed && !this.#stopping.signal.aborted) {
        // The head must be in within the deadline: a peer that trickles it,
        // or keeps an idle connection, is let go.
        const timer = setTimeout(() => {
          log.debug(
            "closing an HTTP connection from {addr}: no complete request head in {ms} ms",
            { addr: remoteAddr.hostname, ms: this.#headersTimeoutMs },
          );
          close();
        }, this.#headersTimeoutMs);
        let event: RequestEvent | null;
        try {
          event = await http.nextRequest();
        } catch {
          event = null; // a malformed request or a peer gone: hyper said why
        } finally {
          clearTimeout(timer);
        }
        if (event === null || closed) break;
        served.busy = true;
        const response = await this.#respond(event.request, remoteAddr);
        try {
          await event.respondWith(response);
        } catch {
          // The peer went away mid-answer: nothing to tell it.
        }
        const socket = this.#upgrades.get(response);
        if (socket !== undefined) {
          // The connection is the WebSocket's now (its owner closes it); it
          // counts until it closes.
          await closedSocket(socket);
          break;
        }
        served.busy = false;
      }
    } finally {
      this.#served.delete(served);
      close();
    }
  }

  /** The handler's response; a throw is logged and answered with a plain 500. */
  async #respond(
    request: Request,
    remoteAddr: Deno.NetAddr,
  ): Promise<Response> {
    try {
      return await this.#handler(request, { remoteAddr });
    } catch (error) {
      log.error("{method} {path} failed: {error}", {
        method: request.method,
        path: safePath(request.url),
        error,
      });
      return Response.json({ error: "internal error" }, { status: 500 });
    }
  }
}

/**
 * A share of the descriptor limit for HTTP connections: half the soft
 * `RLIMIT_NOFILE` (`ulimit -n`), leaving the rest to jobs, the TCP port and
 * the history, and at most {@linkcode DEFAULT_MAX_HTTP_CONNECTIONS}; that
 * maximum where the limit cannot be read (no `/proc`).
 *
 * @example The default cap on this host
 * ```ts
 * import { defaultMaxConnections } from "./http_server.ts";
 *
 * console.log(defaultMaxConnections() >= 1); // true
 * ```
 */
export function defaultMaxConnections(): number {
  const limit = openFileLimit();
  if (limit === undefined) return DEFAULT_MAX_HTTP_CONNECTIONS;
  return Math.max(
    1,
    Math.min(DEFAULT_MAX_HTTP_CONNECTIONS, Math.floor(limit / 2)),
  );
}

/** The soft limit on open descriptors, from `/proc/self/limits`; undefined if unknown or unlimited. */
function openFileLimit(): number | undefined {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const soft = /^Max open files\s+(\d+)/m.exec(text)?.[1];
    return soft === undefined ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

/** Tells a refused peer why, without reading its request, and closes. */
async function refuse(conn: Deno.Conn, message: string): Promise<void> {
  const encoder = new TextEncoder();
  const body = encoder.encode(JSON.stringify({ error: message }));
  const head = encoder.encode(
    `HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: ${body.byteLength}\r\n` +
      `retry-after: 1\r\nconnection: close\r\n\r\n`,
  );
  try {
    // A fresh socket's send buffer takes these few hundred bytes at once.
    let bytes = new Uint8Array([...head, ...body]);
    while (bytes.byteLength > 0) {
      bytes = bytes.subarray(await conn.write(bytes));
    }
  } catch { /* the peer is gone already */ }
  closeQuietly(conn);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

function closedSocket(socket: WebSocket): Promise<void> {
  if (socket.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) =>
    socket.addEventListener("close", () => resolve(), { once: true })
  );
}

/** The path of a request URL for a log line, without its query (which may hold a token). */
function safePath(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return "?";
  }
}
