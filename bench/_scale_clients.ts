/**
 * The scale bench's clients, as a process of their own: `CLIENTS`
 * {@linkcode KilnClient}s, one connection each, every one keeping one job
 * in flight (a closed loop: a result, then the next job).
 *
 * `deno run -A bench/_scale_clients.ts MASTER CLIENTS`, token in
 * `KILN_TOKEN`. Commands, one per line on stdin, each answered with one
 * line on stdout:
 *
 * - `connect`: every client connects → `connected`.
 * - `fill`: every client submits one job and waits until the master says
 *   it is queued → `filled`.
 * - `run WARMUP_MS MEASURE_MS`: every result is followed by the client's
 *   next job. Prints `mark` when the warm-up ends and again when the
 *   measured window ends, then stops submitting, waits for every job in
 *   flight (two minutes at most), and prints the totals as JSON (see
 *   {@linkcode Totals}).
 * - `stop`: closes every client and exits.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { readLines } from "../cli/_processes.ts";
import { KilnClient } from "../lib/kiln_client.ts";
import type { JobRequest, JobResult } from "../lib/job.ts";

/** What the clients saw over a `run`. */
export interface Totals {
  /** Jobs submitted, the filled ones included. */
  submitted: number;
  /** Jobs that resolved with the simulated nodes' `ok` result. */
  ok: number;
  /** Jobs that resolved with any other result. */
  otherResults: number;
  /** Jobs whose promise rejected. */
  errors: number;
  /** A few of the other results and errors, for the report. */
  samples: string[];
  /** Results received inside the measured window. */
  windowJobs: number;
  /** The measured window's length, in ms. */
  windowMs: number;
  /** Submit-to-result latency of the window's jobs (the looped ones), p50 and p99, in ms. */
  p50Ms: number;
  p99Ms: number;
  /** Jobs still without an outcome when the clients stopped waiting ({@linkcode DRAIN_MS}). */
  unfinished: number;
  /** Distinct job ids among all results: equals `ok + otherResults` when none came twice. */
  uniqueJobIds: number;
}

const JOB: JobRequest = {
  language: "noop",
  files: [{ name: "main.noop", content: "noop" }],
};

const [master, countArg] = Deno.args;
const count = Number(countArg);
const token = Deno.env.get("KILN_TOKEN") ?? "";
const clients = Array.from(
  { length: count },
  () => new KilnClient({ master, token }),
);

const totals: Totals = {
  submitted: 0,
  ok: 0,
  otherResults: 0,
  errors: 0,
  samples: [],
  windowJobs: 0,
  windowMs: 0,
  p50Ms: 0,
  p99Ms: 0,
  unfinished: 0,
  uniqueJobIds: 0,
};

/** How long the jobs in flight after the window may take to end, in ms. */
const DRAIN_MS = 120_000;
const jobIds = new Set<string>();
const latencies: number[] = [];
let looping = false;
let measuring = false;
const inFlight = new Set<Promise<void>>();

/** Submits one job for `client`; with the loop on, its result submits the next. */
function submit(client: KilnClient, queued?: () => void): void {
  totals.submitted++;
  // The jobs of `fill` waited on purpose: their latency is not the loop's.
  const started = looping ? performance.now() : NaN;
  const job = client.submit(JOB, {
    onEvent: queued && ((event) => {
      if (event.type === "queued" || event.type === "started") queued();
    }),
  }).then(
    (result) => settled(client, started, result),
    (error) => {
      totals.errors++;
      sample(String(error));
    },
  ).finally(() => inFlight.delete(job));
  inFlight.add(job);
}

function settled(client: KilnClient, started: number, result: JobResult): void {
  jobIds.add(result.jobId);
  if (result.verdict === "ok" && result.stdout === "ok\n") totals.ok++;
  else {
    totals.otherResults++;
    sample(`${result.verdict}: ${result.reason ?? ""}`);
  }
  if (measuring) {
    totals.windowJobs++;
    if (!Number.isNaN(started)) latencies.push(performance.now() - started);
  }
  if (looping) submit(client);
}

function sample(text: string): void {
  if (totals.samples.length < 5) totals.samples.push(text);
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = values.sort((a, b) => a - b);
  return sorted[
    Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))
  ]!;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for await (const line of readLines(Deno.stdin.readable)) {
  const [command, ...args] = line.trim().split(" ");
  if (command === "connect") {
    // In batches, so that the master's accept backlog never overflows.
    // connect(), not status(): an answer that lists all 100 nodes (~35 KB
    // decoded) per client would be garbage here, or worse, held: a
    // Connection keeps the frames of its last read until the next one.
    for (let i = 0; i < clients.length; i += 250) {
      await Promise.all(clients.slice(i, i + 250).map((c) => c.connect()));
    }
    console.log("connected");
  } else if (command === "fill") {
    let queued = 0;
    const all = Promise.withResolvers<void>();
    for (const client of clients) {
      let told = false;
      submit(client, () => {
        if (told) return;
        told = true;
        if (++queued === clients.length) all.resolve();
      });
    }
    await all.promise;
    console.log("filled");
  } else if (command === "run") {
    const [warmupMs, measureMs] = args.map(Number);
    looping = true;
    await delay(warmupMs!);
    measuring = true;
    const windowStart = performance.now();
    console.log("mark");
    await delay(measureMs!);
    measuring = false;
    totals.windowMs = performance.now() - windowStart;
    console.log("mark");
    looping = false;
    const drainBy = performance.now() + DRAIN_MS;
    while (inFlight.size > 0 && performance.now() < drainBy) {
      await Promise.race([Promise.all([...inFlight]), delay(1000)]);
    }
    totals.unfinished = inFlight.size;
    totals.uniqueJobIds = jobIds.size;
    totals.p50Ms = percentile(latencies, 50);
    totals.p99Ms = percentile(latencies, 99);
    console.log(JSON.stringify(totals));
  } else if (command === "stop") {
    await Promise.all(clients.map((client) => client.close()));
    Deno.exit(0);
  }
}
