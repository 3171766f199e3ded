/**
 * JSON answers of the HTTP API, sent as they are when small.
 *
 * `Deno.serveHttp` compresses every answer whose client accepts it, with
 * brotli, however small: a job's answer of about 100 bytes then costs the
 * server about 0.17 ms more CPU (0.36-0.40 ms per request instead of
 * 0.21-0.23, in a bare server on this project's 2-core VM), for a body
 * that fits one TCP segment either way. Answers up to
 * {@linkcode UNCOMPRESSED_MAX_UNITS} say `Cache-Control: no-transform`,
 * which Deno's server honours by sending them as they are; larger ones
 * are compressed as before.
 *
 * @module
 */

/**
 * The longest JSON text, in UTF-16 units, sent uncompressed: about one
 * TCP segment of ASCII, where compression cannot save a packet.
 */
export const UNCOMPRESSED_MAX_UNITS = 1400;

/**
 * `Response.json`, left uncompressed when small.
 *
 * @example A small answer goes out as it is
 * ```ts
 * import assert from "node:assert/strict";
 * import { jsonResponse } from "./json_response.ts";
 *
 * const response = jsonResponse({ ok: true }, { status: 202 });
 * assert.equal(response.status, 202);
 * assert.equal(response.headers.get("content-type"), "application/json");
 * assert.equal(response.headers.get("cache-control"), "no-transform");
 * assert.deepEqual(await response.json(), { ok: true });
 * ```
 */
export function jsonResponse(
  value: unknown,
  init: ResponseInit = {},
): Response {
  const text = JSON.stringify(value);
  const headers = new Headers(init.headers);
  headers.set("content-type", "application/json");
  if (text.length <= UNCOMPRESSED_MAX_UNITS) {
    headers.set("cache-control", "no-transform");
  }
  return new Response(text, { ...init, headers });
}
