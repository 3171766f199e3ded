/**
 * What a node does with job workdirs at its start and end: sweep away those
 * a killed kiln process left, and remove its own empty root when it stops.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  removeWorkRoot,
  sweepStaleWorkRoots,
  unmountStaleMountPointRoots,
} from "../sandbox/work_root.ts";
import { unmountStaleJobDisks } from "../sandbox/disk_limit.ts";
import { unmountStaleJobPtys } from "../sandbox/pty_limit.ts";
import { isProcessAlive } from "../sandbox/process_tree.ts";

const log = getLogger(["kiln", "node"]);

/** Removes the work roots of dead kiln processes, logging what it did. Never rejects. */
export async function sweepWorkRoots(): Promise<void> {
  // A job disk still mounted in a stale root would stop its removal.
  const unmounted = await unmountStaleJobDisks(isProcessAlive);
  if (unmounted > 0) {
    log.info("unmounted {unmounted} job disks of kiln processes that died", {
      unmounted,
    });
  }
  // As would a job's devpts.
  const ptys = await unmountStaleJobPtys(isProcessAlive);
  if (ptys > 0) {
    log.info("unmounted {ptys} job devpts of kiln processes that died", {
      ptys,
    });
  }
  // And the tmpfs its mount points were made on, even where its root is
  // no longer known as kiln's.
  const roots = await unmountStaleMountPointRoots(isProcessAlive);
  if (roots > 0) {
    log.info("unmounted {roots} work root tmpfs of kiln processes that died", {
      roots,
    });
  }
  const { removed, failed } = await sweepStaleWorkRoots();
  if (removed > 0) {
    log.info("removed the workdirs of {removed} kiln processes that died", {
      removed,
    });
  }
  for (const { path, reason } of failed) {
    log.warn("cannot remove the stale work root {path}: {reason}", {
      path,
      reason,
    });
  }
}

/** Removes this process's work root if no workdir is left in it. Never rejects. */
export async function removeOwnWorkRoot(): Promise<void> {
  await removeWorkRoot();
}
