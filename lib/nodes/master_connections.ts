/**
 * The master's door ({@linkcode MasterConnections}): it listens, accepts,
 * secures each connection with TLS, applies the peer guard (connections per
 * address, the authentication back-off), runs the protocol handshake and
 * remembers who each peer proved to be, so that a credential revoked later
 * ends its links. A client's link is served here, its messages handed to
 * the node and its silence watched by an idle timer; a secondary's link goes
 * to the node's registry as soon as it has authenticated.
 *
 * What the node does with its peers, it says through
 * {@linkcode MasterServices}; this module knows nothing of jobs, workers or
 * placement.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Connection } from "../protocol/connection.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { serverHandshake } from "../protocol/handshake.ts";
import type { ClusterStatus, MessageOf, Role } from "../protocol/messages.ts";
import {
  listen,
  secureAccepted,
  type TlsListenOptions,
} from "../protocol/transport.ts";
import type { Credentials } from "../security/credentials.ts";
import { abortableDelay } from "./_timing.ts";
import { ClientSession } from "./client_session.ts";
import { IdleTimer } from "./idle_timer.ts";
import { PeerGuard, type PeerGuardOptions } from "./peer_guard.ts";

const log = getLogger(["kiln", "master"]);

/** Largest frame accepted before the handshake completes. */
const HANDSHAKE_MAX_FRAME_BYTES = 16 * 1024;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/** What the master does for the peers {@linkcode MasterConnections} let in. */
export interface MasterServices {
  /** A client's submission: answered with `accepted`, then run. */
  submit(session: ClientSession, message: MessageOf<"submit">): Promise<void>;
  /** A client cancels one of its jobs. */
  cancel(session: ClientSession, jobId: string, reason: string): void;
  /**
   * A client's connection ended while this job of it was pending: the
   * master cancels it, or (on NATS, where the client may attach again
   * through any master) lets it run on.
   */
  left(session: ClientSession, jobId: string): void;
  /** More stdin from a client for one of its interactive jobs. */
  input(
    session: ClientSession,
    jobId: string,
    data: string,
    eof: boolean,
  ): void;
  /**
   * A client asks for the rest of a job it submitted on a connection that
   * was lost (`attach`, protocol version 4): answered with `accepted` and
   * then the job's remaining events and result, as a submit is, or with
   * `unknown_job`. Awaited before the client's next message is read, so a
   * `cancel` or `stdin` that follows finds the job attached.
   */
  attach(
    session: ClientSession,
    message: MessageOf<"attach">,
  ): void | Promise<void>;
  /** The cluster as `get_status` reports it. */
  status(): ClusterStatus;
  /**
   * A secondary's link, authenticated: its registration, then its messages
   * until it is lost. A throw closes the link with the error. `version` is
   * the protocol version the handshake agreed on.
   */
  serveSecondary(
    connection: Connection,
    identity: string | undefined,
    version: number,
  ): Promise<void>;
}

/** Options of {@linkcode MasterConnections}, resolved by the node. */
export interface MasterConnectionsOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Serve TLS with this certificate; plain TCP when absent. */
  tls: TlsListenOptions | undefined;
  /** The node's name, told to peers in the handshake. */
  name: string;
  /** The credentials in use now: the node may replace them at any time. */
  credentials: () => Credentials;
  /** Largest frame accepted from an authenticated peer, in bytes. */
  maxFrameBytes: number;
  /** Time a new connection has to complete the TLS and protocol handshakes. */
  handshakeTimeoutMs: number;
  /** A client silent this long with no job pending is closed; 0 never. */
  idleTimeoutMs: number;
  /** The high-water mark of each peer's send buffer, in bytes. */
  highWaterBytes: number;
  /** The most bytes waiting to be sent to one peer. */
  maxBufferedBytes: number;
  /** Connections per address and the authentication back-off. */
  guard: PeerGuardOptions;
  /** What the node does with each peer. */
  services: MasterServices;
}

/**
 * Every connection of a master, from accept to close. It starts listening
 * when constructed (throwing synchronously, as `Deno.listen` does) and
 * accepts until {@linkcode MasterConnections.stopAccepting}.
 *
 * @example The node's wiring
 * ```ts ignore
 * const links = new MasterConnections({ ...resolvedOptions, services });
 * console.log(links.addr.port);
 * links.stopAccepting();
 * await links.closeAll();
 * ```
 */
export class MasterConnections {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr & { transport: "tcp" };

