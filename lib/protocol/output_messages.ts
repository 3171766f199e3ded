/**
 * Live output over a {@linkcode Connection} that may not keep up:
 * {@linkcode offerOutput} cuts a chunk into `output` messages that each fit
 * one frame, and offers them, so that a slow peer loses output (and is told
 * so by a `truncated` result) instead of growing the sender's memory.
 *
 * @module
 */
import type { Connection } from "./connection.ts";
import type { OutputEvent } from "./messages.ts";

/**
 * Room for `{"type":"output","jobId":...,"stream":"stdout","data":""}`
 * around the data, with a job id of up to 128 characters.
 */
const OUTPUT_ENVELOPE_BYTES = 256;
/** Most UTF-8 bytes one UTF-16 unit can take in JSON: `\u0001` is six. */
const MAX_JSON_BYTES_PER_UNIT = 6;

/**
 * `message` as one or more `output` messages whose frames fit
 * `maxFrameBytes`, in order, together carrying the same data. The pieces are
 * sized for the worst case of JSON escaping, so no encoding is needed to
 * know that they fit; a surrogate pair is never split.
 *
 * @example Output too large for one small frame
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitOutput } from "./output_messages.ts";
 *
 * const message = { type: "output", jobId: "j1", stream: "stdout", data: "x".repeat(3000) } as const;
 * const pieces = splitOutput(message, 4096); // at most 640 characters each
 * assert.equal(pieces.length, 5);
 * assert.equal(pieces.map((piece) => piece.data).join(""), message.data);
 * ```
 */
export function splitOutput(
  message: OutputEvent,
  maxFrameBytes: number,
): OutputEvent[] {
  const { data } = message;
  const units = Math.max(
    2,
    Math.floor(
      (maxFrameBytes - OUTPUT_ENVELOPE_BYTES) / MAX_JSON_BYTES_PER_UNIT,
    ),
  );
  if (data.length <= units) return [message];
  const pieces: OutputEvent[] = [];
  for (let start = 0; start < data.length;) {
    let end = Math.min(start + units, data.length);
    // A high surrogate at the cut goes with its low half into the next piece.
    if (end < data.length && isHighSurrogate(data.charCodeAt(end - 1))) end--;
    pieces.push({ ...message, data: data.slice(start, end) });
    start = end;
  }
  return pieces;
}

/**
 * Offers `message` to `connection` in pieces that fit its frames (see
 * {@linkcode Connection.offer}); returns `false` as soon as one is dropped,
 * and sends no further piece, so what the peer gets is a prefix.
 *
 * @example Streaming a chunk, learning whether it got through
 * ```ts ignore
 * if (!offerOutput(connection, { type: "output", jobId, stream, data })) lost.add(jobId);
 * ```
 */
export function offerOutput(
  connection: Connection,
  message: OutputEvent,
): boolean {
  for (const piece of splitOutput(message, connection.maxSendFrameBytes)) {
    if (!connection.offer(piece)) return false;
  }
  return true;
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}
