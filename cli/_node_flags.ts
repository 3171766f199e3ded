/**
 * What `deno task master` and `deno task secondary` share: the flags of a
 * node that runs jobs (capacity, limits, sandbox, token, logging), read
 * into the library's options, and the signals that stop it.
 *
 * @module
 */
import type { LimitOverrides } from "../mod.ts";
import { LIMIT_MAXIMA } from "../lib/job.ts";
import { MAX_SLOTS } from "../lib/protocol/messages.ts";
import {
  Sandbox,
  SANDBOX_MODES,
  type SandboxMode,
  SandboxUnavailableError,
} from "../lib/sandbox/sandbox.ts";
import { parseUidRange, type UidRange } from "../lib/sandbox/identity.ts";
import { CliError, integerFlag, percentFlag, readToken } from "./_cli.ts";
import { setupLogging } from "./_logging.ts";

/**
 * Sandboxes a node keeps ready per language by default: as many as a
 * small node runs at once, so that a burst of the same language finds one.
 */
export const DEFAULT_PREWARM = 2;
/** The most `--prewarm` takes: each waiting sandbox holds a uid, mounts and processes. */
const MAX_PREWARM = 64;

/** `parseArgs` options of the flags every node runner has. */
export const NODE_FLAGS = {
  slots: { type: "string" },
  "max-cpu": { type: "string" },
  "max-ram": { type: "string" },
  "token-file": { type: "string" },
  sandbox: { type: "string", default: "auto" },
  "require-sandbox": { type: "boolean", default: false },
  "uid-range": { type: "string" },
  prewarm: { type: "string" },
  "time-limit": { type: "string" },
  "cpu-limit": { type: "string" },
  "memory-limit": { type: "string" },
  "process-limit": { type: "string" },
  "file-size-limit": { type: "string" },
  "output-limit": { type: "string" },
  "disk-limit": { type: "string" },
  "disk-file-limit": { type: "string" },
  "pty-limit": { type: "string" },
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  verbose: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** The help text of {@linkcode NODE_FLAGS} that reads the same for both runners. */
export const NODE_FLAGS_USAGE =
  `  --max-cpu P        take no new job above this CPU % (default 100)
  --max-ram P        take no new job above this RAM % (default 95)
  --token-file F     file holding the cluster token (default: $KILN_TOKEN);
                     never on the command line, which every process can read
  --sandbox M        auto: every isolation layer this host has, warning about
                     the others; bwrap: refuse to start without bubblewrap;
                     none: no isolation at all (development only) (default auto)
  --require-sandbox  refuse to start without namespaces, cgroups, the disk and
                     pty layers, or without seccomp where the kernel has it
  --uid-range A-B    host uids jobs run as, one per job: the node claims a
                     block of 65536 of them (fewer if the range is smaller)
                     that no other kiln process and no host account uses
                     (default 1879048192-2147352575; as root only)
  --prewarm N        sandboxes kept ready per language in demand, started
                     before their job arrives (single use, each a few MiB of
                     memory while it waits); 0 = every job starts cold, up
                     to ${MAX_PREWARM} (default ${DEFAULT_PREWARM})
  --time-limit MS    maximum wall time per job, up to 86400000 (default 10000)
  --cpu-limit MS     maximum CPU time per job, up to 86400000 (default 5000)
  --memory-limit MB  maximum memory per job, in MiB, up to 1048576 (default 512)
  --process-limit N  maximum processes and threads per job, up to 4194304
                     (default 256)
  --file-size-limit B  largest file a job may write, up to 1099511627776
                     (default 33554432)
  --output-limit B   maximum output bytes per job, up to 1073741824 (default
                     1048576)
  --disk-limit MB    maximum disk per job (workdir and /tmp together, a tmpfs:
                     memory), in MiB, up to 1048576 (default 256)
  --disk-file-limit N  maximum files per job on that disk, up to 16777216
                     (default 10000)
  --pty-limit N      maximum pseudo-terminals a job may hold at once, up to
                     1048576; 0 = none (default 16)
  --log-level L      trace, debug, info, warning, error (default info)
  --log-format F     text or json (default text)
  --verbose          print stack traces of errors
  -h, --help         show this help`;

/** The values of {@linkcode NODE_FLAGS} as `parseArgs` returns them. */
export interface NodeFlagValues {
  slots?: string | undefined;
  "max-cpu"?: string | undefined;
  "max-ram"?: string | undefined;
  "token-file"?: string | undefined;
  sandbox: string;
  "require-sandbox": boolean;
  "uid-range"?: string | undefined;
  prewarm?: string | undefined;
  "time-limit"?: string | undefined;
  "cpu-limit"?: string | undefined;
  "memory-limit"?: string | undefined;
  "process-limit"?: string | undefined;
  "file-size-limit"?: string | undefined;
  "output-limit"?: string | undefined;
  "disk-limit"?: string | undefined;
  "disk-file-limit"?: string | undefined;
  "pty-limit"?: string | undefined;
  "log-level": string;
  "log-format": string;
}

/** The node options {@linkcode NODE_FLAGS} set; absent flags leave the library's defaults. */
export interface NodeFlagOptions {
  token: string;
  slots?: number;
  maxCpu?: number;
  maxRam?: number;
  limits: LimitOverrides;
  /** The detected sandbox; none for a master without slots, which runs no job. */
  sandbox?: Sandbox;
}

/**
 * Sets up logging and reads the shared flags; a bad value becomes a
 * {@linkcode CliError} naming its flag. `minSlots` is 0 for a master (a pure
 * coordinator), 1 for a secondary. Detects the sandbox the flags ask for,
 * failing (exit 1) when the host cannot give it.
 */
export async function readNodeFlags(
  values: NodeFlagValues,
  minSlots: number,
): Promise<NodeFlagOptions> {
  try {
    await setupLogging(values["log-level"], values["log-format"]);
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  const slots = integerFlag("slots", values.slots, minSlots, MAX_SLOTS);
  const maxCpu = percentFlag("max-cpu", values["max-cpu"]);
  const maxRam = percentFlag("max-ram", values["max-ram"]);
  const limits: LimitOverrides = {};
  for (
    const [flag, key] of [
      ["time-limit", "wallTimeMs"],
      ["cpu-limit", "cpuTimeMs"],
      ["memory-limit", "memoryMb"],
      ["process-limit", "processes"],
      ["file-size-limit", "fileSizeBytes"],
      ["output-limit", "outputBytes"],
      ["disk-limit", "diskMb"],
      ["disk-file-limit", "diskFiles"],
      ["pty-limit", "ptys"],
    ] as const
  ) {
    const min = key === "ptys" ? 0 : 1;
    const value = integerFlag(flag, values[flag], min, LIMIT_MAXIMA[key]);
    if (value !== undefined) limits[key] = value;
  }
  const mode = values.sandbox as SandboxMode;
  if (!SANDBOX_MODES.includes(mode)) {
    throw new CliError(
      `--sandbox must be one of ${
        SANDBOX_MODES.join(", ")
      }, got "${values.sandbox}"`,
    );
  }
  let uidRange: UidRange | undefined;
  if (values["uid-range"] !== undefined) {
    try {
      uidRange = parseUidRange(values["uid-range"]);
    } catch (error) {
      throw new CliError(`--uid-range: ${(error as Error).message}`);
    }
  }
  const prewarm = integerFlag("prewarm", values.prewarm, 0, MAX_PREWARM) ??
    DEFAULT_PREWARM;
  const token = await readToken(values["token-file"]);
  let sandbox: Sandbox | undefined;
  if (slots !== 0) {
    try {
      sandbox = await Sandbox.detect({
        mode,
        require: values["require-sandbox"],
        ...uidRange ? { uidRange } : {},
        prewarm,
      });
    } catch (error) {
      if (error instanceof SandboxUnavailableError) {
        throw new CliError(`cannot start: ${error.message}`, 1);
      }
      throw error;
    }
  }
  return {
    token,
    ...slots === undefined ? {} : { slots },
    ...maxCpu === undefined ? {} : { maxCpu },
    ...maxRam === undefined ? {} : { maxRam },
    limits,
    ...sandbox ? { sandbox } : {},
  };
}

/** A signal that aborts on SIGINT or SIGTERM: the node shuts down cleanly. */
export function shutdownSignal(): AbortSignal {
  const shutdown = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => shutdown.abort());
  }
  return shutdown.signal;
}
