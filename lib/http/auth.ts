/**
 * Who an HTTP request comes from: its bearer token (or `access_token` query
 * parameter, for EventSource and WebSocket, which cannot set headers)
 * checked against the master's credentials.
 *
 * @module
 */
import type { ClientQuota, Credentials } from "../security/credentials.ts";

/** The client name of requests on a shared-token or open cluster. */
export const SHARED_CLIENT_NAME = "http";

/** An HTTP caller allowed to use the API, or why not. */
export type HttpCaller =
  | {
    readonly ok: true;
    /** The job's `client`: the credential's name, or `http`. */
    readonly client: string;
    /** Its quota, for a named client. */
    readonly quota: Readonly<ClientQuota> | undefined;
    /**
     * A named client sees only its own jobs (their output is its business);
     * undefined on a shared-token or open cluster, where everyone sees all.
     */
    readonly onlyJobsOf: string | undefined;
  }
  | {
    readonly ok: false;
    /** 401 without a valid token, 403 with a token that may not use the API. */
    readonly status: 401 | 403;
    /** Why, naming no token. */
    readonly error: string;
    /**
     * Whether a token was presented and matched none: a guess, which counts
     * towards the address's authentication back-off. A missing token or a
     * node's token used here does not.
     */
    readonly badToken: boolean;
  };

/** Checks the request's token; an open cluster lets everyone in. */
export function authorize(
  request: Request,
  url: URL,
  credentials: Credentials,
): HttpCaller {
  if (credentials.isOpen) {
    return {
      ok: true,
      client: SHARED_CLIENT_NAME,
      quota: undefined,
      onlyJobsOf: undefined,
    };
  }
  const header = request.headers.get("authorization");
  const bearer = header?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
  const token = bearer ?? url.searchParams.get("access_token");
  if (token === null || token === "") {
    return {
      ok: false,
      status: 401,
      error: "this master requires a token: send Authorization: Bearer <token>",
      badToken: false,
    };
  }
  const match = credentials.matchToken(token);
  if (match === undefined) {
    return {
      ok: false,
      status: 401,
      error: "the token is not valid",
      badToken: true,
    };
  }
  if (match.role !== "client") {
    return {
      ok: false,
      status: 403,
      error:
        `credential "${match.name}" is a node credential: it cannot use the API`,
      badToken: false,
    };
  }
  return {
    ok: true,
    client: match.name ?? SHARED_CLIENT_NAME,
    quota: match.quota,
    onlyJobsOf: match.name,
  };
}
