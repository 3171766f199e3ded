/**
 * The sandbox floor: a program run in the single-use sandbox kiln runs every
 * step in, spawned straight from the bench with no kiln process involved.
 * What kiln costs above it is kiln's own; what it costs above the bare floor
 * is what namespaces, mounts, the seccomp filter, the uid drop, rlimits and
 * the cgroup cost the kernel and the chain's execs, which no change to kiln's
 * own processes can remove.
 *
 * The chain is built by kiln's own builders, so the floor follows the
 * sandbox as it changes: `setsid` (the launcher's first link) → bash (closes
 * inherited descriptors, joins the step's cgroup, opens the seccomp filter;
 * `closeDescriptorsPrefix`) → bwrap with the flags of `bwrapPrefix` → setpriv
 * (the uid drop) → prlimit (`prlimitPrefix`, kiln's default limits) → the
 * runner's command. Each run gets a cgroup of its own with the step's memory
 * and process limits, made and removed by kiln's cgroup module, as a cold
 * step does.
 *
 * Left out, as small beside the rest: the job's own disk and devpts mounts
 * (`disk_limit.ts`, `pty_limit.ts`: about 0.3 ms of syscalls each, measured
 * there), and a fresh uid and workdir per run (one workdir serves every run,
 * as the bare floor's does).
 *
 * @module
 */
import { DEFAULT_LIMITS } from "../lib/job.ts";
import type { CommandSpec, StepContext } from "../lib/runners/runner.ts";
import {
  bwrapPrefix,
  detectBubblewrap,
  prepareWorkdir,
  SANDBOX_UID,
  toolchainRoots,
} from "../lib/sandbox/bubblewrap.ts";
import {
  type CgroupBackend,
  detectCgroups,
  type JobCgroup,
} from "../lib/sandbox/cgroup.ts";
import {
  closeDescriptorsPrefix,
  findBash,
} from "../lib/sandbox/descriptors.ts";
import { jobEnvironment } from "../lib/sandbox/environment.ts";
import { findSetsid } from "../lib/sandbox/launcher.ts";
import { detectPrlimit, prlimitPrefix } from "../lib/sandbox/rlimits.ts";
import { detectSeccomp, SECCOMP_FD } from "../lib/sandbox/seccomp.ts";
import type { ResolvedRunner } from "../mod.ts";

/** Where the floor's step cgroups are made, apart from any node's `kiln`. */
const CGROUP_PARENT = "kiln-bench-floor";

/** The links of the chain, each built by kiln's own code. */
export interface FloorChain {
  /** util-linux setsid: the step leads its own session, as the launcher does. */
  readonly setsid: string;
  /** bash and the filter file it opens for bwrap's `--seccomp`. */
  readonly bash: string;
  readonly seccompPath: string | null;
  /** bwrap and its flags through setpriv's, ending in `--`. */
  readonly bwrap: readonly string[];
  /** prlimit and its flags, ending in `--`. */
  readonly prlimit: readonly string[];
  /** The runner's command. */
  readonly program: CommandSpec;
  /** The workdir, prepared for the sandbox's uid. */
  readonly workdir: string;
  /** Where step cgroups are made; null without the cgroup layer. */
  readonly cgroups: CgroupBackend | null;
}

/** A runnable sandbox floor, or why this host cannot have one. */
export type SandboxFloor =
  | {
    readonly available: true;
    readonly chain: FloorChain;
    /** Runs the program once in a fresh sandbox; throws unless it printed `expected`. */
    readonly run: () => Promise<void>;
    /** Removes what the floor made (its cgroup parent). */
    readonly close: () => Promise<void>;
  }
  | { readonly available: false; readonly reason: string };

/**
 * The floor for `program` run by `resolved`'s run step in a directory made
 * under `parent`. Unavailable where kiln itself would have no uid drop (not
 * root, or no bubblewrap), since then there is no sandbox to measure.
 */
