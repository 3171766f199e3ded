/**
 * The pool of pre-warmed job sandboxes: which to keep, how many, for how
 * long. What a warm sandbox is, and how it is made and destroyed, is the
 * sandbox's business (see `Sandbox.makeWorkdir`); this module only keeps
 * the books.
 *
 * Warm sandboxes are kept per key: a language with the limits that are
 * baked into a sandbox when it is made (memory, processes, disk, ptys).
 * A key gets its sandboxes from demand: the first job of a key finds none
 * and runs cold, and from then on the pool keeps `perKey` ready for it,
 * making one each time one is taken. A key nobody asked for in `idleMs`
 * loses its sandboxes, and at most `maxKeys` keys are kept (the least
 * recently asked for goes first), so that jobs cycling through limits
 * cannot make the node hold an unbounded number of idle sandboxes.
 *
 * Sandboxes are made only while the node is quiet (`quiet()`): making one
 * (a spawn, namespaces, mounts, an interpreter's start) competes for the
 * CPU with the jobs that run, and on a 2-core machine it slowed a running
 * Python hello from 34 to 50 ms, more than a warm start saves. So a taken
 * sandbox is made up again once the node's jobs have ended (the node calls
 * {@linkcode WarmPool.nudge}); under sustained load the ready ones are used
 * up and jobs start cold, as they would without a pool, and the pool fills
 * again in the next lull.
 *
 * Each sandbox is single use: taken once, never returned. A sandbox that
 * died while it waited is destroyed when it is found, and a key whose
 * sandboxes fail to be made three times in a row rests for `idleMs`
 * before it is tried again (its jobs run cold meanwhile).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

/** Options of {@linkcode WarmPool}. */
export interface WarmPoolOptions<Spec, Job> {
  /** How many sandboxes to keep ready per key; 0 keeps none. */
  readonly perKey: number;
  /** How many keys to keep sandboxes for at once. @default 8 */
  readonly maxKeys?: number;
  /** How long a key keeps its sandboxes without demand, in ms. @default 60000 */
  readonly idleMs?: number;
  /** Makes one warm sandbox of a key, from the spec of the job that asked. */
  readonly make: (spec: Spec) => Promise<Job>;
  /** Destroys a sandbox that will not be used. Must not throw. */
  readonly destroy: (job: Job) => Promise<void>;
  /** Whether a sandbox can still be used (its processes still wait). */
  readonly usable: (job: Job) => boolean;
  /**
   * Whether sandboxes may be made now; when it turns true again, call
   * {@linkcode WarmPool.nudge}. @default always
   */
  readonly quiet?: () => boolean;
}

/** One key's books. */
interface Lane<Spec, Job> {
  readonly ready: Job[];
  /** The spec new sandboxes are made from: the last job's that asked. */
  spec: Spec;
  lastDemand: number;
  /** Making one now: one at a time per key. */
  filling: boolean;
  /** Failures in a row; at {@linkcode MAX_FAILURES} the key rests. */
  failures: number;
  /** When a resting key is tried again (`Date.now()` ms). */
  restUntil: number;
}

/** Failures in a row after which a key is no longer warmed, until it idles out. */
const MAX_FAILURES = 3;

/**
 * Keeps warm, single-use sandboxes per key, made from demand.
 *
 * @example A pool of numbers, for the books alone
 * ```ts
 * import assert from "node:assert/strict";
 * import { WarmPool } from "./prewarm.ts";
 *
 * let made = 0;
 * const pool = new WarmPool<string, number>({
 *   perKey: 2,
 *   make: () => Promise.resolve(++made),
 *   destroy: () => Promise.resolve(),
 *   usable: () => true,
 * });
 * assert.equal(pool.take("python", "spec"), undefined); // the first job runs cold
 * await pool.settled();
 * assert.equal(pool.take("python", "spec"), 1); // the next one finds one ready
 * await pool.close();
 * ```
 */
export class WarmPool<Spec, Job> {
  readonly #options: Required<WarmPoolOptions<Spec, Job>>;
  readonly #lanes = new Map<string, Lane<Spec, Job>>();
  /** Fills in progress, so that close() and tests can wait for them. */
  readonly #fills = new Set<Promise<void>>();
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /** A pool that keeps `perKey` sandboxes per key that is asked for. */
  constructor(options: WarmPoolOptions<Spec, Job>) {
    if (!Number.isSafeInteger(options.perKey) || options.perKey < 0) {
      throw new RangeError(
        `Cannot make a warm pool: perKey ${options.perKey} is not a whole number >= 0`,
      );
    }
    this.#options = {
      maxKeys: 8,
      idleMs: 60_000,
      quiet: () => true,
      ...options,
    };
    if (options.perKey > 0) {
      const sweeper = setInterval(
        () => this.#sweepIdle(),
        Math.max(1000, this.#options.idleMs / 2),
      );
      // Idle books never keep a process alive.
      Deno.unrefTimer(sweeper);
      this.#sweeper = sweeper;
    }
  }

