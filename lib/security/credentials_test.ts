import assert from "node:assert/strict";
import {
  Credentials,
  CredentialsError,
  DEFAULT_CLIENT_QUOTA,
} from "./credentials.ts";

const ALICE = "alice-secret-token-0001";
const EAST = "east-secret-token-0002";

function file(credentials: unknown[], extra: object = {}): string {
  return JSON.stringify({ credentials, ...extra });
}

Deno.test("Credentials.parse() reads named credentials with roles and quotas", () => {
  const credentials = Credentials.parse(
    file([
      { name: "alice", role: "client", token: ALICE, maxQueued: 3 },
      { name: "east", role: "node", token: EAST },
    ], { defaults: { maxRunning: 2 } }),
    "auth.json",
  );
  assert.equal(credentials.isShared, false);
  assert.equal(credentials.count("client"), 1);
  assert.equal(credentials.count("node"), 1);
  assert.deepEqual(credentials.get("alice")?.quota, {
    maxRunning: 2,
    maxQueued: 3,
  });
  assert.deepEqual(credentials.authenticate("client", "alice"), {
    ok: true,
    token: ALICE,
    identity: "alice",
    quota: { maxRunning: 2, maxQueued: 3 },
  });
  assert.deepEqual(credentials.authenticate("secondary", "east"), {
    ok: true,
    token: EAST,
    identity: "east",
    quota: undefined,
  });
});

Deno.test("Credentials.authenticate() names what is wrong, never a token", () => {
  const credentials = Credentials.parse(
    file([
      { name: "alice", role: "client", token: ALICE },
      { name: "east", role: "node", token: EAST },
    ]),
    "auth.json",
  );
  const reasons = [
    credentials.authenticate("client", undefined),
    credentials.authenticate("client", "mallory"),
    credentials.authenticate("secondary", "alice"),
    credentials.authenticate("client", "east"),
  ].map((result) => {
    assert.equal(result.ok, false);
    return result.ok ? "" : result.reason;
  });
  assert.match(reasons[0]!, /give the name of yours/);
  assert.equal(reasons[1], 'unknown credential "mallory"');
  assert.match(
    reasons[2]!,
    /"alice" is a client credential: it cannot register as a node/,
  );
  assert.match(
    reasons[3]!,
    /"east" is a node credential: it cannot submit jobs/,
  );
  for (const reason of reasons) {
    assert.ok(!reason.includes(ALICE) && !reason.includes(EAST), reason);
  }
});

Deno.test("Credentials.shared() lets anybody with the token be anybody", () => {
  const shared = Credentials.shared("one-token-0123456789");
  assert.equal(shared.isShared, true);
  assert.equal(shared.isOpen, false);
  assert.deepEqual(shared.authenticate("secondary", "east"), {
    ok: true,
    token: "one-token-0123456789",
    identity: "east",
    quota: undefined,
  });
  assert.equal(Credentials.shared("").isOpen, true);
  assert.ok(DEFAULT_CLIENT_QUOTA.maxRunning > 0);
});

Deno.test("Credentials.parse() refuses a bad file with the problem named and no token echoed", () => {
  const cases: [string, RegExp][] = [
    ["{not json", /auth\.json is not JSON/],
    // A quote missing before a token: the error must not quote the token.
    [
      `{"credentials":[{"name":"alice","role":"client","token":${ALICE}"}]}`,
      /auth\.json is not JSON( \(at line 1, column \d+\))?$/,
    ],
    [file([]), /no credential: nobody could connect/],
    [
      file([{ name: "alice", role: "client", token: "short" }]),
      /at least 16 characters/,
    ],
    [
      file([{ name: "alice", role: "admin", token: ALICE }]),
      /credentials\[0\]\.role/,
    ],
    [
      file([
        { name: "alice", role: "client", token: ALICE },
        { name: "alice", role: "node", token: EAST },
      ]),
      /names "alice" twice/,
    ],
    [
      file([
        { name: "alice", role: "client", token: ALICE },
        { name: "east", role: "node", token: ALICE },
      ]),
      /"east" and "alice" have the same token/,
    ],
    [
      file([{ name: "a b", role: "client", token: ALICE }]),
      /a name is 1-128 letters/,
    ],
  ];
  for (const [text, expected] of cases) {
    assert.throws(
      () => Credentials.parse(text, "auth.json"),
      (error: unknown) => {
        assert.ok(error instanceof CredentialsError);
        assert.match(error.message, expected);
        assert.ok(!error.message.includes(ALICE), error.message);
        return true;
      },
    );
  }
});

Deno.test("Credentials.load() names a file it cannot read", async () => {
  await assert.rejects(
    Credentials.load("/nonexistent/kiln-auth.json"),
    /cannot read credentials file \/nonexistent\/kiln-auth\.json/,
  );
});
