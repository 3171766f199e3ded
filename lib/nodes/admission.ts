/**
 * Deciding whether a submission can run here at all, before it takes a slot
 * or a place in the queue: a valid job, in a language this node can run.
 * Every refusal carries the reason the client will read.
 *
 * @module
 */
import { z } from "zod";
import { type JobRequest, JobRequestSchema } from "../job.ts";
import type { ResolvedRunner, RunnerRegistry } from "../runners/registry.ts";

/** A job that may run, with the runner that will run it. */
export interface AdmittedJob {
  readonly ok: true;
  readonly request: JobRequest;
  readonly resolved: ResolvedRunner;
}

/** A job that may not run, and why. */
export interface RefusedJob {
  readonly ok: false;
  readonly reason: string;
}

/**
 * Validates an untrusted job and finds its runner.
 *
 * @example Refusing a language nobody offers
 * ```ts
 * import { admitJob } from "./admission.ts";
 * import { createDefaultRegistry } from "../runners/registry.ts";
 *
 * const verdict = await admitJob({ language: "cobol", files: [{ name: "a.cob", content: "" }] }, createDefaultRegistry());
 * if (!verdict.ok) console.log(verdict.reason); // unknown language "cobol"; this cluster offers python, ...
 * ```
 */
export async function admitJob(
  raw: unknown,
  registry: RunnerRegistry,
): Promise<AdmittedJob | RefusedJob> {
  const parsed = JobRequestSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      ok: false,
      reason: `invalid job: ${z.prettifyError(parsed.error)}`,
    };
  }
  const lookup = await registry.resolve(parsed.data.language);
  if (lookup.ok) {
    return { ok: true, request: parsed.data, resolved: lookup.resolved };
  }
  if (lookup.problem === "toolchain_unavailable") {
    return { ok: false, reason: lookup.reason };
  }
  const offered = (await registry.available()).map(({ runner }) => runner.name);
  return {
    ok: false,
    reason: `${lookup.reason}; this cluster offers ${
      offered.join(", ") || "no language at all"
    }`,
  };
}
