import assert from "node:assert/strict";
import {
  formatHostPort,
  isLoopbackHostname,
  parseHostPort,
} from "./address.ts";

Deno.test("parseHostPort() reads host and port", () => {
  assert.deepEqual(parseHostPort("example.org:7000"), {
    hostname: "example.org",
    port: 7000,
  });
  assert.deepEqual(parseHostPort("127.0.0.1:0"), {
    hostname: "127.0.0.1",
    port: 0,
  });
});

Deno.test("parseHostPort() reads bracketed IPv6", () => {
  assert.deepEqual(parseHostPort("[::1]:7001"), {
    hostname: "::1",
    port: 7001,
  });
  assert.deepEqual(parseHostPort("[::1]"), { hostname: "::1", port: 7700 });
});

Deno.test("parseHostPort() fills in defaults", () => {
  assert.deepEqual(parseHostPort("localhost"), {
    hostname: "localhost",
    port: 7700,
  });
  assert.deepEqual(parseHostPort(":9000"), {
    hostname: "127.0.0.1",
    port: 9000,
  });
  assert.deepEqual(parseHostPort("h", 1234), { hostname: "h", port: 1234 });
});

Deno.test("parseHostPort() rejects nonsense with a clear message", () => {
  assert.throws(() => parseHostPort("a:b:c"), /Cannot parse address "a:b:c"/);
  assert.throws(() => parseHostPort("host:70000"), /port must be 0-65535/);
  assert.throws(() => parseHostPort("host:-1"), TypeError);
});

Deno.test("formatHostPort() brackets IPv6", () => {
  assert.equal(formatHostPort({ hostname: "::1", port: 1 }), "[::1]:1");
  assert.equal(
    formatHostPort({ hostname: "127.0.0.1", port: 2 }),
    "127.0.0.1:2",
  );
});

Deno.test("isLoopbackHostname() tells loopback from the network", () => {
  for (
    const host of ["localhost", "LOCALHOST", "::1", "127.0.0.1", "127.1.2.3"]
  ) {
    assert.ok(isLoopbackHostname(host), host);
  }
  for (
    const host of [
      "0.0.0.0",
      "::",
      "10.0.0.1",
      "example.org",
      "127.example.org",
    ]
  ) {
    assert.ok(!isLoopbackHostname(host), host);
  }
});
