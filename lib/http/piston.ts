/**
 * Piston compatibility (`POST /api/v2/execute`, `GET /api/v2/runtimes`):
 * Piston's request turned into a kiln job, and a kiln result turned into
 * Piston's answer, so a Piston client works by changing its base URL.
 * See https://github.com/engineer-man/piston/blob/master/docs/api-v2.md.
 *
 * @module
 */
import { z } from "zod";
import type { JobRequest, JobResult, LimitOverrides } from "../job.ts";
import type { OfferedLanguage } from "../protocol/messages.ts";

/** One stage (`run` or `compile`) of a Piston answer. */
export interface PistonStage {
  /** What the stage wrote to stdout. */
  stdout: string;
  /** What it wrote to stderr. */
  stderr: string;
  /** Both, in the order written (when known; else stdout then stderr). */
  output: string;
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  /** Signal name, or null. */
  signal: string | null;
}

/** Piston's answer to `POST /api/v2/execute`. */
export interface PistonExecuteResponse {
  /** The language's canonical name. */
  language: string;
  /** Its toolchain version. */
  version: string;
  /** The run stage. */
  run: PistonStage;
  /** The compile stage, for compiled languages. */
  compile?: PistonStage;
}

/** One entry of Piston's `GET /api/v2/runtimes`. */
export interface PistonRuntime {
  /** The language's canonical name. */
  language: string;
  /** A SemVer-looking version. */
  version: string;
  /** Other names it answers to. */
  aliases: string[];
}

const Limit = z.number().int().optional();
const PistonRequestSchema = z.object({
  language: z.string().min(1, "language is required"),
  version: z.string().optional(),
  files: z.array(z.object({
    name: z.string().optional(),
    content: z.string(),
    encoding: z.enum(["utf8", "base64", "hex"]).optional(),
  })).min(1, "files must hold at least one file"),
  stdin: z.string().optional(),
  args: z.array(z.string()).optional(),
  compile_timeout: Limit,
  run_timeout: Limit,
  compile_cpu_time: Limit,
  run_cpu_time: Limit,
  compile_memory_limit: Limit,
  run_memory_limit: Limit,
});

/**
 * A kiln job from a Piston request, or the `message` Piston would answer
 * with a 400. Nameless files get a name with the language's extension.
 */
export function fromPistonRequest(
  raw: unknown,
  offers: readonly OfferedLanguage[],
): { ok: true; job: JobRequest } | { ok: false; message: string } {
  const parsed = PistonRequestSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      ok: false,
      message: z.prettifyError(parsed.error).replaceAll("\n", " "),
    };
  }
  const request = parsed.data;
  const wanted = request.language.toLowerCase();
  const offer = offers.find((o) =>
    o.name === wanted || o.aliases.includes(wanted)
  );
  const extension = offer?.extensions[0] ?? "";
  const files = [];
  for (const [index, file] of request.files.entries()) {
    const name = file.name ?? `file${index}${extension}`;
    const encoding = file.encoding ?? "utf8";
    const content = decode(file.content, encoding);
    if (content === undefined) {
      return {
        ok: false,
        message: `files[${index}] ("${
          name.slice(0, 100)
        }"): the content is not valid ${encoding}`,
      };
    }
    files.push({ name, content });
  }
  const limits: LimitOverrides = {};
  // Piston's -1 (or any non-positive) means "no limit of mine": kiln's own apply.
  const set = (key: keyof LimitOverrides, value: number | undefined) => {
    if (value !== undefined && value > 0) limits[key] = value;
  };
  const mib = (bytes: number | undefined) =>
    bytes === undefined || bytes <= 0
      ? undefined
      : Math.max(1, Math.floor(bytes / (1024 * 1024)));
  set("wallTimeMs", request.run_timeout);
  set("compileWallTimeMs", request.compile_timeout);
  set("cpuTimeMs", request.run_cpu_time);
  set("compileCpuTimeMs", request.compile_cpu_time);
  set("memoryMb", mib(request.run_memory_limit));
  set("compileMemoryMb", mib(request.compile_memory_limit));
  const job: JobRequest = { language: request.language, files };
  if (request.stdin !== undefined) job.stdin = request.stdin;
  if (request.args !== undefined) job.args = request.args;
  if (Object.keys(limits).length > 0) job.limits = limits;
  return { ok: true, job };
}

/**
 * Piston's answer for a kiln result; `output` is stdout and stderr
 * interleaved as they streamed, when the caller collected them.
 */
export function toPistonResponse(
  result: JobResult,
  version: string,
  output?: string,
): PistonExecuteResponse {
  // kiln stops a program over its limits with SIGKILL, as Piston does.
  const killed = result.signal ??
    (result.exitCode === null && result.verdict !== "ok" ? "SIGKILL" : null);
  const response: PistonExecuteResponse = {
    language: result.language ?? "",
    version: semver(version),
    run: {
      stdout: result.stdout,
      stderr: result.stderr,
      output: output ?? result.stdout + result.stderr,
      code: killed === null ? result.exitCode : null,
      signal: killed,
    },
  };
  if (result.compile) {
    const compile = result.compile;
    response.compile = {
      stdout: compile.stdout,
      stderr: compile.stderr,
      output: compile.stdout + compile.stderr,
      code: compile.exitCode,
      signal: compile.exitCode === null ? "SIGKILL" : null,
    };
  }
  return response;
}

/** Piston's runtimes list from the languages the cluster offers now. */
export function toPistonRuntimes(
  offers: readonly OfferedLanguage[],
): PistonRuntime[] {
  return uniqueOffers(offers).map((offer) => ({
    language: offer.name,
    version: semver(offer.version),
    aliases: [...offer.aliases],
  }));
}

/** One offer per language and version, sorted by name. */
export function uniqueOffers(
  offers: readonly OfferedLanguage[],
): OfferedLanguage[] {
  const byKey = new Map<string, OfferedLanguage>();
  for (const offer of offers) {
    const key = `${offer.name}\0${offer.version}`;
    if (!byKey.has(key)) byKey.set(key, offer);
  }
  return [...byKey.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** `Python 3.11.2` → `3.11.2`: Piston clients expect SemVer. */
function semver(version: string): string {
  const match = /\d+(?:\.\d+){0,2}/.exec(version);
  if (!match) return "0.0.0";
  const parts = match[0].split(".");
  while (parts.length < 3) parts.push("0");
  return parts.join(".");
}

/** The text of `content` in `encoding`, or undefined when it is not valid in that encoding. */
function decode(
  content: string,
  encoding: "utf8" | "base64" | "hex",
): string | undefined {
  if (encoding === "utf8") return content;
  let bytes: Uint8Array;
  if (encoding === "base64") {
    let binary: string;
    try {
      binary = atob(content);
    } catch {
      return undefined; // InvalidCharacterError: not base64
    }
    bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } else {
    // Checked first: parseInt would read "zz" as NaN and write a NUL byte.
    if (content.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(content)) {
      return undefined;
    }
    bytes = new Uint8Array(content.length / 2);
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = parseInt(content.slice(2 * i, 2 * i + 2), 16);
    }
  }
  return new TextDecoder().decode(bytes);
}
