/**
 * The handshake that opens every connection: agree on a protocol version and
 * prove, both ways, knowledge of a shared token without sending it.
 *
 * ```
 * dialer                                   master
 *   hello {role, minVersion, maxVersion, nonce: c}  ->
 *         <-  challenge {version, nonce: s, proof: HMAC(token, "kiln-server\n" c "\n" s)}
 *   auth {mac: HMAC(token, "kiln-" role "\n" s "\n" c)}  ->
 *         <-  welcome {version, node}
 * ```
 *
 * The labels keep the two MACs apart, so neither side's answer can be
 * reflected as the other's; fresh nonces on both sides stop replays. An empty
 * token (an open development cluster) runs the same exchange with an empty key.
 *
 * @module
 */
import { timerDelay } from "../_timer.ts";
import { type ClientQuota, Credentials } from "../security/credentials.ts";
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { ProtocolError } from "./errors.ts";
import type { Connection } from "./connection.ts";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "./messages.ts";
import type { Message, MessageOf, Role } from "./messages.ts";

/** How long a handshake may take before the peer is dropped, in milliseconds. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** An inclusive range of protocol versions. */
export interface VersionRange {
  /** The oldest version spoken. */
  min: number;
  /** The newest version spoken. */
  max: number;
}

/** Options of {@linkcode clientHandshake}. */
export interface ClientHandshakeOptions {
  /** What this side is to the master. */
  role: Role;
  /** The cluster's shared token; empty for an open cluster. Never sent. */
  token: string;
  /** A display name for the master's logs. */
  name?: string;
  /**
   * Give up (and close) when the handshake takes longer, in milliseconds.
   *
   * @default {DEFAULT_HANDSHAKE_TIMEOUT_MS}
   */
  timeoutMs?: number;
  /**
   * The versions this side speaks.
   *
   * @default {{ min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION }}
   */
  versions?: VersionRange;
  /**
   * Aborting it gives the handshake up: the connection is closed and the
   * handshake rejects with the signal's reason.
   */
  signal?: AbortSignal | undefined;
}

/** What the dialing side learns from a successful handshake. */
export interface ClientHandshakeResult {
  /** The protocol version both sides now speak. */
  version: number;
  /** The master's node name. */
  node: string;
}

/** Options of {@linkcode serverHandshake}. */
export interface ServerHandshakeOptions {
  /**
   * The cluster's shared token; empty for an open cluster. Never sent.
   * Ignored when `credentials` is given.
   */
  token?: string;
  /**
   * Who may connect, and as what: named credentials with roles, or a
   * shared token. @default {Credentials.shared(token)}
   */
  credentials?: Credentials;
  /** This master's node name, told to the peer. */
  node: string;
  /**
   * The roles accepted on this listener; others are refused with `role_refused`.
   *
   * @default {["client", "secondary"]}
   */
  roles?: readonly Role[];
  /**
   * Drop (with a `timeout` error) a peer that takes longer, in milliseconds.
   *
   * @default {DEFAULT_HANDSHAKE_TIMEOUT_MS}
   */
  timeoutMs?: number;
  /**
   * The versions this side speaks.
   *
   * @default {{ min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION }}
   */
  versions?: VersionRange;
}

/** What the master learns from a successful handshake. */
export interface ServerHandshakeResult {
  /** What the peer is. */
  role: Role;
  /** The protocol version both sides now speak. */
  version: number;
  /** The peer's display name, if it gave one. */
  name: string | undefined;
  /**
   * Who the peer proved to be: its credential's name with named
   * credentials, otherwise the name it gave.
   */
  identity: string | undefined;
  /** The peer's job quota, when it is a named client. */
  quota: Readonly<ClientQuota> | undefined;
}

const DEFAULT_VERSIONS: VersionRange = {
  min: MIN_PROTOCOL_VERSION,
  max: PROTOCOL_VERSION,
};
const ALL_ROLES: readonly Role[] = ["client", "secondary"];

/**
 * Runs the dialing side of the handshake (a client or a secondary talking to
 * the master) and names the peer `master` in later errors. On failure the
 * connection is closed and a {@linkcode ProtocolError} is thrown: the
 * master's own code and message when it refused us (`master said: ...`),
 * `auth_failed` when the master could not prove it knows the token, or
 * `timeout`.
 *
 * @example Dialing a master
 * ```ts
 * import assert from "node:assert/strict";
 * import { clientHandshake, Connection, serverHandshake } from "./mod.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [accepted, dialed] = await Promise.all([listener.accept(), Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port })]);
 * await using master = new Connection(accepted);
 * await using client = new Connection(dialed);
 * const [peer, session] = await Promise.all([
 *   serverHandshake(master, { token: "correct-horse-battery", node: "master-1" }),
 *   clientHandshake(client, { role: "client", token: "correct-horse-battery", name: "cli" }),
 * ]);
 * assert.deepEqual(peer, { role: "client", version: 4, name: "cli", identity: "cli", quota: undefined });
 * assert.deepEqual(session, { version: 4, node: "master-1" });
 * ```
 */
