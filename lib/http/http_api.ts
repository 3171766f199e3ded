/**
 * The master's HTTP API (`--http-port`): REST and WebSocket for jobs, a
 * Server-Sent Events feed for the dashboard, Piston compatibility,
 * Prometheus metrics, and the dashboard and playground pages themselves.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { MAX_TIMER_MS } from "../_timer.ts";
import { JobHistory, type JobSummary } from "../history/job_history.ts";
import type { JobRecord } from "../nats/job_record.ts";
import type { JobResult } from "../job.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { ClusterMetrics } from "../monitor/cluster_metrics.ts";
import type { MasterNode } from "../nodes/master_node.ts";
import type { JobEvent } from "../protocol/messages.ts";
import type { Credentials } from "../security/credentials.ts";
import { authorize, type HttpCaller } from "./auth.ts";
import { JobTracker, type StreamEvent } from "./job_tracker.ts";
import {
  fromPistonRequest,
  toPistonResponse,
  toPistonRuntimes,
  uniqueOffers,
} from "./piston.ts";
import { serveWebFile } from "./static_files.ts";
import { HttpServer } from "./http_server.ts";
import { checkJsonDepth } from "../protocol/json_depth.ts";
import {
  type BrowserPolicy,
  checkBrowser,
  corsHeaders,
} from "./browser_policy.ts";
import { positiveInteger } from "../_options.ts";
import { jsonResponse } from "./json_response.ts";

const log = getLogger(["kiln", "http"]);

/** The HTTP API's port when none is given. */
export const DEFAULT_HTTP_PORT = 7780;

/** How often the events feed repeats the cluster status, in ms. */
const STATUS_INTERVAL_MS = 1000;

/**
 * Room a request body keeps beyond its escaped program, in bytes (64 KiB):
 * the JSON keys of up to 256 files, limits and Piston's fields, and some
 * whitespace.
 */
export const BODY_ENVELOPE_BYTES = 64 * 1024;
/**
 * The most a JSON string can grow over its UTF-8 bytes: a control
 * character, one byte, is written `\u0001`, six.
 */
const MAX_JSON_BYTES_PER_BYTE = 6;
/** Time to read a request body, by default: 30 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Bytes one job stream or events feed may leave unread, by default: 1 MiB. */
export const DEFAULT_STREAM_BUFFERED_BYTES = 1024 * 1024;
/** Bytes all job streams together may leave unread, by default: 64 MiB. */
export const DEFAULT_BUFFERED_BYTES = 64 * 1024 * 1024;
/** The largest `maxStreamBufferedBytes` and `maxBufferedBytes`: 1 GiB. */
export const MAX_BUFFERED_BYTES = 1024 * 1024 * 1024;
/** Below this many unsent bytes a stream is not worth summing all streams for. */
const SMALL_BUFFER_BYTES = 64 * 1024;
/**
 * Output a Piston request collects for its interleaved `output`, in UTF-16
 * units (16 MiB of memory); past it the answer gives stdout then stderr.
 */
