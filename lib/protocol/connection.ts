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
import { FrameWriter } from "./frame_writer.ts";
import { type Message, MessageSchema } from "./messages.ts";
import { positiveInteger } from "../_options.ts";

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
  /**
   * The high-water mark of the send buffer, in bytes: while more than this
   * waits to be written (the peer reads slower than we send),
   * {@linkcode Connection.offer} drops its message instead of buffering it.
   * At most `maxBufferedBytes`.
   *
   * @default {DEFAULT_HIGH_WATER_BYTES}
   */
  highWaterBytes?: number;
  /**
   * The most bytes that may wait to be written, for any message: a
   * {@linkcode Connection.send} that would buffer more closes the connection
   * with `slow_peer` (one frame is always accepted when nothing waits).
   * From 1 to 2^32 - 1.
   *
   * @default {DEFAULT_MAX_BUFFERED_BYTES}
   */
  maxBufferedBytes?: number;
  /**
   * How long bytes may wait to be written without the peer taking any of
   * them, in ms, before the connection is closed with `slow_peer`; 0 waits
   * forever. At most 2^31 - 1.
   *
   * @default {DEFAULT_STALL_TIMEOUT_MS}
   */
  stallTimeoutMs?: number;
}

/**
 * The default high-water mark of a connection's send buffer (8 MiB): past
 * it, live output to a peer that does not keep up is dropped.
 */
export const DEFAULT_HIGH_WATER_BYTES = 8 * 1024 * 1024;
/**
 * The default limit on all that may wait to be sent to one peer (64 MiB):
 * past it, the peer is closed with `slow_peer`. It leaves room above the
 * high-water mark for a few results of the largest frame size.
 */
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/** The default time a peer may take none of the bytes waiting for it (60 s). */
export const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/** The send-buffer limits of a connection, defaults resolved. */
export interface SendBufferLimits {
  /** See {@linkcode ConnectionOptions.highWaterBytes}. */
  readonly highWaterBytes: number;
  /** See {@linkcode ConnectionOptions.maxBufferedBytes}. */
  readonly maxBufferedBytes: number;
  /** See {@linkcode ConnectionOptions.stallTimeoutMs}. */
  readonly stallTimeoutMs: number;
}

/**
 * Resolves the send-buffer options of {@linkcode ConnectionOptions} and
 * checks them, naming a bad one; throws `RangeError`. A node calls it when
 * it starts, so that bad options fail then, not at the first connection.
 *
 * @example The defaults
 * ```ts
 * import assert from "node:assert/strict";
 * import { sendBufferLimits } from "./connection.ts";
 *
 * assert.deepEqual(sendBufferLimits({ maxBufferedBytes: 1024 }), {
 *   highWaterBytes: 1024,
 *   maxBufferedBytes: 1024,
 *   stallTimeoutMs: 60_000,
 * });
 * ```
 */
export function sendBufferLimits(
  options: {
    readonly highWaterBytes?: number | undefined;
    readonly maxBufferedBytes?: number | undefined;
    readonly stallTimeoutMs?: number | undefined;
  },
): SendBufferLimits {
  const {
    maxBufferedBytes = DEFAULT_MAX_BUFFERED_BYTES,
    highWaterBytes = Math.min(DEFAULT_HIGH_WATER_BYTES, maxBufferedBytes),
    stallTimeoutMs = DEFAULT_STALL_TIMEOUT_MS,
  } = options;
  checkTimeout("stallTimeoutMs", stallTimeoutMs);
  checkMax("maxBufferedBytes", maxBufferedBytes);
  checkMax("highWaterBytes", highWaterBytes);
  if (highWaterBytes > maxBufferedBytes) {
    throw new RangeError(
      `Cannot use highWaterBytes ${highWaterBytes}: it exceeds maxBufferedBytes ${maxBufferedBytes}`,
    );
  }
  return { highWaterBytes, maxBufferedBytes, stallTimeoutMs };
}

