/**
 * Fuzzing the wire protocol with seeded random and mutated frames: first the
 * frame decoder and the message validators, in process; then a live master
 * process over TCP on 127.0.0.1, before and after authentication. The
 * decoder may only ever throw {@linkcode ProtocolError}; the master must
 * answer with valid messages (an `error` last, when it gives up), never
 * crash nor log an error, close every connection, keep its memory in
 * bounds, and still run a normal job afterwards.
 *
 * Seeds live in `tests/fuzz_corpus/`: `*.json` holds one message, sent
 * framed; `*.bin` holds raw bytes, sent as they are. Every run prints its
 * seed; `KILN_FUZZ_SEED=<seed> deno test -A tests/fuzz_test.ts` repeats it,
 * and a failing case names its number.
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { startMasterProcess } from "../cli/_processes.ts";
import { submitProgram } from "../mod.ts";
import { Connection } from "../lib/protocol/connection.ts";
import { PROTOCOL_ERROR_CODES, ProtocolError } from "../lib/protocol/errors.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoder,
} from "../lib/protocol/frame.ts";
import { clientHandshake } from "../lib/protocol/handshake.ts";
import { MessageSchema } from "../lib/protocol/messages.ts";
import { parseJob } from "../lib/nodes/admission.ts";

const SEED = Number(Deno.env.get("KILN_FUZZ_SEED") ?? Date.now() % 2 ** 31);
const TOKEN = "fuzz-token-0123456789";
const CORPUS = new URL("./fuzz_corpus/", import.meta.url);
/** Inputs thrown at the decoder alone. */
const DECODER_INPUTS = 20_000;
/** Connections to the live master: even ones stay unauthenticated, odd ones pass the handshake first. */
const MASTER_CASES = Number(Deno.env.get("KILN_FUZZ_CASES") ?? 4_400);
/** Cases run before the master's memory is first measured, so that it has warmed up. */
const WARM_UP_CASES = 400;
/** Connections open at once. */
const LANES = 48;
/** The fuzzed master's frame cap after authentication: small, so a declared length costs little. */
const MASTER_MAX_FRAME_BYTES = 64 * 1024;
/** How much the master's resident memory may grow over the run: generous, a leak check, not a benchmark. */
const RSS_GROWTH_BOUND_KB = 128 * 1024;

console.log(`fuzz seed ${SEED} (repeat with KILN_FUZZ_SEED=${SEED})`);

/** mulberry32: small, fast, and the same everywhere for a given seed. */
class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(256));
  }
}

/** The generator of one case: the same seed and index give the same case, whatever runs beside it. */
function caseRng(index: number): Rng {
  return new Rng(
    Math.imul(SEED ^ 0x9e3779b9, 0x85ebca6b) ^ (index * 2654435761),
  );
}

interface Seed {
  name: string;
  /** The bytes as sent: a frame for a JSON seed. */
  bytes: Uint8Array;
  /** The message of a JSON seed. */
  message?: unknown;
}

const encoder = new TextEncoder();

