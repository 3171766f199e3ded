/**
 * {@linkcode Connection}: typed, validated messages over one socket, with
 * frame limits, timeouts and a close that tells the peer why.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";
import { z } from "zod";
import { formatHostPort } from "../address.ts";
import { isProtocolErrorCode, ProtocolError } from "./errors.ts";
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from "./frame.ts";
import { type Message, MessageSchema } from "./messages.ts";

/** Options of {@linkcode Connection}. */
export interface ConnectionOptions {
  /**
   * The largest frame body sent or accepted, in bytes.
   *
   * @default {DEFAULT_MAX_FRAME_BYTES}
   */
  maxFrameBytes?: number;
  /**
   * How long `receive()` (without its own timeout) waits before the peer is
   * deemed gone: it then fails with `timeout` and the connection is closed,
   * telling the peer. `undefined` waits forever.
   *
   * @default {undefined}
   */
  idleTimeoutMs?: number;
  /**
   * How long `close(reason)` tries to deliver its `error` message, so that a
   * peer that does not read cannot hold the close up.
   *
   * @default {1000}
   */
  closeTimeoutMs?: number;
  /**
   * How errors name the other end (`master said: ...`). Handshakes set
   * {@linkcode Connection.peerName} from what they learn.
   *
   * @default {"peer"}
   */
  peerName?: string;
}

/** Options of {@linkcode Connection.receive}. */
export interface ReceiveOptions {
  /**
   * Fail with `timeout` when no message came within this many milliseconds.
   * The connection stays open: the caller decides. Replaces the idle timeout
   * for this call.
   */
  timeoutMs?: number;
}

/** Why a connection is being closed, as told to the peer in an `error` message. */
export interface CloseReason {
  /** A {@linkcode ProtocolErrorCode} or an application code; at most 64 characters go out. */
  code: string;
  /** A sentence for the peer's logs; at most 4096 characters go out. */
  message: string;
}

/** Bytes read from the socket at a time, into one reused buffer. */
const READ_BUFFER_BYTES = 64 * 1024;
const EMPTY = new Uint8Array(0);

interface Waiter {
  resolve(message: Message): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * One peer link: `send` and `receive` protocol messages over a `Deno.Conn`
 * (TCP, TLS or Unix).
 *
 * - Inbound frames are decoded only while someone waits in `receive()`, so a
 *   fast peer is held back by TCP instead of filling our memory.
 * - Every inbound message is validated; a bad one fails that `receive()` with
 *   `invalid_message` and leaves the connection up (the caller decides). A
 *   broken byte stream (`malformed`, `frame_too_large`, `truncated`) closes
 *   the connection, telling the peer why.
 * - The peer's `error` message fails `receive()` with a {@linkcode ProtocolError}
 *   carrying its code (`peerCode`) and message, and closes the connection.
 * - No method throws synchronously, `close()` never rejects, and nothing is
 *   left as an unhandled rejection.
 *
 * @example A message each way
 * ```ts
 * import assert from "node:assert/strict";
 * import { Connection } from "./connection.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [accepted, dialed] = await Promise.all([
 *   listener.accept(),
 *   Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
 * ]);
 * await using server = new Connection(accepted);
 * await using client = new Connection(dialed, { peerName: "master" });
 *
 * await client.send({ type: "cancel", jobId: "j1" });
 * const message = await server.receive({ timeoutMs: 1000 });
 * assert.deepEqual(message, { type: "cancel", jobId: "j1" });
 * ```
 */
export class Connection implements AsyncDisposable {
  /** How errors name the other end, as in `master said: ...`. */
  peerName: string;
  /**
   * The largest frame sent or accepted from now on. A server lowers it for
   * the handshake, so an unauthenticated peer cannot make it buffer much.
   */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  set maxFrameBytes(value: number) {
    this.#decoder.maxFrameBytes = value;
    this.#maxFrameBytes = value;
  }

  /** Resolves (never rejects) once the connection is closed, by either side. */
  readonly closed: Promise<void>;

  #conn: Deno.Conn;
  #remoteAddr: string;
  #maxFrameBytes: number;
  #idleTimeoutMs: number | undefined;
  #closeTimeoutMs: number;
  #decoder: FrameDecoder;
  #buffer = new Uint8Array(READ_BUFFER_BYTES);
  /** Frames decoded from the last read and not yet handed out. */
  #frames: unknown[] = [];
  #frameIndex = 0;
  #waiters: Waiter[] = [];
  #pumping = false;
  #pumpDone: Promise<void> = Promise.resolve();
  /** Why no more messages will come; set once. */
  #ended: ProtocolError | undefined;
  /** Whether `#ended` is a clean end (peer's EOF or our close), which ends iteration quietly. */
  #endedCleanly = false;
  /** The write chain: frames go out whole and in order. Never rejects. */
  #writing: Promise<void> = Promise.resolve();
  #closing: Promise<void> | undefined;
  #resolveClosed: () => void;

