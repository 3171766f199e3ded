/**
 * The master's limits on what a peer may do (`--handshake-timeout`,
 * `--idle-timeout`, `--max-frame-size`, `--max-program-size`, `--max-files`,
 * `--max-connections-per-ip` and the authentication back-off), read into
 * {@linkcode MasterNodeOptions}. Absent flags leave the library's defaults.
 *
 * @module
 */
import type { MasterNodeOptions } from "../mod.ts";
import { MAX_FILES } from "../lib/job.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../lib/protocol/frame.ts";
import { JOB_ENVELOPE_BYTES } from "../lib/nodes/admission.ts";
import { MAX_TIMER_MS } from "../lib/_timer.ts";
import { CliError, integerFlag } from "./_cli.ts";

/** Below this, not even a handshake fits in a frame; the master uses it until the peer authenticates. */
const MIN_FRAME_BYTES = 16 * 1024;

/** `parseArgs` options of the limit flags. */
export const LIMIT_FLAGS = {
  "handshake-timeout": { type: "string" },
  "idle-timeout": { type: "string" },
  "max-frame-size": { type: "string" },
  "max-program-size": { type: "string" },
  "max-files": { type: "string" },
  "max-connections-per-ip": { type: "string" },
  "max-auth-failures": { type: "string" },
  "auth-failure-window": { type: "string" },
  "auth-backoff": { type: "string" },
  "auth-backoff-max": { type: "string" },
} as const;

/** The help text of {@linkcode LIMIT_FLAGS}. */
export const LIMIT_FLAGS_USAGE =
  `  --handshake-timeout MS  drop a peer that has not authenticated by then
                     (default 10000)
  --idle-timeout MS  close a client that sends nothing and has no job pending
                     this long; 0 never (default 300000)
  --max-frame-size B  largest message accepted once authenticated (default
                     8388608; before authentication, 16384)
  --max-program-size B  most bytes of source files and their names, stdin and
                     arguments in a job (default 1048576)
  --max-files N      most source files in a job, up to 256 (default 256)
  --max-connections-per-ip N  connections one address (IPv6: /64) may hold;
                     0 = no limit (default 64)
  --max-auth-failures N  failed authentications within the window after which
                     an address is refused for a while; 0 = never (default 5)
  --auth-failure-window MS  how long a failure counts (default 60000)
  --auth-backoff MS  the first refusal period; each next one doubles (default
                     30000)
  --auth-backoff-max MS  the longest refusal period (default 3600000)`;

/** The values of {@linkcode LIMIT_FLAGS} as `parseArgs` returns them. */
export type LimitFlagValues = {
  [K in keyof typeof LIMIT_FLAGS]?: string | undefined;
};

/** The options the limit flags set. */
export type LimitFlagOptions = Pick<
  MasterNodeOptions,
  | "handshakeTimeoutMs"
  | "idleTimeoutMs"
  | "maxFrameBytes"
  | "maxProgramBytes"
  | "maxFiles"
  | "maxConnectionsPerIp"
  | "maxAuthFailures"
  | "authFailureWindowMs"
  | "authBackoffMs"
  | "authBackoffMaxMs"
>;

/** Reads the limit flags; a bad value becomes a {@linkcode CliError} naming its flag. */
export function readLimitFlags(values: LimitFlagValues): LimitFlagOptions {
  const options: LimitFlagOptions = {};
  const read = <K extends keyof LimitFlagOptions>(
    key: K,
    flag: keyof typeof LIMIT_FLAGS,
    min: number,
    max?: number,
  ) => {
    const value = integerFlag(flag, values[flag], min, max);
    if (value !== undefined) options[key] = value;
  };
  read("handshakeTimeoutMs", "handshake-timeout", 1, MAX_TIMER_MS);
  read("idleTimeoutMs", "idle-timeout", 0, MAX_TIMER_MS);
  read("maxFrameBytes", "max-frame-size", MIN_FRAME_BYTES);
  read("maxProgramBytes", "max-program-size", 1);
  read("maxFiles", "max-files", 1);
  read("maxConnectionsPerIp", "max-connections-per-ip", 0);
  read("maxAuthFailures", "max-auth-failures", 0);
  read("authFailureWindowMs", "auth-failure-window", 1, MAX_TIMER_MS);
  read("authBackoffMs", "auth-backoff", 1, MAX_TIMER_MS);
  read("authBackoffMaxMs", "auth-backoff-max", 1, MAX_TIMER_MS);
  if ((options.maxFiles ?? 0) > MAX_FILES) {
    throw new CliError(
      `--max-files must be at most ${MAX_FILES}, got "${options.maxFiles}"`,
    );
  }
  // Without --max-program-size, the library lowers its default to fit the frame size.
  const frame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if ((options.maxProgramBytes ?? 0) > frame - JOB_ENVELOPE_BYTES) {
    throw new CliError(
      `--max-program-size (${options.maxProgramBytes}) must not exceed --max-frame-size (${frame}) minus ${JOB_ENVELOPE_BYTES} bytes for the message around it: such a program could not be passed on to a node`,
    );
  }
  return options;
}