/** Frames any value, whatever its size (the decoder under test decides). */
function frame(body: Uint8Array | string): Uint8Array {
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

async function loadCorpus(): Promise<Seed[]> {
  const seeds: Seed[] = [];
  for await (const entry of Deno.readDir(CORPUS)) {
    const url = new URL(entry.name, CORPUS);
    if (entry.name.endsWith(".json")) {
      const message = JSON.parse(await Deno.readTextFile(url));
      seeds.push({
        name: entry.name,
        bytes: frame(JSON.stringify(message)),
        message,
      });
    } else if (entry.name.endsWith(".bin")) {
      seeds.push({ name: entry.name, bytes: await Deno.readFile(url) });
    }
  }
  // Directory order varies between file systems; a seed must not.
  return seeds.sort((a, b) => a.name < b.name ? -1 : 1);
}

const SEEDS = await loadCorpus();
/** Seeds a client sends after the handshake, unmutated, to keep its connection going. */
const CLIENT_SEEDS = SEEDS.filter((seed) =>
  /^(submit|cancel|get_status)/.test(seed.name)
);
assert.ok(CLIENT_SEEDS.length >= 3, "the corpus lacks client messages");
const HELLO = SEEDS.find((seed) => seed.name === "hello.json")!;
assert.ok(HELLO, "the corpus lacks hello.json");
/** An `auth` with a MAC of zeros: always the wrong token. */
const AUTH = SEEDS.find((seed) => seed.name === "auth.json")!;
assert.ok(AUTH, "the corpus lacks auth.json");

const MESSAGE_TYPES = [
  ...new Set(
    MessageSchema.options.map((option) => option.shape.type.value as string),
  ),
];
const INTERESTING_NUMBERS = [
  0,
  -1,
  1,
  0.5,
  255,
  256,
  65535,
  65536,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  -(2 ** 53),
  1e308,
  -1e-308,
];
const INTERESTING_STRINGS = [
  "",
  "__proto__",
  "constructor",
  "prototype",
  "../../etc/passwd",
  "a/b",
  ".",
  "..",
  "\0",
  "\ud800",
  "\u{1f525}",
  "\u202e",
  "NaN",
  "x".repeat(300),
  "\n".repeat(50),
  "bash",
  "python",
];
const INTERESTING_LENGTHS = [
  0,
  1,
  2,
  3,
  15,
  16 * 1024,
  16 * 1024 + 1,
  MASTER_MAX_FRAME_BYTES,
  MASTER_MAX_FRAME_BYTES + 1,
  2 ** 31 - 1,
  2 ** 32 - 1,
];

function randomString(rng: Rng): string {
  const length = rng.int(40);
  let text = "";
  for (let i = 0; i < length; i++) {
    text += String.fromCharCode(
      rng.chance(0.8) ? 32 + rng.int(95) : rng.int(0x10000),
    );
  }
  return text;
}

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 7 : 10)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(INTERESTING_NUMBERS);
    case 3:
      return randomString(rng);
    case 4:
      return rng.pick(INTERESTING_STRINGS);
    case 5:
      return rng.int(2e9) - 1e9;
    case 6:
      return rng.pick(MESSAGE_TYPES);
    case 7:
      return Array.from(
        { length: rng.int(5) },
        () => randomValue(rng, depth + 1),
      );
    case 8: {
      const object: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) {
        put(
          object,
          rng.chance(0.3) ? rng.pick(INTERESTING_STRINGS) : randomString(rng),
          randomValue(rng, depth + 1),
        );
      }
      return object;
    }
    default: {
      // Deep nesting: a classic way to overflow a recursive parser.
      let nested: unknown = rng.pick(INTERESTING_NUMBERS);
      for (let i = 1 + rng.int(2000); i > 0; i--) {
        nested = rng.chance(0.5) ? [nested] : { a: nested };
      }
      return nested;
    }
  }
}

