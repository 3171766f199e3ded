import assert from "node:assert/strict";
import { Connection } from "./connection.ts";
import { ProtocolError } from "./errors.ts";
import { encodeFrame } from "./frame.ts";
import { MessageSchema } from "./messages.ts";
import { socketPair } from "./_testing.ts";

Deno.test("attach and unknown_job are messages of the protocol, and nothing else is", () => {
  const valid = [
    { type: "attach", ref: "7", jobId: "b3c1" },
    { type: "unknown_job", ref: "7", jobId: "b3c1", reason: "not here" },
  ];
  for (const message of valid) {
    assert.deepEqual(MessageSchema.parse(message), message);
  }
  const invalid: [unknown, RegExp][] = [
    [{ type: "attach", jobId: "b3c1" }, /ref/],
    [{ type: "attach", ref: "", jobId: "b3c1" }, /ref/],
    [{ type: "attach", ref: "7", jobId: "" }, /jobId/],
    [{ type: "attach", ref: "7", jobId: "j".repeat(129) }, /jobId/],
    [{ type: "attach", ref: "r".repeat(129), jobId: "j" }, /ref/],
    [{ type: "attach", ref: "7", jobId: "j", extra: 1 }, /extra/],
    [{ type: "unknown_job", ref: "7", jobId: "j" }, /reason/],
    [{ type: "unknown_job", ref: "7", jobId: "j", reason: 5 }, /reason/],
    [
      { type: "unknown_job", ref: "7", jobId: "j", reason: "x".repeat(4097) },
      /reason/,
    ],
  ];
  for (const [message, complaint] of invalid) {
    const parsed = MessageSchema.safeParse(message);
    assert.equal(parsed.success, false, JSON.stringify(message));
    assert.match(
      JSON.stringify(parsed.error?.issues),
      complaint,
      JSON.stringify(message),
    );
  }
});

Deno.test("a connection refuses a malformed attach readably and reads the next message", async () => {
  const { client, server } = await socketPair();
  const connection = new Connection(server);
  await client.write(encodeFrame({ type: "attach", ref: "1" }));
  await assert.rejects(connection.receive(), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.code, "invalid_message");
    assert.match(error.message, /jobId/);
    return true;
  });
  await client.write(encodeFrame({ type: "attach", ref: "2", jobId: "j" }));
  assert.deepEqual(await connection.receive(), {
    type: "attach",
    ref: "2",
    jobId: "j",
  });
  client.close();
  await connection.close();
});