const MAX_PISTON_OUTPUT_UNITS = 8 * 1024 * 1024;

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
  /**
   * Finished jobs the API's own history keeps (without `history`); see
   * `JobHistoryOptions.maxJobs`.
   * @default {DEFAULT_HISTORY_MAX_JOBS}
   */
  historyMaxJobs?: number | undefined;
  /**
   * How long the API's own history keeps a job, in ms (without `history`);
   * see `JobHistoryOptions.maxAgeMs`.
   * @default {DEFAULT_HISTORY_MAX_AGE_MS}
   */
  historyMaxAgeMs?: number | undefined;
  /**
   * Bytes one job stream (WebSocket) or events feed (SSE) may leave unread,
   * 1 to {@linkcode MAX_BUFFERED_BYTES}. Past it a job stream drops output
   * (and says how much with a `truncated` message once it catches up; the
   * result is always sent), and an events feed is closed (an `EventSource`
   * reconnects and starts afresh).
   * @default {DEFAULT_STREAM_BUFFERED_BYTES}
   */
  maxStreamBufferedBytes?: number | undefined;
  /**
   * Bytes all job streams together may leave unread, 1 to
   * {@linkcode MAX_BUFFERED_BYTES}. A stream whose next message would pass
   * it is closed with code 1013 and the reason; the job goes on, and its
   * result stays at `GET /api/v1/jobs/:id`.
   * @default {DEFAULT_BUFFERED_BYTES}
   */
  maxBufferedBytes?: number | undefined;
  /**
   * Sockets held at once; at the cap nothing more is accepted (newcomers
   * wait in the kernel's listen queue until one closes). Keep it well
   * below the descriptor limit (`ulimit -n`).
   * @default half the soft descriptor limit, at most 1024
   */
  maxConnections?: number | undefined;
  /**
   * Connections one address (IPv6: one /64) holds at once; more are
   * answered `429`. 0 means no limit.
   * @default 64
   */
  maxConnectionsPerIp?: number | undefined;
  /**
   * Time a connection has to send a complete request head, in ms, from its
   * accept or its previous response (idle keep-alive connections too).
   * @default 10000
   */
  headersTimeoutMs?: number | undefined;
  /**
   * Time to read a request body, in ms, from the end of its head; past it
   * the request is answered `408`.
   * @default {DEFAULT_REQUEST_TIMEOUT_MS}
   */
  requestTimeoutMs?: number | undefined;
  /**
   * Host names (the `Host` header, without port) the API answers besides
   * IP literals, `localhost`, its listen hostname and, listening on every
   * address, the machine's own name; others get `403` (DNS rebinding).
   * Give the names clients use to reach the master.
   * @default []
   */
  allowedHosts?: readonly string[] | undefined;
  /**
   * Origins (`https://app.example`) whose pages may call the API from the
   * browser; a request with another `Origin` than the API's own gets `403`.
   * @default []
   */
  corsOrigins?: readonly string[] | undefined;
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
 *   headers: { "content-type": "application/json" },
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
  readonly #server: HttpServer;
  readonly #browser: BrowserPolicy;
  /** The largest request body or WebSocket message: what a valid job can need. */
  readonly #maxBodyBytes: number;
  readonly #requestTimeoutMs: number;
  /**
   * Closes each open events feed and WebSocket (a server cannot finish while
   * they stay open), with whether its caller's credential still stands.
   */
  readonly #closers = new Map<
    (reason?: string, code?: number) => void,
    () => boolean
  >();
  /** Open job streams, whose unsent bytes count towards `maxBufferedBytes`. */
  readonly #sockets = new Set<WebSocket>();
  readonly #maxStreamBuffered: number;
  readonly #maxBuffered: number;
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

  /**
   * Starts serving at once. Throws synchronously: `RangeError` for an
   * option out of range, `Deno.errors.AddrInUse` (naming the address) and
   * the like, having let go of everything it took.
   */
  constructor(master: MasterNode, options: HttpApiOptions = {}) {
    const {
      hostname = "127.0.0.1",
      port = DEFAULT_HTTP_PORT,
      credentials,
      history,
      historyMaxJobs,
      historyMaxAgeMs,
      maxStreamBufferedBytes = DEFAULT_STREAM_BUFFERED_BYTES,
      maxBufferedBytes = DEFAULT_BUFFERED_BYTES,
      maxConnections,
      maxConnectionsPerIp,
      headersTimeoutMs,
      requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
      allowedHosts = [],
      corsOrigins = [],
      signal,
    } = options;
    positiveInteger("requestTimeoutMs", requestTimeoutMs, MAX_TIMER_MS);
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#browser = {
      hostname,
      allowedHosts: [...allowedHosts, ...ownNames(hostname)],
      corsOrigins,
    };
    this.#maxBodyBytes = MAX_JSON_BYTES_PER_BYTE * master.maxProgramBytes +
      BODY_ENVELOPE_BYTES;
    this.#maxStreamBuffered = bytesOption(
      "maxStreamBufferedBytes",
      maxStreamBufferedBytes,
    );
    this.#maxBuffered = bytesOption("maxBufferedBytes", maxBufferedBytes);
    this.#master = master;
    this.#credentials = credentials;
    this.#history = history ??
      new JobHistory({ maxJobs: historyMaxJobs, maxAgeMs: historyMaxAgeMs });
    this.#ownsHistory = history === undefined;
    this.#metrics = new ClusterMetrics(() => master.status(), {
      listenerErrors: () => master.listenerErrors,
    });
    // History and metrics are optional: their failure is logged and
    // counted, and the master carries on.
    this.#tracker = new JobTracker(master, this.#history, {
      onHistoryError: (error, result) => {
        log.error("cannot record job {jobId} in the history: {error}", {
          jobId: result.jobId,
          error,
        });
        this.#metrics.countFailure("history");
      },
    });
    const listening = { signal: this.#stopping.signal };
    master.addEventListener("jobcomplete", ({ detail }) => {
      try {
        this.#metrics.observe(detail);
      } catch (error) {
        log.error("cannot count job {jobId}: {error}", {
          jobId: detail.jobId,
          error,
        });
        this.#metrics.countFailure("metrics");
      }
    }, listening);
    master.addEventListener(
      "credentialschange",
      () => this.#closeRevoked(),
      listening,
    );
    try {
      this.#server = new HttpServer(
        (request, info) => this.#handle(request, info.remoteAddr.hostname),
        {
          hostname,
          port,
          maxConnections,
          maxConnectionsPerIp,
          headersTimeoutMs,
        },
      );
    } catch (error) {
      // Nothing listens: let go of the master's events and the history.
      this.#stopping.abort();
      this.#tracker[Symbol.dispose]();
      if (this.#ownsHistory) this.#history.close();
      if (error instanceof Deno.errors.AddrInUse) {
        throw new Deno.errors.AddrInUse(
          `Cannot serve the HTTP API on ${hostname}:${port}: address already in use`,
          { cause: error },
        );
      }
      throw error;
    }
    this.addr = this.#server.addr;
    this.finished = this.#server.finished;
    signal?.addEventListener("abort", () => this.shutdown(), { once: true });
    master.finished.then(() => this.shutdown());
  }

  /** Closes every feed and stream, cancels waiting HTTP jobs, stops listening. */
  shutdown(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping.abort();
      for (const close of [...this.#closers.keys()]) close();
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

  /** Answers a request, with the CORS headers of an allowed foreign origin. */
  async #handle(request: Request, host: string): Promise<Response> {
    // Who may ask at all: a Host this master serves (DNS rebinding), and a
    // browser page of this origin or an allowed one (CSRF).
    const browser = checkBrowser(request, this.#browser);
    if (!browser.ok) return error(browser.status, browser.error);
    if (request.method === "OPTIONS" && browser.origin !== undefined) {
      return new Response(null, {
        status: 204,
        headers: corsHeaders(browser.origin, true),
      });
    }
    const response = await this.#route(request, host);
    if (browser.origin === undefined || response.status === 101) {
      return response;
    }
    for (const [name, value] of Object.entries(corsHeaders(browser.origin))) {
      response.headers.set(name, value);
    }
    return response;
  }

  async #route(request: Request, host: string): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (method === "GET" || method === "HEAD") {
      if (path === "/") return await serveWebFile("index.html");
      if (path === "/playground") return await serveWebFile("playground.html");
      if (path.startsWith("/static/")) {
        let name: string;
        try {
          name = decodeURIComponent(path.slice(8));
        } catch {
          return error(400, `malformed percent-encoding in the path`);
        }
        return await serveWebFile(name);
      }
      if (path === "/healthz") return jsonResponse({ ok: true });
      if (path === "/metrics") {
        return new Response(await this.#metrics.text(), {
          headers: { "content-type": this.#metrics.contentType },
        });
      }
    }
    if (!path.startsWith("/api/")) return error(404, "not found");
    // A form or a no-cors fetch cannot send this type without a preflight.
    if (method === "POST" && !isJson(request.headers.get("content-type"))) {
      return error(
        415,
        "send the body as JSON, with Content-Type: application/json",
      );
    }
    // One back-off for an address, over HTTP as over TCP.
    try {
      this.#master.checkAuthBackoff(host);
    } catch (refusal) {
      if (!(refusal instanceof ProtocolError)) throw refusal;
      return error(429, refusal.message);
    }
    const caller = authorize(
      request,
      url,
      this.#credentials ?? this.#master.credentials,
    );
    if (!caller.ok) {
      if (caller.badToken) {
        // Logged like a failed TCP handshake; the path without its query,
        // which may hold the token.
        log.warn(
          "HTTP authentication failed from {addr} on {method} {path}: {reason}",
          {
            addr: host,
            method,
            path,
            reason: caller.error,
          },
        );
        this.#master.countAuthFailure(host);
      }
      return error(caller.status, caller.error);
    }

    const jobPath = /^\/api\/v1\/jobs\/([^/]+)(\/stream)?$/.exec(path);
    if (method === "GET") {
      if (path === "/api/v1/events") {
        return this.#events(
          caller,
          this.#stillAuthorized(request, url, caller),
        );
      }
      if (path === "/api/v1/runtimes") return jsonResponse(this.#runtimes());
      if (path === "/api/v1/nodes") {
        return jsonResponse(this.#master.status());
      }
      if (path === "/api/v1/jobs") {
        return jsonResponse(this.#listJobs(url, caller));
      }
      if (path === "/api/v2/runtimes") {
        return jsonResponse(toPistonRuntimes(this.#master.offers()));
      }
      // On NATS, a job submitted to another master is in the cluster's records.
      const elsewhere = jobPath && !this.#knows(jobPath[1]!)
        ? await this.#master.clusterJob(jobPath[1]!)
        : undefined;
      if (
        jobPath && !this.#mayseeJob(caller, jobPath[1]!, elsewhere?.client)
      ) {
        return error(404, `no job ${jobPath[1]}`);
      }
      if (jobPath?.[2] !== undefined) {
        return this.#stream(
          request,
          jobPath[1]!,
          caller,
          this.#stillAuthorized(request, url, caller),
          elsewhere,
        );
      }
      if (jobPath && elsewhere) return jsonResponse(recordSummary(elsewhere));
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

  /**
   * The request's JSON body: at most what a valid job can need (its program
   * escaped, plus an envelope), read within `requestTimeoutMs`, and nested
   * at most 64 levels deep (`MAX_JSON_DEPTH`), each checked before
   * `JSON.parse` runs.
   */
  async #readJson(
    request: Request,
  ): Promise<
    { ok: true; value: unknown } | { ok: false; status: number; error: string }
  > {
    const max = this.#maxBodyBytes;
    const tooLarge = {
      ok: false,
      status: 413,
      error:
        `the body is larger than ${max} bytes: a job of this master's largest program, escaped as JSON, with room around it`,
    } as const;
    const length = Number(request.headers.get("content-length") ?? 0);
    if (length > max) return tooLarge;
    // Read with a cap and a deadline: a chunked body has no length to check
    // first, and a trickled one must not hold the connection for ever.
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    const reader = request.body?.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) =>
      timer = setTimeout(() => resolve("late"), this.#requestTimeoutMs)
    );
    try {
      while (reader !== undefined) {
        const next = await Promise.race([reader.read(), late]);
        if (next === "late") {
          return {
            ok: false,
            status: 408,
            error:
              `the body did not arrive within ${this.#requestTimeoutMs} ms`,
          };
        }
        if (next.done) break;
        bytes += next.value.byteLength;
        if (bytes > max) return tooLarge;
        chunks.push(next.value);
      }
    } catch {
      return { ok: false, status: 400, error: "the body could not be read" };
    } finally {
      clearTimeout(timer);
      reader?.cancel().catch(() => {});
    }
    const body = new Uint8Array(bytes);
    let offset = 0;
    for (const chunk of chunks) {
      body.set(chunk, offset);
      offset += chunk.byteLength;
    }
    try {
      checkJsonDepth(body);
    } catch (problem) {
      return {
        ok: false,
        status: 400,
        error: `the body is ${(problem as Error).message}: no job is`,
      };
    }
    const text = new TextDecoder().decode(body);
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch {
      return { ok: false, status: 400, error: "the body is not JSON" };
    }
  }

  /**
   * Whether `socket` may queue `bytes` more: always while it has little
   * unsent, otherwise while all streams together stay within
   * `maxBufferedBytes`.
   */
  #roomFor(socket: WebSocket, bytes: number): boolean {
    if (socket.bufferedAmount + bytes <= SMALL_BUFFER_BYTES) return true;
    let total = bytes;
    for (const open of this.#sockets) total += open.bufferedAmount;
    return total <= this.#maxBuffered;
  }

  /**
   * A check of whether the request's credential still lets `caller` in
   * (after a reload). It keeps the token: a request's headers cannot be
   * read once it has been answered.
   */
  #stillAuthorized(
    request: Request,
    url: URL,
    caller: HttpCaller & { ok: true },
  ): () => boolean {
    const header = request.headers.get("authorization");
    const kept = new Request(
      url,
      header === null ? {} : {
        headers: { authorization: header },
      },
    );
    return () => {
      const again = authorize(
        kept,
        url,
        this.#credentials ?? this.#master.credentials,
      );
      return again.ok && again.client === caller.client;
    };
  }

  /** Closes every feed and stream whose credential a reload revoked. */
  #closeRevoked(): void {
    for (const [close, stillAuthorized] of [...this.#closers]) {
      if (stillAuthorized()) continue;
      log.warn("closing a stream: its credential was revoked");
      close("the credential was revoked or changed", 1008);
    }
  }

  #runtimes(): { language: string; version: string; aliases: string[] }[] {
    return uniqueOffers(this.#master.offers()).map((offer) => ({
      language: offer.name,
      version: offer.version,
      aliases: [...offer.aliases],
    }));
  }

  /** Whether `caller` may see the job: a named client only its own. */
  #mayseeJob(
    caller: HttpCaller & { ok: true },
    jobId: string,
    ownerElsewhere?: string,
  ): boolean {
    if (caller.onlyJobsOf === undefined) return true;
    const owner = this.#tracker.summary(jobId)?.client ??
      this.#history.summary(jobId)?.client ?? ownerElsewhere;
    return owner === undefined || owner === caller.onlyJobsOf;
  }

  /** Whether this master saw the job: live, or in its history. */
  #knows(jobId: string): boolean {
    return this.#tracker.summary(jobId) !== undefined ||
      this.#history.summary(jobId) !== undefined;
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
    if (live) return jsonResponse(live);
    const done = this.#history.get(jobId);
    if (!done) return error(404, `no job ${jobId}`);
    return jsonResponse({ ...done.summary, result: done.result });
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
    const body = await this.#readJson(request);
    if (!body.ok) return error(body.status, body.error);
    if (!isObject(body.value)) {
      return error(400, "the body must be a JSON object");
    }
    const { wait = true, ...raw } = body.value;
    if (typeof wait !== "boolean") return error(400, "wait must be a boolean");
    const { jobId, result } = this.#run(raw, caller);
    if (!wait) return jsonResponse({ jobId }, { status: 202 });
    // A client that hangs up leaves its job running: the result goes to the
    // history. (Deno's request.signal also fires after successful responses.)
    return jsonResponse(await result);
  }

  async #pistonExecute(
    request: Request,
    caller: HttpCaller & { ok: true },
  ): Promise<Response> {
    const body = await this.#readJson(request);
    if (!body.ok) {
      return jsonResponse({ message: body.error }, { status: body.status });
    }
    const offers = this.#master.offers();
    const job = fromPistonRequest(body.value, offers);
    if (!job.ok) {
      return jsonResponse({ message: job.message }, { status: 400 });
    }
    // Piston's `output` is both streams in the order written: collect the
    // chunks, up to a bound (a rogue node may send more than any limit).
    let output = "";
    let overflow = false;
    const { result } = this.#run(job.job, caller, (event) => {
      if (event.type === "output" && !overflow) {
        overflow = output.length + event.data.length > MAX_PISTON_OUTPUT_UNITS;
        output = overflow ? "" : output + event.data;
      }
      if (event.type === "restarted") {
        output = "";
        overflow = false;
      }
    });
    const done = await result;
    if (done.verdict === "rejected") {
      return jsonResponse({ message: done.reason ?? "rejected" }, {
        status: 400,
      });
    }
    const version = offers.find((o) => o.name === done.language)?.version ?? "";
    // Chunks may include a compile step's output, or miss a cut tail: trust them only when they add up.
    const ordered =
      !overflow && output.length === done.stdout.length + done.stderr.length
        ? output
        : undefined;
    return jsonResponse(toPistonResponse(done, version, ordered));
  }

  /** `GET /api/v1/events`: the cluster status every second and at each node change, and every job change. */
  #events(
    caller: HttpCaller & { ok: true },
    stillAuthorized: () => boolean,
  ): Response {
    const visible = (job: JobSummary) =>
      caller.onlyJobsOf === undefined || job.client === caller.onlyJobsOf;
    const encoder = new TextEncoder();
    let close = () => {};
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const send = (event: string, data: unknown) => {
          if (!this.#closers.has(close)) return;
          const bytes = encoder.encode(
            `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`,
          );
          // A reader this far behind is closed rather than buffered for:
          // its EventSource reconnects and starts afresh from the status.
          if ((controller.desiredSize ?? 0) < bytes.byteLength) {
            log.warn("closing an events feed: {bytes} bytes unread", {
              bytes: this.#maxStreamBuffered - (controller.desiredSize ?? 0),
            });
            this.#metrics.countSlowClient("events", "closed");
            close();
            return;
          }
          controller.enqueue(bytes);
        };
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
        this.#closers.set(close, stillAuthorized);
        status();
        for (const job of this.#tracker.unfinished()) {
          if (visible(job)) send("job", job);
        }
      },
      cancel: () => close(),
    }, {
      highWaterMark: this.#maxStreamBuffered,
      size: (chunk) => chunk.byteLength,
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
    stillAuthorized: () => boolean,
    elsewhere?: JobRecord,
  ): Response {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return error(426, "this is a WebSocket endpoint");
    }
    if (!elsewhere && !this.#knows(jobId)) {
      return error(404, `no job ${jobId}`);
    }
    const { socket, response } = this.#server.upgradeWebSocket(request);
    /** Output dropped while the peer was behind, in UTF-16 units, not yet told. */
    let dropped = 0;
    const send = (message: StreamEvent | StreamError) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      if (message.type === "output") {
        if (socket.bufferedAmount >= this.#maxStreamBuffered) {
          dropped += message.data.length;
          this.#metrics.countSlowClient("websocket", "dropped");
          return;
        }
      }
      if (dropped > 0) {
        const told = dropped;
        dropped = 0;
        send({ type: "truncated", jobId, dropped: told });
      }
      const text = JSON.stringify(message);
      if (!this.#roomFor(socket, text.length)) {
        log.warn("closing the stream of job {jobId}: clients are too slow", {
          jobId,
        });
        this.#metrics.countSlowClient("websocket", "closed");
        close(
          `too much unread: read faster, or GET /api/v1/jobs/${jobId}`,
          1013,
        );
        return;
      }
      socket.send(text);
    };
    let unfollow: (() => void) | undefined;
    const close = (reason = "done", code = 1000) => {
      this.#closers.delete(close);
      this.#sockets.delete(socket);
      unfollow?.();
      // A close reason is at most 123 bytes.
      if (socket.readyState <= WebSocket.OPEN) {
        socket.close(code, reason.slice(0, 120));
      }
    };
    socket.onopen = () => {
      // A reload may have revoked the credential since the request.
      if (!stillAuthorized()) {
        close("the credential was revoked or changed", 1008);
        return;
      }
      this.#closers.set(close, stillAuthorized);
      this.#sockets.add(socket);
      if (elsewhere) {
        // Submitted to another master: followed through the cluster.
        void this.#master.followClusterJob(jobId, {
          started: (node) => send({ type: "started", jobId, node }),
          output: (stream, data) =>
            send({ type: "output", jobId, stream, data }),
          result: (result) => {
            send({ type: "result", jobId, result });
            queueMicrotask(close);
          },
        }).then((stop) => {
          if (stop === undefined) return close();
          if (this.#sockets.has(socket)) unfollow = stop;
          else stop();
        });
        return;
      }
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
    socket.onclose = () => close();
    socket.onmessage = (message) => {
      const text = String(message.data);
      // Bounded and shallow before parsed, as request bodies are.
      if (text.length > this.#maxBodyBytes) {
        close(`a message is at most ${this.#maxBodyBytes} bytes`, 1009);
        return;
      }
      let parsed: Record<string, unknown> | undefined;
      try {
        checkJsonDepth(text);
        const value = JSON.parse(text);
        parsed = isObject(value) ? value : undefined;
      } catch (problem) {
        if (problem instanceof SyntaxError && /deeper/.test(problem.message)) {
          send({ type: "error", jobId, message: problem.message });
          return;
        }
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

function bytesOption(name: string, value: number): number {
  return positiveInteger(name, value, MAX_BUFFERED_BYTES);
}

function error(status: number, message: string): Response {
  return jsonResponse({ error: message }, { status });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The machine's own name, when the API listens on every address: the name
 * its users most likely type. (No rebinding page can borrow it.)
 */
function ownNames(hostname: string): string[] {
  if (hostname !== "0.0.0.0" && hostname !== "::") return [];
  try {
    return [Deno.hostname()];
  } catch {
    return []; // no --allow-sys: only IP addresses and allowed names, then
  }
}

function isJson(contentType: string | null): boolean {
  const type = contentType?.split(";")[0]?.trim().toLowerCase();
  return type === "application/json";
}

/** A job of a NATS cluster, from its record, as `GET /api/v1/jobs/:id` shows one. */
function recordSummary(record: JobRecord): JobSummary & { result?: JobResult } {
  const { result } = record;
  return {
    jobId: record.id,
    client: record.client,
    language: record.language,
    state: record.state === "ended" ? "finished" : record.state,
    ...record.node === null ? {} : { node: record.node },
    ...result === undefined ? {} : {
      verdict: result.verdict,
      timeMs: result.timeMs,
      queuedMs: result.queuedMs,
      ...result.memoryKb === null ? {} : { memoryKb: result.memoryKb },
      result,
    },
  };
}
