/**
 * What the benches that run kiln as several processes share: a bench
 * script spoken to in lines, and a process's CPU time and memory read from
 * `/proc`.
 *
 * @module
 */
import { readLines } from "../cli/_processes.ts";

/** Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`; 100 on Linux). */
export const CLOCK_TICKS = 100;

/** A bench script as a child process, spoken to in lines. */
export function spawnScript(script: string, args: string[], token: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    env: { KILN_TOKEN: token, NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = readLines(child.stdout);
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  const write = (line: string) =>
    void writer.write(encoder.encode(`${line}\n`));
  /** The next line matching `pattern`; other lines are passed on to stderr. */
  const expect = async (pattern: RegExp): Promise<string> => {
    for (let line = await lines.next(); !line.done; line = await lines.next()) {
      if (pattern.test(line.value)) return line.value;
      await Deno.stderr.write(encoder.encode(`${line.value}\n`));
    }
    throw new Error(`${script} exited before printing ${pattern}`);
  };
  return {
    pid: child.pid,
    write,
    expect,
    send(line: string, pattern: RegExp): Promise<string> {
      write(line);
      return expect(pattern);
    },
    async [Symbol.asyncDispose]() {
      await writer.close().catch(() => {});
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await child.status;
      clearTimeout(timer);
      for await (const _ of lines);
    },
  };
}

/** A pause for the master to finish what the last step started (timers, GC). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1000));
}

/** The resident set of `pid`, in bytes. */
export async function residentBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) * 1024;
}

/** User plus system CPU time of `pid` so far, in clock ticks. */
export async function cpuTicks(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // `pid (comm) state ...`: fields 14 and 15, counted after the comm.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}
