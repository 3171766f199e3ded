/**
 * `deno task gen-certs DIR [--host NAME]...`: a development CA and a master
 * certificate signed by it, made with the system's `openssl`:
 *
 * - `ca.pem`: the CA certificate; clients and secondaries trust it (`--ca`).
 * - `ca-key.pem`: the CA's key; keep it, or delete it once certificates are made.
 * - `master.pem`, `master-key.pem`: for the master's `--tls-cert`, `--tls-key`.
 *
 * The master certificate names `localhost`, `127.0.0.1` and `::1`, plus
 * every `--host` (a DNS name or an IP address), as subject alternative
 * names: a client checks the name it dials against them. Keys are P-256 and
 * mode 0600. Existing files are kept unless `--force`.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { isIP } from "node:net";
import { join } from "node:path";
import { CliError, parseFlags, runMain } from "./_cli.ts";

const USAGE = `Usage: deno task gen-certs DIR [--host NAME]...

Makes a development CA and a master certificate signed by it in DIR:
  ca.pem          the CA: give it to clients and secondaries with --ca
  ca-key.pem      the CA's private key (mode 0600)
  master.pem      the master's certificate: --tls-cert
  master-key.pem  its private key (mode 0600): --tls-key

  --host NAME  another DNS name or IP address the master is reached by
               (repeatable; localhost, 127.0.0.1 and ::1 are always there)
  --days N     validity of the master certificate (default 825)
  --force      replace files that exist
  -h, --help   show this help

Needs the openssl command.`;

/** The files made, in the order they are written. */
const FILES = ["ca-key.pem", "ca.pem", "master-key.pem", "master.pem"] as const;

/** The names every certificate carries: what a development cluster dials. */
const ALWAYS = ["localhost", "127.0.0.1", "::1"];

/** A DNS name as a certificate may hold it (`*.` only as the first label). */
const DNS_NAME =
  /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, {
    host: { type: "string", multiple: true, default: [] },
    days: { type: "string", default: "825" },
    force: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  }, true);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new CliError(
      `expected one directory, got ${positionals.length}; usage: deno task gen-certs DIR [--host NAME]...`,
    );
  }
  const dir = positionals[0]!;
  const days = Number(values.days);
  if (!Number.isInteger(days) || days < 1) {
    throw new CliError(`--days must be an integer >= 1, got "${values.days}"`);
  }
  const names = subjectAltNames(values.host);
  await checkOpenssl();
  await Deno.mkdir(dir, { recursive: true });
  if (!values.force) await refuseToOverwrite(dir);

  // The config and the signing request live in a private temp dir, removed
  // whatever happens: only the four files are left behind.
  const work = await Deno.makeTempDir({ prefix: "kiln-gen-certs-" });
  try {
    const config = join(work, "openssl.cnf");
    await Deno.writeTextFile(config, opensslConfig(names));
    const path = (name: string) => join(dir, name);

    await writeKey(path("ca-key.pem"));
    await openssl([
      "req",
      "-x509",
      "-new",
      "-config",
      config,
      "-extensions",
      "ca_ext",
      "-key",
      path("ca-key.pem"),
      "-subj",
      "/CN=kiln development CA",
      "-sha256",
      "-days",
      "3650",
      "-out",
      path("ca.pem"),
    ]);

    await writeKey(path("master-key.pem"));
    const csr = join(work, "master.csr");
    await openssl([
      "req",
      "-new",
      "-config",
      config,
      "-key",
      path("master-key.pem"),
      "-subj",
      "/CN=kiln master",
      "-out",
      csr,
    ]);
    await openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      path("ca.pem"),
      "-CAkey",
      path("ca-key.pem"),
      // A random serial: no ca.srl file is left to manage.
      "-set_serial",
      `0x${randomHex(16)}`,
      "-extfile",
      config,
      "-extensions",
      "master_ext",
      "-sha256",
      "-days",
      String(days),
      "-out",
      path("master.pem"),
    ]);
  } finally {
    await Deno.remove(work, { recursive: true });
  }

  console.log(`wrote ${FILES.map((name) => join(dir, name)).join(", ")}`);
  console.log(`the master certificate names ${names.join(", ")}`);
  console.log(
    `master:                  deno task master --tls-cert ${
      join(dir, "master.pem")
    } --tls-key ${join(dir, "master-key.pem")}`,
  );
  console.log(
    `secondaries and clients: --ca ${join(dir, "ca.pem")}`,
  );
  return 0;
}

/** `ALWAYS` plus the `--host` values, checked and without duplicates. */
function subjectAltNames(hosts: readonly string[]): string[] {
  const names = [...ALWAYS];
  for (const raw of hosts) {
    const host = raw.trim().replace(/^\[(.*)\]$/, "$1");
    if (isIP(host) === 0 && !DNS_NAME.test(host)) {
      throw new CliError(
        `--host must be a DNS name or an IP address, got "${raw}"`,
      );
    }
    if (!names.includes(host)) names.push(host);
  }
  return names;
}

/** Our own openssl config, so that the host's `openssl.cnf` changes nothing. */
function opensslConfig(names: readonly string[]): string {
  let dns = 0;
  let ip = 0;
  const alt = names.map((name) =>
    isIP(name) === 0 ? `DNS.${++dns} = ${name}` : `IP.${++ip} = ${name}`
  );
  return `[req]
distinguished_name = dn
prompt = no

[dn]
CN = kiln

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[master_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = @alt
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[alt]
${alt.join("\n")}
`;
}

async function checkOpenssl(): Promise<void> {
  try {
    const { success } = await new Deno.Command("openssl", {
      args: ["version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    if (success) return;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  throw new CliError(
    "cannot make certificates: the openssl command was not found or does not run; install it (Debian: apt-get install openssl)",
    1,
  );
}

async function refuseToOverwrite(dir: string): Promise<void> {
  for (const name of FILES) {
    try {
      await Deno.lstat(join(dir, name));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    throw new CliError(
      `${
        join(dir, name)
      } already exists; pass --force to replace it (a new CA invalidates every certificate the old one signed)`,
      1,
    );
  }
}

/**
 * A fresh P-256 key. openssl prints it and we write it, so that the file
 * is created with mode 0600 and is never readable by others, not even for
 * a moment.
 */
async function writeKey(path: string): Promise<void> {
  const pem = await openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
  ]);
  await Deno.remove(path).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  await Deno.writeTextFile(path, pem, { mode: 0o600, createNew: true });
}

/** Runs openssl, resolving with its stdout; a failure names the subcommand and says what openssl said. */
async function openssl(args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("openssl", {
    args,
    stdin: "null",
  }).output();
  if (!success) {
    throw new CliError(
      `openssl ${args[0]} failed: ${new TextDecoder().decode(stderr).trim()}`,
      1,
    );
  }
  return new TextDecoder().decode(stdout);
}

function randomHex(bytes: number): string {
  const random = crypto.getRandomValues(new Uint8Array(bytes));
  random[0]! &= 0x7f; // a positive serial, as RFC 5280 asks
  return Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
}

if (import.meta.main) await runMain("kiln gen-certs", main);
