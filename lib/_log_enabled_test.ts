import assert from "node:assert/strict";
import { configure, getLogger, type LogRecord, reset } from "@logtape/logtape";
import { logsAt } from "./_log_enabled.ts";

const log = getLogger(["kiln", "gate-test"]);

/** What `logsAt` says, beside whether LogTape really delivered the record. */
async function both(
  loggers: Parameters<typeof configure>[0]["loggers"],
  level: "debug" | "info" | "warning",
): Promise<{ said: boolean; delivered: boolean }> {
  const records: LogRecord[] = [];
  await configure({
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      ...loggers,
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  try {
    const said = logsAt(log, level)();
    if (level === "debug") log.debug("probe");
    else if (level === "info") log.info("probe");
    else log.warn("probe");
    return { said, delivered: records.length > 0 };
  } finally {
    await reset();
  }
}

Deno.test("logsAt says false with nothing configured, and LogTape drops the record", () => {
  assert.equal(logsAt(log, "fatal")(), false);
});

Deno.test("logsAt agrees with LogTape on which records reach a sink", async () => {
  const cases: [Parameters<typeof both>[0], "debug" | "info" | "warning"][] = [
    [
      [{ category: ["kiln"], lowestLevel: "warning", sinks: ["memory"] }],
      "info",
    ],
    [
      [{ category: ["kiln"], lowestLevel: "warning", sinks: ["memory"] }],
      "warning",
    ],
    [[{ category: ["kiln"], lowestLevel: "info", sinks: ["memory"] }], "info"],
    [[{ category: ["kiln"], lowestLevel: "info", sinks: ["memory"] }], "debug"],
    [[{ category: "kiln", sinks: ["memory"] }], "debug"],
    [[{ category: [], lowestLevel: "info", sinks: ["memory"] }], "info"],
    [
      [{ category: ["other"], lowestLevel: "debug", sinks: ["memory"] }],
      "info",
    ],
    [[{ category: ["kiln"], lowestLevel: null, sinks: ["memory"] }], "warning"],
    // A child level above its parent's sinks' level stops the record.
    [[
      { category: ["kiln"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["kiln", "gate-test"], lowestLevel: "warning" },
    ], "info"],
    // A child with no sinks of its own passes the record on to its parent.
    [[
      { category: ["kiln"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["kiln", "gate-test"], lowestLevel: "debug" },
    ], "info"],
    // ...unless it overrides its parent's sinks.
    [[
      { category: ["kiln"], lowestLevel: "debug", sinks: ["memory"] },
      {
        category: ["kiln", "gate-test"],
        lowestLevel: "debug",
        parentSinks: "override",
      },
    ], "info"],
  ];
  for (const [loggers, level] of cases) {
    const { said, delivered } = await both(loggers, level);
    assert.equal(said, delivered, `${JSON.stringify(loggers)} at ${level}`);
  }
});

Deno.test("logsAt reads a new configuration as soon as it is installed", async () => {
  const logsInfo = logsAt(log, "info");
  assert.equal(logsInfo(), false);
  await configure({
    sinks: { memory: () => {} },
    loggers: [
      { category: ["kiln"], lowestLevel: "info", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  try {
    assert.equal(logsInfo(), true);
  } finally {
    await reset();
  }
  assert.equal(logsInfo(), false);
});
