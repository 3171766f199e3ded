/**
 * The master's door policy per remote address: how many connections each
 * address holds at once, and which addresses are serving a back-off for
 * failing authentication too often. It answers at accept, before a byte is
 * read, so a refused peer costs one socket for as long as it takes to tell
 * it why.
 *
 * @module
 */
import { ProtocolError } from "../protocol/errors.ts";

/** Connections one address may hold at once, by default. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 64;
/** Failed authentications within the window that start a back-off, by default. */
export const DEFAULT_MAX_AUTH_FAILURES = 5;
/** How long a failed authentication counts, in milliseconds, by default. */
export const DEFAULT_AUTH_FAILURE_WINDOW_MS = 60_000;
/** The first back-off, in milliseconds, by default; each next one doubles. */
export const DEFAULT_AUTH_BACKOFF_MS = 30_000;
/** The longest back-off, in milliseconds, by default. */
export const DEFAULT_AUTH_BACKOFF_MAX_MS = 3_600_000;

/** Options of {@linkcode PeerGuard}. */
export interface PeerGuardOptions {
  /**
   * Connections one address may hold at once (IPv6: one /64); more are
   * refused with `too_many_connections`. 0 means no limit.
   *
   * @default {DEFAULT_MAX_CONNECTIONS_PER_IP}
   */
  maxConnectionsPerIp?: number | undefined;
  /**
   * Failed authentications from one address within `authFailureWindowMs`
   * that start a back-off. 0 turns the back-off off.
   *
   * @default {DEFAULT_MAX_AUTH_FAILURES}
   */
  maxAuthFailures?: number | undefined;
  /**
   * How long a failed authentication counts towards `maxAuthFailures`, in ms.
   *
   * @default {DEFAULT_AUTH_FAILURE_WINDOW_MS}
   */
  authFailureWindowMs?: number | undefined;
  /**
   * The first back-off, in ms: every connection from the address is refused
   * with `auth_backoff` this long. Each back-off that follows within
   * `authBackoffMaxMs` of the previous one's end lasts twice as long.
   *
   * @default {DEFAULT_AUTH_BACKOFF_MS}
   */
  authBackoffMs?: number | undefined;
  /**
   * The longest back-off, in ms; an address quiet this long after its last
   * back-off starts again from `authBackoffMs`.
   *
   * @default {DEFAULT_AUTH_BACKOFF_MAX_MS}
   */
  authBackoffMaxMs?: number | undefined;
  /** The clock, in milliseconds. @default {Date.now} */
  now?: (() => number) | undefined;
}

/** A back-off that a failed authentication just started. */
export interface Backoff {
  /** The address (or IPv6 /64) refused, as error messages name it. */
  readonly peer: string;
  /** How long it is refused, in milliseconds. */
  readonly durationMs: number;
  /** The failures that started it. */
  readonly failures: number;
}

/** What the guard remembers of one address. */
interface PeerRecord {
  connections: number;
  /** Times of the failed authentications still inside the window, oldest first. */
  failures: number[];
  /** When the current or last back-off ends; 0 when there was none. */
  blockedUntil: number;
  /** Back-offs in a row; the next lasts `authBackoffMs * 2 ** blocks`. */
  blocks: number;
}

/** Below this many records the guard never sweeps: a sweep would cost more than it frees. */
const SWEEP_MIN = 1024;

/**
 * Per-address connection counts and authentication back-off.
 *
 * Memory stays bounded by what peers can hold or have recently done: a
 * record lives while its address has connections, failures inside the
 * window, or a back-off that has not yet been forgiven, and records are
 * swept whenever their number doubles (amortised constant time).
 *
 * @example Admitting, refusing and releasing
 * ```ts
 * import assert from "node:assert/strict";
 * import { PeerGuard } from "./peer_guard.ts";
 *
 * const guard = new PeerGuard({ maxConnectionsPerIp: 1 });
 * const first = guard.admit("192.0.2.7");
 * assert.throws(() => guard.admit("192.0.2.7"), /too many connections from 192.0.2.7/);
 * first[Symbol.dispose]();
 * guard.admit("192.0.2.7")[Symbol.dispose]();
 * ```
 */
