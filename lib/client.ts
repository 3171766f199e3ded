/**
 * Submitting programs to a kiln master from TypeScript, one call at a
 * time: {@linkcode submitProgram} and {@linkcode getClusterStatus} each
 * open a connection of their own and close it when done. For many jobs,
 * keep one {@linkcode KilnClient}.
 *
 * @module
 */
import type { JobRequest, JobResult } from "./job.ts";
import { ConnectionError } from "./protocol/errors.ts";
import type { ClusterStatus } from "./protocol/messages.ts";
import {
  type ConnectOptions,
  type JobOptions,
  KilnClient,
  type KilnClientOptions,
} from "./kiln_client.ts";

export { ConnectionError };

/**
 * Options of {@linkcode submitProgram}: where the masters are, and the
 * job's own.
 */
export interface SubmitOptions
  extends ConnectOptions, JobOptions, Pick<KilnClientOptions, "maxSubmits"> {}

/**
 * Runs a program on a kiln cluster and resolves with its result, over a
 * connection of its own: a one-shot {@linkcode KilnClient}. Given several
 * masters (`master: "a:7700,b:7700"`), it dials them in turn, once each,
 * and when the connection drops before the result it goes on through the
 * next master (see {@linkcode KilnClient}: the job is attached there, or
 * submitted again up to `maxSubmits` times in all). A job the cluster
 * refuses still resolves, with verdict `rejected` and a reason; the promise
 * rejects only when no master can be reached ({@linkcode ConnectionError},
 * after one dial of each), a handshake fails ({@linkcode ProtocolError}),
 * or `signal` aborts.
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
  await using client = oneShot(options);
  return await client.submit(request, options);
}

/** Options of {@linkcode getClusterStatus}: where the master is, and a signal. */
export interface StatusOptions extends ConnectOptions {
  /** Aborting it gives the request up and rejects with the abort reason. */
  signal?: AbortSignal | undefined;
}

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
  await using client = oneShot(options);
  return await client.status(options);
}

/**
 * A client for one call: masters that cannot be reached, each dialed once
 * in turn, fail it at once.
 */
function oneShot(options: SubmitOptions): KilnClient {
  const {
    master,
    token,
    name,
    maxFrameBytes,
    handshakeTimeoutMs,
    tls,
    maxSubmits,
  } = options;
  return new KilnClient({
    master,
    token,
    name,
    maxFrameBytes,
    handshakeTimeoutMs,
    tls,
    maxSubmits,
    connectAttempts: 1,
  });
}
