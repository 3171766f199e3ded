import assert from "node:assert/strict";
import { printable } from "./_terminal.ts";
import { formatStatus } from "./status.ts";
import type { ClusterStatus } from "../lib/protocol/messages.ts";

Deno.test("printable escapes controls, DEL, C1 and bidi overrides, and nothing else", () => {
  assert.equal(printable("a\x00b\x7fc\x9bd"), "a\\x00b\\x7fc\\x9bd");
  assert.equal(printable("evil\u202eexe.txt"), "evil\\u202eexe.txt");
  assert.equal(printable("tab\there\r\n"), "tab\\there\\r\\n");
  assert.equal(printable("名前 ünïcode ✓"), "名前 ünïcode ✓");
});

Deno.test("the status table escapes what nodes say of themselves", () => {
  const node = {
    id: "n1",
    name: "east\x1b[2J",
    address: "127.0.0.1:1\nfake-node  127.0.0.1:2  up",
    local: false,
    state: "up",
    slots: 2,
    running: 0,
    cpuPercent: 1,
    ramPercent: 2,
    languages: [{ name: "bash\x1b]0;pwned\x07", version: "5", aliases: [] }],
    sandbox: null,
  };
  const status = {
    type: "cluster_status",
    master: "m\x1b[31m",
    nodes: [node],
    queued: 0,
    running: 0,
  } as unknown as ClusterStatus;
  const table = formatStatus(status);
  assert.ok(!table.includes("\x1b") && !table.includes("\x07"));
  assert.equal(table.split("\n").length, 4, "header, one row, blank, summary");
  assert.match(table, /east\\x1b\[2J/);
  assert.match(table, /127\.0\.0\.1:1\\nfake-node/);
  assert.match(table, /master m\\x1b\[31m:/);
});