  readonly #name: string;
  readonly #credentials: () => Credentials;
  readonly #maxFrameBytes: number;
  readonly #handshakeTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #highWaterBytes: number;
  readonly #maxBufferedBytes: number;
  readonly #services: MasterServices;
  /** Connections per address and the authentication back-off, checked at accept. */
  readonly #peers: PeerGuard;
  readonly #listener: Deno.Listener;
  readonly #connections = new Set<Connection>();
  /**
   * Who each authenticated connection proved to be, and with which token,
   * so that a reload that revokes or changes a credential ends its links.
   */
  readonly #peersAuthenticated = new Map<
    Connection,
    { role: Role; identity: string | undefined; token: string }
  >();
  /** Aborted at shutdown: ends waits, such as the accept loop's back-off. */
  readonly #stopping = new AbortController();
  #closing = false;

  constructor(options: MasterConnectionsOptions) {
    const { hostname, port, tls } = options;
    this.#name = options.name;
    this.#credentials = options.credentials;
    this.#maxFrameBytes = options.maxFrameBytes;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
    this.#idleTimeoutMs = options.idleTimeoutMs;
    this.#highWaterBytes = options.highWaterBytes;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.#services = options.services;
    this.#peers = new PeerGuard(options.guard);
    this.#listener = listen({ hostname, port, tls });
    this.addr = this.#listener.addr as Deno.NetAddr & { transport: "tcp" };
    this.#acceptLoop();
  }

  /** Bytes waiting to be sent to peers, over all connections: bounded by `maxBufferedBytes` each. */
  get bufferedBytes(): number {
    let bytes = 0;
    for (const connection of this.#connections) {
      bytes += connection.bufferedBytes;
    }
    return bytes;
  }

  /**
   * Throws {@linkcode ProtocolError} `auth_backoff`, saying when to retry,
   * while `hostname` serves one.
   */
  checkAuthBackoff(hostname: string): void {
    this.#peers.checkBackoff(hostname);
  }

  /** A failed authentication counts towards its address's back-off; one that starts is logged. */
  countAuthFailure(host: string, error: unknown): void {
    if (
      !(error instanceof ProtocolError) || error.code !== "auth_failed" ||
      error.peerCode !== undefined // the peer's complaint, not our verdict
    ) return;
    const backoff = this.#peers.authFailed(host);
    if (backoff === undefined) return;
    log.warn(
      "refusing connections from {peer} for {seconds} s after {failures} failed authentications",
      {
        peer: backoff.peer,
        seconds: Math.ceil(backoff.durationMs / 1000),
        failures: backoff.failures,
      },
    );
  }

  /**
   * Ends the links of every peer whose credential `credentials` removed, or
   * whose token or role it changed, with the reason (a client's jobs are
   * cancelled as on any disconnect).
   */
  revokeChanged(credentials: Credentials): void {
    for (const [connection, peer] of this.#peersAuthenticated) {
      const now = credentials.authenticate(peer.role, peer.identity);
      if (now.ok && now.token === peer.token) continue;
      this.#peersAuthenticated.delete(connection);
      log.warn("closing the link of {who}: its credential was revoked", {
        who: peer.identity ?? connection.remoteAddr,
      });
      connection.close(
        new ProtocolError(
          "auth_failed",
          `credential "${peer.identity}" was revoked or changed`,
        ),
      );
    }
  }

  /** Stops listening; connections already accepted go on. */
  stopAccepting(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#stopping.abort();
    this.#listener.close();
  }

