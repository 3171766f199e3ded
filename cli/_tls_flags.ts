/**
 * The TLS flags, which differ by role: the master serves a certificate
 * (`--tls-cert`, `--tls-key`); whoever dials it checks that certificate
 * (`--ca FILE`, or `--tls` for the default roots). Files are read here, so
 * the library only ever sees PEM text.
 *
 * @module
 */
import type { TlsDialOptions, TlsListenOptions } from "../mod.ts";
import { CliError } from "./_cli.ts";

/** `parseArgs` options of the master's TLS flags. */
export const TLS_LISTEN_FLAGS = {
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
} as const;

/** `parseArgs` options of the TLS flags of submit, status and secondary. */
export const TLS_DIAL_FLAGS = {
  ca: { type: "string" },
  tls: { type: "boolean", default: false },
} as const;

/** Reads `--tls-cert` and `--tls-key`: both (TLS) or neither (plain TCP). */
export async function readTlsListenFlags(
  values: { "tls-cert"?: string | undefined; "tls-key"?: string | undefined },
): Promise<TlsListenOptions | undefined> {
  const { "tls-cert": certFile, "tls-key": keyFile } = values;
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    throw new CliError(
      `--tls-cert and --tls-key go together: give both for TLS, or neither for plain TCP (got only --${
        certFile === undefined ? "tls-key" : "tls-cert"
      })`,
    );
  }
  return {
    cert: await readPem("tls-cert", certFile, "CERTIFICATE"),
    key: await readPem("tls-key", keyFile, "PRIVATE KEY"),
  };
}

/**
 * Reads `--ca FILE` (TLS, also trusting that CA) and `--tls` (TLS, the
 * default roots only); neither means plain TCP.
 */
export async function readTlsDialFlags(
  values: { ca?: string | undefined; tls?: boolean | undefined },
): Promise<true | TlsDialOptions | undefined> {
  if (values.ca !== undefined) {
    return { caCerts: [await readPem("ca", values.ca, "CERTIFICATE")] };
  }
  return values.tls ? true : undefined;
}

/**
 * The text of a PEM file, checked for a block of the expected kind so that
 * swapped or empty files are named here, not deep in a TLS error.
 */
async function readPem(
  flag: string,
  path: string,
  kind: "CERTIFICATE" | "PRIVATE KEY",
): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new CliError(
      `cannot read --${flag} ${path}: ${(error as Error).message}`,
    );
  }
  // "PRIVATE KEY" also matches "EC PRIVATE KEY" and "RSA PRIVATE KEY".
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) {
    throw new CliError(
      `--${flag} ${path} holds no PEM ${kind.toLowerCase()} ("-----BEGIN ...${kind}-----")`,
    );
  }
  return text;
}
