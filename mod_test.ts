import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
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
    "KilnClient",
    "LIMIT_MAXIMA",
    "MasterNode",
    "PROTOCOL_ERROR_CODES",
    "ProtocolError",
    "RunnerRegistry",
    "SANDBOX_LAYERS",
    "Sandbox",
    "SandboxUnavailableError",
    "SecondaryNode",
    "VERDICTS",
    "createDefaultRegistry",
    "executeJob",
    "getClusterStatus",
    "submitProgram",
  ]);
});

/** What `deno doc --json` says of one exported symbol (the parts used here). */
interface DocSymbol {
  name: string;
  declarations: unknown[];
}

/** The names of the types a doc node refers to, at any depth. */
function referencedNames(node: unknown, into: Set<string>): Set<string> {
  // Iterative: doc trees are ours, but nothing here needs the call stack.
  const stack = [node];
  while (stack.length > 0) {
    const value = stack.pop();
    if (Array.isArray(value)) stack.push(...value);
    else if (typeof value === "object" && value !== null) {
      for (const [key, field] of Object.entries(value)) {
        if (key === "jsDoc") continue;
        if (
          (key === "typeName" || key === "extends") && typeof field === "string"
        ) {
          into.add(field.split(/[.<]/, 1)[0]!);
        } else stack.push(field);
      }
    }
  }
  return into;
}

Deno.test("mod.ts exports exactly the curated types, each part of an exported signature", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "doc",
      "--json",
      fileURLToPath(new URL("./mod.ts", import.meta.url)),
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(output.success, "deno doc --json mod.ts failed");
  const doc = JSON.parse(new TextDecoder().decode(output.stdout));
  const symbols: DocSymbol[] =
    doc.nodes[new URL("./mod.ts", import.meta.url).href].symbols;
  const values = new Set(Object.keys(kiln));
  const types = symbols.map((s) => s.name).filter((n) => !values.has(n));
  // Only types that some exported value's signature uses: no options of a
  // function mod.ts does not export, no internals. TypedEventTarget is
  // exported as a type only: the nodes' typed listeners, not a base class.
  assert.deepEqual(types.sort(), [
    "AcceptedEvent",
    "ArrangedSources",
    "Authentication",
    "AvailableToolchain",
    "ClientConnectFailedDetail",
    "ClientConnectedDetail",
    "ClientDisconnectedDetail",
    "ClientQuota",
    "ClusterJobListener",
    "ClusterStatus",
    "CommandSpec",
    "CompileResult",
    "ConnectOptions",
    "Credential",
    "CredentialRole",
    "CredentialsChangeDetail",
    "DetectOptions",
    "DiskFill",
    "EventMap",
    "ExecuteOptions",
    "HostPort",
    "HttpApiOptions",
    "JobAcceptedDetail",
    "JobEvent",
    "JobHistoryFilter",
    "JobHistoryOptions",
    "JobIdentity",
    "JobLimits",
    "JobOptions",
    "JobQueuedDetail",
    "JobRecord",
    "JobRecordState",
    "JobRequest",
    "JobRestartDetail",
    "JobResult",
    "JobStartDetail",
    "JobSummary",
    "KilnClientEventMap",
    "KilnClientOptions",
    "LanguageRunner",
    "LimitOverrides",
    "MasterNodeEventMap",
    "MasterNodeOptions",
    "NatsOptions",
    "NodeDetail",
    "NodeStatus",
    "OfferedLanguage",
    "OutputEvent",
    "OutputStream",
    "ProtocolErrorCode",
    "ProtocolErrorOptions",
    "QueuedEvent",
    "ResolvedRunner",
    "ResourceSample",
    "ResourceSampler",
    "RestartedEvent",
    "ResultEvent",
    "Role",
    "RunHandle",
    "RunOptions",
    "RunnerResolution",
    "RunnerStatus",
    "SandboxLayer",
    "SandboxMode",
    "SandboxOptions",
    "SandboxReport",
    "SandboxStepOptions",
    "SandboxedOutcome",
    "SecondaryConnectFailedDetail",
    "SecondaryDisconnectedDetail",
    "SecondaryNodeEventMap",
    "SecondaryNodeOptions",
    "SecondaryRegisteredDetail",
    "SourceFile",
    "StartedEvent",
    "StatusOptions",
    "StepContext",
    "StepEnding",
    "StepLimits",
    "StepOutcome",
    "SubmitOptions",
    "TlsDialOptions",
    "TlsListenOptions",
    "TokenMatch",
    "Toolchain",
    "TypedEventTarget",
    "UidRange",
    "UnavailableToolchain",
    "Verdict",
    "WarmRequest",
  ]);
  const byName = new Map(symbols.map((s) => [s.name, s]));
  const reached = new Set<string>();
  const pending = [...values];
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (reached.has(name)) continue;
    reached.add(name);
    const symbol = byName.get(name);
    if (symbol === undefined) continue;
    for (const ref of referencedNames(symbol.declarations, new Set())) {
      if (byName.has(ref) && !reached.has(ref)) pending.push(ref);
    }
  }
  assert.deepEqual(types.filter((name) => !reached.has(name)), []);
});
