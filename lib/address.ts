/**
 * Parsing `HOST:PORT` strings as operators type them, including bracketed
 * IPv6 (`[::1]:7700`) and a bare host that takes the default port.
 *
 * @module
 */

/** The port a master listens on unless told otherwise. */
export const DEFAULT_PORT = 7700;

/** A host and a port to dial or listen on. */
export interface HostPort {
  /** A host name, or an IPv4 or IPv6 address (without brackets). */
  readonly hostname: string;
  /** A TCP port, 0-65535. */
  readonly port: number;
}

/**
 * Parses `HOST:PORT`, `[IPV6]:PORT`, `HOST` or `:PORT`.
 *
 * @example Parsing addresses
 * ```ts
 * import { parseHostPort } from "./address.ts";
 *
 * parseHostPort("example.org:7000"); // { hostname: "example.org", port: 7000 }
 * parseHostPort("[::1]:7000"); // { hostname: "::1", port: 7000 }
 * parseHostPort("localhost"); // { hostname: "localhost", port: 7700 }
 * ```
 *
 * @throws {TypeError} when the text is not an address or the port is out of range.
 */
export function parseHostPort(
  text: string,
  defaultPort: number = DEFAULT_PORT,
): HostPort {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]\s]*))(?::(\d+))?$/.exec(
    text.trim(),
  );
  if (!match) {
    throw new TypeError(`Cannot parse address "${text}": expected HOST:PORT`);
  }
  const hostname = match[1] ?? (match[2] || "127.0.0.1");
  const port = match[3] === undefined ? defaultPort : Number(match[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(`Cannot parse address "${text}": port must be 0-65535`);
  }
  return { hostname, port };
}

/** Formats an address for humans and logs, bracketing IPv6 hosts. */
export function formatHostPort({ hostname, port }: HostPort): string {
  return hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

/**
 * Whether `hostname` only ever reaches this machine: `localhost`, `::1` or
 * an address in 127.0.0.0/8. `0.0.0.0`, `::` and every other name reach
 * further.
 *
 * @example Telling a development master from an exposed one
 * ```ts
 * import { isLoopbackHostname } from "./address.ts";
 *
 * isLoopbackHostname("127.0.0.1"); // true
 * isLoopbackHostname("0.0.0.0"); // false
 * ```
 */
export function isLoopbackHostname(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return host === "localhost" || host === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
