import assert from "node:assert/strict";
import { dirname } from "node:path";
import {
  CLONE_NEW_FLAGS,
  DENIED_SYSCALLS,
  detectSeccomp,
  ENOSYS,
  EPERM,
  evaluateSeccomp,
  SECCOMP_FD,
  seccompFilter,
  seccompFilterFile,
  seccompUnsupported,
} from "./seccomp.ts";
import { detectBubblewrap } from "./bubblewrap.ts";
import { findBash } from "./descriptors.ts";

const X86_64 = 0xc000003e;
const AARCH64 = 0xc00000b7;
const I386 = 0x40000003;
const SIGCHLD = 17;
/** What glibc's pthread_create passes to clone. */
const THREAD_FLAGS = 0x3d0f00;

Deno.test("seccomp: x86-64 denies every listed call with EPERM and allows the rest", () => {
  const filter = seccompFilter("x86_64");
  const decide = (nr: number, args: number[] = []) =>
    evaluateSeccomp(filter, { arch: X86_64, nr, args });
  for (
    const [name, nr] of [
      ["unshare", 272],
      ["setns", 308],
      ["mount", 165],
      ["umount2", 166],
      ["pivot_root", 155],
      ["keyctl", 250],
      ["add_key", 248],
      ["request_key", 249],
      ["bpf", 321],
      ["perf_event_open", 298],
      ["ptrace", 101],
      ["process_vm_readv", 310],
      ["process_vm_writev", 311],
      ["userfaultfd", 323],
      ["kexec_load", 246],
      ["kexec_file_load", 320],
      ["init_module", 175],
      ["finit_module", 313],
      ["delete_module", 176],
      ["swapon", 167],
      ["swapoff", 168],
      ["reboot", 169],
      ["acct", 163],
      ["quotactl", 179],
      ["open_by_handle_at", 304],
      ["io_uring_setup", 425],
      ["io_uring_enter", 426],
      ["io_uring_register", 427],
    ] as const
  ) {
    assert.ok(DENIED_SYSCALLS.includes(name), name);
    assert.equal(decide(nr), EPERM, name);
  }
  // read, write, mmap, futex, getpid, execve, wait4, prlimit64, seccomp.
  for (const nr of [0, 1, 9, 202, 39, 59, 61, 302, 317]) {
    assert.equal(decide(nr), "allow", `syscall ${nr}`);
  }
  // x32 calls: the same kernel functions under numbers with bit 30.
  assert.equal(decide(0x40000000 + 272), EPERM);
  assert.equal(decide(0x40000000 + 1), EPERM);
});

Deno.test("seccomp: clone makes threads and processes, never namespaces; clone3 falls back", () => {
  for (
    const [arch, audit, clone] of [[
      "x86_64",
      X86_64,
      56,
    ], ["aarch64", AARCH64, 220]] as const
  ) {
    const filter = seccompFilter(arch);
    const decide = (nr: number, args: number[] = []) =>
      evaluateSeccomp(filter, { arch: audit, nr, args });
    assert.equal(decide(clone, [THREAD_FLAGS]), "allow", `${arch} thread`);
    assert.equal(decide(clone, [SIGCHLD]), "allow", `${arch} fork`);
    for (let bit = 0; bit < 32; bit++) {
      const flag = 2 ** bit;
      if ((CLONE_NEW_FLAGS & flag) === 0) continue;
      assert.equal(decide(clone, [SIGCHLD | flag]), EPERM, `${arch} ${flag}`);
    }
    assert.equal(decide(435), ENOSYS, `${arch} clone3`);
  }
});

Deno.test("seccomp: another ABI is killed, never read with the wrong table", () => {
  // i386's unshare is 310, x86-64's process_vm_readv: neither may decide.
  assert.equal(
    evaluateSeccomp(seccompFilter("x86_64"), { arch: I386, nr: 310 }),
    "kill",
  );
  assert.equal(
    evaluateSeccomp(seccompFilter("aarch64"), { arch: X86_64, nr: 0 }),
    "kill",
  );
});

Deno.test("seccomp: arm64 uses its own numbers", () => {
  const filter = seccompFilter("aarch64");
  const decide = (nr: number) => evaluateSeccomp(filter, { arch: AARCH64, nr });
  assert.equal(decide(97), EPERM); // unshare
  assert.equal(decide(117), EPERM); // ptrace
  assert.equal(decide(280), EPERM); // bpf
  assert.equal(decide(63), "allow"); // read
  assert.equal(decide(272 + 0x40000000), "allow"); // no x32 on arm64
});

Deno.test("seccomp: the filter file is private and holds the host's filter", async () => {
  if (await seccompUnsupported() !== null) return;
  const path = await seccompFilterFile();
  assert.equal(await seccompFilterFile(), path, "written once per process");
  const info = await Deno.stat(path);
  assert.equal(info.mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(dirname(path))).mode! & 0o777, 0o700);
  assert.equal(info.uid, Deno.uid());
  const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
  assert.deepEqual(await Deno.readFile(path), seccompFilter(arch));
});

Deno.test("seccomp: detection proves bwrap installs the filter, and the descriptor does not reach the program", async () => {
  const bwrap = await detectBubblewrap();
  const bash = await findBash();
  const detection = await detectSeccomp({
    bwrapPath: bwrap.available ? bwrap.path : null,
    bashPath: bash,
  });
  if (!bwrap.available || bash === null) {
    assert.equal(detection.available, false);
    return;
  }
  if (await seccompUnsupported() !== null) {
    assert.equal(detection.available, false);
    return;
  }
  assert.ok(detection.available, JSON.stringify(detection));
  assert.equal(SECCOMP_FD, 3);
});

Deno.test("seccomp: with no bwrap the layer is missing and says why", async () => {
  const detection = await detectSeccomp({ bwrapPath: null, bashPath: null });
  assert.equal(detection.available, false);
  if (!detection.available && detection.kernelSupports) {
    assert.match(detection.reason, /bubblewrap/);
  }
});
