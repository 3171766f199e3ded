import assert from "node:assert/strict";
import { ProtocolError } from "../protocol/errors.ts";
import { PeerGuard, type PeerGuardOptions, peerKey } from "./peer_guard.ts";

/** A guard on a clock the test moves by hand: no real waiting. */
function guardAt(options: PeerGuardOptions = {}) {
  const clock = { now: 1_000_000 };
  const guard = new PeerGuard({ ...options, now: () => clock.now });
  return { guard, clock };
}

function refusal(code: string, pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("PeerGuard refuses connections over the per-address cap, and counts addresses apart", () => {
  const { guard } = guardAt({ maxConnectionsPerIp: 2 });
  const held = [guard.admit("192.0.2.1"), guard.admit("192.0.2.1")];
  assert.throws(
    () => guard.admit("192.0.2.1"),
    refusal(
      "too_many_connections",
      /^too many connections from 192\.0\.2\.1: at most 2 at once; close one and retry$/,
    ),
  );
  guard.admit("192.0.2.2")[Symbol.dispose]();
  held[0]![Symbol.dispose]();
  held[0]![Symbol.dispose](); // releasing twice frees one slot, not two
  const again = guard.admit("192.0.2.1");
  assert.throws(() => guard.admit("192.0.2.1"), /too many connections/);
  again[Symbol.dispose]();
  held[1]![Symbol.dispose]();
  assert.equal(guard.size, 0, "an address with nothing left is forgotten");
});

Deno.test("PeerGuard without a cap admits any number of connections", () => {
  const { guard } = guardAt({ maxConnectionsPerIp: 0 });
  const held = Array.from({ length: 1000 }, () => guard.admit("192.0.2.1"));
  for (const ticket of held) ticket[Symbol.dispose]();
  assert.equal(guard.size, 0);
});

Deno.test("PeerGuard backs off after repeated failed authentications, saying when to retry", () => {
  const { guard, clock } = guardAt({
    maxAuthFailures: 3,
    authFailureWindowMs: 60_000,
    authBackoffMs: 30_000,
  });
  assert.equal(guard.authFailed("192.0.2.1"), undefined);
  clock.now += 1000;
  assert.equal(guard.authFailed("192.0.2.1"), undefined);
  guard.admit("192.0.2.1")[Symbol.dispose](); // two failures: still admitted
  const started = guard.authFailed("192.0.2.1");
  assert.deepEqual(started, {
    peer: "192.0.2.1",
    durationMs: 30_000,
    failures: 3,
  });
  const until = new Date(clock.now + 30_000).toISOString();
  assert.throws(
    () => guard.admit("192.0.2.1"),
    refusal(
      "auth_backoff",
      new RegExp(
        `^too many failed authentications from 192\\.0\\.2\\.1: connections are refused for 30 s more; retry after ${until}$`,
      ),
    ),
  );
  guard.admit("192.0.2.2")[Symbol.dispose](); // others are not affected
  clock.now += 29_500;
  assert.throws(() => guard.admit("192.0.2.1"), /refused for 1 s more/);
  clock.now += 500;
  guard.admit("192.0.2.1")[Symbol.dispose]();
});

Deno.test("PeerGuard forgets failures older than the window", () => {
  const { guard, clock } = guardAt({
    maxAuthFailures: 3,
    authFailureWindowMs: 10_000,
  });
  guard.authFailed("192.0.2.1");
  guard.authFailed("192.0.2.1");
  clock.now += 10_000;
  assert.equal(guard.authFailed("192.0.2.1"), undefined, "two have expired");
  guard.admit("192.0.2.1")[Symbol.dispose]();
  clock.now += 10_000;
  assert.equal(guard.size, 1);
  guard.admit("192.0.2.1")[Symbol.dispose]();
  assert.equal(guard.size, 0, "no failure left inside the window");
});

Deno.test("PeerGuard doubles each back-off that follows soon after another, up to the maximum, and forgives a quiet address", () => {
  const { guard, clock } = guardAt({
    maxAuthFailures: 1,
    authBackoffMs: 1000,
    authBackoffMaxMs: 5000,
  });
  const durations: number[] = [];
  for (let i = 0; i < 5; i++) {
    const backoff = guard.authFailed("192.0.2.1");
    assert.ok(backoff);
    durations.push(backoff.durationMs);
    clock.now += backoff.durationMs; // the back-off ends; the peer fails again
  }
  assert.deepEqual(durations, [1000, 2000, 4000, 5000, 5000]);
  clock.now += 5000; // quiet for the longest back-off: forgiven
  assert.equal(guard.authFailed("192.0.2.1")?.durationMs, 1000);
});

Deno.test("PeerGuard with maxAuthFailures 0 never backs off", () => {
  const { guard } = guardAt({ maxAuthFailures: 0 });
  for (let i = 0; i < 100; i++) {
    assert.equal(guard.authFailed("192.0.2.1"), undefined);
  }
  guard.admit("192.0.2.1")[Symbol.dispose]();
  assert.equal(guard.size, 0);
});

Deno.test("PeerGuard memory stays bounded under failures from many addresses", () => {
  const { guard, clock } = guardAt({
    maxAuthFailures: 5,
    authFailureWindowMs: 1000,
  });
  let peak = 0;
  for (let i = 0; i < 100_000; i++) {
    guard.authFailed(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    clock.now += 1; // 1000 failures per window, each from a new address
    peak = Math.max(peak, guard.size);
  }
  assert.ok(peak <= 4096, `remembered ${peak} addresses at once`);
});

Deno.test("PeerGuard counts an IPv6 /64 as one address", () => {
  const { guard } = guardAt({ maxConnectionsPerIp: 1 });
  const held = guard.admit("2001:db8:1:2::1");
  assert.throws(
    () => guard.admit("2001:db8:1:2:ffff::9"),
    /too many connections from 2001:db8:1:2::\/64/,
  );
  guard.admit("2001:db8:1:3::1")[Symbol.dispose]();
  held[Symbol.dispose]();
});

Deno.test("peerKey() keys IPv4 as is, IPv6 by /64, IPv4-mapped IPv6 as IPv4", () => {
  assert.equal(peerKey("127.0.0.1"), "127.0.0.1");
  assert.equal(peerKey("::1"), "::/64");
  assert.equal(peerKey("fe80::1%eth0"), "fe80::/64");
  assert.equal(peerKey("2001:DB8:0:1:2:3:4:5"), "2001:db8:0:1::/64");
  assert.equal(peerKey("2001:db8::"), "2001:db8::/64");
  assert.equal(peerKey("2001:0db8:0000:0001::"), "2001:db8:0:1::/64");
  assert.equal(peerKey("::ffff:10.0.0.1"), "10.0.0.1");
  assert.equal(peerKey("localhost"), "localhost");
});

Deno.test("PeerGuard refuses bad options with a RangeError", () => {
  assert.throws(() => new PeerGuard({ maxConnectionsPerIp: -1 }), RangeError);
  assert.throws(() => new PeerGuard({ maxAuthFailures: 1.5 }), RangeError);
  assert.throws(() => new PeerGuard({ authBackoffMs: 0 }), RangeError);
  assert.throws(
    () => new PeerGuard({ authBackoffMs: 10, authBackoffMaxMs: 5 }),
    /shorter than authBackoffMs/,
  );
});
