/**
 * kiln's wire protocol: length-prefixed JSON frames ({@linkcode encodeFrame},
 * {@linkcode FrameDecoder}), the validated message set ({@linkcode MessageSchema}),
 * a {@linkcode Connection} that sends and receives them with limits and
 * timeouts, and the authenticating handshake that opens every link
 * ({@linkcode clientHandshake}, {@linkcode serverHandshake}).
 *
 * @example A master and a client, end to end
 * ```ts
 * import assert from "node:assert/strict";
 * import { clientHandshake, Connection, serverHandshake } from "./mod.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [accepted, dialed] = await Promise.all([listener.accept(), Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port })]);
 * await using master = new Connection(accepted);
 * await using client = new Connection(dialed);
 * await Promise.all([
 *   serverHandshake(master, { token: "correct-horse-battery", node: "master-1" }),
 *   clientHandshake(client, { role: "client", token: "correct-horse-battery" }),
 * ]);
 * await client.send({ type: "cancel", jobId: "j1" });
 * assert.deepEqual(await master.receive(), { type: "cancel", jobId: "j1" });
 * ```
 *
 * @module
 */
export {
  isProtocolErrorCode,
  PROTOCOL_ERROR_CODES,
  ProtocolError,
} from "./errors.ts";
export type { ProtocolErrorCode, ProtocolErrorOptions } from "./errors.ts";
export { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from "./frame.ts";
export type { FrameDecoderOptions } from "./frame.ts";
export { Connection } from "./connection.ts";
export type {
  CloseReason,
  ConnectionOptions,
  ReceiveOptions,
} from "./connection.ts";
export {
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  serverHandshake,
} from "./handshake.ts";
export type {
  ClientHandshakeOptions,
  ClientHandshakeResult,
  ServerHandshakeOptions,
  ServerHandshakeResult,
  VersionRange,
} from "./handshake.ts";
export * from "./messages.ts";
