/**
 * The seccomp layer of the sandbox: a classic BPF program, assembled here in
 * TypeScript (no native build step, no libseccomp), that bubblewrap installs
 * (`--seccomp FD`) right before it execs the job's first process. It denies
 * the kernel's riskiest doors with `EPERM`, so that a runtime that probes one
 * (a JVM asking for `perf_event_open`, glibc trying `clone3`) carries on:
 *
 * - new namespaces: `unshare`, `setns`, and `clone` with any `CLONE_NEW*`
 *   flag (threads and `fork` still work). `clone3` passes its flags in a
 *   struct that a seccomp filter cannot read, so it fails with `ENOSYS`,
 *   and glibc (2.34+), Rust and the JVM fall back to `clone`, whose flags the
 *   filter checks (what Docker, Chromium and systemd-nspawn do);
 * - mounts: `mount`, `umount2`, `pivot_root`, `chroot` and the new mount API
 *   (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`,
 *   `mount_setattr`);
 * - the kernel keyring, `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`;
 * - another process's memory: `ptrace`, `process_vm_readv`/`writev`, `kcmp`,
 *   `pidfd_getfd`, `process_madvise`;
 * - the machine: `kexec_*`, module loading, `swapon`/`swapoff`, `reboot`,
 *   `acct`, `quotactl`, the clocks, host and domain names, `syslog`,
 *   `vhangup`, `fanotify_init`, `open_by_handle_at`/`name_to_handle_at`,
 *   `iopl`/`ioperm`/`modify_ldt`, and the obsolete calls Docker's default
 *   profile also refuses (`uselib`, `ustat`, `sysfs`, `_sysctl`,
 *   `lookup_dcookie`, `nfsservctl`, `create_module`, `get_kernel_syms`,
 *   `query_module`).
 *
 * Docker's profile also denies `mbind`, `set_mempolicy`, `move_pages` and
 * `personality` (beyond a few values): kept here, because the JVM's NUMA
 * support and some runtimes' start-up probe them, and none opens a door out.
 *
 * Every other call is allowed: a deny list, not Docker's allow list, so a
 * new harmless syscall (a newer glibc's) never breaks a language.
 *
 * The program checks the architecture first: a call made with another ABI
 * (32-bit `int 0x80` on x86-64, AArch32 on arm64) would be read with another
 * numbering, so the process is killed instead (`SECCOMP_RET_KILL_PROCESS`).
 * On x86-64 every x32 call (number with bit 30 set) is denied: the same
 * syscalls under other numbers. Only x86-64 and arm64 have tables; on any
 * other host the layer is missing, and says why.
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import {
  bwrapPrefix,
  nodeIdentity,
  prepareWorkdir,
  SANDBOX_UID,
} from "./bubblewrap.ts";
import { closeDescriptorsPrefix } from "./descriptors.ts";

/** The architectures this module has syscall numbers for. */
export type SeccompArch = "x86_64" | "aarch64";

/** `AUDIT_ARCH_*` of each architecture, as the kernel puts it in `seccomp_data.arch`. */
const AUDIT_ARCH: Readonly<Record<SeccompArch, number>> = {
  x86_64: 0xc000003e,
  aarch64: 0xc00000b7,
};

/** x32 syscalls on x86-64 have this bit set in their number. */
const X32_SYSCALL_BIT = 0x40000000;

/** `EPERM`: what a denied call returns. */
export const EPERM = 1;
/** `ENOSYS`: what `clone3` returns, so that libc falls back to `clone`. */
export const ENOSYS = 38;

/** Every `CLONE_NEW*` flag `clone` takes (CLONE_NEWTIME only exists for `clone3` and `unshare`). */
export const CLONE_NEW_FLAGS = 0x00020000 | // CLONE_NEWNS
  0x02000000 | // CLONE_NEWCGROUP
  0x04000000 | // CLONE_NEWUTS
  0x08000000 | // CLONE_NEWIPC
  0x10000000 | // CLONE_NEWUSER
  0x20000000 | // CLONE_NEWPID
  0x40000000; // CLONE_NEWNET

/**
 * Syscall numbers, from the kernel's `unistd_64.h` (x86-64) and the generic
 * table arm64 uses; a call arm64 does not have is absent.
 */
const NUMBERS: Readonly<
  Record<string, { readonly x86_64: number; readonly aarch64?: number }>