  /** Wraps an open socket; the connection owns it from now on. */
  constructor(conn: Deno.Conn, options: ConnectionOptions = {}) {
    const {
      maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
      idleTimeoutMs,
      closeTimeoutMs = 1000,
      peerName = "peer",
    } = options;
    if (idleTimeoutMs !== undefined) {
      checkTimeout("idleTimeoutMs", idleTimeoutMs);
    }
    checkTimeout("closeTimeoutMs", closeTimeoutMs);
    this.#conn = conn;
    this.#remoteAddr = formatAddr(conn.remoteAddr);
    this.#decoder = new FrameDecoder({ maxFrameBytes });
    this.#maxFrameBytes = maxFrameBytes;
    this.#idleTimeoutMs = idleTimeoutMs;
    this.#closeTimeoutMs = closeTimeoutMs;
    this.peerName = peerName;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.closed = promise;
    this.#resolveClosed = resolve;
  }

  /** The peer's address, as `host:port` (`[::1]:port` for IPv6, the path for Unix sockets). */
  get remoteAddr(): string {
    return this.#remoteAddr;
  }

  /**
   * Sends one message. Frames never interleave, whoever calls. Rejects with
   * `closed` once the connection is closing, and with `frame_too_large` when
   * the message exceeds the frame cap.
   */
  send(message: Message): Promise<void> {
    if (this.#closing !== undefined) {
      return Promise.reject(
        new ProtocolError("closed", "cannot send: the connection is closed"),
      );
    }
    let frame: Uint8Array;
    try {
      frame = encodeFrame(message, this.#maxFrameBytes);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#enqueueWrite(frame);
  }

  /**
   * The next valid message. Rejects with a {@linkcode ProtocolError}:
   * `closed` (the peer hung up cleanly, or we closed), `truncated`,
   * `malformed` or `frame_too_large` (the stream is broken; the connection
   * closes), `invalid_message` (the connection stays up), `timeout`, or the
   * peer's own code when it sent an `error` message.
   *
   * A number is a shorthand for `{ timeoutMs }`. Concurrent calls are served
   * in call order.
   */
  receive(options?: number | ReceiveOptions): Promise<Message> {
    const explicit = typeof options === "number" ? options : options?.timeoutMs;
    const timeoutMs = explicit ?? this.#idleTimeoutMs;
    return new Promise<Message>((resolve, reject) => {
      if (timeoutMs !== undefined) checkTimeout("timeoutMs", timeoutMs);
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(
          () => this.#timeOut(waiter, timeoutMs, explicit !== undefined),
          timerDelay(timeoutMs),
        );
      }
      this.#waiters.push(waiter);
      this.#pump();
    });
  }

  /** Yields messages until the connection ends cleanly; throws on any other end. */
  async *messages(): AsyncGenerator<Message, void, undefined> {
    while (true) {
      let message: Message;
      try {
        message = await this.receive();
      } catch (error) {
        if (this.#endedCleanly && error === this.#ended) return;
        throw error;
      }
      yield message;
    }
  }

  /** Same as {@linkcode Connection.messages}. */
  [Symbol.asyncIterator](): AsyncGenerator<Message, void, undefined> {
    return this.messages();
  }

  /**
   * Closes the connection; with a `reason`, first sends it as an `error`
   * message (best effort, bounded by `closeTimeoutMs`). Pending `receive()`
   * calls reject with `closed`. Idempotent; never rejects.
   */
  close(reason?: ProtocolError | CloseReason): Promise<void> {
    this.#closing ??= this.#shutdown(reason);
    return this.#closing;
  }

  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #enqueueWrite(frame: Uint8Array): Promise<void> {
    const written = this.#writing.then(() => this.#writeAll(frame));
    this.#writing = written.catch(() => {});
    return written;
  }

  async #writeAll(frame: Uint8Array): Promise<void> {
    try {
      // write() may take only part of the frame; loop until it is all out.
      for (let offset = 0; offset < frame.length;) {
        offset += await this.#conn.write(frame.subarray(offset));
      }
    } catch (cause) {
      if (this.#closing !== undefined) {
        throw new ProtocolError(
          "closed",
          "cannot send: the connection is closed",
          { cause },
        );
      }
      const error = this.#lost(cause);
      this.#end(error, false);
      void this.close();
      throw error;
    }
  }

  /** Runs the read loop unless it already runs; it stops when nobody waits. */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    this.#pumpDone = this.#pumpLoop();
  }

