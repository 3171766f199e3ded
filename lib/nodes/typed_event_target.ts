/**
 * An `EventTarget` whose events are typed by a map from event type to
 * `CustomEvent`, so `node.addEventListener("jobcomplete", (e) => e.detail)`
 * knows what `detail` is. Both node kinds extend it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

const log = getLogger(["kiln", "events"]);

/** A typed or untyped listener, as the implementation receives it. */
type AnyListener = ((event: never) => void) | EventListenerObject;

/** Event types to the `CustomEvent`s dispatched for them. */
export type EventMap<M> = { [K in keyof M]: CustomEvent<unknown> };

/**
 * Base class of the nodes: typed listeners, and `emit` to dispatch.
 *
 * A listener that throws is logged and counted ({@linkcode listenerErrors}),
 * never rethrown: a plain `EventTarget` reports it as an uncaught exception,
 * which ends the process, and a node must not die for a listener (a full
 * history disk, a metrics bug, a caller's typo).
 *
 * @example A typed event
 * ```ts
 * import { TypedEventTarget } from "./typed_event_target.ts";
 *
 * class Kiln extends TypedEventTarget<{ fired: CustomEvent<{ cone: number }> }> {
 *   fire() {
 *     this.emit("fired", { cone: 6 });
 *   }
 * }
 * const kiln = new Kiln();
 * kiln.addEventListener("fired", (event) => console.log(event.detail.cone));
 * kiln.fire();
 * ```
 */
export class TypedEventTarget<M extends EventMap<M>> extends EventTarget {
  /** The wrapper that contains each listener's errors, so removing it finds it again. */
  readonly #contained = new WeakMap<AnyListener, EventListener>();
  /**
   * The types anyone ever listened to: an event of another type is not
   * made at all. A master emits several per job (accepted, queued at each
   * move, started, complete), and with nobody listening (no HTTP API) each
   * was a `CustomEvent` built and dispatched for nothing.
   */
  readonly #heard = new Set<string>();
  #listenerErrors = 0;

  /** Listeners that threw so far (each was logged, and the node carried on). */
  get listenerErrors(): number {
    return this.#listenerErrors;
  }

  /** Listens for one of the typed events; a listener that throws is logged, not fatal. */
  override addEventListener<K extends keyof M & string>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Listens for any event, untyped. */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: AnyListener | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (listener === null) return;
    this.#heard.add(type);
    let contained = this.#contained.get(listener);
    if (contained === undefined) {
      contained = (event) => {
        try {
          if (typeof listener === "function") {
            (listener as EventListener).call(this, event);
          } else listener.handleEvent(event);
        } catch (error) {
          this.#listenerErrors++;
          log.error("a {type} listener threw; the node carries on: {error}", {
            type: event.type,
            error,
          });
        }
      };
      this.#contained.set(listener, contained);
    }
    super.addEventListener(type, contained, options);
  }

  /** Stops listening for one of the typed events. */
  override removeEventListener<K extends keyof M & string>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops listening for any event, untyped. */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
  override removeEventListener(
    type: string,
    listener: AnyListener | null,
    options?: boolean | EventListenerOptions,
  ): void {
    if (listener === null) return;
    // An aborted `signal` removes the wrapper itself: pass it through.
    const contained = this.#contained.get(listener) ??
      (listener as EventListener);
    super.removeEventListener(type, contained, options);
  }

  /**
   * Dispatches a `CustomEvent` of `type` carrying `detail`, unless no
   * listener of that type was ever added.
   */
  protected emit<K extends keyof M & string>(
    type: K,
    detail: M[K]["detail"],
  ): void {
    if (!this.#heard.has(type)) return;
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
