/**
 * The listening side of a TLS link, run by `node:tls` over a plain TCP
 * connection that Deno accepted: {@linkcode ServerTlsConn}.
 *
 * `Deno.listenTls` has two gaps (Deno 2.9) that this closes:
 *
 * - An accepted `TlsConn` has no `setNoDelay()`, so the master's small
 *   frames wait for the peer's delayed ACK (~40 ms) whenever two go out
 *   back to back. Here the TCP connection is accepted plain, Nagle is
 *   turned off on it like on any other link, and TLS runs on top.
 * - Closing a `TlsConn` whose handshake has not finished does not close
 *   its socket: Deno holds it until the peer sends or hangs up, so a peer
 *   that connects and stays silent keeps a file descriptor however early
 *   the master gives up on it. Here the TCP connection stays ours: closing
 *   it releases the descriptor at once, handshake or not.
 *
 * Deno has no server-side `startTls`, hence `node:tls`: a `TLSSocket` with
 * `isServer` runs over the TCP connection's byte streams
 * (`Duplex.fromWeb`), and this class gives it back the `Deno.Conn` shape
 * every link is read and written through.
 *
 * The price is CPU per byte: Deno runs `node:tls` over a JavaScript stream
 * through JavaScript callbacks, about 8 ms per MB against about 1 ms for
 * `Deno.listenTls` (measured on loopback, either direction); a small frame
 * costs the same. Two other ways were weighed and left:
 *
 * - A `node:net` server under `node:tls` runs at Deno's native speed, but it
 *   binds asynchronously: `listen()` could no longer throw `AddrInUse` nor
 *   know its address synchronously, as `MasterNode` and its callers rely on.
 * - `setsockopt(2)` through FFI on the listening socket (Linux copies
 *   `TCP_NODELAY` to the sockets it accepts) fixes the stall only; freeing a
 *   silent peer's descriptor would take `shutdown(2)` on a descriptor found
 *   by its ports in `/proc`, which races with Deno closing it; and it
 *   needs `--allow-ffi`.
 *
 * @module
 */
import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";

/**
 * How long {@linkcode ServerTlsConn.close} waits for its TLS goodbye
 * (`close_notify`) to reach a peer that takes no bytes, before it drops the
 * connection all the same.
 */
const GOODBYE_TIMEOUT_MS = 1000;

/**
 * An accepted TCP connection that speaks TLS as the server once
 * {@linkcode ServerTlsConn.handshake} (or the first read or write) runs it.
 *
 * @example Securing an accepted connection
 * ```ts ignore
 * import { createSecureContext } from "node:tls";
 * import { ServerTlsConn } from "./server_tls_conn.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const tcp = await listener.accept();
 * tcp.setNoDelay(true);
 * using conn = new ServerTlsConn(tcp, createSecureContext({ cert, key }));
 * await conn.handshake();
 * await conn.write(new TextEncoder().encode("hello over TLS"));
 * ```
 */
export class ServerTlsConn implements Deno.TlsConn {
  readonly #tcp: Deno.TcpConn;
  readonly #context: SecureContext;
  #socket: TLSSocket | undefined;
  #handshake: Promise<Deno.TlsHandshakeInfo> | undefined;
  #secure = false;
  /** Node's reader of the decrypted bytes, and what is left of its last chunk. */
  #chunks: AsyncIterator<Uint8Array> | undefined;
  #rest: Uint8Array = new Uint8Array(0);
  /** Writes handed to TLS and not yet taken. */
  #writing = 0;
  #isClosed = false;
  /** Rejects at close: a read or write still pending ends then, as on a `Deno.Conn`. */
  readonly #closed = Promise.withResolvers<never>();
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array<ArrayBufferLike>> | undefined;

  /** Takes over `tcp`: closing this connection closes it. */
  constructor(tcp: Deno.TcpConn, context: SecureContext) {
    this.#tcp = tcp;
    this.#context = context;
    this.#closed.promise.catch(() => {}); // nothing pending is no error
  }

  get localAddr(): Deno.NetAddr {
    return this.#tcp.localAddr;
  }

  get remoteAddr(): Deno.NetAddr {
    return this.#tcp.remoteAddr;
  }

