/**
 * The framing every kiln link uses: a 4-byte big-endian unsigned length, then
 * that many bytes of UTF-8 JSON. {@linkcode encodeFrame} builds one frame;
 * {@linkcode FrameDecoder} turns a byte stream, cut anywhere, back into values.
 *
 * @module
 */
import { ProtocolError } from "./errors.ts";
import { jsonDepth, MAX_JSON_DEPTH } from "./json_depth.ts";
import { positiveInteger } from "../_options.ts";

/** The default cap on a frame body, in bytes (8 MiB). */
export const DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024;

/** Bytes of the length prefix. */
const HEADER_BYTES = 4;
/** The largest length a 4-byte prefix can declare. */
const MAX_DECLARABLE = 0xffff_ffff;

const encoder = new TextEncoder();
/** Where {@linkcode encodeFrame} encodes small messages before copying them out. */
const SCRATCH = new Uint8Array(HEADER_BYTES + 64 * 1024);
const SCRATCH_BODY = SCRATCH.subarray(HEADER_BYTES);
// fatal: invalid UTF-8 is an error, not U+FFFD. ignoreBOM: a BOM stays in the
// text, so JSON.parse rejects it instead of it being silently dropped.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function checkMax(maxFrameBytes: number): number {
  return positiveInteger("maxFrameBytes", maxFrameBytes, MAX_DECLARABLE);
}

function tooLarge(bytes: number, max: number): ProtocolError {
  return new ProtocolError(
    "frame_too_large",
    `frame of ${bytes} bytes exceeds the limit of ${max} bytes`,
  );
}

/**
 * Serializes `message` as JSON and frames it.
 *
 * Throws {@linkcode ProtocolError} `frame_too_large` when the body would exceed
 * `maxFrameBytes`: a frame the peer must refuse is never built, let alone sent.
 * Throws `TypeError` when `message` cannot be serialized (`undefined`, BigInt,
 * a cycle).
 *
 * @example Framing a message
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame } from "./frame.ts";
 *
 * const frame = encodeFrame({ type: "cancel", jobId: "j1" });
 * const length = new DataView(frame.buffer).getUint32(0);
 * assert.equal(length, frame.length - 4);
 * ```
 */
export function encodeFrame(
  message: unknown,
  maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES,
): Uint8Array {
  checkMax(maxFrameBytes);
  const json = JSON.stringify(message);
  if (typeof json !== "string") {
    throw new TypeError(`Cannot encode frame: a ${typeof message} is not JSON`);
  }
  // Each UTF-16 unit takes at least one UTF-8 byte: refuse before encoding.
  if (json.length > maxFrameBytes) throw tooLarge(json.length, maxFrameBytes);
  // Each UTF-16 unit takes at most three: a small message is encoded
  // straight into a reused buffer and copied out once, at its size (every
  // job sends several; encoding, then copying behind a header, made two).
  if (json.length * 3 <= SCRATCH_BODY.length) {
    const { written } = encoder.encodeInto(json, SCRATCH_BODY);
    if (written > maxFrameBytes) throw tooLarge(written, maxFrameBytes);
    const frame = SCRATCH.slice(0, HEADER_BYTES + written);
    new DataView(frame.buffer).setUint32(0, written);
    return frame;
  }
  const body = encoder.encode(json);
  if (body.length > maxFrameBytes) throw tooLarge(body.length, maxFrameBytes);
  const frame = new Uint8Array(HEADER_BYTES + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, HEADER_BYTES);
  return frame;
}

/** Options of {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * The largest frame body accepted, in bytes. A larger declared length is
   * refused as soon as the 4-byte header is in, before any body arrives.
   *
   * @default {DEFAULT_MAX_FRAME_BYTES}
   */
  maxFrameBytes?: number;
}

/**
 * Turns a byte stream into the JSON values of its frames, whatever the chunk
 * boundaries (a header split across reads, several frames in one read).
 *
 * A frame body is allocated once, at its declared size, after that size was
 * checked against the cap, and chunks are copied into it: big frames arriving
 * in many small reads cost linear time and no garbage. Chunks are always
 * copied, so a caller may reuse its read buffer.
 *
 * A body nested deeper than {@linkcode MAX_JSON_DEPTH} levels is
 * `malformed`, refused by a linear scan before `JSON.parse` sees it.
 *
 * Errors ({@linkcode ProtocolError} `frame_too_large`, `malformed`,
 * `truncated`) are final: the stream has lost its framing, and every later
 * call throws the same error. When a chunk holds good frames before a bad
 * one, `push` returns the good frames and the next `push` (an empty chunk is
 * enough) or `end` throws the error, so nothing valid is lost.
 *
 * @example Decoding a stream cut at arbitrary places
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame, FrameDecoder } from "./frame.ts";
 *
 * const bytes = new Uint8Array([...encodeFrame({ a: 1 }), ...encodeFrame({ b: 2 })]);
 * const decoder = new FrameDecoder();
 * const values = [
 *   ...decoder.push(bytes.subarray(0, 3)), // part of a header: nothing yet
 *   ...decoder.push(bytes.subarray(3)),
 * ];
 * decoder.end(); // throws "truncated" if the stream stopped inside a frame
 * assert.deepEqual(values, [{ a: 1 }, { b: 2 }]);
 * ```
 */