/** Sets an own property, even one named `__proto__`, as `JSON.parse` would. */
function put(object: object, key: string | number, value: unknown): void {
  Object.defineProperty(object, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

type Slot = {
  parent: Record<string, unknown> | unknown[];
  key: string | number;
};

/** Up to `limit` places in a value where something can be replaced. */
function slots(value: unknown, limit = 300): Slot[] {
  const found: Slot[] = [];
  const walk = (node: unknown) => {
    if (found.length >= limit || node === null || typeof node !== "object") {
      return;
    }
    const entries: [string | number, unknown][] = Array.isArray(node)
      ? node.map((item, i) => [i, item])
      : Object.entries(node);
    for (const [key, child] of entries) {
      found.push({ parent: node as Slot["parent"], key });
      walk(child);
    }
  };
  walk(value);
  return found;
}

/** Structure-aware mutation: a message that still parses as JSON, changed where it matters. */
function mutateMessage(rng: Rng, message: unknown): Uint8Array {
  let value = structuredClone(message);
  for (let ops = 1 + rng.int(3); ops > 0; ops--) {
    const places = slots(value);
    const objects = places
      .map((slot) =>
        (slot.parent as Record<string | number, unknown>)[slot.key]
      )
      .filter((node): node is Record<string, unknown> =>
        node !== null && typeof node === "object" && !Array.isArray(node)
      );
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      objects.push(value as Record<string, unknown>);
    }
    switch (rng.int(5)) {
      case 0:
      case 1: {
        if (places.length === 0) {
          value = randomValue(rng);
          break;
        }
        const { parent, key } = rng.pick(places);
        put(parent, key, randomValue(rng));
        break;
      }
      case 2: {
        const object = objects.length ? rng.pick(objects) : undefined;
        const keys = object ? Object.keys(object) : [];
        if (object && keys.length) delete object[rng.pick(keys)];
        break;
      }
      case 3: {
        const object = objects.length ? rng.pick(objects) : undefined;
        if (object) {
          put(
            object,
            rng.pick(INTERESTING_STRINGS) || "extra",
            randomValue(rng),
          );
        }
        break;
      }
      default: {
        if (
          value !== null && typeof value === "object" && !Array.isArray(value)
        ) {
          put(value, "type", rng.pick(MESSAGE_TYPES));
        }
      }
    }
  }
  return frame(JSON.stringify(value) ?? "null");
}

/** Byte-level mutation of whatever the seed's bytes are. */
function mutateBytes(rng: Rng, input: Uint8Array): Uint8Array {
  const bytes = input.slice();
  const at = (extra = 0) => rng.int(bytes.length + extra);
  switch (rng.int(9)) {
    case 0: // flip bits
      for (let i = 1 + rng.int(8); i > 0 && bytes.length; i--) {
        bytes[at()]! ^= 1 << rng.int(8);
      }
      return bytes;
    case 1: // overwrite with bytes that matter to JSON and UTF-8
      for (let i = 1 + rng.int(8); i > 0 && bytes.length; i--) {
        bytes[at()] = rng.pick([
          0,
          0xff,
          0x7f,
          0x80,
          0xc3,
          0x22,
          0x7b,
          0x7d,
          0x5c,
          0x2c,
        ]);
      }
      return bytes;
    case 2: { // insert
      const i = at(1);
      return concat([
        bytes.subarray(0, i),
        rng.bytes(1 + rng.int(16)),
        bytes.subarray(i),
      ]);
    }
    case 3: { // delete a range
      const i = at();
      return concat([
        bytes.subarray(0, i),
        bytes.subarray(i + 1 + rng.int(16)),
      ]);
    }
    case 4: { // duplicate a range
      const i = at();
      const j = Math.min(bytes.length, i + 1 + rng.int(32));
      return concat([
        bytes.subarray(0, j),
        bytes.subarray(i, j),
        bytes.subarray(j),
      ]);
    }
    case 5: // truncate
      return bytes.subarray(0, at());
    case 6: { // lie about the length
      const out = bytes.length >= 4
        ? bytes
        : concat([bytes, new Uint8Array(4)]);
      const length = rng.chance(0.5)
        ? rng.pick(INTERESTING_LENGTHS)
        : Math.max(0, out.length - 4 + rng.int(9) - 4);
      new DataView(out.buffer, out.byteOffset).setUint32(0, length);
      return out;
    }
    case 7: { // splice with another seed
      const other = rng.pick(SEEDS).bytes;
      return concat([
        bytes.subarray(0, at()),
        other.subarray(rng.int(other.length)),
      ]);
    }
    default: // a well-framed body of noise
      return frame(rng.bytes(rng.int(200)));
  }
}

/** One hostile input: pure noise, or a seed mutated at the byte or the message level. */
function fuzzInput(rng: Rng, seeds: readonly Seed[] = SEEDS): Uint8Array {
  const roll = rng.next();
  if (roll < 0.05) return rng.bytes(rng.int(300));
  const seed = rng.pick(seeds);
  let bytes = seed.message !== undefined && roll < 0.55
    ? mutateMessage(rng, seed.message)
    : mutateBytes(rng, seed.bytes);
  if (rng.chance(0.2)) bytes = mutateBytes(rng, bytes); // and then some
  return bytes;
}

/** Throws unless `error` is a ProtocolError with a known code. */
function assertProtocolError(error: unknown, context: string): ProtocolError {
  if (!(error instanceof ProtocolError)) {
    throw new Error(`${context}: the decoder threw ${error}`, { cause: error });
  }
  assert.ok(PROTOCOL_ERROR_CODES.includes(error.code), context);
  return error;
}

Deno.test("frame decoder and validators take 20 000 random and mutated inputs, throwing only ProtocolError", () => {
  const rng = new Rng(SEED);
  const limits = { maxProgramBytes: 4096, maxFiles: 32 };
  const outcomes = new Map<string, number>();
  const count = (key: string) =>
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  const started = performance.now();
  for (let i = 0; i < DECODER_INPUTS; i++) {
    const context = `decoder input ${i} (seed ${SEED})`;
    const input = fuzzInput(rng);
    const decoder = new FrameDecoder({
      maxFrameBytes: rng.pick([
        16 * 1024,
        MASTER_MAX_FRAME_BYTES,
        DEFAULT_MAX_FRAME_BYTES,
      ]),
    });
    const values: unknown[] = [];
    try {
      for (let offset = 0; offset < input.length;) {
        const end = offset + 1 + rng.int(input.length - offset);
        values.push(...decoder.push(input.subarray(offset, end)));
        offset = end;
      }
    } catch (error) {
      const failure = assertProtocolError(error, context);
      count(failure.code);
      // Broken once, broken for good: the same error again, never another.
      assert.throws(
        () => decoder.push(new Uint8Array(1)),
        (again) => again === failure,
        context,
      );
      continue;
    }
    try {
      decoder.end();
    } catch (error) {
      count(assertProtocolError(error, context).code);
    }
    for (const value of values) {
      const parsed = MessageSchema.safeParse(value); // must not throw either
      count(parsed.success ? `valid ${parsed.data.type}` : "invalid message");
      if (parsed.success && parsed.data.type === "submit") {
        count(
          parseJob(parsed.data.job, limits).ok ? "job admitted" : "job refused",
        );
      }
    }
    if (values.length === 0) count("no frame");
  }
  const ms = performance.now() - started;
  console.log(
    `decoder: ${DECODER_INPUTS} inputs in ${ms.toFixed(0)} ms (${
      Math.round(DECODER_INPUTS / ms * 1000)
    }/s): ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`,
  );
  assert.ok(
    (outcomes.get("frame_too_large") ?? 0) > 0,
    "no oversize frame was tried",
  );
  assert.ok(
    (outcomes.get("malformed") ?? 0) > 0,
    "no malformed frame was tried",
  );
  assert.ok(
    (outcomes.get("invalid message") ?? 0) > 0,
    "no invalid message was tried",
  );
});

Deno.test("frame decoder returns every seed frame intact, however the stream is cut", () => {
  const rng = new Rng(SEED ^ 0x5eed);
  const messages = SEEDS.filter((seed) => seed.message !== undefined);
  for (let i = 0; i < 1000; i++) {
    const chosen = Array.from(
      { length: 1 + rng.int(5) },
      () => rng.pick(messages),
    );
    const stream = concat(chosen.map((seed) => seed.bytes));
    const decoder = new FrameDecoder();
    const values: unknown[] = [];
    for (let offset = 0; offset < stream.length;) {
      const end = offset + 1 + rng.int(Math.min(64, stream.length - offset));
      values.push(...decoder.push(stream.subarray(offset, end)));
      offset = end;
    }
    decoder.end();
    assert.deepEqual(
      values,
      chosen.map((seed) => seed.message),
      `stream ${i} (seed ${SEED})`,
    );
  }
});

interface MasterStats {
  connections: number;
  frames: number;
  bytes: number;
  replies: number;
  errors: Map<string, number>;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

/**
 * Sends `inputs`, half-closes, and reads the master's answers until it
 * closes. The master may hang up first (that is its right); every frame it
 * did send must be a valid message.
 */
async function exchange(
  conn: Deno.Conn,
  inputs: Uint8Array[],
  stats: MasterStats,
  context: string,
): Promise<void> {
  stats.frames += inputs.length;
  const bytes = concat(inputs);
  stats.bytes += bytes.length;
  try {
    await writeAll(conn, bytes);
    await conn.closeWrite();
  } catch {
    // The master closed already (it refused an early frame): read what it said.
  }
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      break; // reset by the master: it closed with our bytes unread
    }
    if (n === null) break;
    for (const reply of decoder.push(buffer.subarray(0, n))) {
      stats.replies++;
      const parsed = MessageSchema.safeParse(reply);
      assert.ok(
        parsed.success,
        `${context}: the master sent an invalid message ${
          JSON.stringify(reply)
        }`,
      );
      if (parsed.data.type === "error") {
        const { code } = parsed.data;
        assert.ok(
          (PROTOCOL_ERROR_CODES as readonly string[]).includes(code),
          `${context}: unknown code ${code}`,
        );
        stats.errors.set(code, (stats.errors.get(code) ?? 0) + 1);
      }
    }
  }
}

