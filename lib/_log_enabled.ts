/**
 * Whether a log record would reach any sink, asked before building it.
 *
 * LogTape builds every record in full (its message parsed, its properties
 * copied, the whole record copied again with its category) and only then
 * finds that no sink takes it: on a master logging at `warning`, the
 * `info` lines of every job cost more than the rest of its bookkeeping.
 * LogTape 1.3 has no `isEnabledFor`, so this reads its configuration
 * (`getConfig()`) the way its loggers use it, and remembers the answer
 * until the configuration object changes (every `configure` installs a
 * new one).
 *
 * @module
 */
import {
  compareLogLevel,
  type Config,
  getConfig,
  type Logger,
  type LoggerConfig,
  type LogLevel,
} from "@logtape/logtape";

/**
 * A check, cheap enough for every job, of whether `logger` logs at `level`
 * now: false only when LogTape would drop the record unseen.
 *
 * @example Building a costly record only when something reads it
 * ```ts
 * import assert from "node:assert/strict";
 * import { getLogger } from "@logtape/logtape";
 * import { logsAt } from "./_log_enabled.ts";
 *
 * const log = getLogger(["kiln", "example"]);
 * const logsInfo = logsAt(log, "info");
 * assert.equal(logsInfo(), false); // nothing is configured: no sink at all
 * if (logsInfo()) log.info("job {jobId} done", { jobId: "j1" });
 * ```
 */
export function logsAt(logger: Logger, level: LogLevel): () => boolean {
  let seen: unknown = logsAt; // No configuration is ever this.
  let logged = true;
  return () => {
    const config = getConfig();
    if (config !== seen) {
      seen = config;
      logged = config !== null &&
        reachesSink(config, logger.category, level);
    }
    return logged;
  };
}

/**
 * Whether a record of `category` at `level` reaches a sink under `config`,
 * as LogTape decides it: from the record's own logger up to the root, each
 * logger passes records at its `lowestLevel` or above on to its own sinks
 * and to its parent's (unless it overrides them). Filters are not judged
 * here (a filtered record is built and then dropped, as before); with a
 * context storage, where a category prefix can send records elsewhere,
 * every record is built.
 */
function reachesSink(
  config: Config<string, string>,
  category: readonly string[],
  level: LogLevel,
): boolean {
  if (config.contextLocalStorage !== undefined) return true;
  for (let length = category.length; length >= 0; length--) {
    const logger = configured(config.loggers, category.slice(0, length));
    if (logger === undefined) continue; // Unconfigured: passes everything on.
    const lowest = logger.lowestLevel === undefined
      ? "trace"
      : logger.lowestLevel;
    if (lowest === null || compareLogLevel(level, lowest) < 0) return false;
    if ((logger.sinks?.length ?? 0) > 0) return true;
    if (logger.parentSinks === "override") return false;
  }
  return false;
}

function configured(
  loggers: readonly LoggerConfig<string, string>[],
  category: readonly string[],
): LoggerConfig<string, string> | undefined {
  return loggers.find((logger) => {
    const own = typeof logger.category === "string"
      ? [logger.category]
      : logger.category;
    return own.length === category.length &&
      own.every((name, i) => name === category[i]);
  });
}