> = {
  clone: { x86_64: 56, aarch64: 220 },
  clone3: { x86_64: 435, aarch64: 435 },
  unshare: { x86_64: 272, aarch64: 97 },
  setns: { x86_64: 308, aarch64: 268 },
  mount: { x86_64: 165, aarch64: 40 },
  umount2: { x86_64: 166, aarch64: 39 },
  pivot_root: { x86_64: 155, aarch64: 41 },
  chroot: { x86_64: 161, aarch64: 51 },
  fsopen: { x86_64: 430, aarch64: 430 },
  fsconfig: { x86_64: 431, aarch64: 431 },
  fsmount: { x86_64: 432, aarch64: 432 },
  fspick: { x86_64: 433, aarch64: 433 },
  move_mount: { x86_64: 429, aarch64: 429 },
  open_tree: { x86_64: 428, aarch64: 428 },
  mount_setattr: { x86_64: 442, aarch64: 442 },
  keyctl: { x86_64: 250, aarch64: 219 },
  add_key: { x86_64: 248, aarch64: 217 },
  request_key: { x86_64: 249, aarch64: 218 },
  bpf: { x86_64: 321, aarch64: 280 },
  perf_event_open: { x86_64: 298, aarch64: 241 },
  userfaultfd: { x86_64: 323, aarch64: 282 },
  io_uring_setup: { x86_64: 425, aarch64: 425 },
  io_uring_enter: { x86_64: 426, aarch64: 426 },
  io_uring_register: { x86_64: 427, aarch64: 427 },
  ptrace: { x86_64: 101, aarch64: 117 },
  process_vm_readv: { x86_64: 310, aarch64: 270 },
  process_vm_writev: { x86_64: 311, aarch64: 271 },
  kcmp: { x86_64: 312, aarch64: 272 },
  pidfd_getfd: { x86_64: 438, aarch64: 438 },
  process_madvise: { x86_64: 440, aarch64: 440 },
  kexec_load: { x86_64: 246, aarch64: 104 },
  kexec_file_load: { x86_64: 320, aarch64: 294 },
  init_module: { x86_64: 175, aarch64: 105 },
  finit_module: { x86_64: 313, aarch64: 273 },
  delete_module: { x86_64: 176, aarch64: 106 },
  swapon: { x86_64: 167, aarch64: 224 },
  swapoff: { x86_64: 168, aarch64: 225 },
  reboot: { x86_64: 169, aarch64: 142 },
  acct: { x86_64: 163, aarch64: 89 },
  quotactl: { x86_64: 179, aarch64: 60 },
  quotactl_fd: { x86_64: 443, aarch64: 443 },
  open_by_handle_at: { x86_64: 304, aarch64: 265 },
  name_to_handle_at: { x86_64: 303, aarch64: 264 },
  settimeofday: { x86_64: 164, aarch64: 170 },
  clock_settime: { x86_64: 227, aarch64: 112 },
  clock_adjtime: { x86_64: 305, aarch64: 266 },
  adjtimex: { x86_64: 159, aarch64: 171 },
  sethostname: { x86_64: 170, aarch64: 161 },
  setdomainname: { x86_64: 171, aarch64: 162 },
  syslog: { x86_64: 103, aarch64: 116 },
  vhangup: { x86_64: 153, aarch64: 58 },
  fanotify_init: { x86_64: 300, aarch64: 262 },
  lookup_dcookie: { x86_64: 212, aarch64: 18 },
  nfsservctl: { x86_64: 180, aarch64: 42 },
  iopl: { x86_64: 172 },
  ioperm: { x86_64: 173 },
  modify_ldt: { x86_64: 154 },
  uselib: { x86_64: 134 },
  ustat: { x86_64: 136 },
  sysfs: { x86_64: 139 },
  _sysctl: { x86_64: 156 },
  create_module: { x86_64: 174 },
  get_kernel_syms: { x86_64: 177 },
  query_module: { x86_64: 178 },
};

/** The calls that always fail with `EPERM` (`clone` and `clone3` have rules of their own). */
export const DENIED_SYSCALLS: readonly string[] = Object.keys(NUMBERS).filter(
  (name) => name !== "clone" && name !== "clone3",
);

// --- A small cBPF assembler -------------------------------------------------

/** `struct sock_filter` opcodes the program uses. */
const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS: A = *(u32 *)(data + k)
const BPF_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K: A == k
const BPF_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K: A >= k
const BPF_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K: A & k
const BPF_RET_K = 0x06; // BPF_RET | BPF_K: return k

