/**
 * Opening the byte stream every link runs on: plain TCP, or TLS. The
 * listening side gets a listener from {@linkcode listen} and secures each
 * accepted connection with {@linkcode secureAccepted}; the dialing side gets
 * a ready stream from {@linkcode dial}.
 *
 * Both sides complete the TLS handshake explicitly, before the first
 * protocol message, under the handshake timeout. Deno would otherwise run
 * it lazily inside the first read or write, and a certificate the client
 * does not trust, or a peer that does not speak TLS at all, would surface as
 * a puzzling protocol error.
 *
 * @module
 */
import { createSecureContext } from "node:tls";
import { timerDelay } from "../_timer.ts";
import { formatHostPort, type HostPort } from "../address.ts";
import { ConnectionError, ProtocolError } from "./errors.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS } from "./handshake.ts";
import { ServerTlsConn } from "./server_tls_conn.ts";

/** The master's certificate and key, as PEM text (not file paths). */
export interface TlsListenOptions {
  /** The certificate chain, PEM: the master's own certificate first. */
  cert: string;
  /** The certificate's private key, PEM. */
  key: string;
}

/** How a client or a secondary checks the master's certificate. */
export interface TlsDialOptions {
  /**
   * CA certificates (PEM) trusted besides Deno's default roots, such as the
   * development CA `deno task gen-certs` makes.
   *
   * @default {undefined} (the default roots only)
   */
  caCerts?: string[] | undefined;
}

/** Options of {@linkcode listen}. */
export interface ListenOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Serve TLS with this certificate; plain TCP when absent. */
  tls?: TlsListenOptions | undefined;
}

/** Options of {@linkcode dial}. */
export interface DialOptions {
  /**
   * Speak TLS: `true` trusts the default roots only; an object may add CAs.
   * Plain TCP when absent.
   */
  tls?: true | TlsDialOptions | undefined;
  /** Aborting it gives up the dial, and closes a half-open stream. */
  signal?: AbortSignal | undefined;
  /**
   * Time the TLS handshake may take, in milliseconds.
   *
   * @default {DEFAULT_HANDSHAKE_TIMEOUT_MS}
   */
  timeoutMs?: number | undefined;
}

/**
 * Listens for plain TCP, or TLS when `tls` is given. Throws synchronously,
 * as `Deno.listen` does: `Deno.errors.AddrInUse`, or `Deno.errors.InvalidData`
 * for a certificate or key that is not PEM (an `Error` naming `KeyMismatch`
 * for a key of another certificate).
 *
 * Every connection it accepts goes through {@linkcode noDelay} before the
 * caller sees it; with `tls`, it comes out as a TLS connection whose
 * handshake {@linkcode secureAccepted} runs.
 *
 * @example A plain listener on a free port
 * ```ts
 * import { listen } from "./transport.ts";
 *
 * using listener = listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(listener.addr);
 * ```
 */
export function listen(options: ListenOptions): Deno.Listener {
  const { hostname, port, tls } = options;
  if (tls === undefined) {
    return new AcceptingListener(Deno.listen({ hostname, port }), noDelayed);
  }
  checkCertificatePair(tls);
  const context = createSecureContext({ cert: tls.cert, key: tls.key });
  return new AcceptingListener(
    Deno.listen({ hostname, port }),
    (conn) => new ServerTlsConn(noDelayed(conn), context),
  );
}

/**
 * Throws as `Deno.listenTls` would for a pair it cannot serve: `node:tls`
 * checks nothing until a peer connects, and a master with a broken
 * certificate must fail at start, not at every handshake. The same TLS
 * library (rustls) reads the pair here, and no socket is opened.
 */
function checkCertificatePair(tls: TlsListenOptions): void {
  Deno.createHttpClient({ cert: tls.cert, key: tls.key }).close();
}

/**
 * Turns Nagle's algorithm off (`TCP_NODELAY`) on a TCP connection, so that
 * each frame leaves at once. Deno leaves Nagle on: of two small frames
 * written back to back (`output` then `result`), the second waits for the
 * ACK of the first, which the peer delays by ~40 ms. Every link kiln dials
 * or accepts goes through here, TLS or not (TLS runs on top of a TCP
 * connection that already has it); a connection without the option is
 * left as it is.
 *
 * @example Before the first write
 * ```ts
 * import { noDelay } from "./transport.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * noDelay(conn);
 * ```
 */