export async function clientHandshake(
  connection: Connection,
  options: ClientHandshakeOptions,
): Promise<ClientHandshakeResult> {
  const {
    role,
    token,
    name,
    timeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
    versions = DEFAULT_VERSIONS,
    signal,
  } = options;
  await checkOptions(connection, timeoutMs, versions);
  connection.peerName = "master";
  return await guarded(connection, timeoutMs, signal, async (progress) => {
    const nonce = newNonce();
    await connection.send({
      type: "hello",
      role,
      minVersion: versions.min,
      maxVersion: versions.max,
      nonce,
      ...(name === undefined ? {} : { name }),
    });

    progress.waitingFor = "challenge";
    const challenge = expect(await connection.receive(), "challenge");
    if (challenge.version < versions.min || challenge.version > versions.max) {
      throw new ProtocolError(
        "version_mismatch",
        `protocol version mismatch: master chose ${challenge.version}, ${role} speaks ${versions.min}..${versions.max}`,
      );
    }
    const genuine = macEquals(
      challenge.proof,
      hmac(token, "kiln-server", nonce, challenge.nonce),
    );
    // Answer even when the proof is wrong: the master then checks our MAC and
    // tells us what it found, so both ends report the same failure. This
    // gives an impostor nothing it could reuse: the MAC covers our fresh
    // nonce, and anyone may already get a MAC (a proof) from the real master.
    await connection.send({
      type: "auth",
      mac: hmac(token, `kiln-${role}`, challenge.nonce, nonce),
    });

    progress.waitingFor = "welcome";
    let welcome: MessageOf<"welcome">;
    try {
      welcome = expect(
        await connection.receive(genuine ? undefined : IMPOSTOR_GRACE_MS),
        "welcome",
      );
    } catch (error) {
      // The master's own verdict ("master said: ...") is the clearest report.
      if (
        genuine ||
        (error instanceof ProtocolError && error.peerCode !== undefined)
      ) throw error;
      throw unproven();
    }
    // A peer that welcomes us without a valid proof does not know the token.
    if (!genuine) throw unproven();
    if (welcome.version !== challenge.version) {
      throw new ProtocolError(
        "unexpected_message",
        `master welcomed us with protocol version ${welcome.version} after choosing ${challenge.version}`,
      );
    }
    return { version: welcome.version, node: welcome.node };
  });
}

/**
 * Runs the master's side of the handshake on an accepted connection, and
 * names the peer by role and name in later errors. On failure the peer is
 * told why (`version_mismatch`, `role_refused`, `auth_failed`, `timeout`,
 * `unexpected_message`), the connection is closed, and the same
 * {@linkcode ProtocolError} is thrown.
 *
 * @example Accepting secondaries only
 * ```ts
 * import assert from "node:assert/strict";
 * import { clientHandshake, Connection, ProtocolError, serverHandshake } from "./mod.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [accepted, dialed] = await Promise.all([listener.accept(), Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port })]);
 * await using master = new Connection(accepted);
 * await using client = new Connection(dialed);
 * const [served, dialing] = await Promise.allSettled([
 *   serverHandshake(master, { token: "", node: "m", roles: ["secondary"] }),
 *   clientHandshake(client, { role: "client", token: "" }),
 * ]);
 * const reason = dialing.status === "rejected" ? dialing.reason : undefined;
 * assert.equal(served.status, "rejected");
 * assert.ok(reason instanceof ProtocolError);
 * assert.equal(reason.code, "role_refused");
 * ```
 */
