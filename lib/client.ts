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
} from "./kiln_client.ts";

export { ConnectionError };

/** Options of {@linkcode submitProgram}: where the master is, and the job's own. */
export interface SubmitOptions extends ConnectOptions, JobOptions {}

/**
 * Runs a program on a kiln cluster and resolves with its result, over a
 * connection of its own: a one-shot {@linkcode KilnClient}. A job the
 * cluster refuses still resolves, with verdict `rejected` and a reason;
 * the promise rejects only when the master cannot be reached
 * ({@linkcode ConnectionError}, at the first failed dial), the handshake
 * fails or the link breaks ({@linkcode ProtocolError}), or `signal` aborts.
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

/** A client for one call: a master that cannot be reached fails it at once. */
function oneShot(options: ConnectOptions): KilnClient {
  const { master, token, name, maxFrameBytes, handshakeTimeoutMs, tls } =
    options;
  return new KilnClient({
    master,
    token,
    name,
    maxFrameBytes,
    handshakeTimeoutMs,
    tls,
    connectAttempts: 1,
  });
}
