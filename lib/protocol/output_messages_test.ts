import assert from "node:assert/strict";
import { Connection } from "./connection.ts";
import { encodeFrame } from "./frame.ts";
import type { OutputEvent } from "./messages.ts";
import { offerOutput, splitOutput } from "./output_messages.ts";
import { readFramesUntilEof, socketPair } from "./_testing.ts";

const output = (data: string): OutputEvent => ({
  type: "output",
  jobId: "j".repeat(128),
  stream: "stderr",
  data,
});

Deno.test("splitOutput() cuts output into frames that fit even when every character is escaped", () => {
  const maxFrameBytes = 16 * 1024;
  for (
    const data of [
      "\x01".repeat(50_000), // six bytes of JSON each
      "😀".repeat(20_000), // surrogate pairs: never cut in half
      "a😀".repeat(20_000), // pairs at odd offsets
      '"\\'.repeat(20_000),
    ]
  ) {
    const pieces = splitOutput(output(data), maxFrameBytes);
    assert.ok(pieces.length > 1);
    assert.equal(pieces.map((piece) => piece.data).join(""), data);
    for (const piece of pieces) {
      encodeFrame(piece, maxFrameBytes); // throws if it does not fit
      assert.ok(!/[\uD800-\uDBFF]$/.test(piece.data), "a pair was cut");
      assert.equal(piece.jobId, "j".repeat(128));
      assert.equal(piece.stream, "stderr");
    }
  }
  const small = output("hello");
  assert.deepEqual(splitOutput(small, maxFrameBytes), [small]);
});

Deno.test("offerOutput() sends a large chunk in pieces, and reports a drop", async () => {
  const { server, client } = await socketPair();
  const connection = new Connection(server, {
    maxFrameBytes: 16 * 1024,
    highWaterBytes: 96 * 1024,
  });
  const reading = readFramesUntilEof(client);
  const data = "\x01".repeat(10_000); // 60 KB as JSON
  assert.ok(offerOutput(connection, output(data)));
  // Offered at once, the pieces of a second chunk pass the high-water mark.
  assert.equal(offerOutput(connection, output(data)), false);
  await connection.send({ type: "cancel", jobId: "j" });
  await connection.close();
  const frames = await reading as OutputEvent[];
  const pieces = splitOutput(output(data), 16 * 1024).length;
  assert.equal(
    frames.slice(0, pieces).map((frame) => frame.data).join(""),
    data,
  );
  // Of the second chunk, only a prefix went out.
  assert.ok(frames.length - 1 < 2 * pieces);
  assert.equal(frames.at(-1)?.type, "cancel");
});
