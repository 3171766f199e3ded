/**
 * kiln: a distributed compile-and-run cluster for Deno.
 *
 * A {@linkcode MasterNode} accepts programs over TCP, compiles and runs them
 * in its own slots, and queues the rest; {@linkcode submitProgram} sends a
 * program and resolves with its result while streaming its events, and a
 * {@linkcode KilnClient} runs any number of jobs at once on one connection.
 * Languages are plug-ins: a {@linkcode LanguageRunner} in a
 * {@linkcode RunnerRegistry}.
 *
 * @example Run a master and submit a program to it
 * ```ts
 * import { MasterNode, submitProgram } from "@kiln/kiln";
 *
 * await using master = new MasterNode({ port: 0, slots: 2, resourceLogIntervalMs: 0 });
 * const result = await submitProgram({
 *   language: "bash",
 *   files: [{ name: "hello.sh", content: 'echo "hello, $1"' }],
 *   args: ["kiln"],
 * }, { master: master.addr });
 * console.log(result.verdict, result.stdout); // ok hello, kiln
 * ```
 *
 * @module
 */
export {
  MasterNode,
  type MasterNodeOptions,
  type RunHandle,
  type RunOptions,
} from "./lib/nodes/master_node.ts";
// The nodes' base class, as a type only: its typed listener methods are part
// of every node's API, its `emit` is not for other classes to build on.
export type {
  EventMap,
  TypedEventTarget,
} from "./lib/nodes/typed_event_target.ts";
export type {
  CredentialsChangeDetail,
  JobAcceptedDetail,
  JobQueuedDetail,
  JobRestartDetail,
  JobStartDetail,
  MasterNodeEventMap,
  NodeDetail,
} from "./lib/nodes/events.ts";
export {
  type SecondaryConnectFailedDetail,
  type SecondaryDisconnectedDetail,
  SecondaryNode,
  type SecondaryNodeEventMap,
  type SecondaryNodeOptions,
  type SecondaryRegisteredDetail,
} from "./lib/nodes/secondary_node.ts";
export type { NatsOptions } from "./lib/nats/nats_cluster.ts";
export type { ClusterJobListener } from "./lib/nats/cluster_jobs.ts";
export type { JobRecord, JobRecordState } from "./lib/nats/job_record.ts";
export {
  getClusterStatus,
  type StatusOptions,
  type SubmitOptions,
  submitProgram,
} from "./lib/client.ts";
export {
  type ClientConnectedDetail,
  type ClientConnectFailedDetail,
  type ClientDisconnectedDetail,
  type ConnectOptions,
  type JobOptions,
  KilnClient,
  type KilnClientEventMap,
  type KilnClientOptions,
} from "./lib/kiln_client.ts";
export type {
  TlsDialOptions,
  TlsListenOptions,
} from "./lib/protocol/transport.ts";
export { executeJob, type ExecuteOptions } from "./lib/executor.ts";
export {
  type CompileResult,
  DEFAULT_LIMITS,
  type JobLimits,
  type JobRequest,
  type JobResult,
  LIMIT_MAXIMA,
  type LimitOverrides,
  type OutputStream,
  SANDBOX_LAYERS,
  type SandboxLayer,
  type SourceFile,
  type Verdict,
  VERDICTS,
} from "./lib/job.ts";
export {
  Sandbox,
  type SandboxedOutcome,
  type SandboxMode,
  type SandboxOptions,
  type SandboxReport,
  type SandboxStepOptions,
  SandboxUnavailableError,
  type StepLimits,
  type WarmRequest,
} from "./lib/sandbox/sandbox.ts";
export {
  type Authentication,
  type ClientQuota,
  type Credential,
  type CredentialRole,
  Credentials,
  CredentialsError,
  DEFAULT_CLIENT_QUOTA,
  type TokenMatch,
} from "./lib/security/credentials.ts";
export type { StepEnding, StepOutcome } from "./lib/sandbox/launcher.ts";
export type { JobIdentity, UidRange } from "./lib/sandbox/identity.ts";
export type { DiskFill } from "./lib/sandbox/disk_limit.ts";
export type {
  ArrangedSources,
  AvailableToolchain,
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
  UnavailableToolchain,
} from "./lib/runners/runner.ts";
export {
  createDefaultRegistry,
  type ResolvedRunner,
  RunnerRegistry,
  type RunnerResolution,
  type RunnerStatus,
} from "./lib/runners/registry.ts";
export type { DetectOptions } from "./lib/runners/detect.ts";
export {
  ConnectionError,
  PROTOCOL_ERROR_CODES,
  ProtocolError,
  type ProtocolErrorCode,
  type ProtocolErrorOptions,
} from "./lib/protocol/errors.ts";
export type {
  AcceptedEvent,
  ClusterStatus,
  JobEvent,
  NodeStatus,
  OfferedLanguage,
  OutputEvent,
  QueuedEvent,
  RestartedEvent,
  ResultEvent,
  Role,
  StartedEvent,
} from "./lib/protocol/messages.ts";
export { HttpApi, type HttpApiOptions } from "./lib/http/http_api.ts";
export {
  JobHistory,
  type JobHistoryFilter,
  type JobHistoryOptions,
  type JobSummary,
} from "./lib/history/job_history.ts";
export type { HostPort } from "./lib/address.ts";
export type {
  ResourceSample,
  ResourceSampler,
} from "./lib/monitor/resource_sampler.ts";
