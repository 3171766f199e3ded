import assert from "node:assert/strict";
import { OutputCapture } from "./output_capture.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** A stream of `chunks`, then its end. */
function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks);
}

Deno.test("OutputCapture cuts at a character boundary, never keeping half a character", async () => {
  let limits = 0;
  const capture = new OutputCapture({
    limitBytes: 3,
    onLimit: () => limits++,
  });
  // "€" is 3 bytes: the limit falls after its first.
  const text = await capture.drain(streamOf(bytes("aa€")), streamOf());
  assert.deepEqual(text, { stdout: "aa", stderr: "", truncated: true });
  assert.equal(limits, 1);
});

Deno.test("OutputCapture drops the split character of the other stream too", async () => {
  const euro = bytes("€");
  const streamed: string[] = [];
  const stdoutRead = Promise.withResolvers<void>();
  const limitHit = Promise.withResolvers<void>();
  const capture = new OutputCapture({
    limitBytes: 8,
    onOutput: (stream, data) => {
      streamed.push(`${stream}:${data}`);
      if (stream === "stdout") stdoutRead.resolve();
    },
    onLimit: () => limitHit.resolve(),
  });
  // stdout's "€" is split across two chunks; stderr spends the budget in
  // between, so its last two bytes are never kept.
  const stdout = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new Uint8Array([...bytes("ab"), euro[0]!]));
      await limitHit.promise;
      controller.enqueue(euro.subarray(1));
      controller.close();
    },
  });
  const stderr = new ReadableStream<Uint8Array>({
    async start(controller) {
      await stdoutRead.promise;
      controller.enqueue(bytes("0123456789"));
      controller.close();
    },
  });
  const text = await capture.drain(stdout, stderr);
  assert.deepEqual(text, { stdout: "ab", stderr: "01234", truncated: true });
  assert.deepEqual(streamed, ["stdout:ab", "stderr:01234"]);
});

Deno.test("OutputCapture keeps an incomplete character at the end of untruncated output as U+FFFD", async () => {
  const capture = new OutputCapture({ limitBytes: 100 });
  const text = await capture.drain(
    streamOf(bytes("a"), bytes("€").subarray(0, 2)),
    streamOf(),
  );
  assert.deepEqual(text, { stdout: "a\uFFFD", stderr: "", truncated: false });
});
