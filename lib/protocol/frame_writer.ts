/**
 * {@linkcode FrameWriter}: writes a connection's frames whole and in order,
 * a burst in one system call, at a cost of no promise or async call per
 * frame.
 *
 * A master writes to thousands of peers at once, several frames per job. An
 * async function per write (and a promise per frame) was most of what a job
 * allocated there, and with thousands of jobs waiting, what a job
 * allocates lives long enough to be copied by the garbage collector. Here
 * a write is one call of the socket and two callbacks made once per writer.
 *
 * @module
 */

/** The most bytes of a batch of frames copied into one write. */
const MAX_JOINED_BYTES = 64 * 1024;
/** No batch: a writer between batches holds on to no frame. */
const NO_CHUNKS: readonly Uint8Array[] = [];

/** What a {@linkcode FrameWriter} writes to: a `Deno.Conn`, say. */
export interface ByteSink {
  /** Writes some of `bytes`, resolving with how many. */
  write(bytes: Uint8Array): Promise<number>;
}

/**
 * Queues frames and writes them in order. Frames queued in the same turn
 * go out in one write when they are small; large ones each in their own.
 *
 * A failed write fails its batch's waiters with what `onFailure` returns
 * (the connection decides what the failure means, and ends itself); the
 * frames still queued are then written (and fail) in turn, so that every
 * waiter hears and the bytes are accounted for.
 *
 * @example Two frames in one write
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameWriter } from "./frame_writer.ts";
 *
 * const writes: number[] = [];
 * const sink = { write: (bytes: Uint8Array) => Promise.resolve(writes.push(bytes.length) && bytes.length) };
 * const writer = new FrameWriter(sink, (cause) => cause as Error);
 * writer.enqueue(new Uint8Array(3));
 * writer.enqueue(new Uint8Array(4));
 * await writer.written();
 * assert.deepEqual(writes, [7]);
 * assert.equal(writer.bufferedBytes, 0);
 * ```
 */
export class FrameWriter {
  readonly #sink: ByteSink;
  readonly #onFailure: (cause: unknown) => Error;
  /** Frames queued and not yet taken by a write. */
  #outbox: Uint8Array[] = [];
  /** Settles when the frames now in the outbox are written; made only when someone waits. */
  #outboxWritten: PromiseWithResolvers<void> | undefined;
  /** The batch being written: its chunks (one joined, or large frames each), and who waits. */
  #chunks: readonly Uint8Array[] = NO_CHUNKS;
  #chunkIndex = 0;
  #offset = 0;
  #batchWritten: PromiseWithResolvers<void> | undefined;
  /** Whether a batch is being written, or about to be (a microtask is queued). */
  #running = false;
  /** Told when the writer has nothing left to write; made only when someone waits. */
  #idle: PromiseWithResolvers<void> | undefined;
  #bufferedBytes = 0;
  #lastProgress = 0;
  // Bound once: each write takes them instead of making closures.
  readonly #start = () => this.#nextBatch();
  readonly #wrote = (n: number) => this.#onWritten(n);
  readonly #failed = (cause: unknown) => this.#onFailed(cause);

  /**
   * @param sink Where the bytes go.
   * @param onFailure Called once per failed write with its cause; returns
   *   the error the waiters of that batch (and later ones) are failed with.
   */
  constructor(sink: ByteSink, onFailure: (cause: unknown) => Error) {
    this.#sink = sink;
    this.#onFailure = onFailure;
  }

  /** Bytes queued and not yet taken by the socket. */
  get bufferedBytes(): number {
    return this.#bufferedBytes;
  }

  /**
   * When the socket last took bytes, or the queue last became non-empty,
   * on the `performance.now()` clock.
   */
  get lastProgress(): number {
    return this.#lastProgress;
  }

  /** Queues one frame; it goes out after every frame queued before it. */
  enqueue(frame: Uint8Array): void {
    if (this.#bufferedBytes === 0) this.#lastProgress = performance.now();
    this.#bufferedBytes += frame.length;
    this.#outbox.push(frame);
    if (this.#running) return;
    this.#running = true;
    // Frames queued in the same turn as this one go out with it.
    queueMicrotask(this.#start);
  }

  /** Settles once every frame queued so far is written; rejects if one is not. */
  written(): Promise<void> {
    if (this.#outbox.length > 0) {
      this.#outboxWritten ??= Promise.withResolvers<void>();
      return this.#outboxWritten.promise;
    }
    // Nothing queued: the batch being written, if any, is the last.
    if (!this.#running) return Promise.resolve();
    this.#batchWritten ??= Promise.withResolvers<void>();
    return this.#batchWritten.promise;
  }

  /** Resolves (never rejects) once nothing is being written or waits to be. */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }

  /** Takes the outbox as the next batch and writes it, or stops when it is empty. */
  #nextBatch(): void {
    this.#chunks = NO_CHUNKS;
    if (this.#outbox.length === 0) {
      this.#running = false;
      this.#batchWritten = undefined;
      this.#idle?.resolve();
      this.#idle = undefined;
      return;
    }
    const frames = this.#outbox;
    this.#outbox = [];
    this.#batchWritten = this.#outboxWritten;
    this.#outboxWritten = undefined;
    this.#chunks = chunksOf(frames);
    this.#chunkIndex = 0;
    this.#offset = 0;
    this.#writeChunk();
  }

  #writeChunk(): void {
    const chunk = this.#chunks[this.#chunkIndex]!;
    // write() may take only part of the bytes: the rest goes next.
    const bytes = this.#offset === 0 ? chunk : chunk.subarray(this.#offset);
    let writing: Promise<number>;
    try {
      writing = this.#sink.write(bytes);
    } catch (cause) {
      return this.#onFailed(cause);
    }
    writing.then(this.#wrote, this.#failed);
  }

  #onWritten(n: number): void {
    this.#offset += n;
    this.#bufferedBytes -= n;
    this.#lastProgress = performance.now();
    if (this.#offset < this.#chunks[this.#chunkIndex]!.length) {
      return this.#writeChunk();
    }
    this.#offset = 0;
    if (++this.#chunkIndex < this.#chunks.length) return this.#writeChunk();
    this.#batchWritten?.resolve();
    this.#nextBatch();
  }

  #onFailed(cause: unknown): void {
    // The bytes of this batch that will never go out wait no more.
    let unsent = -this.#offset;
    for (let i = this.#chunkIndex; i < this.#chunks.length; i++) {
      unsent += this.#chunks[i]!.length;
    }
    this.#bufferedBytes -= unsent;
    const error = this.#onFailure(cause);
    this.#batchWritten?.reject(error);
    this.#nextBatch();
  }
}

/** A batch's writes: small frames joined in one, large ones each on its own. */
function chunksOf(frames: Uint8Array[]): readonly Uint8Array[] {
  if (frames.length === 1) return frames;
  let total = 0;
  for (const frame of frames) total += frame.length;
  // Not worth a copy: the system calls are few next to the bytes.
  if (total > MAX_JOINED_BYTES) return frames;
  const joined = new Uint8Array(total);
  let offset = 0;
  for (const frame of frames) {
    joined.set(frame, offset);
    offset += frame.length;
  }
  return [joined];
}
