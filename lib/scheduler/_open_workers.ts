/**
 * The workers that may take a job now, by language, so that placing a job
 * looks at the few with room that run its language and not at every
 * worker: the master places one on every job's end and every submission,
 * and with a hundred nodes, all busy, reading each one's load every time
 * was most of a dispatch.
 *
 * A language's list holds every worker with room ({@linkcode hasRoom})
 * that runs it, and maybe some that filled up since: the dispatcher says when a worker's load may
 * have dropped (a job of it ended, a heartbeat, the worker joined), and a
 * worker found full as candidates are read leaves the list then. A worker
 * in a failure back-off stays listed: its back-off ends by the clock, with
 * no event, and {@linkcode canRun} passes it over until then.
 *
 * @module
 */
import { canRun, hasRoom } from "./placement.ts";
import type { Worker } from "./worker.ts";

/** A worker in the list of one language it runs. */
interface Entry {
  readonly worker: Worker;
  readonly list: Entry[];
  /** Its index in `list`, or -1 when it is not listed. */
  at: number;
}

/**
 * Workers with room, by language, found without reading every worker's
 * load.
 *
 * @example A full worker leaves the list once read
 * ```ts ignore
 * const open = new OpenWorkers();
 * open.add(worker); // listed under its languages if it has room
 * open.candidates("python", Date.now()); // the listed that run python now
 * open.refresh(worker); // after one of its jobs ended
 * ```
 */
export class OpenWorkers {
  // A worker's entries are made when it joins, one per language it runs:
  // nothing is allocated as workers fill and free up, job after job.
  readonly #entries = new Map<Worker, Entry[]>();
  readonly #lists = new Map<string, Entry[]>();
  #listed = 0;

  /** How many entries are listed: 0 when no worker has room. */
  get size(): number {
    return this.#listed;
  }

  /** Follows a new worker, listed under its languages if it has room. */
  add(worker: Worker): void {
    if (this.#entries.has(worker)) return this.refresh(worker);
    const entries: Entry[] = [];
    for (const name of new Set(worker.languages.map((offer) => offer.name))) {
      let list = this.#lists.get(name);
      if (list === undefined) this.#lists.set(name, list = []);
      entries.push({ worker, list, at: -1 });
    }
    this.#entries.set(worker, entries);
    this.refresh(worker);
  }

  /** Forgets a worker that left. */
  delete(worker: Worker): void {
    const entries = this.#entries.get(worker);
    if (entries === undefined) return;
    for (const entry of entries) this.#unlist(entry);
    this.#entries.delete(worker);
  }

  /** Reads a worker's load again: it may have room now (a job of it ended). */
  refresh(worker: Worker): void {
    const entries = this.#entries.get(worker);
    if (entries === undefined) return;
    const room = hasRoom(worker.load());
    for (const entry of entries) {
      if (room) this.#list(entry);
      else this.#unlist(entry);
    }
  }

  /** Reads every worker's load again. */
  refreshAll(): void {
    for (const worker of this.#entries.keys()) this.refresh(worker);
  }

  /**
   * The listed workers that can run `language` now ({@linkcode canRun});
   * those found without room leave the list on the way.
   */
  candidates(language: string, now: number): Worker[] {
    const found: Worker[] = [];
    const list = this.#lists.get(language);
    if (list === undefined) return found;
    for (let i = 0; i < list.length;) {
      const entry = list[i]!;
      const load = entry.worker.load();
      if (!hasRoom(load)) {
        this.#unlist(entry); // The last one takes its place: read it next.
        continue;
      }
      if (canRun(load, language, now)) found.push(entry.worker);
      i++;
    }
    return found;
  }

  #list(entry: Entry): void {
    if (entry.at !== -1) return;
    entry.at = entry.list.length;
    entry.list.push(entry);
    this.#listed++;
  }

  #unlist(entry: Entry): void {
    if (entry.at === -1) return;
    const last = entry.list.pop()!;
    if (last !== entry) {
      entry.list[entry.at] = last;
      last.at = entry.at;
    }
    entry.at = -1;
    this.#listed--;
  }
}