/** The largest delay a timer takes; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The largest buffer limit accepted, in bytes. */
const MAX_BUFFER_LIMIT = 0xffff_ffff;

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

/**
 * The read buffer a connection starts with, in bytes: enough for the small
 * frames most links carry. Every connection holds its buffer for as long
 * as it lives (a read is always pending), so a master with 10,000 idle
 * clients holds 10,000 of them.
 */
export const MIN_READ_BUFFER_BYTES = 1024;
/** The most a connection's read buffer grows to, in bytes, doubling whenever a read fills it. */
export const MAX_READ_BUFFER_BYTES = 64 * 1024;
const EMPTY = new Uint8Array(0);
/** No decoded frame waiting; shared, never written to. */
const NO_FRAMES: unknown[] = [];

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
 * - What waits to be written is bounded ({@linkcode Connection.bufferedBytes}):
 *   past `highWaterBytes`, {@linkcode Connection.offer} drops messages that
 *   may be lost (live output); past `maxBufferedBytes`, or when the peer
 *   takes no byte for `stallTimeoutMs`, the connection closes with
 *   `slow_peer`, so a peer that never reads cannot grow our memory.
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

  /**
   * The largest frame the peer said it accepts (a secondary and its master
   * tell each other at registration); `undefined` when it did not say.
   * Sends are capped at the smaller of this and `maxFrameBytes`.
   */
  get peerMaxFrameBytes(): number | undefined {
    return this.#peerMaxFrameBytes;
  }

  set peerMaxFrameBytes(value: number | undefined) {
    if (value !== undefined) checkMax("peerMaxFrameBytes", value);
    this.#peerMaxFrameBytes = value;
  }

  /** The largest frame this side sends: `maxFrameBytes`, or less if the peer takes less. */
  get maxSendFrameBytes(): number {
    return Math.min(
      this.#maxFrameBytes,
      this.#peerMaxFrameBytes ?? this.#maxFrameBytes,
    );
  }

  /** Bytes handed to `send` or `offer` and not yet taken by the socket. */
  get bufferedBytes(): number {
    return this.#writer.bufferedBytes;
  }

  /**
   * The size of the read buffer, in bytes: what the connection holds while
   * it waits for the peer. It starts at {@linkcode MIN_READ_BUFFER_BYTES}
   * and doubles, up to {@linkcode MAX_READ_BUFFER_BYTES}, whenever a read
   * fills it.
   */
  get readBufferBytes(): number {
    return this.#buffer.length;
  }

  /** Messages {@linkcode Connection.offer} dropped so far. */
  get droppedMessages(): number {
    return this.#droppedMessages;
  }

  /** Resolves (never rejects) once the connection is closed, by either side. */
  readonly closed: Promise<void>;

  #conn: Deno.Conn;
  #remoteAddr: string;
  #maxFrameBytes: number;
  #idleTimeoutMs: number | undefined;
  #closeTimeoutMs: number;
  #peerMaxFrameBytes: number | undefined;
  #highWaterBytes: number;
  #maxBufferedBytes: number;
  #stallTimeoutMs: number;
  #droppedMessages = 0;
  /**
   * Armed once bytes wait to be written, and left armed when they are out
   * (no timer per write): when it fires it closes a peer that took none for
   * `stallTimeoutMs`, waits the rest, or, with nothing waiting, disarms.
   */
  #stallTimer: ReturnType<typeof setTimeout> | undefined;
  #decoder: FrameDecoder;
  #buffer = new Uint8Array(MIN_READ_BUFFER_BYTES);
  /** Frames decoded from the last read and not yet handed out. */
  #frames: unknown[] = NO_FRAMES;
  #frameIndex = 0;
  #waiters: Waiter[] = [];
  #pumping = false;
  #pumpDone: Promise<void> = Promise.resolve();
  /** Why no more messages will come; set once. */
  #ended: ProtocolError | undefined;
  /** Whether `#ended` is a clean end (peer's EOF or our close), which ends iteration quietly. */
  #endedCleanly = false;
  /** Frames go out whole and in order, a burst in one write. */
  #writer: FrameWriter;
  /** Whether `messages()` reads the socket itself now: `receive()` may not. */
  #iterating = false;
  /** Whether `messages()` awaits a read of the socket. */
  #reading = false;
  /** Told when that read settles; made only when `close()` waits for it. */
  #readSettled: PromiseWithResolvers<void> | undefined;
  #closing: Promise<void> | undefined;
  /** Set as the close begins (before `#closing` is assigned): no stall watch from then on. */
  #shuttingDown = false;
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
    const { highWaterBytes, maxBufferedBytes, stallTimeoutMs } =
      sendBufferLimits(options);
    this.#highWaterBytes = highWaterBytes;
    this.#maxBufferedBytes = maxBufferedBytes;
    this.#stallTimeoutMs = stallTimeoutMs;
    this.#conn = conn;
    this.#writer = new FrameWriter(conn, (cause) => this.#writeFailed(cause));
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
   * the message exceeds {@linkcode Connection.maxSendFrameBytes} (nothing is
   * sent; the connection stays up). When the message would make more than
   * `maxBufferedBytes` wait to be written, the peer is not keeping up: the
   * connection closes with `slow_peer`, and so does this call.
   */
  send(message: Message): Promise<void> {
    const refused = this.#enqueue(message);
    return refused === undefined
      ? this.#writer.written()
      : Promise.reject(refused);
  }

  /**
   * Sends one message like {@linkcode Connection.send}, for a caller that
   * will not wait for it to be written; it costs no promise. Returns why
   * it was refused at once (what `send` would reject with: `closed`,
   * `frame_too_large`, `slow_peer`), or `undefined` once it is queued. A
   * write that fails later ends the connection, as for `send`.
   */
  post(message: Message): Error | undefined {
    return this.#enqueue(message);
  }

  /**
   * Frames `message` and queues it for the writer; returns why it was
   * refused instead (then nothing is queued).
   */
  #enqueue(message: Message): Error | undefined {
    if (this.#closing !== undefined) {
      return new ProtocolError(
        "closed",
        "cannot send: the connection is closed",
      );
    }
    let frame: Uint8Array;
    try {
      frame = encodeFrame(message, this.maxSendFrameBytes);
    } catch (error) {
      return error as Error; // encodeFrame throws ProtocolError or TypeError
    }
    if (this.#wouldExceed(frame.length, this.#maxBufferedBytes)) {
      const error = new ProtocolError(
        "slow_peer",
        `${this.peerName} is not reading: ${this.bufferedBytes} bytes wait to be sent to it, and ${frame.length} more would exceed the limit of ${this.#maxBufferedBytes} bytes`,
      );
      this.#end(error, false);
      void this.close(error);
      return error;
    }
    this.#enqueueWrite(frame);
    return undefined;
  }

  /**
   * Sends a message that may be lost, such as live output: queued like
   * {@linkcode Connection.send} while at most `highWaterBytes` wait to be
   * written, dropped otherwise. Returns whether it was queued; `false` also
   * when the connection is closing or the message exceeds the frame cap.
   * Never throws; a write that fails later ends the connection as usual.
   */
  offer(message: Message): boolean {
    if (this.#closing !== undefined) return false;
    let frame: Uint8Array;
    try {
      frame = encodeFrame(message, this.maxSendFrameBytes);
    } catch {
      this.#droppedMessages++;
      return false;
    }
    if (this.#wouldExceed(frame.length, this.#highWaterBytes)) {
      this.#droppedMessages++;
      return false;
    }
    this.#enqueueWrite(frame);
    return true;
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
      if (this.#iterating) {
        throw new TypeError(
          "Cannot receive: messages() is reading this connection",
        );
      }
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

  /**
   * Yields messages until the connection ends cleanly; throws on any other
   * end, and on a message `receive()` would have refused (the connection
   * then stays up, as there).
   *
   * While it is iterated it reads the socket itself, with no `receive()`
   * per message: a master with thousands of clients keeps one pending read
   * each, and each message costs no promise of its own. `receive()` may
   * not be called meanwhile (it rejects with a `TypeError`). With an idle
   * timeout it goes through `receive()`, which keeps the deadline.
   */
  async *messages(): AsyncGenerator<Message, void, undefined> {
    if (this.#idleTimeoutMs !== undefined) {
      yield* this.#receivedMessages();
      return;
    }
    // Earlier receive() calls are served first, in call order.
    while (this.#pumping) await this.#pumpDone;
    this.#iterating = true;
    try {
      while (true) {
        // As in the pump: once ended, frames still decoded are not handed out.
        if (this.#ended !== undefined) {
          if (this.#endedCleanly) return;
          throw this.#ended;
        }
        if (this.#frameIndex < this.#frames.length) {
          yield this.#accept(this.#nextFrame());
          continue;
        }
        // The socket is awaited here, not through #read(): a read costs
        // no promise of kiln's. close() waits for it through #readSettled.
        const reading = this.#startRead();
        if (reading === undefined) continue;
        let n: number | null;
        this.#reading = true;
        try {
          n = await reading;
        } catch (error) {
          this.#readFailed(error);
          continue;
        } finally {
          this.#reading = false;
          this.#readSettled?.resolve();
          this.#readSettled = undefined;
        }
        this.#readDone(n);
      }
    } finally {
      this.#iterating = false;
    }
  }

  /** {@linkcode Connection.messages} by way of `receive()`: for the idle timeout. */
  async *#receivedMessages(): AsyncGenerator<Message, void, undefined> {
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

  /** Whether `bytes` more would put the send buffer over `limit`; an empty buffer takes any one frame. */
  #wouldExceed(bytes: number, limit: number): boolean {
    const buffered = this.#writer.bufferedBytes;
    return buffered > 0 && buffered + bytes > limit;
  }

  /** Queues a frame for the writer, and watches for a peer that takes none of it. */
  #enqueueWrite(frame: Uint8Array): void {
    this.#writer.enqueue(frame);
    this.#watchStall();
  }

  /** What a failed write means: the connection is lost (unless we were closing it). */
  #writeFailed(cause: unknown): Error {
    if (this.#closing !== undefined) {
      return new ProtocolError(
        "closed",
        "cannot send: the connection is closed",
        { cause },
      );
    }
    const error = this.#lost(cause);
    this.#end(error, false);
    void this.close();
    return error;
  }

  /**
   * Arms the stall deadline unless it is armed or turned off. Once armed it
   * stays armed while messages come and go, and checks, when it fires,
   * whether anything has waited all that time.
   */
  #watchStall(): void {
    if (
      this.#stallTimer !== undefined || this.#stallTimeoutMs === 0 ||
      this.#shuttingDown
    ) return;
    this.#stallTimer = setTimeout(
      () => this.#checkStall(),
      this.#stallTimeoutMs,
    );
  }

  /** Closes a peer that took no byte for `stallTimeoutMs`; otherwise waits the rest. */
  #checkStall(): void {
    this.#stallTimer = undefined;
    // Nothing waits (the next write arms it again), or the close took over.
    const buffered = this.#writer.bufferedBytes;
    if (buffered === 0 || this.#shuttingDown) return;
    const stalledMs = performance.now() - this.#writer.lastProgress;
    if (stalledMs < this.#stallTimeoutMs) {
      this.#stallTimer = setTimeout(
        () => this.#checkStall(),
        Math.max(1, Math.ceil(this.#stallTimeoutMs - stalledMs)),
      );
      return;
    }
    const error = new ProtocolError(
      "slow_peer",
      `${this.peerName} is not reading: it took none of the ${buffered} bytes waiting for it in ${this.#stallTimeoutMs} ms`,
    );
    this.#end(error, false);
    void this.close(error);
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
          this.#deliver(this.#nextFrame());
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

  /**
   * Takes the next decoded frame. Once the last of a read is taken the read's
   * frames are let go: an idle connection would otherwise keep its last
   * message (a cluster status of every node, say) for as long as it idles.
   */
  #nextFrame(): unknown {
    const frame = this.#frames[this.#frameIndex++];
    if (this.#frameIndex === this.#frames.length) {
      this.#frames = NO_FRAMES;
      this.#frameIndex = 0;
    }
    return frame;
  }

  /** Reads one chunk into `#frames`, or records why the stream ended. Never throws. */
  async #read(): Promise<void> {
    const reading = this.#startRead();
    if (reading === undefined) return;
    let n: number | null;
    try {
      n = await reading;
    } catch (error) {
      return this.#readFailed(error);
    }
    this.#readDone(n);
  }

  /** Starts a read; `undefined` when the stream has failed already (recorded). */
  #startRead(): Promise<number | null> | undefined {
    try {
      this.#decoder.push(EMPTY); // throws an error held back behind good frames
      return this.#conn.read(this.#buffer);
    } catch (error) {
      this.#readFailed(error);
      return undefined;
    }
  }

  /** Decodes what a read brought into `#frames`, or records the end. Never throws. */
  #readDone(n: number | null): void {
    try {
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
      // A full read means more was waiting: a peer sending large frames
      // gets larger reads. (The decoder keeps copies, not this buffer.)
      if (n === this.#buffer.length && n < MAX_READ_BUFFER_BYTES) {
        this.#buffer = new Uint8Array(n * 2);
      }
    } catch (error) {
      this.#readFailed(error);
    }
  }

  /** Records why no more can be read, and closes. */
  #readFailed(error: unknown): void {
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

  #deliver(value: unknown): void {
    const waiter = this.#waiters.shift() as Waiter;
    clearTimeout(waiter.timer);
    let message: Message;
    try {
      message = this.#accept(value);
    } catch (error) {
      waiter.reject(error);
      return;
    }
    waiter.resolve(message);
  }

  /**
   * Validates one decoded frame. Throws `invalid_message` (the connection
   * stays up), or the peer's own error when it sent one (the connection
   * closes).
   */
  #accept(value: unknown): Message {
    const parsed = MessageSchema.safeParse(value);
    if (!parsed.success) {
      throw new ProtocolError(
        "invalid_message",
        `invalid message: ${describe(parsed.error)}`,
      );
    }
    if (parsed.data.type !== "error") return parsed.data;
    const { code, message } = parsed.data;
    const error = new ProtocolError(
      isProtocolErrorCode(code) ? code : "closed",
      `${this.peerName} said: ${message}`,
      { peerCode: code },
    );
    this.#end(error, false);
    void this.close(); // the peer closes after an error; so do we
    throw error;
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
    this.#shuttingDown = true;
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#end(closedError(), true);
    if (reason !== undefined) await this.#tellPeer(reason);
    try {
      this.#conn.close(); // also cancels a pending read or write
    } catch {
      // Already closed by someone else: nothing left to release.
    }
    this.#rejectAll(this.#ended as ProtocolError);
    await this.#pumpDone;
    if (this.#reading) {
      this.#readSettled ??= Promise.withResolvers<void>();
      await this.#readSettled.promise;
    }
    await this.#writer.idle();
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
      }, this.maxSendFrameBytes);
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timerDelay(this.#closeTimeoutMs));
      });
      this.#enqueueWrite(frame);
      await Promise.race([this.#writer.written(), timeout]);
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
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIMER_MS) {
    throw new RangeError(
      `Cannot use ${name} ${ms}: expected a number of milliseconds from 0 to ${MAX_TIMER_MS}`,
    );
  }
}

function checkMax(name: string, bytes: number): void {
  positiveInteger(name, bytes, MAX_BUFFER_LIMIT);
}

function formatAddr(addr: Deno.Addr): string {
  if ("hostname" in addr) return formatHostPort(addr);
  if ("path" in addr) return addr.path;
  return `${addr.cid}:${addr.port}`;
}
