import assert from "node:assert/strict";
import { NatsServer, natsSkipReason } from "../../cli/_nats_server.ts";
import { ClusterCounts } from "./cluster_counts.ts";
import { NatsCluster } from "./nats_cluster.ts";

const ignore = natsSkipReason !== undefined;

/** Resolves once `check` holds, tested each time `counts` hears a change. */
function until(
  hear: { wake?: () => void },
  check: () => boolean,
): Promise<void> {
  return new Promise((resolve) => {
    if (check()) return resolve();
    hear.wake = () => {
      if (check()) resolve();
    };
  });
}

Deno.test({
  name:
    "cluster counts: one master hears another's counts of a client, and their end",
  ignore,
  async fn() {
    await using server = await NatsServer.start();
    await using clusterA = await NatsCluster.connect({ servers: [server.url] });
    await using clusterB = await NatsCluster.connect({ servers: [server.url] });
    const hearB: { wake?: () => void } = {};
    const a = new ClusterCounts({ cluster: clusterA, changed: () => {} });
    const b = new ClusterCounts({
      cluster: clusterB,
      changed: () => hearB.wake?.(),
    });
    try {
      a.changed("alice", { running: 2, queued: 3 });
      a.changed("bob@example.org", { running: 1, queued: 0 });
      await until(hearB, () => b.elsewhere("alice").running === 2);
      assert.deepEqual(b.elsewhere("alice"), { running: 2, queued: 3 });
      await until(hearB, () => b.elsewhere("bob@example.org").running === 1);
      // A master's own counts are not "elsewhere" to it.
      assert.deepEqual(a.elsewhere("alice"), { running: 0, queued: 0 });
      a.changed("alice", { running: 0, queued: 0 });
      await until(hearB, () => b.elsewhere("alice").running === 0);
      // A master that leaves takes its counts with it.
      await a.close();
      await until(hearB, () => b.elsewhere("bob@example.org").running === 0);
    } finally {
      await a.close();
      await b.close();
    }
  },
});