  async #pumpLoop(): Promise<void> {
    try {
      while (this.#waiters.length > 0) {
        if (this.#ended !== undefined) {
          this.#rejectAll(this.#ended);
        } else if (this.#frameIndex < this.#frames.length) {
          this.#deliver(this.#frames[this.#frameIndex++]);
        } else {
          await this.#read();
        }
      }
    } catch (error) {
      // Unreachable by design; if it ever happens, fail loudly, not silently.
      this.#end(this.#lost(error), false);
      this.#rejectAll(this.#ended as ProtocolError);
      void this.close();
    } finally {
      this.#pumping = false;
    }
  }

  /** Reads one chunk into `#frames`, or records why the stream ended. Never throws. */
  async #read(): Promise<void> {
    try {
      this.#decoder.push(EMPTY); // throws an error held back behind good frames
      const n = await this.#conn.read(this.#buffer);
      if (n === null) {
        this.#decoder.end(); // throws `truncated` if EOF came inside a frame
        this.#end(
          new ProtocolError("closed", `${this.peerName} closed the connection`),
          true,
        );
        void this.close();
        return;
      }
      this.#frames = this.#decoder.push(this.#buffer.subarray(0, n));
      this.#frameIndex = 0;
    } catch (error) {
      if (error instanceof ProtocolError) {
        // The byte stream has lost its framing: nothing more can be read.
        this.#end(error, false);
        void this.close(error);
      } else {
        this.#end(
          this.#closing === undefined ? this.#lost(error) : closedError(),
          false,
        );
        void this.close();
      }
    }
  }

  #deliver(value: unknown): void {
    const waiter = this.#waiters.shift() as Waiter;
    clearTimeout(waiter.timer);
    const parsed = MessageSchema.safeParse(value);
    if (!parsed.success) {
      waiter.reject(
        new ProtocolError(
          "invalid_message",
          `invalid message: ${describe(parsed.error)}`,
        ),
      );
    } else if (parsed.data.type === "error") {
      const { code, message } = parsed.data;
      const error = new ProtocolError(
        isProtocolErrorCode(code) ? code : "closed",
        `${this.peerName} said: ${message}`,
        { peerCode: code },
      );
      this.#end(error, false);
      waiter.reject(error);
      void this.close(); // the peer closes after an error; so do we
    } else {
      waiter.resolve(parsed.data);
    }
  }

  #timeOut(waiter: Waiter, timeoutMs: number, explicit: boolean): void {
    const index = this.#waiters.indexOf(waiter);
    if (index === -1) return;
    this.#waiters.splice(index, 1);
    if (explicit) {
      waiter.reject(
        new ProtocolError(
          "timeout",
          `no message from ${this.peerName} within ${timeoutMs} ms`,
        ),
      );
      return;
    }
    const error = new ProtocolError(
      "timeout",
      `${this.peerName} was silent for ${timeoutMs} ms`,
    );
    this.#end(error, false);
    waiter.reject(error);
    void this.close(error);
  }

  #end(error: ProtocolError, clean: boolean): void {
    if (this.#ended !== undefined) return;
    this.#ended = error;
    this.#endedCleanly = clean;
  }

  #rejectAll(error: ProtocolError): void {
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
  }

  #lost(cause: unknown): ProtocolError {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return new ProtocolError(
      "closed",
      `connection to ${this.peerName} lost: ${reason}`,
      { cause },
    );
  }

  async #shutdown(
    reason: ProtocolError | CloseReason | undefined,
  ): Promise<void> {
    this.#end(closedError(), true);
    if (reason !== undefined) await this.#tellPeer(reason);
    try {
      this.#conn.close(); // also cancels a pending read or write
    } catch {
      // Already closed by someone else: nothing left to release.
    }
    this.#rejectAll(this.#ended as ProtocolError);
    await this.#pumpDone;
    await this.#writing;
    this.#resolveClosed();
  }

  /** Sends `reason` as an `error` message, giving up after `closeTimeoutMs`. Never throws. */
  async #tellPeer(reason: CloseReason): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const frame = encodeFrame({
        type: "error",
        code: reason.code.slice(0, 64),
        message: reason.message.slice(0, 4096),
      }, this.#maxFrameBytes);
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timerDelay(this.#closeTimeoutMs));
      });
      await Promise.race([this.#enqueueWrite(frame), timeout]);
    } catch {
      // Best effort: the peer may already be gone.
    } finally {
      clearTimeout(timer);
    }
  }
}

function closedError(): ProtocolError {
  return new ProtocolError("closed", "the connection is closed");
}

/** One line from zod's report: `✖ Invalid input: ... → at nonce; ✖ ...`. */
function describe(error: z.ZodError): string {
  return z.prettifyError(error).replaceAll("\n  → ", " → ").replaceAll(
    "\n",
    "; ",
  );
}

function checkTimeout(name: string, ms: number): void {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(
      `Cannot use ${name} ${ms}: expected a finite number of milliseconds >= 0`,
    );
  }
}

function formatAddr(addr: Deno.Addr): string {
  if ("hostname" in addr) return formatHostPort(addr);
  if ("path" in addr) return addr.path;
  return `${addr.cid}:${addr.port}`;
}