  /**
   * Runs the TLS handshake once; later calls share it. Rejects with the
   * TLS layer's reason (a peer without TLS, one that does not trust the
   * certificate), or when the connection closes first: closing is how a
   * caller gives up on a handshake.
   */
  handshake(): Promise<Deno.TlsHandshakeInfo> {
    this.#handshake ??= this.#startTls();
    return this.#handshake;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    if (this.#rest.length === 0) {
      await this.#secured();
      const chunks = this.#chunks as AsyncIterator<Uint8Array>;
      const next = await Promise.race([chunks.next(), this.#closed.promise]);
      if (next.done) return null;
      this.#rest = next.value;
    }
    const n = Math.min(buffer.length, this.#rest.length);
    buffer.set(this.#rest.subarray(0, n));
    this.#rest = this.#rest.subarray(n);
    return n;
  }

  /** Resolves once TLS has taken all of `data`: the caller may reuse it then. */
  async write(data: Uint8Array): Promise<number> {
    const socket = await this.#secured();
    this.#writing++;
    try {
      const taken = new Promise<void>((resolve, reject) =>
        socket.write(data, (error) => error ? reject(error) : resolve())
      );
      await Promise.race([taken, this.#closed.promise]);
    } finally {
      this.#writing--;
    }
    return data.length;
  }

  /**
   * Closes the connection: a pending read or write rejects at once. Before
   * the handshake, or with bytes still waiting to go out, the TCP
   * connection closes at once too, freeing its descriptor. Otherwise the
   * peer is first sent TLS's goodbye (`close_notify`), so that it reads a
   * clean end of the stream rather than an error (within
   * {@linkcode GOODBYE_TIMEOUT_MS}).
   */
  close(): void {
    if (this.#isClosed) throw new Deno.errors.BadResource("already closed");
    this.#isClosed = true;
    this.#closed.reject(new Deno.errors.Interrupted("the connection closed"));
    const socket = this.#socket;
    if (socket === undefined || !this.#secure || this.#writing > 0) {
      return this.#release();
    }
    const timer = setTimeout(() => this.#release(), GOODBYE_TIMEOUT_MS);
    Deno.unrefTimer(timer);
    socket.end(() => {
      clearTimeout(timer);
      this.#release();
    });
  }

  async closeWrite(): Promise<void> {
    const socket = await this.#secured();
    await new Promise<void>((resolve) => socket.end(resolve));
  }

  ref(): void {
    this.#tcp.ref();
  }

  unref(): void {
    this.#tcp.unref();
  }

  /** The decrypted bytes as a stream, built on {@linkcode read}. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    this.#readable ??= new ReadableStream({
      pull: async (controller) => {
        const buffer = new Uint8Array(16 * 1024);
        const n = await this.read(buffer);
        if (n === null) controller.close();
        else controller.enqueue(buffer.subarray(0, n));
      },
      cancel: () => this.#closeQuietly(),
    });
    return this.#readable;
  }

  /** Bytes to encrypt and send, as a stream, built on {@linkcode write}. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    this.#writable ??= new WritableStream({
      write: async (chunk) => {
        await this.write(chunk);
      },
      close: () => this.closeWrite(),
      abort: () => this.#closeQuietly(),
    });
    return this.#writable;
  }

  [Symbol.dispose](): void {
    this.#closeQuietly();
  }

  async #secured(): Promise<TLSSocket> {
    if (this.#isClosed) throw new Deno.errors.BadResource("closed");
    await this.handshake();
    return this.#socket as TLSSocket;
  }

  #startTls(): Promise<Deno.TlsHandshakeInfo> {
    if (this.#isClosed) {
      return Promise.reject(new Deno.errors.BadResource("closed"));
    }
    const tcp = Duplex.fromWeb({
      readable: this.#tcp.readable,
      writable: this.#tcp.writable,
    });
    const socket = new TLSSocket(tcp, {
      isServer: true,
      secureContext: this.#context,
    });
    // Errors reach the caller through handshake, read and write; an
    // 'error' event with no listener would throw from the event loop.
    tcp.on("error", () => {});
    socket.on("error", () => {});
    this.#socket = socket;
    this.#chunks = socket[Symbol.asyncIterator]();
    return new Promise((resolve, reject) => {
      const settle = (error?: Error) => {
        socket.off("secure", onSecure);
        socket.off("error", settle);
        socket.off("close", onClose);
        if (error !== undefined) return reject(error);
        this.#secure = true;
        resolve({ alpnProtocol: null });
      };
      const onSecure = () => settle();
      const onClose = () =>
        settle(new Error("the connection closed before the TLS handshake"));
      socket.once("secure", onSecure);
      socket.once("error", settle);
      socket.once("close", onClose);
    });
  }

  /** Drops the TLS socket and closes the TCP connection, freeing its descriptor. */
  #release(): void {
    this.#socket?.destroy();
    try {
      this.#tcp.close();
    } catch {
      // Closed already: the TLS socket's byte streams close it as they end.
    }
  }

  #closeQuietly(): void {
    try {
      this.close();
    } catch {
      // Already closed.
    }
  }
}