/** `seccomp_data` offsets (the arguments are 64-bit; the low half comes first on little-endian hosts). */
const NR_OFFSET = 0;
const ARCH_OFFSET = 4;
const ARG0_LOW_OFFSET = 16;

const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;

/** One instruction; a jump names the label it goes to when the test holds. */
type Instruction =
  | { op: "ld"; offset: number }
  | { op: "jeq" | "jge" | "jset"; k: number; to: string }
  | { op: "ret"; k: number }
  | { op: "label"; name: string };

/**
 * Turns instructions into `struct sock_filter` bytes (8 each: u16 code,
 * u8 jt, u8 jf, u32 k, little-endian). A conditional jump goes to its label
 * when the test holds and falls through otherwise; cBPF only jumps forward,
 * at most 255 instructions.
 *
 * @throws {RangeError} on an unknown label, a backward jump or one too far.
 */
function assemble(program: readonly Instruction[]): Uint8Array {
  const labels = new Map<string, number>();
  let index = 0;
  for (const instruction of program) {
    if (instruction.op === "label") labels.set(instruction.name, index);
    else index++;
  }
  const bytes = new Uint8Array(index * 8);
  const view = new DataView(bytes.buffer);
  index = 0;
  for (const instruction of program) {
    if (instruction.op === "label") continue;
    let code: number, jt = 0, k: number;
    switch (instruction.op) {
      case "ld":
        code = BPF_LD_W_ABS;
        k = instruction.offset;
        break;
      case "ret":
        code = BPF_RET_K;
        k = instruction.k;
        break;
      default: {
        code = instruction.op === "jeq"
          ? BPF_JEQ_K
          : instruction.op === "jge"
          ? BPF_JGE_K
          : BPF_JSET_K;
        k = instruction.k;
        const target = labels.get(instruction.to);
        if (target === undefined) {
          throw new RangeError(`seccomp: no label "${instruction.to}"`);
        }
        jt = target - index - 1;
        if (jt < 0 || jt > 255) {
          throw new RangeError(
            `seccomp: jump to "${instruction.to}" is ${jt} instructions, not 0 to 255`,
          );
        }
      }
    }
    view.setUint16(index * 8, code, true);
    view.setUint8(index * 8 + 2, jt);
    view.setUint8(index * 8 + 3, 0);
    view.setUint32(index * 8 + 4, k >>> 0, true);
    index++;
  }
  return bytes;
}

/**
 * The filter every job step runs under, as raw `struct sock_filter` bytes
 * for bubblewrap's `--seccomp FD`.
 *
 * @example Building the x86-64 filter
 * ```ts
 * import { seccompFilter } from "./seccomp.ts";
 *
 * const bytes = seccompFilter("x86_64");
 * console.log(bytes.length / 8, "instructions");
 * ```
 */
export function seccompFilter(arch: SeccompArch): Uint8Array {
  const numberOf = (name: string) => NUMBERS[name]?.[arch];
  const program: Instruction[] = [
    { op: "ld", offset: ARCH_OFFSET },
    { op: "jeq", k: AUDIT_ARCH[arch], to: "native" },
    // Another ABI reads numbers from another table: never let it through.
    { op: "ret", k: SECCOMP_RET_KILL_PROCESS },
    { op: "label", name: "native" },
    { op: "ld", offset: NR_OFFSET },
  ];
  if (arch === "x86_64") {
    program.push({ op: "jge", k: X32_SYSCALL_BIT, to: "deny" });
  }
  program.push(
    { op: "jeq", k: numberOf("clone3")!, to: "enosys" },
    { op: "jeq", k: numberOf("clone")!, to: "clone" },
  );
  for (const name of DENIED_SYSCALLS) {
    const nr = numberOf(name);
    if (nr !== undefined) program.push({ op: "jeq", k: nr, to: "deny" });
  }
  program.push(
    { op: "ret", k: SECCOMP_RET_ALLOW },
    { op: "label", name: "clone" },
    // clone(flags, ...) on both architectures: flags is the first argument.
    { op: "ld", offset: ARG0_LOW_OFFSET },
    { op: "jset", k: CLONE_NEW_FLAGS, to: "deny" },
    { op: "ret", k: SECCOMP_RET_ALLOW },
    { op: "label", name: "deny" },
    { op: "ret", k: SECCOMP_RET_ERRNO | EPERM },
    { op: "label", name: "enosys" },
    { op: "ret", k: SECCOMP_RET_ERRNO | ENOSYS },
  );
  return assemble(program);
}

