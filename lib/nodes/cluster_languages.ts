/**
 * Which language a client means, in terms of what the cluster's live nodes
 * offer: `py`, `.py` and `Python` all name `python` when some node runs it.
 *
 * @module
 */
import type { RunnerRegistry } from "../runners/registry.ts";
import type { OfferedLanguage } from "../protocol/messages.ts";

/** A language the cluster can run now, by its canonical name. */
export interface OfferedMatch {
  readonly ok: true;
  readonly language: string;
}

/** No live node runs the language; the reason lists what the cluster offers. */
export interface NotOffered {
  readonly ok: false;
  readonly reason: string;
}

/**
 * Resolves a requested language against the languages live nodes offer
 * (names, aliases, extensions), falling back to `registry` only to name a
 * known language that nobody offers right now.
 *
 * @example Resolving an alias
 * ```ts
 * import { resolveOffered } from "./cluster_languages.ts";
 * import { RunnerRegistry } from "../runners/registry.ts";
 *
 * const offers = [{ name: "python", version: "3.11", aliases: ["py"], extensions: [".py"] }];
 * resolveOffered("PY", offers, new RunnerRegistry()); // { ok: true, language: "python" }
 * ```
 */
export function resolveOffered(
  requested: string,
  offers: readonly OfferedLanguage[],
  registry: RunnerRegistry,
): OfferedMatch | NotOffered {
  const wanted = requested.trim().toLowerCase();
  const dotted = wanted.startsWith(".") ? wanted : `.${wanted}`;
  for (const offer of offers) {
    if (
      offer.name === wanted || offer.aliases.includes(wanted) ||
      offer.extensions.includes(dotted)
    ) {
      return { ok: true, language: offer.name };
    }
  }
  const names = [...new Set(offers.map((offer) => offer.name))].sort();
  const offered = names.length > 0
    ? `this cluster offers ${names.join(", ")}`
    : "this cluster offers no language at all (no node is connected)";
  const known = registry.get(wanted) ?? registry.forFile(`file${dotted}`);
  return {
    ok: false,
    reason: known
      ? `language "${known.name}" is not offered by any live node; ${offered}`
      : `unknown language "${requested}"; ${offered}`,
  };
}
