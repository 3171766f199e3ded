import assert from "node:assert/strict";
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from "./frame.ts";
import { ProtocolError } from "./errors.ts";

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A frame with a hand-written header, for bodies encodeFrame would never build. */
function rawFrame(body: Uint8Array | string, declared?: number): Uint8Array {
  const bytes = typeof body === "string"
    ? new TextEncoder().encode(body)
    : body;
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, declared ?? bytes.length);
  return concat(header, bytes);
}

function assertProtocolError(code: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(
      error instanceof ProtocolError,
      `expected a ProtocolError, got ${error}`,
    );
    assert.equal(error.code, code);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("encodeFrame() writes a big-endian byte length then UTF-8 JSON", () => {
  const message = { type: "output", data: "héllo ✓ 🔥" };
  const frame = encodeFrame(message);
  const body = new TextEncoder().encode(JSON.stringify(message));
  assert.deepEqual([...frame.subarray(0, 4)], [0, 0, 0, body.length]);
  assert.deepEqual(frame.subarray(4), body);
  assert.deepEqual(new FrameDecoder().push(frame), [message]);
});

Deno.test("encodeFrame() refuses a body over the limit, counting UTF-8 bytes", () => {
  assert.equal(encodeFrame("x".repeat(8), 10).length, 14); // "\"xxxxxxxx\"" is exactly 10
  assert.throws(
    () => encodeFrame("x".repeat(9), 10),
    assertProtocolError("frame_too_large", /exceeds the limit of 10 bytes/),
  );
  // 4 UTF-16 units, but 2 + 3 * 3 = 11 UTF-8 bytes.
  assert.throws(
    () => encodeFrame("€€€", 10),
    assertProtocolError("frame_too_large", /11 bytes/),
  );
});

Deno.test("encodeFrame() rejects values that are not JSON and bad limits", () => {
  assert.throws(() => encodeFrame(undefined), TypeError);
  assert.throws(() => encodeFrame({ n: 1n }), TypeError);
  assert.throws(() => encodeFrame({}, 0), RangeError);
  assert.throws(() => encodeFrame({}, 2 ** 32), RangeError);
  assert.throws(() => new FrameDecoder({ maxFrameBytes: 1.5 }), RangeError);
});

Deno.test("FrameDecoder reassembles frames fed one byte at a time, headers included", () => {
  const messages = [{ a: 1 }, "two", [3, { four: "✓" }], null];
  const stream = concat(...messages.map((message) => encodeFrame(message)));
  const decoder = new FrameDecoder();
  const values: unknown[] = [];
  for (let i = 0; i < stream.length; i++) {
    values.push(...decoder.push(stream.subarray(i, i + 1)));
  }
  decoder.end();
  assert.deepEqual(values, messages);
});

Deno.test("FrameDecoder returns every frame of a chunk that holds several", () => {
  const decoder = new FrameDecoder();
  const first = encodeFrame({ n: 1 });
  const stream = concat(
    first,
    encodeFrame({ n: 2 }),
    encodeFrame({ n: 3 }),
    first.subarray(0, 6),
  );
  assert.deepEqual(decoder.push(stream), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.deepEqual(decoder.push(first.subarray(6)), [{ n: 1 }]);
  decoder.end();
});

Deno.test("FrameDecoder refuses an oversized length from the header alone", () => {
  const decoder = new FrameDecoder();
  // 4 GiB - 1 declared, no body at all: the error must not wait for one.
  const header = new Uint8Array([0xff, 0xff, 0xff, 0xff]);
  assert.throws(
    () => decoder.push(header),
    assertProtocolError(
      "frame_too_large",
      /4294967295 bytes exceeds the limit of 8388608/,
    ),
  );
  // The stream has lost its framing: every later call says so.
  assert.throws(
    () => decoder.push(new Uint8Array([1, 2, 3])),
    assertProtocolError("frame_too_large"),
  );
  assert.throws(() => decoder.end(), assertProtocolError("frame_too_large"));

  const small = new FrameDecoder({ maxFrameBytes: 16 });
  assert.throws(
    () => small.push(rawFrame("", 17).subarray(0, 4)),
    assertProtocolError("frame_too_large"),
  );
  assert.deepEqual(new FrameDecoder().push(rawFrame("1", 1)), [1]);
  assert.equal(DEFAULT_MAX_FRAME_BYTES, 8 * 1024 * 1024);
});

Deno.test("FrameDecoder calls an empty body, bad UTF-8, a BOM or bad JSON malformed", () => {
  const cases: [Uint8Array, RegExp][] = [
    [rawFrame(""), /body is empty/],
    [rawFrame(new Uint8Array([0x22, 0xff, 0xfe, 0x22])), /not valid UTF-8/],
    [rawFrame("\ufeff{}"), /not JSON/],
    [rawFrame("{not json"), /not JSON/],
    [new TextEncoder().encode("\0\0\0\x05hello"), /not JSON/],
  ];
  for (const [bytes, pattern] of cases) {
    assert.throws(
      () => new FrameDecoder().push(bytes),
      assertProtocolError("malformed", pattern),
    );
  }
});

Deno.test("FrameDecoder hands out good frames before the bad one that follows them", () => {
  const decoder = new FrameDecoder();
  assert.deepEqual(
    decoder.push(concat(encodeFrame({ ok: true }), rawFrame("garbage"))),
    [{ ok: true }],
  );
  assert.throws(
    () => decoder.push(new Uint8Array(0)),
    assertProtocolError("malformed"),
  );
});

Deno.test("FrameDecoder.end() reports a stream cut inside a header or a body", () => {
  const frame = encodeFrame({ type: "cancel", jobId: "j1" });
  const inHeader = new FrameDecoder();
  inHeader.push(frame.subarray(0, 2));
  assert.throws(
    () => inHeader.end(),
    assertProtocolError("truncated", /got 2 of 4 bytes/),
  );

  const inBody = new FrameDecoder();
  inBody.push(frame.subarray(0, 10));
  assert.throws(
    () => inBody.end(),
    assertProtocolError(
      "truncated",
      new RegExp(`got 6 of ${frame.length - 4} body bytes`),
    ),
  );
});

Deno.test("FrameDecoder copies chunks, so a reader may reuse its buffer", () => {
  const frame = encodeFrame({ text: "abcdefghijklmnopqrstuvwxyz" });
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(7);
  const values: unknown[] = [];
  for (let offset = 0; offset < frame.length; offset += buffer.length) {
    const piece = frame.subarray(offset, offset + buffer.length);
    buffer.set(piece);
    values.push(...decoder.push(buffer.subarray(0, piece.length)));
    buffer.fill(0x7b); // scribble over it, as the next read would
  }
  assert.deepEqual(values, [{ text: "abcdefghijklmnopqrstuvwxyz" }]);
});

Deno.test("FrameDecoder reassembles a large frame from many small chunks", () => {
  const message = { data: "x".repeat(4 * 1024 * 1024) };
  const frame = encodeFrame(message);
  const decoder = new FrameDecoder();
  const values: unknown[] = [];
  for (let offset = 0; offset < frame.length; offset += 1000) {
    values.push(...decoder.push(frame.subarray(offset, offset + 1000)));
  }
  assert.deepEqual(values, [message]);
});

Deno.test("FrameDecoder refuses a deeply nested body at the cap before parsing it, naming the depth", () => {
  const half = (DEFAULT_MAX_FRAME_BYTES - 2) / 2;
  const bomb = "[".repeat(half) + "]".repeat(half);
  const decoder = new FrameDecoder();
  assert.throws(
    () => decoder.push(rawFrame(bomb)),
    assertProtocolError("malformed", /nested deeper than 64 levels/),
  );
  // 64 levels are fine; brackets inside strings do not count.
  const ok = new FrameDecoder();
  const deep = "[".repeat(64) + '"[[[[{{{{"' + "]".repeat(64);
  assert.equal(ok.push(rawFrame(deep)).length, 1);
});

Deno.test("encodeFrame() frames small and large messages alike, each in a buffer of its own", () => {
  const decode = (frame: Uint8Array) => {
    const length = new DataView(frame.buffer, frame.byteOffset).getUint32(0);
    assert.equal(length, frame.length - 4);
    assert.equal(frame.buffer.byteLength, frame.length, "a buffer of its own");
    return JSON.parse(new TextDecoder().decode(frame.subarray(4)));
  };
  // Small ones go through a reused buffer, large ones (over 21,845 units, a
  // third of it) are encoded on their own; multi-byte text in both.
  const small = { type: "output", data: "é€😀 small" };
  const large = { type: "output", data: "é€😀".repeat(10_000) };
  const first = encodeFrame(small);
  const second = encodeFrame({ type: "cancel", jobId: "j2" });
  assert.deepEqual(decode(first), small, "not overwritten by the next frame");
  assert.deepEqual(decode(second), { type: "cancel", jobId: "j2" });
  assert.deepEqual(decode(encodeFrame(large)), large);
  // The limit counts UTF-8 bytes on the small path too.
  assert.throws(
    () => encodeFrame("€".repeat(100), 250),
    assertProtocolError("frame_too_large", /302 bytes/),
  );
});
