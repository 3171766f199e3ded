import assert from "node:assert/strict";
import * as protocol from "./mod.ts";

Deno.test("mod.ts exports exactly the curated protocol API", () => {
  assert.deepEqual(Object.keys(protocol).sort(), [
    "AcceptedSchema",
    "AuthSchema",
    "CancelSchema",
    "ChallengeSchema",
    "Connection",
    "DEFAULT_HANDSHAKE_TIMEOUT_MS",
    "DEFAULT_MAX_FRAME_BYTES",
    "ErrorMessageSchema",
    "FrameDecoder",
    "HelloSchema",
    "MIN_PROTOCOL_VERSION",
    "MessageSchema",
    "OutputSchema",
    "PROTOCOL_ERROR_CODES",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "QueuedSchema",
    "ResultSchema",
    "RoleSchema",
    "StartedSchema",
    "SubmitSchema",
    "WelcomeSchema",
    "clientHandshake",
    "encodeFrame",
    "isProtocolErrorCode",
    "serverHandshake",
  ]);
});
