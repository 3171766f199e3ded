/**
 * A guard for a flaw of `@nats-io/transport-node` under Deno: when a
 * server refuses a connection (a wrong token, say), the transport drops its
 * socket's listeners before the server's reset arrives, so that reset is
 * thrown as an uncaught `ECONNRESET` and would kill the node, after
 * `connect()` already rejected with the real reason ("Authorization
 * Violation"). The guard swallows exactly that error: a read reset that
 * nothing listened for. kiln's own sockets (`Deno.connect`, `Deno.listen`)
 * report their errors to their callers and never reach it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

const log = getLogger(["kiln", "nats"]);

let installed = false;

/** Installs the guard once per process; later calls do nothing. */
export function guardStraySocketResets(): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("error", (event) => {
    const error: unknown = event.error;
    if (
      error instanceof Error &&
      (error as { code?: unknown }).code === "ECONNRESET" &&
      (error as { syscall?: unknown }).syscall === "read"
    ) {
      event.preventDefault();
      log.debug("ignored a reset of a socket nobody listened to: {error}", {
        error,
      });
    }
  });
}
