/**
 * A real {@linkcode SecondaryNode} on a thread of its own, for tests that
 * must block the master's event loop while the secondary keeps running:
 * its own event loop, sockets and sandboxed jobs, in the test's process.
 *
 * Messages in: `{ type: "start", master, name, slots, counters }`, then
 * `{ type: "stop" }`. Messages out: `{ type: "registered" }` (each time),
 * `{ type: "stopped" }`. `counters` is an `Int32Array` over a
 * `SharedArrayBuffer`: index 0 counts jobs completed here, and is notified,
 * so that a blocked thread can wait for them with `Atomics.wait`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { SecondaryNode } from "../lib/nodes/secondary_node.ts";

let node: SecondaryNode | undefined;

self.onmessage = async (event: MessageEvent) => {
  const message = event.data;
  if (message.type === "start") {
    const counters: Int32Array = message.counters;
    node = new SecondaryNode({
      master: message.master,
      name: message.name,
      slots: message.slots,
      languages: ["bash"],
      reconnectMinMs: 50,
      reconnectMaxMs: 200,
    });
    node.addEventListener("registered", () => {
      self.postMessage({ type: "registered" });
    });
    node.addEventListener("jobcomplete", () => {
      Atomics.add(counters, 0, 1);
      Atomics.notify(counters, 0);
    });
  } else if (message.type === "stop") {
    await node?.shutdown();
    self.postMessage({ type: "stopped" });
  }
};