export function noDelay(conn: Deno.Conn): void {
  const tcp = conn as Partial<Deno.TcpConn>;
  if (typeof tcp.setNoDelay === "function") tcp.setNoDelay(true);
}

/** {@linkcode noDelay} on a connection just accepted, which its peer may have left already. */
function noDelayed(conn: Deno.TcpConn): Deno.TcpConn {
  try {
    noDelay(conn);
  } catch {
    // The peer already hung up: the caller's first read will say so.
  }
  return conn;
}

/** A TCP listener whose connections come out of accept through `prepare`. */
class AcceptingListener implements Deno.Listener {
  readonly #inner: Deno.TcpListener;
  readonly #prepare: (conn: Deno.TcpConn) => Deno.Conn;

  constructor(
    inner: Deno.TcpListener,
    prepare: (conn: Deno.TcpConn) => Deno.Conn,
  ) {
    this.#inner = inner;
    this.#prepare = prepare;
  }

  get addr(): Deno.Addr {
    return this.#inner.addr;
  }

  async accept(): Promise<Deno.Conn> {
    return this.#prepare(await this.#inner.accept());
  }

  close(): void {
    this.#inner.close();
  }

  ref(): void {
    this.#inner.ref();
  }

  unref(): void {
    this.#inner.unref();
  }

  async *[Symbol.asyncIterator](): AsyncIterableIterator<Deno.Conn> {
    while (true) {
      try {
        yield await this.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return;
        throw error;
      }
    }
  }

  [Symbol.dispose](): void {
    try {
      this.#inner.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * Completes the TLS handshake of a connection a TLS listener accepted; does
 * nothing for a plain one. On failure (the peer does not speak TLS, does not
 * trust the certificate, or stays silent past `timeoutMs`) it closes `conn`
 * and rejects with an `Error` whose message says why, for the log.
 *
 * The listening side runs TLS through `node:tls` on a TCP connection of
 * its own (see lib/protocol/server_tls_conn.ts): Nagle is off on it, and
 * closing it, at the timeout say, frees its descriptor at once even if the
 * peer never sent a byte; `Deno.listenTls` offers neither.
 *
 * @example Securing what a listener accepts
 * ```ts ignore
 * import { listen, secureAccepted } from "./transport.ts";
 *
 * using listener = listen({ hostname: "127.0.0.1", port: 0, tls: { cert, key } });
 * const conn = await listener.accept();
 * await secureAccepted(conn, 10_000); // TLS is up: the protocol may start
 * ```
 */
export async function secureAccepted(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<void> {
  if (!isTls(conn)) return;
  try {
    await handshakeWithin(conn, timeoutMs);
  } catch (error) {
    closeQuietly(conn);
    throw new Error(describeServerFailure(error, timeoutMs), { cause: error });
  }
}

/**
 * Dials the master over TCP and, with `tls`, completes a TLS handshake that
 * checks the master's certificate against `address.hostname`. Rejects with a
 * {@linkcode ConnectionError} saying why: refused, not a TLS master, a
 * certificate not trusted, or no handshake within `timeoutMs`.
 *
 * TLS is started on an open TCP stream (`Deno.startTls`) rather than with
 * `Deno.connectTls`, which takes no abort signal. Nagle is turned off on
 * that TCP stream first. A handshake given up on a master that never
 * answers leaves Deno holding the socket until that master hangs up (the
 * listening side has no such gap: see {@linkcode secureAccepted}).
 *
 * @example Dialing a TLS master with a development CA
 * ```ts ignore
 * import { dial } from "./transport.ts";
 *
 * const ca = await Deno.readTextFile("certs/ca.pem");
 * const conn = await dial({ hostname: "localhost", port: 7700 }, { tls: { caCerts: [ca] } });
 * ```
 */
export async function dial(
  address: HostPort,
  options: DialOptions = {},
): Promise<Deno.Conn> {
  const {
    tls,
    signal,
    timeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
  } = options;
  const where = formatHostPort(address);
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      ...signal === undefined ? {} : { signal },
    });
  } catch (cause) {
    const reason = cause instanceof Deno.errors.ConnectionRefused
      ? "connection refused (is the master running?)"
      : messageOf(cause);
    throw new ConnectionError(where, reason, { cause });
  }
  noDelay(tcp);
  if (tls === undefined) return tcp;

  const caCerts = tls === true ? undefined : tls.caCerts;
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.startTls(tcp, {
      hostname: address.hostname,
      ...caCerts === undefined ? {} : { caCerts },
    });
  } catch (cause) {
    // Bad CA text, say: fails before a byte is sent.
    closeQuietly(tcp);
    throw new ConnectionError(where, `cannot start TLS: ${messageOf(cause)}`, {
      cause,
    });
  }
  try {
    await handshakeWithin(conn, timeoutMs, signal);
    return conn;
  } catch (cause) {
    closeQuietly(conn);
    throw new ConnectionError(
      where,
      describeClientFailure(cause, timeoutMs, address.hostname),
      { cause },
    );
  }
}

