/**
 * What a node does with its sandbox at start: take the one it was given or
 * detect the strongest, say in the log what jobs run under (and warn about
 * every missing layer), and sweep what dead kiln processes left behind.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { defaultSandbox, type Sandbox } from "../sandbox/sandbox.ts";

const log = getLogger(["kiln", "sandbox"]);

/** The node's sandbox, announced in the log. Never rejects. */
export async function startSandbox(given?: Sandbox): Promise<Sandbox> {
  const sandbox = given ?? await defaultSandbox();
  const { layers, backends, mode } = sandbox.report;
  log.info("sandbox ({mode}): {layers}", {
    mode,
    layers: layers.length === 0
      ? "none"
      : layers.map((layer) => `${layer} (${backends[layer]})`).join(", "),
  });
  for (const warning of sandbox.warnings) log.warn("{warning}", { warning });
  const swept = await sandbox.sweepStale();
  if (swept > 0) {
    log.info("removed {swept} cgroups of kiln processes that died", { swept });
  }
  return sandbox;
}