export class PeerGuard {
  readonly #maxConnections: number;
  readonly #maxFailures: number;
  readonly #windowMs: number;
  readonly #backoffMs: number;
  readonly #backoffMaxMs: number;
  readonly #now: () => number;
  readonly #peers = new Map<string, PeerRecord>();
  #sweepAt = SWEEP_MIN;

  /** Makes a guard; throws `RangeError` for a negative or fractional limit. */
  constructor(options: PeerGuardOptions = {}) {
    const {
      maxConnectionsPerIp = DEFAULT_MAX_CONNECTIONS_PER_IP,
      maxAuthFailures = DEFAULT_MAX_AUTH_FAILURES,
      authFailureWindowMs = DEFAULT_AUTH_FAILURE_WINDOW_MS,
      authBackoffMs = DEFAULT_AUTH_BACKOFF_MS,
      authBackoffMaxMs = DEFAULT_AUTH_BACKOFF_MAX_MS,
      now = Date.now,
    } = options;
    this.#maxConnections = count("maxConnectionsPerIp", maxConnectionsPerIp);
    this.#maxFailures = count("maxAuthFailures", maxAuthFailures);
    this.#windowMs = positive("authFailureWindowMs", authFailureWindowMs);
    this.#backoffMs = positive("authBackoffMs", authBackoffMs);
    this.#backoffMaxMs = positive("authBackoffMaxMs", authBackoffMaxMs);
    if (this.#backoffMaxMs < this.#backoffMs) {
      throw new RangeError(
        `Cannot use authBackoffMaxMs ${authBackoffMaxMs}: it is shorter than authBackoffMs ${authBackoffMs}`,
      );
    }
    this.#now = now;
  }

  /** Addresses remembered now (for tests and metrics). */
  get size(): number {
    return this.#peers.size;
  }

  /**
   * Counts a new connection from `hostname`; disposing the result lets it go
   * (once, however often it is called). Throws {@linkcode ProtocolError}
   * `auth_backoff` while the address serves a back-off (saying when to
   * retry), and `too_many_connections` when it already holds the maximum.
   */
  admit(hostname: string): Disposable {
    const peer = peerKey(hostname);
    const now = this.#now();
    const record = this.#record(peer, now);
    throwIfBlocked(peer, record, now);
    if (
      this.#maxConnections > 0 && record.connections >= this.#maxConnections
    ) {
      throw new ProtocolError(
        "too_many_connections",
        `too many connections from ${peer}: at most ${this.#maxConnections} at once; close one and retry`,
      );
    }
    record.connections++;
    let released = false;
    return {
      [Symbol.dispose]: () => {
        if (released) return;
        released = true;
        record.connections--;
        this.#forgetIfIdle(peer, record);
      },
    };
  }

  /**
   * Throws {@linkcode ProtocolError} `auth_backoff` (saying when to retry)
   * while `hostname` serves a back-off; counts no connection. For requests
   * that hold no connection of their own, such as the HTTP API's, which
   * shares the back-off with the TCP port.
   */
  checkBackoff(hostname: string): void {
    const peer = peerKey(hostname);
    const record = this.#peers.get(peer);
    if (record === undefined) return;
    const now = this.#now();
    this.#expire(record, now);
    throwIfBlocked(peer, record, now);
  }

