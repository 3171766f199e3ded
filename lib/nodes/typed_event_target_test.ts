import assert from "node:assert/strict";
import { TypedEventTarget } from "./typed_event_target.ts";

class Kiln extends TypedEventTarget<{ fired: CustomEvent<number> }> {
  fire(cone: number): void {
    this.emit("fired", cone);
  }
}

Deno.test("TypedEventTarget contains a listener that throws", () => {
  const kiln = new Kiln();
  const seen: number[] = [];
  kiln.addEventListener("fired", () => {
    throw new Error("a listener's bug");
  });
  kiln.addEventListener("fired", (event) => seen.push(event.detail));
  // A plain EventTarget reports the error as uncaught, which ends the
  // process (and fails this test with it).
  kiln.fire(6);
  kiln.fire(7);
  assert.deepEqual(seen, [6, 7]);
  assert.equal(kiln.listenerErrors, 2);
});

Deno.test("TypedEventTarget removes, once-only and object listeners as EventTarget does", () => {
  const kiln = new Kiln();
  const seen: string[] = [];
  const listener = (event: CustomEvent<number>) =>
    seen.push(`f${event.detail}`);
  kiln.addEventListener("fired", listener);
  kiln.addEventListener("fired", listener); // a duplicate is ignored
  kiln.addEventListener("fired", (e) => seen.push(`o${e.detail}`), {
    once: true,
  });
  const object = {
    handleEvent(event: Event) {
      seen.push(`h${(event as CustomEvent<number>).detail}`);
    },
  };
  kiln.addEventListener("fired", object);
  const stop = new AbortController();
  kiln.addEventListener("fired", (e) => seen.push(`s${e.detail}`), {
    signal: stop.signal,
  });
  kiln.fire(1);
  kiln.removeEventListener("fired", listener);
  kiln.removeEventListener("fired", object);
  stop.abort();
  kiln.fire(2);
  assert.deepEqual(seen, ["f1", "o1", "h1", "s1"]);
  assert.equal(kiln.listenerErrors, 0);
});

Deno.test("TypedEventTarget makes no event of a type nobody listens to", () => {
  const dispatched: string[] = [];
  class Counted extends Kiln {
    override dispatchEvent(event: Event): boolean {
      dispatched.push(event.type);
      return super.dispatchEvent(event);
    }
  }
  const kiln = new Counted();
  kiln.fire(1);
  assert.deepEqual(dispatched, []);
  const seen: number[] = [];
  const listener = (event: CustomEvent<number>) => seen.push(event.detail);
  kiln.addEventListener("fired", listener);
  kiln.fire(2);
  kiln.removeEventListener("fired", listener);
  kiln.fire(3); // still made: a type once heard is always dispatched
  assert.deepEqual(dispatched, ["fired", "fired"]);
  assert.deepEqual(seen, [2]);
});
