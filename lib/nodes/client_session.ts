/**
 * One authenticated client connection as the master sees it: where to send
 * the events of its jobs, and which jobs die with it when it goes away.
 *
 * @module
 */
import type { JobResult } from "../job.ts";
import type { Connection } from "../protocol/connection.ts";
import type { ClientQuota } from "../security/credentials.ts";
import { type Message, resultMessage } from "../protocol/messages.ts";
import { offerOutput } from "../protocol/output_messages.ts";

/**
 * A client connected to the master.
 *
 * @example Sending a job's events to its client
 * ```ts ignore
 * const session = new ClientSession(connection, "alice");
 * session.send({ type: "queued", jobId, position: 3, estimatedWaitMs: 4500 });
 * ```
 */
export class ClientSession {
  /** Display name from the handshake, or the client's address. */
  readonly name: string;
  /**
   * Who the client is for fair queueing: its declared name, or its host.
   * Several connections of one client share it.
   */
  readonly client: string;
  /** Ids of this client's jobs that have not ended yet. */
  readonly jobs: Set<string> = new Set();
  /** Called after each result is sent: the master's idle countdown restarts. */
  onResult: (() => void) | undefined;
  #connection: Connection;
  #quota: () => Readonly<ClientQuota> | undefined;
  /**
   * Jobs whose live output the client did not keep up with: the rest of it
   * is not sent. Made at the first loss: a master holds thousands of
   * sessions, nearly all of which never lose any.
   */
  #lostOutput: Set<string> | undefined;

  constructor(
    connection: Connection,
    name: string,
    client: string = name,
    quota: () => Readonly<ClientQuota> | undefined = () => undefined,
  ) {
    this.#connection = connection;
    this.name = name;
    this.client = client;
    this.#quota = quota;
  }

  /** The client's job quota now, or undefined when it has none. */
  get quota(): Readonly<ClientQuota> | undefined {
    return this.#quota();
  }

  /**
   * Sends a message, in order with every earlier one. A client that has gone
   * away simply misses it: its jobs are cancelled by the master, so nothing
   * is lost that anyone is waiting for.
   *
   * Live output is cut to fit the frames and sent only while the client
   * keeps up (the connection's high-water mark): past it, the rest of that
   * job's output is dropped, and its result says `truncated`. Any other
   * message the client does not read in time closes it with `slow_peer`.
   */
  send(message: Message): void {
    if (message.type === "output") {
      if (this.#lostOutput?.has(message.jobId)) return;
      if (!offerOutput(this.#connection, message)) {
        (this.#lostOutput ??= new Set()).add(message.jobId);
      }
      return;
    }
    this.#connection.post(message);
  }

  /**
   * Sends a job's result, cut to fit in one frame if its output, once
   * escaped as JSON, would not: a result too big to send would leave the
   * client waiting forever. `truncated` is set when some of the job's live
   * output was dropped because the client did not read it in time.
   */
  sendResult(result: JobResult): void {
    const lost = this.#lostOutput?.delete(result.jobId) ?? false;
    this.send(
      resultMessage(
        lost ? { ...result, truncated: true } : result,
        this.#connection.maxSendFrameBytes,
      ),
    );
    this.onResult?.();
  }
}
