/**
 * No link waits on Nagle: every TCP connection kiln dials or accepts has
 * `TCP_NODELAY` set, read back from the kernel on the real sockets (see
 * lib/protocol/_nodelay_testing.ts), not inferred from timing. The speed it
 * buys is measured in bench/hop_bench.ts.
 */
import assert from "node:assert/strict";
import { MasterNode, SecondaryNode, submitProgram } from "../mod.ts";
import { HttpServer } from "../lib/http/http_server.ts";
import { socketsOnPort } from "../lib/protocol/_nodelay_testing.ts";

Deno.test("nodelay: client <-> master and secondary <-> master links have Nagle off at both ends", async () => {
  await using master = new MasterNode({
    port: 0,
    slots: 0,
    resourceLogIntervalMs: 0,
  });
  const joined = Promise.withResolvers<void>();
  master.addEventListener("nodejoin", () => joined.resolve(), { once: true });
  await using _secondary = new SecondaryNode({
    master: master.addr,
    name: "w1",
    slots: 1,
  });
  await joined.promise;
  // Read while the job runs, so the client's link is open too.
  let seen: ReturnType<typeof socketsOnPort> = [];
  const result = await submitProgram({
    language: "bash",
    files: [{ name: "main.sh", content: "echo hi" }],
  }, {
    master: master.addr,
    onEvent: (event) => {
      if (event.type === "started") seen = socketsOnPort(master.addr.port);
    },
  });
  assert.equal(result.verdict, "ok");
  // Both ends of the client's link and of the secondary's.
  assert.equal(seen.length, 4, JSON.stringify(seen));
  for (const socket of seen) {
    assert.ok(socket.noDelay, `Nagle is on: ${JSON.stringify(socket)}`);
  }
});

Deno.test("nodelay: the HTTP server's accepted connections have Nagle off", async () => {
  let seen: ReturnType<typeof socketsOnPort> = [];
  await using server = new HttpServer(() => {
    seen = socketsOnPort(server.addr.port)
      .filter((socket) => socket.local === server.addr.port);
    return new Response("hi");
  }, { port: 0, maxConnections: 4 });
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(await response.text(), "hi");
  assert.equal(seen.length, 1, JSON.stringify(seen));
  assert.ok(seen[0]!.noDelay, `Nagle is on: ${JSON.stringify(seen[0])}`);
});