export class FrameDecoder {
  #max: number;
  #header = new Uint8Array(HEADER_BYTES);
  #headerFilled = 0;
  /** The body being filled, once its header is complete. */
  #body: Uint8Array | undefined;
  #bodyFilled = 0;
  /** Set once the stream is broken; thrown by every later call. */
  #error: ProtocolError | undefined;

  /** Makes a decoder for one byte stream. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#max = checkMax(options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
  }
  /**
   * The largest frame body accepted. It may change between frames: a server
   * keeps it small until the peer has authenticated.
   */
  get maxFrameBytes(): number {
    return this.#max;
  }

  set maxFrameBytes(value: number) {
    this.#max = checkMax(value);
  }

  /** Feeds the next bytes of the stream; returns the values of the frames they complete. */
  push(chunk: Uint8Array): unknown[] {
    if (this.#error !== undefined) throw this.#error;
    const values: unknown[] = [];
    try {
      let offset = 0;
      while (offset < chunk.length) {
        offset = this.#body === undefined
          ? this.#readWhole(chunk, offset, values) ??
            this.#readHeader(chunk, offset)
          : this.#readBody(chunk, offset, values);
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.#error = error;
      // Hand out the good frames first; the error waits for the next call.
      if (values.length === 0) throw error;
    }
    return values;
  }

  /** Declares the end of the stream; throws `truncated` when it stopped inside a frame. */
  end(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#body !== undefined) {
      throw new ProtocolError(
        "truncated",
        `stream ended inside a frame: got ${this.#bodyFilled} of ${this.#body.length} body bytes`,
      );
    }
    if (this.#headerFilled > 0) {
      throw new ProtocolError(
        "truncated",
        `stream ended inside a frame header: got ${this.#headerFilled} of ${HEADER_BYTES} bytes`,
      );
    }
  }

  /**
   * A frame that lies whole in `chunk` at `offset` (the common case: small
   * messages, read at once) is parsed in place, without copying its body;
   * returns the offset after it, or undefined to go byte by byte.
   */
  #readWhole(
    chunk: Uint8Array,
    offset: number,
    values: unknown[],
  ): number | undefined {
    if (this.#headerFilled !== 0 || chunk.length - offset < HEADER_BYTES) {
      return undefined;
    }
    const length = new DataView(chunk.buffer, chunk.byteOffset + offset)
      .getUint32(0);
    const end = offset + HEADER_BYTES + length;
    // Too large or empty: the byte-by-byte path says why.
    if (length > this.#max || length === 0 || end > chunk.length) {
      return undefined;
    }
    values.push(parseBody(chunk.subarray(offset + HEADER_BYTES, end)));
    return end;
  }

  #readHeader(chunk: Uint8Array, offset: number): number {
    const take = Math.min(
      HEADER_BYTES - this.#headerFilled,
      chunk.length - offset,
    );
    this.#header.set(chunk.subarray(offset, offset + take), this.#headerFilled);
    this.#headerFilled += take;
    if (this.#headerFilled === HEADER_BYTES) {
      const length = new DataView(this.#header.buffer).getUint32(0);
      // The check that keeps a hostile header from costing us memory.
      if (length > this.#max) throw tooLarge(length, this.#max);
      // No JSON text is empty; say so now rather than when more bytes come.
      if (length === 0) {
        throw new ProtocolError("malformed", "malformed frame: body is empty");
      }
      this.#headerFilled = 0;
      this.#body = new Uint8Array(length);
      this.#bodyFilled = 0;
    }
    return offset + take;
  }

  #readBody(chunk: Uint8Array, offset: number, values: unknown[]): number {
    const body = this.#body as Uint8Array;
    const take = Math.min(
      body.length - this.#bodyFilled,
      chunk.length - offset,
    );
    body.set(chunk.subarray(offset, offset + take), this.#bodyFilled);
    this.#bodyFilled += take;
    if (this.#bodyFilled === body.length) {
      this.#body = undefined;
      values.push(parseBody(body));
    }
    return offset + take;
  }
}

function parseBody(body: Uint8Array): unknown {
  let text: string;
  try {
    text = decoder.decode(body);
  } catch (cause) {
    throw new ProtocolError(
      "malformed",
      "malformed frame: body is not valid UTF-8",
      { cause },
    );
  }
  // Before JSON.parse, whose cost on a deep nest starves the event loop.
  if (jsonDepth(body) > MAX_JSON_DEPTH) {
    throw new ProtocolError(
      "malformed",
      `malformed frame: JSON nested deeper than ${MAX_JSON_DEPTH} levels of arrays and objects`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    const reason = (cause as Error).message;
    throw new ProtocolError(
      "malformed",
      `malformed frame: body is not JSON (${reason})`,
      { cause },
    );
  }
}
