/**
 * The master's HTTP API (`--http-port`): REST and WebSocket for jobs, a
 * Server-Sent Events feed for the dashboard, Piston compatibility,
 * Prometheus metrics, and the dashboard and playground pages themselves.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { JobHistory, type JobSummary } from "../history/job_history.ts";
import type { JobResult } from "../job.ts";
import { ClusterMetrics } from "../monitor/cluster_metrics.ts";
import type { MasterNode } from "../nodes/master_node.ts";
import type { JobEvent } from "../protocol/messages.ts";
import type { Credentials } from "../security/credentials.ts";
import { authorize, type HttpCaller } from "./auth.ts";
import { JobTracker } from "./job_tracker.ts";
import {
  fromPistonRequest,
  toPistonResponse,
  toPistonRuntimes,
  uniqueOffers,
} from "./piston.ts";
import { serveWebFile } from "./static_files.ts";

const log = getLogger(["kiln", "http"]);

/** The HTTP API's port when none is given. */
export const DEFAULT_HTTP_PORT = 7780;

/** How often the events feed repeats the cluster status, in ms. */
const STATUS_INTERVAL_MS = 1000;

/** Largest request body read, in bytes: a job's own cap is the master's. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Options of {@linkcode HttpApi}. */
export interface HttpApiOptions {
  /** Address to listen on. @default "127.0.0.1" */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (see {@linkcode HttpApi.addr}). @default 7780 */
  port?: number;
  /**
   * Tokens the API accepts as `Authorization: Bearer`.
   * @default the master's credentials, as they are at each request
   */
  credentials?: Credentials;
  /**
   * Where finished jobs are kept. One given here is the caller's to close.
   * @default a new in-memory history, closed at shutdown
   */
  history?: JobHistory;
  /** Aborting it shuts the API down, like {@linkcode HttpApi.shutdown}. */
  signal?: AbortSignal;
}

/** A message of the job stream that is not a job event. */
interface StreamError {
  type: "error";
  jobId: string;
  message: string;
}

/**
 * The HTTP API of a master. It listens when constructed, like `Deno.serve`,
 * and shuts down with the master.
 *
 * @example An API next to a master, and a job through it
 * ```ts
 * import { HttpApi, MasterNode } from "../../mod.ts";
 *
 * await using master = new MasterNode({ port: 0, slots: 1, resourceLogIntervalMs: 0 });
 * await using api = new HttpApi(master, { port: 0 });
 * const response = await fetch(`http://127.0.0.1:${api.addr.port}/api/v1/jobs`, {
 *   method: "POST",
 *   body: JSON.stringify({ language: "bash", files: [{ name: "a.sh", content: "echo hi" }] }),
 * });
 * console.log((await response.json()).stdout); // hi
 * ```
 */
export class HttpApi implements AsyncDisposable {
  /** The address the API listens on. */
  readonly addr: Deno.NetAddr;
  /** Resolves when the API has shut down. */
  readonly finished: Promise<void>;

  readonly #master: MasterNode;
  readonly #credentials: Credentials | undefined;
  readonly #history: JobHistory;
  readonly #ownsHistory: boolean;
  readonly #tracker: JobTracker;
  readonly #metrics: ClusterMetrics;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** Closes each open events feed and WebSocket: a server cannot finish while they stay open. */
  readonly #closers = new Set<() => void>();
  /** HTTP jobs not finished yet, by id: who may cancel them or type their stdin, and how. */
  readonly #cancels = new Map<
    string,
    {
      client: string;
      abort: AbortController;
      input: (data: string, eof?: boolean) => void;
    }
  >();
  readonly #stopping = new AbortController();
  #closing: Promise<void> | undefined;