/**
 * What the filter decides for one call, computed by interpreting its bytes
 * as the kernel would: for tests, and for anyone reading what a change did.
 * Returns `allow`, `kill`, or the errno the call fails with.
 *
 * @example
 * ```ts
 * import { evaluateSeccomp, seccompFilter } from "./seccomp.ts";
 *
 * const filter = seccompFilter("x86_64");
 * console.log(evaluateSeccomp(filter, { arch: 0xc000003e, nr: 272 })); // 1 (unshare: EPERM)
 * ```
 */
export function evaluateSeccomp(
  filter: Uint8Array,
  call: { arch: number; nr: number; args?: readonly number[] },
): "allow" | "kill" | number {
  const data = new DataView(new ArrayBuffer(64));
  data.setUint32(NR_OFFSET, call.nr >>> 0, true);
  data.setUint32(ARCH_OFFSET, call.arch >>> 0, true);
  (call.args ?? []).forEach((arg, i) => {
    data.setUint32(16 + 8 * i, arg >>> 0, true);
    data.setUint32(20 + 8 * i, Math.floor(arg / 2 ** 32) >>> 0, true);
  });
  const view = new DataView(filter.buffer, filter.byteOffset, filter.length);
  let a = 0;
  for (let pc = 0; pc * 8 < filter.length;) {
    const code = view.getUint16(pc * 8, true);
    const jt = view.getUint8(pc * 8 + 2);
    const jf = view.getUint8(pc * 8 + 3);
    const k = view.getUint32(pc * 8 + 4, true);
    pc++;
    if (code === BPF_LD_W_ABS) a = data.getUint32(k, true);
    else if (code === BPF_RET_K) {
      if (k === SECCOMP_RET_ALLOW) return "allow";
      if (k === SECCOMP_RET_KILL_PROCESS) return "kill";
      return k & 0xffff;
    } else {
      const holds = code === BPF_JEQ_K
        ? a === k
        : code === BPF_JGE_K
        ? a >= k
        : (a & k) !== 0;
      pc += holds ? jt : jf;
    }
  }
  throw new RangeError("seccomp: the filter fell off its end");
}

/** The architecture of this host, or null when the module has no table for it. */
export function hostArch(): SeccompArch | null {
  const arch = Deno.build.arch as string;
  return arch === "x86_64" || arch === "aarch64" ? arch : null;
}

let filterFile: Promise<string> | undefined;

/**
 * The path of a file holding {@linkcode seccompFilter} for this host, written
 * once per process (mode 600 in a private directory of mode 700) and removed
 * when the process exits. Its directory follows the work roots' convention
 * (`<tmp>/kiln-<pid>-<random>` holding an `owner` mark, see `work_root.ts`),
 * so that the next kiln process sweeps it away if this one is killed.
 *
 * @throws {Error} on a host {@linkcode hostArch} does not know, or when the
 * file cannot be written.
 */
export function seccompFilterFile(): Promise<string> {
  filterFile ??= writeFilterFile().catch((error) => {
    filterFile = undefined;
    throw error;
  });
  return filterFile;
}

async function writeFilterFile(): Promise<string> {
  const arch = hostArch();
  if (arch === null) {
    throw new Error(`no syscall table for the ${Deno.build.arch} architecture`);
  }
  const dir = await Deno.makeTempDir({
    dir: tmpdir(),
    prefix: `kiln-${Deno.pid}-`,
  });
  await Deno.chmod(dir, 0o700);
  await Deno.writeTextFile(join(dir, "owner"), `kiln ${Deno.pid}\n`, {
    createNew: true,
    mode: 0o600,
  });
  const path = join(dir, "seccomp.bpf");
  await Deno.writeFile(path, seccompFilter(arch), {
    createNew: true,
    mode: 0o600,
  });
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already gone; otherwise the next kiln process sweeps it.
    }
  });
  return path;
}

/**
 * Why this kernel cannot install seccomp filters, or null when it can:
 * `/proc/sys/kernel/seccomp/actions_avail` lists `errno` (Linux 4.14+), or
 * else `/proc/self/status` has a `Seccomp` field (a kernel built with
 * `CONFIG_SECCOMP`).
 */
