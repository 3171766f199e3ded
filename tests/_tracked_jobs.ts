/**
 * Jobs for cluster tests (standalone and on NATS): scripts that tell one
 * node from another without timing, and submissions whose events can be
 * awaited one by one.
 *
 * @module
 */
import { type JobEvent, type JobRequest, submitProgram } from "../mod.ts";

export function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "job.sh", content: script }] };
}

/**
 * A job that never ends on the node called `name` and ends at once on any
 * other: it reads its parent's command line (the secondary's `--name`). So
 * a test can tell a job's first attempt from its restart without timing.
 * On the doomed node it prints `pid N` first, for the test to clean up.
 *
 * A sandboxed job cannot see its node's process (its own pid namespace),
 * so the node `name` must be started with {@linkcode unsandboxed}; on the
 * other nodes `/proc/$PPID` is bubblewrap's or missing, never a secondary.
 */
export function stuckOn(name: string, script: string): JobRequest {
  return bash(
    `if tr '\\0' ' ' < /proc/$PPID/cmdline 2>/dev/null | grep -q -- "--name ${name} "; then echo "pid $$"; exec sleep 600; fi\n${script}`,
  );
}

/**
 * The flag a node needs for {@linkcode stuckOn} to recognise it: its jobs
 * run as direct children of the secondary, outside any pid namespace, so
 * `$PPID` is the secondary and `$$` a pid of this host.
 */
export const unsandboxed = ["--sandbox", "none"] as const;

/** Kills the process groups of jobs that printed `pid N` on a node that was killed or frozen. */
export function killLeftovers(outputs: readonly string[]): void {
  for (const match of outputs.join("").matchAll(/^pid (\d+)$/gm)) {
    try {
      Deno.kill(-Number(match[1]), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** A submission whose events can be awaited one by one. */
export function track(
  address: string,
  request: JobRequest,
  client = "tester",
  token = "",
) {
  const events: JobEvent[] = [];
  const waiters: {
    test: (e: JobEvent) => boolean;
    resolve: (e: JobEvent) => void;
  }[] = [];
  const abort = new AbortController();
  const result = submitProgram(request, {
    master: address,
    token,
    name: client,
    signal: abort.signal,
    onEvent: (event) => {
      events.push(event);
      for (const waiter of [...waiters]) {
        if (!waiter.test(event)) continue;
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(event);
      }
    },
  });
  // A test that lets go of a job does not always await its rejection.
  result.catch(() => {});
  return {
    events,
    result,
    abort: () => abort.abort(new Error("the test let go")),
    /** The first event (seen or to come) that passes `test`. */
    next(test: (e: JobEvent) => boolean): Promise<JobEvent> {
      const seen = events.find(test);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ test, resolve }));
    },
  };
}

export const isStarted = (e: JobEvent) => e.type === "started";
export const isQueued = (e: JobEvent) => e.type === "queued";