/** Case `index`: even ones throw bytes at a fresh connection; odd ones authenticate first. */
async function runCase(
  index: number,
  port: number,
  stats: MasterStats,
): Promise<void> {
  const context = `master case ${index} (seed ${SEED})`;
  const rng = caseRng(index);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  stats.connections++;
  try {
    if (index % 2 === 0) {
      const inputs = Array.from(
        { length: 1 + rng.int(3) },
        () => fuzzInput(rng),
      );
      // A good hello first, now and then, so the rest lands where the
      // master waits for `auth` (or, after a wrong one, has given up).
      if (rng.chance(0.25)) {
        inputs.unshift(HELLO.bytes, ...rng.chance(0.3) ? [AUTH.bytes] : []);
      }
      await exchange(conn, inputs, stats, context);
      return;
    }
    const connection = new Connection(conn);
    await clientHandshake(connection, {
      role: "client",
      token: TOKEN,
      name: "fuzz",
    });
    // Raw bytes from here on: a Connection reads only while someone waits in
    // receive(), and nobody does.
    const inputs = Array.from(
      { length: 1 + rng.int(6) },
      () =>
        rng.chance(0.35)
          ? rng.pick(CLIENT_SEEDS).bytes
          : fuzzInput(rng, rng.chance(0.7) ? CLIENT_SEEDS : SEEDS),
    );
    await exchange(conn, inputs, stats, context);
  } catch (error) {
    throw new Error(`${context} failed: ${error}`, { cause: error });
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

async function runCases(
  from: number,
  to: number,
  port: number,
  stats: MasterStats,
): Promise<void> {
  let next = from;
  await Promise.all(Array.from({ length: LANES }, async () => {
    while (next < to) await runCase(next++, port, stats);
  }));
}

async function residentKb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]);
}