  /** Closes every connection still open. */
  async closeAll(): Promise<void> {
    await Promise.all(
      [...this.#connections].map((connection) => connection.close()),
    );
  }

  /**
   * Accepts connections until shutdown. A failed accept (out of file
   * descriptors, say) is logged and retried after a growing pause, as
   * `Deno.serve` does: the node must not go deaf while it looks alive.
   */
  async #acceptLoop(): Promise<void> {
    let backoffMs = ACCEPT_BACKOFF_MIN_MS;
    while (!this.#closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing) return;
        log.error(
          "cannot accept a connection, retrying in {backoffMs} ms: {error}",
          { backoffMs, error },
        );
        await abortableDelay(backoffMs, this.#stopping.signal);
        backoffMs = Math.min(backoffMs * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      backoffMs = ACCEPT_BACKOFF_MIN_MS;
      this.#serve(conn);
    }
  }

  /** One connection, from handshake to close. Never throws. */
  async #serve(conn: Deno.Conn): Promise<void> {
    // Small frames until the peer has proven it knows the token, so that a
    // stranger cannot make the master buffer megabytes per connection.
    const connection = new Connection(conn, {
      maxFrameBytes: Math.min(HANDSHAKE_MAX_FRAME_BYTES, this.#maxFrameBytes),
      highWaterBytes: this.#highWaterBytes,
      maxBufferedBytes: this.#maxBufferedBytes,
    });
    this.#connections.add(connection);
    const host = (conn.remoteAddr as Deno.NetAddr).hostname;
    let admitted: Disposable | undefined;
    try {
      // Before any byte is read: an address over its connection cap, or
      // serving an authentication back-off, is told why and let go.
      admitted = this.#peers.admit(host);
      // TLS is up before the first protocol byte. A peer that fails it (a
      // client without TLS, say) is only logged: it could not read an
      // error message from us anyway.
      try {
        await secureAccepted(conn, this.#handshakeTimeoutMs);
      } catch (error) {
        if (this.#closing) return;
        log.warn("TLS handshake failed from {addr}: {message}", {
          addr: connection.remoteAddr,
          message: (error as Error).message,
        });
        return;
      }
      const peer = await serverHandshake(connection, {
        credentials: this.#credentials(),
        node: this.#name,
        roles: ["client", "secondary"],
        timeoutMs: this.#handshakeTimeoutMs,
      });
      connection.maxFrameBytes = this.#maxFrameBytes;
      const proven = this.#credentials().authenticate(
        peer.role,
        peer.identity,
      );
      if (proven.ok) {
        this.#peersAuthenticated.set(connection, {
          role: peer.role,
          identity: peer.identity,
          token: proven.token,
        });
      }
      if (peer.role === "secondary") {
        await this.#services.serveSecondary(
          connection,
          peer.identity,
          peer.version,
        );
      } else await this.#serveClient(connection, peer.identity);
    } catch (error) {
      // The slot is free before the peer hears why: it may dial again at once.
      admitted?.[Symbol.dispose]();
      this.countAuthFailure(host, error);
      const message = error instanceof Error ? error.message : String(error);
      log.warn("closing connection from {addr}: {message}", {
        addr: connection.remoteAddr,
        message,
      });
      await connection.close(
        error instanceof ProtocolError ? error : undefined,
      );
    } finally {
      admitted?.[Symbol.dispose]();
      await connection.close();
      this.#connections.delete(connection);
      this.#peersAuthenticated.delete(connection);
    }
  }

  /** A client's link: its messages go to the node until it leaves or idles too long. */
  async #serveClient(
    connection: Connection,
    name: string | undefined,
  ): Promise<void> {
    const host = connection.remoteAddr.replace(/:\d+$/, "");
    // Fairness is per client: its credential, else its declared name, else
    // its host. Its quota is read at each submission, so a reload applies.
    const session = new ClientSession(
      connection,
      name ?? connection.remoteAddr,
      name ?? host,
      () =>
        name === undefined ? undefined : this.#credentials().get(name)?.quota,
    );
    log.debug("client {client} connected from {addr}", {
      client: session.name,
      addr: connection.remoteAddr,
    });
    // Silence with no job pending holds a socket and its buffers for nothing.
    // (Disposed by hand: `using` keeps a disposal stack per connection.)
    const idle = new IdleTimer(this.#idleTimeoutMs, () => {
      log.info("closing idle client {client} from {addr}", {
        client: session.name,
        addr: connection.remoteAddr,
      });
      void connection.close(
        new ProtocolError(
          "idle_timeout",
          `closing an idle connection: no message and no job pending for ${this.#idleTimeoutMs} ms`,
        ),
      );
    }, { isBusy: () => session.jobs.size > 0 });
    session.onResult = () => idle.touch();
    try {
      for await (const message of connection) {
        idle.touch();
        if (message.type === "submit") {
          await this.#services.submit(session, message);
        } else if (message.type === "cancel") {
          this.#services.cancel(
            session,
            message.jobId,
            "cancelled by the client",
          );
        } else if (message.type === "stdin") {
          const { jobId, data, eof = false } = message;
          this.#services.input(session, jobId, data, eof);
        } else if (message.type === "attach") {
          await this.#services.attach(session, message);
        } else if (message.type === "get_status") {
          session.send({ type: "cluster_status", ...this.#services.status() });
        } else {throw new ProtocolError(
            "unexpected_message",
            `a client may not send "${message.type}" messages`,
          );}
      }
    } finally {
      idle[Symbol.dispose]();
      for (const jobId of session.jobs) this.#services.left(session, jobId);
    }
  }
}
