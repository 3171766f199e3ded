/**
 * The process that waits inside a pre-warmed sandbox for its one program.
 *
 * A pre-warmed step is the whole sandbox chain (see `sandbox.ts`) started
 * before any job arrives, with this stub where the program would be: it
 * already runs in the step's cgroup, namespaces and seccomp filter, as the
 * job's uid, in the job's workdir. It blocks reading its orders from stdin;
 * when the job arrives kiln writes them, then the program's stdin after.
 * The stub first says it is ready ({@linkcode WARM_STUB_READY} on its
 * stdout): until then its chain is still starting, and costs CPU a job
 * must neither wait for nor be charged with.
 * The stub reads exactly its orders (never a byte of the program's stdin),
 * sets the program's rlimits (with `prlimit64(2)`, as `prlimit` would) and
 * environment, and execs the runner's command. Nothing of the
 * stub survives the exec but what any exec keeps: pid, cwd, descriptors 0
 * to 2, rlimits, and the CPU time it used before (which kiln subtracts).
 *
 * The orders are a length (8 hex digits) and that many bytes of
 * NUL-separated fields: a magic, a nonce, the stdin mode (`pipe`, or
 * `null` to read `/dev/null` like a cold step without input), the number
 * of `prlimit64(2)` on this architecture, the number of rlimits and each
 * (`resource:soft:hard`), the number of environment entries, the entries
 * (`NAME=value`), then the argv. No
 * field can hold a NUL: neither can an environment entry or an argument.
 *
 * bubblewrap sets `PWD` after the environment it is given, so a cold
 * program always finds `PWD` last; the stub keeps the `PWD` bubblewrap
 * gave it, set after the program's environment, for the same result.
 *
 * The stub is Perl (`perl-base`, on every Debian host), not a shell: a
 * shell cannot exec with exactly the environment given (bash exports `_`,
 * `PWD` and `SHLVL`), and Perl can, without one more exec of `env`. It
 * uses no module, so it starts without reading a file of Perl's library.
 *
 * When it cannot do what it was told, the stub writes
 * `kiln: warm sandbox <nonce>: <reason>` to stderr and exits with
 * {@linkcode WARM_STUB_FAILED}: the nonce travels only in the orders, which
 * the program never sees, so a program cannot fake kiln's failure.
 *
 * @module
 */
import { firstFile } from "./_first_file.ts";
import type { RlimitSetting } from "./rlimits.ts";

/** `prlimit64(2)`'s number per architecture. */
const PRLIMIT64: Partial<Record<typeof Deno.build.arch, number>> = {
  x86_64: 302,
  aarch64: 261,
};

/**
 * The number of `prlimit64(2)` on this machine, which the stub calls to set
 * rlimits itself (one exec of `prlimit` less per step), or null where kiln
 * does not know it: then the orders run `prlimit` as a cold step does.
 */
export function prlimitSyscall(): number | null {
  return PRLIMIT64[Deno.build.arch] ?? null;
}

/** Exit code of the stub when it cannot start the program (125, as the chain's other links). */
export const WARM_STUB_FAILED = 125;

/**
 * What the stub writes to its stdout once it waits for its orders, before
 * any output of the program: kiln reads it off (see
 * {@linkcode awaitStubReady}), so the program's output never holds it.
 */
export const WARM_STUB_READY = "kiln-warm-ready\n";

/** The first field of every order: the version of this format. */
const MAGIC = "kiln-warm-1";

/** Where Perl is looked for. */
const PERL_PATHS = ["/usr/bin/perl", "/bin/perl"];

/**
 * The stub's script. EOF before any order (kiln destroyed an unused warm
 * sandbox) is a quiet exit 0. `%ENV` is replaced whole, so exactly the
 * given environment reaches the program.
 */
const STUB_SCRIPT = String.raw`
sub fail { print STDERR "kiln: warm sandbox $_[0]: $_[1]\n"; exit ${WARM_STUB_FAILED}; }
sub take { my ($n) = @_; my $b = ""; while (length($b) < $n) {
  my $r = sysread(STDIN, $b, $n - length($b), length($b));
  if (!defined $r) { fail("?", "cannot read orders: $!"); }
  if ($r == 0) { exit 0 if length($b) == 0 && $n == 8; fail("?", "orders cut short"); } }
  return $b; }
syswrite(STDOUT, "${WARM_STUB_READY}") or exit ${WARM_STUB_FAILED};
my $head = take(8);
fail("?", "bad order length") unless $head =~ /^[0-9a-f]{8}$/;
my @f = split(/\0/, take(hex($head)), -1);
fail("?", "orders of another format") unless @f >= 7 && shift(@f) eq "${MAGIC}";
my $nonce = shift(@f);
my $stdin = shift(@f);
my $prlimit = shift(@f);
my $limits = shift(@f);
fail($nonce, "bad rlimit count") unless $limits =~ /^[0-9]+$/ && ($limits == 0 || $prlimit =~ /^[0-9]+$/);
for (1 .. $limits) {
  my ($resource, $soft, $hard) = split(/:/, shift(@f));
  syscall($prlimit + 0, 0, $resource + 0, pack("QQ", $soft, $hard), 0) == 0
    or fail($nonce, "cannot set rlimit $resource: $!");
}
my $count = shift(@f);
fail($nonce, "bad environment count") unless $count =~ /^[0-9]+$/ && $count <= @f;
my $pwd = $ENV{PWD};
%ENV = ();
for (1 .. $count) { my ($k, $v) = split(/=/, shift(@f), 2); $ENV{$k} = $v; }
$ENV{PWD} = $pwd if defined $pwd;
fail($nonce, "no command") unless @f;
if ($stdin eq "null") { open(STDIN, "<", "/dev/null") or fail($nonce, "cannot open /dev/null: $!"); }
exec { $f[0] } @f;
fail($nonce, "cannot run $f[0]: $!");
`;

