/**
 * Where a job runs: filter the nodes that can take it now, prefer the
 * master's own slots, then the least loaded secondary with a random tie-break.
 *
 * @module
 */

/** What placement needs to know about one node, master or secondary. */
export interface NodeLoad {
  /** Unique id of the node. */
  readonly id: string;
  /** Human-readable name, for logs. */
  readonly name: string;
  /** The master's own slots. */
  readonly local: boolean;
  /** Canonical language names it runs. */
  readonly languages: ReadonlySet<string>;
  /** How many jobs it runs at once (0 for a coordinator-only master). */
  readonly slots: number;
  /** Jobs the master has assigned to it and not yet seen finish: authoritative, unlike heartbeats. */
  readonly assigned: number;
  /** CPU use in percent, from its last heartbeat (or the master's own sample). */
  readonly cpuPercent: number;
  /** RAM use in percent, from its last heartbeat (or the master's own sample). */
  readonly ramPercent: number;
  /** CPU percent above which it takes no new job. */
  readonly maxCpu: number;
  /** RAM percent above which it takes no new job. */
  readonly maxRam: number;
  /** Takes no new job (shutting down). */
  readonly draining: boolean;
  /** Epoch ms until which it is skipped after a refusal or a failure; 0 if fine. */
  readonly failingUntil: number;
}

/** Options for {@linkcode chooseNode}. */
export interface PlacementOptions {
  /**
   * The current time in epoch ms, compared with
   * {@linkcode NodeLoad.failingUntil}.
   *
   * @default {Date.now()}
   */
  now?: number;
  /**
   * Uniform random numbers in [0, 1), to break ties between equal nodes.
   *
   * @default {Math.random}
   */
  random?: () => number;
}

/** Scores closer than this are a tie. */
const TIE = 1e-9;

/**
 * Whether a node can take a job in this language now: it runs the language,
 * has a free slot, is within its CPU and RAM thresholds, is not draining and
 * is not in a failure back-off. A NaN load reading fails the threshold test.
 *
 * @example A node at its CPU threshold still qualifies; above it, not
 * ```ts
 * import assert from "node:assert/strict";
 * import { canRun, type NodeLoad } from "./placement.ts";
 *
 * const node: NodeLoad = {
 *   id: "n1",
 *   name: "n1",
 *   local: false,
 *   languages: new Set(["python"]),
 *   slots: 2,
 *   assigned: 1,
 *   cpuPercent: 80,
 *   ramPercent: 10,
 *   maxCpu: 80,
 *   maxRam: 90,
 *   draining: false,
 *   failingUntil: 0,
 * };
 * assert.equal(canRun(node, "python", Date.now()), true);
 * assert.equal(canRun({ ...node, cpuPercent: 81 }, "python", Date.now()), false);
 * assert.equal(canRun(node, "c", Date.now()), false);
 * ```
 */
export function canRun(node: NodeLoad, language: string, now: number): boolean {
  return node.languages.has(language) && hasRoom(node) &&
    node.failingUntil <= now;
}

/**
 * Whether a node has room for a job of some language it runs, back-offs
 * aside (they end by the clock, with no event to say so): a free slot,
 * within its CPU and RAM thresholds, not draining. {@linkcode canRun} is
 * this, the language and the back-off.
 *
 * @example A full node has no room
 * ```ts
 * import assert from "node:assert/strict";
 * import { hasRoom, type NodeLoad } from "./placement.ts";
 *
 * const node: NodeLoad = {
 *   id: "n1",
 *   name: "n1",
 *   local: false,
 *   languages: new Set(["python"]),
 *   slots: 2,
 *   assigned: 1,
 *   cpuPercent: 10,
 *   ramPercent: 10,
 *   maxCpu: 80,
 *   maxRam: 90,
 *   draining: false,
 *   failingUntil: 0,
 * };
 * assert.equal(hasRoom(node), true);
 * assert.equal(hasRoom({ ...node, assigned: 2 }), false);
 * ```
 */
export function hasRoom(node: NodeLoad): boolean {
  return node.assigned < node.slots &&
    node.cpuPercent <= node.maxCpu &&
    node.ramPercent <= node.maxRam &&
    !node.draining;
}

