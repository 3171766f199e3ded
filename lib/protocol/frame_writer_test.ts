import assert from "node:assert/strict";
import { type ByteSink, FrameWriter } from "./frame_writer.ts";

/** A sink that records each write, taking at most `take` bytes of it. */
function recordingSink(take = Infinity): ByteSink & { writes: number[][] } {
  const writes: number[][] = [];
  return {
    writes,
    write(bytes) {
      const taken = bytes.subarray(0, Math.min(take, bytes.length));
      writes.push([...taken]);
      return Promise.resolve(taken.length);
    },
  };
}

const frame = (...bytes: number[]) => new Uint8Array(bytes);

Deno.test("FrameWriter writes the frames of one turn in one write, and the next turn's in the next", async () => {
  const sink = recordingSink();
  const writer = new FrameWriter(sink, (cause) => cause as Error);
  writer.enqueue(frame(1, 2));
  writer.enqueue(frame(3));
  assert.equal(writer.bufferedBytes, 3);
  await writer.written();
  writer.enqueue(frame(4));
  await writer.written();
  assert.deepEqual(sink.writes, [[1, 2, 3], [4]]);
  assert.equal(writer.bufferedBytes, 0);
  await writer.idle();
});

Deno.test("FrameWriter goes on where a short write stopped, in order", async () => {
  const sink = recordingSink(2);
  const writer = new FrameWriter(sink, (cause) => cause as Error);
  writer.enqueue(frame(1, 2, 3));
  writer.enqueue(frame(4, 5));
  const first = writer.written();
  await Promise.resolve();
  writer.enqueue(frame(6)); // while the first batch is being written
  await Promise.all([first, writer.written()]);
  assert.deepEqual(sink.writes.flat(), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(sink.writes, [[1, 2], [3, 4], [5], [6]]);
  assert.equal(writer.bufferedBytes, 0);
});

Deno.test("FrameWriter writes large frames of a batch each on its own", async () => {
  const sink = recordingSink();
  const writer = new FrameWriter(sink, (cause) => cause as Error);
  writer.enqueue(new Uint8Array(40 * 1024));
  writer.enqueue(new Uint8Array(40 * 1024));
  await writer.written();
  assert.deepEqual(sink.writes.map((w) => w.length), [40 * 1024, 40 * 1024]);
});

Deno.test("FrameWriter fails a batch's waiters with what onFailure says, forgets its bytes, and goes on", async () => {
  const failures: unknown[] = [];
  let calls = 0;
  const sink: ByteSink = {
    write(bytes) {
      calls++;
      // The first write fails, whether it throws or rejects; then all is well.
      if (calls === 1) return Promise.reject(new Error("broken pipe"));
      return Promise.resolve(bytes.length);
    },
  };
  const writer = new FrameWriter(sink, (cause) => {
    failures.push(cause);
    return new Error(`lost: ${(cause as Error).message}`);
  });
  writer.enqueue(frame(1, 2, 3));
  await assert.rejects(writer.written(), /^Error: lost: broken pipe$/);
  assert.equal(writer.bufferedBytes, 0);
  assert.equal(failures.length, 1);
  writer.enqueue(frame(4));
  await writer.written();
  assert.equal(writer.bufferedBytes, 0);

  const throwing = new FrameWriter({
    write() {
      throw new Error("bad resource");
    },
  }, (cause) => cause as Error);
  throwing.enqueue(frame(1));
  await assert.rejects(throwing.written(), /bad resource/);
  assert.equal(throwing.bufferedBytes, 0);
  await throwing.idle();
});

Deno.test("FrameWriter.written() and idle() resolve at once when nothing waits", async () => {
  const writer = new FrameWriter(recordingSink(), (cause) => cause as Error);
  await writer.written();
  await writer.idle();
  // Asked while a batch is in flight (nothing queued behind it), it waits for that batch.
  let release!: (n: number) => void;
  const slow = new FrameWriter({
    write: () => new Promise<number>((resolve) => (release = resolve)),
  }, (cause) => cause as Error);
  slow.enqueue(frame(1, 2));
  await new Promise((resolve) => setTimeout(resolve, 0));
  let done = false;
  const written = slow.written().then(() => (done = true));
  const idle = slow.idle();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(done, false);
  release(2);
  await Promise.all([written, idle]);
  assert.equal(slow.bufferedBytes, 0);
});
