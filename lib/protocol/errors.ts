/**
 * The one error type of the wire protocol, {@linkcode ProtocolError}, and the
 * codes it carries. Codes travel in `error` messages, so both ends of a
 * connection can tell the same story.
 *
 * @module
 */

/** Every code a {@linkcode ProtocolError} can carry. */
export const PROTOCOL_ERROR_CODES = [
  "malformed",
  "frame_too_large",
  "truncated",
  "invalid_message",
  "unexpected_message",
  "version_mismatch",
  "auth_failed",
  "role_refused",
  "timeout",
  "idle_timeout",
  "too_many_connections",
  "auth_backoff",
  "slow_peer",
  "closed",
] as const;

/**
 * What went wrong on a connection:
 *
 * - `malformed`: a frame body is not UTF-8 JSON; the byte stream is unusable.
 * - `frame_too_large`: a frame declares (or would need) more than the size cap.
 * - `truncated`: the stream ended in the middle of a frame.
 * - `invalid_message`: a well-formed frame that is not a valid message.
 * - `unexpected_message`: a valid message at the wrong moment (handshake order).
 * - `version_mismatch`: the peers share no protocol version.
 * - `auth_failed`: one side could not prove it knows the shared token.
 * - `role_refused`: the server does not accept peers of this role.
 * - `timeout`: the peer said nothing for too long.
 * - `idle_timeout`: an authenticated client sent nothing and had no job
 *   pending for too long.
 * - `too_many_connections`: the peer's address holds as many connections as
 *   it may.
 * - `auth_backoff`: the peer's address failed authentication too often and
 *   is refused for a while.
 * - `slow_peer`: the peer does not read what is sent to it: more waits to be
 *   written than the connection buffers, or none of it was taken for too long.
 * - `closed`: the connection is closed, or the peer closed it.
 */
export type ProtocolErrorCode = typeof PROTOCOL_ERROR_CODES[number];

/** Options of {@linkcode ProtocolError}. */
export interface ProtocolErrorOptions extends ErrorOptions {
  /** The code the peer sent, when this error reports the peer's `error` message. */
  peerCode?: string;
}

/**
 * A connection failed: bad bytes, a bad message, a failed handshake, a
 * timeout, or the peer went away. Never a bug in the caller (those are
 * `TypeError`/`RangeError`).
 *
 * @example Telling the peer's complaints from local ones
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProtocolError } from "./errors.ts";
 *
 * const error = new ProtocolError("auth_failed", "master said: authentication failed", {
 *   peerCode: "auth_failed",
 * });
 * assert.equal(error.code, "auth_failed");
 * assert.equal(error.peerCode, "auth_failed");
 * ```
 */
export class ProtocolError extends Error {
  /** Always `"ProtocolError"`. */
  override name = "ProtocolError";
  /** What went wrong. A peer's unknown code is reported as `closed`. */
  readonly code: ProtocolErrorCode;
  /**
   * The raw code of the peer's `error` message when the peer reported this
   * error (it may be a code this build does not know); `undefined` when the
   * error was found locally.
   */
  readonly peerCode: string | undefined;

  /** Makes an error with a code and a message that reads well on its own. */
  constructor(
    code: ProtocolErrorCode,
    message: string,
    options?: ProtocolErrorOptions,
  ) {
    super(
      message,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.code = code;
    this.peerCode = options?.peerCode;
  }
}

/**
 * Whether `code` is a {@linkcode ProtocolErrorCode} (for codes read off the wire).
 *
 * @example Mapping a peer's code
 * ```ts
 * import assert from "node:assert/strict";
 * import { isProtocolErrorCode } from "./errors.ts";
 *
 * assert.ok(isProtocolErrorCode("auth_failed"));
 * assert.ok(!isProtocolErrorCode("shutting_down"));
 * ```
 */
export function isProtocolErrorCode(code: string): code is ProtocolErrorCode {
  return (PROTOCOL_ERROR_CODES as readonly string[]).includes(code);
}

/** The master could not be reached at all. */
export class ConnectionError extends Error {
  /** Always `"ConnectionError"`. */
  override name = "ConnectionError";
  /** The address that was dialed, as `host:port`. */
  readonly address: string;

  /** Says which address could not be reached, and why. */
  constructor(address: string, message: string, options?: ErrorOptions) {
    super(`Cannot connect to master at ${address}: ${message}`, options);
    this.address = address;
  }
}