export async function sandboxFloor(
  resolved: ResolvedRunner,
  program: { name: string; content: string },
  parent: string,
  expected: string,
): Promise<SandboxFloor> {
  const [bwrap, prlimit, setsid, bash] = await Promise.all([
    detectBubblewrap(),
    detectPrlimit(),
    findSetsid(),
    findBash(),
  ]);
  if (!bwrap.available) return { available: false, reason: bwrap.reason };
  if (bwrap.rootless) {
    return { available: false, reason: "not root: no uid drop to measure" };
  }
  if (!prlimit.available) return { available: false, reason: prlimit.reason };
  if (setsid === null || bash === null) {
    return { available: false, reason: "no setsid or no bash" };
  }
  const seccomp = await detectSeccomp({
    bwrapPath: bwrap.path,
    setprivPath: bwrap.setprivPath,
    bashPath: bash,
  });
  const detected = await detectCgroups({ parent: CGROUP_PARENT });
  const cgroups = detected.available ? detected : null;

  const limits = DEFAULT_LIMITS;
  const context = await singleFileStep(
    resolved,
    program,
    parent,
    limits.memoryMb,
  );
  const { workdir } = context;
  await prepareWorkdir(workdir, SANDBOX_UID, SANDBOX_UID);
  const spec = resolved.runner.run(context);
  const executables = Object.values(resolved.toolchain.executables);
  const chain: FloorChain = {
    setsid,
    bash,
    seccompPath: seccomp.available ? seccomp.path : null,
    // As `Sandbox` builds it for a cold step on a root node.
    bwrap: bwrapPrefix({
      bwrapPath: bwrap.path,
      setprivPath: bwrap.setprivPath,
      workdir,
      readOnlyPaths: await toolchainRoots(executables),
      tmpSizeBytes: limits.memoryMb * 1024 * 1024,
      uid: SANDBOX_UID,
      gid: SANDBOX_UID,
      env: jobEnvironment(workdir, spec.env),
      seccompFd: seccomp.available ? SECCOMP_FD : undefined,
    }),
    prlimit: prlimitPrefix({
      cpuSeconds: Math.max(1, Math.ceil(limits.cpuTimeMs / 1000)),
      fileSizeBytes: limits.fileSizeBytes,
      openFiles: limits.openFiles,
    }, prlimit.path),
    program: spec,
    workdir,
    cgroups,
  };
  return {
    available: true,
    chain,
    run: async () => {
      const cgroup = await cgroups?.create(
        `floor-${crypto.randomUUID()}`,
        {
          memoryBytes: limits.memoryMb * 1024 * 1024,
          pids: limits.processes,
        },
      );
      try {
        const stdout = await runChain(floorArgv(chain, cgroup), workdir);
        if (stdout !== expected) {
          throw new Error(`printed ${JSON.stringify(stdout)}`);
        }
      } finally {
        await cgroup?.remove();
      }
    },
    close: async () => {
      await cgroups?.removeParent();
    },
  };
}

/** The whole command line of one run, in `cgroup` when there is one. */
export function floorArgv(
  chain: FloorChain,
  cgroup: JobCgroup | undefined,
): string[] {
  return [
    chain.setsid,
    "--",
    ...closeDescriptorsPrefix(chain.bash, {
      open: chain.seccompPath === null
        ? undefined
        : { fd: SECCOMP_FD, path: chain.seccompPath },
      enterCgroups: cgroup?.paths.map((path) => `${path}/cgroup.procs`),
    }),
    ...chain.bwrap,
    ...chain.prlimit,
    chain.program.command,
    ...chain.program.args,
  ];
}

/**
 * Runs `argv` to its end as the launcher spawns a step (cleared environment,
 * piped output) and returns its stdout; throws unless it exited 0.
 */
export async function runChain(
  argv: readonly string[],
  cwd: string,
): Promise<string> {
  const { success, code, stdout, stderr } = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    cwd,
    clearEnv: true,
    env: {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `exit ${code}: ${new TextDecoder().decode(stderr).trim()}`,
    );
  }
  return new TextDecoder().decode(stdout);
}

/**
 * A fresh directory in `parent` holding `program` alone, and the step
 * context a runner builds its commands from, as kiln gives it one.
 */
export async function singleFileStep(
  resolved: ResolvedRunner,
  program: { name: string; content: string },
  parent: string,
  memoryMb: number,
): Promise<StepContext> {
  const workdir = await Deno.makeTempDir({ dir: parent });
  await Deno.writeTextFile(`${workdir}/${program.name}`, program.content);
  return {
    workdir,
    entry: program.name,
    files: [program.name],
    args: [],
    toolchain: resolved.toolchain,
    memoryMb,
  };
}