/**
 * How loaded a node is; lower is better. Infinity for a node without slots.
 *
 * The score is `assigned / slots + 0.5 * cpu / 100 + 0.25 * ram / 100`.
 * The first term is the master's own count, exact the moment it places a job,
 * so a burst of placements between two heartbeats spreads over the nodes
 * instead of herding onto the one whose last heartbeat looked idle; it ranges
 * over [0, 1) for any node that passes the filter. CPU and RAM come from a
 * heartbeat up to a second old and include load that is not ours, so they
 * weigh less: a node at 100 % CPU counts like half its slots busy, which still
 * steers work away from a machine busy with something else. RAM weighs half
 * as much again, because a job's memory is capped by its own limit and RAM
 * use says little about how soon it will finish. Readings are clamped to
 * [0, 100] so a bad sample cannot outweigh the assignment count.
 *
 * @example One busy slot out of four outweighs moderate CPU
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadScore, type NodeLoad } from "./placement.ts";
 *
 * const idle: NodeLoad = {
 *   id: "n1",
 *   name: "n1",
 *   local: false,
 *   languages: new Set(["python"]),
 *   slots: 4,
 *   assigned: 0,
 *   cpuPercent: 40,
 *   ramPercent: 0,
 *   maxCpu: 90,
 *   maxRam: 90,
 *   draining: false,
 *   failingUntil: 0,
 * };
 * const busy = { ...idle, assigned: 1, cpuPercent: 0 };
 * assert.ok(loadScore(idle) < loadScore(busy)); // 0.2 < 0.25
 * ```
 */
export function loadScore(node: NodeLoad): number {
  if (!(node.slots > 0)) return Infinity;
  return node.assigned / node.slots +
    0.5 * percent(node.cpuPercent) / 100 +
    0.25 * percent(node.ramPercent) / 100;
}

/**
 * Picks the node for a job in `language`, or undefined when none can take it
 * now (queue the job, or reject it if no node offers the language: see
 * the master's own list of offers).
 *
 * Among the nodes that pass {@linkcode canRun}, a local one (the master's own
 * slots) wins whenever there is one; otherwise the lowest
 * {@linkcode loadScore} wins, ties broken uniformly at random. The caller
 * counts the job in the chosen node's `assigned` before the next call.
 *
 * @example The master's own slots first, then the least loaded secondary
 * ```ts
 * import assert from "node:assert/strict";
 * import { chooseNode, type NodeLoad } from "./placement.ts";
 *
 * const base: NodeLoad = {
 *   id: "",
 *   name: "",
 *   local: false,
 *   languages: new Set(["python"]),
 *   slots: 2,
 *   assigned: 0,
 *   cpuPercent: 0,
 *   ramPercent: 0,
 *   maxCpu: 90,
 *   maxRam: 90,
 *   draining: false,
 *   failingUntil: 0,
 * };
 * const nodes = [
 *   { ...base, id: "master", local: true, assigned: 1 },
 *   { ...base, id: "s1", assigned: 1 },
 *   { ...base, id: "s2" },
 * ];
 * assert.equal(chooseNode(nodes, "python")?.id, "master");
 * nodes[0] = { ...nodes[0]!, assigned: 2 }; // the master is full
 * assert.equal(chooseNode(nodes, "python")?.id, "s2");
 * assert.equal(chooseNode(nodes, "c"), undefined);
 * ```
 */
export function chooseNode<N extends NodeLoad>(
  nodes: readonly N[],
  language: string,
  options: PlacementOptions = {},
): N | undefined {
  const { now = Date.now(), random = Math.random } = options;
  const candidates = nodes.filter((node) => canRun(node, language, now));
  const local = candidates.filter((node) => node.local);
  const pool = local.length > 0 ? local : candidates;
  if (pool.length === 0) return undefined;
  const scores = pool.map(loadScore);
  let best = Infinity;
  for (const score of scores) best = Math.min(best, score);
  const tied = pool.filter((_, index) => scores[index]! <= best + TIE);
  if (tied.length <= 1) return tied[0];
  const index = Math.floor(random() * tied.length);
  return tied[Math.min(Math.max(index, 0), tied.length - 1)];
}

function percent(value: number): number {
  return Number.isFinite(value) ? Math.min(Math.max(value, 0), 100) : 100;
}

/**
 * How a node looks to an operator: `failing` while it is passed over after
 * a refusal, `busy` when full or over a threshold, `ready` otherwise.
 *
 * @example A full node is busy
 * ```ts
 * import assert from "node:assert/strict";
 * import { nodeState } from "./placement.ts";
 *
 * const load = {
 *   id: "a", name: "a", local: false, languages: new Set(["c"]), slots: 1, assigned: 1,
 *   cpuPercent: 5, ramPercent: 5, maxCpu: 100, maxRam: 100, draining: false, failingUntil: 0,
 * };
 * assert.equal(nodeState(load, Date.now()), "busy");
 * ```
 */
export function nodeState(
  node: NodeLoad,
  now: number,
): "ready" | "busy" | "failing" {
  if (node.failingUntil > now) return "failing";
  const full = node.assigned >= node.slots;
  const hot = !(node.cpuPercent <= node.maxCpu) ||
    !(node.ramPercent <= node.maxRam);
  return full || hot ? "busy" : "ready";
}