export async function seccompUnsupported(): Promise<string | null> {
  if (Deno.build.os !== "linux") {
    return `seccomp needs Linux, not ${Deno.build.os}`;
  }
  if (hostArch() === null) {
    return `kiln has no syscall table for the ${Deno.build.arch} architecture`;
  }
  const actions = await Deno.readTextFile(
    "/proc/sys/kernel/seccomp/actions_avail",
  ).catch(() => null);
  if (actions !== null) {
    return actions.split(/\s+/).includes("errno")
      ? null
      : `the kernel's seccomp has no errno action (actions: ${actions.trim()})`;
  }
  const status = await Deno.readTextFile("/proc/self/status").catch(() => "");
  return /^Seccomp:/m.test(status)
    ? null
    : "the kernel was built without seccomp (no Seccomp field in /proc/self/status)";
}

/** What {@linkcode detectSeccomp} found. */
export type SeccompDetection =
  | {
    readonly available: true;
    /** The filter file, to open on a descriptor for bwrap's `--seccomp`. */
    readonly path: string;
  }
  | {
    readonly available: false;
    readonly reason: string;
    /** Whether the kernel could filter: `--require-sandbox` then insists. */
    readonly kernelSupports: boolean;
  };

/** Options of {@linkcode detectSeccomp}: the links a step's command is made of. */
export interface DetectSeccompOptions {
  /** bwrap, proven to work; null when the namespace layer is missing. */
  readonly bwrapPath: string | null;
  /** @default "/usr/bin/setpriv" */
  readonly setprivPath?: string;
  /** bash, the link that opens the filter file; null when there is none. */
  readonly bashPath: string | null;
  /**
   * bwrap works the rootless way (a user namespace as the node's uid, see
   * `bubblewrap.ts`): the probe runs as jobs will. @default false
   */
  readonly rootless?: boolean;
}

/** The descriptor the filter is opened on for bwrap (the bash link closed every other above 2). */
export const SECCOMP_FD = 3;

/**
 * Proves the layer works by using it: writes the filter file, runs
 * `cat /proc/self/status` through the links every step has (bash opening
 * the file on {@linkcode SECCOMP_FD}, bwrap installing it) and checks the
 * kernel reports a filter (`Seccomp: 2`). Never throws.
 *
 * @example Reporting the seccomp layer
 * ```ts
 * import { detectSeccomp } from "./seccomp.ts";
 *
 * const seccomp = await detectSeccomp({ bwrapPath: "/usr/bin/bwrap", bashPath: "/bin/bash" });
 * console.log(seccomp.available ? "seccomp" : seccomp.reason);
 * ```
 */
export async function detectSeccomp(
  options: DetectSeccompOptions,
): Promise<SeccompDetection> {
  const unsupported = await seccompUnsupported();
  if (unsupported !== null) {
    return { available: false, reason: unsupported, kernelSupports: false };
  }
  const { bwrapPath, setprivPath, bashPath, rootless = false } = options;
  const { uid, gid } = rootless
    ? nodeIdentity()
    : { uid: SANDBOX_UID, gid: SANDBOX_UID };
  const missing = (reason: string): SeccompDetection => ({
    available: false,
    reason,
    kernelSupports: true,
  });
  if (bwrapPath === null) {
    return missing("bubblewrap installs the filter, and it is missing");
  }
  if (bashPath === null) {
    return missing("bash opens the filter for bubblewrap, and it is missing");
  }
  let workdir: string | undefined;
  try {
    const path = await seccompFilterFile();
    workdir = await Deno.makeTempDir({ prefix: "kiln-seccomp-probe-" });
    await prepareWorkdir(workdir, uid, gid);
    const [command, ...args] = [
      ...closeDescriptorsPrefix(bashPath, {
        open: { fd: SECCOMP_FD, path },
      }),
      ...bwrapPrefix({
        bwrapPath,
        ...setprivPath === undefined ? {} : { setprivPath },
        workdir,
        tmpSizeBytes: 1 << 20,
        uid,
        gid,
        env: { PATH: "/usr/bin:/bin" },
        seccompFd: SECCOMP_FD,
        rootless,
      }),
      "/bin/cat",
      "/proc/self/status",
    ];
    const output = await new Deno.Command(command!, {
      args,
      clearEnv: true,
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    if (!output.success || !/^Seccomp:\s*2$/m.test(text)) {
      return missing(
        `bubblewrap did not install the filter: ${
          new TextDecoder().decode(output.stderr).trim() ||
          `exit ${output.code}, ${
            /^Seccomp:.*$/m.exec(text)?.[0] ?? "no Seccomp line"
          }`
        }`,
      );
    }
    return { available: true, path };
  } catch (error) {
    return missing(
      `seccomp probe failed: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  } finally {
    if (workdir) {
      await Deno.remove(workdir, { recursive: true }).catch(() => {});
    }
  }
}
