/**
 * Who may talk to a master, and as what: named tokens, each for one role
 * (`client` submits jobs, `node` registers as a secondary), clients with
 * quotas. Loaded from a JSON file an operator edits (`--auth FILE`, reloaded
 * on SIGHUP), or a single shared token for a small or development cluster.
 *
 * ```json
 * {
 *   "defaults": { "maxRunning": 8, "maxQueued": 32 },
 *   "credentials": [
 *     { "name": "alice", "role": "client", "token": "…", "maxQueued": 100 },
 *     { "name": "east", "role": "node", "token": "…" }
 *   ]
 * }
 * ```
 *
 * Tokens never leave this module in a log line, an error or a status: the
 * handshake proves knowledge of one without sending it.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import type { ClientQuota } from "../scheduler/dispatcher.ts";

/**
 * Who is on the other end of a connection: a client or a secondary. The
 * protocol's handshake names it; {@linkcode Credentials.authenticate} maps it
 * to the {@linkcode CredentialRole} a credential must have.
 */
export type Role = "client" | "secondary";

/** What a credential lets its holder be. */
export type CredentialRole = "client" | "node";

// The scheduler enforces quotas (it sits below security); credentials carry them.
export type { ClientQuota };

/** The quota of a client whose credential and file name none. */
export const DEFAULT_CLIENT_QUOTA: Readonly<ClientQuota> = Object.freeze({
  maxRunning: 16,
  maxQueued: 100,
});

/** Shortest token a credentials file may hold: 16 characters. */
export const MIN_TOKEN_LENGTH = 16;

/** One named credential. */
export interface Credential {
  /** Its name: the client's identity in fair queueing, results and logs, or the node's name. */
  readonly name: string;
  /** What it lets its holder be. */
  readonly role: CredentialRole;
  /** The secret. Never logged. */
  readonly token: string;
  /** For clients: its quota. */
  readonly quota: Readonly<ClientQuota>;
}

/** Who a dialer proved to be, or why it cannot be. */
export type Authentication =
  | {
    readonly ok: true;
    /** The token to check the dialer's proof against. */
    readonly token: string;
    /** Its identity: the credential's name, or the name it gave on a shared-token cluster. */
    readonly identity: string | undefined;
    /** Its quota, when it is a named client. */
    readonly quota: Readonly<ClientQuota> | undefined;
  }
  | { readonly ok: false; readonly reason: string };

/** Who a bearer token (the HTTP API) belongs to. */
export interface TokenMatch {
  /** The credential's name; undefined on a shared-token cluster, where tokens name nobody. */
  readonly name: string | undefined;
  /** What the token lets its holder be; a shared token is both, reported as `client`. */
  readonly role: CredentialRole;
  /** The client's quota, when it is a named client. */
  readonly quota: Readonly<ClientQuota> | undefined;
}

/** A credentials file that cannot be used, and exactly why. */
export class CredentialsError extends Error {
  /** An error whose message names the file and the problem. */
  constructor(message: string) {
    super(message);
    this.name = "CredentialsError";
  }
}

const QuotaSchema = z.object({
  maxRunning: z.number().int().min(1).optional(),
  maxQueued: z.number().int().min(0).optional(),
}).strict();

const FileSchema = z.object({
  defaults: QuotaSchema.optional(),
  credentials: z.array(
    z.object({
      name: z.string().regex(
        /^[A-Za-z0-9_.@-]{1,128}$/,
        "a name is 1-128 letters, digits or _ . @ -",
      ),
      role: z.enum(["client", "node"]),
      token: z.string().min(
        MIN_TOKEN_LENGTH,
        `a token must be at least ${MIN_TOKEN_LENGTH} characters`,
      ),
      maxRunning: z.number().int().min(1).optional(),
      maxQueued: z.number().int().min(0).optional(),
    }).strict(),
  ).min(1, "no credential: nobody could connect"),
}).strict();

/**
 * The credentials a master accepts.
 *
 * @example A credentials file and what it allows
 * ```ts
 * import { Credentials } from "./credentials.ts";
 *
 * const credentials = Credentials.parse(JSON.stringify({
 *   credentials: [
 *     { name: "alice", role: "client", token: "alice-token-0123456789", maxQueued: 4 },
 *     { name: "east", role: "node", token: "east-token-0123456789" },
 *   ],
 * }), "auth.json");
 * console.log(credentials.authenticate("client", "alice").ok); // true
 * console.log(credentials.authenticate("secondary", "alice")); // { ok: false, reason: 'credential "alice" is a client credential: ...' }
 * ```
 */
export class Credentials {
  /** Where the credentials came from, for logs: a file path or "a shared token". */
  readonly source: string;
  readonly #byName: ReadonlyMap<string, Credential>;
  /** The one token of a shared-token cluster; undefined with named credentials. */
  readonly #shared: string | undefined;

  private constructor(
    source: string,
    byName: ReadonlyMap<string, Credential>,
    shared: string | undefined,
  ) {
    this.source = source;
    this.#byName = byName;
    this.#shared = shared;
  }

  /**
   * One token for everybody, any name, either role: a small trusted cluster.
   * An empty token is an open cluster (development only).
   *
   * @throws {CredentialsError} for a token shorter than
   * {@linkcode MIN_TOKEN_LENGTH} characters, which a guesser could find.
   */
  static shared(token: string): Credentials {
    if (token !== "" && token.length < MIN_TOKEN_LENGTH) {
      throw new CredentialsError(
        `the token is ${token.length} characters: a shared token must be at least ${MIN_TOKEN_LENGTH}, like a named credential's (make one with: openssl rand -hex 16)`,
      );
    }
    return new Credentials("a shared token", new Map(), token);
  }

