import assert from "node:assert/strict";
import { JobInput, type StdinSender } from "./_job_input.ts";
import { InputChannel } from "./sandbox/input_channel.ts";
import { MAX_INPUT_BYTES } from "./scheduler/dispatcher.ts";

/** A sender that records each chunk as `name:data` (`<eof>` for EOF) and answers `ok`. */
function recorder(name: string, sent: string[], ok = true): StdinSender {
  return (data, eof) => {
    sent.push(`${name}:${data}${eof ? "<eof>" : ""}`);
    return Promise.resolve(ok);
  };
}

/**
 * Lets the microtask queue run until `done()`: each chunk takes a few turns
 * (read, write, flush), and a few hundred turns with no progress is a bug.
 */
async function settle(done: () => boolean): Promise<void> {
  for (let turn = 0; !done(); turn++) {
    if (turn > 1000) assert.fail("JobInput made no progress");
    await Promise.resolve();
  }
}

/** Resolves once `sent` holds `count` chunks. */
function until(sent: string[], count: number): Promise<void> {
  return settle(() => sent.length >= count);
}

Deno.test("JobInput reads nothing before the job is attached, then sends each chunk in order, EOF last", async () => {
  const source = new InputChannel();
  source.push("a");
  source.push("b");
  source.end();
  const input = new JobInput(source);
  const sent: string[] = [];
  await Promise.resolve();
  assert.deepEqual(sent, []);
  input.attach(recorder("1", sent), true);
  await until(sent, 3);
  assert.deepEqual(sent, ["1:a", "1:b", "1:<eof>"]);
});

Deno.test("JobInput holds chunks while detached, resends one whose link ended, and sends the rest once attached again", async () => {
  const source = new InputChannel();
  const input = new JobInput(source);
  const sent: string[] = [];
  input.attach(recorder("1", sent), true);
  source.push("a");
  await until(sent, 1);
  // The link ends: the next chunk's write finds it gone.
  input.attach(recorder("dead", sent, false), false);
  source.push("b");
  await until(sent, 2);
  input.detach();
  source.push("c");
  source.end();
  input.attach(recorder("2", sent), false);
  await until(sent, 5);
  assert.deepEqual(sent, ["1:a", "dead:b", "2:b", "2:c", "2:<eof>"]);
});

Deno.test("JobInput sends a fresh run of the job every chunk again, from the first", async () => {
  const source = new InputChannel();
  const input = new JobInput(source);
  const sent: string[] = [];
  input.attach(recorder("1", sent), true);
  source.push("a");
  source.push("b");
  await until(sent, 2);
  input.detach();
  input.attach(recorder("2", sent), true);
  await until(sent, 4);
  source.end();
  await until(sent, 5);
  assert.deepEqual(sent, ["1:a", "1:b", "2:a", "2:b", "2:<eof>"]);
});

Deno.test("JobInput reads the next chunk only once the last was written", async () => {
  let reads = 0;
  async function* source() {
    for (const chunk of ["a", "b", "c"]) {
      reads++;
      yield chunk;
    }
  }
  const input = new JobInput(source());
  const writes: PromiseWithResolvers<boolean>[] = [];
  input.attach(() => {
    const write = Promise.withResolvers<boolean>();
    writes.push(write);
    return write.promise;
  }, true);
  await settle(() => writes.length >= 1);
  for (let turn = 0; turn < 10; turn++) await Promise.resolve();
  assert.equal(reads, 1, "no read while the first chunk is being written");
  writes[0]!.resolve(true);
  await settle(() => writes.length >= 2);
  assert.equal(reads, 2);
  input.stop();
  writes[1]!.resolve(true);
});

Deno.test("JobInput ends stdin where a master would, past MAX_INPUT_BYTES, and stops reading there", async () => {
  let returned = false;
  const big = "x".repeat(MAX_INPUT_BYTES / 2);
  async function* source() {
    try {
      for (;;) yield big;
    } finally {
      returned = true;
    }
  }
  const input = new JobInput(source());
  const sent: string[] = [];
  input.attach((data, eof) => {
    sent.push(eof ? `<eof>${data.length}` : String(data.length));
    return Promise.resolve(true);
  }, true);
  await until(sent, 3);
  await settle(() => returned);
  assert.deepEqual(sent, [String(big.length), String(big.length), "<eof>0"]);
});

Deno.test("JobInput: stop() sends nothing more and returns the source's iterator at its next chunk", async () => {
  let returned = false;
  const next = Promise.withResolvers<void>();
  async function* source() {
    try {
      yield "a";
      await next.promise;
      yield "b";
    } finally {
      returned = true;
    }
  }
  const input = new JobInput(source());
  const sent: string[] = [];
  input.attach(recorder("1", sent), true);
  await until(sent, 1);
  input.stop();
  next.resolve();
  await settle(() => returned);
  assert.deepEqual(sent, ["1:a"]);
});

Deno.test("JobInput: a source that throws ends stdin, rather than leave the program waiting", async () => {
  async function* source() {
    yield "a";
    throw new Error("the caller's input broke");
  }
  const input = new JobInput(source());
  const sent: string[] = [];
  input.attach(recorder("1", sent), true);
  await until(sent, 2);
  assert.deepEqual(sent, ["1:a", "1:<eof>"]);
});