  /**
   * Records a failed authentication from `hostname`. Returns the back-off it
   * started, if this was the failure that tipped the address over.
   */
  authFailed(hostname: string): Backoff | undefined {
    if (this.#maxFailures === 0) return undefined;
    const peer = peerKey(hostname);
    const now = this.#now();
    const record = this.#record(peer, now);
    record.failures.push(now);
    if (record.failures.length < this.#maxFailures) return undefined;
    const durationMs = Math.min(
      this.#backoffMaxMs,
      this.#backoffMs * 2 ** Math.min(record.blocks, 52),
    );
    const failures = record.failures.length;
    record.failures = [];
    record.blocks++;
    record.blockedUntil = now + durationMs;
    return { peer, durationMs, failures };
  }

  /** The record of `peer`, created if new, with what has expired by `now` dropped. */
  #record(peer: string, now: number): PeerRecord {
    let record = this.#peers.get(peer);
    if (record === undefined) {
      record = { connections: 0, failures: [], blockedUntil: 0, blocks: 0 };
      this.#peers.set(peer, record);
      if (this.#peers.size > this.#sweepAt) this.#sweep(now);
    } else {
      this.#expire(record, now);
    }
    return record;
  }

  #expire(record: PeerRecord, now: number): void {
    const cutoff = now - this.#windowMs;
    let stale = 0;
    while (
      stale < record.failures.length && record.failures[stale]! <= cutoff
    ) {
      stale++;
    }
    if (stale > 0) record.failures.splice(0, stale);
    // Quiet for the longest back-off since the last one ended: forgiven.
    if (record.blocks > 0 && now >= record.blockedUntil + this.#backoffMaxMs) {
      record.blocks = 0;
      record.blockedUntil = 0;
    }
  }

  #forgetIfIdle(peer: string, record: PeerRecord): void {
    if (
      record.connections === 0 && record.failures.length === 0 &&
      record.blocks === 0
    ) this.#peers.delete(peer);
  }

  #sweep(now: number): void {
    for (const [peer, record] of this.#peers) {
      this.#expire(record, now);
      this.#forgetIfIdle(peer, record);
    }
    this.#sweepAt = Math.max(SWEEP_MIN, 2 * this.#peers.size);
  }
}

/**
 * The unit the guard counts by: an IPv4 address as it is; an IPv6 address
 * by its /64 (one host usually holds a whole /64, so counting single IPv6
 * addresses would limit nothing); an IPv4-mapped IPv6 address as its IPv4.
 *
 * @example Keys of addresses
 * ```ts
 * import assert from "node:assert/strict";
 * import { peerKey } from "./peer_guard.ts";
 *
 * assert.equal(peerKey("192.0.2.7"), "192.0.2.7");
 * assert.equal(peerKey("2001:db8:0:1:aaaa::7"), "2001:db8:0:1::/64");
 * assert.equal(peerKey("::ffff:192.0.2.7"), "192.0.2.7");
 * ```
 */
export function peerKey(hostname: string): string {
  if (!hostname.includes(":")) return hostname;
  const address = hostname.replace(/%.*$/, "").toLowerCase(); // zone id
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (mapped) return mapped[1]!;
  const [head = "", tail] = address.split("::");
  const front = head === "" ? [] : head.split(":");
  const back = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? front : [
    ...front,
    ...Array(Math.max(0, 8 - front.length - back.length)).fill("0"),
    ...back,
  ];
  const prefix = groups.slice(0, 4).map((group) =>
    (parseInt(group, 16) || 0).toString(16)
  );
  // Written short, as people write prefixes: fe80::/64, not fe80:0:0:0::/64.
  while (prefix.at(-1) === "0") prefix.pop();
  return `${prefix.join(":")}::/64`;
}

function throwIfBlocked(peer: string, record: PeerRecord, now: number): void {
  if (record.blockedUntil <= now) return;
  const seconds = Math.ceil((record.blockedUntil - now) / 1000);
  const until = new Date(record.blockedUntil).toISOString();
  throw new ProtocolError(
    "auth_backoff",
    `too many failed authentications from ${peer}: connections are refused for ${seconds} s more; retry after ${until}`,
  );
}

function count(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(
      `Cannot use ${name} ${value}: expected an integer >= 0 (0 turns it off)`,
    );
  }
  return value;
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `Cannot use ${name} ${value}: expected a positive number of milliseconds`,
    );
  }
  return value;
}