export async function serverHandshake(
  connection: Connection,
  options: ServerHandshakeOptions,
): Promise<ServerHandshakeResult> {
  const {
    token = "",
    credentials = Credentials.shared(token),
    node,
    roles = ALL_ROLES,
    timeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
    versions = DEFAULT_VERSIONS,
  } = options;
  await checkOptions(connection, timeoutMs, versions);
  return await guarded(connection, timeoutMs, undefined, async (progress) => {
    progress.waitingFor = "hello";
    const hello = expect(await connection.receive(), "hello");
    connection.peerName = hello.name === undefined
      ? hello.role
      : `${hello.role} "${hello.name}"`;
    const version = Math.min(hello.maxVersion, versions.max);
    if (version < Math.max(hello.minVersion, versions.min)) {
      throw new ProtocolError(
        "version_mismatch",
        `protocol version mismatch: ${hello.role} speaks ${hello.minVersion}..${hello.maxVersion}, ` +
          `master speaks ${versions.min}..${versions.max}`,
      );
    }
    if (!roles.includes(hello.role)) {
      throw new ProtocolError(
        "role_refused",
        `this master does not accept ${hello.role} connections (it accepts: ${
          roles.join(", ") || "none"
        })`,
      );
    }

    // Nothing is said of the credential before the dialer proves it holds
    // it: an unknown name is challenged with a random token, so it fails
    // exactly as a wrong token does, and a role is checked after the proof.
    if (!credentials.isShared && hello.name === undefined) {
      throw new ProtocolError(
        "auth_failed",
        "authentication failed: this master authenticates named credentials: give the name of yours",
      );
    }
    const known = credentials.tokenOf(hello.name);
    const token = known ?? newNonce();
    const nonce = newNonce();
    const proof = hmac(token, "kiln-server", hello.nonce, nonce);
    await connection.send({ type: "challenge", version, nonce, proof });

    progress.waitingFor = "auth";
    const auth = expect(await connection.receive(), "auth");
    if (
      known === undefined ||
      !macEquals(
        auth.mac,
        hmac(token, `kiln-${hello.role}`, nonce, hello.nonce),
      )
    ) {
      throw new ProtocolError(
        "auth_failed",
        credentials.isShared
          ? "authentication failed: wrong token"
          : `authentication failed for credential "${hello.name}": unknown name or wrong token`,
      );
    }
    const who = credentials.authenticate(hello.role, hello.name);
    if (!who.ok) {
      throw new ProtocolError(
        "auth_failed",
        `authentication failed: ${who.reason}`,
      );
    }
    await connection.send({ type: "welcome", version, node });
    return {
      role: hello.role,
      version,
      name: hello.name,
      identity: who.identity,
      quota: who.quota,
    };
  });
}

/** How long a dialer that already caught a bad proof waits for the master's verdict. */
const IMPOSTOR_GRACE_MS = 2000;

function unproven(): ProtocolError {
  return new ProtocolError(
    "auth_failed",
    "the master could not prove it knows the token (wrong token?)",
  );
}

/**
 * Runs `steps` under one deadline, given up when `signal` aborts. On any
 * failure it closes the connection, first telling the peer when the failure
 * was found here (not when the peer reported it, nor when the link is
 * already gone), and rethrows.
 */
async function guarded<T>(
  connection: Connection,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  steps: (progress: { waitingFor: string }) => Promise<T>,
): Promise<T> {
  const progress = { waitingFor: "the peer" };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new ProtocolError(
          "timeout",
          `handshake timed out after ${timeoutMs} ms waiting for ${progress.waitingFor}`,
        ),
      );
    }, timerDelay(timeoutMs));
    onAbort = () => reject(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    signal?.throwIfAborted();
    // Promise.race subscribes to all, so whichever loses cannot go unhandled;
    // closing the connection then cancels whatever `steps` still awaits.
    return await Promise.race([steps(progress), expired]);
  } catch (error) {
    const tell = error instanceof ProtocolError &&
      error.peerCode === undefined && error.code !== "closed";
    await connection.close(tell ? error : undefined);
    throw error;
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}

function expect<T extends Message["type"]>(
  message: Message,
  type: T,
): MessageOf<T> {
  if (message.type !== type) {
    throw new ProtocolError(
      "unexpected_message",
      `expected ${type} during the handshake, got ${message.type}`,
    );
  }
  return message as MessageOf<T>;
}

function hmac(
  token: string,
  label: string,
  first: string,
  second: string,
): string {
  return createHmac("sha256", token).update(`${label}\n${first}\n${second}`)
    .digest("hex");
}

/** Constant-time comparison of two hex MACs; lengths are checked first (timingSafeEqual demands it). */
function macEquals(received: string, expected: string): boolean {
  const a = Buffer.from(received, "hex");
  const b = Buffer.from(expected, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

/** 32 random bytes, base64. */
function newNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes));
}

/** Rejects bad options with a RangeError, closing the connection like any other failure. */
async function checkOptions(
  connection: Connection,
  timeoutMs: number,
  versions: VersionRange,
): Promise<void> {
  const { min, max } = versions;
  let problem: string | undefined;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    problem =
      `Cannot use handshake timeoutMs ${timeoutMs}: expected a positive number`;
  } else if (
    !Number.isInteger(min) || !Number.isInteger(max) || min < 0 || min > max ||
    max > 65535
  ) {
    problem =
      `Cannot use protocol versions ${min}..${max}: expected integers 0 <= min <= max <= 65535`;
  }
  if (problem === undefined) return;
  await connection.close();
  throw new RangeError(problem);
}
