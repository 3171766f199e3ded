/**
 * Log sinks for the command-line runners. The library only logs through
 * LogTape categories under `kiln`; where those lines go is decided here, once
 * per process: stderr, as text or JSON lines, at the level asked for.
 *
 * @module
 */
import {
  configure,
  dispose,
  getStreamSink,
  getTextFormatter,
  isLogLevel,
  jsonLinesFormatter,
  type LogLevel,
} from "@logtape/logtape";

/** Log formats the CLI offers. */
export type LogFormat = "text" | "json";

/** Sends kiln's logs to stderr. Throws a TypeError naming a bad level or format. */
export async function setupLogging(
  level: string,
  format: string = "text",
): Promise<void> {
  if (!isLogLevel(level)) {
    throw new TypeError(
      `unknown log level "${level}"; use trace, debug, info, warning, error or fatal`,
    );
  }
  if (format !== "text" && format !== "json") {
    throw new TypeError(`unknown log format "${format}"; use text or json`);
  }
  const formatter = format === "json"
    ? jsonLinesFormatter
    : getTextFormatter({ timestamp: "time", category: "." });
  await configure({
    sinks: { stderr: getStreamSink(Deno.stderr.writable, { formatter }) },
    loggers: [
      { category: ["kiln"], lowestLevel: level as LogLevel, sinks: ["stderr"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stderr"],
      },
    ],
  });
}

/** Flushes pending log lines; call before exiting. */
export async function flushLogs(): Promise<void> {
  await dispose();
}