  /** How many sandboxes are ready and still usable, over every key. */
  get size(): number {
    let size = 0;
    for (const lane of this.#lanes.values()) {
      size += lane.ready.filter(this.#options.usable).length;
    }
    return size;
  }

  /**
   * A ready sandbox of `key`, or undefined (the job runs cold). Either way
   * the demand is noted and the key's sandboxes are made up again.
   */
  take(key: string, spec: Spec): Job | undefined {
    if (this.#closed || this.#options.perKey === 0) return undefined;
    const lane = this.#lane(key, spec);
    let job: Job | undefined;
    while ((job = lane.ready.shift()) !== undefined) {
      if (this.#options.usable(job)) break;
      this.#destroy(job);
    }
    this.#fill(key, lane);
    return job;
  }

  /**
   * The node may have become quiet: makes up every key that is short of
   * sandboxes. Cheap when there is nothing to do.
   */
  nudge(): void {
    if (this.#closed || !this.#options.quiet()) return;
    for (const [key, lane] of this.#lanes) {
      if (lane.ready.length < this.#options.perKey) this.#fill(key, lane);
    }
  }

  /** Every ready sandbox, over every key (usable or not yet found dead). */
  *ready(): Iterable<Job> {
    for (const lane of this.#lanes.values()) yield* lane.ready;
  }

  /** Resolves when no sandbox is being made: for tests and benchmarks. */
  async settled(): Promise<void> {
    while (this.#fills.size > 0) await Promise.all(this.#fills);
  }

  /** Destroys every ready sandbox and makes no more. Never throws. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    await this.settled();
    const all = [...this.#lanes.values()].flatMap((lane) => lane.ready);
    this.#lanes.clear();
    await Promise.all(all.map((job) => this.#options.destroy(job)));
  }

  #lane(key: string, spec: Spec): Lane<Spec, Job> {
    let lane = this.#lanes.get(key);
    if (lane) {
      this.#lanes.delete(key); // re-inserted last: the map's order is recency
    } else {
      lane = {
        ready: [],
        spec,
        lastDemand: 0,
        filling: false,
        failures: 0,
        restUntil: 0,
      };
      while (this.#lanes.size >= this.#options.maxKeys) {
        const [oldest, evicted] = this.#lanes.entries().next().value!;
        this.#lanes.delete(oldest);
        evicted.ready.splice(0).forEach((job) => this.#destroy(job));
      }
    }
    lane.spec = spec;
    lane.lastDemand = Date.now();
    this.#lanes.set(key, lane);
    return lane;
  }

  #fill(key: string, lane: Lane<Spec, Job>): void {
    if (lane.failures >= MAX_FAILURES && Date.now() >= lane.restUntil) {
      lane.failures = 0; // rested: a cause that passed no longer stops it
    }
    if (
      lane.filling || lane.failures >= MAX_FAILURES || !this.#options.quiet()
    ) return;
    lane.filling = true;
    const fill = (async () => {
      while (
        !this.#closed && this.#lanes.get(key) === lane &&
        lane.ready.length < this.#options.perKey &&
        lane.failures < MAX_FAILURES &&
        // A job started meanwhile: the rest waits for the next nudge.
        this.#options.quiet()
      ) {
        try {
          const job = await this.#options.make(lane.spec);
          lane.failures = 0;
          // Closed or evicted while it was made: nobody will take it.
          if (this.#closed || this.#lanes.get(key) !== lane) {
            this.#destroy(job);
            break;
          }
          lane.ready.push(job);
        } catch (error) {
          lane.failures++;
          lane.restUntil = Date.now() + this.#options.idleMs;
          const level = lane.failures >= MAX_FAILURES ? "warn" : "debug";
          log[level](
            "cannot pre-warm a sandbox for {key} ({failures} in a row): {reason}",
            {
              key,
              failures: lane.failures,
              reason: error instanceof Error ? error.message : String(error),
            },
          );
        }
      }
    })().finally(() => {
      lane.filling = false;
      this.#fills.delete(fill);
    });
    this.#fills.add(fill);
  }

  #sweepIdle(): void {
    const now = Date.now();
    for (const [key, lane] of this.#lanes) {
      if (now - lane.lastDemand < this.#options.idleMs) continue;
      this.#lanes.delete(key);
      lane.ready.splice(0).forEach((job) => this.#destroy(job));
    }
  }

  #destroy(job: Job): void {
    const destroyed = this.#options.destroy(job);
    this.#fills.add(destroyed);
    destroyed.finally(() => this.#fills.delete(destroyed));
  }
}

const log = getLogger(["kiln", "sandbox", "prewarm"]);
