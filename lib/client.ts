/**
 * Submitting programs to a kiln master from TypeScript.
 *
 * @module
 */
import { DEFAULT_PORT, type HostPort, parseHostPort } from "./address.ts";
import type { JobRequest, JobResult } from "./job.ts";
import { Connection } from "./protocol/connection.ts";
import { ConnectionError, ProtocolError } from "./protocol/errors.ts";
import { dial, hintTls, type TlsDialOptions } from "./protocol/transport.ts";

export { ConnectionError };
import { DEFAULT_MAX_FRAME_BYTES } from "./protocol/frame.ts";
import {
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
} from "./protocol/handshake.ts";
import type { ClusterStatus, JobEvent } from "./protocol/messages.ts";

/** Options of {@linkcode submitProgram}. */
export interface SubmitOptions {
  /** The master, as `host:port` or an address object. @default "127.0.0.1:7700" */
  master?: string | HostPort | undefined;
  /** Shared token of the cluster. @default "" */
  token?: string | undefined;
  /** A display name for the master's logs. */
  name?: string | undefined;
  /**
   * Receives every event of the job as it happens: accepted, queued,
   * started, output, restarted (output so far is void), result.
   */
  onEvent?: ((event: JobEvent) => void) | undefined;
  /** Aborting it cancels the job on the master and rejects with the abort reason. */
  signal?: AbortSignal | undefined;
  /**
   * Stdin to send while the program runs, chunk by chunk as it comes (an
   * interactive program); EOF follows its end. Makes the job `interactive`.
   */
  input?: AsyncIterable<string> | undefined;
  /** Largest frame accepted from the master. @default 8 MiB */
  maxFrameBytes?: number | undefined;
  /** Time allowed for the handshake (and for the TLS handshake before it). @default 10000 */
  handshakeTimeoutMs?: number | undefined;
  /**
   * Speak TLS to the master and check its certificate: `true` trusts Deno's
   * default roots; `{ caCerts }` also trusts these CAs (PEM), such as the
   * one `deno task gen-certs` makes. Plain TCP when absent.
   */
  tls?: true | TlsDialOptions | undefined;
}

/**
 * Runs a program on a kiln cluster and resolves with its result. A job the
 * cluster refuses still resolves, with verdict `rejected` and a reason;
 * the promise rejects only when the master cannot be reached
 * ({@linkcode ConnectionError}), the handshake fails or the link breaks
 * ({@linkcode ProtocolError}), or `signal` aborts.
 *
 * @example Running a program and watching its output live
 * ```ts ignore
 * import { submitProgram } from "./client.ts";
 *
 * const result = await submitProgram({
 *   language: "python",
 *   files: [{ name: "main.py", content: "print('hello')" }],
 * }, {
 *   master: "127.0.0.1:7700",
 *   onEvent: (event) => {
 *     if (event.type === "queued") console.log(`waiting, position ${event.position}`);
 *     if (event.type === "output") console.log(event.data);
 *   },
 * });
 * console.log(result.verdict, result.timeMs);
 * ```
 */
export async function submitProgram(
  request: JobRequest,
  options: SubmitOptions = {},
): Promise<JobResult> {
  const { onEvent, signal, input } = options;
  // The signal covers the dial and the handshake too, and nothing is
  // submitted once it has aborted.
  const connection = await connect(options);
  /** Aborted once the job ended: no more input is read for it. */
  const ended = new AbortController();
  let jobId: string | undefined;
  const onAbort = () => {
    if (jobId) connection.send({ type: "cancel", jobId }).catch(() => {});
    connection.close();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    // Input typed while the job runs needs stdin kept open for it.
    const job = input ? { ...request, interactive: true } : request;
    await connection.send({ type: "submit", ref: "1", job });
    while (true) {
      const message = await connection.receive();
      switch (message.type) {
        case "accepted":
          jobId = message.jobId;
          onEvent?.(message);
          if (input) sendInput(connection, message.jobId, input, ended.signal);
          break;
        case "queued":
        case "started":
        case "output":
        case "restarted":
          onEvent?.(message);
          break;
        case "result":
          ended.abort();
          onEvent?.(message);
          return message.result;
        default:
          throw new ProtocolError(
            "unexpected_message",
            `the master sent an unexpected "${message.type}" message`,
          );
      }
    }
  } catch (error) {
    signal?.throwIfAborted();
    if (error instanceof ProtocolError && error.code === "closed") {
      throw new ProtocolError(
        "closed",
        "the master closed the connection before the job's result",
        { cause: error },
      );
    }
    throw error;
  } finally {
    ended.abort();
    signal?.removeEventListener("abort", onAbort);
    await connection.close();
  }
}

/**
 * Sends each chunk of `input` as stdin of the job as it comes, then EOF.
 * Never rejects: a link that broke ends the job anyway.
 */
async function sendInput(
  connection: Connection,
  jobId: string,
  input: AsyncIterable<string>,
  ended: AbortSignal,
): Promise<void> {
  try {
    for await (const data of input) {
      if (ended.aborted) return; // leaving the loop returns the iterator
      await connection.send({ type: "stdin", jobId, data });
    }
    await connection.send({ type: "stdin", jobId, data: "", eof: true });
  } catch {
    // The connection closed: the job's result (or the error) says why.
  }
}

/** Options of {@linkcode getClusterStatus}: where the master is, and the token. */
export type StatusOptions = Omit<SubmitOptions, "onEvent">;

/**
 * Asks a master for the state of its cluster: every node with its load and
 * languages, and the queue.
 *
 * @example Listing a cluster's nodes
 * ```ts ignore
 * import { getClusterStatus } from "./client.ts";
 *
 * const status = await getClusterStatus({ master: "127.0.0.1:7700" });
 * for (const node of status.nodes) console.log(node.name, `${node.running}/${node.slots}`);
 * ```
 */
export async function getClusterStatus(
  options: StatusOptions = {},
): Promise<ClusterStatus> {
  const connection = await connect(options);
  const onAbort = () => connection.close();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    options.signal?.throwIfAborted();
    await connection.send({ type: "get_status" });
    const message = await connection.receive();
    if (message.type !== "cluster_status") {
      throw new ProtocolError(
        "unexpected_message",
        `the master answered "${message.type}" to get_status`,
      );
    }
    const { type: _, ...status } = message;
    return status;
  } catch (error) {
    options.signal?.throwIfAborted();
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    await connection.close();
  }
}

/**
 * Dials the master and completes the client handshake. Once `signal` has
 * aborted, rejects with its reason, whatever step it stopped.
 */
async function connect(options: SubmitOptions): Promise<Connection> {
  const {
    master = `127.0.0.1:${DEFAULT_PORT}`,
    token = "",
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
    signal,
  } = options;
  signal?.throwIfAborted();
  const address = typeof master === "string" ? parseHostPort(master) : master;
  let conn: Deno.Conn;
  try {
    conn = await dial(address, {
      tls: options.tls,
      timeoutMs: handshakeTimeoutMs,
      signal,
    });
  } catch (error) {
    signal?.throwIfAborted();
    throw error;
  }
  const connection = new Connection(conn, { maxFrameBytes });
  try {
    await clientHandshake(connection, {
      role: "client",
      token,
      timeoutMs: handshakeTimeoutMs,
      signal,
      ...options.name === undefined ? {} : { name: options.name },
    });
    return connection;
  } catch (error) {
    await connection.close();
    signal?.throwIfAborted();
    // Over TLS the master's hang-up means something else: let it speak.
    throw options.tls === undefined ? hintTls(error) : error;
  }
}