/**
 * Reads the stub's {@linkcode WARM_STUB_READY} off `stdout`, and nothing
 * more, then lets the stream go for the program's output.
 *
 * @throws {Error} when the stream ends or says anything else first (the
 * chain failed: its stderr tells why), or after `timeoutMs`.
 */
export async function awaitStubReady(
  stdout: ReadableStream<Uint8Array>,
  timeoutMs: number,
): Promise<void> {
  const want = new TextEncoder().encode(WARM_STUB_READY);
  const reader = stdout.getReader({ mode: "byob" });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new Error(`the warm stub was not ready within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    let have = 0;
    let buffer = new Uint8Array(want.length);
    while (have < want.length) {
      // A BYOB read never takes more than the marker's length: nothing of
      // what follows (the program's output) is consumed here.
      const { value, done } = await Promise.race([
        reader.read(buffer.subarray(have)),
        timeout,
      ]);
      if (done || value === undefined) {
        throw new Error("the warm stub ended before it was ready");
      }
      buffer = new Uint8Array(value.buffer);
      have += value.byteLength;
    }
    if (!buffer.every((byte, i) => byte === want[i])) {
      throw new Error("the warm stub said something else than ready");
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

/** The command line of the stub, to put where a cold step's command is. */
export function warmStubCommand(perlPath: string): string[] {
  return [perlPath, "-e", STUB_SCRIPT];
}

/** What a waiting stub is told to run. */
export interface WarmOrders {
  /** Known only to kiln and the stub: marks the stub's own failures. */
  readonly nonce: string;
  /** `null` gives the program `/dev/null` as stdin, as a cold step without input. */
  readonly stdin: "pipe" | "null";
  /**
   * Rlimits the stub sets on itself before the exec (they hold for the
   * program), through `prlimit64(2)`: none without {@linkcode prlimitSyscall}.
   */
  readonly rlimits: readonly RlimitSetting[];
  /** The program's whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The command line to exec: `argv[0]` is the path run. */
  readonly argv: readonly string[];
}

/**
 * The bytes that tell a waiting stub what to run.
 *
 * @throws {TypeError} when a field holds a NUL, an environment name is
 * empty or holds `=`, or the argv is empty.
 */
export function encodeOrders(orders: WarmOrders): Uint8Array {
  const env = Object.entries(orders.env);
  for (const [name] of env) {
    if (name === "" || name.includes("=")) {
      throw new TypeError(
        `Cannot order a warm sandbox: bad environment name ${
          JSON.stringify(name)
        }`,
      );
    }
  }
  if (orders.argv.length === 0) {
    throw new TypeError("Cannot order a warm sandbox: no command");
  }
  const syscall = orders.rlimits.length === 0 ? "" : prlimitSyscall();
  if (syscall === null) {
    throw new TypeError(
      `Cannot order a warm sandbox to set rlimits: no prlimit64 number for ${Deno.build.arch}`,
    );
  }
  const fields = [
    MAGIC,
    orders.nonce,
    orders.stdin,
    `${syscall}`,
    `${orders.rlimits.length}`,
    ...orders.rlimits.map(({ resource, soft, hard }) =>
      `${resource}:${soft}:${hard}`
    ),
    `${env.length}`,
    ...env.map(([name, value]) => `${name}=${value}`),
    ...orders.argv,
  ];
  if (fields.some((field) => field.includes("\0"))) {
    throw new TypeError("Cannot order a warm sandbox: a field holds a NUL");
  }
  const body = new TextEncoder().encode(fields.join("\0"));
  if (body.length > 0xffffffff) {
    throw new RangeError("Cannot order a warm sandbox: orders too long");
  }
  const head = new TextEncoder().encode(
    body.length.toString(16).padStart(8, "0"),
  );
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head);
  bytes.set(body, head.length);
  return bytes;
}

/**
 * Whether a step's outcome is the stub's own failure with this nonce,
 * not anything the program did.
 */
export function isStubFailure(
  outcome: { readonly exitCode: number | null; readonly stderr: string },
  nonce: string,
): boolean {
  return outcome.exitCode === WARM_STUB_FAILED &&
    outcome.stderr.startsWith(`kiln: warm sandbox ${nonce}: `);
}

let perl: Promise<string | null> | undefined;

/** The path of Perl (looked up once per process), or null: then nothing is pre-warmed. */
export function findPerl(): Promise<string | null> {
  perl ??= firstFile(PERL_PATHS);
  return perl;
}

/** Linux's `USER_HZ`: `/proc/<pid>/stat` counts CPU time in 1/100 s. */
const TICKS_PER_SECOND = 100;

/**
 * The CPU time the waiting stub's own process has used so far, in ms,
 * found among `pids` (its step's processes) by its name; 0 when it is not
 * there. The kernel's CPU rlimit counts it against the program that
 * process becomes, so a warm step's CPU time keeps it, as a cold step's
 * keeps the setup its process did before the program.
 */
export function stubCpuMs(pids: readonly number[]): number {
  for (const pid of pids) {
    // Synchronous: /proc is in memory, and an async read costs a hop to
    // another thread and back, on the path of every warm step's start.
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    } catch {
      continue; // Gone since.
    }
    if (!stat.startsWith(`${pid} (perl) `)) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks * 1000 / TICKS_PER_SECOND : 0;
  }
  return 0;
}