  /**
   * Reads a credentials file.
   *
   * @throws {CredentialsError} naming the file and the problem.
   */
  static async load(path: string): Promise<Credentials> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new CredentialsError(
        `cannot read credentials file ${path}: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    return Credentials.parse(text, path);
  }

  /**
   * Parses the text of a credentials file; `source` names it in errors.
   *
   * @throws {CredentialsError} naming the problem: not JSON, a bad field,
   * a name or a token used twice.
   */
  static parse(text: string, source: string): Credentials {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      // V8's message quotes the text around the fault, which may be a
      // token: say only where it is.
      const at = /position (\d+)/.exec((error as Error).message)?.[1];
      throw new CredentialsError(
        `credentials file ${source} is not JSON${
          at === undefined ? "" : ` (at ${lineAndColumn(text, Number(at))})`
        }`,
      );
    }
    const parsed = FileSchema.safeParse(raw);
    if (!parsed.success) {
      // zod's messages name the path (credentials[2].token) and never echo values.
      throw new CredentialsError(
        `credentials file ${source} is invalid: ${
          z.prettifyError(parsed.error).replaceAll("\n", " ")
        }`,
      );
    }
    const defaults: ClientQuota = {
      maxRunning: parsed.data.defaults?.maxRunning ??
        DEFAULT_CLIENT_QUOTA.maxRunning,
      maxQueued: parsed.data.defaults?.maxQueued ??
        DEFAULT_CLIENT_QUOTA.maxQueued,
    };
    const byName = new Map<string, Credential>();
    const tokens = new Map<string, string>();
    for (const entry of parsed.data.credentials) {
      if (byName.has(entry.name)) {
        throw new CredentialsError(
          `credentials file ${source} names "${entry.name}" twice`,
        );
      }
      // One token, one identity: otherwise a token could not say who it is.
      const holder = tokens.get(entry.token);
      if (holder !== undefined) {
        throw new CredentialsError(
          `credentials file ${source}: "${entry.name}" and "${holder}" have the same token`,
        );
      }
      tokens.set(entry.token, entry.name);
      byName.set(entry.name, {
        name: entry.name,
        role: entry.role,
        token: entry.token,
        quota: Object.freeze({
          maxRunning: entry.maxRunning ?? defaults.maxRunning,
          maxQueued: entry.maxQueued ?? defaults.maxQueued,
        }),
      });
    }
    return new Credentials(source, byName, undefined);
  }

  /** Whether everybody shares one token (no names, no roles, no quotas). */
  get isShared(): boolean {
    return this.#shared !== undefined;
  }

  /** Whether anybody can connect without a token at all. */
  get isOpen(): boolean {
    return this.#shared === "";
  }

  /** How many named credentials there are, per role. */
  count(role: CredentialRole): number {
    return [...this.#byName.values()].filter((c) => c.role === role).length;
  }

  /** The named credential `name`, if there is one. */
  get(name: string): Credential | undefined {
    return this.#byName.get(name);
  }

  /**
   * The token a dialer with this role and name must prove it knows, or the
   * reason it cannot connect at all. The reasons name the credential and the
   * roles, never a token.
   */
  authenticate(role: Role, name: string | undefined): Authentication {
    if (this.#shared !== undefined) {
      return {
        ok: true,
        token: this.#shared,
        identity: name,
        quota: undefined,
      };
    }
    if (name === undefined) {
      return {
        ok: false,
        reason:
          "this master authenticates named credentials: give the name of yours",
      };
    }
    const credential = this.#byName.get(name);
    if (!credential) {
      return { ok: false, reason: `unknown credential "${name}"` };
    }
    const wanted: CredentialRole = role === "secondary" ? "node" : "client";
    if (credential.role !== wanted) {
      return {
        ok: false,
        reason: credential.role === "client"
          ? `credential "${name}" is a client credential: it cannot register as a node`
          : `credential "${name}" is a node credential: it cannot submit jobs or ask for status`,
      };
    }
    return {
      ok: true,
      token: credential.token,
      identity: credential.name,
      quota: credential.role === "client" ? credential.quota : undefined,
    };
  }

  /**
   * The token a dialer calling itself `name` must prove it knows, whatever
   * role it asks for (checked after the proof, with
   * {@linkcode Credentials.authenticate}); undefined for an unknown name.
   * A shared token is everybody's.
   */
  tokenOf(name: string | undefined): string | undefined {
    if (this.#shared !== undefined) return this.#shared;
    return name === undefined ? undefined : this.#byName.get(name)?.token;
  }

  /**
   * Whose token `token` is, for callers that present the token itself (the
   * HTTP API's `Authorization: Bearer`), or undefined when nobody's. Every
   * token is compared, in constant time, so the time taken tells nothing.
   * An open cluster matches any token.
   */
  matchToken(token: string): TokenMatch | undefined {
    if (this.#shared !== undefined) {
      if (this.#shared === "" || sameSecret(token, this.#shared)) {
        return { name: undefined, role: "client", quota: undefined };
      }
      return undefined;
    }
    let found: Credential | undefined;
    for (const credential of this.#byName.values()) {
      if (sameSecret(token, credential.token)) found = credential;
    }
    if (found === undefined) return undefined;
    return {
      name: found.name,
      role: found.role,
      quota: found.role === "client" ? found.quota : undefined,
    };
  }
}

/** Compares digests, which have one length, so neither length nor content leaks. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** "line L, column C" of a character offset, both from 1. */
function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split("\n");
  return `line ${before.length}, column ${before.at(-1)!.length + 1}`;
}
