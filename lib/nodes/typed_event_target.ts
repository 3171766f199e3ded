/**
 * An `EventTarget` whose events are typed by a map from event type to
 * `CustomEvent`, so `node.addEventListener("jobcomplete", (e) => e.detail)`
 * knows what `detail` is. Both node kinds extend it.
 *
 * @module
 */

/** Event types to the `CustomEvent`s dispatched for them. */
export type EventMap<M> = { [K in keyof M]: CustomEvent<unknown> };

/** The typed listener methods, merged into the class of the same name. */
export interface TypedEventTarget<M extends EventMap<M>> {
  /** Listens for one of the typed events. */
  addEventListener<K extends keyof M & string>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Listens for any event, untyped. */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops listening for one of the typed events. */
  removeEventListener<K extends keyof M & string>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops listening for any event, untyped. */
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/**
 * Base class of the nodes: typed listeners, and `emit` to dispatch.
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
  /** Dispatches a `CustomEvent` of `type` carrying `detail`. */
  protected emit<K extends keyof M & string>(
    type: K,
    detail: M[K]["detail"],
  ): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
