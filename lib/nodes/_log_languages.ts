/**
 * What a node that runs jobs says about its toolchains at start, the same
 * on the master and on a secondary.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { RunnerStatus } from "../runners/registry.ts";

/** Logs a language as available (info) with its version, or why not (warning). */
export function logLanguage(log: Logger, status: RunnerStatus): void {
  if (status.toolchain.available) {
    log.info("language {name}: {version}", {
      name: status.name,
      version: status.toolchain.version,
    });
  } else {
    log.warn("language {name} unavailable: {reason}", {
      name: status.name,
      reason: status.toolchain.reason,
    });
  }
}
