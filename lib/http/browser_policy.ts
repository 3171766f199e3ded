/**
 * What the HTTP API checks of a request before anything else, against
 * attacks carried by a victim's browser:
 *
 * - **DNS rebinding**: a page on `attacker.example` whose name later
 *   resolves to 127.0.0.1 reaches the API as "same origin", with
 *   `Host: attacker.example`. Only the names the master serves are
 *   answered: any IP literal (a page served from an IP literal is the
 *   API's own origin anyway, and rebinding needs a name), `localhost`, the
 *   listen hostname, and names the operator allows.
 * - **CSRF**: a page on another origin posting a job. A request that
 *   carries an `Origin` (every cross-origin fetch, every POST, every
 *   WebSocket handshake) must come from the API's own origin (the `Host`
 *   it was sent to) or from an origin the operator allows; the JSON
 *   content type (checked by the API) forces a preflight on the rest.
 *
 * @module
 */

/** The names and origins a master serves, from its options. */
export interface BrowserPolicy {
  /** The address the API listens on; a name here is allowed as a `Host`. */
  readonly hostname: string;
  /** More host names allowed (`--http-allowed-host`), without port. */
  readonly allowedHosts: readonly string[];
  /** Origins allowed to call the API from their pages (`--cors-origin`). */
  readonly corsOrigins: readonly string[];
}

/** A request the policy lets through, with its allowed foreign origin, or why not. */
export type BrowserCheck =
  | {
    readonly ok: true;
    /** An allowed origin other than the API's own, to answer with CORS headers. */
    readonly origin: string | undefined;
  }
  | { readonly ok: false; readonly status: 403; readonly error: string };

/**
 * Checks `Host` and `Origin` of `request` against `policy`.
 *
 * @example A rebinding page and a foreign origin are refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkBrowser } from "./browser_policy.ts";
 *
 * const policy = { hostname: "127.0.0.1", allowedHosts: [], corsOrigins: [] };
 * const ask = (headers: Record<string, string>) =>
 *   checkBrowser(new Request("http://127.0.0.1/api/v1/jobs", { headers }), policy).ok;
 * assert.equal(ask({ host: "127.0.0.1:7780" }), true);
 * assert.equal(ask({ host: "attacker.example:7780" }), false);
 * assert.equal(ask({ host: "localhost:7780", origin: "http://localhost:7780" }), true);
 * assert.equal(ask({ host: "localhost:7780", origin: "http://evil.example" }), false);
 * ```
 */
export function checkBrowser(
  request: Request,
  policy: BrowserPolicy,
): BrowserCheck {
  const host = request.headers.get("host")?.trim().toLowerCase();
  // No Host at all is no browser (HTTP/1.0 tools); the Origin check stays.
  if (host !== undefined && !hostAllowed(hostName(host), policy)) {
    return {
      ok: false,
      status: 403,
      error: `host "${
        hostName(host)
      }" is not served here: reach the master by its IP address or localhost, or start it with --http-allowed-host ${
        hostName(host)
      }`,
    };
  }
  const origin = request.headers.get("origin");
  if (origin === null) return { ok: true, origin: undefined };
  if (host !== undefined && originHost(origin) === host) {
    return { ok: true, origin: undefined };
  }
  if (policy.corsOrigins.includes(origin)) return { ok: true, origin };
  return {
    ok: false,
    status: 403,
    error:
      `cross-origin request from ${origin} refused: allow that origin with --cors-origin ${origin}`,
  };
}

/**
 * The CORS headers that let `origin` read an answer; with `preflight`,
 * those of the answer to its `OPTIONS` preflight too.
 */
export function corsHeaders(
  origin: string,
  preflight = false,
): Record<string, string> {
  return {
    "access-control-allow-origin": origin,
    vary: "Origin",
    ...preflight
      ? {
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
      }
      : {},
  };
}

function hostAllowed(name: string, policy: BrowserPolicy): boolean {
  if (name === "localhost" || isIpLiteral(name)) return true;
  if (name === policy.hostname.toLowerCase()) return true;
  return policy.allowedHosts.some((allowed) => allowed.toLowerCase() === name);
}

/** The name of a `Host` header: `[::1]:80` -> `::1`, `a.example:80` -> `a.example`. */
function hostName(host: string): string {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    return end === -1 ? host : host.slice(1, end);
  }
  const colon = host.indexOf(":");
  return colon === -1 ? host : host.slice(0, colon);
}

/** An IPv4 address in dotted decimal, or an IPv6 address. */
function isIpLiteral(name: string): boolean {
  if (name.includes(":")) return /^[0-9a-f:.]+$/.test(name);
  const parts = name.split(".");
  return parts.length === 4 &&
    parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255);
}

/** The `host[:port]` of an origin, lower case; undefined for `null` and the like. */
function originHost(origin: string): string | undefined {
  try {
    return new URL(origin).host.toLowerCase();
  } catch {
    return undefined;
  }
}