async function openSockets(pid: number): Promise<number> {
  let sockets = 0;
  for await (const entry of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      if (
        (await Deno.readLink(`/proc/${pid}/fd/${entry.name}`)).startsWith(
          "socket:",
        )
      ) sockets++;
    } catch {
      // Closed between the listing and the look.
    }
  }
  return sockets;
}

Deno.test("a live master takes over 10 000 random and mutated frames before and after authentication, and stays healthy", async () => {
  const master = await startMasterProcess({
    token: TOKEN,
    stderr: "piped",
    args: [
      "--slots",
      "1",
      "--log-level",
      "error",
      "--max-frame-size",
      String(MASTER_MAX_FRAME_BYTES),
      "--max-program-size",
      "4096",
      "--max-files",
      "32",
      "--handshake-timeout",
      "5000",
      // Every connection here comes from 127.0.0.1, and some fuzzed
      // handshakes fail authentication: the per-address limits would turn
      // the rest of the run away (tests/peer_limits_test.ts covers them).
      "--max-connections-per-ip",
      String(4 * LANES),
      "--max-auth-failures",
      "0",
    ],
  });
  const logged = new Response(master.child.stderr).text();
  let exited = false;
  master.child.status.then(() => exited = true);
  try {
    const pid = master.child.pid;
    const port = Number(master.address.split(":").at(-1));
    const stats: MasterStats = {
      connections: 0,
      frames: 0,
      bytes: 0,
      replies: 0,
      errors: new Map(),
    };
    const socketsBefore = await openSockets(pid);

    await runCases(0, WARM_UP_CASES, port, stats);
    const rssBefore = await residentKb(pid);
    const started = performance.now();
    await runCases(WARM_UP_CASES, MASTER_CASES, port, stats);
    const ms = performance.now() - started;
    const rssAfter = await residentKb(pid);
    const socketsAfter = await openSockets(pid);

    console.log(
      `master: ${stats.connections} connections, ${stats.frames} frames (${stats.bytes} bytes), ${stats.replies} replies; ` +
        `${MASTER_CASES - WARM_UP_CASES} cases in ${ms.toFixed(0)} ms (${
          Math.round((MASTER_CASES - WARM_UP_CASES) / ms * 1000)
        } connections/s); ` +
        `RSS ${rssBefore} kB -> ${rssAfter} kB; errors ${
          JSON.stringify(Object.fromEntries([...stats.errors].sort()))
        }`,
    );
    assert.ok(stats.frames >= 10_000, `only ${stats.frames} frames`);
    assert.ok(!exited, "the master exited");
    // Every connection saw the master close it, so none may be left open.
    assert.equal(
      socketsAfter,
      socketsBefore,
      "sockets left open in the master",
    );
    assert.ok(
      rssAfter - rssBefore < RSS_GROWTH_BOUND_KB,
      `the master grew from ${rssBefore} kB to ${rssAfter} kB`,
    );

    const result = await submitProgram({
      language: "bash",
      files: [{ name: "main.sh", content: "echo still serving" }],
    }, { master: master.address, token: TOKEN });
    assert.equal(result.verdict, "ok", result.reason);
    assert.equal(result.stdout, "still serving\n");
  } finally {
    const status = await master.stop();
    assert.equal(status.code, 0, "the master did not stop cleanly");
  }
  assert.equal((await logged).trim(), "", "the master logged errors");
});
