/**
 * Helpers shared by this directory's tests: real sockets on 127.0.0.1, port 0.
 *
 * @module
 */
import { FrameDecoder } from "./frame.ts";

/** Two ends of one fresh TCP connection; the listener is already closed. */
export interface SocketPair {
  /** The accepted end. */
  server: Deno.TcpConn;
  /** The dialing end. */
  client: Deno.TcpConn;
}

/**
 * Opens a TCP connection to ourselves.
 *
 * @example A raw pair
 * ```ts
 * import { socketPair } from "./_testing.ts";
 *
 * const { server, client } = await socketPair();
 * server.close();
 * client.close();
 * ```
 */
export async function socketPair(): Promise<SocketPair> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [server, client] = await Promise.all([
    listener.accept(),
    dial(listener.addr.port),
  ]);
  return { server, client };
}

/**
 * Dials 127.0.0.1 at `port`.
 *
 * @example Dialing a listener
 * ```ts
 * import { dial } from "./_testing.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await dial(listener.addr.port);
 * (await listener.accept()).close();
 * conn.close();
 * ```
 */
export function dial(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/**
 * Reads a raw socket until the peer closes it and returns the decoded frames
 * (for a peer that is expected to send an `error` message and hang up).
 * Closes `conn`.
 *
 * @example Reading what a peer said before hanging up
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFramesUntilEof, socketPair } from "./_testing.ts";
 *
 * const { server, client } = await socketPair();
 * server.close();
 * assert.deepEqual(await readFramesUntilEof(client), []);
 * ```
 */
export async function readFramesUntilEof(conn: Deno.Conn): Promise<unknown[]> {
  const decoder = new FrameDecoder();
  const frames: unknown[] = [];
  const buffer = new Uint8Array(4096);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      frames.push(...decoder.push(buffer.subarray(0, n)));
    }
    decoder.end();
    return frames;
  } finally {
    conn.close();
  }
}

/**
 * Records every byte `conn` reads, to check what crossed the wire.
 *
 * @example Recording
 * ```ts
 * import assert from "node:assert/strict";
 * import { recordReads, socketPair } from "./_testing.ts";
 *
 * const { server, client } = await socketPair();
 * const seen = recordReads(server);
 * await client.write(new Uint8Array([1]));
 * await server.read(new Uint8Array(1));
 * assert.equal(seen().length, 1);
 * server.close();
 * client.close();
 * ```
 */
export function recordReads(conn: Deno.Conn): () => Uint8Array {
  const chunks: Uint8Array[] = [];
  const read = conn.read.bind(conn);
  conn.read = async (buffer: Uint8Array) => {
    const n = await read(buffer);
    if (n !== null) chunks.push(buffer.slice(0, n));
    return n;
  };
  return () => new Uint8Array(chunks.flatMap((chunk) => [...chunk]));
}
