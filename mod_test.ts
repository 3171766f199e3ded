import assert from "node:assert/strict";
import * as kiln from "./mod.ts";

Deno.test("mod.ts exports exactly the curated public API", () => {
  assert.deepEqual(Object.keys(kiln).sort(), [
    "ConnectionError",
    "Credentials",
    "CredentialsError",
    "DEFAULT_CLIENT_QUOTA",
    "DEFAULT_LIMITS",
    "HttpApi",
    "JobHistory",
    "MasterNode",
    "PROTOCOL_ERROR_CODES",
    "ProtocolError",
    "RunnerRegistry",
    "SANDBOX_LAYERS",
    "Sandbox",
    "SandboxUnavailableError",
    "SecondaryNode",
    "TypedEventTarget",
    "VERDICTS",
    "createDefaultRegistry",
    "executeJob",
    "getClusterStatus",
    "submitProgram",
  ]);
});
