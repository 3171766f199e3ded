/**
 * For tests that read what kiln logs: send one category's records to a
 * callback, until disposed.
 *
 * @module
 */
import {
  configure,
  type LogLevel,
  type LogRecord,
  reset,
} from "@logtape/logtape";

/** What {@linkcode captureLogs} listens to. */
export interface CaptureOptions {
  /** @default {["kiln"]} */
  readonly category?: readonly string[];
  /** @default {"debug"} */
  readonly lowestLevel?: LogLevel;
}

/**
 * Sends every record of `category` at `lowestLevel` or above to `sink`
 * (LogTape's own notices are kept quiet). Replaces any configuration;
 * disposing resets it.
 *
 * @example Reading a node's warnings
 * ```ts
 * import assert from "node:assert/strict";
 * import { getLogger, type LogRecord } from "@logtape/logtape";
 * import { captureLogs } from "./_log_testing.ts";
 *
 * const records: LogRecord[] = [];
 * {
 *   await using _logs = await captureLogs((r) => records.push(r), {
 *     lowestLevel: "warning",
 *   });
 *   getLogger(["kiln", "test"]).warn("careful");
 *   getLogger(["kiln", "test"]).info("not kept");
 * }
 * assert.deepEqual(records.map((r) => r.message.join("")), ["careful"]);
 * ```
 */
export async function captureLogs(
  sink: (record: LogRecord) => void,
  { category = ["kiln"], lowestLevel = "debug" }: CaptureOptions = {},
): Promise<AsyncDisposable> {
  await configure({
    sinks: { memory: sink },
    loggers: [
      { category: [...category], lowestLevel, sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  return { [Symbol.asyncDispose]: () => reset() };
}

/** One record as a line: its message, then its properties as JSON. */
export function recordLine(record: LogRecord): string {
  return `${record.message.map(String).join("")} ${
    JSON.stringify(record.properties)
  }`;
}