/**
 * Explains a failed protocol handshake of a plain-TCP dialer. A TLS master
 * answers plain bytes with a TLS alert (which reads as a frame far too
 * large) and hangs up; the peer's bare hang-up says nothing, so this says
 * what probably happened. Other errors, and the master's own words
 * (`master said: ...`), are returned as they are.
 *
 * @example Wrapping a client handshake
 * ```ts ignore
 * try {
 *   await clientHandshake(connection, { role: "client", token });
 * } catch (error) {
 *   throw tls === undefined ? hintTls(error) : error;
 * }
 * ```
 */
export function hintTls(error: unknown): unknown {
  if (
    !(error instanceof ProtocolError) || error.peerCode !== undefined ||
    !HANG_UP_CODES.has(error.code)
  ) return error;
  return new ProtocolError(
    "closed",
    "the master closed the connection during the handshake; it may require TLS " +
      "(--tls, or --ca FILE for a private CA; the tls option in code)",
    { cause: error },
  );
}

/** What a plain dialer sees when its peer hangs up or answers in TLS. */
const HANG_UP_CODES = new Set<string>([
  "closed",
  "truncated",
  "malformed",
  "frame_too_large",
]);

function isTls(conn: Deno.Conn): conn is Deno.TlsConn {
  return typeof (conn as Partial<Deno.TlsConn>).handshake === "function";
}

/** Thrown inside this module when a handshake ran out of time. */
class HandshakeTimeout extends Error {}

/**
 * Runs the TLS handshake; closing `conn` when it takes longer than
 * `timeoutMs` or `signal` aborts is what cancels it.
 */
async function handshakeWithin(
  conn: Deno.TlsConn,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, timerDelay(timeoutMs));
  const onAbort = () => closeQuietly(conn);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal?.aborted) throw signal.reason;
    await conn.handshake();
  } catch (error) {
    if (timedOut) throw new HandshakeTimeout();
    throw error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** The dialer's view: what went wrong, and the likely fix. */
function describeClientFailure(
  error: unknown,
  timeoutMs: number,
  hostname: string,
): string {
  if (error instanceof HandshakeTimeout) {
    return `no TLS handshake from the master within ${timeoutMs} ms (is it a TLS master?)`;
  }
  const message = messageOf(error);
  if (/invalid peer certificate/i.test(message)) {
    const hint = /UnknownIssuer/i.test(message)
      ? " (is it signed by the CA given with --ca / caCerts?)"
      : /NotValidForName/i.test(message)
      ? ` (the certificate does not name "${hostname}"; dial a name it has, or remake it with gen-certs --host)`
      : /Expired/i.test(message)
      ? " (the certificate has expired)"
      : "";
    return `the master's TLS certificate is not trusted: ${message}${hint}`;
  }
  return `the master did not answer with TLS (is it a TLS master?): ${message}`;
}

/** The master's view, for its log line `TLS handshake failed from ADDR: ...`. */
function describeServerFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof HandshakeTimeout) {
    return `no TLS handshake within ${timeoutMs} ms`;
  }
  const message = messageOf(error);
  if (/corrupt message|InvalidContentType/i.test(message)) {
    return `${message} (a client without TLS?)`;
  }
  if (/UnknownCA|BadCertificate|CertificateUnknown/i.test(message)) {
    return `${message} (the peer does not trust this master's certificate)`;
  }
  return message;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed: by the timeout, an abort, or the peer.
  }
}