  /** Starts serving at once; throws `Deno.errors.AddrInUse` and the like synchronously. */
  constructor(master: MasterNode, options: HttpApiOptions = {}) {
    const {
      hostname = "127.0.0.1",
      port = DEFAULT_HTTP_PORT,
      credentials,
      history,
      signal,
    } = options;
    this.#master = master;
    this.#credentials = credentials;
    this.#history = history ?? new JobHistory();
    this.#ownsHistory = history === undefined;
    this.#tracker = new JobTracker(master, this.#history);
    this.#metrics = new ClusterMetrics(() => master.status());
    master.addEventListener(
      "jobcomplete",
      ({ detail }) => this.#metrics.observe(detail),
      { signal: this.#stopping.signal },
    );
    this.#server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      onError: (error) => {
        log.error("request failed: {error}", { error });
        return Response.json({ error: "internal error" }, { status: 500 });
      },
    }, (request) => this.#handle(request));
    this.addr = this.#server.addr;
    this.finished = this.#server.finished;
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
    master.finished.then(() => this.shutdown());
  }

  /** Closes every feed and stream, cancels waiting HTTP jobs, stops listening. */
  shutdown(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping.abort();
      for (const close of [...this.#closers]) close();
      for (const { abort } of this.#cancels.values()) abort.abort();
      await this.#server.shutdown();
      this.#tracker[Symbol.dispose]();
      if (this.#ownsHistory) this.#history.close();
    })();
    return this.#closing;
  }

  /** Shuts the API down; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (method === "GET" || method === "HEAD") {
      if (path === "/") return await serveWebFile("index.html");
      if (path === "/playground") return await serveWebFile("playground.html");
      if (path.startsWith("/static/")) {
        return await serveWebFile(decodeURIComponent(path.slice(8)));
      }
      if (path === "/healthz") return Response.json({ ok: true });
      if (path === "/metrics") {
        return new Response(await this.#metrics.text(), {
          headers: { "content-type": this.#metrics.contentType },
        });
      }
    }
    if (!path.startsWith("/api/")) return error(404, "not found");
    const caller = authorize(
      request,
      url,
      this.#credentials ?? this.#master.credentials,
    );
    if (!caller.ok) return error(caller.status, caller.error);

    const jobPath = /^\/api\/v1\/jobs\/([^/]+)(\/stream)?$/.exec(path);
    if (method === "GET") {
      if (path === "/api/v1/events") return this.#events(caller);
      if (path === "/api/v1/runtimes") return Response.json(this.#runtimes());
      if (path === "/api/v1/nodes") {
        return Response.json(this.#master.status());
      }
      if (path === "/api/v1/jobs") {
        return Response.json(this.#listJobs(url, caller));
      }
      if (path === "/api/v2/runtimes") {
        return Response.json(toPistonRuntimes(this.#master.offers()));
      }
      if (jobPath && !this.#mayseeJob(caller, jobPath[1]!)) {
        return error(404, `no job ${jobPath[1]}`);
      }
      if (jobPath?.[2] !== undefined) {
        return this.#stream(request, jobPath[1]!, caller);
      }
      if (jobPath) return this.#getJob(jobPath[1]!);
    }
    if (method === "POST") {
      if (path === "/api/v1/jobs") return await this.#postJob(request, caller);
      if (path === "/api/v2/execute") {
        return await this.#pistonExecute(request, caller);
      }
    }
    return error(404, `no route for ${method} ${path}`);
  }

  #runtimes(): { language: string; version: string; aliases: string[] }[] {
    return uniqueOffers(this.#master.offers()).map((offer) => ({
      language: offer.name,
      version: offer.version,
      aliases: [...offer.aliases],
    }));
  }

  /** Whether `caller` may see the job: a named client only its own. */
  #mayseeJob(caller: HttpCaller & { ok: true }, jobId: string): boolean {
    if (caller.onlyJobsOf === undefined) return true;
    const owner = this.#tracker.summary(jobId)?.client ??
      this.#history.get(jobId)?.summary.client;
    return owner === undefined || owner === caller.onlyJobsOf;
  }

  #listJobs(
    url: URL,
    caller: HttpCaller & { ok: true },
  ): { jobs: JobSummary[] } {
    const param = (name: string) => url.searchParams.get(name) ?? undefined;
    const limitText = param("limit");
    const limit = limitText === undefined ? 50 : Number(limitText);
    const filter = {
      limit: Number.isInteger(limit) && limit >= 0 ? limit : 50,
      language: param("language"),
      verdict: param("verdict"),
      // A named client lists its own jobs whatever it asks.
      client: caller.onlyJobsOf ?? param("client"),
    };
    // Unfinished jobs are the most recent; they have no verdict yet.
    const live = filter.verdict !== undefined ? [] : this.#tracker.unfinished()
      .filter((job) =>
        (filter.language === undefined || job.language === filter.language) &&
        (filter.client === undefined || job.client === filter.client)
      ).reverse();
    return {
      jobs: [...live, ...this.#history.list(filter)].slice(0, filter.limit),
    };
  }

  #getJob(jobId: string): Response {
    const live = this.#tracker.summary(jobId);
    if (live) return Response.json(live);
    const done = this.#history.get(jobId);
    if (!done) return error(404, `no job ${jobId}`);
    return Response.json({ ...done.summary, result: done.result });
  }

  /** Starts a job for `caller`; its events feed the tracker, and it can be cancelled. */
  #run(
    raw: unknown,
    caller: HttpCaller & { ok: true },
    onEvent?: (event: JobEvent) => void,
  ): { jobId: string; result: Promise<JobResult>; abort: AbortController } {
    const abort = new AbortController();
    const { jobId, result, input } = this.#master.run(raw, {
      client: caller.client,
      quota: caller.quota,
      signal: abort.signal,
      onEvent: (event) => {
        this.#tracker.feed(event);
        onEvent?.(event);
      },
    });
    const language = (raw as { language?: unknown }).language;
    if (typeof language === "string") {
      this.#tracker.setRequestedLanguage(jobId, language);
    }
    this.#cancels.set(jobId, { client: caller.client, abort, input });
    result.finally(() => this.#cancels.delete(jobId));
    return { jobId, result, abort };
  }

  async #postJob(
    request: Request,
    caller: HttpCaller & { ok: true },
  ): Promise<Response> {
    const body = await readJson(request);
    if (!body.ok) return error(400, body.error);
    if (!isObject(body.value)) {
      return error(400, "the body must be a JSON object");
    }
    const { wait = true, ...raw } = body.value;
    if (typeof wait !== "boolean") return error(400, "wait must be a boolean");
    const { jobId, result } = this.#run(raw, caller);
    if (!wait) return Response.json({ jobId }, { status: 202 });
    // A client that hangs up leaves its job running: the result goes to the
    // history. (Deno's request.signal also fires after successful responses.)
    return Response.json(await result);
  }

  async #pistonExecute(
    request: Request,
    caller: HttpCaller & { ok: true },
  ): Promise<Response> {
    const body = await readJson(request);
    if (!body.ok) {
      return Response.json({ message: body.error }, { status: 400 });
    }
    const offers = this.#master.offers();
    const job = fromPistonRequest(body.value, offers);
    if (!job.ok) {
      return Response.json({ message: job.message }, { status: 400 });
    }
    // Piston's `output` is both streams in the order written: collect the chunks.
    let output = "";
    const { result } = this.#run(job.job, caller, (event) => {
      if (event.type === "output") output += event.data;
      if (event.type === "restarted") output = "";
    });
    const done = await result;
    if (done.verdict === "rejected") {
      return Response.json({ message: done.reason ?? "rejected" }, {
        status: 400,
      });
    }
    const version = offers.find((o) => o.name === done.language)?.version ?? "";
    // Chunks may include a compile step's output, or miss a cut tail: trust them only when they add up.
    const ordered = output.length === done.stdout.length + done.stderr.length
      ? output
      : undefined;
    return Response.json(toPistonResponse(done, version, ordered));
  }

  /** `GET /api/v1/events`: the cluster status every second and at each node change, and every job change. */
  #events(caller: HttpCaller & { ok: true }): Response {
    const visible = (job: JobSummary) =>
      caller.onlyJobsOf === undefined || job.client === caller.onlyJobsOf;
    const encoder = new TextEncoder();
    let close = () => {};
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const send = (event: string, data: unknown) =>
          controller.enqueue(
            encoder.encode(
              `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`,
            ),
          );
        const status = () => send("status", this.#master.status());
        const stop = new AbortController();
        const timer = setInterval(status, STATUS_INTERVAL_MS);
        const stopJobs = this.#tracker.onChange((job) =>
          visible(job) && send("job", job)
        );
        for (const type of ["nodejoin", "nodeleave"] as const) {
          this.#master.addEventListener(type, status, { signal: stop.signal });
        }
        close = () => {
          if (!this.#closers.delete(close)) return;
          clearInterval(timer);
          stopJobs();
          stop.abort();
          try {
            controller.close();
          } catch { /* the client went first */ }
        };
        this.#closers.add(close);
        status();
        for (const job of this.#tracker.unfinished()) {
          if (visible(job)) send("job", job);
        }
      },
      cancel: () => close(),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
      },
    });
  }

  /** `GET /api/v1/jobs/:id/stream`: the job's events so far, then live ones, then close. */
  #stream(
    request: Request,
    jobId: string,
    caller: HttpCaller & { ok: true },
  ): Response {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return error(426, "this is a WebSocket endpoint");
    }
    if (!this.#tracker.summary(jobId) && !this.#history.get(jobId)) {
      return error(404, `no job ${jobId}`);
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    const send = (message: JobEvent | StreamError) => {
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(message));
      }
    };
    let unfollow: (() => void) | undefined;
    const close = () => {
      this.#closers.delete(close);
      unfollow?.();
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000, "done");
    };
    socket.onopen = () => {
      this.#closers.add(close);
      unfollow = this.#tracker.follow(jobId, (event) => {
        send(event);
        if (event.type === "result") queueMicrotask(close);
      });
      if (unfollow) return;
      // It finished between the request and the upgrade.
      const done = this.#history.get(jobId);
      if (done) send({ type: "result", jobId, result: done.result });
      close();
    };
    socket.onclose = close;
    socket.onmessage = (message) => {
      let parsed: Record<string, unknown> | undefined;
      try {
        const value = JSON.parse(String(message.data));
        parsed = isObject(value) ? value : undefined;
      } catch {
        parsed = undefined;
      }
      const type = parsed?.type;
      if (type === "cancel") {
        const job = this.#cancels.get(jobId);
        if (job === undefined) {
          send({
            type: "error",
            jobId,
            message:
              "this job cannot be cancelled here: it was not submitted over HTTP, or it has ended",
          });
        } else if (job.client !== caller.client) {
          send({ type: "error", jobId, message: "this job is not yours" });
        } else job.abort.abort();
      } else if (type === "stdin") {
        // Typed while the program runs: the job must be interactive
        // (`"interactive": true` when it was submitted) and the caller's.
        const job = this.#cancels.get(jobId);
        const { data = "", eof = false } = parsed ?? {};
        if (typeof data !== "string" || typeof eof !== "boolean") {
          send({
            type: "error",
            jobId,
            message: 'stdin is {"type":"stdin","data":"text","eof":false}',
          });
        } else if (job === undefined) {
          send({
            type: "error",
            jobId,
            message:
              "this job takes no stdin here: it was not submitted over HTTP, or it has ended",
          });
        } else if (job.client !== caller.client) {
          send({ type: "error", jobId, message: "this job is not yours" });
        } else job.input(data, eof);
      } else {
        send({
          type: "error",
          jobId,
          message:
            'unknown message: send {"type":"cancel"} or {"type":"stdin","data":"..."}',
        });
      }
    };
    return response;
  }
}

function error(status: number, message: string): Response {
  return Response.json({ error: message }, { status });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

async function readJson(
  request: Request,
): Promise<{ ok: true; value: unknown } | { ok: false; error: string }> {
  const length = Number(request.headers.get("content-length") ?? 0);
  if (length > MAX_BODY_BYTES) {
    return {
      ok: false,
      error: `the body is larger than ${MAX_BODY_BYTES} bytes`,
    };
  }
  // Read with a cap: a chunked body has no length to check first.
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for await (const chunk of request.body ?? []) {
    bytes += chunk.byteLength;
    if (bytes > MAX_BODY_BYTES) {
      return {
        ok: false,
        error: `the body is larger than ${MAX_BODY_BYTES} bytes`,
      };
    }
    chunks.push(chunk);
  }
  const body = new Uint8Array(bytes);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const text = new TextDecoder().decode(body);
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, error: "the body is not JSON" };
  }
}
